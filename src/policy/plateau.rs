//! Grow when a loss stops improving.
//!
//! # Counting, defined once
//!
//! Each observation goes through these steps, in order:
//! 1. `step < warmup`: ignored entirely (nothing counted, `best` untouched).
//! 2. The monitored loss is missing (`val_loss: None` under [`Monitor::Val`]): counted in
//!    `missing_seen`, nothing else. Non-finite (NaN, inf): counted in `nonfinite_seen`, nothing
//!    else; it never becomes `best` and never counts as bad.
//! 3. The value (after optional EMA smoothing) *improves* when it is below
//!    `best - margin`, with `margin = t * |best|` for [`Threshold::Rel`] and `d` for
//!    [`Threshold::Abs`]. An improving value becomes `best`.
//! 4. Cooldown: if `cooldown_left > 0`, it is decremented, `bad` is set to 0 and the observation
//!    stops here. So `cooldown = N` skips exactly the N observations after a growth.
//! 5. `bad` is reset to 0 on improvement, else incremented.
//! 6. Fire when `bad >= patience` (like Keras, not PyTorch's `>`), and, with a [`SlopeTest`],
//!    only when the window of the last `window` finite values is full and its slope is **not**
//!    significantly negative. Firing resets `bad` to 0.
//!
//! [`GrowthPolicy::on_growth`] starts the cooldown and clears the test window; a refused
//! decision changes nothing more, so the next try needs `patience` new bad observations.
//!
//! Worked table, `patience = 2`, `cooldown = 1`, the loss flat at 1.0, every decision applied:
//!
//! | obs | best | bad after | cooldown_left after | fires |
//! |---|---|---|---|---|
//! | 1 | 1.0 | 0 (first value improves) | 0 | |
//! | 2 | 1.0 | 1 | 0 | |
//! | 3 | 1.0 | 2 -> 0 | 0 -> 1 (on_growth) | yes |
//! | 4 | 1.0 | 0 (cooldown) | 0 | |
//! | 5 | 1.0 | 1 | 0 | |
//! | 6 | 1.0 | 2 -> 0 | 1 | yes |

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::decision::{evidence, growths_for};
use super::PolicyError;
use super::{check_target, from_state, slope_test, to_state, Decision, GrowthPolicy, Metrics};
use super::{Size, Target};
use crate::init::Init;

/// Which loss a [`Plateau`] watches. Lower is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Monitor {
    /// [`Metrics::train_loss`].
    Train,
    /// [`Metrics::val_loss`]; observations without one are counted as missing.
    Val,
}

/// How much lower than the best a value must be to count as an improvement.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Threshold {
    /// Relative: margin `t * |best|` (correct for negative values too).
    Rel(f64),
    /// Absolute: margin `d`.
    Abs(f64),
}

impl Threshold {
    /// The margin below `best` a value must reach.
    pub fn margin(&self, best: f64) -> f64 {
        match *self {
            Threshold::Rel(t) => t * best.abs(),
            Threshold::Abs(d) => d,
        }
    }
}

/// Grow only when the loss is not significantly decreasing over a window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlopeTest {
    /// Number of recent finite values to fit (at least 3).
    pub window: usize,
    /// Confidence in (0, 1): a slope with one-sided p value below `1 - confidence` counts as
    /// still decreasing and blocks growth.
    pub confidence: f64,
}

/// Configuration of a [`Plateau`] policy (also its RON form).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlateauSpec {
    /// Which loss to watch.
    pub monitor: Monitor,
    /// Bad observations needed to fire (at least 1).
    pub patience: u32,
    /// Minimum improvement. # Default: `Rel(0.0)`.
    #[serde(default = "no_threshold")]
    pub threshold: Threshold,
    /// Observations skipped after each applied growth. # Default: 0.
    #[serde(default)]
    pub cooldown: u32,
    /// Observations with `step < warmup` are ignored. # Default: 0.
    #[serde(default)]
    pub warmup: u64,
    /// EMA smoothing factor `a` in (0, 1]: `s = a * v + (1 - a) * s`. # Default: none.
    #[serde(default)]
    pub ema: Option<f64>,
    /// Optional statistical test. # Default: none.
    #[serde(default)]
    pub test: Option<SlopeTest>,
    /// Which sites grow.
    pub target: Target,
    /// How many units each grows by.
    pub size: Size,
    /// How new units are initialised. # Default: `ZerosOut`.
    #[serde(default)]
    pub init: Init,
}

fn no_threshold() -> Threshold {
    Threshold::Rel(0.0)
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct State {
    best: Option<f64>,
    bad: u32,
    cooldown_left: u32,
    smoothed: Option<f64>,
    window: VecDeque<f64>,
    nonfinite_seen: u64,
    missing_seen: u64,
    no_target: u64,
    growths: u64,
}

/// Grows when the monitored loss has not improved for `patience` observations. See the module
/// docs for the exact counting.
#[derive(Clone, Debug)]
pub struct Plateau {
    spec: PlateauSpec,
    state: State,
}

impl Plateau {
    /// A plateau policy with fresh state.
    pub fn new(spec: PlateauSpec) -> Self {
        Plateau {
            spec,
            state: State::default(),
        }
    }
}

impl GrowthPolicy for Plateau {
    fn observe(&mut self, m: &Metrics) -> Option<Decision> {
        let (spec, st) = (&self.spec, &mut self.state);
        if m.step < spec.warmup {
            return None;
        }
        let raw = match spec.monitor {
            Monitor::Train => Some(m.train_loss),
            Monitor::Val => m.val_loss,
        };
        let Some(v) = raw else {
            st.missing_seen += 1;
            return None;
        };
        if !v.is_finite() {
            st.nonfinite_seen += 1;
            return None;
        }
        if let Some(test) = &spec.test {
            st.window.push_back(v);
            while st.window.len() > test.window {
                st.window.pop_front();
            }
        }
        let s = match (spec.ema, st.smoothed) {
            (Some(a), Some(prev)) => a * v + (1.0 - a) * prev,
            _ => v,
        };
        st.smoothed = Some(s);
        let improved = st.best.is_none_or(|b| s < b - spec.threshold.margin(b));
        if improved {
            st.best = Some(s);
        }
        if st.cooldown_left > 0 {
            st.cooldown_left -= 1;
            st.bad = 0;
            return None;
        }
        st.bad = if improved {
            0
        } else {
            st.bad.saturating_add(1)
        };
        if st.bad < spec.patience {
            return None;
        }
        let best = st.best.unwrap_or(s);
        let mut ev = evidence([
            ("step", m.step as f64),
            ("value", s),
            ("best", best),
            ("margin", spec.threshold.margin(best)),
            ("bad", f64::from(st.bad)),
            ("patience", f64::from(spec.patience)),
            ("nonfinite_seen", st.nonfinite_seen as f64),
            ("missing_seen", st.missing_seen as f64),
        ]);
        let mut reason = format!(
            "{:?} loss {s:.6} has not improved on {best:.6} for {} observations",
            spec.monitor, st.bad
        );
        if let Some(test) = &spec.test {
            if st.window.len() < test.window {
                return None;
            }
            let r = slope_test(st.window.make_contiguous())?;
            ev.extend(evidence([
                ("slope", r.slope),
                ("t", r.t),
                ("p_value", r.p_value),
                ("window", test.window as f64),
                ("confidence", test.confidence),
            ]));
            if r.p_value < 1.0 - test.confidence {
                return None;
            }
            reason += &format!(
                " and its slope {:.3e} is not significantly negative (p = {:.3})",
                r.slope, r.p_value
            );
        }
        st.bad = 0;
        let growths = growths_for(&spec.target, &spec.size, &spec.init, m);
        if growths.is_empty() {
            st.no_target += 1;
            return None;
        }
        Some(Decision {
            growths,
            policy: "plateau".into(),
            reason,
            evidence: ev,
        })
    }

    fn check(&self, m: &Metrics) -> Result<(), PolicyError> {
        check_target("Plateau.target", &self.spec.target, m)
    }

    fn on_growth(&mut self, _applied: &Decision) {
        self.state.cooldown_left = self.spec.cooldown;
        self.state.window.clear();
        self.state.growths += 1;
    }

    fn name(&self) -> String {
        format!("plateau({:?})", self.spec.monitor).to_lowercase()
    }

    fn save_state(&self) -> serde_json::Value {
        to_state(&self.state)
    }

    fn load_state(&mut self, s: &serde_json::Value) -> Result<(), PolicyError> {
        self.state = from_state(&self.name(), s)?;
        Ok(())
    }
}
