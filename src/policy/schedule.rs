//! Grow at fixed steps or epochs.
//!
//! Each event fires exactly once: at the first observation whose step (or epoch) is at or past
//! its `at`, whether or not that decision is then carried out. Events due at the same
//! observation are merged into one decision (sizes of events on the same layer add up).

use serde::{Deserialize, Serialize};

use super::decision::{evidence, growths_for};
use super::{from_state, to_state, Decision, Growth, GrowthPolicy, Metrics, PolicyError};
use super::{Size, Target};
use crate::init::Init;

/// When a scheduled event fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum At {
    /// At the first observation with `step >= s`.
    Step(u64),
    /// At the first observation with `epoch >= e`.
    Epoch(u64),
}

impl At {
    fn due(&self, m: &Metrics) -> bool {
        match *self {
            At::Step(s) => m.step >= s,
            At::Epoch(e) => m.epoch >= e,
        }
    }
}

/// One scheduled growth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// When.
    pub at: At,
    /// Which layers.
    pub target: Target,
    /// How many units.
    pub size: Size,
    /// How new units are initialised. # Default: `ZerosOut`.
    #[serde(default)]
    pub init: Init,
}

/// Configuration of a [`Schedule`] policy (also its RON form).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// The events, in any order.
    pub events: Vec<Event>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct State {
    fired: Vec<bool>,
    growths: u64,
}

/// Grows at fixed steps or epochs; each event fires once.
#[derive(Clone, Debug)]
pub struct Schedule {
    spec: ScheduleSpec,
    state: State,
}

impl Schedule {
    /// A schedule with no event fired yet.
    pub fn new(spec: ScheduleSpec) -> Self {
        let n = spec.events.len();
        Schedule {
            spec,
            state: State {
                fired: vec![false; n],
                growths: 0,
            },
        }
    }
}

impl GrowthPolicy for Schedule {
    fn observe(&mut self, m: &Metrics) -> Option<Decision> {
        let mut growths: Vec<Growth> = Vec::new();
        let mut which = Vec::new();
        for (i, ev) in self.spec.events.iter().enumerate() {
            if self.state.fired[i] || !ev.at.due(m) {
                continue;
            }
            self.state.fired[i] = true;
            which.push(i);
            for g in growths_for(&ev.target, &ev.size, &ev.init, m) {
                match growths.iter_mut().find(|h| h.layer == g.layer) {
                    Some(h) => h.k += g.k,
                    None => growths.push(g),
                }
            }
        }
        if growths.is_empty() {
            return None;
        }
        let first = which[0];
        Some(Decision {
            growths,
            policy: "schedule".into(),
            reason: format!(
                "scheduled event(s) {which:?} due at step {}, epoch {}",
                m.step, m.epoch
            ),
            evidence: evidence([
                ("step", m.step as f64),
                ("epoch", m.epoch as f64),
                ("event", first as f64),
                ("events_due", which.len() as f64),
            ]),
        })
    }

    fn on_growth(&mut self, _applied: &Decision) {
        self.state.growths += 1;
    }

    fn name(&self) -> String {
        "schedule".into()
    }

    fn save_state(&self) -> serde_json::Value {
        to_state(&self.state)
    }

    fn load_state(&mut self, s: &serde_json::Value) -> Result<(), PolicyError> {
        let st: State = from_state(&self.name(), s)?;
        if st.fired.len() != self.spec.events.len() {
            return Err(PolicyError::State {
                policy: self.name(),
                reason: format!(
                    "state has {} events, schedule has {}",
                    st.fired.len(),
                    self.spec.events.len()
                ),
            });
        }
        self.state = st;
        Ok(())
    }
}
