//! Adam and AdamW, with a step count of their own for every growth cohort.

use dfdx::prelude::{Cpu, Device, Gradients};
use serde::{Deserialize, Serialize};

use super::adaptor::{GrowingOptimizer, Kernel, StepContext, MAX_BUFFERS};
use super::inplace::{adam_in_place, InPlace};
use super::state::TensorState;
use super::{check_hyper, check_weight_decay, WeightDecay};
use crate::params::lane_sum;
use crate::{GrowError, ParamMut, Real};

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

/// Adam's hyper-parameters (dfdx's `AdamConfig` plus the handling of new weights); also the
/// kernel of [`Adam`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// The epsilon of weights added by a growth, relative to the existing weights' update
    /// scale: a growth at step `T` gives its new entries `eps_new = max(eps, new_unit_eps *
    /// mean over the tensor's existing entries of sqrt(v_hat))`, with `v_hat` Adam's
    /// bias-corrected second moment. A new unit's gradients are tiny (its fan-out starts at
    /// zero) and all of one sign when its inputs are non-negative; with the plain `eps` Adam
    /// turns them into full-size steps that push most new units below zero for good. The
    /// cohort keeps this epsilon for every later update, not only its first: that keeps its
    /// first steps in proportion to its gradients, and costs little later, because the
    /// epsilon is fixed while the cohort's own `sqrt(v_hat)` grows as it learns. `0` gives
    /// every weight `eps` (the behaviour before). Default `0.03`.
    #[serde(default = "default_new_unit_eps")]
    pub new_unit_eps: f64,
}

fn default_new_unit_eps() -> f64 {
    0.03
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: None,
            new_units: NewUnitSteps::Cohort,
            new_unit_eps: default_new_unit_eps(),
        }
    }
}

/// Adam (or AdamW) whose moments grow with the weights: old entries untouched, new entries
/// zero, each growth cohort with its own step count (see [`NewUnitSteps`]).
pub type Adam<E> = GrowingOptimizer<AdamConfig, E>;

impl<E: Real> Adam<E>
where
    Cpu: Device<E>,
{
    /// AdamW: Adam with decoupled weight decay `wd`.
    pub fn adamw(lr: f64, wd: f64) -> Result<Self, GrowError> {
        Self::new(AdamConfig {
            lr,
            weight_decay: Some(WeightDecay::Decoupled(wd)),
            ..AdamConfig::default()
        })
    }
}

impl Kernel for AdamConfig {
    const NAME: &'static str = "adam";

    fn buffers(&self) -> usize {
        2
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Finite non-negative lr, betas in [0, 1), eps > 0, non-negative weight decay.
    fn check(&self) -> Result<(), GrowError> {
        check_hyper("lr", self.lr, self.lr >= 0.0, "must be finite and >= 0")?;
        for b in self.betas {
            check_hyper(
                "betas",
                b,
                (0.0..1.0).contains(&b),
                "each must be in [0, 1)",
            )?;
        }
        check_hyper("eps", self.eps, self.eps > 0.0, "must be finite and > 0")?;
        check_hyper(
            "new_unit_eps",
            self.new_unit_eps,
            self.new_unit_eps >= 0.0,
            "must be finite and >= 0",
        )?;
        check_weight_decay(self.weight_decay)
    }

    fn constants<E: Real>(&self, ctx: &StepContext) -> [E; 8] {
        let cast = |x: f64| E::from_f64(x).unwrap_or_else(E::zero);
        let (b1, b2) = (cast(self.betas[0]), cast(self.betas[1]));
        let t = match self.new_units {
            NewUnitSteps::Cohort => ctx.t,
            NewUnitSteps::Global => ctx.global_t,
        };
        let t = i32::try_from(t).unwrap_or(i32::MAX);
        let (l2, decoupled) = match self.weight_decay {
            Some(WeightDecay::L2(wd)) => (cast(wd), E::zero()),
            Some(WeightDecay::Decoupled(wd)) => (E::zero(), cast(wd * ctx.lr)),
            None => (E::zero(), E::zero()),
        };
        [
            b1,
            b2,
            cast(ctx.eps.unwrap_or(self.eps)),
            cast(ctx.lr),
            (E::one() - b1.powi(t)).recip(),
            (E::one() - b2.powi(t)).recip(),
            l2,
            decoupled,
        ]
    }

    fn new_cohort_eps<E: Real>(&self, old: &TensorState<E>, now: u64) -> Option<f64> {
        if self.new_unit_eps == 0.0 || now == 0 {
            return None;
        }
        // The mean bias-corrected root second moment of the existing entries, each block with
        // its own step count (as its updates use).
        let v = old.buffers.get(1)?;
        let b2 = self.betas[1];
        let (mut sum, mut n) = (0.0, 0usize);
        old.for_each_block(|born, _, ranges| {
            let t = match self.new_units {
                NewUnitSteps::Cohort => now - born,
                NewUnitSteps::Global => now,
            };
            let c2 = 1.0 - b2.powi(i32::try_from(t).unwrap_or(i32::MAX));
            for r in ranges {
                let run = &v[r];
                n += run.len();
                // sqrt(v / c2) summed as sqrt(v) / sqrt(c2): one pass near memory speed (a
                // growth's padding should cost about a copy).
                if t > 0 && c2 > 0.0 {
                    sum += lane_sum(run, |v: E| v.sqrt()) / c2.sqrt();
                }
            }
        });
        let rel = self.new_unit_eps * sum / n.max(1) as f64;
        Some(self.eps.max(rel)).filter(|e| e.is_finite())
    }

    fn update_in_place<E: Real, D: Device<E>>(
        &self,
        param: &mut ParamMut<'_, E, D>,
        grads: &mut Gradients<E, D>,
        state: &mut [Vec<E>],
        ctx: &StepContext,
        scratch: &mut InPlace<E>,
    ) -> Option<Result<(), GrowError>>
    where
        Cpu: Device<E>,
    {
        let t = match self.new_units {
            NewUnitSteps::Cohort => ctx.t,
            NewUnitSteps::Global => ctx.global_t,
        };
        let t = i32::try_from(t).unwrap_or(i32::MAX);
        let cfg = AdamConfig {
            lr: ctx.lr,
            eps: ctx.eps.unwrap_or(self.eps),
            ..*self
        };
        let [m, v] = state else {
            return Some(Err(GrowError::StateMismatch(
                "Adam keeps two moments".into(),
            )));
        };
        Some(match param {
            ParamMut::Matrix(w) => adam_in_place(w, grads, &cfg, t, (m, v), scratch),
            ParamMut::Vector(b) => adam_in_place(b, grads, &cfg, t, (m, v), scratch),
        })
    }

    #[inline(never)]
    fn update<E: Real>(&self, k: &[E; 8], p: &mut [E], g: &[E], state: [&mut [E]; MAX_BUFFERS]) {
        let [b1, b2, eps, lr, c1, c2, l2, decoupled] = *k;
        let [m, v] = state;
        let has_l2 = matches!(self.weight_decay, Some(WeightDecay::L2(_)));
        let has_decoupled = matches!(self.weight_decay, Some(WeightDecay::Decoupled(_)));
        let it = p.iter_mut().zip(g).zip(m.iter_mut().zip(v.iter_mut()));
        for ((p, &g), (m, v)) in it {
            // The same operations, in the same order, as dfdx's Adam kernel.
            let mut g = g;
            if has_l2 {
                g += l2 * *p;
            }
            *m = *m * b1 + g * (E::one() - b1);
            *v = *v * b2 + g.powi(2) * (E::one() - b2);
            let m_hat = *m * c1;
            let v_hat = *v * c2;
            g = lr * m_hat / (v_hat.sqrt() + eps);
            if has_decoupled {
                g += decoupled * *p;
            }
            *p -= g;
        }
    }
}
