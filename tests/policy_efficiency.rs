//! The compute-efficiency trigger and the stop rule, on synthetic loss curves with known
//! slopes.

use dfdx_grow::policy::{
    Decision, Efficiency, EfficiencySpec, GrowthPolicy, Limits, LimitsSpec, Metrics, Monitor,
    PolicySpec, SiteMetrics, Size, StopRule, Target,
};
use dfdx_grow::Init;

fn spec(threshold: f64, confidence: Option<f64>) -> EfficiencySpec {
    EfficiencySpec {
        monitor: Monitor::Train,
        window: 8,
        threshold,
        confidence,
        warmup: 0,
        cooldown: 0,
        target: Target::Layer(0),
        size: Size::Fraction(1.0),
        init: Init::ZerosOut,
    }
}

/// An observation at `step` of a run spending 1e9 FLOPs a step whose loss is
/// `2 * flops^slope` (a straight line of `slope` on log-log axes), times `noise`.
fn obs(step: u64, slope: f64, noise: f64) -> Metrics {
    let flops = 1e9 * step as f64;
    Metrics {
        step,
        train_loss: 2.0 * flops.powf(slope) * noise,
        flops,
        sites: vec![SiteMetrics {
            name: "hidden.0".into(),
            width: 32,
            params_per_unit: 10,
            unit_multiple: 1,
            max_width: 1 << 20,
            grad_norm: None,
        }],
        ..Metrics::default()
    }
}

/// The first step at which `p` fires on the curve, if any within `steps`.
fn first_fire(
    p: &mut dyn GrowthPolicy,
    steps: u64,
    curve: impl Fn(u64) -> Metrics,
) -> Option<(u64, Decision)> {
    (1..=steps).find_map(|s| p.observe(&curve(s)).map(|d| (s, d)))
}

#[test]
fn a_loss_still_falling_fast_never_fires_and_a_flattening_one_fires_once_the_window_is_full() {
    let mut p = Efficiency::new(spec(-0.0475, None));
    assert!(first_fire(&mut p, 200, |s| obs(s, -0.2, 1.0)).is_none());
    let mut p = Efficiency::new(spec(-0.0475, None));
    let (step, d) = first_fire(&mut p, 200, |s| obs(s, -0.02, 1.0)).expect("fires");
    assert_eq!(step, 8, "the eighth point fills the window");
    assert!(
        (d.evidence["slope"] + 0.02).abs() < 1e-9,
        "{:?}",
        d.evidence
    );
    assert_eq!(d.evidence["threshold"], -0.0475);
    assert!(d.reason.contains("FLOPs^-0.0200"), "{}", d.reason);
}

#[test]
fn a_curve_that_bends_fires_where_its_slope_crosses_the_threshold() {
    // Slope -0.1 until step 100, then -0.01: the fitted slope crosses -0.0475 a few points
    // after the bend, once most of the window lies past it.
    let bend = |s: u64| {
        let f = |s: u64, a: f64| 2.0 * (1e9 * s as f64).powf(a);
        let loss = if s <= 100 {
            f(s, -0.1)
        } else {
            f(100, -0.1) * (s as f64 / 100.0).powf(-0.01)
        };
        Metrics {
            train_loss: loss,
            ..obs(s, 0.0, 1.0)
        }
    };
    let mut p = Efficiency::new(spec(-0.0475, None));
    let (step, _) = first_fire(&mut p, 300, bend).expect("fires after the bend");
    assert!((101..=108).contains(&step), "fired at {step}");
}

#[test]
fn with_confidence_noise_alone_does_not_fire_but_a_clear_plateau_does() {
    // A falling curve (-0.1) with +-5 % noise: the fitted slope wanders, but not
    // significantly above -0.0475.
    let noisy = |s: u64| obs(s, -0.1, 1.0 + 0.05 * ((s * 7919 % 13) as f64 / 6.0 - 1.0));
    let mut p = Efficiency::new(spec(-0.0475, Some(0.95)));
    assert!(first_fire(&mut p, 400, noisy).is_none());
    let flat = |s: u64| obs(s, 0.0, 1.0 + 0.01 * ((s * 7919 % 13) as f64 / 6.0 - 1.0));
    let mut p = Efficiency::new(spec(-0.0475, Some(0.95)));
    let (_, d) = first_fire(&mut p, 400, flat).expect("a flat loss fires");
    assert!(d.evidence["p_not_above"] < 0.05, "{:?}", d.evidence);
}

#[test]
fn a_growth_clears_the_window_and_starts_the_cooldown() {
    let mut s = spec(-0.0475, None);
    s.cooldown = 3;
    let mut p = Efficiency::new(s);
    let (step, d) = first_fire(&mut p, 50, |s| obs(s, -0.01, 1.0)).unwrap();
    p.on_growth(&d);
    // The window refills (8 points) before it can fire again; the cooldown is shorter.
    let (again, _) = first_fire(&mut p, 50, |s| obs(step + s, -0.01, 1.0)).unwrap();
    assert_eq!(again, 8);
    // Its state saves and restores.
    let saved = p.save_state();
    let mut q = Efficiency::new(spec(-0.0475, None));
    q.load_state(&saved).unwrap();
    assert_eq!(q.save_state(), saved);
}

#[test]
fn non_positive_losses_and_flops_are_skipped_not_logged() {
    let mut p = Efficiency::new(spec(-0.0475, None));
    for s in 1..=20 {
        let mut m = obs(s, -0.01, 1.0);
        if s % 2 == 0 {
            m.train_loss = if s % 4 == 0 { 0.0 } else { f64::NAN };
        }
        if s == 5 {
            m.flops = f64::NAN;
        }
        if let Some(d) = p.observe(&m) {
            assert_eq!(s, 17, "the eighth usable point is step 17");
            assert_eq!(d.evidence["skipped"], 9.0);
            return;
        }
    }
    panic!("never fired");
}

fn stop_limits(min_gain: f64) -> Limits {
    // The inner policy asks to grow at every observation; the stop rule decides.
    let inner = PolicySpec::from_ron(
        "Efficiency(monitor: Train, window: 3, threshold: -1000.0, target: Layer(0), size: Fixed(4))",
        "inline",
    )
    .unwrap()
    .build();
    Limits::new(
        LimitsSpec {
            stop: Some(StopRule {
                monitor: Monitor::Train,
                min_gain,
                per_flops: 1e12,
            }),
            ..LimitsSpec::default()
        },
        inner,
    )
}

/// A loss falling linearly in FLOPs: 1e-3 per 1e12 FLOPs (1e9 a step).
fn linear(step: u64) -> Metrics {
    Metrics {
        train_loss: 1.0 - 1e-6 * step as f64,
        ..obs(step, 0.0, 1.0)
    }
}

#[test]
fn the_stop_rule_passes_growth_that_pays_and_stops_for_good_when_it_does_not() {
    // Gain 1e-3 per 1e12 FLOPs: above 5e-4, growth goes on.
    let mut p = stop_limits(5e-4);
    let mut grown = 0;
    for s in 1..=30 {
        if let Some(d) = p.observe(&linear(s)) {
            p.on_growth(&d);
            grown += 1;
        }
    }
    assert!(grown >= 9, "grew {grown} times");
    assert!(p.take_declined().is_empty());

    // Below 2e-3, it stops at the first decision, and never grows again.
    let mut p = stop_limits(2e-3);
    for s in 1..=30 {
        assert!(p.observe(&linear(s)).is_none(), "step {s}");
    }
    let declined = p.take_declined();
    assert!(declined[0].why.contains("stop rule"), "{}", declined[0].why);
    assert!(declined
        .iter()
        .skip(1)
        .all(|d| d.why.contains("fired earlier")));
    // Stopping survives a save and restore.
    let saved = p.save_state();
    let mut q = stop_limits(2e-3);
    q.load_state(&saved).unwrap();
    let better = Metrics {
        train_loss: 0.0,
        ..linear(40)
    };
    assert!(q.observe(&better).is_none(), "stopped for good");
}

#[test]
fn the_stop_rule_and_the_trigger_read_from_ron() {
    let spec = PolicySpec::from_ron(
        "Limits(max_width: 1024, stop: (monitor: Val, min_gain: 0.002, per_flops: 1e12),
            policy: Efficiency(monitor: Val, window: 6, threshold: -0.0475, confidence: 0.9,
                target: Layer(0), size: Fraction(1.0)))",
        "sizer.ron",
    )
    .unwrap();
    assert_eq!(
        PolicySpec::from_ron(&spec.to_ron().unwrap(), "x").unwrap(),
        spec
    );
    for (bad, field) in [("window: 2", "window"), ("confidence: 1.0", "confidence")] {
        let text = format!(
            "Efficiency(monitor: Val, {bad}, threshold: -0.05, target: Layer(0), size: Fixed(2){})",
            if field == "window" { "" } else { ", window: 5" }
        );
        let e = PolicySpec::from_ron(&text, "bad.ron")
            .unwrap_err()
            .to_string();
        assert!(e.contains(field) && e.contains("bad.ron"), "{e}");
    }
    let e = PolicySpec::from_ron(
        "Limits(stop: (monitor: Val, min_gain: -1.0, per_flops: 1e12), policy: Schedule(events: [(at: Step(1), target: Layer(0), size: Fixed(2))]))",
        "bad.ron",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("stop.min_gain"), "{e}");
}

#[test]
fn firing_clears_the_window_so_an_unobeyed_decision_waits_for_a_fresh_window() {
    // Nothing applies the decisions (no on_growth): a refused or declined decision must not
    // make the policy ask again at the very next observation.
    let mut p = Efficiency::new(spec(-0.0475, None));
    let fired: Vec<u64> = (1..=24)
        .filter(|&s| p.observe(&obs(s, -0.01, 1.0)).is_some())
        .collect();
    assert_eq!(fired, vec![8, 16, 24]);
}

#[test]
fn at_a_width_cap_twenty_observations_write_one_refusal_and_one_summary_of_its_repeats() {
    use dfdx_grow::audit::{AuditLog, AuditRecord};
    use dfdx_grow::dfdx::prelude::Cpu;
    use dfdx_grow::optim::{Adam, AdamConfig};
    use dfdx_grow::policy::policy_from_str;
    use dfdx_grow::rand::{rngs::StdRng, SeedableRng};
    use dfdx_grow::{Activation, GrowthController, Mlp, Outcome};

    let log = std::env::temp_dir().join(format!("dfdx-grow-eff-cap-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let dev = Cpu::default();
    let mut mlp = Mlp::<f64, Cpu>::new(
        &[4, 8, 2],
        Activation::Relu,
        &dev,
        &mut StdRng::seed_from_u64(0),
    )
    .with_max_width(8);
    let mut opt = Adam::<f64>::new(AdamConfig::default()).unwrap();
    // A flat loss: the slope (0) is always above the threshold.
    let policy = policy_from_str(
        "Efficiency(monitor: Train, window: 3, threshold: -10.0, target: Layer(0), size: Fixed(4))",
        "inline",
    )
    .unwrap();
    let mut ctl = GrowthController::new(policy, 0).with_audit(AuditLog::open(&log).unwrap());
    let mut refusals = 0;
    for s in 1..=20u64 {
        let m = Metrics::of(&mlp)
            .step(s)
            .train_loss(1.0)
            .flops(s as f64 * 1e6)
            .build()
            .unwrap();
        let out = ctl.observe(&m, &mut mlp, &mut opt, None).unwrap();
        refusals += u64::from(matches!(out, Outcome::Refused(_)));
    }
    drop(ctl);
    // It asks once a window (steps 3, 6, ..., 18), not at every observation.
    assert_eq!(refusals, 6);
    let refused: Vec<(Option<u64>, u64, u64)> = AuditLog::read(&log)
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            AuditRecord::Refused(e) => Some((e.first_step, e.step, e.count)),
            _ => None,
        })
        .collect();
    assert_eq!(refused, vec![(None, 3, 1), (Some(6), 18, 5)]);
    let _ = std::fs::remove_file(&log);
}
