//! Stochastic gradient descent with momentum, Nesterov and weight decay.

use dfdx::prelude::{Device, Gradients};
use serde::{Deserialize, Serialize};

use super::{
    check_hyper, check_weight_decay, host_pass, ModelState, Optimizer, Scratch, WeightDecay,
};
use crate::{GrowError, Params, Real};

/// Momentum, as in dfdx.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Momentum {
    /// `v = g + u v; p -= lr v`.
    Classic(f64),
    /// `v = g + u v; p -= lr (g + u v)`.
    Nesterov(f64),
}

/// SGD's hyper-parameters (the same meaning and defaults as dfdx's `SgdConfig`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
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
#[derive(Clone, Debug)]
pub struct Sgd<E> {
    cfg: SgdConfig,
    state: ModelState<E>,
    steps: u64,
    scratch: Scratch<E>,
}

impl<E: Real> Sgd<E> {
    /// An optimizer with `cfg`, checked (finite, non-negative learning rate; momentum in
    /// [0, 1); non-negative weight decay).
    pub fn new(cfg: SgdConfig) -> Result<Self, GrowError> {
        check_hyper("lr", cfg.lr, cfg.lr >= 0.0, "must be finite and >= 0")?;
        if let Some(Momentum::Classic(u) | Momentum::Nesterov(u)) = cfg.momentum {
            check_hyper("momentum", u, (0.0..1.0).contains(&u), "must be in [0, 1)")?;
        }
        check_weight_decay(cfg.weight_decay)?;
        Ok(Self {
            cfg,
            state: ModelState::default(),
            steps: 0,
            scratch: Scratch::default(),
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
    pub fn config(&self) -> &SgdConfig {
        &self.cfg
    }

    /// The velocity of every tensor (empty before the first update or without momentum).
    pub fn state(&self) -> &ModelState<E> {
        &self.state
    }

    fn buffers(&self) -> usize {
        usize::from(self.cfg.momentum.is_some())
    }
}

/// The SGD update of one tensor, with its velocity when momentum is on. A plain function
/// taking values, so that the compiler vectorises it (as `adam_block`).
#[inline(never)]
fn sgd_block<E: Real>(p: &mut [E], g: &[E], vel: Option<&mut [E]>, cfg: SgdConfig) {
    let cast = |x: f64| E::from_f64(x).unwrap_or_else(E::zero);
    let lr = cast(cfg.lr);
    let l2 = match cfg.weight_decay {
        Some(WeightDecay::L2(wd)) => Some(cast(wd)),
        _ => None,
    };
    let decoupled = match cfg.weight_decay {
        Some(WeightDecay::Decoupled(wd)) => Some(cast(wd * cfg.lr)),
        _ => None,
    };
    // The same operations, in the same order, as dfdx's SGD kernel.
    let finish = |p: &mut E, mut g: E| {
        if let Some(d) = decoupled {
            g += d * *p;
        }
        *p -= g;
    };
    let with_l2 = |p: &E, g: E| l2.map_or(g, |wd| g + wd * *p);
    match (cfg.momentum, vel) {
        (Some(Momentum::Classic(u)), Some(vel)) => {
            let u = cast(u);
            for ((p, &g), v) in p.iter_mut().zip(g).zip(vel) {
                let g = with_l2(p, g);
                *v = g + u * *v;
                finish(p, *v * lr);
            }
        }
        (Some(Momentum::Nesterov(u)), Some(vel)) => {
            let u = cast(u);
            for ((p, &g), v) in p.iter_mut().zip(g).zip(vel) {
                let g = with_l2(p, g);
                *v = g + u * *v;
                finish(p, (g + u * *v) * lr);
            }
        }
        _ => {
            for (p, &g) in p.iter_mut().zip(g) {
                let g = with_l2(p, g);
                finish(p, g * lr);
            }
        }
    }
}

impl<E: Real, D: Device<E>> Optimizer<E, D> for Sgd<E> {
    fn sync(&mut self, model: &dyn Params<E, D>) -> Result<(), GrowError> {
        let n = self.buffers();
        self.state.sync(&model.param_dims(), n, self.steps)
    }

    fn update(
        &mut self,
        model: &mut dyn Params<E, D>,
        grads: &mut Gradients<E, D>,
    ) -> Result<(), GrowError> {
        Optimizer::<E, D>::sync(self, model)?;
        self.steps += 1;
        let cfg = self.cfg;
        host_pass(
            model,
            grads,
            &mut self.state,
            &mut self.scratch,
            |st, p, g| sgd_block(p, g, st.buffers.first_mut().map(Vec::as_mut_slice), cfg),
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
