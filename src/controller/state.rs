//! What a resumed run needs to decide exactly as an uninterrupted one.

use serde::{Deserialize, Serialize};

use super::declined::{PendingDeclined, RefusedRun};
use super::health::HealthDue;
use super::{ControllerError, GrowthController};
use crate::audit::{last_record, AuditRecord, GrowthEvent};
use crate::lr::LrSchedule;
use crate::policy::load_state_atomically;

/// What a resumed run needs to decide exactly as an uninterrupted one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerState {
    /// The policy's running state.
    pub policy: serde_json::Value,
    /// Growth events so far.
    pub events: Vec<GrowthEvent>,
    /// The seed of the inits' random streams.
    pub seed: u64,
    /// Declined growths counted but not yet written.
    #[serde(default)]
    pending_declined: Option<PendingDeclined>,
    /// The last refusal written and its repeats not yet written.
    #[serde(default)]
    refused_run: Option<RefusedRun>,
    /// Health checks not yet done.
    #[serde(default)]
    health_due: Vec<HealthDue>,
    /// The learning-rate schedule's running state, when the controller runs one.
    #[serde(default)]
    lr_schedule: Option<LrSchedule>,
}

impl GrowthController {
    /// The state to save for a resumed run (see [`GrowthController::restore`]).
    pub fn state(&self) -> ControllerState {
        ControllerState {
            policy: self.policy.save_state(),
            events: self.events.clone(),
            seed: self.seed,
            pending_declined: self.pending_declined.clone(),
            refused_run: self.refused_run.clone(),
            health_due: self.health_due.clone(),
            lr_schedule: self.lr_schedule.clone(),
        }
    }

    /// Restores a saved state into a controller built with the same policy file: the
    /// policy's state, the event history, the random stream of inits, the summarised records
    /// not yet written and the health checks not yet done. On error nothing changes.
    ///
    /// A summary still pending in the state that is already the last record of the
    /// controller's log (the process that saved the state flushed it when it was dropped) is
    /// not kept, so it is not written twice; counting starts afresh. Checked here when the
    /// controller has its log already, else by [`GrowthController::with_audit`].
    pub fn restore(&mut self, state: &ControllerState) -> Result<(), ControllerError> {
        if self.lr_schedule.is_some() != state.lr_schedule.is_some() {
            return Err(ControllerError::State(format!(
                "the saved state {} a learning-rate schedule, this controller {}",
                if state.lr_schedule.is_some() {
                    "has"
                } else {
                    "has no"
                },
                if self.lr_schedule.is_some() {
                    "has one"
                } else {
                    "has none"
                }
            )));
        }
        if let Some(s) = &state.lr_schedule {
            // A hand-edited schedule could give NaN rates, which the optimizer would refuse
            // at every step without a word.
            s.validate()
                .map_err(|e| ControllerError::State(format!("the saved schedule: {e}")))?;
        }
        load_state_atomically(self.policy.as_mut(), &state.policy)?;
        self.events = state.events.clone();
        self.seed = state.seed;
        self.pending_declined = state.pending_declined.clone();
        self.refused_run = state.refused_run.clone();
        self.health_due = state.health_due.clone();
        self.lr_schedule = state.lr_schedule.clone();
        self.forget_pending_already_logged();
        Ok(())
    }

    /// Drops a pending summary that is the last record of the log already. Best effort: a
    /// log that cannot be read keeps the summary (at worst written twice, never lost).
    pub(super) fn forget_pending_already_logged(&mut self) {
        let pending_refusals = self.refused_run.as_ref().and_then(|r| r.repeats.as_ref());
        if self.pending_declined.is_none() && pending_refusals.is_none() {
            return;
        }
        let Some(Ok(Some(last))) = self.audit.as_ref().map(|log| last_record(log.path())) else {
            return;
        };
        match last {
            AuditRecord::Declined(d)
                if self.pending_declined.as_ref().map(|p| &p.0) == Some(&d) =>
            {
                self.pending_declined = None;
            }
            AuditRecord::Refused(r) if pending_refusals == Some(&r) => self.refused_run = None,
            _ => {}
        }
    }
}
