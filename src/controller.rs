//! The growth controller: the one object a training loop holds.

use dfdx::prelude::{Device, Gradients};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::audit::{AuditError, AuditLog, GrowthEvent};
use crate::optim::Optimizer;
use crate::policy::{Decision, Declined, GrowthPolicy, Metrics, PolicyError};
use crate::{ExpansionReport, GrowError, Mlp, Params, Probe, Real};

/// Why the controller did not carry out a decision, or could not record it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControllerError {
    /// The policy asked for a growth the model refuses (model and optimizer unchanged).
    #[error("{policy} asked for a growth that was refused: {source}")]
    Refused {
        /// Which policy decided.
        policy: String,
        /// Why the model refused.
        source: GrowError,
    },
    /// The probe loss went up by more than the tolerance; the growth was undone.
    #[error("{policy}: growth undone, the probe loss rose from {before} to {after}")]
    LossRose {
        /// Which policy decided.
        policy: String,
        /// Probe loss before.
        before: f64,
        /// Probe loss after.
        after: f64,
    },
    /// Writing the audit log failed (the growth itself was carried out).
    #[error("audit log: {0}")]
    Audit(#[from] AuditError),
    /// Saving or restoring the policy's state failed.
    #[error("policy state: {0}")]
    Policy(#[from] PolicyError),
}

/// What a resumed run needs to decide exactly as an uninterrupted one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControllerState {
    /// The policy's running state.
    pub policy: serde_json::Value,
    /// Growth events so far.
    pub events: Vec<GrowthEvent>,
    /// The seed of the inits' random streams.
    pub seed: u64,
}

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
///     "Schedule(events: [(at: Step(10), target: Layer(0), size: Fixed(8), init: ZerosOut)])",
///     "inline",
/// ).unwrap();
/// let mut ctl = GrowthController::new(policy, 42);
/// for step in 0..20 {
///     // ... forward, backward, opt.update(&mut mlp, &mut grads) ...
///     let m = GrowthController::metrics(&mlp, step, 0, 1.0, None, None, 0.0).unwrap();
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
        }
    }

    /// Records every growth (and declined decisions, at the log's rate) in `log`.
    pub fn with_audit(mut self, log: AuditLog) -> Self {
        self.audit = Some(log);
        self
    }

    /// The relative rise of the probe loss past which a growth is undone. Default `1e-6`.
    pub fn with_loss_tolerance(mut self, rel: f64) -> Self {
        self.loss_tolerance = rel;
        self
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

    /// Metrics describing `mlp` now, with the per-hidden-layer gradient norms taken from
    /// `grads` when given.
    #[allow(clippy::too_many_arguments)]
    pub fn metrics<E: Real, D: Device<E>>(
        mlp: &Mlp<E, D>,
        step: u64,
        epoch: u64,
        train_loss: f64,
        val_loss: Option<f64>,
        grads: Option<&mut Gradients<E, D>>,
        flops: f64,
    ) -> Result<Metrics, GrowError> {
        let widths = mlp.widths();
        let grad_norms = match grads {
            Some(g) => mlp.hidden_grad_norms(g)?,
            None => Vec::new(),
        };
        Ok(Metrics {
            step,
            epoch,
            train_loss,
            val_loss,
            grad_norms,
            widths: widths[1..widths.len() - 1].to_vec(),
            input_dim: widths[0],
            output_dim: widths[widths.len() - 1],
            params: mlp.num_params(),
            flops,
        })
    }

    /// Shows `m` to the policy; when it decides, grows `mlp`, pads `opt`'s state, checks the
    /// loss on `probe` (when given), records and returns the growth events.
    ///
    /// A refused or undone decision leaves the model and the optimizer exactly as they were,
    /// is reported to the policy (so it does not count as a growth) and returned as an error;
    /// training can go on.
    pub fn observe<E: Real, D: Device<E>>(
        &mut self,
        m: &Metrics,
        mlp: &mut Mlp<E, D>,
        opt: &mut dyn Optimizer<E, D>,
        probe: Option<&Probe<E, D>>,
    ) -> Result<Vec<GrowthEvent>, ControllerError> {
        let decision = self.policy.observe(m);
        for d in self.policy.take_declined() {
            self.log_declined(&d)?;
        }
        let Some(decision) = decision else {
            return Ok(Vec::new());
        };
        match self.apply(&decision, m, mlp, opt, probe) {
            Ok(events) => {
                self.policy.on_growth(&decision);
                for e in &events {
                    if let Some(log) = &mut self.audit {
                        log.growth(e.clone())?;
                    }
                }
                self.events.extend(events.iter().cloned());
                Ok(events)
            }
            Err(err) => {
                let why = err.to_string();
                self.policy.on_refused(&decision, &why);
                self.log_declined(&Declined {
                    step: m.step,
                    epoch: m.epoch,
                    policy: decision.policy.clone(),
                    why,
                    growths: decision.growths.clone(),
                })?;
                Err(err)
            }
        }
    }

    fn log_declined(&mut self, d: &Declined) -> Result<(), ControllerError> {
        if let Some(log) = &mut self.audit {
            log.declined(d)?;
        }
        Ok(())
    }

    /// Carries out every growth of `d`, or none.
    fn apply<E: Real, D: Device<E>>(
        &mut self,
        d: &Decision,
        m: &Metrics,
        mlp: &mut Mlp<E, D>,
        opt: &mut dyn Optimizer<E, D>,
        probe: Option<&Probe<E, D>>,
    ) -> Result<Vec<GrowthEvent>, ControllerError> {
        let refused = |source| ControllerError::Refused {
            policy: d.policy.clone(),
            source,
        };
        // Each decision draws from its own stream, derived from the seed and the number of
        // growths so far, so a resumed run samples the same new weights as one that never
        // stopped.
        let mut rng = StdRng::seed_from_u64(
            self.seed ^ (self.events.len() as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let backup = mlp.clone();
        let mut reports: Vec<ExpansionReport> = Vec::new();
        for g in &d.growths {
            let report = match probe {
                Some(p) => mlp.expand_hidden_probed(g.layer, g.k, &g.init, &mut rng, p),
                None => mlp.expand_hidden(g.layer, g.k, &g.init, &mut rng),
            };
            match report {
                Ok(r) => reports.push(r),
                Err(e) => {
                    *mlp = backup;
                    return Err(refused(e));
                }
            }
        }
        if let (Some(first), Some(last)) = (reports.first(), reports.last()) {
            if let (Some(before), Some(after)) = (first.loss_before, last.loss_after) {
                // A NaN loss after growth counts as a rise.
                let allowed = before + self.loss_tolerance * before.abs().max(1e-12);
                if after.is_nan() || after > allowed {
                    *mlp = backup;
                    return Err(ControllerError::LossRose {
                        policy: d.policy.clone(),
                        before,
                        after,
                    });
                }
            }
        }
        if let Err(e) = opt.sync(mlp) {
            *mlp = backup;
            return Err(refused(e));
        }
        Ok(reports
            .into_iter()
            .map(|r| GrowthEvent {
                step: m.step,
                epoch: m.epoch,
                layer: r.layer,
                old_width: r.old_width,
                new_width: r.new_width,
                init: r.init,
                policy: d.policy.clone(),
                reason: d.reason.clone(),
                evidence: d.evidence.clone(),
                params_before: r.params_before,
                params_after: r.params_after,
                loss_before: r.loss_before,
                loss_after: r.loss_after,
                flops: m.flops,
            })
            .collect())
    }

    /// The state to save for a resumed run (see [`GrowthController::restore`]).
    pub fn state(&self) -> ControllerState {
        ControllerState {
            policy: self.policy.save_state(),
            events: self.events.clone(),
            seed: self.seed,
        }
    }

    /// Restores a saved state into a controller built with the same policy file: the
    /// policy's state, the event history and the random stream of inits.
    pub fn restore(&mut self, state: &ControllerState) -> Result<(), ControllerError> {
        self.policy.load_state(&state.policy)?;
        self.events = state.events.clone();
        self.seed = state.seed;
        Ok(())
    }
}
