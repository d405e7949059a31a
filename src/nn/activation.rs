//! The element-wise non-linearity between linear layers.

use dfdx::prelude::{Device, Dtype, Shape, Tape, Tensor};
use serde::{Deserialize, Serialize};

/// The activation applied after every hidden layer of an [`crate::Mlp`].
///
/// Every variant maps 0 to 0 except [`Activation::Sigmoid`] (sigmoid(0) = 1/2), which matters for
/// the rejected [`crate::Init::ZerosBoth`]: with sigmoid the new units still receive a gradient
/// through their fan-out, but stay identical to each other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// `max(0, x)`.
    #[default]
    Relu,
    /// `tanh(x)`.
    Tanh,
    /// The exact (erf) GELU, as PyTorch's default `nn.GELU`.
    Gelu,
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// No non-linearity.
    Identity,
}

impl Activation {
    /// All variants, for tests and sweeps.
    pub const ALL: [Activation; 5] = [
        Activation::Relu,
        Activation::Tanh,
        Activation::Gelu,
        Activation::Sigmoid,
        Activation::Identity,
    ];

    /// Applies the activation to a (possibly traced) tensor.
    pub fn try_apply<S: Shape, E: Dtype, D: Device<E>, T: Tape<E, D>>(
        self,
        x: Tensor<S, E, D, T>,
    ) -> Result<Tensor<S, E, D, T>, D::Err> {
        match self {
            Activation::Relu => x.try_relu(),
            Activation::Tanh => x.try_tanh(),
            Activation::Gelu => x.try_accurate_gelu(),
            Activation::Sigmoid => x.try_sigmoid(),
            Activation::Identity => Ok(x),
        }
    }

    /// Whether a unit with pre-activation `z` is active, i.e. passes a gradient worth the
    /// name: `z > 0` for ReLU and GELU (GELU's slope is below 0.1 for `z < -1.5` and
    /// vanishes further left, but a unit must be on somewhere to count), `|z| < 3` for tanh
    /// and `|z| < 6` for sigmoid (outside, the slope is below 0.01), always for identity.
    pub fn is_active(self, z: f64) -> bool {
        match self {
            Activation::Relu | Activation::Gelu => z > 0.0,
            Activation::Tanh => z.abs() < 3.0,
            Activation::Sigmoid => z.abs() < 6.0,
            Activation::Identity => !z.is_nan(),
        }
    }

    /// Whether a unit that [`Activation::is_active`] calls inactive outputs exactly zero
    /// (ReLU: `relu(z) = 0` for `z <= 0`). Only then does a unit inactive on every example of
    /// a batch add nothing on it, so that re-initialising it leaves the function unchanged on
    /// that batch. Not for tanh, sigmoid or GELU: their inactive units saturate at values
    /// other than zero (about +-1; 0 or 1; down to -0.17), which their fan-out carries on.
    pub fn zero_when_inactive(self) -> bool {
        matches!(self, Activation::Relu)
    }

    /// The activation's value at 0.
    pub fn at_zero(self) -> f64 {
        match self {
            Activation::Sigmoid => 0.5,
            _ => 0.0,
        }
    }
}
