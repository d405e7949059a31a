//! The growth controller: the one object a training loop holds.

use std::ops::Range;

use dfdx::prelude::Device;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::audit::{AuditError, AuditLog, AuditRecord, DeclinedEvent, GrowthEvent, RefusedEvent};
use crate::grow::site::{check_growth, grow_site, grow_site_informed};
use crate::health::{reinitialise_units, site_health, HealthRecord};
use crate::lr::LrSchedule;
use crate::optim::Optimizer;
use crate::policy::{
    load_state_atomically, Decision, Declined, Growth, GrowthPolicy, Metrics, PolicyError,
};
use crate::{shrink_perturb, GrowError, Growable, Init, LossProbe, Real, ShrinkPerturb};

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

/// Declined growths waiting to be written as one summarised record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct PendingDeclined(DeclinedEvent);

/// A health check due after a growth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct HealthDue {
    site: String,
    at_step: u64,
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
    /// Health checks not yet done.
    #[serde(default)]
    health_due: Vec<HealthDue>,
    /// The learning-rate schedule's running state, when the controller runs one.
    #[serde(default)]
    lr_schedule: Option<LrSchedule>,
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
    /// ([`shrink_perturb`]; off by default). Not function-preserving: the probe check judges
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

    /// Measures every growth's cohorts on the probe batch `check.after_steps` steps later and
    /// writes a `health` record; a mostly dead cohort is reported (and re-initialised if the
    /// check asks).
    pub fn with_health(mut self, check: HealthCheck) -> Result<Self, ControllerError> {
        if !(0.0..=1.0).contains(&check.dead_share) {
            return Err(ControllerError::Setting {
                name: "health.dead_share",
                value: check.dead_share,
                reason: "must be in [0, 1]",
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
    /// everything in the audit log, and says what came of it.
    ///
    /// A refused or undone decision leaves the model and the optimizer exactly as they were
    /// and is reported to the policy (so it does not count as a growth); it is an
    /// [`Outcome`], not an error. An error means nothing of this call was kept: the model,
    /// the optimizer, the policy state, the events and the log are as before.
    pub fn observe<E: Real, D: Device<E>, M: Growable<E, D>>(
        &mut self,
        m: &Metrics,
        model: &mut M,
        opt: &mut dyn Optimizer<E, D>,
        probe: Option<&dyn LossProbe<M>>,
    ) -> Result<Outcome, ControllerError> {
        // Health checks first, a transaction of their own: a failure leaves everything as it
        // was, before the policy sees this observation.
        self.check_health(m, model, probe)?;
        let names = m.site_names();
        if self.checked_sites.as_ref() != Some(&names) {
            self.policy.check(m)?;
            self.checked_sites = Some(names);
        }
        let policy_before = self.policy.save_state();
        let (pending_before, due_before) = (self.pending_declined.clone(), self.health_due.clone());
        let decision = self.policy.observe(m);
        let mut records = Vec::new();
        for d in self.policy.take_declined() {
            self.count_declined(&d, &mut records);
        }
        if let Some(d) = &decision {
            if let Err(e) = self.check_places(d, m, model) {
                // The policy sees this observation again once its file is fixed.
                let _ = self.policy.load_state(&policy_before);
                self.pending_declined = pending_before;
                return Err(e.into());
            }
        }
        let backup = decision.as_ref().map(|_| model.clone());
        let outcome = match &decision {
            None => Outcome::Idle,
            Some(d) => self.apply(d, m, model, &*opt, probe),
        };
        match &outcome {
            Outcome::Idle => {}
            Outcome::Grown(events) => {
                self.flush_declined(&mut records);
                records.extend(events.iter().cloned().map(AuditRecord::Growth));
            }
            Outcome::Refused(r) => {
                self.flush_declined(&mut records);
                records.push(AuditRecord::Refused(r.clone()));
            }
            Outcome::Undone(r) => {
                self.flush_declined(&mut records);
                records.push(AuditRecord::Undone(r.clone()));
            }
        }
        if let Outcome::Grown(events) = &outcome {
            if let Some(h) = &self.health {
                for e in events {
                    self.health_due.push(HealthDue {
                        site: e.site.clone(),
                        at_step: m.step.saturating_add(h.after_steps),
                    });
                }
            }
        }
        let written = match (&mut self.audit, records.is_empty()) {
            (Some(log), false) => log.append_all(&records),
            _ => Ok(()),
        };
        if let Err(e) = written {
            if let Some(b) = backup {
                *model = b;
            }
            // The snapshot was produced by this very policy, so it loads.
            let _ = self.policy.load_state(&policy_before);
            self.pending_declined = pending_before;
            self.health_due = due_before;
            return Err(e.into());
        }
        match (&decision, &outcome) {
            (Some(d), Outcome::Grown(events)) => {
                if let Some(s) = &mut self.lr_schedule {
                    s.on_growth(m.step, m.flops);
                }
                // Checked in `apply` before anything was written; should a device error still
                // stop it, the optimizer pads at its next update, which is just as correct.
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
            // The rate of the next update; a schedule's rates are finite and >= 0.
            let _ = opt.set_lr(s.lr(m.step, m.flops));
        }
        Ok(outcome)
    }

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

    /// Checks that every site and block the decision names exists.
    fn check_places<E: Real, D: Device<E>, M: Growable<E, D>>(
        &self,
        d: &Decision,
        m: &Metrics,
        model: &M,
    ) -> Result<(), PolicyError> {
        let origin = self.policy.origin().unwrap_or("<policy>").to_string();
        for g in &d.growths {
            let reason = match g {
                Growth::Width { site, .. } if m.site(site).is_none() => format!(
                    "names site {site:?}, which the model does not have; its sites are {:?}",
                    m.site_names()
                ),
                Growth::Depth { after, .. }
                    if after != crate::FIRST_BLOCK && !model.blocks().contains(after) =>
                {
                    format!(
                        "inserts a block after {after:?}, which the model does not have; its \
                         blocks are {:?} (or {:?} for first)",
                        model.blocks(),
                        crate::FIRST_BLOCK
                    )
                }
                _ => continue,
            };
            return Err(PolicyError::Model {
                origin,
                path: d.policy.clone(),
                reason,
            });
        }
        Ok(())
    }

    fn count_declined(&mut self, d: &Declined, records: &mut Vec<AuditRecord>) {
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

    fn flush_declined(&mut self, records: &mut Vec<AuditRecord>) {
        if let Some(PendingDeclined(p)) = self.pending_declined.take() {
            records.push(AuditRecord::Declined(p));
        }
    }

    /// Carries out every growth of `d` or none. The optimizer is only checked here; it is
    /// padded once the records are written.
    fn apply<E: Real, D: Device<E>, M: Growable<E, D>>(
        &self,
        d: &Decision,
        m: &Metrics,
        model: &mut M,
        opt: &dyn Optimizer<E, D>,
        probe: Option<&dyn LossProbe<M>>,
    ) -> Outcome {
        let refused = |why: String, before: Option<f64>, after: Option<f64>| RefusedEvent {
            step: m.step,
            epoch: m.epoch,
            policy: d.policy.clone(),
            reason: d.reason.clone(),
            why,
            growths: d.growths.clone(),
            loss_before: before,
            loss_after: after,
        };
        let backup = model.clone();
        // Each decision draws from its own stream, derived from the seed and the number of
        // growths so far, so a resumed run samples the same new weights as one that never
        // stopped.
        let mut rng = StdRng::seed_from_u64(
            self.seed ^ (self.events.len() as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let loss_before = probe.map(|p| p.loss(model));
        if let Some(l) = loss_before.filter(|l| !l.is_finite()) {
            return Outcome::Refused(refused(
                format!("the probe loss before growth is {l}: a growth cannot be checked"),
                loss_before,
                None,
            ));
        }
        let mut events = Vec::new();
        for g in &d.growths {
            match self.grow_one(g, m, model, opt, &mut rng, probe) {
                Ok(e) => events.push(GrowthEvent {
                    policy: d.policy.clone(),
                    reason: d.reason.clone(),
                    evidence: d.evidence.clone(),
                    lr: self.lr_schedule.as_ref().map(LrSchedule::action),
                    ..e
                }),
                Err(e) => {
                    *model = backup;
                    return Outcome::Refused(refused(e.to_string(), loss_before, None));
                }
            }
        }
        if let (Some(p), Some(before)) = (probe, loss_before) {
            let after = p.loss(model);
            // A NaN loss after growth counts as a rise.
            let allowed = before + self.loss_tolerance * before.abs().max(1e-12);
            if after.is_nan() || after > allowed {
                *model = backup;
                return Outcome::Undone(refused(
                    format!("the probe loss rose from {before} to {after}"),
                    Some(before),
                    Some(after),
                ));
            }
            for e in &mut events {
                e.loss_before = Some(before);
                e.loss_after = Some(after);
            }
        }
        if let Some(sp) = &self.shrink_perturb {
            if let Err(e) = shrink_perturb(model, &backup.param_dims(), sp, &mut rng) {
                *model = backup;
                return Outcome::Refused(refused(e.to_string(), loss_before, None));
            }
        }
        if let Err(e) = opt.check_sync(model) {
            *model = backup;
            return Outcome::Refused(refused(e.to_string(), loss_before, None));
        }
        Outcome::Grown(events)
    }

    fn grow_one<E: Real, D: Device<E>, M: Growable<E, D>>(
        &self,
        g: &Growth,
        m: &Metrics,
        model: &mut M,
        opt: &dyn Optimizer<E, D>,
        rng: &mut StdRng,
        probe: Option<&dyn LossProbe<M>>,
    ) -> Result<GrowthEvent, GrowError> {
        let params_before = model.num_params();
        let (site, old_width, new_width, init, after) = match g {
            Growth::Width { site, k, init } => {
                let s = check_growth(model, site, *k, init)?;
                self.check_bytes::<E>(site, *k, &s.params_for(s.width + k), opt.state_buffers())?;
                let r = if init.needs_statistics() {
                    // Gradient-informed inits read the site's statistics on the probe batch.
                    let stats = probe
                        .and_then(|p| p.statistics(model, site))
                        .ok_or_else(|| GrowError::InitMismatch {
                            init: init.name(),
                            reason: format!(
                                "it needs the statistics of site {site:?}: pass observe a probe \
                                 with a target that computes them (the crate's Probe does, for \
                                 Mlp and ResMlp)"
                            ),
                        })?;
                    grow_site_informed(model, site, *k, init, &stats, rng, probe)?
                } else {
                    grow_site(model, site, *k, init, rng)?
                };
                (r.site, r.old_width, r.new_width, init.clone(), None)
            }
            Growth::Depth { after, hidden } => {
                // A block's size is the model's business: measure a one-unit block on a copy
                // (its parameters bound one unit's and the block's fixed part, so times
                // `hidden` they bound the block's).
                let mut one = model.clone();
                one.deepen(after, 1, &mut StdRng::seed_from_u64(0))?;
                let per_unit = one.num_params().saturating_sub(params_before);
                self.check_bytes::<E>(
                    after,
                    *hidden,
                    &per_unit.saturating_mul(*hidden),
                    opt.state_buffers(),
                )?;
                let block = model.deepen(after, *hidden, rng)?;
                (block, 0, *hidden, Init::ZerosOut, Some(after.clone()))
            }
        };
        Ok(GrowthEvent {
            step: m.step,
            epoch: m.epoch,
            site,
            old_width,
            new_width,
            init,
            after,
            policy: String::new(),
            reason: String::new(),
            evidence: Default::default(),
            params_before,
            params_after: model.num_params(),
            loss_before: None,
            loss_after: None,
            flops: m.flops,
            lr: None,
        })
    }

    /// Refuses a growth whose tensors and optimizer state would pass the memory cap.
    fn check_bytes<E>(
        &self,
        site: &str,
        k: usize,
        params: &usize,
        buffers: usize,
    ) -> Result<(), GrowError> {
        let bytes = (*params as u128)
            .saturating_mul(std::mem::size_of::<E>() as u128)
            .saturating_mul(1 + buffers as u128);
        if bytes > self.max_growth_bytes {
            return Err(GrowError::TooLarge {
                site: site.to_string(),
                k,
                bytes,
                limit: self.max_growth_bytes,
            });
        }
        Ok(())
    }

    /// Runs the health checks that are due and writes their records; with
    /// [`HealthAction::Reinitialise`], gives the dead units of mostly dead cohorts a fresh
    /// start. All or nothing: on error the model and the due checks are as they were.
    fn check_health<E: Real, D: Device<E>, M: Growable<E, D>>(
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

    /// The state to save for a resumed run (see [`GrowthController::restore`]).
    pub fn state(&self) -> ControllerState {
        ControllerState {
            policy: self.policy.save_state(),
            events: self.events.clone(),
            seed: self.seed,
            pending_declined: self.pending_declined.clone(),
            health_due: self.health_due.clone(),
            lr_schedule: self.lr_schedule.clone(),
        }
    }

    /// Restores a saved state into a controller built with the same policy file: the
    /// policy's state, the event history, the random stream of inits, the declined growths
    /// not yet written and the health checks not yet done. On error nothing changes.
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
        load_state_atomically(self.policy.as_mut(), &state.policy)?;
        self.events = state.events.clone();
        self.seed = state.seed;
        self.pending_declined = state.pending_declined.clone();
        self.health_due = state.health_due.clone();
        self.lr_schedule = state.lr_schedule.clone();
        Ok(())
    }
}

impl Drop for GrowthController {
    fn drop(&mut self) {
        // Best effort: a summary still pending is worth writing; an error here has nowhere
        // to go.
        let _ = self.flush();
    }
}
