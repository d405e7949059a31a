//! Stochastic gradient descent with momentum, Nesterov and weight decay.

use dfdx::prelude::{Cpu, Device, Gradients};
use serde::{Deserialize, Serialize};

use super::adaptor::{GrowingOptimizer, Kernel, StepContext, MAX_BUFFERS};
use super::inplace::{sgd_in_place, InPlace};
use super::{check_hyper, check_weight_decay, WeightDecay};
use crate::{GrowError, ParamMut, Real};

/// Momentum, as in dfdx.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Momentum {
    /// `v = g + u v; p -= lr v`.
    Classic(f64),
    /// `v = g + u v; p -= lr (g + u v)`.
    Nesterov(f64),
}

/// SGD's hyper-parameters (the same meaning and defaults as dfdx's `SgdConfig`); also the
/// kernel of [`Sgd`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgdConfig {
    /// Learning rate. Default `1e-2`.
    pub lr: f64,
    /// Momentum. Default none.
    pub momentum: Option<Momentum>,
    /// Weight decay. Default none.
    pub weight_decay: Option<WeightDecay>,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self {
            lr: 1e-2,
            momentum: None,
            weight_decay: None,
        }
    }
}

/// SGD whose velocity grows with the weights (new entries start at zero velocity).
pub type Sgd<E> = GrowingOptimizer<SgdConfig, E>;

impl Kernel for SgdConfig {
    const NAME: &'static str = "sgd";

    fn buffers(&self) -> usize {
        usize::from(self.momentum.is_some())
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Finite, non-negative learning rate; momentum in [0, 1); non-negative weight decay.
    fn check(&self) -> Result<(), GrowError> {
        check_hyper("lr", self.lr, self.lr >= 0.0, "must be finite and >= 0")?;
        if let Some(Momentum::Classic(u) | Momentum::Nesterov(u)) = self.momentum {
            check_hyper("momentum", u, (0.0..1.0).contains(&u), "must be in [0, 1)")?;
        }
        check_weight_decay(self.weight_decay)
    }

    fn constants<E: Real>(&self, ctx: &StepContext) -> [E; 8] {
        let cast = |x: f64| E::from_f64(x).unwrap_or_else(E::zero);
        let (l2, decoupled) = match self.weight_decay {
            Some(WeightDecay::L2(wd)) => (cast(wd), E::zero()),
            Some(WeightDecay::Decoupled(wd)) => (E::zero(), cast(wd * ctx.lr)),
            None => (E::zero(), E::zero()),
        };
        let u = match self.momentum {
            Some(Momentum::Classic(u) | Momentum::Nesterov(u)) => cast(u),
            None => E::zero(),
        };
        let z = E::zero();
        [cast(ctx.lr), u, l2, decoupled, z, z, z, z]
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
        let cfg = SgdConfig {
            lr: ctx.lr,
            ..*self
        };
        let velocity = state.first_mut();
        Some(match param {
            ParamMut::Matrix(w) => sgd_in_place(w, grads, &cfg, velocity, scratch),
            ParamMut::Vector(b) => sgd_in_place(b, grads, &cfg, velocity, scratch),
        })
    }

    #[inline(never)]
    fn update<E: Real>(&self, k: &[E; 8], p: &mut [E], g: &[E], state: [&mut [E]; MAX_BUFFERS]) {
        let [lr, u, l2, decoupled, ..] = *k;
        let has_l2 = matches!(self.weight_decay, Some(WeightDecay::L2(_)));
        let has_decoupled = matches!(self.weight_decay, Some(WeightDecay::Decoupled(_)));
        // The same operations, in the same order, as dfdx's SGD kernel.
        let finish = |p: &mut E, mut g: E| {
            if has_decoupled {
                g += decoupled * *p;
            }
            *p -= g;
        };
        let with_l2 = |p: &E, g: E| if has_l2 { g + l2 * *p } else { g };
        let [vel, _] = state;
        match self.momentum {
            Some(Momentum::Classic(_)) => {
                for ((p, &g), v) in p.iter_mut().zip(g).zip(vel) {
                    let g = with_l2(p, g);
                    *v = g + u * *v;
                    finish(p, *v * lr);
                }
            }
            Some(Momentum::Nesterov(_)) => {
                for ((p, &g), v) in p.iter_mut().zip(g).zip(vel) {
                    let g = with_l2(p, g);
                    *v = g + u * *v;
                    finish(p, (g + u * *v) * lr);
                }
            }
            None => {
                for (p, &g) in p.iter_mut().zip(g) {
                    let g = with_l2(p, g);
                    finish(p, g * lr);
                }
            }
        }
    }
}
