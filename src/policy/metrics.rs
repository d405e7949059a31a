//! What the training loop reports to a policy at every observation.

use serde::{Deserialize, Serialize};

/// One observation of the training run, handed to [`GrowthPolicy::observe`](super::GrowthPolicy::observe).
///
/// The network is `input_dim -> widths[0] -> ... -> widths[n-1] -> output_dim`, each arrow a
/// linear layer with a bias. `input_dim` and `output_dim` are here (rather than in the policy
/// configuration) so that [`Limits`](super::Limits) can compute how many parameters a growth
/// adds: growing hidden layer `i` by `k` adds `k * (fan_in + 1) + k * fan_out` parameters, where
/// `fan_in` and `fan_out` are the neighbouring widths.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Optimizer steps taken so far.
    pub step: u64,
    /// Completed epochs.
    pub epoch: u64,
    /// Training loss (for example the mean over the last batch or a running mean).
    pub train_loss: f64,
    /// Validation loss, when it was measured at this step.
    pub val_loss: Option<f64>,
    /// One per hidden layer: the L2 norm of the gradient of the weights and bias that produce
    /// hidden layer `i`.
    pub grad_norms: Vec<f64>,
    /// Current hidden widths.
    pub widths: Vec<usize>,
    /// Width of the network input.
    pub input_dim: usize,
    /// Width of the network output.
    pub output_dim: usize,
    /// Current number of trainable parameters.
    pub params: usize,
    /// Cumulative training FLOPs so far.
    pub flops: f64,
}

/// Number of parameters (weights and biases) of the dense network
/// `input_dim -> widths.. -> output_dim`.
pub fn mlp_params(input_dim: usize, widths: &[usize], output_dim: usize) -> usize {
    let mut total = 0usize;
    let mut fan_in = input_dim;
    for &w in widths.iter().chain(std::iter::once(&output_dim)) {
        total = total.saturating_add(fan_in.saturating_mul(w).saturating_add(w));
        fan_in = w;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mlp_params_counts_weights_and_biases() {
        // 64*32+32 + 32*10+10 = 2080 + 330
        assert_eq!(mlp_params(64, &[32], 10), 2410);
        assert_eq!(mlp_params(3, &[], 2), 8);
    }
}
