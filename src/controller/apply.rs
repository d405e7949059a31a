//! Carrying out a decision: every growth of it or none, the probe checked, the memory bound
//! kept.

use dfdx::prelude::Device;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::{GrowthController, Outcome};
use crate::audit::{GrowthEvent, RefusedEvent};
use crate::grow::site::{check_growth, grow_site, grow_site_informed};
use crate::lr::LrSchedule;
use crate::optim::Optimizer;
use crate::policy::{Decision, Growth, Metrics, PolicyError};
use crate::{shrink_perturb, GrowError, Growable, Init, LossProbe, Real};

impl GrowthController {
    /// Checks that every site and block the decision names exists.
    pub(super) fn check_places<E: Real, D: Device<E>, M: Growable<E, D>>(
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

    /// Carries out every growth of `d` or none. The optimizer is only checked here; it is
    /// padded once the records are written.
    pub(super) fn apply<E: Real, D: Device<E>, M: Growable<E, D>>(
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
            count: 1,
            first_step: None,
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
            let after = match self.undo_if_loss_rose(p, model, &backup, before) {
                Ok(after) => after,
                Err(after) => {
                    return Outcome::Undone(refused(
                        format!("the probe loss rose from {before} to {after}"),
                        Some(before),
                        Some(after),
                    ))
                }
            };
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

    /// Measures the probe loss after a change of `model` from `backup`, whose loss was
    /// `before`: `Ok(after)`, or, when it rose past the loss tolerance (a NaN counts as a
    /// rise), `Err(after)` with `backup` put back. Growths and health re-initialisations both
    /// answer to it.
    pub(super) fn undo_if_loss_rose<M: Clone>(
        &self,
        probe: &dyn LossProbe<M>,
        model: &mut M,
        backup: &M,
        before: f64,
    ) -> Result<f64, f64> {
        let after = probe.loss(model);
        let allowed = before + self.loss_tolerance * before.abs().max(1e-12);
        if after.is_nan() || after > allowed {
            *model = backup.clone();
            return Err(after);
        }
        Ok(after)
    }

    pub(super) fn grow_one<E: Real, D: Device<E>, M: Growable<E, D>>(
        &self,
        g: &Growth,
        m: &Metrics,
        model: &mut M,
        opt: &dyn Optimizer<E, D>,
        rng: &mut StdRng,
        probe: Option<&dyn LossProbe<M>>,
    ) -> Result<GrowthEvent, GrowError> {
        let params_before = model.num_params();
        let mut informed = (None, None);
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
                informed = (r.informed, r.init_flops);
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
                // What `deepen` promises: a first layer drawn like a fresh one, an output
                // projection of zero. Its tensors get fresh optimizer state with the kernel's
                // own epsilon (the new-unit epsilon is relative to a tensor's existing
                // entries, and a new block's tensors have none).
                (block, 0, *hidden, Init::ZerosOutFresh, Some(after.clone()))
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
            informed: informed.0,
            init_flops: informed.1,
        })
    }

    /// Refuses a growth whose tensors and optimizer state would pass the memory cap.
    pub(super) fn check_bytes<E>(
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
}
