//! Checking on new units some steps after each growth, and giving dead ones a fresh start:
//! part of the observation's transaction (records returned, not written).

use std::ops::Range;

use dfdx::prelude::Device;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::GrowthController;
use crate::audit::{AuditRecord, GrowthEvent};
use crate::grow::unit_map::unit_map;
use crate::health::{reinitialise_units, site_health, Activity, HealthRecord};
use crate::optim::{Optimizer, Renewal};
use crate::policy::{Metrics, PolicyError};
use crate::{Growable, LossProbe, Real};

/// Dead units to give a fresh start.
struct Fresh<'a> {
    site: &'a str,
    units: &'a [usize],
    activity: &'a Activity,
}

/// When and how the controller checks on new units (see [`GrowthController::with_health`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Steps after a growth at which its site's cohorts are measured on the probe batch.
    pub after_steps: u64,
    /// A cohort with at least this share of dead units counts as mostly dead (in `[0, 1]`).
    pub dead_share: f64,
    /// What to do about a mostly dead cohort.
    #[serde(default)]
    pub action: HealthAction,
}

impl HealthCheck {
    /// Reads a check from RON, e.g. `(after_steps: 300, dead_share: 0.5, action: Report)`
    /// (`policies/health/report.ron` is one, commented); errors name `origin` with the line and
    /// column, or the field.
    ///
    /// ```
    /// use dfdx_grow::{HealthAction, HealthCheck};
    ///
    /// let c = HealthCheck::from_ron("(after_steps: 300, dead_share: 0.5, action: Reinitialise)", "inline").unwrap();
    /// assert_eq!((c.after_steps, c.action), (300, HealthAction::Reinitialise));
    /// assert!(HealthCheck::from_ron("(after_steps: 300, dead_share: 1.5)", "inline").is_err());
    /// ```
    pub fn from_ron(s: &str, origin: &str) -> Result<Self, PolicyError> {
        let check: HealthCheck = crate::policy::settings_from_ron(s, origin)?;
        check.problem().map_or(Ok(check), |reason| {
            Err(PolicyError::Invalid {
                origin: origin.to_string(),
                path: "dead_share".into(),
                reason: reason.into(),
            })
        })
    }

    /// What is wrong with the check's values, if anything.
    pub(super) fn problem(&self) -> Option<&'static str> {
        (!(0.0..=1.0).contains(&self.dead_share)).then_some("must be in [0, 1]")
    }
}

/// What the controller does when a growth's cohort is mostly dead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HealthAction {
    /// Say so in the audit log (the default).
    #[default]
    Report,
    /// Give the dead units of a mostly dead cohort a fresh start, as new units: a fresh
    /// fan-in and bias ([`crate::health::reinitialise_units`]), a zero fan-out, and fresh
    /// optimizer state (zero moments, their own step count from now, Adam's new-unit
    /// epsilon; [`crate::optim::Optimizer::renew`]). Only where that leaves the function
    /// unchanged on the probe batch: units whose activation outputs exactly zero when
    /// inactive ([`crate::Activation::zero_when_inactive`]: ReLU, not tanh, sigmoid or GELU,
    /// whose "dead" units saturate at other values), and the probe loss is checked as for a
    /// growth (a rise past the loss tolerance puts the units back). The health record's
    /// `note` says when units were not re-initialised, or were put back, and why. Elsewhere
    /// (off the probe batch, where such a unit might have been active) the function may
    /// change.
    Reinitialise,
}

/// A health check due after a growth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct HealthDue {
    pub(super) site: String,
    pub(super) at_step: u64,
}

impl GrowthController {
    /// Runs the health checks that are due: their records go to `records` (nothing is written
    /// here) and they leave the list of checks due; with [`HealthAction::Reinitialise`], the
    /// dead units of mostly dead cohorts get a fresh start in `model`. Returns the fresh
    /// optimizer state those units need, checked but not given: the caller gives it once
    /// the records are written, or puts the model and the checks due back on error.
    pub(super) fn run_health<E: Real, D: Device<E>, M: Growable<E, D>>(
        &mut self,
        m: &Metrics,
        model: &mut M,
        opt: &dyn Optimizer<E, D>,
        probe: Option<&dyn LossProbe<M>>,
        records: &mut Vec<AuditRecord>,
    ) -> Vec<Renewal> {
        let Some(check) = self.health.clone() else {
            return Vec::new();
        };
        let (due, later): (Vec<HealthDue>, Vec<HealthDue>) = self
            .health_due
            .iter()
            .cloned()
            .partition(|h| h.at_step <= m.step);
        if due.is_empty() {
            return Vec::new();
        }
        self.health_due = later;
        let mut rng = StdRng::seed_from_u64(self.seed ^ m.step.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let mut renewals = Vec::new();
        for h in &due {
            let mut record = HealthRecord {
                step: m.step,
                epoch: m.epoch,
                site: h.site.clone(),
                cohorts: Vec::new(),
                reinitialised: 0,
                mostly_dead: Vec::new(),
                note: None,
            };
            let measured = probe
                .and_then(|p| p.activity(model, &h.site))
                .ok_or_else(|| "the probe does not report unit activity".to_string())
                .and_then(|a| {
                    let cohorts = self.cohorts(&h.site, a.width);
                    site_health(model, &h.site, &a, &cohorts)
                        .map(|c| (a, c))
                        .map_err(|e| e.to_string())
                });
            match measured {
                Err(why) => record.note = Some(format!("not measured: {why}")),
                Ok((activity, cohorts)) => {
                    let mut dead = Vec::new();
                    for c in cohorts.iter().filter(|c| !c.original) {
                        if c.dead as f64 >= check.dead_share * c.len() as f64 && c.dead > 0 {
                            record.mostly_dead.push(c.born);
                            dead.extend(c.units.clone().filter(|&u| activity.share(u) == 0.0));
                        }
                    }
                    record.cohorts = cohorts;
                    // `probe` is there: it measured the activity.
                    if let (HealthAction::Reinitialise, false, Some(p)) =
                        (check.action, dead.is_empty(), probe)
                    {
                        let fresh = Fresh {
                            site: &h.site,
                            units: &dead,
                            activity: &activity,
                        };
                        let (done, note) = self.reinitialise(&fresh, model, opt, p, &mut rng);
                        if let Some(parts) = done {
                            record.reinitialised = dead.len();
                            renewals.extend(parts);
                        }
                        record.note = note;
                    }
                }
            }
            records.push(AuditRecord::Health(record));
        }
        renewals
    }

    /// Re-initialises `fresh.units` of `fresh.site` when that is safe (see
    /// [`HealthAction::Reinitialise`]). Returns the optimizer state to renew (`None`: the
    /// model is as it was) and a note for the record.
    fn reinitialise<E: Real, D: Device<E>, M: Growable<E, D>>(
        &self,
        fresh: &Fresh<'_>,
        model: &mut M,
        opt: &dyn Optimizer<E, D>,
        probe: &dyn LossProbe<M>,
        rng: &mut StdRng,
    ) -> (Option<Vec<Renewal>>, Option<String>) {
        let refuse = |why: String| (None, Some(format!("not re-initialised: {why}")));
        if !fresh.activity.zero_when_inactive {
            return refuse(
                "the site's inactive units do not output zero (only ReLU-like units are \
                 re-initialised: a saturated tanh, sigmoid or GELU unit still feeds its \
                 fan-out, so replacing it would change the function)"
                    .into(),
            );
        }
        let before = probe.loss(model);
        if !before.is_finite() {
            return refuse(format!(
                "the probe loss is {before}: the change could not be checked"
            ));
        }
        // Where the units' entries are, for their fresh optimizer state.
        let parts = unit_map(model, fresh.site)
            .map_err(|e| e.to_string())
            .and_then(|map| map.renewals(fresh.units))
            .and_then(|parts| {
                opt.check_renew(model, &parts)
                    .map(|()| parts)
                    .map_err(|e| e.to_string())
            });
        let backup = model.clone();
        if let Err(e) = reinitialise_units(model, fresh.site, fresh.units, rng) {
            return refuse(e.to_string());
        }
        if let Err(after) = self.undo_if_loss_rose(probe, model, &backup, before) {
            return (
                None,
                Some(format!(
                    "re-initialised, then put back: the probe loss rose from {before} to {after}"
                )),
            );
        }
        match parts {
            Ok(parts) => (Some(parts), None),
            Err(why) => (
                Some(Vec::new()),
                Some(format!(
                    "re-initialised; their optimizer state is kept, not renewed: {why}"
                )),
            ),
        }
    }

    /// The cohorts of `site` (now `width` wide) from the growth events, as `(born, units)`:
    /// the units it started with first (born 0), then each width growth's units, born at the
    /// step of the growth (0 too for a growth at step 0: the first pair is the original
    /// units, as [`crate::health::site_health`] takes them).
    pub fn cohorts(&self, site: &str, width: usize) -> Vec<(u64, Range<usize>)> {
        let grown: Vec<&GrowthEvent> = self
            .events
            .iter()
            .filter(|e| e.site == site && e.after.is_none())
            .collect();
        let start = grown.first().map_or(width, |e| e.old_width).min(width);
        let mut cohorts = vec![(0, 0..start)];
        for e in grown {
            let (a, b) = (e.old_width.min(width), e.new_width.min(width));
            if a < b {
                cohorts.push((e.step, a..b));
            }
        }
        cohorts
    }
}
