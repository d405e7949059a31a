//! The losses used by probes, examples and tests.

use dfdx::losses::{cross_entropy_with_logits_loss, mse_loss};
use dfdx::prelude::{Device, Rank0, Tape, Tensor};
use serde::{Deserialize, Serialize};

use crate::{Matrix, Real};

/// A loss between a model's output and a target of the same shape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Loss {
    /// Softmax cross-entropy; the target holds class probabilities (one-hot for labels).
    #[default]
    CrossEntropy,
    /// Mean squared error.
    Mse,
}

impl Loss {
    /// The loss as a (possibly traced) scalar tensor.
    pub fn apply<E: Real, D: Device<E>, T: Tape<E, D>>(
        self,
        output: Tensor<(usize, usize), E, D, T>,
        target: Matrix<E, D>,
    ) -> Tensor<Rank0, E, D, T> {
        match self {
            Loss::CrossEntropy => cross_entropy_with_logits_loss(output, target),
            Loss::Mse => mse_loss(output, target),
        }
    }

    /// The loss's value.
    pub fn value<E: Real, D: Device<E>>(self, output: Matrix<E, D>, target: &Matrix<E, D>) -> f64 {
        let loss = self.apply(output, target.clone()).as_vec();
        loss.first().and_then(|l| l.to_f64()).unwrap_or(f64::NAN)
    }
}
