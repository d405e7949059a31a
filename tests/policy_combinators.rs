//! AnyOf, AllOf, Sequence and Limits: how they compose, route outcomes, and resume.

mod common;

use common::{assert_resume_equivalent, fire_steps, m, site};
use dfdx_grow::init::Init;
use dfdx_grow::policy::{
    AllOf, AnyOf, At, Event, Grow, GrowthPolicy, Limits, LimitsSpec, Metrics, Monitor, Plateau,
    PlateauSpec, Schedule, ScheduleSpec, Sequence, Size, Target, Threshold,
};

fn _obj_safe(_: Box<dyn GrowthPolicy>) {}

fn at(steps: &[u64], layer: usize, k: usize) -> Box<dyn GrowthPolicy> {
    let events = steps
        .iter()
        .map(|&s| Event {
            at: At::Step(s),
            grow: Grow::Width,
            target: Some(Target::Layer(layer)),
            size: Some(Size::Fixed(k)),
            init: Init::ZerosOut,
        })
        .collect();
    Box::new(Schedule::new(ScheduleSpec { events }))
}

fn plateau(patience: u32, cooldown: u32) -> Box<dyn GrowthPolicy> {
    Box::new(Plateau::new(PlateauSpec {
        monitor: Monitor::Train,
        patience,
        threshold: Threshold::Rel(0.0),
        cooldown,
        warmup: 0,
        ema: None,
        test: None,
        target: Target::Layer(0),
        size: Size::Fixed(4),
        init: Init::ZerosOut,
    }))
}

fn flat(n: u64) -> Vec<Metrics> {
    (0..n).map(|i| m(i, 1.0)).collect()
}

#[test]
fn any_of_takes_the_first_that_fires_and_every_child_still_observes() {
    let mut p = AnyOf::new(vec![at(&[3], 0, 1), at(&[3, 6], 0, 2)]);
    let fired = common::run(&mut p, &flat(10));
    // Step 3: both fire, the first wins; the second's step-3 event was consumed (it observed).
    assert_eq!(
        fired
            .iter()
            .map(|(i, d)| (*i, d.policy.as_str(), d.growths[0].units()))
            .collect::<Vec<_>>(),
        vec![(3, "any_of[0]/schedule", 1), (6, "any_of[1]/schedule", 2)]
    );
}

#[test]
fn any_of_routes_on_growth_to_the_branch_that_fired() {
    // The plateau in branch 1 has cooldown 3: if on_growth reached it, it skips 3 observations.
    let mut p = AnyOf::new(vec![at(&[100], 0, 1), plateau(1, 3)]);
    assert_eq!(fire_steps(&mut p, &flat(8)), vec![1, 5]);
}

#[test]
fn all_of_fires_only_when_all_fire_in_the_same_observation_and_merges() {
    let mut p = AllOf::new(vec![at(&[2, 5], 0, 3), at(&[5, 7], 0, 8)]);
    let fired = common::run(&mut p, &flat(10));
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].0, 5);
    assert_eq!(fired[0].1.growths.len(), 1);
    assert_eq!(fired[0].1.growths[0].units(), 8, "largest k per layer wins");
    assert!(fired[0].1.evidence.contains_key("all_of[1].step"));
}

#[test]
fn sequence_moves_on_after_n_applied_growths_and_refusals_do_not_count() {
    let mut p = Sequence::new(vec![(at(&[1, 2, 3], 0, 1), 2), (at(&[0, 6], 0, 9), 1)]);
    let mut log = Vec::new();
    for x in flat(10) {
        if let Some(d) = p.observe(&x) {
            if x.step == 1 {
                p.on_refused(&d, "refused once");
            } else {
                p.on_growth(&d);
            }
            log.push((x.step, d.policy.clone(), d.growths[0].units()));
        }
    }
    // Stage 0 fires at 1 (refused), 2, 3 (applied: 2 -> next stage). Stage 1 only starts
    // observing at step 4, so its step-0 event fires late, at 4, then its stage is done.
    assert_eq!(
        log,
        vec![
            (1, "sequence[0]/schedule".to_string(), 1),
            (2, "sequence[0]/schedule".to_string(), 1),
            (3, "sequence[0]/schedule".to_string(), 1),
            (4, "sequence[1]/schedule".to_string(), 9),
        ]
    );
}

fn limited(spec: LimitsSpec, inner: Box<dyn GrowthPolicy>) -> Limits {
    Limits::new(spec, inner)
}

#[test]
fn limits_clamp_k_to_max_width_and_drop_a_full_layer_with_a_declined_record() {
    let mut p = limited(
        LimitsSpec {
            max_width: Some(40),
            ..Default::default()
        },
        at(&[0, 1], 0, 16),
    );
    let d = p.observe(&m(0, 1.0)).expect("room for 8");
    assert_eq!(d.growths[0].units(), 8);
    assert!(d.reason.contains("max_width 40"));
    p.on_growth(&d);
    let full = Metrics {
        sites: vec![site(0, 40, 64, 10, Some(1.0))],
        ..m(1, 1.0)
    };
    assert!(p.observe(&full).is_none());
    let declined = p.take_declined();
    assert_eq!(declined.len(), 1);
    assert!(declined[0].why.contains("max_width"), "{}", declined[0].why);
    assert!(p.take_declined().is_empty(), "take_declined drains");
}

#[test]
fn limits_clamp_by_params_using_neighbour_widths() {
    // 64 -> 32 -> 10: one unit costs 64 + 1 + 10 = 75 parameters.
    let base = m(0, 1.0).params;
    let mut p = limited(
        LimitsSpec {
            max_params: Some(base + 75 * 3 + 74),
            ..Default::default()
        },
        at(&[0], 0, 10),
    );
    let d = p.observe(&m(0, 1.0)).expect("room for 3 units");
    assert_eq!(d.growths[0].units(), 3);
    assert_eq!(d.evidence["limits.params_after"], (base + 225) as f64);
}

#[test]
fn limits_round_mirror_pairs_down_to_even() {
    let inner = Box::new(Schedule::new(ScheduleSpec {
        events: vec![Event {
            at: At::Step(0),
            grow: Grow::Width,
            target: Some(Target::Layer(0)),
            size: Some(Size::Fixed(8)),
            init: Init::MirrorPairs,
        }],
    }));
    let mut p = limited(
        LimitsSpec {
            max_width: Some(37),
            ..Default::default()
        },
        inner,
    );
    assert_eq!(p.observe(&m(0, 1.0)).map(|d| d.growths[0].units()), Some(4));
}

#[test]
fn limits_stop_after_max_events_applied_not_decided() {
    let mut p = limited(
        LimitsSpec {
            max_events: Some(2),
            ..Default::default()
        },
        plateau(1, 0),
    );
    let mut applied = 0;
    for (i, x) in flat(20).iter().enumerate() {
        if let Some(d) = p.observe(x) {
            if i == 1 {
                p.on_refused(&d, "refused");
            } else {
                p.on_growth(&d);
                applied += 1;
            }
        }
    }
    assert_eq!(applied, 2);
    assert!(p
        .take_declined()
        .iter()
        .all(|d| d.why.contains("max_events 2")));
}

#[test]
fn limits_stop_once_flops_reach_max_flops() {
    // common::m reports step * 1e6 FLOPs.
    let mut p = limited(
        LimitsSpec {
            max_flops: Some(5e6),
            ..Default::default()
        },
        at(&[2, 4, 5, 6], 0, 1),
    );
    assert_eq!(fire_steps(&mut p, &flat(10)), vec![2, 4]);
}

#[test]
fn limits_over_any_of_keep_the_branch_label_and_route_growth() {
    let mut p = limited(
        LimitsSpec {
            max_width: Some(1000),
            ..Default::default()
        },
        Box::new(AnyOf::new(vec![at(&[100], 0, 1), plateau(1, 3)])),
    );
    let fired = common::run(&mut p, &flat(8));
    assert_eq!(
        fired
            .iter()
            .map(|(i, d)| (*i, d.policy.clone()))
            .collect::<Vec<_>>(),
        vec![
            (1, "any_of[1]/plateau".to_string()),
            (5, "any_of[1]/plateau".to_string())
        ]
    );
    _obj_safe(Box::new(p));
}

#[test]
fn combinator_state_saved_mid_stream_gives_the_same_decisions() {
    let build = || -> Box<dyn GrowthPolicy> {
        Box::new(Limits::new(
            LimitsSpec {
                max_events: Some(12),
                ..Default::default()
            },
            Box::new(Sequence::new(vec![
                (at(&[5, 10], 0, 2), 2),
                (
                    Box::new(AnyOf::new(vec![
                        plateau(4, 3),
                        Box::new(AllOf::new(vec![at(&[40], 0, 1), plateau(2, 0)])),
                    ])),
                    10,
                ),
            ])),
        ))
    };
    let stream: Vec<Metrics> = (0..120)
        .map(|i| m(i, 1.0 + ((i * 7) % 5) as f64 * 0.01))
        .collect();
    for cut in [3, 12, 41, 60] {
        assert_resume_equivalent(build, &stream, cut);
    }
}
