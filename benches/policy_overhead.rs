//! What watching the metrics costs: one training step of 784-256-10 (batch 128, Adam) alone,
//! and followed by building the `Metrics` (with per-layer gradient norms) and one
//! `GrowthPolicy::observe` under each policy file of `policies/fashion-mnist/` and under a
//! plateau rule whose t test runs at every observation. A decision is refused (the model keeps
//! its size), so the figure is the per-step cost of watching.
//!
//! `cargo bench --bench policy_overhead` (`BENCH_REPS=N` to change the repetitions).

mod common;

use std::time::{Duration, Instant};

use common::*;
use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::optim::{Adam, AdamConfig, Optimizer};
use dfdx_grow::policy::{load_policy, policy_from_str, Metrics};
use dfdx_grow::rand::{rngs::StdRng, SeedableRng};
use dfdx_grow::{Activation, GrowthController, Mlp, Params};

const B: usize = 128;

struct Setup {
    mlp: Mlp<f32, Cpu>,
    opt: Adam<f32>,
    x: Tensor<(usize, usize), f32, Cpu>,
    y: Tensor<(usize, usize), f32, Cpu>,
    step: u64,
}

impl Setup {
    fn new(dev: &Cpu) -> Self {
        let mut rng = StdRng::seed_from_u64(0);
        let mlp = Mlp::<f32, Cpu>::new(&[784, 256, 10], Activation::Relu, dev, &mut rng);
        let labels: Vec<f32> = (0..B * 10)
            .map(|i| f32::from(u8::from(i % 10 == (i / 10) % 10)))
            .collect();
        Self {
            mlp,
            opt: Adam::new(AdamConfig::default()).unwrap(),
            x: dev.sample_normal_like(&(B, 784)),
            y: dev.tensor_from_vec(labels, (B, 10)),
            step: 0,
        }
    }

    /// One step, then (when given a controller) the observation; returns the times of both.
    fn step(&mut self, ctl: Option<&mut GrowthController>) -> (Duration, Duration) {
        let t0 = Instant::now();
        let grads = self.mlp.try_alloc_grads().unwrap();
        let loss = cross_entropy_with_logits_loss(
            self.mlp.forward(self.x.clone().traced(grads)),
            self.y.clone(),
        );
        let train_loss = loss.as_vec()[0] as f64;
        let mut grads = loss.backward();
        self.opt.update(&mut self.mlp, &mut grads).unwrap();
        let t1 = Instant::now();
        self.step += 1;
        if let Some(ctl) = ctl {
            let step = self.step;
            let m = Metrics::of(&self.mlp)
                .step(step)
                .train_loss(train_loss)
                .val_loss(Some(train_loss))
                .grads(&mut grads)
                .build()
                .unwrap();
            // Decisions are refused, so the model keeps its size and every case times the same
            // step; the watching (metrics, gradient norms, the policy's statistics) is timed.
            let policy = ctl.policy_mut();
            if let Some(d) = policy.observe(&m) {
                policy.on_refused(&d, "benchmark: watching only");
            }
        }
        (t1 - t0, t1.elapsed())
    }
}

fn main() {
    header("GrowthPolicy observation overhead per step");
    let dev = Cpu::default();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/fashion-mnist");
    let mut names = vec!["step only".to_string()];
    let mut setups = vec![(Setup::new(&dev), None)];
    for stem in ["plateau", "gradnorm", "schedule", "combined"] {
        let policy = load_policy(dir.join(format!("{stem}.ron"))).unwrap();
        setups.push((Setup::new(&dev), Some(GrowthController::new(policy, 0))));
        names.push(format!("step + observe ({stem}.ron)"));
    }
    // The statistical test at work on every observation: a window of 100 and Student's t.
    let ttest = "Plateau(monitor: Train, patience: 1000000, threshold: Rel(0.0), cooldown: 0, \
        warmup: 0, ema: 0.05, test: (window: 100, confidence: 0.95), target: Layer(0), \
        size: Fraction(1.0), init: ZerosOut)";
    setups.push((
        Setup::new(&dev),
        Some(GrowthController::new(
            policy_from_str(ttest, "inline").unwrap(),
            0,
        )),
    ));
    names.push("step + observe (plateau, t test over 100 values)".into());
    let observe_times = std::cell::RefCell::new(vec![Vec::new(); setups.len()]);
    let mut cases: Vec<Case<'_>> = Vec::new();
    for (i, (name, (setup, ctl))) in names.iter().zip(setups.iter_mut()).enumerate() {
        let obs = &observe_times;
        cases.push(part(name, move || {
            let (step, observe) = setup.step(ctl.as_mut());
            obs.borrow_mut()[i].push(observe.as_secs_f64() * 1e3);
            step + observe
        }));
    }
    let stats = compare(&mut cases, 0, 5, reps(40));
    drop(cases);
    table(
        "784-256-10, batch 128, Adam: a step with and without watching",
        "step only",
        &stats,
    );
    println!("| policy | median observe ms (metrics with gradient norms + observe) |\n|---|---:|");
    for (name, times) in names.iter().zip(observe_times.into_inner()).skip(1) {
        let mut t = times;
        t.sort_by(f64::total_cmp);
        println!("| {name} | {:.3} |", t[t.len() / 2]);
    }
}
