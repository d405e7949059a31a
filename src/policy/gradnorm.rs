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
use super::{from_state, to_state, Decision, Growth, GrowthPolicy, Metrics, PolicyError, Size};
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

/// One threshold on one hidden layer's gradient norm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradRule {
    /// Hidden layer index (0-based); it is also the layer that grows.
    pub layer: usize,
    /// The threshold.
    pub cross: Cross,
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
}

impl GradNorm {
    /// A gradient-norm policy with fresh state.
    pub fn new(spec: GradNormSpec) -> Self {
        let n = spec.rules.len();
        GradNorm {
            spec,
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
        let mut fired: BTreeMap<usize, (f64, f64)> = BTreeMap::new();
        for (i, rule) in spec.rules.iter().enumerate() {
            let Some(&g) = m.grad_norms.get(rule.layer) else {
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
            if st.streak[i] >= spec.sustain && rule.layer < m.widths.len() {
                st.streak[i] = 0;
                fired.insert(rule.layer, (g, threshold.unwrap_or(0.0)));
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
        for (&layer, &(g, t)) in &fired {
            evidence.insert(format!("layer{layer}.grad_norm"), finite(g));
            evidence.insert(format!("layer{layer}.threshold"), finite(t));
            parts.push(format!("layer {layer} ({g:.4e} vs {t:.4e})"));
            growths.push(Growth {
                layer,
                k: spec.size.units(m.widths[layer]),
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

    fn on_growth(&mut self, applied: &Decision) {
        self.state.cooldown_left = self.spec.cooldown;
        self.state.growths += 1;
        for (i, rule) in self.spec.rules.iter().enumerate() {
            if applied.growths.iter().any(|g| g.layer == rule.layer) {
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
