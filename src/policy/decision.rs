//! What a policy decides: which layers grow, by how much, and why.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Metrics;
use crate::init::Init;

/// A request to grow the model: units at a site, or a new block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Growth {
    /// Add `k` units to site `site`.
    Width {
        /// The site's name.
        site: String,
        /// Number of units to add.
        k: usize,
        /// How the new units are initialised.
        init: Init,
    },
    /// Insert a new block of `hidden` units after block `after` (the new block adds exactly
    /// zero to the function).
    Depth {
        /// The block after which the new one goes.
        after: String,
        /// The new block's hidden width.
        hidden: usize,
    },
}

impl Growth {
    /// The site a width growth adds to, or the block a depth growth follows.
    pub fn place(&self) -> &str {
        match self {
            Growth::Width { site, .. } => site,
            Growth::Depth { after, .. } => after,
        }
    }

    /// The units a width growth adds (0 for depth).
    pub fn units(&self) -> usize {
        match self {
            Growth::Width { k, .. } => *k,
            Growth::Depth { .. } => 0,
        }
    }
}

/// A policy's decision to grow, with the numbers that justify it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The growths to carry out, at most one per site.
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

/// Which site(s) a growth goes to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Target {
    /// The `i`-th site of the model, in [`Metrics::sites`] order (for an [`crate::Mlp`],
    /// hidden layer `i`).
    Layer(usize),
    /// The site of this name, e.g. `Site("blocks.1.hidden")`.
    Site(String),
    /// Every site.
    All,
    /// The site whose gradient norm is largest; ties go to the first; missing and non-finite
    /// norms are ignored.
    LargestGradNorm,
    /// The narrowest site; ties go to the first.
    SmallestWidth,
}

impl Target {
    /// The names of the sites this target selects (empty when none qualifies, e.g. no finite
    /// gradient norm). A `Layer` past the sites selects nothing and a `Site` is passed on
    /// as named: [`Target::check`] tells both apart from a model that has them.
    pub fn sites(&self, m: &Metrics) -> Vec<String> {
        match self {
            Target::Layer(i) => m
                .sites
                .get(*i)
                .map(|s| s.name.clone())
                .into_iter()
                .collect(),
            Target::Site(name) => vec![name.clone()],
            Target::All => m.site_names(),
            Target::LargestGradNorm => {
                let mut best: Option<(&str, f64)> = None;
                for s in &m.sites {
                    let Some(g) = s.grad_norm.filter(|g| g.is_finite()) else {
                        continue;
                    };
                    if best.is_none_or(|(_, b)| g > b) {
                        best = Some((&s.name, g));
                    }
                }
                best.map(|(n, _)| n.to_string()).into_iter().collect()
            }
            Target::SmallestWidth => {
                let min = m
                    .sites
                    .iter()
                    .enumerate()
                    .min_by_key(|&(i, s)| (s.width, i));
                min.map(|(_, s)| s.name.clone()).into_iter().collect()
            }
        }
    }

    /// Checks that the model described by `m` has what this target needs. A `Site` is not
    /// checked here: a site may appear later (a block inserted by depth growth). Policies
    /// read from RON check their named sites when they cannot grow in depth
    /// ([`crate::policy::PolicySpec::validate_for`]); otherwise the controller checks a site
    /// when a decision names it.
    pub fn check(&self, m: &Metrics) -> Result<(), String> {
        match self {
            Target::Layer(i) if *i >= m.sites.len() => Err(format!(
                "targets site {i} (Layer({i})) but the model has {} site(s): {:?}",
                m.sites.len(),
                m.site_names()
            )),
            Target::LargestGradNorm if !m.has_grad_norms() => Err(
                "targets the largest gradient norm but the metrics carry no gradients: \
                 build them with Metrics::of(..).grads(..)"
                    .into(),
            ),
            _ => Ok(()),
        }
    }

    /// The highest site index this target names explicitly, if any.
    pub fn explicit_layer(&self) -> Option<usize> {
        match *self {
            Target::Layer(i) => Some(i),
            _ => None,
        }
    }
}

/// Width growths for `target` sized by `size` with `init`, against the current widths.
pub(crate) fn growths_for(target: &Target, size: &Size, init: &Init, m: &Metrics) -> Vec<Growth> {
    target
        .sites(m)
        .into_iter()
        .map(|site| {
            let width = m.site(&site).map_or(0, |s| s.width);
            Growth::Width {
                k: size.units(width),
                site,
                init: init.clone(),
            }
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
    use crate::policy::SiteMetrics;

    fn sites(widths: &[usize], norms: &[Option<f64>]) -> Metrics {
        Metrics {
            sites: widths
                .iter()
                .zip(norms)
                .enumerate()
                .map(|(i, (&width, &grad_norm))| SiteMetrics {
                    name: format!("hidden.{i}"),
                    width,
                    grad_norm,
                    ..SiteMetrics::default()
                })
                .collect(),
            ..Metrics::default()
        }
    }

    #[test]
    fn fraction_rounds_and_is_at_least_one() {
        assert_eq!(Size::Fraction(1.0).units(32), 32);
        assert_eq!(Size::Fraction(0.25).units(10), 3);
        assert_eq!(Size::Fraction(0.01).units(10), 1);
        assert_eq!(Size::Fixed(7).units(1000), 7);
    }

    #[test]
    fn largest_grad_norm_ignores_nan_and_prefers_the_first_on_ties() {
        let m = sites(&[4, 4, 4], &[Some(f64::NAN), Some(2.0), Some(2.0)]);
        assert_eq!(Target::LargestGradNorm.sites(&m), vec!["hidden.1"]);
        assert_eq!(Target::Layer(3).sites(&m), Vec::<String>::new());
    }

    #[test]
    fn targets_the_model_lacks_are_errors_that_list_its_sites() {
        let m = sites(&[4, 8], &[None, None]);
        let e = Target::Layer(2).check(&m).unwrap_err();
        assert!(e.contains("hidden.0") && e.contains("Layer(2)"), "{e}");
        assert!(
            Target::Site("head".into()).check(&m).is_ok(),
            "checked when it fires"
        );
        assert!(Target::LargestGradNorm
            .check(&m)
            .unwrap_err()
            .contains("grads"));
        assert!(Target::Site("hidden.1".into()).check(&m).is_ok());
    }
}
