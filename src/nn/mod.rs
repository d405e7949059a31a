//! Layers and models whose widths are decided at run time, so they can grow: a linear layer,
//! a convolution, and three models built from them (an MLP, a residual MLP that also grows in
//! depth, a CNN), each a [`crate::Growable`].

pub(crate) mod activation;
pub(crate) mod affine;
pub(crate) mod cnn;
pub(crate) mod conv;
pub(crate) mod data_input;
pub(crate) mod linear;
pub(crate) mod loss;
pub(crate) mod mlp;
pub(crate) mod resmlp;

pub use activation::Activation;
pub use cnn::{Cnn, CnnSpec, ConvSpec};
pub use conv::{flatten, Conv2d, FlatLinear, Images};
pub use data_input::Data;
pub use linear::Linear;
pub use loss::Loss;
pub use mlp::{Mlp, MlpSpec, Probe};
pub use resmlp::{Block, ResMlp, ResMlpSpec};

use dfdx::prelude::{HasShape, Shape, Storage, Tensor};

/// A tensor's elements on the host, row-major. dfdx 0.13's `as_vec` indexes past the end of
/// a tensor with no elements (a 0-wide layer of a user's model), so this answers that case
/// itself.
pub(crate) fn host_vec<S: Shape, E, D: Storage<E>, T>(t: &Tensor<S, E, D, T>) -> Vec<E> {
    if t.shape().num_elements() == 0 {
        return Vec::new();
    }
    t.as_vec()
}
