//! Grow the layers whose gradient norm crosses a threshold for long enough.
//!
//! Per rule and observation: a missing or non-finite norm resets the rule's streak (and is
//! counted); otherwise the norm is compared with the rule's threshold and the streak grows by
//! one when it crosses, else resets to 0. A relative threshold compares with `factor` times
//! the EMA of the layer's *previous* finite norms (no comparison before the first one). The
//! rules whose streak reaches `sustain` fire together; their streaks reset. During the
//! `cooldown` observations after an applied growth all streaks stay 0. An applied growth also
//! forgets the running mean of the grown layers, whose scale has changed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::decision::finite;
use super::{check_target, from_state, to_state, Decision, Growth, GrowthPolicy, Metrics};
use super::{PolicyError, Size, Target};
use crate::init::Init;

/// When a gradient norm counts as crossing. Directions are explicit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Cross {
    /// `norm > x`.
    Above(f64),
    /// `norm < x`.
    Below(f64),
    /// `norm > factor * mean`, mean an EMA with weight `alpha` on each new norm.
    AboveMean {
        /// Multiple of the running mean.
        factor: f64,
        /// EMA weight in (0, 1].
        alpha: f64,
    },
    /// `norm < factor * mean`, mean an EMA with weight `alpha` on each new norm.
    BelowMean {
        /// Multiple of the running mean.
        factor: f64,
        /// EMA weight in (0, 1].
        alpha: f64,
    },
}

/// One threshold on one site's gradient norm; the site is also the one that grows. Name it by
/// index (`layer: 0`, the model's first site) or by name (`site: "blocks.1.hidden"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradRule {
    /// The site's index in the model's site order.
    #[serde(default)]
    pub layer: Option<usize>,
    /// The site's name.
    #[serde(default)]
    pub site: Option<String>,
    /// The threshold.
    pub cross: Cross,
}

impl GradRule {
    /// The name of the site this rule watches in the model `m` describes.
    fn site_in<'m>(&'m self, m: &'m Metrics) -> Option<&'m str> {
        match (&self.site, self.layer) {
            (Some(name), _) => Some(name),
            (None, Some(i)) => m.sites.get(i).map(|s| s.name.as_str()),
            (None, None) => None,
        }
    }

    fn target(&self) -> Target {
        match (&self.site, self.layer) {
            (Some(name), _) => Target::Site(name.clone()),
            (None, i) => Target::Layer(i.unwrap_or(usize::MAX)),
        }
    }
}

/// Configuration of a [`GradNorm`] policy (also its RON form).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradNormSpec {
    /// The thresholds, any number per layer.
    pub rules: Vec<GradRule>,
    /// Consecutive crossing observations needed (at least 1).
    pub sustain: u32,
    /// Observations skipped after each applied growth. # Default: 0.
    #[serde(default)]
    pub cooldown: u32,
    /// How many units each selected layer grows by.
    pub size: Size,
    /// How new units are initialised. # Default: `ZerosOut`.
    #[serde(default)]
    pub init: Init,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct State {
    streak: Vec<u32>,
    mean: Vec<Option<f64>>,
    cooldown_left: u32,
    nonfinite_seen: u64,
    missing_seen: u64,
    growths: u64,
}

/// Grows the layers whose gradient norm crossed its threshold `sustain` times in a row.
#[derive(Clone, Debug)]
pub struct GradNorm {
    spec: GradNormSpec,
    state: State,
    /// The site each rule watched at the last observation (its scale changes when it grows).
    watched: Vec<Option<String>>,
}

impl GradNorm {
    /// A gradient-norm policy with fresh state.
    pub fn new(spec: GradNormSpec) -> Self {
        let n = spec.rules.len();
        GradNorm {
            spec,
            watched: vec![None; n],
            state: State {
                streak: vec![0; n],
                mean: vec![None; n],
                ..State::default()
            },
        }
    }
}

impl GrowthPolicy for GradNorm {
    fn observe(&mut self, m: &Metrics) -> Option<Decision> {
        let (spec, st) = (&self.spec, &mut self.state);
        let mut fired: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
        for (i, rule) in spec.rules.iter().enumerate() {
            self.watched[i] = rule.site_in(m).map(str::to_string);
            let site = rule.site_in(m).and_then(|name| m.site(name));
            let Some((name, g)) = site.and_then(|s| Some((s.name.as_str(), s.grad_norm?))) else {
                st.missing_seen += 1;
                st.streak[i] = 0;
                continue;
            };
            if !g.is_finite() {
                st.nonfinite_seen += 1;
                st.streak[i] = 0;
                continue;
            }
            let prev = st.mean[i];
            let (crossed, threshold) = match rule.cross {
                Cross::Above(x) => (g > x, Some(x)),
                Cross::Below(x) => (g < x, Some(x)),
                Cross::AboveMean { factor, alpha } | Cross::BelowMean { factor, alpha } => {
                    st.mean[i] = Some(prev.map_or(g, |p| alpha * g + (1.0 - alpha) * p));
                    let t = prev.map(|p| factor * p);
                    let above = matches!(rule.cross, Cross::AboveMean { .. });
                    (t.is_some_and(|t| if above { g > t } else { g < t }), t)
                }
            };
            st.streak[i] = if crossed && st.cooldown_left == 0 {
                st.streak[i].saturating_add(1)
            } else {
                0
            };
            if st.streak[i] >= spec.sustain {
                st.streak[i] = 0;
                fired.insert(name, (g, threshold.unwrap_or(0.0)));
            }
        }
        if st.cooldown_left > 0 {
            st.cooldown_left -= 1;
            return None;
        }
        if fired.is_empty() {
            return None;
        }
        let mut evidence = BTreeMap::new();
        evidence.insert("step".into(), m.step as f64);
        evidence.insert("sustain".into(), f64::from(spec.sustain));
        let mut growths = Vec::new();
        let mut parts = Vec::new();
        for (&site, &(g, t)) in &fired {
            evidence.insert(format!("{site}.grad_norm"), finite(g));
            evidence.insert(format!("{site}.threshold"), finite(t));
            parts.push(format!("{site} ({g:.4e} vs {t:.4e})"));
            growths.push(Growth::Width {
                site: site.to_string(),
                k: spec.size.units(m.site(site).map_or(0, |s| s.width)),
                init: spec.init.clone(),
            });
        }
        Some(Decision {
            growths,
            policy: "gradnorm".into(),
            reason: format!(
                "gradient norm crossed its threshold {} times in a row: {}",
                spec.sustain,
                parts.join(", ")
            ),
            evidence,
        })
    }

    fn check(&self, m: &Metrics) -> Result<(), PolicyError> {
        for (i, rule) in self.spec.rules.iter().enumerate() {
            check_target(&format!("GradNorm.rules[{i}]"), &rule.target(), m)?;
        }
        if !m.has_grad_norms() {
            return Err(PolicyError::model(
                "GradNorm",
                "watches gradient norms but the metrics carry none: build them with \
                 Metrics::of(..).grads(&mut grads)",
            ));
        }
        Ok(())
    }

    fn on_growth(&mut self, applied: &Decision) {
        self.state.cooldown_left = self.spec.cooldown;
        self.state.growths += 1;
        for (i, watched) in self.watched.iter().enumerate() {
            let grew = applied
                .growths
                .iter()
                .any(|g| matches!(g, Growth::Width { site, .. } if Some(site) == watched.as_ref()));
            if grew {
                self.state.mean[i] = None;
            }
        }
    }

    fn name(&self) -> String {
        "gradnorm".into()
    }

    fn save_state(&self) -> serde_json::Value {
        to_state(&self.state)
    }

    fn load_state(&mut self, s: &serde_json::Value) -> Result<(), PolicyError> {
        let st: State = from_state(&self.name(), s)?;
        let n = self.spec.rules.len();
        if st.streak.len() != n || st.mean.len() != n {
            return Err(PolicyError::State {
                policy: self.name(),
                reason: format!("state has {} rules, policy has {n}", st.streak.len()),
            });
        }
        self.state = st;
        Ok(())
    }
}
