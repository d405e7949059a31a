//! Optimizers whose state grows with the weights.
//!
//! dfdx 0.13's optimizers keep their state private and keyed by tensor id, so they cannot
//! follow a tensor that was replaced by a larger one. These keep their state in the order of
//! the model's parameter walk ([`crate::Params`]) and pad it when a tensor grows: old entries
//! untouched, new entries zero. Before any growth they compute exactly what dfdx's `Sgd` and
//! `Adam` compute (the same operations in the same order).

mod adam;
pub mod experimental;
mod sgd;
mod state;

pub use adam::{Adam, AdamConfig, NewUnitLr, NewUnitSteps};
pub use sgd::{Momentum, Sgd, SgdConfig};
pub use state::{Cohort, ModelState, TensorState};

use dfdx::prelude::{Device, Gradients};
use serde::{Deserialize, Serialize};

use crate::{GrowError, Params, Real};

/// Weight decay, as in dfdx.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum WeightDecay {
    /// Adds `wd * param` to the gradient (classic L2).
    L2(f64),
    /// Subtracts `lr * wd * param` from the parameter after the update (AdamW).
    Decoupled(f64),
}

/// An optimizer that follows its model through growth.
pub trait Optimizer<E: Real, D: Device<E>> {
    /// Makes the state follow `model`: pads the state of grown tensors (new entries zero and,
    /// for Adam, their own step count). [`Optimizer::update`] does this first, so calling it
    /// is only needed to check a model early. On error the state is unchanged.
    fn sync(&mut self, model: &dyn Params<E, D>) -> Result<(), GrowError>;

    /// Updates every parameter of `model` from `grads`; a parameter missing from `grads` is
    /// updated with a zero gradient.
    fn update(
        &mut self,
        model: &mut dyn Params<E, D>,
        grads: &mut Gradients<E, D>,
    ) -> Result<(), GrowError>;

    /// The number of updates done so far.
    fn steps(&self) -> u64;

    /// The learning rate in force.
    fn lr(&self) -> f64;

    /// Changes the learning rate (for schedules).
    fn set_lr(&mut self, lr: f64) -> Result<(), GrowError>;
}

pub(crate) fn check_hyper(
    name: &'static str,
    value: f64,
    ok: bool,
    reason: &'static str,
) -> Result<(), GrowError> {
    if ok && value.is_finite() {
        Ok(())
    } else {
        Err(GrowError::InvalidHyper {
            name,
            value,
            reason,
        })
    }
}

pub(crate) fn check_weight_decay(wd: Option<WeightDecay>) -> Result<(), GrowError> {
    match wd {
        Some(WeightDecay::L2(w)) | Some(WeightDecay::Decoupled(w)) => {
            check_hyper("weight_decay", w, w >= 0.0, "must be finite and >= 0")
        }
        None => Ok(()),
    }
}

/// Scratch space for one host-side update pass.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scratch<E> {
    param: Vec<E>,
    grad: Vec<E>,
}

/// Runs `kernel(state, param, grad)` on every tensor of `model`, on host copies, and writes the
/// parameters back in place (they keep their ids).
pub(crate) fn host_pass<E: Real, D: Device<E>>(
    model: &mut dyn Params<E, D>,
    grads: &mut Gradients<E, D>,
    state: &mut ModelState<E>,
    scratch: &mut Scratch<E>,
    mut kernel: impl FnMut(&mut TensorState<E>, &mut [E], &[E]),
) -> Result<(), GrowError> {
    let mut result = Ok(());
    let mut i = 0;
    model.visit_mut(&mut |mut p| {
        if result.is_err() {
            return;
        }
        let n = p.as_ref().len();
        scratch.param.resize(n, E::zero());
        p.as_ref().copy_into(&mut scratch.param);
        let grad = match p.as_ref().host_grad(grads, &mut scratch.grad) {
            Ok(g) => g,
            Err(e) => {
                result = Err(e);
                return;
            }
        };
        kernel(&mut state.tensors[i], &mut scratch.param, grad);
        p.copy_from(&scratch.param);
        i += 1;
    });
    result
}
