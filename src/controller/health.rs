//! Checking on new units some steps after each growth, and giving dead ones a fresh start.

use std::ops::Range;

use dfdx::prelude::Device;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::{ControllerError, GrowthController};
use crate::audit::{AuditRecord, GrowthEvent};
use crate::health::{reinitialise_units, site_health, HealthRecord};
use crate::policy::Metrics;
use crate::{Growable, LossProbe, Real};

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

/// What the controller does when a growth's cohort is mostly dead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HealthAction {
    /// Say so in the audit log (the default).
    #[default]
    Report,
    /// Draw a fresh fan-in for the dead units (their fan-out is still about zero, so the
    /// function barely moves; the probe check applies) and say so.
    Reinitialise,
}

/// A health check due after a growth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct HealthDue {
    pub(super) site: String,
    pub(super) at_step: u64,
}

impl GrowthController {
    /// Runs the health checks that are due and writes their records; with
    /// [`HealthAction::Reinitialise`], gives the dead units of mostly dead cohorts a fresh
    /// start. All or nothing: on error the model and the due checks are as they were.
    pub(super) fn check_health<E: Real, D: Device<E>, M: Growable<E, D>>(
        &mut self,
        m: &Metrics,
        model: &mut M,
        probe: Option<&dyn LossProbe<M>>,
    ) -> Result<(), ControllerError> {
        let Some(check) = self.health.clone() else {
            return Ok(());
        };
        let (due, later): (Vec<HealthDue>, Vec<HealthDue>) = self
            .health_due
            .iter()
            .cloned()
            .partition(|h| h.at_step <= m.step);
        if due.is_empty() {
            return Ok(());
        }
        let backup = model.clone();
        let mut rng = StdRng::seed_from_u64(self.seed ^ m.step.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let mut records = Vec::new();
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
                    for c in cohorts.iter().filter(|c| c.born > 0) {
                        if c.dead as f64 >= check.dead_share * c.len() as f64 && c.dead > 0 {
                            record.mostly_dead.push(c.born);
                            dead.extend(c.units.clone().filter(|&u| activity.share(u) == 0.0));
                        }
                    }
                    if check.action == HealthAction::Reinitialise && !dead.is_empty() {
                        match reinitialise_units(model, &h.site, &dead, &mut rng) {
                            Ok(()) => record.reinitialised = dead.len(),
                            Err(e) => record.note = Some(format!("not re-initialised: {e}")),
                        }
                    }
                    record.cohorts = cohorts;
                }
            }
            records.push(AuditRecord::Health(record));
        }
        if let Some(log) = &mut self.audit {
            if let Err(e) = log.append_all(&records) {
                *model = backup;
                return Err(e.into());
            }
        }
        self.health_due = later;
        Ok(())
    }

    /// The cohorts of `site` from the growth events: the units it started with, then each
    /// growth's units.
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
                cohorts.push((e.step.max(1), a..b));
            }
        }
        cohorts
    }
}
