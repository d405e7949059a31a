//! Optimizers whose state grows with the weights.
//!
//! dfdx 0.13's optimizers keep their state private and keyed by tensor id, so they cannot
//! follow a tensor that was replaced by a larger one. These keep their state by the tensor
//! names of the model's parameter walk ([`crate::Params`]) and pad it when a tensor grows: old
//! entries untouched, new entries zero. Before any growth they compute exactly what dfdx's
//! `Sgd` and `Adam` compute (the same operations in the same order).
//!
//! One adaptor, [`GrowingOptimizer`], owns the state, the pass over the parameters and the
//! accessors; each optimizer is only its element [`Kernel`] ([`AdamConfig`], [`SgdConfig`]).

mod adam;
mod adaptor;
mod inplace;
mod saved;
mod sgd;
mod state;

pub use adam::{Adam, AdamConfig, NewUnitSteps};
pub use adaptor::{GrowingOptimizer, Kernel, NewUnitLr, StepContext, MAX_BUFFERS};
pub use inplace::{adam_in_place, sgd_in_place, InPlace};
pub use saved::{SavedState, SavedTensor};
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
    /// for Adam, their own step count) and gives new tensors fresh state.
    /// [`Optimizer::update`] does this first, so calling it is only needed to check a model
    /// early. On error the state is unchanged.
    fn sync(&mut self, model: &dyn Params<E, D>) -> Result<(), GrowError>;

    /// Every check of [`Optimizer::sync`], changing nothing.
    fn check_sync(&self, model: &dyn Params<E, D>) -> Result<(), GrowError>;

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

    /// How many state values the optimizer keeps per parameter (for memory estimates).
    fn state_buffers(&self) -> usize {
        2
    }

    /// The state to save: the kernel's name, the step count, the learning rate and every
    /// tensor's buffers and cohorts, by name.
    fn save_state(&self) -> SavedState;

    /// Restores a saved state, checked against `model` (every tensor by name and size, the
    /// kernel's name, buffer sizes, cohort ranges and births) before anything changes.
    fn load_state(&mut self, saved: &SavedState, model: &dyn Params<E, D>)
        -> Result<(), GrowError>;

    /// Every check of [`Optimizer::renew`], changing nothing. Default: an error, the
    /// optimizer cannot renew state.
    fn check_renew(&self, model: &dyn Params<E, D>, parts: &[Renewal]) -> Result<(), GrowError> {
        let _ = (model, parts);
        Err(GrowError::StateMismatch(
            "this optimizer cannot give entries fresh state".into(),
        ))
    }

    /// Gives the listed rows and columns of each named tensor of `model` fresh state, as a
    /// growth gives the entries it adds: zero buffers, born now (so they count their own
    /// steps from the next update, get any new-unit learning rate, and Adam's new-unit
    /// epsilon). For units re-initialised in place (the controller's health check). The
    /// state follows `model` first ([`Optimizer::sync`]). All or nothing: on error the state
    /// is unchanged. Default: an error, as [`Optimizer::check_renew`].
    fn renew(&mut self, model: &dyn Params<E, D>, parts: &[Renewal]) -> Result<(), GrowError> {
        self.check_renew(model, parts)
    }
}

/// Rows and columns of one named tensor to give fresh optimizer state
/// ([`Optimizer::renew`]): a re-initialised unit's fan-in is a row of its producer's weight
/// (and of its bias), its fan-out a column (or a group of columns) of each consumer's weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Renewal {
    /// The tensor's name in the model's parameter walk.
    pub tensor: String,
    /// Rows whose every entry gets fresh state.
    pub rows: Vec<usize>,
    /// Columns whose every entry gets fresh state.
    pub cols: Vec<usize>,
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
