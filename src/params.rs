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

/// Something that owns trainable tensors and can show them, each under a stable name, always
/// in the same order.
///
/// Names are paths like `"layers.0.weight"` or `"blocks.2.fc1.bias"` (as burn's module paths
/// and candle's VarBuilder prefixes): optimizer state, checkpoints and the audit log key by
/// them, so a model whose layers are reordered or extended is never silently mismatched.
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
///     fn visit(&self, f: &mut dyn FnMut(&str, ParamRef<'_, f32, Cpu>)) {
///         f("gain", ParamRef::Vector(&self.gain));
///     }
///     fn visit_mut(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_, f32, Cpu>)) {
///         f("gain", ParamMut::Vector(&mut self.gain));
///     }
/// }
///
/// let dev = Cpu::default();
/// let s = Scale { gain: dev.ones_like(&(3,)) };
/// assert_eq!(s.num_params(), 3);
/// assert_eq!(s.param_dims(), vec![("gain".to_string(), (3, 1))]);
/// ```
///
/// A model made of parts names each part's tensors under a prefix with [`scoped`] and
/// [`scoped_mut`].
pub trait Params<E: Dtype, D: Device<E>> {
    /// Calls `f(name, tensor)` on every trainable tensor, in a fixed order.
    fn visit(&self, f: &mut dyn FnMut(&str, ParamRef<'_, E, D>));

    /// Calls `f(name, tensor)` on every trainable tensor, mutably, in the same order and with
    /// the same names as [`Params::visit`].
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_, E, D>));

    /// The number of trainable scalars (saturating: a model cannot hold more anyway).
    fn num_params(&self) -> usize {
        let mut n = 0usize;
        self.visit(&mut |_, p| n = n.saturating_add(p.len()));
        n
    }

    /// The name and `(rows, columns)` of every tensor, in walk order.
    fn param_dims(&self) -> Vec<(String, (usize, usize))> {
        let mut dims = Vec::new();
        self.visit(&mut |name, p| dims.push((name.to_string(), p.dims())));
        dims
    }

    /// Checks that every tensor has a non-empty name that no other tensor uses.
    fn check_names(&self) -> Result<(), GrowError> {
        let mut seen = std::collections::BTreeSet::new();
        let mut bad = None;
        self.visit(&mut |name, _| {
            if bad.is_none() && (name.is_empty() || !seen.insert(name.to_string())) {
                bad = Some(name.to_string());
            }
        });
        match bad {
            None => Ok(()),
            Some(name) => Err(GrowError::ParamName { name }),
        }
    }

    /// Fresh gradients with a zeroed entry for every parameter, so that a parameter the loss
    /// does not reach still has a (zero) gradient.
    fn try_alloc_grads(&self) -> Result<Gradients<E, D>, GrowError> {
        let mut grads = Gradients::leaky();
        let mut result = Ok(());
        self.visit(&mut |_, p| {
            if result.is_ok() {
                result = p.alloc_grad(&mut grads);
            }
        });
        result.map(|_| grads)
    }

    /// The L2 norm of every tensor's gradient, with its name, in walk order (a tensor missing
    /// from `grads` counts as 0).
    fn grad_norms(&self, grads: &mut Gradients<E, D>) -> Result<Vec<(String, f64)>, GrowError> {
        self.grad_norms_where(grads, &|_| true)
    }

    /// [`Params::grad_norms`] of the tensors whose name `keep` accepts.
    fn grad_norms_where(
        &self,
        grads: &mut Gradients<E, D>,
        keep: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<(String, f64)>, GrowError> {
        let mut norms = Vec::new();
        let mut scratch: Vec<E> = Vec::new();
        let mut result = Ok(());
        self.visit(&mut |name, p| {
            if result.is_err() || !keep(name) {
                return;
            }
            match p.host_grad(grads, &mut scratch) {
                Ok(g) => norms.push((name.to_string(), l2_norm(g))),
                Err(e) => result = Err(e),
            }
        });
        result.map(|_| norms)
    }
}

/// The L2 norm of `v` (the policies read one per site every step; see [`lane_sum`]).
pub(crate) fn l2_norm<E: Dtype>(v: &[E]) -> f64 {
    let squares = lane_sum(v, |x| x * x);
    if squares.is_finite() {
        return squares.sqrt();
    }
    // Squares (or their lane sums) past E's range, from finite values above ~1.8e19 in f32:
    // summed in f64 instead. An infinite or NaN value still gives an infinite or NaN norm.
    v.iter()
        .map(|x| x.to_f64().unwrap_or(f64::NAN).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// The sum of `f(x)` over `v`, in one pass near memory speed: `f` and the additions run at
/// `E`'s width over sixteen independent lanes (so the loop vectorises), each block of 1,024
/// elements is then added to an f64 total. In f32 a lane adds at most 64 values, so its sum
/// carries a relative error below 64 x 2^-24 (4e-6), far below what a growth decision or a
/// norm match reads; widening every element to f64 first made the pass 5x slower.
pub(crate) fn lane_sum<E: Dtype>(v: &[E], f: impl Fn(E) -> E) -> f64 {
    const LANES: usize = 16;
    let wide = |x: E| x.to_f64().unwrap_or(f64::NAN);
    let mut total = 0.0;
    for block in v.chunks(1024) {
        let mut lanes = [E::default(); LANES];
        let chunks = block.chunks_exact(LANES);
        let tail = chunks.remainder().iter().map(|x| wide(f(*x))).sum::<f64>();
        for c in chunks {
            for (acc, x) in lanes.iter_mut().zip(c) {
                *acc += f(*x);
            }
        }
        total += lanes.into_iter().map(wide).sum::<f64>() + tail;
    }
    total
}

/// Wraps a visitor so that every name it receives is prefixed by `prefix` and a dot: how a
/// model names the tensors of its parts.
///
/// ```
/// use dfdx_grow::dfdx::prelude::*;
/// use dfdx_grow::rand::{rngs::StdRng, SeedableRng};
/// use dfdx_grow::{scoped, scoped_mut, Linear, ParamRef, Params};
///
/// struct Net { body: Linear<f32, Cpu>, head: Linear<f32, Cpu> }
/// impl Params<f32, Cpu> for Net {
///     fn visit(&self, f: &mut dyn FnMut(&str, ParamRef<'_, f32, Cpu>)) {
///         self.body.visit(&mut scoped("body", f));
///         self.head.visit(&mut scoped("head", f));
///     }
///     fn visit_mut(&mut self, f: &mut dyn FnMut(&str, dfdx_grow::ParamMut<'_, f32, Cpu>)) {
///         self.body.visit_mut(&mut scoped_mut("body", f));
///         self.head.visit_mut(&mut scoped_mut("head", f));
///     }
/// }
/// let (dev, mut rng) = (Cpu::default(), StdRng::seed_from_u64(0));
/// let net = Net {
///     body: Linear::new(4, 3, &dev, &mut rng).unwrap(),
///     head: Linear::new(3, 2, &dev, &mut rng).unwrap(),
/// };
/// let names: Vec<String> = net.param_dims().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["body.weight", "body.bias", "head.weight", "head.bias"]);
/// ```
pub fn scoped<'f, E: Dtype, D: Device<E>>(
    prefix: &'f str,
    f: &'f mut dyn FnMut(&str, ParamRef<'_, E, D>),
) -> impl FnMut(&str, ParamRef<'_, E, D>) + 'f {
    let mut buf = String::with_capacity(prefix.len() + 16);
    move |name, p| f(prefixed(&mut buf, prefix, name), p)
}

/// [`scoped`] for [`Params::visit_mut`].
pub fn scoped_mut<'f, E: Dtype, D: Device<E>>(
    prefix: &'f str,
    f: &'f mut dyn FnMut(&str, ParamMut<'_, E, D>),
) -> impl FnMut(&str, ParamMut<'_, E, D>) + 'f {
    let mut buf = String::with_capacity(prefix.len() + 16);
    move |name, p| f(prefixed(&mut buf, prefix, name), p)
}

fn prefixed<'b>(buf: &'b mut String, prefix: &str, name: &str) -> &'b str {
    buf.clear();
    buf.push_str(prefix);
    buf.push('.');
    buf.push_str(name);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l2_norm_agrees_with_an_f64_sum_and_survives_squares_past_f32() {
        let v: Vec<f32> = (0..5000).map(|i| ((i as f32) * 0.37).sin()).collect();
        let exact = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        assert!((l2_norm(&v) - exact).abs() <= 4e-6 * exact);
        // 1e20 squared overflows f32; the norm must not.
        let big = vec![1e20f32; 3];
        let want = 1e20f64 * 3f64.sqrt();
        assert!(
            (l2_norm(&big) / want - 1.0).abs() < 1e-6,
            "{}",
            l2_norm(&big)
        );
        assert_eq!(l2_norm(&[f32::INFINITY, 1.0]), f64::INFINITY);
        assert!(l2_norm(&[f32::NAN, 1.0]).is_nan());
    }
}
