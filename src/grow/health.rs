//! Are new units alive? Per growth cohort: how many units never activate on a batch, how
//! often the others do, how large their weights are and (given the gradients) their
//! gradients, against the units that were there before.

use std::ops::Range;

use dfdx::prelude::{Device, Gradients};
use serde::{Deserialize, Serialize};

use crate::audit::num;
use crate::grow::unit_map::unit_map;
use crate::{Activation, Expandable, GrowError, Growable, Init, Real};

/// Which units were active on which examples of a batch: `active[e * width + u]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Activity {
    /// Examples in the batch.
    pub examples: usize,
    /// Units of the site.
    pub width: usize,
    /// Example-major flags.
    pub active: Vec<bool>,
    /// Whether an inactive unit outputs exactly zero ([`Activation::zero_when_inactive`]), so
    /// that a unit inactive on every example added nothing on the batch. Only such units are
    /// re-initialised by the controller's health check.
    pub zero_when_inactive: bool,
}

impl Activity {
    /// The activity of `width` units over a batch of pre-activations `pre` (example-major),
    /// judged by `is_active` (for ReLU: `z > 0`). Whether inactive units output zero is not
    /// known from a predicate: it is `false` until [`Activity::with_zero_when_inactive`] says
    /// otherwise ([`Activity::of_activation`] knows it).
    pub fn from_pre_activations<E: Real>(
        pre: &[E],
        width: usize,
        is_active: impl Fn(f64) -> bool,
    ) -> Result<Self, GrowError> {
        if width == 0 || !pre.len().is_multiple_of(width) {
            return Err(GrowError::ShapeMismatch {
                what: "pre-activations (a whole number of examples)".into(),
                expected: width,
                found: pre.len(),
            });
        }
        Ok(Activity {
            examples: pre.len() / width,
            width,
            active: pre
                .iter()
                .map(|z| is_active(z.to_f64().unwrap_or(f64::NAN)))
                .collect(),
            zero_when_inactive: false,
        })
    }

    /// The activity of `width` units followed by `act`, from their pre-activations `pre`
    /// (example-major): [`Activation::is_active`] and [`Activation::zero_when_inactive`].
    pub fn of_activation<E: Real>(
        pre: &[E],
        width: usize,
        act: Activation,
    ) -> Result<Self, GrowError> {
        Ok(
            Self::from_pre_activations(pre, width, |z| act.is_active(z))?
                .with_zero_when_inactive(act.zero_when_inactive()),
        )
    }

    /// Says whether an inactive unit outputs exactly zero (see
    /// [`Activity::zero_when_inactive`]).
    pub fn with_zero_when_inactive(mut self, yes: bool) -> Self {
        self.zero_when_inactive = yes;
        self
    }

    /// The share of examples on which unit `u` is active.
    pub fn share(&self, u: usize) -> f64 {
        let on = (0..self.examples)
            .filter(|e| self.active[e * self.width + u])
            .count();
        on as f64 / self.examples.max(1) as f64
    }
}

/// The figures of one cohort of units: the units a growth added, or the original ones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "CohortHealthRecord")]
pub struct CohortHealth {
    /// The step the cohort was added at (0 for the units the site started with; a growth at
    /// step 0 is told apart by [`CohortHealth::original`]).
    pub born: u64,
    /// Whether these are the units the site started with (the first cohort).
    pub original: bool,
    /// The units' indices.
    pub units: Range<usize>,
    /// Units that were active on no example of the batch.
    pub dead: usize,
    /// The mean over units of the share of examples on which a unit is active.
    #[serde(with = "num::float")]
    pub mean_active: f64,
    /// The mean L2 norm of a unit's fan-in weights.
    #[serde(with = "num::float")]
    pub fan_in_norm: f64,
    /// The mean L2 norm of a unit's fan-out, over every consumer.
    #[serde(with = "num::float")]
    pub fan_out_norm: f64,
    /// The mean L2 norm of the gradient of a unit's fan-in weights (its bias excluded), when
    /// gradients were given ([`site_health_with_grads`]).
    #[serde(
        with = "num::opt_float",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub fan_in_grad_norm: Option<f64>,
    /// The mean L2 norm of the gradient of a unit's fan-out, over every consumer, when
    /// gradients were given.
    #[serde(
        with = "num::opt_float",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub fan_out_grad_norm: Option<f64>,
}

/// [`CohortHealth`] as a log holds it: records written before `original` existed mark the
/// original units by `born == 0` (a growth at step 0 was written as born 1 then).
#[derive(Deserialize)]
struct CohortHealthRecord {
    born: u64,
    #[serde(default)]
    original: Option<bool>,
    units: Range<usize>,
    dead: usize,
    #[serde(with = "num::float")]
    mean_active: f64,
    #[serde(with = "num::float")]
    fan_in_norm: f64,
    #[serde(with = "num::float")]
    fan_out_norm: f64,
    #[serde(with = "num::opt_float", default)]
    fan_in_grad_norm: Option<f64>,
    #[serde(with = "num::opt_float", default)]
    fan_out_grad_norm: Option<f64>,
}

impl From<CohortHealthRecord> for CohortHealth {
    fn from(r: CohortHealthRecord) -> Self {
        CohortHealth {
            born: r.born,
            original: r.original.unwrap_or(r.born == 0),
            units: r.units,
            dead: r.dead,
            mean_active: r.mean_active,
            fan_in_norm: r.fan_in_norm,
            fan_out_norm: r.fan_out_norm,
            fan_in_grad_norm: r.fan_in_grad_norm,
            fan_out_grad_norm: r.fan_out_grad_norm,
        }
    }
}

impl CohortHealth {
    /// The number of units.
    pub fn len(&self) -> usize {
        self.units.len()
    }

    /// Whether the cohort has no unit.
    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }
}

/// The health of one site's cohorts, some steps after a growth (an audit record).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthRecord {
    /// Step of the measurement.
    pub step: u64,
    /// Epochs completed.
    pub epoch: u64,
    /// The site.
    pub site: String,
    /// Every cohort, the original units first.
    pub cohorts: Vec<CohortHealth>,
    /// Dead units re-initialised after this measurement, and kept (see
    /// [`crate::HealthAction::Reinitialise`]).
    #[serde(default)]
    pub reinitialised: usize,
    /// The birth steps of the cohorts added by a growth with at least the check's share of
    /// dead units.
    #[serde(default)]
    pub mostly_dead: Vec<u64>,
    /// Why nothing was measured, or why dead units were not re-initialised (or were, and
    /// then put back), when that happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Added units against original ones, summed over the cohorts of one or more sites.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NewUnitsSummary {
    /// Units added by growths.
    pub added: usize,
    /// Of those, units active on no example.
    pub dead: usize,
    /// The mean active share of the added units.
    pub mean_active: f64,
    /// The mean active share of the original units.
    pub old_mean_active: f64,
}

impl NewUnitsSummary {
    /// The summary of `cohorts` (see [`CohortHealth::original`]).
    pub fn of<'a>(cohorts: impl IntoIterator<Item = &'a CohortHealth>) -> Self {
        let (mut s, mut active_new, mut old_units, mut active_old) = (Self::default(), 0.0, 0, 0.0);
        for c in cohorts {
            let n = c.len();
            if c.original {
                old_units += n;
                active_old += c.mean_active * n as f64;
            } else {
                s.added += n;
                s.dead += c.dead;
                active_new += c.mean_active * n as f64;
            }
        }
        s.mean_active = active_new / s.added.max(1) as f64;
        s.old_mean_active = active_old / old_units.max(1) as f64;
        s
    }

    /// Dead added units as a share of added units (0 when none was added).
    pub fn dead_share(&self) -> f64 {
        self.dead as f64 / self.added.max(1) as f64
    }
}

/// Measures the cohorts of site `site` of `model` from the units' `activity` on a batch.
///
/// `cohorts` are `(born, units)` pairs covering the site's units, the units it started with
/// first (what [`crate::GrowthController::cohorts`] returns); a site grown outside the
/// controller can pass one cohort `(0, 0..width)`. The gradient norms are `None`: see
/// [`site_health_with_grads`].
pub fn site_health<E: Real, D: Device<E>, M: Growable<E, D>>(
    model: &M,
    site: &str,
    activity: &Activity,
    cohorts: &[(u64, Range<usize>)],
) -> Result<Vec<CohortHealth>, GrowError> {
    measure(model, site, activity, cohorts, None)
}

/// [`site_health`], with each cohort's gradient norms from `grads` (the gradients of `model`
/// from the last backward pass, e.g. the ones the optimizer was given): the mean over its
/// units of the L2 norm of a unit's fan-in gradient (bias excluded) and of its fan-out
/// gradient. Where the units' entries are is asked of the site's layers, which must be able
/// to overwrite units ([`Expandable::replace_outputs`] and [`Expandable::replace_inputs`]:
/// [`crate::Linear`] can, [`crate::Conv2d`] cannot yet); otherwise this is an error.
pub fn site_health_with_grads<E: Real, D: Device<E>, M: Growable<E, D>>(
    model: &M,
    site: &str,
    activity: &Activity,
    cohorts: &[(u64, Range<usize>)],
    grads: &mut Gradients<E, D>,
) -> Result<Vec<CohortHealth>, GrowError> {
    let map = unit_map(model, site).map_err(|e| {
        GrowError::Statistics(format!(
            "the gradient norms of site {site:?} need to know where its units are: {e}"
        ))
    })?;
    let norms = map.grad_norms(model, grads)?;
    measure(model, site, activity, cohorts, Some(norms))
}

fn measure<E: Real, D: Device<E>, M: Growable<E, D>>(
    model: &M,
    site: &str,
    activity: &Activity,
    cohorts: &[(u64, Range<usize>)],
    grad_norms: Option<(Vec<f64>, Vec<f64>)>,
) -> Result<Vec<CohortHealth>, GrowError> {
    // `site_mut` lends the layers; a clone shares the tensors (copy on write), so this is cheap.
    let mut m = model.clone();
    let s = m
        .site_mut(site)
        .ok_or_else(|| crate::grow::site::no_such_site(model, site))?;
    let width = s.producer.out_width();
    if activity.width != width {
        return Err(GrowError::ShapeMismatch {
            what: format!("activity of site {site:?}"),
            expected: width,
            found: activity.width,
        });
    }
    let fan_in = s.producer.output_norms();
    let mut fan_out = vec![0.0; width];
    for c in &s.consumers {
        for (sum, n) in fan_out.iter_mut().zip(c.input_norms()) {
            *sum += n * n;
        }
    }
    let mean =
        |v: &[f64], r: &Range<usize>| v[r.clone()].iter().sum::<f64>() / r.len().max(1) as f64;
    let fan_out: Vec<f64> = fan_out.iter().map(|x| x.sqrt()).collect();
    cohorts
        .iter()
        .enumerate()
        .map(|(i, (born, units))| {
            if units.end > width || units.start > units.end {
                return Err(GrowError::ShapeMismatch {
                    what: format!("a cohort of site {site:?}"),
                    expected: width,
                    found: units.end,
                });
            }
            let shares: Vec<f64> = units.clone().map(|u| activity.share(u)).collect();
            Ok(CohortHealth {
                born: *born,
                original: i == 0,
                units: units.clone(),
                dead: shares.iter().filter(|&&s| s == 0.0).count(),
                mean_active: shares.iter().sum::<f64>() / shares.len().max(1) as f64,
                fan_in_norm: mean(&fan_in, units),
                fan_out_norm: mean(&fan_out, units),
                fan_in_grad_norm: grad_norms.as_ref().map(|(g, _)| mean(g, units)),
                fan_out_grad_norm: grad_norms.as_ref().map(|(_, g)| mean(g, units)),
            })
        })
        .collect()
}

/// Gives units `units` of site `site` a fresh fan-in and bias (drawn as [`Init::ZerosOut`]
/// draws them) and a zero fan-out in every consumer. Atomic: on error the model is as it was.
///
/// Not function-preserving in general: the units' old fan-out is gone. The function is
/// unchanged exactly on the inputs where the units output zero, so for ReLU units dead on a
/// batch ([`Activation::zero_when_inactive`]) it is unchanged on that batch, and only there;
/// for tanh, sigmoid or GELU units "dead" means saturated at a non-zero value, and the
/// output changes. The controller's health check ([`crate::HealthAction::Reinitialise`])
/// therefore re-initialises only units whose activation outputs zero, checks the probe loss
/// and gives the units fresh optimizer state; a caller of this function does that itself.
pub fn reinitialise_units<E: Real, D: Device<E>, M: Growable<E, D>>(
    model: &mut M,
    site: &str,
    units: &[usize],
    rng: &mut dyn rand::RngCore,
) -> Result<(), GrowError> {
    if units.is_empty() {
        return Ok(());
    }
    let backup = model.clone();
    let result = (|| {
        let Some(s) = model.site_mut(site) else {
            return Err(crate::grow::site::no_such_site(model, site));
        };
        let fresh = {
            let consumers: Vec<&dyn Expandable<E>> = s.consumers.iter().map(|c| &**c).collect();
            Init::ZerosOut.plan(&*s.producer, &consumers, units.len(), rng)?
        };
        s.producer
            .replace_outputs(units, &fresh.fan_in, &fresh.bias)?;
        for (c, zeros) in s.consumers.into_iter().zip(&fresh.fan_out) {
            c.replace_inputs(units, zeros)?;
        }
        Ok(())
    })();
    if result.is_err() {
        *model = backup;
    }
    result
}

/// The L2 norm of a unit's fan-in weights, for every output unit of `layer`.
pub(crate) fn output_norms<E: Real>(layer: &(impl Expandable<E> + ?Sized)) -> Vec<f64> {
    (0..layer.out_width())
        .map(|u| {
            layer
                .output_unit(u)
                .map_or(f64::NAN, |(w, _)| crate::params::l2_norm(&w))
        })
        .collect()
}

/// The L2 norm of the fan-out of every input unit of `layer`.
pub(crate) fn input_norms<E: Real>(layer: &(impl Expandable<E> + ?Sized)) -> Vec<f64> {
    (0..layer.in_width())
        .map(|u| {
            layer
                .input_column(u)
                .map_or(f64::NAN, |c| crate::params::l2_norm(&c))
        })
        .collect()
}
