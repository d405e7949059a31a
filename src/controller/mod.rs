//! The growth controller: the one object a training loop holds.
//!
//! One observation is a transaction: the health checks that are due ([`health`]), then the
//! policy's decision, carried out on the model ([`apply`]), repeated records summarised
//! ([`declined`]), all records written in one write; on any error the model, the optimizer,
//! the policy state, the health checks due, the events and the log are as they were.
//! [`state`] saves and restores what a resumed run needs.

mod apply;
mod declined;
mod health;
mod state;

pub use health::{HealthAction, HealthCheck};
pub use state::ControllerState;

use declined::{PendingDeclined, RefusedRun};
use health::HealthDue;

use dfdx::prelude::Device;

use crate::audit::{AuditError, AuditLog, AuditRecord, GrowthEvent, RefusedEvent};
use crate::lr::LrSchedule;
use crate::optim::{Optimizer, Renewal};
use crate::policy::{Decision, GrowthPolicy, Metrics, PolicyError};
use crate::{GrowError, Growable, LossProbe, Real, ShrinkPerturb};

/// What the controller could not do; the model, the optimizer, the policy state, the event
/// list and the audit log are as they were before the call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControllerError {
    /// Writing the audit log failed; nothing that call decided was kept.
    #[error("audit log: {0}")]
    Audit(#[from] AuditError),
    /// The policy does not fit the model (a site it names is missing, a signal it needs is
    /// not in the metrics), or its saved state could not be restored.
    #[error("policy: {0}")]
    Policy(#[from] PolicyError),
    /// A setting of the controller that cannot be used.
    #[error("invalid controller setting {name} = {value}: {reason}")]
    Setting {
        /// The setting.
        name: &'static str,
        /// Its value.
        value: f64,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A saved controller state that does not fit this controller.
    #[error("controller state: {0}")]
    State(String),
}

/// What one observation came to. Refusals are outcomes, not errors: training goes on.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The policy did not ask for a growth (or its limits declined it).
    Idle,
    /// The model grew.
    Grown(Vec<GrowthEvent>),
    /// The model refused the decision (a width cap, an init that does not fit, a memory
    /// limit); nothing changed.
    Refused(RefusedEvent),
    /// The growth was carried out, raised the probe loss and was undone; nothing changed.
    Undone(RefusedEvent),
}

impl Outcome {
    /// The growths carried out (empty unless [`Outcome::Grown`]).
    pub fn events(&self) -> &[GrowthEvent] {
        match self {
            Outcome::Grown(e) => e,
            _ => &[],
        }
    }
}

/// The default cap on the memory one growth may allocate (see
/// [`GrowthController::with_max_growth_bytes`]): 1 GiB.
pub const DEFAULT_MAX_GROWTH_BYTES: u128 = 1 << 30;

/// Owns a [`GrowthPolicy`] and an optional [`AuditLog`]; fed [`Metrics`], it grows the model
/// when the policy decides, pads the optimizer's state, checks the probe loss, and records the
/// event.
///
/// The whole loop is in the README; in short:
///
/// ```
/// use dfdx_grow::dfdx::prelude::*;
/// use dfdx_grow::optim::{Adam, AdamConfig};
/// use dfdx_grow::policy::{policy_from_str, Metrics};
/// use dfdx_grow::rand::{rngs::StdRng, SeedableRng};
/// use dfdx_grow::{Activation, GrowthController, Mlp};
///
/// let dev = Cpu::default();
/// let mut mlp = Mlp::<f32, Cpu>::new(&[4, 8, 2], Activation::Relu, &dev, &mut StdRng::seed_from_u64(0));
/// let mut opt = Adam::<f32>::new(AdamConfig::default()).unwrap();
/// let policy = policy_from_str(
///     "Schedule(events: [(at: Step(10), target: Site(\"hidden.0\"), size: Fixed(8))])",
///     "inline",
/// ).unwrap();
/// let mut ctl = GrowthController::new(policy, 42);
/// for step in 0..20 {
///     // ... forward, backward, opt.update(&mut mlp, &mut grads) ...
///     let m = Metrics::of(&mlp).step(step).train_loss(1.0).build().unwrap();
///     ctl.observe(&m, &mut mlp, &mut opt, None).unwrap();
/// }
/// assert_eq!(mlp.widths(), vec![4, 16, 2]);
/// assert_eq!(ctl.events().len(), 1);
/// ```
#[derive(Debug)]
pub struct GrowthController {
    policy: Box<dyn GrowthPolicy>,
    audit: Option<AuditLog>,
    seed: u64,
    events: Vec<GrowthEvent>,
    loss_tolerance: f64,
    max_growth_bytes: u128,
    health: Option<HealthCheck>,
    health_due: Vec<HealthDue>,
    pending_declined: Option<PendingDeclined>,
    refused_run: Option<RefusedRun>,
    /// The site names the policy was last checked against.
    checked_sites: Option<Vec<String>>,
    lr_schedule: Option<LrSchedule>,
    shrink_perturb: Option<ShrinkPerturb>,
}

impl GrowthController {
    /// A controller running `policy`; `seed` drives the random inits of new units.
    pub fn new(policy: Box<dyn GrowthPolicy>, seed: u64) -> Self {
        Self {
            policy,
            audit: None,
            seed,
            events: Vec::new(),
            loss_tolerance: 1e-6,
            max_growth_bytes: DEFAULT_MAX_GROWTH_BYTES,
            health: None,
            health_due: Vec::new(),
            pending_declined: None,
            refused_run: None,
            checked_sites: None,
            lr_schedule: None,
            shrink_perturb: None,
        }
    }

    /// Drives the optimizer's learning rate by `schedule`: at every observation the rate for
    /// the next update is set from the step and FLOPs, and a growth tells the schedule (its
    /// action is written with the growth).
    pub fn with_lr_schedule(mut self, schedule: LrSchedule) -> Self {
        self.lr_schedule = Some(schedule);
        self
    }

    /// The learning-rate schedule, if the controller runs one.
    pub fn lr_schedule(&self) -> Option<&LrSchedule> {
        self.lr_schedule.as_ref()
    }

    /// After every growth that passed the probe check, shrinks and perturbs the old weights
    /// ([`crate::shrink_perturb`]; off by default). Not function-preserving: the probe check judges
    /// the growth before it, and the event's `loss_after` is measured before it too.
    pub fn with_shrink_perturb(mut self, setting: ShrinkPerturb) -> Result<Self, ControllerError> {
        match setting.check() {
            Ok(()) => {}
            Err(GrowError::InvalidHyper {
                name,
                value,
                reason,
            }) => {
                return Err(ControllerError::Setting {
                    name,
                    value,
                    reason,
                })
            }
            Err(_) => {
                return Err(ControllerError::Setting {
                    name: "shrink_perturb",
                    value: setting.shrink,
                    reason: "invalid setting",
                })
            }
        }
        self.shrink_perturb = Some(setting);
        Ok(self)
    }

    /// Records every growth, refusal, undone growth and health check in `log`.
    pub fn with_audit(mut self, log: AuditLog) -> Self {
        self.audit = Some(log);
        // A state restored before the log was given: see `restore`.
        self.forget_pending_already_logged();
        self
    }

    /// The relative rise of the probe loss past which a growth is undone (finite, >= 0).
    /// Default `1e-6`.
    pub fn with_loss_tolerance(mut self, rel: f64) -> Result<Self, ControllerError> {
        if !(rel.is_finite() && rel >= 0.0) {
            return Err(ControllerError::Setting {
                name: "loss_tolerance",
                value: rel,
                reason: "must be finite and >= 0",
            });
        }
        self.loss_tolerance = rel;
        Ok(self)
    }

    /// The most memory one growth may allocate, estimated before anything is allocated: the
    /// grown site's tensors, which growth allocates whole, and their optimizer state. Default
    /// [`DEFAULT_MAX_GROWTH_BYTES`].
    pub fn with_max_growth_bytes(mut self, bytes: u128) -> Self {
        self.max_growth_bytes = bytes;
        self
    }

    /// Measures every width growth's cohorts on the probe batch `check.after_steps` steps
    /// later and writes a `health` record; a mostly dead cohort is reported (and its dead
    /// units re-initialised if the check asks: see [`HealthAction::Reinitialise`]). A new
    /// block (depth growth) is not checked: all its units are new, with no original ones to
    /// compare them with.
    pub fn with_health(mut self, check: HealthCheck) -> Result<Self, ControllerError> {
        if let Some(reason) = check.problem() {
            return Err(ControllerError::Setting {
                name: "health.dead_share",
                value: check.dead_share,
                reason,
            });
        }
        self.health = Some(check);
        Ok(self)
    }

    /// The growths carried out so far.
    pub fn events(&self) -> &[GrowthEvent] {
        &self.events
    }

    /// The policy.
    pub fn policy(&self) -> &dyn GrowthPolicy {
        self.policy.as_ref()
    }

    /// The policy, mutably (to drive it by hand; [`GrowthController::observe`] is the usual
    /// way).
    pub fn policy_mut(&mut self) -> &mut dyn GrowthPolicy {
        self.policy.as_mut()
    }

    /// Shows `m` (built from `model` with [`Metrics::of`]) to the policy; when it decides,
    /// grows `model`, pads `opt`'s state, checks the loss on `probe` (when given), records
    /// everything in the audit log, and says what came of it. The health checks that are due
    /// ([`GrowthController::with_health`]) run first, in the same transaction.
    ///
    /// A refused or undone decision leaves the model and the optimizer exactly as they were
    /// and is reported to the policy (so it does not count as a growth); it is an
    /// [`Outcome`], not an error. An error means nothing of this call was kept: the model,
    /// the optimizer, the policy state, the health checks due, the events and the log are as
    /// before, so the same observation can be made again.
    pub fn observe<E: Real, D: Device<E>, M: Growable<E, D>>(
        &mut self,
        m: &Metrics,
        model: &mut M,
        opt: &mut dyn Optimizer<E, D>,
        probe: Option<&dyn LossProbe<M>>,
    ) -> Result<Outcome, ControllerError> {
        // Everything the call may change before its one log write, as it was; the model's
        // copy shares its tensors until one is written (copy on write).
        let model_before = model.clone();
        let policy_before = self.policy.save_state();
        let pending_before = (self.pending_declined.clone(), self.refused_run.clone());
        let due_before = self.health_due.clone();
        let (decision, outcome, renewals) = match self.decide(m, model, &*opt, probe) {
            Ok(done) => done,
            Err(e) => {
                *model = model_before;
                // The snapshot was produced by this very policy, so it loads.
                let _ = self.policy.load_state(&policy_before);
                (self.pending_declined, self.refused_run) = pending_before;
                self.health_due = due_before;
                return Err(e);
            }
        };
        // Written: now the optimizer. Both were checked before the write; should a device
        // error still stop them, `update` pads at the next step, which is just as correct,
        // and re-initialised units keep their old moments.
        if !renewals.is_empty() {
            let _ = opt.renew(model, &renewals);
        }
        match (&decision, &outcome) {
            (Some(d), Outcome::Grown(events)) => {
                if let Some(s) = &mut self.lr_schedule {
                    s.on_growth(m.step, m.flops);
                }
                let _ = opt.sync(model);
                self.policy.on_growth(d);
                self.events.extend(events.iter().cloned());
            }
            (Some(d), Outcome::Refused(r) | Outcome::Undone(r)) => {
                self.policy.on_refused(d, &r.why);
            }
            _ => {}
        }
        if let Some(s) = &self.lr_schedule {
            // The rate of the next update. A validated schedule's rates are finite and >= 0
            // (LrSchedule::new and restore check it), which is all set_lr refuses.
            let _ = opt.set_lr(s.lr(m.step, m.flops));
        }
        Ok(outcome)
    }

    /// The part of [`GrowthController::observe`] that can fail, up to and including the log
    /// write; the caller puts everything back on error.
    fn decide<E: Real, D: Device<E>, M: Growable<E, D>>(
        &mut self,
        m: &Metrics,
        model: &mut M,
        opt: &dyn Optimizer<E, D>,
        probe: Option<&dyn LossProbe<M>>,
    ) -> Result<(Option<Decision>, Outcome, Vec<Renewal>), ControllerError> {
        let mut records = Vec::new();
        let renewals = self.run_health(m, model, opt, probe, &mut records);
        let names = m.site_names();
        if self.checked_sites.as_ref() != Some(&names) {
            self.policy.check(m)?;
            self.checked_sites = Some(names);
        }
        let decision = self.policy.observe(m);
        for d in self.policy.take_declined() {
            self.count_declined(&d, &mut records);
        }
        if let Some(d) = &decision {
            // The policy sees this observation again once its file is fixed.
            self.check_places(d, m, model)?;
        }
        let outcome = match &decision {
            None => Outcome::Idle,
            Some(d) => self.apply(d, m, model, opt, probe),
        };
        match &outcome {
            Outcome::Idle => {}
            Outcome::Grown(events) => {
                self.flush_declined(&mut records);
                self.end_refused_run(&mut records);
                records.extend(events.iter().cloned().map(AuditRecord::Growth));
            }
            Outcome::Refused(r) => self.count_refused(r, &mut records),
            Outcome::Undone(r) => {
                self.flush_declined(&mut records);
                self.end_refused_run(&mut records);
                records.push(AuditRecord::Undone(r.clone()));
            }
        }
        if let (Outcome::Grown(events), Some(h)) = (&outcome, &self.health) {
            // Width growths only: see `with_health`.
            for e in events.iter().filter(|e| e.after.is_none()) {
                self.health_due.push(HealthDue {
                    site: e.site.clone(),
                    at_step: m.step.saturating_add(h.after_steps),
                });
            }
        }
        if let (Some(log), false) = (&mut self.audit, records.is_empty()) {
            log.append_all(&records)?;
        }
        Ok((decision, outcome, renewals))
    }
}

impl Drop for GrowthController {
    fn drop(&mut self) {
        // Best effort: a summary still pending is worth writing; an error here has nowhere
        // to go.
        let _ = self.flush();
    }
}
