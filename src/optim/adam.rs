//! Adam and AdamW, with a step count of their own for every growth cohort.

use dfdx::prelude::{Device, Gradients};
use serde::{Deserialize, Serialize};

use super::experimental::{inherit_second_moment, mean_sqrt_v_hat, NewUnitExperiment};
use super::{
    check_hyper, check_weight_decay, host_pass, ModelState, Optimizer, Scratch, WeightDecay,
};
use crate::{GrowError, Params, Real};

/// Which step count drives the bias correction of weights added by a growth.
///
/// Adam divides its moments by `1 - beta^t`. New weights start with zero moments; if they
/// inherit the global `t`, that correction is already about 1, and their first update is about
/// `(1 - beta1) / sqrt(1 - beta2)` = 3.2 x lr (with the default betas) instead of about lr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NewUnitSteps {
    /// Every growth cohort counts its own steps from 1: a new weight's first update is an
    /// ordinary first Adam step. The default.
    #[default]
    Cohort,
    /// New weights share the global step count (the naive zero padding, as MSG and most
    /// PyTorch code do it).
    Global,
}

/// Adam's hyper-parameters (dfdx's `AdamConfig` plus the handling of new weights).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamConfig {
    /// Learning rate. Default `1e-3`.
    pub lr: f64,
    /// Moment decay rates. Default `[0.9, 0.999]`.
    pub betas: [f64; 2],
    /// Added to the root of the second moment. Default `1e-8`.
    pub eps: f64,
    /// Weight decay; `Decoupled` makes this AdamW. Default none.
    pub weight_decay: Option<WeightDecay>,
    /// The step count of new weights. Default [`NewUnitSteps::Cohort`].
    pub new_units: NewUnitSteps,
    /// A learning rate of their own for weights added by a growth, for their first steps.
    /// Default none (every weight uses `lr`).
    #[serde(default)]
    pub new_unit_lr: Option<NewUnitLr>,
    /// EXPERIMENTAL (issue 7): further handling of new weights under study. Default: none.
    #[serde(default)]
    pub new_unit_experiment: NewUnitExperiment,
}

/// A learning-rate multiplier for the weights of a growth cohort during its first `steps`
/// updates, so new units can catch up with units that have trained from the start.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewUnitLr {
    /// The multiplier (> 0).
    pub scale: f64,
    /// For how many of the cohort's updates it applies.
    pub steps: u64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: None,
            new_units: NewUnitSteps::Cohort,
            new_unit_lr: None,
            new_unit_experiment: NewUnitExperiment::default(),
        }
    }
}

/// Adam (or AdamW) whose moments grow with the weights: old entries untouched, new entries
/// zero, each growth cohort with its own step count (see [`NewUnitSteps`]).
#[derive(Clone, Debug)]
pub struct Adam<E> {
    cfg: AdamConfig,
    state: ModelState<E>,
    steps: u64,
    scratch: Scratch<E>,
    /// EXPERIMENTAL: per tensor, the epsilon of each growth cohort (by birth step) when
    /// `new_unit_experiment.eps_rel` is set.
    cohort_eps: Vec<Vec<(u64, f64)>>,
}

impl<E: Real> Adam<E> {
    /// An optimizer with `cfg`, checked (finite non-negative lr, betas in [0, 1), eps > 0,
    /// non-negative weight decay).
    pub fn new(cfg: AdamConfig) -> Result<Self, GrowError> {
        check_hyper("lr", cfg.lr, cfg.lr >= 0.0, "must be finite and >= 0")?;
        for b in cfg.betas {
            check_hyper(
                "betas",
                b,
                (0.0..1.0).contains(&b),
                "each must be in [0, 1)",
            )?;
        }
        check_hyper("eps", cfg.eps, cfg.eps > 0.0, "must be finite and > 0")?;
        check_weight_decay(cfg.weight_decay)?;
        if let Some(n) = cfg.new_unit_lr {
            check_hyper(
                "new_unit_lr.scale",
                n.scale,
                n.scale > 0.0,
                "must be finite and > 0",
            )?;
        }
        if let Some(c) = cfg.new_unit_experiment.eps_rel {
            check_hyper(
                "new_unit_experiment.eps_rel",
                c,
                c > 0.0,
                "must be finite and > 0",
            )?;
        }
        if let Some(eps) = cfg.new_unit_experiment.eps {
            check_hyper(
                "new_unit_experiment.eps",
                eps,
                eps > 0.0,
                "must be finite and > 0",
            )?;
        }
        if cfg.new_unit_experiment.warmup == Some(0) {
            return Err(GrowError::InvalidHyper {
                name: "new_unit_experiment.warmup",
                value: 0.0,
                reason: "must be at least 1 step",
            });
        }
        Ok(Self {
            cfg,
            state: ModelState::default(),
            steps: 0,
            scratch: Scratch::default(),
            cohort_eps: Vec::new(),
        })
    }

    /// AdamW: Adam with decoupled weight decay `wd`.
    pub fn adamw(lr: f64, wd: f64) -> Result<Self, GrowError> {
        Self::new(AdamConfig {
            lr,
            weight_decay: Some(WeightDecay::Decoupled(wd)),
            ..AdamConfig::default()
        })
    }

    /// Resumes from a saved state and step count (see [`crate::checkpoint::Checkpoint`]);
    /// the next [`Optimizer::update`] checks that the state fits the model.
    pub fn with_state(mut self, state: ModelState<E>, steps: u64) -> Self {
        self.state = state;
        self.steps = steps;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &AdamConfig {
        &self.cfg
    }

    /// The moments (buffers 0 and 1) and cohorts of every tensor.
    pub fn state(&self) -> &ModelState<E> {
        &self.state
    }
}

/// Adam on one block of elements sharing a step count: `k` is `[b1, b2, eps, lr, c1, c2]` with
/// `c1`, `c2` the bias corrections. Kept a plain function of values (not a closure reading
/// the configuration through a reference) so that the compiler vectorises the loop: inlined
/// in the update's closure it ran about 5x slower.
#[inline(never)]
fn adam_block<E: Real>(
    p: &mut [E],
    g: &[E],
    m: &mut [E],
    v: &mut [E],
    k: [E; 6],
    weight_decay: Option<WeightDecay>,
    lr_f64: f64,
) {
    let [b1, b2, eps, lr, c1, c2] = k;
    let cast = |x: f64| E::from_f64(x).unwrap_or_else(E::zero);
    let it = p.iter_mut().zip(g).zip(m.iter_mut().zip(v.iter_mut()));
    for ((p, &g), (m, v)) in it {
        // The same operations, in the same order, as dfdx's Adam kernel.
        let mut g = g;
        if let Some(WeightDecay::L2(wd)) = weight_decay {
            g += cast(wd) * *p;
        }
        *m = *m * b1 + g * (E::one() - b1);
        *v = *v * b2 + g.powi(2) * (E::one() - b2);
        let m_hat = *m * c1;
        let v_hat = *v * c2;
        g = lr * m_hat / (v_hat.sqrt() + eps);
        if let Some(WeightDecay::Decoupled(wd)) = weight_decay {
            g += cast(wd * lr_f64) * *p;
        }
        *p -= g;
    }
}

impl<E: Real, D: Device<E>> Optimizer<E, D> for Adam<E> {
    fn sync(&mut self, model: &dyn Params<E, D>) -> Result<(), GrowError> {
        let old: Vec<(usize, usize)> = self.state.tensors.iter().map(|t| t.dims).collect();
        self.state.sync(&model.param_dims(), 2, self.steps)?;
        let exp = self.cfg.new_unit_experiment;
        self.cohort_eps.resize(self.state.tensors.len(), Vec::new());
        let bias2 = 1.0 - self.cfg.betas[1].powi(i32::try_from(self.steps).unwrap_or(i32::MAX));
        for (i, (st, &dims)) in self.state.tensors.iter_mut().zip(&old).enumerate() {
            if dims == st.dims {
                continue;
            }
            if let Some(c) = exp.eps_rel {
                let eps = (c * mean_sqrt_v_hat(st, dims, 1, bias2)).max(self.cfg.eps);
                self.cohort_eps[i].push((self.steps, eps));
            }
            inherit_second_moment(st, dims, 1, exp.moment);
        }
        Ok(())
    }

    fn update(
        &mut self,
        model: &mut dyn Params<E, D>,
        grads: &mut Gradients<E, D>,
    ) -> Result<(), GrowError> {
        Optimizer::<E, D>::sync(self, model)?;
        self.steps += 1;
        let (cfg, now) = (self.cfg, self.steps);
        let cast = |x: f64| E::from_f64(x).unwrap_or_else(E::zero);
        let (b1, b2, eps) = (cast(cfg.betas[0]), cast(cfg.betas[1]), cast(cfg.eps));
        let cohort_eps = &self.cohort_eps;
        let mut tensor = 0;
        host_pass(
            model,
            grads,
            &mut self.state,
            &mut self.scratch,
            |st, p, g| {
                let mut bufs = std::mem::take(&mut st.buffers);
                let (m, v) = bufs.split_at_mut(1);
                let (m, v) = (&mut m[0], &mut v[0]);
                st.for_each_block(|born, ranges| {
                    let t = match cfg.new_units {
                        NewUnitSteps::Cohort => now - born,
                        NewUnitSteps::Global => now,
                    };
                    let t = i32::try_from(t).unwrap_or(i32::MAX);
                    let c1 = (E::one() - b1.powi(t)).recip();
                    let c2 = (E::one() - b2.powi(t)).recip();
                    // Weights added by a growth (born after step 0) may have a boosted rate.
                    let mut lr_f64 = match cfg.new_unit_lr {
                        Some(n) if born > 0 && now - born <= n.steps => cfg.lr * n.scale,
                        _ => cfg.lr,
                    };
                    let exp = cfg.new_unit_experiment;
                    let mut eps = eps;
                    if born > 0 {
                        if let Some(n) = exp.warmup {
                            lr_f64 *= ((now - born) as f64 / n as f64).min(1.0);
                        }
                        if let Some(e) = exp.eps {
                            eps = cast(e);
                        }
                        if let Some(&(_, e)) = cohort_eps
                            .get(tensor)
                            .and_then(|c| c.iter().find(|(b, _)| *b == born))
                        {
                            eps = cast(e);
                        }
                    }
                    let lr = cast(lr_f64);
                    for range in ranges {
                        adam_block(
                            &mut p[range.clone()],
                            &g[range.clone()],
                            &mut m[range.clone()],
                            &mut v[range],
                            [b1, b2, eps, lr, c1, c2],
                            cfg.weight_decay,
                            lr_f64,
                        );
                    }
                });
                st.buffers = bufs;
                tensor += 1;
            },
        )
    }

    fn steps(&self) -> u64 {
        self.steps
    }

    fn lr(&self) -> f64 {
        self.cfg.lr
    }

    fn set_lr(&mut self, lr: f64) -> Result<(), GrowError> {
        check_hyper("lr", lr, lr >= 0.0, "must be finite and >= 0")?;
        self.cfg.lr = lr;
        Ok(())
    }
}
