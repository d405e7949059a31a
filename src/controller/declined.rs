//! Records that repeat: growths a policy's limits declined, identical ones in a row written as
//! one record; refusals identical to the one written before them, their repeats written as one
//! record.

use serde::{Deserialize, Serialize};

use super::{ControllerError, GrowthController};
use crate::audit::{AuditRecord, DeclinedEvent, RefusedEvent};
use crate::policy::Declined;

/// Declined growths waiting to be written as one summarised record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct PendingDeclined(pub(super) DeclinedEvent);

/// A refusal written in full, and the identical ones that followed it, not yet written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct RefusedRun {
    /// The refusal written in full: a repeat has its policy, growths and `why`.
    pub(super) first: RefusedEvent,
    /// The repeats since, as one record (none yet: `None`).
    pub(super) repeats: Option<RefusedEvent>,
}

impl GrowthController {
    /// Writes the summarised records still pending: declined growths and repeated refusals
    /// (call it at the end of a run; dropping the controller calls it too, and the
    /// controller's state carries them across a resume).
    pub fn flush(&mut self) -> Result<(), ControllerError> {
        let mut records = Vec::new();
        let (pending, run) = (self.pending_declined.clone(), self.refused_run.clone());
        self.flush_declined(&mut records);
        self.end_refused_run(&mut records);
        if let (Some(log), false) = (&mut self.audit, records.is_empty()) {
            if let Err(e) = log.append_all(&records) {
                self.pending_declined = pending;
                self.refused_run = run;
                return Err(e.into());
            }
        }
        Ok(())
    }

    pub(super) fn count_declined(&mut self, d: &Declined, records: &mut Vec<AuditRecord>) {
        // A decline ends a run of refusals, so records stay in the order of their steps.
        self.end_refused_run(records);
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

    /// Records refusal `r`: in full, unless it repeats the refusal written last.
    pub(super) fn count_refused(&mut self, r: &RefusedEvent, records: &mut Vec<AuditRecord>) {
        self.flush_declined(records);
        if let Some(run) = &mut self.refused_run {
            let f = &run.first;
            if (&f.policy, &f.growths, &f.why) == (&r.policy, &r.growths, &r.why) {
                match &mut run.repeats {
                    Some(s) => {
                        s.count += 1;
                        s.step = r.step;
                        s.epoch = r.epoch;
                    }
                    None => {
                        run.repeats = Some(RefusedEvent {
                            first_step: Some(r.step),
                            count: 1,
                            ..r.clone()
                        })
                    }
                }
                return;
            }
        }
        self.end_refused_run(records);
        records.push(AuditRecord::Refused(r.clone()));
        self.refused_run = Some(RefusedRun {
            first: r.clone(),
            repeats: None,
        });
    }

    /// Ends the run of identical refusals, writing its repeats.
    pub(super) fn end_refused_run(&mut self, records: &mut Vec<AuditRecord>) {
        if let Some(s) = self.refused_run.take().and_then(|r| r.repeats) {
            records.push(AuditRecord::Refused(s));
        }
    }
}
