//! Layers and models whose widths are decided at run time, so they can grow: a linear layer,
//! a convolution, and three models built from them (an MLP, a residual MLP that also grows in
//! depth, a CNN), each a [`crate::Growable`].

pub(crate) mod activation;
pub(crate) mod affine;
pub(crate) mod cnn;
pub(crate) mod conv;
pub(crate) mod data_input;
pub(crate) mod gemm;
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

use std::any::Any;

use dfdx::prelude::{Cpu, Dtype, HasShape, Shape, Storage, Tensor, Unit};

/// A tensor's elements on the host, row-major. On the CPU a tensor laid out row-major (every
/// parameter the crate makes, every output of dfdx's ops) is one memcpy; dfdx's `as_vec`
/// walks any layout an element at a time, 5-10x slower, and is left for the others (a
/// permuted or broadcast view, other devices). dfdx 0.13's `as_vec` also indexes past the
/// end of a tensor with no elements (a 0-wide layer of a user's model), so this answers that
/// case itself.
pub(crate) fn host_vec<S: Shape, E: Unit, D: Storage<E>, T: 'static>(
    t: &Tensor<S, E, D, T>,
) -> Vec<E> {
    let n = t.shape().num_elements();
    if n == 0 {
        return Vec::new();
    }
    if let Some(t) = (t as &dyn Any).downcast_ref::<Tensor<S, E, Cpu, T>>() {
        if cpu_steps(t) == t.shape().strides() {
            let mut v = vec![E::default(); n];
            t.copy_into(&mut v);
            return v;
        }
    }
    t.as_vec()
}

/// How far apart, in elements, a CPU tensor's neighbours along each axis lie in its storage
/// (an axis of size 1 reads as row-major). dfdx 0.13 keeps a tensor's strides to itself; they
/// are read off the addresses of neighbouring elements, none of which is read.
pub(crate) fn cpu_steps<S: Shape, E: Unit, T>(t: &Tensor<S, E, Cpu, T>) -> S::Concrete {
    let shape = t.shape().concrete();
    let mut steps = t.shape().strides();
    if t.shape().num_elements() == 0 {
        return steps;
    }
    let origin = S::Concrete::default();
    let base = std::ptr::from_ref(&t[origin]) as usize;
    for axis in 0..S::NUM_DIMS {
        if shape[axis] > 1 {
            let mut next = origin;
            next[axis] = 1;
            let at = std::ptr::from_ref(&t[next]) as usize;
            steps[axis] = at.wrapping_sub(base) / std::mem::size_of::<E>().max(1);
        }
    }
    steps
}

/// A storage vector of `D`, which the caller has checked is `Cpu`, as the `Vec` it then is.
pub(crate) fn cpu_vec<E: Dtype, D: Storage<E>>(v: &mut D::Vec) -> &mut Vec<E> {
    match (v as &mut dyn Any).downcast_mut::<<Cpu as Storage<E>>::Vec>() {
        Some(v) => v,
        None => unreachable!("the gemm path runs on the Cpu device only"),
    }
}
