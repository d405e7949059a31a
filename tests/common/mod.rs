//! Helpers shared by the integration tests: models and data for the growth tests, metric
//! streams for the policy tests.
#![allow(dead_code)]

use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::optim::Optimizer;
use dfdx_grow::rand::{rngs::StdRng, Rng, SeedableRng};
use dfdx_grow::{Matrix, Mlp, Params, Real};

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// A random (batch, width) input with entries in [-2, 2).
pub fn input<E: Real>(dev: &Cpu, batch: usize, width: usize, rng: &mut StdRng) -> Matrix<E, Cpu>
where
    Cpu: Device<E>,
{
    let v = (0..batch * width)
        .map(|_| E::from_f64(rng.gen_range(-2.0..2.0)).unwrap())
        .collect();
    dev.tensor_from_vec(v, (batch, width))
}

/// One-hot targets for random labels.
pub fn one_hot<E: Real>(dev: &Cpu, batch: usize, classes: usize, rng: &mut StdRng) -> Matrix<E, Cpu>
where
    Cpu: Device<E>,
{
    let mut v = vec![E::zero(); batch * classes];
    for r in 0..batch {
        v[r * classes + rng.gen_range(0..classes)] = E::one();
    }
    dev.tensor_from_vec(v, (batch, classes))
}

/// One training step (cross-entropy) of `mlp`; returns the loss before the step and the
/// gradients it used.
pub fn step<E: Real>(
    mlp: &mut Mlp<E, Cpu>,
    opt: &mut dyn Optimizer<E, Cpu>,
    x: &Matrix<E, Cpu>,
    y: &Matrix<E, Cpu>,
) -> (f64, Gradients<E, Cpu>)
where
    Cpu: Device<E>,
{
    let grads = mlp.try_alloc_grads().unwrap();
    let out = mlp.forward(x.clone().traced(grads));
    let loss = cross_entropy_with_logits_loss(out, y.clone());
    let value = loss.as_vec()[0].to_f64().unwrap();
    let mut grads = loss.backward();
    opt.update(mlp, &mut grads).unwrap();
    (value, grads)
}

/// Every parameter's gradient in `grads` as host vectors, in walk order.
pub fn grads_of<E: Real>(model: &dyn Params<E, Cpu>, grads: &mut Gradients<E, Cpu>) -> Vec<Vec<E>>
where
    Cpu: Device<E>,
{
    let mut out = Vec::new();
    model.visit(&mut |_, p| {
        let mut v = vec![E::zero(); p.len()];
        p.grad_into(grads, &mut v).unwrap();
        out.push(v);
    });
    out
}

/// Every parameter as host vectors, in walk order.
pub fn snapshot<E: Real>(model: &dyn Params<E, Cpu>) -> Vec<Vec<E>>
where
    Cpu: Device<E>,
{
    let mut out = Vec::new();
    model.visit(&mut |_, p| {
        let mut v = vec![E::zero(); p.len()];
        p.copy_into(&mut v);
        out.push(v);
    });
    out
}

pub fn max_abs_diff<E: Real>(a: &[E], b: &[E]) -> f64
where
    Cpu: Device<E>,
{
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x.to_f64().unwrap() - y.to_f64().unwrap()).abs())
        .fold(0.0, f64::max)
}

pub fn max_abs<E: Real>(a: &[E]) -> f64
where
    Cpu: Device<E>,
{
    a.iter()
        .map(|x| x.to_f64().unwrap().abs())
        .fold(0.0, f64::max)
}

// --- Metric streams for the policy tests ---

use dfdx_grow::policy::{Decision, GrowthPolicy, Metrics, SiteMetrics};

/// Site `hidden.{i}` of an MLP hidden layer of `width` units between layers of `inp` and `out`
/// units (one unit adds `inp + 1 + out` parameters), with gradient norm `grad_norm`.
pub fn site(i: usize, width: usize, inp: usize, out: usize, grad_norm: Option<f64>) -> SiteMetrics {
    SiteMetrics {
        name: format!("hidden.{i}"),
        width,
        params_per_unit: inp + 1 + out,
        unit_multiple: 1,
        max_width: dfdx_grow::DEFAULT_MAX_WIDTH,
        grad_norm,
    }
}

/// Metrics for a one-hidden-layer 64 -> 32 -> 10 model at `step` with training loss `loss`.
pub fn m(step: u64, loss: f64) -> Metrics {
    Metrics {
        step,
        epoch: step / 100,
        train_loss: loss,
        val_loss: Some(loss),
        sites: vec![site(0, 32, 64, 10, Some(1.0))],
        params: 64 * 32 + 32 + 32 * 10 + 10,
        flops: step as f64 * 1e6,
    }
}

/// Feed `stream` to `p`, applying every decision; return `(index, decision)` of each firing.
pub fn run(p: &mut dyn GrowthPolicy, stream: &[Metrics]) -> Vec<(usize, Decision)> {
    let mut out = Vec::new();
    for (i, x) in stream.iter().enumerate() {
        if let Some(d) = p.observe(x) {
            p.on_growth(&d);
            out.push((i, d));
        }
    }
    out
}

/// Indices at which `p` fires over `stream`, applying every decision.
pub fn fire_steps(p: &mut dyn GrowthPolicy, stream: &[Metrics]) -> Vec<usize> {
    run(p, stream).into_iter().map(|(i, _)| i).collect()
}

/// The decisions of one policy that never stops, and of one whose state goes through a JSON
/// string at `cut` into a freshly built policy, must be identical.
pub fn assert_resume_equivalent(
    build: impl Fn() -> Box<dyn GrowthPolicy>,
    stream: &[Metrics],
    cut: usize,
) {
    let mut straight = build();
    let expected = run(straight.as_mut(), stream);
    let mut first = build();
    let mut got = run(first.as_mut(), &stream[..cut]);
    let text = serde_json::to_string(&first.save_state()).expect("state serialises");
    let mut resumed = build();
    let value: serde_json::Value = serde_json::from_str(&text).expect("state parses");
    resumed.load_state(&value).expect("state loads");
    got.extend(
        run(resumed.as_mut(), &stream[cut..])
            .into_iter()
            .map(|(i, d)| (i + cut, d)),
    );
    assert!(!expected.is_empty(), "the stream must make the policy fire");
    assert!(
        expected.iter().any(|(i, _)| *i >= cut),
        "the policy must fire after the cut for the test to mean something"
    );
    assert_eq!(expected, got);
}
