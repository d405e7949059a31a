//! Caps on growth: width per site, total parameters, number of events, training FLOPs.
//!
//! [`Limits`] wraps any policy. The inner policy observes every step (its state stays current);
//! its decision is then filtered:
//! - after `max_events` applied growths, or once `Metrics::flops >= max_flops` (or the FLOP
//!   count is not a finite number), every decision is declined;
//! - each width growth's `k` is clamped so the site stays at or below `max_width`, then so
//!   that the total parameters stay at or below `max_params` (growths are applied in order,
//!   each seeing the widths the previous ones produced), then rounded down to the site's unit
//!   multiple (and to even for [`Init::MirrorPairs`]); a growth left with `k = 0` is dropped.
//!
//! - with a `stop` rule, once the monitored loss has improved by less than `min_gain` per
//!   `per_flops` FLOPs since the last applied growth (or since the first observation), the
//!   decision is declined and the policy stops growing for good: the model has found its
//!   size.
//!
//! The parameters a unit adds are the site's own count, [`SiteMetrics::params_per_unit`]
//! (see [`crate::Site`]). Depth growths pass the width and parameter caps untouched:
//! `max_params` counts width growth only. What bounds a new block is `max_events` and the
//! controller's memory cap ([`crate::GrowthController::with_max_growth_bytes`]).
//! Dropped growths are reported by [`take_declined`](GrowthPolicy::take_declined); a decision
//! with nothing left is `None`.

use serde::{Deserialize, Serialize};

use super::decision::finite;
use super::{from_state, Decision, Declined, Growth, GrowthPolicy, Metrics, PolicyError};
use super::{Monitor, SiteMetrics};
use crate::init::Init;

/// The caps (also their RON form). `None` means no cap.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Largest width of any site. Default none.
    #[serde(default)]
    pub max_width: Option<usize>,
    /// Largest total parameter count. Default none.
    #[serde(default)]
    pub max_params: Option<usize>,
    /// Most growth events carried out. Default none.
    #[serde(default)]
    pub max_events: Option<u32>,
    /// No growth once cumulative training FLOPs reach this. Default none.
    #[serde(default)]
    pub max_flops: Option<f64>,
    /// Stop growing for good when growth stops paying. Default none.
    #[serde(default)]
    pub stop: Option<StopRule>,
}

/// Stop growing when the monitored loss improved by less than `min_gain` per `per_flops`
/// training FLOPs since the last growth: `(loss then - loss now) / (FLOPs now - FLOPs then)
/// * per_flops < min_gain`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopRule {
    /// Which loss (the latest value seen; validation losses are only seen when measured).
    pub monitor: Monitor,
    /// The least improvement worth growing for.
    pub min_gain: f64,
    /// Per how many FLOPs (e.g. `1e12`).
    pub per_flops: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct State {
    events: u32,
    declined: Vec<Declined>,
    /// The stop rule's reference: the monitored loss and the FLOPs at the last growth (or at
    /// the first observation).
    #[serde(default)]
    reference: Option<(f64, f64)>,
    /// The latest monitored loss and FLOP count seen.
    #[serde(default)]
    latest: Option<(f64, f64)>,
    /// The stop rule fired: no more growth.
    #[serde(default)]
    stopped: bool,
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

    /// `k` clamped by the caps for a site of `width` among `params` parameters, with why.
    fn clamp(&self, site: &SiteMetrics, init: &Init, k: usize, params: usize) -> (usize, String) {
        let mut k = k;
        let mut why = String::new();
        if let Some(mw) = self.spec.max_width {
            let room = mw.saturating_sub(site.width);
            if k > room {
                k = room;
                why = format!("max_width {mw}");
            }
        }
        if let Some(mp) = self.spec.max_params {
            let room = mp.saturating_sub(params) / site.params_per_unit.max(1);
            if k > room {
                k = room;
                why = format!("max_params {mp}");
            }
        }
        let mut multiple = site.unit_multiple.max(1);
        if *init == Init::MirrorPairs && multiple % 2 == 1 {
            multiple *= 2;
        }
        if !k.is_multiple_of(multiple) {
            k -= k % multiple;
            if why.is_empty() {
                why = format!("a multiple of {multiple} units");
            }
        }
        (k, why)
    }
}

impl Limits {
    /// Follows the stop rule's loss; returns why to stop, when the rule says so.
    fn stop_rule(&mut self, m: &Metrics) -> Option<String> {
        let rule = self.spec.stop.as_ref()?;
        let loss = match rule.monitor {
            Monitor::Train => Some(m.train_loss),
            Monitor::Val => m.val_loss,
        };
        if let Some(l) = loss.filter(|l| l.is_finite()) {
            if m.flops.is_finite() {
                self.state.latest = Some((l, m.flops));
                self.state.reference.get_or_insert((l, m.flops));
            }
        }
        if self.state.stopped {
            return Some("the stop rule fired earlier: growth no longer pays".into());
        }
        None
    }

    /// Whether growing now would be worth it by the stop rule; stops for good when not.
    fn stop_now(&mut self) -> Option<String> {
        let rule = self.spec.stop.as_ref()?;
        let ((l0, f0), (l1, f1)) = (self.state.reference?, self.state.latest?);
        if f1 <= f0 {
            return None;
        }
        let rate = (l0 - l1) / (f1 - f0) * rule.per_flops;
        (rate < rule.min_gain).then(|| {
            self.state.stopped = true;
            format!(
                "stop rule: the loss improved by {rate:.3e} per {:e} FLOPs since the last growth \
                 ({l0:.5} at {f0:.3e} FLOPs to {l1:.5} at {f1:.3e}), below {}",
                rule.per_flops, rule.min_gain
            )
        })
    }
}

impl GrowthPolicy for Limits {
    fn observe(&mut self, m: &Metrics) -> Option<Decision> {
        let stopped = self.stop_rule(m);
        let mut d = self.inner.observe(m)?;
        if let Some(why) = stopped.or_else(|| self.stop_now()) {
            let g = d.growths.clone();
            self.decline(m, &d, why, g);
            return None;
        }
        if let Some(n) = self.spec.max_events.filter(|&n| self.state.events >= n) {
            let g = d.growths.clone();
            self.decline(m, &d, format!("max_events {n} reached"), g);
            return None;
        }
        // A FLOP count that is not a number cannot show it is under the cap.
        if let Some(f) = self
            .spec
            .max_flops
            .filter(|&f| !(m.flops.is_finite() && m.flops < f))
        {
            let g = d.growths.clone();
            self.decline(m, &d, format!("max_flops {f:e} reached ({:e})", m.flops), g);
            return None;
        }
        let (mut sites, mut params) = (m.sites.clone(), m.params);
        let (mut kept, mut dropped, mut notes) = (Vec::new(), Vec::new(), Vec::new());
        for g in &d.growths {
            let Growth::Width {
                site: name,
                k,
                init,
            } = g
            else {
                kept.push(g.clone());
                continue;
            };
            let Some(site) = sites.iter_mut().find(|s| s.name == *name) else {
                dropped.push(g.clone());
                notes.push(format!("site {name:?} does not exist"));
                continue;
            };
            let (k2, why) = self.clamp(site, init, *k, params);
            if k2 == 0 {
                dropped.push(g.clone());
                notes.push(format!("{name}: {why} leaves no room"));
                continue;
            }
            if k2 < *k {
                notes.push(format!("{name}: k {k} -> {k2} by {why}"));
            }
            params = params.saturating_add(k2.saturating_mul(site.params_per_unit));
            site.width = site.width.saturating_add(k2);
            kept.push(Growth::Width {
                site: name.clone(),
                k: k2,
                init: init.clone(),
            });
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
        self.state.reference = self.state.latest;
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
        let own: State = from_state("limits", &s["own"])?;
        self.inner.load_state(&s["inner"])?;
        self.state = own;
        Ok(())
    }

    fn check(&self, m: &Metrics) -> Result<(), PolicyError> {
        self.inner.check(m).map_err(|e| e.under("Limits.policy"))
    }
}
