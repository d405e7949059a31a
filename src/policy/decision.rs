//! What a policy decides: which layers grow, by how much, and why.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Metrics;
use crate::init::Init;

/// A request to grow one hidden layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Growth {
    /// Hidden layer index, 0-based.
    pub layer: usize,
    /// Number of units to add.
    pub k: usize,
    /// How the new units are initialised.
    pub init: Init,
}

/// A policy's decision to grow, with the numbers that justify it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The growths to carry out, at most one per layer.
    pub growths: Vec<Growth>,
    /// Which policy, or which branch of a combinator, fired, e.g. `any_of[1]/plateau`.
    pub policy: String,
    /// A human sentence.
    pub reason: String,
    /// The numbers behind the decision (slope, t statistic, p value, threshold, ...). Always finite.
    pub evidence: BTreeMap<String, f64>,
}

/// Growths that a policy wanted but a [`Limits`](super::Limits) wrapper refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Declined {
    /// Step of the observation.
    pub step: u64,
    /// Epoch of the observation.
    pub epoch: u64,
    /// Which policy wanted the growths.
    pub policy: String,
    /// Why they were refused.
    pub why: String,
    /// The growths that were refused.
    pub growths: Vec<Growth>,
}

/// How many units to add.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Size {
    /// Exactly `k` units.
    Fixed(usize),
    /// `f` times the current width, rounded to the nearest integer, at least 1.
    /// `Fraction(1.0)` doubles the layer.
    Fraction(f64),
}

impl Size {
    /// The number of units to add to a layer of width `width`.
    pub fn units(&self, width: usize) -> usize {
        match *self {
            Size::Fixed(k) => k,
            Size::Fraction(f) => {
                let k = (f * width as f64).round();
                if k.is_finite() && k >= 1.0 {
                    // Saturating float-to-int cast.
                    k as usize
                } else {
                    1
                }
            }
        }
    }
}

/// Which hidden layer(s) a growth goes to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Target {
    /// Hidden layer `i` (0-based).
    Layer(usize),
    /// Every hidden layer.
    All,
    /// The layer whose gradient norm ([`Metrics::grad_norms`]) is largest; ties go to the lower
    /// index; non-finite norms are ignored.
    LargestGradNorm,
    /// The narrowest layer; ties go to the lower index.
    SmallestWidth,
}

impl Target {
    /// The layers this target selects for the given metrics (empty when none qualifies, e.g. a
    /// `Layer(i)` the model does not have or no finite gradient norm).
    pub fn layers(&self, m: &Metrics) -> Vec<usize> {
        let n = m.widths.len();
        match *self {
            Target::Layer(i) => (i < n).then_some(i).into_iter().collect(),
            Target::All => (0..n).collect(),
            Target::LargestGradNorm => {
                let mut best: Option<(usize, f64)> = None;
                for (i, &g) in m.grad_norms.iter().enumerate().take(n) {
                    if g.is_finite() && best.is_none_or(|(_, b)| g > b) {
                        best = Some((i, g));
                    }
                }
                best.map(|(i, _)| i).into_iter().collect()
            }
            Target::SmallestWidth => {
                let min = m.widths.iter().enumerate().min_by_key(|&(i, &w)| (w, i));
                min.map(|(i, _)| i).into_iter().collect()
            }
        }
    }

    /// The highest layer index this target names explicitly, if any.
    pub fn explicit_layer(&self) -> Option<usize> {
        match *self {
            Target::Layer(i) => Some(i),
            _ => None,
        }
    }
}

/// Growths for `target` sized by `size` with `init`, against the current widths.
pub(crate) fn growths_for(target: &Target, size: &Size, init: &Init, m: &Metrics) -> Vec<Growth> {
    target
        .layers(m)
        .into_iter()
        .map(|layer| Growth {
            layer,
            k: size.units(m.widths[layer]),
            init: init.clone(),
        })
        .collect()
}

/// Build an evidence map from `(name, value)` pairs, replacing non-finite values by the
/// nearest finite one (NaN by 0) so the map always serialises to JSON.
pub(crate) fn evidence<const N: usize>(pairs: [(&str, f64); N]) -> BTreeMap<String, f64> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), finite(v)))
        .collect()
}

/// `v` if finite, `f64::MAX`/`f64::MIN` for infinities, 0 for NaN.
pub(crate) fn finite(v: f64) -> f64 {
    if v.is_nan() {
        0.0
    } else {
        v.clamp(f64::MIN, f64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fraction_rounds_and_is_at_least_one() {
        assert_eq!(Size::Fraction(1.0).units(32), 32);
        assert_eq!(Size::Fraction(0.25).units(10), 3);
        assert_eq!(Size::Fraction(0.01).units(10), 1);
        assert_eq!(Size::Fixed(7).units(1000), 7);
    }

    #[test]
    fn largest_grad_norm_ignores_nan_and_prefers_lower_index_on_ties() {
        let m = Metrics {
            widths: vec![4, 4, 4],
            grad_norms: vec![f64::NAN, 2.0, 2.0],
            ..Metrics::default()
        };
        assert_eq!(Target::LargestGradNorm.layers(&m), vec![1]);
        assert_eq!(Target::Layer(3).layers(&m), Vec::<usize>::new());
    }
}
