//! Schedule: exact steps, epochs, once per entry, merging, sizing, save/restore.

mod common;

use common::{assert_resume_equivalent, fire_steps, m};
use dfdx_grow::init::Init;
use dfdx_grow::policy::{
    At, Event, Grow, GrowthPolicy, Metrics, Schedule, ScheduleSpec, Size, Target,
};

fn ev(at: At, size: Size) -> Event {
    Event {
        at,
        grow: Grow::Width,
        target: Some(Target::Layer(0)),
        size: Some(size),
        init: Init::ZerosOut,
    }
}

fn steps(n: u64) -> Vec<Metrics> {
    (0..n).map(|i| m(i, 1.0)).collect()
}

#[test]
fn fires_exactly_on_its_steps_and_only_once_each() {
    let mut p = Schedule::new(ScheduleSpec {
        events: vec![
            ev(At::Step(10), Size::Fixed(4)),
            ev(At::Step(5), Size::Fixed(4)),
        ],
    });
    assert_eq!(fire_steps(&mut p, &steps(30)), vec![5, 10]);
}

#[test]
fn epoch_events_fire_at_the_first_observation_of_the_epoch() {
    // common::m puts 100 steps in an epoch.
    let mut p = Schedule::new(ScheduleSpec {
        events: vec![ev(At::Epoch(2), Size::Fixed(1))],
    });
    assert_eq!(fire_steps(&mut p, &steps(400)), vec![200]);
}

#[test]
fn a_skipped_step_fires_at_the_next_observation() {
    let mut p = Schedule::new(ScheduleSpec {
        events: vec![ev(At::Step(15), Size::Fixed(1))],
    });
    let stream: Vec<Metrics> = (0..10).map(|i| m(i * 10, 1.0)).collect();
    assert_eq!(fire_steps(&mut p, &stream), vec![2]);
}

#[test]
fn a_refused_event_is_not_retried() {
    let mut p = Schedule::new(ScheduleSpec {
        events: vec![ev(At::Step(3), Size::Fixed(1))],
    });
    let mut fired = 0;
    for x in steps(10) {
        if let Some(d) = p.observe(&x) {
            p.on_refused(&d, "no");
            fired += 1;
        }
    }
    assert_eq!(fired, 1);
}

#[test]
fn events_due_together_merge_per_layer_and_fraction_uses_the_current_width() {
    let mut p = Schedule::new(ScheduleSpec {
        events: vec![
            ev(At::Step(0), Size::Fraction(1.0)),
            ev(At::Step(0), Size::Fixed(3)),
        ],
    });
    let d = p.observe(&m(0, 1.0)).expect("due");
    assert_eq!(d.growths.len(), 1);
    assert_eq!(d.growths[0].units(), 32 + 3);
    assert_eq!(d.evidence["events_due"], 2.0);
}

#[test]
fn state_saved_mid_stream_gives_the_same_decisions() {
    let s = ScheduleSpec {
        events: vec![
            ev(At::Step(10), Size::Fixed(2)),
            ev(At::Step(50), Size::Fixed(2)),
            ev(At::Epoch(1), Size::Fixed(8)),
        ],
    };
    assert_resume_equivalent(|| Box::new(Schedule::new(s.clone())), &steps(200), 30);
}
