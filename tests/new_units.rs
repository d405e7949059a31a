//! New units live: grown mid-run on real data (the embedded digits), the units added with
//! the old behaviour (a fresh layer's fan-in, Adam's plain epsilon) mostly never fire again;
//! with the defaults (fan-in matched to the existing units, a relative epsilon for new
//! entries) nearly all do. The health report measures it, and is checked on built cases.

mod common;

use common::rng;
use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::health::{site_health, Activity, NewUnitsSummary};
use dfdx_grow::optim::{Adam, AdamConfig, Optimizer};
use dfdx_grow::rand::seq::SliceRandom;
use dfdx_grow::{Activation, Init, Linear, Loss, LossProbe, Mlp, Params, Probe};
use dfdx_grow_data::{digits::digits, stratified_split};

/// Trains 64-16-10 on the digits with Adam (lr 1e-2, batch 64), grows the hidden layer by
/// 48 after step 200, trains to step 500, and returns the added units' summary on the
/// validation images.
fn grown_run(seed: u64, init: &Init, new_unit_eps: f64) -> NewUnitsSummary {
    let dev = Cpu::default();
    let split = stratified_split(&digits().unwrap(), 0.2, seed).unwrap();
    let mut rng = rng(seed);
    let mut mlp = Mlp::<f32, Cpu>::new(&[64, 16, 10], Activation::Relu, &dev, &mut rng);
    let mut opt = Adam::<f32>::new(AdamConfig {
        lr: 1e-2,
        new_unit_eps,
        ..AdamConfig::default()
    })
    .unwrap();
    let mut order: Vec<usize> = (0..split.train.len()).collect();
    let mut cursor = order.len();
    for step in 1..=500 {
        if cursor + 64 > order.len() {
            order.shuffle(&mut rng);
            cursor = 0;
        }
        let (x, y) = split
            .train
            .batch::<f32, Cpu>(&dev, &order[cursor..cursor + 64]);
        cursor += 64;
        let grads = mlp.try_alloc_grads().unwrap();
        let loss = cross_entropy_with_logits_loss(mlp.forward(x.traced(grads)), y);
        let mut grads = loss.backward();
        opt.update(&mut mlp, &mut grads).unwrap();
        if step == 200 {
            mlp.expand_hidden(0, 48, init, &mut rng).unwrap();
        }
    }
    let all: Vec<usize> = (0..split.val.len()).collect();
    let (x, y) = split.val.batch::<f32, Cpu>(&dev, &all);
    let probe = Probe {
        input: x,
        target: Some((y, Loss::CrossEntropy)),
    };
    let activity = probe.activity(&mlp, "hidden.0").unwrap();
    let cohorts = site_health(&mlp, "hidden.0", &activity, &[(0, 0..16), (200, 16..64)]).unwrap();
    NewUnitsSummary::of(&cohorts)
}

#[test]
fn units_added_mid_run_die_with_the_old_init_and_live_with_the_defaults() {
    let (mut old_dead, mut new_dead) = (0, 0);
    for seed in 0..3 {
        let old = grown_run(seed, &Init::ZerosOutFresh, 0.0);
        let new = grown_run(seed, &Init::ZerosOut, AdamConfig::default().new_unit_eps);
        eprintln!("seed {seed}: old {old:?}\n        new {new:?}");
        assert_eq!((old.added, new.added), (48, 48));
        old_dead += old.dead;
        new_dead += new.dead;
        assert!(new.mean_active > old.mean_active, "seed {seed}");
    }
    // Measured over seeds 0-19 while calibrating: old 18-43 of 48 dead per run (mean 31),
    // new 0-5. Thresholds leave room for other data orders.
    assert!(
        old_dead >= 45,
        "the old behaviour left only {old_dead} of 144 dead"
    );
    assert!(new_dead <= 20, "the defaults left {new_dead} of 144 dead");
}

#[test]
fn a_unit_with_only_negative_pre_activations_is_dead() {
    // Three units over four examples: unit 0 always negative, unit 1 positive once, unit 2
    // always positive.
    let pre: Vec<f64> = vec![
        -1.0, 0.5, 2.0, -0.1, -1.0, 1.0, -3.0, -2.0, 0.3, -0.2, -0.1, 0.1,
    ];
    let a = Activity::from_pre_activations(&pre, 3, |z| Activation::Relu.is_active(z)).unwrap();
    assert_eq!((a.share(0), a.share(1), a.share(2)), (0.0, 0.25, 1.0));
    let dev = Cpu::default();
    let layer = |w: Vec<f64>, out: usize, inp: usize| {
        Linear::from_parts(dev.tensor_from_vec(w, (out, inp)), dev.zeros_like(&(out,))).unwrap()
    };
    let mlp = Mlp::from_layers(
        vec![
            layer(vec![3.0, 4.0, 0.0, 1.0, 1.0, 0.0], 3, 2),
            layer(vec![1.0, 0.0, 2.0], 1, 3),
        ],
        Activation::Relu,
    )
    .unwrap();
    let h = site_health(&mlp, "hidden.0", &a, &[(0, 0..1), (7, 1..3)]).unwrap();
    assert_eq!((h[0].dead, h[1].dead), (1, 0));
    assert_eq!(h[0].mean_active, 0.0);
    assert!((h[1].mean_active - 0.625).abs() < 1e-12);
    assert_eq!(h[0].fan_in_norm, 5.0);
    assert_eq!(h[1].fan_in_norm, 1.0);
    assert_eq!((h[0].fan_out_norm, h[1].fan_out_norm), (1.0, 1.0));
    let s = NewUnitsSummary::of(&h);
    assert_eq!((s.added, s.dead, s.old_mean_active), (2, 0, 0.0));
    // A cohort past the width or activity of another width is an error.
    assert!(site_health(&mlp, "hidden.0", &a, &[(0, 0..4)]).is_err());
    assert!(site_health(&mlp, "hidden.1", &a, &[(0, 0..3)]).is_err());
}

#[test]
fn a_copied_unit_reports_the_figures_of_its_source() {
    let dev = Cpu::default();
    let mut rng = rng(3);
    let mut mlp = Mlp::<f64, Cpu>::new(&[6, 1, 2], Activation::Relu, &dev, &mut rng);
    // Copying the only unit (Net2Net without noise): same fan-in, the fan-out halved.
    mlp.expand_hidden(0, 1, &Init::CopyHalve, &mut rng).unwrap();
    let x: Tensor<(usize, usize), f64, Cpu> = dev.sample_normal_like(&(50, 6));
    let probe = Probe {
        input: x,
        target: None,
    };
    let a = probe.activity(&mlp, "hidden.0").unwrap();
    let h = site_health(&mlp, "hidden.0", &a, &[(0, 0..1), (1, 1..2)]).unwrap();
    assert_eq!(h[0].dead, h[1].dead);
    assert_eq!(h[0].mean_active, h[1].mean_active);
    assert_eq!(h[0].fan_in_norm, h[1].fan_in_norm);
    assert_eq!(h[0].fan_out_norm, h[1].fan_out_norm);
    // The probe's loss needs a target: without one it is NaN, not a number made up.
    assert!(probe.loss(&mlp).is_nan());
}

#[test]
fn the_controller_reports_mostly_dead_cohorts_and_can_give_their_units_a_fresh_start() {
    use dfdx_grow::audit::{AuditLog, AuditRecord};
    use dfdx_grow::policy::{policy_from_str, Metrics};
    use dfdx_grow::{GrowthController, HealthAction, HealthCheck};

    let dev = Cpu::default();
    let split = stratified_split(&digits().unwrap(), 0.2, 1).unwrap();
    let mut rng = rng(1);
    let mut mlp = Mlp::<f32, Cpu>::new(&[64, 16, 10], Activation::Relu, &dev, &mut rng);
    // The old behaviour, to have dead units to find.
    let mut opt = Adam::<f32>::new(AdamConfig {
        lr: 1e-2,
        new_unit_eps: 0.0,
        ..AdamConfig::default()
    })
    .unwrap();
    let policy = policy_from_str(
        "Schedule(events: [(at: Step(200), target: Layer(0), size: Fixed(48), init: ZerosOutFresh)])",
        "inline",
    )
    .unwrap();
    let log = std::env::temp_dir().join(format!("dfdx_grow_health_{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let check = HealthCheck {
        after_steps: 300,
        dead_share: 0.3,
        action: HealthAction::Reinitialise,
    };
    let mut ctl = GrowthController::new(policy, 5)
        .with_audit(AuditLog::open(&log).unwrap())
        .with_health(check)
        .unwrap();
    let all: Vec<usize> = (0..split.val.len()).collect();
    let (vx, vy) = split.val.batch::<f32, Cpu>(&dev, &all);
    let probe = Probe {
        input: vx,
        target: Some((vy, Loss::CrossEntropy)),
    };
    let mut order: Vec<usize> = (0..split.train.len()).collect();
    order.shuffle(&mut rng);
    let mut loss_around_check = (0.0, 0.0);
    for step in 1..=500u64 {
        let at = (step as usize * 64) % (order.len() - 64);
        let (x, y) = split.train.batch::<f32, Cpu>(&dev, &order[at..at + 64]);
        let grads = mlp.try_alloc_grads().unwrap();
        let loss = cross_entropy_with_logits_loss(mlp.forward(x.traced(grads)), y);
        let mut grads = loss.backward();
        opt.update(&mut mlp, &mut grads).unwrap();
        let m = Metrics::of(&mlp).step(step).build().unwrap();
        if step == 500 {
            loss_around_check.0 = probe.loss(&mlp);
        }
        ctl.observe(&m, &mut mlp, &mut opt, Some(&probe)).unwrap();
        if step == 500 {
            loss_around_check.1 = probe.loss(&mlp);
        }
    }
    let health: Vec<_> = AuditLog::read(&log)
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            AuditRecord::Health(h) => Some(h),
            _ => None,
        })
        .collect();
    assert_eq!(health.len(), 1);
    let h = &health[0];
    assert_eq!((h.step, h.site.as_str()), (500, "hidden.0"));
    assert_eq!(h.cohorts.len(), 2);
    assert_eq!((h.cohorts[1].born, h.cohorts[1].len()), (200, 48));
    let dead = h.cohorts[1].dead;
    assert!(
        dead as f64 >= 0.3 * 48.0,
        "the old behaviour left {dead} dead"
    );
    assert_eq!(h.mostly_dead, vec![200]);
    assert_eq!(h.reinitialised, dead);
    // The dead units added nothing on the probe batch, and their fan-out is now zero: the
    // probe loss is unchanged, and the fresh units are measured alive again.
    assert_eq!(loss_around_check.0, loss_around_check.1);
    let activity = probe.activity(&mlp, "hidden.0").unwrap();
    let after = site_health(&mlp, "hidden.0", &activity, &ctl.cohorts("hidden.0", 64)).unwrap();
    assert!(
        after[1].dead < dead / 2,
        "{} still dead of {dead}",
        after[1].dead
    );
    let _ = std::fs::remove_file(&log);
}

// --- Review item 10: per-cohort gradient norms; which activations are silent when off. ---

use dfdx_grow::health::{site_health_with_grads, CohortHealth};

#[test]
fn only_relu_units_output_zero_when_inactive() {
    let dev = Cpu::default();
    let zs: Vec<f64> = (-40..=40).map(|i| i as f64 * 0.25).collect();
    for act in Activation::ALL {
        let out = act
            .try_apply(dev.tensor_from_vec(zs.clone(), (zs.len(),)))
            .unwrap()
            .as_vec();
        let inactive: Vec<f64> = zs
            .iter()
            .zip(&out)
            .filter(|(&z, _)| !act.is_active(z))
            .map(|(_, &y)| y)
            .collect();
        assert_eq!(act.zero_when_inactive(), act == Activation::Relu, "{act:?}");
        if act.zero_when_inactive() {
            assert!(inactive.iter().all(|&y| y == 0.0), "{act:?}");
        } else if act != Activation::Identity {
            // Identity is never inactive on a number; the others saturate away from zero.
            assert!(inactive.iter().any(|&y| y != 0.0), "{act:?}: {inactive:?}");
        }
    }
}

#[test]
fn cohort_gradient_norms_are_those_of_the_units_rows_and_columns() {
    let dev = Cpu::default();
    let mut r = rng(8);
    let mut mlp = Mlp::<f64, Cpu>::new(&[3, 4, 2], Activation::Relu, &dev, &mut r);
    // MirrorPairs: the new units have a fan-out, so their fan-in gets a gradient at once.
    mlp.expand_hidden(0, 2, &Init::MirrorPairs, &mut r).unwrap();
    let (x, y) = (
        common::input::<f64>(&dev, 16, 3, &mut r),
        common::one_hot::<f64>(&dev, 16, 2, &mut r),
    );
    let grads = mlp.try_alloc_grads().unwrap();
    let loss = cross_entropy_with_logits_loss(mlp.forward(x.clone().traced(grads)), y.clone());
    let mut grads = loss.backward();
    let probe = Probe {
        input: x,
        target: None,
    };
    let a = probe.activity(&mlp, "hidden.0").unwrap();
    let cohorts = [(0, 0..4), (1, 4..6)];
    let h = site_health_with_grads(&mlp, "hidden.0", &a, &cohorts, &mut grads).unwrap();
    // Directly: rows of layers.0.weight's gradient (3 columns), columns of layers.1.weight's
    // (6 columns, 2 rows).
    let g = common::grads_of(&mlp, &mut grads);
    let norm = |v: Vec<f64>| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let fan_in = |u: usize| norm(g[0][u * 3..(u + 1) * 3].to_vec());
    let fan_out = |u: usize| norm((0..2).map(|r| g[2][r * 6 + u]).collect());
    for (c, (_, units)) in h.iter().zip(&cohorts) {
        let n = units.len() as f64;
        let want_in: f64 = units.clone().map(fan_in).sum::<f64>() / n;
        let want_out: f64 = units.clone().map(fan_out).sum::<f64>() / n;
        let (got_in, got_out) = (c.fan_in_grad_norm.unwrap(), c.fan_out_grad_norm.unwrap());
        assert!(
            (got_in - want_in).abs() <= 1e-12 * want_in.max(1.0),
            "{got_in} vs {want_in}"
        );
        assert!(
            (got_out - want_out).abs() <= 1e-12 * want_out.max(1.0),
            "{got_out} vs {want_out}"
        );
    }
    assert!(h[1].fan_in_grad_norm.unwrap() > 0.0 && h[1].fan_out_grad_norm.unwrap() > 0.0);
    // Without gradients there are none; the record round-trips through JSON either way.
    let plain = site_health(&mlp, "hidden.0", &a, &cohorts).unwrap();
    assert_eq!(plain[1].fan_in_grad_norm, None);
    for c in [&h[1], &plain[1]] {
        let back: CohortHealth = serde_json::from_str(&serde_json::to_string(c).unwrap()).unwrap();
        assert_eq!(&back, c);
    }
}

// --- Review items 2 and 16: the health check re-initialises only what it can, as new units;
// cohorts name the original units. ---

use dfdx_grow::audit::{AuditLog, AuditRecord};
use dfdx_grow::health::HealthRecord;
use dfdx_grow::policy::{policy_from_str, Metrics};
use dfdx_grow::{GrowthController, HealthAction, HealthCheck, Matrix};

fn temp_log(name: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("dfdx-grow-units-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// Overwrites tensor `name` of `mlp` entry by entry: `f(index, old) -> new`.
fn edit(mlp: &mut Mlp<f64, Cpu>, name: &str, f: impl Fn(usize, f64) -> f64) {
    mlp.visit_mut(&mut |n, mut p| {
        if n == name {
            let mut v = vec![0.0; p.as_ref().len()];
            p.as_ref().copy_into(&mut v);
            let v: Vec<f64> = v.iter().enumerate().map(|(i, &x)| f(i, x)).collect();
            p.copy_from(&v);
        }
    });
}

fn weights(mlp: &Mlp<f64, Cpu>) -> Vec<Vec<u64>> {
    let mut out = Vec::new();
    mlp.visit(&mut |_, p| {
        let mut v = vec![0.0f64; p.len()];
        p.copy_into(&mut v);
        out.push(v.iter().map(|x| x.to_bits()).collect());
    });
    out
}

/// A controller that grows `hidden.0` by `k` at step 1 and checks its health at step 2,
/// re-initialising mostly dead cohorts, with its log.
fn reinitialising_controller(k: usize, log: &std::path::Path) -> GrowthController {
    let policy = policy_from_str(
        &format!("Schedule(events: [(at: Step(1), target: Site(\"hidden.0\"), size: Fixed({k}))])"),
        "inline",
    )
    .unwrap();
    GrowthController::new(policy, 9)
        .with_audit(AuditLog::open(log).unwrap())
        .with_health(HealthCheck {
            after_steps: 1,
            dead_share: 0.5,
            action: HealthAction::Reinitialise,
        })
        .unwrap()
}

fn health_records(log: &std::path::Path) -> Vec<HealthRecord> {
    AuditLog::read(log)
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            AuditRecord::Health(h) => Some(h),
            _ => None,
        })
        .collect()
}

#[test]
fn saturated_tanh_units_are_not_reinitialised_and_the_record_says_why() {
    let dev = Cpu::default();
    let mut r = rng(4);
    let mut mlp = Mlp::<f64, Cpu>::new(&[2, 3, 2], Activation::Tanh, &dev, &mut r);
    let mut opt = Adam::<f64>::new(AdamConfig::default()).unwrap();
    let probe = Probe {
        input: common::input::<f64>(&dev, 16, 2, &mut r),
        target: Some((
            common::one_hot::<f64>(&dev, 16, 2, &mut r),
            Loss::CrossEntropy,
        )),
    };
    let log = temp_log("tanh.jsonl");
    let mut ctl = reinitialising_controller(1, &log);
    let m = Metrics::of(&mlp).step(1).build().unwrap();
    ctl.observe(&m, &mut mlp, &mut opt, Some(&probe)).unwrap();
    // The new unit (3) saturates at tanh(10) ~ 1 on every input ("dead": no gradient) and
    // feeds that through a fan-out training has made non-zero.
    edit(&mut mlp, "layers.0.weight", |i, w| {
        if i / 2 == 3 {
            0.0
        } else {
            w
        }
    });
    edit(
        &mut mlp,
        "layers.0.bias",
        |i, b| if i == 3 { 10.0 } else { b },
    );
    edit(&mut mlp, "layers.1.weight", |i, w| {
        if i % 4 == 3 {
            0.7
        } else {
            w
        }
    });
    let before = weights(&mlp);
    let m = Metrics::of(&mlp).step(2).build().unwrap();
    ctl.observe(&m, &mut mlp, &mut opt, Some(&probe)).unwrap();
    let h = &health_records(&log)[0];
    assert_eq!((h.cohorts[1].dead, h.mostly_dead.clone()), (1, vec![1]));
    assert_eq!(h.reinitialised, 0);
    let note = h.note.as_deref().unwrap_or_default();
    assert!(
        note.contains("not re-initialised") && note.contains("do not output zero"),
        "{note}"
    );
    assert_eq!(weights(&mlp), before, "the function changed");
    let _ = std::fs::remove_file(&log);
}

/// Measures unit activity on one batch and the loss on another (a custom probe can), so a
/// unit can be dead where activity is measured and alive where the loss is.
struct TwoBatches {
    activity: Probe<f64, Cpu>,
    loss: Probe<f64, Cpu>,
}

impl LossProbe<Mlp<f64, Cpu>> for TwoBatches {
    fn loss(&self, m: &Mlp<f64, Cpu>) -> f64 {
        self.loss.loss(m)
    }
    fn activity(&self, m: &Mlp<f64, Cpu>, site: &str) -> Option<Activity> {
        self.activity.activity(m, site)
    }
}

#[test]
fn a_reinitialisation_that_raises_the_probe_loss_is_put_back_with_a_note() {
    let dev = Cpu::default();
    let mut mlp = Mlp::<f64, Cpu>::new(&[1, 1, 1], Activation::Relu, &dev, &mut rng(0));
    let mut opt = Adam::<f64>::new(AdamConfig::default()).unwrap();
    let column = |v: Vec<f64>| -> Matrix<f64, Cpu> {
        let n = v.len();
        dev.tensor_from_vec(v, (n, 1))
    };
    // y = relu(x) through the new unit: dead on x < 0, exact on x > 0.
    let probe = TwoBatches {
        activity: Probe {
            input: column(vec![-1.0, -2.0]),
            target: None,
        },
        loss: Probe {
            input: column(vec![1.0, 2.0]),
            target: Some((column(vec![1.0, 2.0]), Loss::Mse)),
        },
    };
    let log = temp_log("rise.jsonl");
    let mut ctl = reinitialising_controller(1, &log);
    let m = Metrics::of(&mlp).step(1).build().unwrap();
    ctl.observe(&m, &mut mlp, &mut opt, Some(&probe)).unwrap();
    edit(&mut mlp, "layers.0.weight", |i, _| [0.0, 1.0][i]);
    edit(&mut mlp, "layers.0.bias", |_, _| 0.0);
    edit(&mut mlp, "layers.1.weight", |i, _| [0.0, 1.0][i]);
    edit(&mut mlp, "layers.1.bias", |_, _| 0.0);
    assert_eq!(probe.loss(&mlp), 0.0);
    let before = weights(&mlp);
    let m = Metrics::of(&mlp).step(2).build().unwrap();
    ctl.observe(&m, &mut mlp, &mut opt, Some(&probe)).unwrap();
    let h = &health_records(&log)[0];
    assert_eq!((h.cohorts[1].dead, h.reinitialised), (1, 0));
    let note = h.note.as_deref().unwrap_or_default();
    assert!(
        note.contains("put back") && note.contains("rose from 0"),
        "{note}"
    );
    assert_eq!(weights(&mlp), before);
    let _ = std::fs::remove_file(&log);
}

#[test]
fn reinitialised_units_get_fresh_optimizer_state_as_new_units() {
    use dfdx_grow::optim::Cohort;
    let dev = Cpu::default();
    let mut r = rng(6);
    let mut mlp = Mlp::<f64, Cpu>::new(&[3, 4, 2], Activation::Relu, &dev, &mut r);
    let mut opt = Adam::<f64>::new(AdamConfig::default()).unwrap();
    let (x, y) = (
        common::input::<f64>(&dev, 16, 3, &mut r),
        common::one_hot::<f64>(&dev, 16, 2, &mut r),
    );
    let probe = Probe {
        input: x.clone(),
        target: Some((y.clone(), Loss::CrossEntropy)),
    };
    let log = temp_log("fresh-state.jsonl");
    let policy = policy_from_str(
        "Schedule(events: [(at: Step(3), target: Site(\"hidden.0\"), size: Fixed(2), init: MirrorPairs)])",
        "inline",
    )
    .unwrap();
    let mut ctl = GrowthController::new(policy, 9)
        .with_audit(AuditLog::open(&log).unwrap())
        .with_health(HealthCheck {
            after_steps: 2,
            dead_share: 0.5,
            action: HealthAction::Reinitialise,
        })
        .unwrap();
    let state_of = |opt: &Adam<f64>, name: &str| {
        opt.state()
            .tensors
            .iter()
            .find(|t| t.name == name)
            .unwrap()
            .clone()
    };
    for s in 1..=5 {
        common::step(&mut mlp, &mut opt, &x, &y);
        if s == 5 {
            // The new unit 5 has trained (its moments are not zero), then dies on the probe.
            let w1 = state_of(&opt, "layers.1.weight");
            assert!((0..2).any(|r| w1.buffers[0][r * 6 + 5] != 0.0));
            edit(
                &mut mlp,
                "layers.0.bias",
                |i, b| if i == 5 { -100.0 } else { b },
            );
        }
        let m = Metrics::of(&mlp).step(s).build().unwrap();
        ctl.observe(&m, &mut mlp, &mut opt, Some(&probe)).unwrap();
    }
    let h = &health_records(&log)[0];
    assert_eq!((h.step, h.reinitialised, h.note.clone()), (5, 1, None));
    let now = Optimizer::<f64, Cpu>::steps(&opt);
    assert_eq!(now, 5);
    let w0 = state_of(&opt, "layers.0.weight");
    let (grown, renewed) = (w0.rows[1], w0.rows[2]);
    assert_eq!(
        (w0.rows.len(), w0.rows[0].start, w0.rows[0].born),
        (3, 0, 0)
    );
    assert_eq!((grown.start, grown.born), (4, 3));
    assert_eq!((renewed.start, renewed.born), (5, now));
    assert!(renewed.eps.is_some(), "no new-unit epsilon");
    for b in &w0.buffers {
        assert!(b[5 * 3..6 * 3].iter().all(|&v| v == 0.0));
        assert!(
            b[4 * 3..5 * 3].iter().any(|&v| v != 0.0),
            "unit 4 was renewed too"
        );
    }
    let b0 = state_of(&opt, "layers.0.bias");
    assert_eq!(b0.rows.last().map(|c| (c.start, c.born)), Some((5, now)));
    assert!(b0.buffers.iter().all(|b| b[5] == 0.0));
    let w1 = state_of(&opt, "layers.1.weight");
    let last: Option<&Cohort> = w1.cols.last();
    assert_eq!(last.map(|c| (c.start, c.born)), Some((5, now)));
    assert!(last.is_some_and(|c| c.eps.is_some()));
    assert!(w1.buffers.iter().all(|b| b[5] == 0.0 && b[6 + 5] == 0.0));
    // The state is well-formed: it saves and loads back, and trains on.
    let saved = opt.save_state();
    let mut again = Adam::<f64>::new(AdamConfig::default()).unwrap();
    again.load_state(&saved, &mlp).unwrap();
    assert_eq!(again.state(), opt.state());
    common::step(&mut mlp, &mut opt, &x, &y);
    let _ = std::fs::remove_file(&log);
}

#[test]
fn a_growth_at_step_zero_is_a_grown_cohort_and_old_records_still_read() {
    let dev = Cpu::default();
    let mut mlp = Mlp::<f64, Cpu>::new(&[3, 4, 2], Activation::Relu, &dev, &mut rng(1));
    let mut opt = Adam::<f64>::new(AdamConfig::default()).unwrap();
    let policy = policy_from_str(
        "Schedule(events: [(at: Step(0), target: Site(\"hidden.0\"), size: Fixed(2))])",
        "inline",
    )
    .unwrap();
    let mut ctl = GrowthController::new(policy, 1);
    let m = Metrics::of(&mlp).step(0).build().unwrap();
    ctl.observe(&m, &mut mlp, &mut opt, None).unwrap();
    let cohorts = ctl.cohorts("hidden.0", 6);
    assert_eq!(cohorts, vec![(0, 0..4), (0, 4..6)]);
    let probe = Probe {
        input: common::input::<f64>(&dev, 8, 3, &mut rng(2)),
        target: None,
    };
    let h = site_health(
        &mlp,
        "hidden.0",
        &probe.activity(&mlp, "hidden.0").unwrap(),
        &cohorts,
    )
    .unwrap();
    assert_eq!((h[0].original, h[1].original, h[1].born), (true, false, 0));
    assert_eq!(NewUnitsSummary::of(&h).added, 2);
    // A record written before `original` existed: born 0 meant the original units.
    let old = r#"{"born":0,"units":{"start":0,"end":4},"dead":0,"mean_active":1.0,"fan_in_norm":1.0,"fan_out_norm":1.0}"#;
    let c: CohortHealth = serde_json::from_str(old).unwrap();
    assert!(c.original && c.fan_in_grad_norm.is_none());
    let old_grown = old.replace("\"born\":0", "\"born\":7");
    assert!(
        !serde_json::from_str::<CohortHealth>(&old_grown)
            .unwrap()
            .original
    );
}

#[test]
fn the_shipped_health_file_reads_and_a_bad_share_is_an_error_naming_the_file() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/health/report.ron");
    let text = std::fs::read_to_string(path).unwrap();
    let check = dfdx_grow::HealthCheck::from_ron(&text, path).unwrap();
    assert_eq!((check.after_steps, check.dead_share), (300, 0.5));
    let e = dfdx_grow::HealthCheck::from_ron(&text.replace("0.5", "2.0"), "health.ron")
        .unwrap_err()
        .to_string();
    assert!(e.contains("health.ron") && e.contains("dead_share"), "{e}");
    let e =
        dfdx_grow::HealthCheck::from_ron("(after_steps: 3, dead_share: 0.5, colour: 1)", "x.ron")
            .unwrap_err()
            .to_string();
    assert!(e.contains("x.ron"), "{e}");
}
