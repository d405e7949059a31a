//! Walking a model's trainable tensors: the crate's stand-in for dfdx's `TensorCollection`,
//! which cannot hold runtime-sized tensors.

use std::any::{Any, TypeId};

use dfdx::prelude::{Cpu, Device, Dtype, Gradients, HasShape, Shape, Tensor};

use crate::GrowError;

/// A runtime-sized weight matrix (rows x columns, row-major).
pub type Matrix<E, D> = Tensor<(usize, usize), E, D>;
/// A runtime-sized vector (a bias).
pub type Vector<E, D> = Tensor<(usize,), E, D>;

/// A shared view of one trainable tensor.
#[derive(Debug)]
pub enum ParamRef<'a, E: Dtype, D: Device<E>> {
    /// A weight matrix.
    Matrix(&'a Matrix<E, D>),
    /// A bias vector.
    Vector(&'a Vector<E, D>),
}

/// A mutable view of one trainable tensor.
#[derive(Debug)]
pub enum ParamMut<'a, E: Dtype, D: Device<E>> {
    /// A weight matrix.
    Matrix(&'a mut Matrix<E, D>),
    /// A bias vector.
    Vector(&'a mut Vector<E, D>),
}

impl<E: Dtype, D: Device<E>> ParamRef<'_, E, D> {
    /// `(rows, columns)`; a vector of n entries is `(n, 1)`.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            ParamRef::Matrix(t) => *t.shape(),
            ParamRef::Vector(t) => (t.shape().0, 1),
        }
    }

    /// The number of scalars.
    pub fn len(&self) -> usize {
        let (r, c) = self.dims();
        r * c
    }

    /// Whether the tensor holds no scalar.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies the values into `dst` (row-major), which must have [`Self::len`] entries.
    pub fn copy_into(&self, dst: &mut [E]) {
        match self {
            ParamRef::Matrix(t) => t.copy_into(dst),
            ParamRef::Vector(t) => t.copy_into(dst),
        }
    }

    /// Copies this tensor's gradient into `dst`; a tensor missing from `grads` gets zeros.
    pub fn grad_into(&self, grads: &mut Gradients<E, D>, dst: &mut [E]) -> Result<(), GrowError> {
        let on_cpu = match self {
            ParamRef::Matrix(t) => cpu_grad(grads, *t)?,
            ParamRef::Vector(t) => cpu_grad(grads, *t)?,
        };
        if let Some(g) = on_cpu {
            dst.copy_from_slice(g);
            return Ok(());
        }
        match self {
            ParamRef::Matrix(t) => {
                grads.try_alloc_for(*t).map_err(GrowError::device)?;
                grads.get(*t).copy_into(dst);
            }
            ParamRef::Vector(t) => {
                grads.try_alloc_for(*t).map_err(GrowError::device)?;
                grads.get(*t).copy_into(dst);
            }
        }
        Ok(())
    }

    /// This tensor's gradient as a host slice: borrowed in place on the CPU device (where
    /// `Gradients::get` would clone the whole buffer), copied into `scratch` elsewhere. A
    /// tensor missing from `grads` gets zeros.
    pub(crate) fn host_grad<'g>(
        &self,
        grads: &'g mut Gradients<E, D>,
        scratch: &'g mut Vec<E>,
    ) -> Result<&'g [E], GrowError> {
        if TypeId::of::<D>() == TypeId::of::<Cpu>() {
            let g = match self {
                ParamRef::Matrix(t) => cpu_grad(grads, *t)?,
                ParamRef::Vector(t) => cpu_grad(grads, *t)?,
            };
            return Ok(g.unwrap_or_default());
        }
        scratch.clear();
        scratch.resize(self.len(), E::default());
        self.grad_into(grads, scratch)?;
        Ok(scratch)
    }

    fn alloc_grad(&self, grads: &mut Gradients<E, D>) -> Result<(), GrowError> {
        match self {
            ParamRef::Matrix(t) => grads.try_alloc_for(*t),
            ParamRef::Vector(t) => grads.try_alloc_for(*t),
        }
        .map_err(GrowError::device)
    }
}

fn cpu_grad<'g, S: Shape, E: Dtype, D: Device<E>>(
    grads: &'g mut Gradients<E, D>,
    t: &Tensor<S, E, D>,
) -> Result<Option<&'g [E]>, GrowError> {
    let grads = (grads as &mut dyn Any).downcast_mut::<Gradients<E, Cpu>>();
    let t = (t as &dyn Any).downcast_ref::<Tensor<S, E, Cpu>>();
    match (grads, t) {
        (Some(grads), Some(t)) => Ok(Some(
            grads
                .get_or_alloc_mut(t)
                .map_err(GrowError::device)?
                .as_slice(),
        )),
        _ => Ok(None),
    }
}

impl<E: Dtype, D: Device<E>> ParamMut<'_, E, D> {
    /// Overwrites the values from `src` (row-major) in place: the tensor keeps its id.
    pub fn copy_from(&mut self, src: &[E]) {
        match self {
            ParamMut::Matrix(t) => t.copy_from(src),
            ParamMut::Vector(t) => t.copy_from(src),
        }
    }

    /// A shared view of the same tensor.
    pub fn as_ref(&self) -> ParamRef<'_, E, D> {
        match self {
            ParamMut::Matrix(t) => ParamRef::Matrix(t),
            ParamMut::Vector(t) => ParamRef::Vector(t),
        }
    }
}

/// Something that owns trainable tensors and can show them, always in the same order.
///
/// Optimizers, gradient allocation, parameter counts and checkpoints all go through this walk,
/// so a layer of your own only has to list its tensors:
///
/// ```
/// use dfdx_grow::dfdx::prelude::*;
/// use dfdx_grow::{Params, ParamRef, ParamMut, Vector};
///
/// /// A learnable per-feature scale.
/// struct Scale { gain: Vector<f32, Cpu> }
///
/// impl Params<f32, Cpu> for Scale {
///     fn visit(&self, f: &mut dyn FnMut(ParamRef<'_, f32, Cpu>)) {
///         f(ParamRef::Vector(&self.gain));
///     }
///     fn visit_mut(&mut self, f: &mut dyn FnMut(ParamMut<'_, f32, Cpu>)) {
///         f(ParamMut::Vector(&mut self.gain));
///     }
/// }
///
/// let dev = Cpu::default();
/// let s = Scale { gain: dev.ones_like(&(3,)) };
/// assert_eq!(s.num_params(), 3);
/// assert_eq!(s.param_dims(), vec![(3, 1)]);
/// ```
pub trait Params<E: Dtype, D: Device<E>> {
    /// Calls `f` on every trainable tensor, in a fixed order.
    fn visit(&self, f: &mut dyn FnMut(ParamRef<'_, E, D>));

    /// Calls `f` on every trainable tensor, mutably, in the same order as [`Params::visit`].
    fn visit_mut(&mut self, f: &mut dyn FnMut(ParamMut<'_, E, D>));

    /// The number of trainable scalars.
    fn num_params(&self) -> usize {
        let mut n = 0;
        self.visit(&mut |p| n += p.len());
        n
    }

    /// `(rows, columns)` of every tensor, in walk order.
    fn param_dims(&self) -> Vec<(usize, usize)> {
        let mut dims = Vec::new();
        self.visit(&mut |p| dims.push(p.dims()));
        dims
    }

    /// Fresh gradients with a zeroed entry for every parameter, so that a parameter the loss
    /// does not reach still has a (zero) gradient.
    fn try_alloc_grads(&self) -> Result<Gradients<E, D>, GrowError> {
        let mut grads = Gradients::leaky();
        let mut result = Ok(());
        self.visit(&mut |p| {
            if result.is_ok() {
                result = p.alloc_grad(&mut grads);
            }
        });
        result.map(|_| grads)
    }

    /// The L2 norm of every tensor's gradient, in walk order (a missing gradient counts as 0).
    fn grad_norms(&self, grads: &mut Gradients<E, D>) -> Result<Vec<f64>, GrowError> {
        let mut norms = Vec::new();
        let mut scratch: Vec<E> = Vec::new();
        let mut result = Ok(());
        self.visit(&mut |p| {
            if result.is_err() {
                return;
            }
            match p.host_grad(grads, &mut scratch) {
                Ok(g) => norms.push(
                    g.iter()
                        .map(|g| {
                            let g = g.to_f64().unwrap_or(f64::NAN);
                            g * g
                        })
                        .sum::<f64>()
                        .sqrt(),
                ),
                Err(e) => result = Err(e),
            }
        });
        result.map(|_| norms)
    }
}
