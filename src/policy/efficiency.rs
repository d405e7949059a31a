//! Grow when compute stops paying: the slope of log(loss) against log(cumulative FLOPs)
//! rises above a threshold (staged training's rule; it used about -0.0475 with log10).
//!
//! Per observation: steps before `warmup` are ignored; a missing or non-finite loss, or a
//! non-positive loss or FLOP count (no logarithm), is counted and skipped; otherwise the point
//! `(log10 flops, log10 loss)` joins a window of the last `window` points. During the
//! `cooldown` observations after an applied growth nothing fires (the points still count).
//! With a full window, the least-squares slope is fitted and the policy fires when the slope
//! is above `threshold` — and, with `confidence`, significantly so (one-sided t test:
//! `P(slope <= threshold) < 1 - confidence`). Firing clears the window (as a [`super::Plateau`]
//! firing resets its count): the next decision needs `window` new points, whether this one is
//! applied, refused (a width cap) or declined by limits, so a policy that cannot be obeyed
//! does not ask again at every observation. An applied growth also starts the cooldown: the
//! grown model's curve starts afresh.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::decision::{evidence, growths_for};
use super::{check_target, fit_line, from_state, to_state, Decision, GrowthPolicy, Metrics};
use super::{Monitor, PolicyError, Size, Target};
use crate::init::Init;

/// Configuration of an [`Efficiency`] policy (also its RON form).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EfficiencySpec {
    /// Which loss to watch.
    pub monitor: Monitor,
    /// Points fitted (at least 3).
    pub window: usize,
    /// Grow when the slope of log10(loss) against log10(FLOPs) is above this (a negative
    /// number: the loss still falls, but too slowly for the compute it costs).
    pub threshold: f64,
    /// When set, in (0, 1): the slope must be above the threshold with this confidence.
    /// Default none.
    #[serde(default)]
    pub confidence: Option<f64>,
    /// Observations with `step < warmup` are ignored. Default 0.
    #[serde(default)]
    pub warmup: u64,
    /// Observations after an applied growth during which it does not fire. Default 0.
    #[serde(default)]
    pub cooldown: u32,
    /// Which sites grow.
    pub target: Target,
    /// How many units each grows by.
    pub size: Size,
    /// How new units are initialised. Default `ZerosOut`.
    #[serde(default)]
    pub init: Init,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct State {
    points: VecDeque<(f64, f64)>,
    cooldown_left: u32,
    skipped: u64,
    growths: u64,
}

/// Grows when the loss's log-log slope against compute flattens. See the module docs.
#[derive(Clone, Debug)]
pub struct Efficiency {
    spec: EfficiencySpec,
    state: State,
}

impl Efficiency {
    /// An efficiency policy with fresh state.
    pub fn new(spec: EfficiencySpec) -> Self {
        Efficiency {
            spec,
            state: State::default(),
        }
    }
}

impl GrowthPolicy for Efficiency {
    fn observe(&mut self, m: &Metrics) -> Option<Decision> {
        let (spec, st) = (&self.spec, &mut self.state);
        if m.step < spec.warmup {
            return None;
        }
        let loss = match spec.monitor {
            Monitor::Train => Some(m.train_loss),
            Monitor::Val => m.val_loss,
        };
        let Some(loss) = loss.filter(|l| l.is_finite() && *l > 0.0) else {
            st.skipped += 1;
            return None;
        };
        if !(m.flops.is_finite() && m.flops > 0.0) {
            st.skipped += 1;
            return None;
        }
        st.points.push_back((m.flops.log10(), loss.log10()));
        while st.points.len() > spec.window {
            st.points.pop_front();
        }
        if st.cooldown_left > 0 {
            st.cooldown_left -= 1;
            return None;
        }
        if st.points.len() < spec.window {
            return None;
        }
        let (xs, ys): (Vec<f64>, Vec<f64>) = st.points.iter().copied().unzip();
        let fit = fit_line(&xs, &ys)?;
        let p = fit.p_above(spec.threshold);
        let fires = match spec.confidence {
            Some(c) => p < 1.0 - c,
            None => fit.slope > spec.threshold,
        };
        if !fires {
            return None;
        }
        let growths = growths_for(&spec.target, &spec.size, &spec.init, m);
        if growths.is_empty() {
            return None;
        }
        st.points.clear();
        Some(Decision {
            growths,
            policy: "efficiency".into(),
            reason: format!(
                "{:?} loss falls as FLOPs^{:.4} over the last {} points, above the threshold {}{}",
                spec.monitor,
                fit.slope,
                spec.window,
                spec.threshold,
                spec.confidence.map_or(String::new(), |c| format!(
                    " (p = {p:.3} at confidence {c})"
                ))
            ),
            evidence: evidence([
                ("step", m.step as f64),
                ("slope", fit.slope),
                ("se", fit.se),
                ("threshold", spec.threshold),
                ("p_not_above", p),
                ("window", spec.window as f64),
                ("skipped", st.skipped as f64),
            ]),
        })
    }

    fn check(&self, m: &Metrics) -> Result<(), PolicyError> {
        check_target("Efficiency.target", &self.spec.target, m)
    }

    fn on_growth(&mut self, _applied: &Decision) {
        self.state.cooldown_left = self.spec.cooldown;
        self.state.points.clear();
        self.state.growths += 1;
    }

    fn name(&self) -> String {
        format!("efficiency({:?})", self.spec.monitor).to_lowercase()
    }

    fn save_state(&self) -> serde_json::Value {
        to_state(&self.state)
    }

    fn load_state(&mut self, s: &serde_json::Value) -> Result<(), PolicyError> {
        let st: State = from_state(&self.name(), s)?;
        if st.points.len() > self.spec.window {
            return Err(PolicyError::State {
                policy: self.name(),
                reason: format!(
                    "{} points for a window of {}",
                    st.points.len(),
                    self.spec.window
                ),
            });
        }
        self.state = st;
        Ok(())
    }
}
