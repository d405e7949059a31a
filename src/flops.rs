//! Analytic FLOP counts for training an MLP, its growth, and a policy's statistics.
//!
//! A multiply-add counts as two FLOPs. For a linear layer of `inp` inputs and `out` units on
//! a batch of `b` rows: the forward product costs `2 b inp out`; the backward pass costs
//! `4 b inp out` (the gradient of the weights and of the input; counted for the first layer
//! too, so the figures do not depend on whether a loop feeds its data through
//! [`crate::Data`], which skips that gradient); the bias, the activation and its derivative,
//! and the optimizer's element-wise update are counted as well, so nothing a step does is
//! free.

/// FLOPs of one training step (forward, backward, optimizer update) of an MLP with these
/// widths (input, hidden..., output) on a batch of `batch` rows.
///
/// `update_flops_per_param` is the optimizer's element-wise work per parameter (about 4 for
/// SGD with momentum, 12 for Adam; see [`ADAM_UPDATE_FLOPS`]).
///
/// ```
/// // 2 x 3 weights, batch 1: forward 12 + backward 24 + bias 2 x 3 (fwd + bwd)
/// // + update 8 params x 12.
/// assert_eq!(dfdx_grow::flops::train_step(&[3, 2], 1, 12.0), 12.0 + 24.0 + 6.0 + 96.0);
/// ```
pub fn train_step(widths: &[usize], batch: usize, update_flops_per_param: f64) -> f64 {
    let b = batch as f64;
    let mut total = 0.0;
    for (i, w) in widths.windows(2).enumerate() {
        let (inp, out) = (w[0] as f64, w[1] as f64);
        total += 6.0 * b * inp * out; // forward and backward products
        total += 3.0 * b * out; // bias add forward, bias gradient and output gradient sums
        if i + 2 < widths.len() {
            total += 2.0 * b * out; // activation and its derivative
        }
        total += update_flops_per_param * (inp * out + out);
    }
    total
}

/// FLOPs of one forward pass (evaluation) of an MLP with these widths on `rows` rows: each
/// layer's product and bias, and the activation after each hidden layer. The one count of an
/// MLP's forward pass ([`crate::Growable::forward_flops`] of [`crate::Mlp`] is it for one row).
///
/// ```
/// // 3 -> 4: 24 + 4 (bias) + 4 (activation); 4 -> 2: 16 + 2 (bias).
/// assert_eq!(dfdx_grow::flops::forward(&[3, 4, 2], 1), 50.0);
/// ```
pub fn forward(widths: &[usize], rows: usize) -> f64 {
    let r = rows as f64;
    let layers = widths.len().saturating_sub(1);
    widths
        .windows(2)
        .enumerate()
        .map(|(i, w)| {
            let (inp, out) = (w[0] as f64, w[1] as f64);
            let act = if i + 1 < layers { out } else { 0.0 };
            r * (2.0 * inp * out + out + act)
        })
        .sum()
}

/// Element-wise work of one Adam update per parameter (moments, bias corrections, root,
/// division, the step itself).
pub const ADAM_UPDATE_FLOPS: f64 = 12.0;

/// The cost of a growth, counted as one operation per scalar written: the new parameter
/// tensors and the optimizer buffers padded with them.
pub fn growth(params_after: usize, optimizer_buffers: usize) -> f64 {
    (params_after * (1 + optimizer_buffers)) as f64
}

/// The cost of the statistics a policy computes at one observation: a least-squares slope
/// over a window of `window` losses (about 10 FLOPs a point), and gradient norms over
/// `grad_params` gradient entries (2 FLOPs each) when the policy reads them.
pub fn policy_observation(window: usize, grad_params: usize) -> f64 {
    10.0 * window as f64 + 2.0 * grad_params as f64
}
