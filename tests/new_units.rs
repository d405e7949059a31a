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
