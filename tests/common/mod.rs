//! Helpers shared by the policy tests.
#![allow(dead_code)]

use dfdx_grow::policy::{Decision, GrowthPolicy, Metrics};

/// Metrics for a one-hidden-layer 64 -> 32 -> 10 model at `step` with training loss `loss`.
pub fn m(step: u64, loss: f64) -> Metrics {
    Metrics {
        step,
        epoch: step / 100,
        train_loss: loss,
        val_loss: Some(loss),
        grad_norms: vec![1.0],
        widths: vec![32],
        input_dim: 64,
        output_dim: 10,
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
