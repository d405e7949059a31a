//! Sizes at the edge of `usize` and FLOP counts that are not numbers (issue 10, items 8 and 11,
//! and the rule that all arithmetic on sizes is checked): never a wrap, never an overflow
//! panic (these tests also run in debug builds, where overflow checks are on), always a typed
//! refusal.

mod common;

use common::*;
use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::optim::{Adam, AdamConfig};
use dfdx_grow::policy::{policy_from_str, GrowthPolicy, Limits, LimitsSpec, Metrics};
use dfdx_grow::{
    check_growth, grow_between, Activation, Expandable, GrowError, GrowthController, Init, Linear,
    Mlp, Outcome,
};

fn schedule(ron_events: &str) -> Box<dyn GrowthPolicy> {
    policy_from_str(&format!("Schedule(events: [{ron_events}])"), "inline").unwrap()
}

const MAX_AND_TWO: &str = "(at: Step(1), target: Layer(0), size: Fixed(18446744073709551615)),
     (at: Step(1), target: Layer(0), size: Fixed(2))";

#[test]
fn two_same_step_growths_of_usize_max_and_2_are_refused_not_wrapped() {
    assert_eq!(usize::MAX as u64, 18446744073709551615, "64-bit usize");
    let dev = Cpu::default();
    let mut mlp = Mlp::<f32, Cpu>::new(&[4, 8, 2], Activation::Relu, &dev, &mut rng(1));
    let mut opt = Adam::<f32>::new(AdamConfig::default()).unwrap();
    let mut ctl = GrowthController::new(schedule(MAX_AND_TWO), 0);
    let m = Metrics::of(&mlp).step(1).build().unwrap();
    let out = ctl.observe(&m, &mut mlp, &mut opt, None).unwrap();
    let Outcome::Refused(r) = out else {
        panic!("{out:?}")
    };
    // The two events add up to usize::MAX (saturating), which passes the width cap.
    assert_eq!(r.growths[0].units(), usize::MAX);
    assert!(r.why.contains("width cap"), "{}", r.why);
    assert_eq!(mlp.widths(), vec![4, 8, 2]);
}

#[test]
fn limits_sum_widths_and_parameters_without_overflow() {
    // A site already near usize::MAX wide in a model near usize::MAX parameters.
    let near = |width: usize, params: usize| Metrics {
        sites: vec![site(0, width, 64, 10, None)],
        params,
        ..m(1, 1.0)
    };
    for spec in [
        LimitsSpec::default(),
        LimitsSpec {
            max_width: Some(usize::MAX),
            ..Default::default()
        },
        LimitsSpec {
            max_params: Some(usize::MAX),
            ..Default::default()
        },
        LimitsSpec {
            max_width: Some(usize::MAX - 1),
            max_params: Some(usize::MAX - 1),
            ..Default::default()
        },
    ] {
        for (width, params) in [
            (usize::MAX - 1, usize::MAX - 5),
            (usize::MAX, usize::MAX),
            (1, usize::MAX - 75),
        ] {
            let mut p = Limits::new(spec.clone(), schedule(MAX_AND_TWO));
            // Whatever is left must stay within both caps; no panic on the way.
            if let Some(d) = p.observe(&near(width, params)) {
                let k = d.growths[0].units();
                if let Some(mw) = spec.max_width {
                    assert!(width.checked_add(k).is_some_and(|w| w <= mw), "{spec:?}");
                }
                if let Some(mp) = spec.max_params {
                    let added = k.checked_mul(75).expect("within max_params");
                    assert!(params.checked_add(added).is_some_and(|n| n <= mp));
                }
            }
        }
    }
    // Under a real cap the sum is exact: 50 of room, taken by the first growth.
    let mut p = Limits::new(
        LimitsSpec {
            max_width: Some(100),
            ..Default::default()
        },
        schedule(MAX_AND_TWO),
    );
    let d = p.observe(&near(50, 10_000)).expect("room for 50");
    assert_eq!(d.growths[0].units(), 50);
}

#[test]
fn max_flops_declines_when_the_flop_count_is_not_a_finite_number() {
    for (flops, grows) in [
        (f64::NAN, false),
        (f64::NEG_INFINITY, false),
        (f64::INFINITY, false),
        (2e9, false),
        (1e9, false),
        (5e8, true),
    ] {
        let mut p = Limits::new(
            LimitsSpec {
                max_flops: Some(1e9),
                ..Default::default()
            },
            schedule("(at: Step(1), target: Layer(0), size: Fixed(4))"),
        );
        let d = p.observe(&Metrics { flops, ..m(1, 1.0) });
        assert_eq!(d.is_some(), grows, "flops {flops}");
        let declined = p.take_declined();
        assert_eq!(declined.len(), usize::from(!grows), "flops {flops}");
        if let Some(x) = declined.first() {
            assert!(x.why.contains("max_flops"), "{}", x.why);
        }
    }
}

#[test]
fn plans_and_growths_of_a_usize_sized_k_are_errors_not_panics() {
    let dev = Cpu::default();
    let mut r = rng(2);
    let mut producer = Linear::<f32, Cpu>::new(3, 4, &dev, &mut r).unwrap();
    let mut consumer = Linear::<f32, Cpu>::new(4, 2, &dev, &mut r).unwrap();
    for k in [usize::MAX, usize::MAX / 2 + 1, usize::MAX / 3 + 1] {
        for init in [
            Init::ZerosOut,
            Init::ZerosBoth,
            Init::MirrorPairs,
            Init::ConstantFanIn { value: 1.0 },
        ] {
            let k = if init == Init::MirrorPairs { k & !1 } else { k };
            let e = init
                .plan(&producer, &[&consumer], k, &mut r)
                .expect_err("no plan of that size");
            assert!(
                matches!(
                    e,
                    GrowError::TooLarge { .. } | GrowError::InitMismatch { .. }
                ),
                "{init:?} {k}: {e:?}"
            );
            assert!(grow_between(&mut producer, &mut consumer, k, &init, &mut r).is_err());
        }
    }
    assert_eq!(producer.out_width(), 4);
    let mlp = Mlp::<f32, Cpu>::new(&[3, 4, 2], Activation::Relu, &dev, &mut r);
    for k in [usize::MAX, usize::MAX - 4, usize::MAX / 7] {
        assert!(matches!(
            check_growth(&mlp, "hidden.0", k, &Init::ZerosOut),
            Err(GrowError::WidthCap { .. })
        ));
    }
}
