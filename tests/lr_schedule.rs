//! Learning-rate schedules: values at known steps through the warm-up and the decay, and what
//! each growth action does; the controller drives an optimizer by one and logs its action.

use std::f64::consts::PI;

use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::lr::{Budget, Decay, LrSchedule, LrScheduleSpec, OnGrowth};
use dfdx_grow::optim::{Adam, AdamConfig, Optimizer};
use dfdx_grow::policy::{policy_from_str, Metrics};
use dfdx_grow::rand::{rngs::StdRng, SeedableRng};
use dfdx_grow::{Activation, GrowthController, Mlp};

fn spec(decay: Decay, on_growth: OnGrowth) -> LrScheduleSpec {
    LrScheduleSpec {
        peak: 1.0,
        warmup: 10,
        decay,
        budget: Budget::Steps(110),
        on_growth,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn warm_up_then_cosine_and_linear_decay_at_known_steps() {
    let s = LrSchedule::new(spec(Decay::Cosine { floor: 0.1 }, OnGrowth::Keep)).unwrap();
    // Warm-up: (step + 1) / 10 of the peak.
    for (step, want) in [(0, 0.1), (4, 0.5), (9, 1.0)] {
        assert!(
            close(s.lr(step, 0.0), want),
            "step {step}: {}",
            s.lr(step, 0.0)
        );
    }
    // Cosine over the 100 steps after the warm-up, from 1 down to 0.1.
    let cos = |p: f64| 0.1 + 0.9 * 0.5 * (1.0 + (PI * p).cos());
    for step in [10, 35, 60, 85, 110, 500] {
        let p = ((step as f64 - 10.0) / 100.0).min(1.0);
        assert!(close(s.lr(step, 0.0), cos(p)), "step {step}");
    }
    assert!(close(s.lr(60, 0.0), 0.55));
    let s = LrSchedule::new(spec(Decay::Linear { floor: 0.0 }, OnGrowth::Keep)).unwrap();
    assert!(close(s.lr(60, 0.0), 0.5));
    assert!(close(s.lr(110, 0.0), 0.0));
    let s = LrSchedule::new(spec(Decay::Constant, OnGrowth::Keep)).unwrap();
    assert!(close(s.lr(100, 0.0), 1.0));
}

#[test]
fn a_flop_budget_decays_with_the_flops_spent() {
    let mut sp = spec(Decay::Linear { floor: 0.0 }, OnGrowth::Keep);
    sp.budget = Budget::Flops(1e12);
    sp.warmup = 0;
    let s = LrSchedule::new(sp).unwrap();
    // A grown run spends fewer FLOPs per step: its rate stays higher at the same step.
    assert!(close(s.lr(500, 2.5e11), 0.75));
    assert!(close(s.lr(500, 5e11), 0.5));
    assert!(close(s.lr(9, 2e12), 0.0));
}

#[test]
fn growth_actions_keep_rewarm_and_rewind_to_the_peak() {
    let decay = Decay::Linear { floor: 0.0 };
    let mut keep = LrSchedule::new(spec(decay, OnGrowth::Keep)).unwrap();
    assert_eq!(keep.on_growth(60, 0.0), "lr: keep");
    assert!(close(keep.lr(70, 0.0), 0.4));

    let mut rewarm = LrSchedule::new(spec(decay, OnGrowth::Rewarm { steps: 20 })).unwrap();
    assert!(rewarm.on_growth(60, 0.0).contains("re-warm over 20 steps"));
    assert!(close(rewarm.lr(60, 0.0), 0.0));
    assert!(
        close(rewarm.lr(70, 0.0), 0.4 * 0.5),
        "half way up to the schedule's 0.4"
    );
    assert!(close(rewarm.lr(80, 0.0), 0.3), "back on the schedule");

    let mut rewind = LrSchedule::new(spec(decay, OnGrowth::RewindToPeak)).unwrap();
    assert!(rewind.on_growth(60, 0.0).contains("back to the peak"));
    assert!(close(rewind.lr(60, 0.0), 1.0));
    // Then linearly down to 0 over what is left: 50 steps.
    assert!(close(rewind.lr(85, 0.0), 0.5));
    assert!(close(rewind.lr(110, 0.0), 0.0));
}

#[test]
fn bad_schedules_are_errors_naming_the_field() {
    for (text, field) in [
        ("(peak: 0.0, budget: Steps(10))", "peak"),
        ("(peak: 1e-3, budget: Steps(0))", "budget"),
        ("(peak: 1e-3, budget: Flops(-1.0))", "budget"),
        (
            "(peak: 1e-3, decay: Cosine(floor: 2.0), budget: Steps(10))",
            "decay.floor",
        ),
        (
            "(peak: 1e-3, budget: Steps(10), on_growth: Rewarm(steps: 0))",
            "on_growth.steps",
        ),
    ] {
        let e = LrScheduleSpec::from_ron(text, "lr.ron")
            .unwrap_err()
            .to_string();
        assert!(e.contains(field) && e.contains("lr.ron"), "{text}: {e}");
    }
    let e = LrScheduleSpec::from_ron("(peak: 1e-3, budgett: Steps(10))", "lr.ron").unwrap_err();
    assert!(e.to_string().contains("lr.ron:1:"), "{e}");
}

#[test]
fn the_controller_sets_the_rate_every_step_and_logs_the_action_with_the_growth() {
    let dev = Cpu::default();
    let mut mlp = Mlp::<f32, Cpu>::new(
        &[4, 8, 2],
        Activation::Relu,
        &dev,
        &mut StdRng::seed_from_u64(0),
    );
    let mut opt = Adam::<f32>::new(AdamConfig::default()).unwrap();
    let policy = policy_from_str(
        "Schedule(events: [(at: Step(50), target: Layer(0), size: Fixed(8))])",
        "inline",
    )
    .unwrap();
    let sched = LrScheduleSpec::from_ron(
        "(peak: 1e-2, warmup: 0, decay: Linear(floor: 0.0), budget: Steps(100), on_growth: Rewarm(steps: 10))",
        "inline",
    )
    .unwrap();
    let mut ctl =
        GrowthController::new(policy, 1).with_lr_schedule(LrSchedule::new(sched).unwrap());
    let mut rates = Vec::new();
    for step in 1..=60 {
        let m = Metrics::of(&mlp)
            .step(step)
            .train_loss(1.0)
            .build()
            .unwrap();
        ctl.observe(&m, &mut mlp, &mut opt, None).unwrap();
        rates.push(Optimizer::<f32, Cpu>::lr(&opt));
    }
    assert!(close(rates[0], 1e-2 * 0.99));
    assert!(close(rates[48], 1e-2 * 0.51), "step 49: {}", rates[48]);
    assert_eq!(rates[49], 0.0, "the growth at step 50 starts a re-warm");
    assert!(close(rates[54], 1e-2 * 0.45 * 0.5));
    assert_eq!(
        ctl.events()[0].lr.as_deref(),
        Some("lr: re-warm over 10 steps")
    );
    // The schedule's state resumes with the controller.
    let state = ctl.state();
    let mut other = GrowthController::new(
        policy_from_str(
            "Schedule(events: [(at: Step(50), target: Layer(0), size: Fixed(8))])",
            "inline",
        )
        .unwrap(),
        1,
    );
    assert!(
        other.restore(&state).is_err(),
        "a controller without a schedule refuses it"
    );
    // A saved schedule edited into one that cannot give rates is refused on restore.
    let json = serde_json::to_string(&state).unwrap();
    assert!(json.contains("\"peak\":0.01"), "{json}");
    let edited: dfdx_grow::ControllerState =
        serde_json::from_str(&json.replace("\"peak\":0.01", "\"peak\":-1.0")).unwrap();
    let e = ctl.restore(&edited).unwrap_err().to_string();
    assert!(e.contains("peak"), "{e}");
    assert_eq!(ctl.state(), state, "a refused restore changes nothing");
}

#[test]
fn a_schedule_that_cannot_give_rates_is_refused_when_built() {
    let mut bad = spec(Decay::Cosine { floor: 0.0 }, OnGrowth::Keep);
    bad.peak = -1.0;
    let e = LrSchedule::new(bad).unwrap_err().to_string();
    assert!(e.contains("peak"), "{e}");
    let mut bad = spec(Decay::Cosine { floor: 0.0 }, OnGrowth::Keep);
    bad.warmup = 110;
    let e = LrSchedule::new(bad).unwrap_err().to_string();
    assert!(e.contains("warm-up"), "{e}");
    // A state edited by hand is checked the same way.
    let mut ok = LrSchedule::new(spec(Decay::Constant, OnGrowth::Keep)).unwrap();
    ok.on_growth(5, f64::NAN);
    assert!(ok.validate().is_err());
}

#[test]
fn a_rewarm_longer_than_any_run_ramps_without_overflow() {
    let mut s =
        LrSchedule::new(spec(Decay::Constant, OnGrowth::Rewarm { steps: u64::MAX })).unwrap();
    s.on_growth(50, 0.0);
    assert_eq!(s.lr(50, 0.0), 0.0);
    assert!(s.lr(60, 0.0) > 0.0 && s.lr(60, 0.0) < 1e-15);
}

#[test]
fn rewinding_after_the_budget_is_spent_stays_at_the_floor() {
    let decay = Decay::Cosine { floor: 0.1 };
    let mut s = LrSchedule::new(spec(decay, OnGrowth::RewindToPeak)).unwrap();
    assert!(close(s.lr(200, 0.0), 0.1));
    s.on_growth(150, 0.0);
    assert!(close(s.lr(200, 0.0), 0.1), "{}", s.lr(200, 0.0));
}
