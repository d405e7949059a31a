//! A linear layer's backward pass without the input gradient, for inputs that are data.
//!
//! A matmul's backward computes the gradients of both operands (dfdx 0.13's always does). For
//! the first layer of a network the input is the data batch, whose gradient nobody reads, and
//! that gradient costs as much as the forward matmul itself: a traced forward + backward of a
//! 128x784 by 784x1024 layer was about 3x its forward through dfdx, PyTorch's (which skips it)
//! about 2.15x. [`Data`] marks an input whose gradient is not wanted; [`Linear`] and [`Mlp`]
//! then record a backward op (`nn::affine`) that computes only the weight and bias gradients.

use dfdx::prelude::{Device, Dtype, Module, Tape};

use super::affine::{affine, Batch, InputGrad};
use crate::{Linear, Mlp, Real};

/// An input whose gradient is not needed: a batch of data, or anything to stop gradients at.
///
/// `model.forward(Data(x.traced(grads)))` computes the same output, loss and parameter
/// gradients as `model.forward(x.traced(grads))`, bit for bit, but no gradient for `x`, which
/// saves the first layer one matmul in the backward pass. The tape `x` carries goes on to the
/// output as usual. Operations recorded on that tape before `x` receive no gradient through
/// this input (a stop-gradient), so do not wrap an activation whose producers must learn:
/// pass it plainly.
///
/// The saving applies on the [`Cpu`](dfdx::prelude::Cpu) device; on other devices dfdx's
/// ordinary traced path runs.
///
/// ```
/// use dfdx_grow::dfdx::prelude::*;
/// use dfdx_grow::rand::{rngs::StdRng, SeedableRng};
/// use dfdx_grow::{Activation, Data, Mlp, Params};
///
/// let dev = Cpu::default();
/// let mlp = Mlp::<f32, Cpu>::new(&[8, 16, 3], Activation::Relu, &dev, &mut StdRng::seed_from_u64(0));
/// let x: Tensor<(usize, usize), f32, Cpu> = dev.sample_normal_like(&(4, 8));
///
/// let grads = mlp.try_alloc_grads().unwrap();
/// let fast = mlp.forward(Data(x.clone().traced(grads))).sum().backward();
/// let grads = mlp.try_alloc_grads().unwrap();
/// let plain = mlp.forward(x.traced(grads)).sum().backward();
/// let w = &mlp.layers()[0].weight;
/// assert_eq!(fast.get(w).as_vec(), plain.get(w).as_vec());
/// ```
#[derive(Clone, Debug)]
pub struct Data<X>(pub X);

impl<E: Dtype, D: Device<E>, T: Tape<E, D>> Module<Data<Batch<E, D, T>>> for Linear<E, D> {
    type Output = Batch<E, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Data<Batch<E, D, T>>) -> Result<Self::Output, D::Err> {
        affine(self, x.0, InputGrad::Skipped)
    }
}

impl<E: Real, D: Device<E>, T: Tape<E, D>> Module<Data<Batch<E, D, T>>> for Mlp<E, D> {
    type Output = Batch<E, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Data<Batch<E, D, T>>) -> Result<Self::Output, D::Err> {
        // The plain forward, with the first layer on data.
        let h = self.layers()[0].try_forward(x)?;
        self.forward_after_first(h)
    }
}
