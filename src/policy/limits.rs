//! Caps on growth: width per layer, total parameters, number of events, training FLOPs.
//!
//! [`Limits`] wraps any policy. The inner policy observes every step (its state stays current);
//! its decision is then filtered:
//! - after `max_events` applied growths, or once `Metrics::flops >= max_flops`, every decision
//!   is declined;
//! - each growth's `k` is clamped so the layer stays at or below `max_width`, then so that the
//!   total parameters stay at or below `max_params` (growths are applied in order, each seeing
//!   the widths the previous ones produced); `k` is rounded down to even for
//!   [`Init::MirrorPairs`]; a growth left with `k = 0` is dropped.
//!
//! The parameters a unit adds to hidden layer `i` are `fan_in + 1 + fan_out`, with the
//! neighbours taken from [`Metrics::widths`], [`Metrics::input_dim`] and
//! [`Metrics::output_dim`]. Dropped growths are reported by
//! [`take_declined`](GrowthPolicy::take_declined); a decision with nothing left is `None`.

use serde::{Deserialize, Serialize};

use super::decision::finite;
use super::{from_state, Decision, Declined, Growth, GrowthPolicy, Metrics, PolicyError};
use crate::init::Init;

/// The caps (also their RON form). `None` means no cap.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Largest width of any hidden layer. # Default: none.
    #[serde(default)]
    pub max_width: Option<usize>,
    /// Largest total parameter count. # Default: none.
    #[serde(default)]
    pub max_params: Option<usize>,
    /// Most growth events carried out. # Default: none.
    #[serde(default)]
    pub max_events: Option<u32>,
    /// No growth once cumulative training FLOPs reach this. # Default: none.
    #[serde(default)]
    pub max_flops: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct State {
    events: u32,
    declined: Vec<Declined>,
}

/// A policy under [`LimitsSpec`] caps. See the module docs.
#[derive(Debug)]
pub struct Limits {
    spec: LimitsSpec,
    inner: Box<dyn GrowthPolicy>,
    state: State,
}

impl Limits {
    /// `inner` under the caps of `spec`.
    pub fn new(spec: LimitsSpec, inner: Box<dyn GrowthPolicy>) -> Self {
        Limits {
            spec,
            inner,
            state: State::default(),
        }
    }

    fn decline(&mut self, m: &Metrics, d: &Decision, why: String, growths: Vec<Growth>) {
        self.state.declined.push(Declined {
            step: m.step,
            epoch: m.epoch,
            policy: d.policy.clone(),
            why,
            growths,
        });
    }

    fn clamp(&self, m: &Metrics, g: &Growth, widths: &[usize], params: usize) -> (usize, String) {
        let mut k = g.k;
        let mut why = String::new();
        if let Some(mw) = self.spec.max_width {
            let room = mw.saturating_sub(widths[g.layer]);
            if k > room {
                k = room;
                why = format!("max_width {mw}");
            }
        }
        if let Some(mp) = self.spec.max_params {
            let fan_in = g.layer.checked_sub(1).map_or(m.input_dim, |j| widths[j]);
            let fan_out = widths.get(g.layer + 1).copied().unwrap_or(m.output_dim);
            let per_unit = fan_in + 1 + fan_out;
            let room = mp.saturating_sub(params) / per_unit;
            if k > room {
                k = room;
                why = format!("max_params {mp}");
            }
        }
        if g.init == Init::MirrorPairs {
            k -= k % 2;
        }
        (k, why)
    }
}

impl GrowthPolicy for Limits {
    fn observe(&mut self, m: &Metrics) -> Option<Decision> {
        let mut d = self.inner.observe(m)?;
        if let Some(n) = self.spec.max_events.filter(|&n| self.state.events >= n) {
            let g = d.growths.clone();
            self.decline(m, &d, format!("max_events {n} reached"), g);
            return None;
        }
        if let Some(f) = self.spec.max_flops.filter(|&f| m.flops >= f) {
            let g = d.growths.clone();
            self.decline(m, &d, format!("max_flops {f:e} reached ({:e})", m.flops), g);
            return None;
        }
        let (mut widths, mut params) = (m.widths.clone(), m.params);
        let (mut kept, mut dropped, mut notes) = (Vec::new(), Vec::new(), Vec::new());
        for g in &d.growths {
            if g.layer >= widths.len() {
                dropped.push(g.clone());
                notes.push(format!("layer {} does not exist", g.layer));
                continue;
            }
            let (k, why) = self.clamp(m, g, &widths, params);
            if k == 0 {
                dropped.push(g.clone());
                notes.push(format!("layer {}: {why} leaves no room", g.layer));
                continue;
            }
            if k < g.k {
                notes.push(format!("layer {}: k {} -> {k} by {why}", g.layer, g.k));
            }
            let fan_in = g.layer.checked_sub(1).map_or(m.input_dim, |j| widths[j]);
            let fan_out = widths.get(g.layer + 1).copied().unwrap_or(m.output_dim);
            params = params.saturating_add(k.saturating_mul(fan_in + 1 + fan_out));
            widths[g.layer] += k;
            kept.push(Growth { k, ..g.clone() });
        }
        if !dropped.is_empty() {
            self.decline(m, &d, notes.join("; "), dropped);
        }
        if kept.is_empty() {
            return None;
        }
        if !notes.is_empty() {
            d.reason = format!("{} (limited: {})", d.reason, notes.join("; "));
        }
        d.evidence
            .insert("limits.params_after".into(), params as f64);
        d.evidence
            .insert("limits.events_before".into(), f64::from(self.state.events));
        if let Some(f) = self.spec.max_flops {
            d.evidence.insert("limits.max_flops".into(), finite(f));
        }
        d.growths = kept;
        Some(d)
    }

    fn on_growth(&mut self, applied: &Decision) {
        self.state.events = self.state.events.saturating_add(1);
        self.inner.on_growth(applied);
    }

    fn on_refused(&mut self, refused: &Decision, why: &str) {
        self.inner.on_refused(refused, why);
    }

    fn take_declined(&mut self) -> Vec<Declined> {
        let mut v = std::mem::take(&mut self.state.declined);
        v.extend(self.inner.take_declined());
        v
    }

    fn name(&self) -> String {
        format!("limits({})", self.inner.name())
    }

    fn save_state(&self) -> serde_json::Value {
        serde_json::json!({ "own": super::to_state(&self.state), "inner": self.inner.save_state() })
    }

    fn load_state(&mut self, s: &serde_json::Value) -> Result<(), PolicyError> {
        self.state = from_state("limits", &s["own"])?;
        self.inner.load_state(&s["inner"])
    }
}
