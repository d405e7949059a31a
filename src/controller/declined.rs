//! Growths a policy's limits declined: identical ones in a row are written as one record.

use serde::{Deserialize, Serialize};

use super::{ControllerError, GrowthController};
use crate::audit::{AuditRecord, DeclinedEvent};
use crate::policy::Declined;

/// Declined growths waiting to be written as one summarised record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct PendingDeclined(pub(super) DeclinedEvent);

impl GrowthController {
    /// Writes the summarised declined growths still pending (call it at the end of a run;
    /// the controller's state also carries them across a resume).
    pub fn flush(&mut self) -> Result<(), ControllerError> {
        let mut records = Vec::new();
        let pending = self.pending_declined.clone();
        self.flush_declined(&mut records);
        if let (Some(log), false) = (&mut self.audit, records.is_empty()) {
            if let Err(e) = log.append_all(&records) {
                self.pending_declined = pending;
                return Err(e.into());
            }
        }
        Ok(())
    }

    pub(super) fn count_declined(&mut self, d: &Declined, records: &mut Vec<AuditRecord>) {
        let sites: Vec<String> = d.growths.iter().map(|g| g.place().to_string()).collect();
        if let Some(PendingDeclined(p)) = &mut self.pending_declined {
            if p.policy == d.policy && p.sites == sites {
                p.count += 1;
                p.step = d.step;
                p.epoch = d.epoch;
                return;
            }
        }
        self.flush_declined(records);
        self.pending_declined = Some(PendingDeclined(DeclinedEvent {
            first_step: d.step,
            step: d.step,
            epoch: d.epoch,
            policy: d.policy.clone(),
            why: d.why.clone(),
            sites,
            count: 1,
        }));
    }

    pub(super) fn flush_declined(&mut self, records: &mut Vec<AuditRecord>) {
        if let Some(PendingDeclined(p)) = self.pending_declined.take() {
            records.push(AuditRecord::Declined(p));
        }
    }
}
