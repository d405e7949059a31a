//! Grow at fixed steps or epochs.
//!
//! Each event fires exactly once: at the first observation whose step (or epoch) is at or past
//! its `at`, whether or not that decision is then carried out. Events due at the same
//! observation are merged into one decision (sizes of events on the same site add up).

use serde::{Deserialize, Serialize};

use super::decision::{evidence, growths_for};
use super::PolicyError;
use super::{check_target, from_state, to_state, Decision, Growth, GrowthPolicy, Metrics};
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

/// What a scheduled event grows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum Grow {
    /// Units at the event's `target`, `size` of them (the default).
    #[default]
    Width,
    /// A new block of `hidden` units after block `after`, which adds exactly zero to the
    /// function (see [`crate::Growable::deepen`]).
    Depth {
        /// The block after which the new one goes, e.g. `"blocks.1"`.
        after: String,
        /// The new block's hidden width.
        hidden: usize,
    },
}

/// One scheduled growth: `(at: Step(500), target: Layer(0), size: Fraction(1.0))` adds units,
/// `(at: Step(500), grow: Depth(after: "blocks.1", hidden: 64))` adds a block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// When.
    pub at: At,
    /// What grows. Default `Width`.
    #[serde(default)]
    pub grow: Grow,
    /// Which sites (width growth only).
    #[serde(default)]
    pub target: Option<Target>,
    /// How many units (width growth only).
    #[serde(default)]
    pub size: Option<Size>,
    /// How new units are initialised (width growth only). Default `ZerosOut`.
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
            let new = match (&ev.grow, &ev.target, &ev.size) {
                (Grow::Width, Some(target), Some(size)) => growths_for(target, size, &ev.init, m),
                (Grow::Depth { after, hidden }, _, _) => vec![Growth::Depth {
                    after: after.clone(),
                    hidden: *hidden,
                }],
                _ => Vec::new(),
            };
            for g in new {
                let same_site = growths.iter_mut().find_map(|h| match (h, &g) {
                    (
                        Growth::Width { site, k, .. },
                        Growth::Width {
                            site: s2, k: k2, ..
                        },
                    ) if site == s2 => Some((k, *k2)),
                    _ => None,
                });
                match same_site {
                    Some((k, more)) => *k = k.saturating_add(more),
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

    fn check(&self, m: &Metrics) -> Result<(), PolicyError> {
        for (i, ev) in self.spec.events.iter().enumerate() {
            if let Some(t) = &ev.target {
                check_target(&format!("Schedule.events[{i}].target"), t, m)?;
            }
        }
        Ok(())
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
