//! A linear layer's backward pass without the input gradient, for inputs that are data.
//!
//! dfdx 0.13's matmul backward always computes the gradients of both operands. For the first
//! layer of a network the input is the data batch, whose gradient nobody reads, and that
//! gradient costs as much as the forward matmul itself: a traced forward + backward of a
//! 128x784 by 784x1024 layer is about 3x its forward, PyTorch's (which skips it) about 2.15x.
//! [`Data`] marks an input whose gradient is not wanted; [`Linear`] and [`Mlp`] then record a
//! backward op of their own that computes only the weight and bias gradients.

use std::any::{Any, TypeId};

use dfdx::prelude::{
    Axes2, Axis, BroadcastTo, Cpu, Device, Dtype, Gradients, HasShape, Module, NoneTape, OwnedTape,
    PermuteTo, PutTape, SplitTape, Storage, Tape, Tensor, TensorFromVec, TryAdd, TryMatMul,
};

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
/// The saving applies on the [`Cpu`] device with dfdx's [`OwnedTape`]; on other devices (or
/// tapes) the ordinary traced path runs, with the same results.
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

type Batch<E, D, T> = Tensor<(usize, usize), E, D, T>;

impl<E: Real, D: Device<E>, T: Tape<E, D> + 'static> Module<Data<Batch<E, D, T>>> for Linear<E, D>
where
    Cpu: Device<E>,
{
    type Output = Batch<E, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Data<Batch<E, D, T>>) -> Result<Self::Output, D::Err> {
        linear_on_data(self, x.0)
    }
}

impl<E: Real, D: Device<E>, T: Tape<E, D> + 'static> Module<Data<Batch<E, D, T>>> for Mlp<E, D>
where
    Cpu: Device<E>,
{
    type Output = Batch<E, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Data<Batch<E, D, T>>) -> Result<Self::Output, D::Err> {
        // The same sequence as the plain forward, with the first layer on data.
        let layers = self.layers();
        let mut h = layers[0].try_forward(x)?;
        for layer in &layers[1..] {
            h = self.activation().try_apply(h)?;
            h = layer.try_forward(h)?;
        }
        Ok(h)
    }
}

/// `x W^T + b` with a backward op that computes the gradients of `W` and `b` only.
fn linear_on_data<E: Real, D: Device<E>, T: Tape<E, D> + 'static>(
    layer: &Linear<E, D>,
    x: Batch<E, D, T>,
) -> Result<Batch<E, D, T>, D::Err>
where
    Cpu: Device<E>,
{
    let plain = |x: Batch<E, D, T>| layer.try_forward(x);
    if !T::OWNS_TAPE || TypeId::of::<D>() != TypeId::of::<Cpu>() {
        return plain(x);
    }
    let (x, mut tape) = x.split_tape();
    // The forward: the same kernels as the traced path, so the same values.
    let (batch, out) = (x.shape().0, layer.weight.shape().0);
    let y = x
        .clone()
        .try_matmul(layer.weight.clone().try_permute::<_, Axes2<1, 0>>()?)?
        .try_add(
            layer
                .bias
                .clone()
                .try_broadcast_like::<_, Axis<0>>(&(batch, out))?,
        )?;
    let on_cpu = (
        (&x as &dyn Any).downcast_ref::<Batch<E, Cpu, NoneTape>>(),
        (&y as &dyn Any).downcast_ref::<Batch<E, Cpu, NoneTape>>(),
        (&layer.weight as &dyn Any).downcast_ref::<Tensor<(usize, usize), E, Cpu>>(),
        (&layer.bias as &dyn Any).downcast_ref::<Tensor<(usize,), E, Cpu>>(),
        (&mut tape as &mut dyn Any).downcast_mut::<OwnedTape<E, Cpu>>(),
    );
    let (Some(x), Some(y_cpu), Some(w), Some(b), Some(cpu_tape)) = on_cpu else {
        // Not reachable with dfdx's own tapes; a tape of another kind keeps the plain path.
        return plain(x.put_tape(tape));
    };
    let (x, y_ghost, w_ghost, b_ghost) = (x.clone(), y_cpu.ghost(), w.ghost(), b.ghost());
    cpu_tape.add_backward_op(move |grads: &mut Gradients<E, Cpu>| {
        let dev = x.device().clone();
        let dy: Vec<E> = host::<E>(grads.get_or_alloc_mut(&y_ghost)?).to_vec();
        // The bias gradient as dfdx's broadcast add computes it: row by row, in order.
        let gb = host::<E>(grads.get_or_alloc_mut(&b_ghost)?);
        for row in dy.chunks_exact(out.max(1)) {
            for (g, d) in gb.iter_mut().zip(row) {
                *g += *d;
            }
        }
        // dW = dY^T x. gemm normalises this to exactly the call dfdx's matmul backward makes
        // for the weight, so the sums run in the same order.
        let dy = dev.try_tensor_from_vec(dy, (batch, out))?;
        let dw = dy.try_permute::<_, Axes2<1, 0>>()?.try_matmul(x)?;
        let gw = host::<E>(grads.get_or_alloc_mut(&w_ghost)?);
        if gw.iter().all(|g| *g == E::default()) {
            // dfdx accumulates into a zeroed buffer: 0 + v is v.
            dw.copy_into(gw);
        } else {
            for (g, d) in gw.iter_mut().zip(dw.as_vec()) {
                *g += d;
            }
        }
        Ok(())
    });
    Ok(y.put_tape(tape))
}

/// A CPU buffer as a slice. A function of its own because where `Cpu: Device<E>` is assumed,
/// the compiler does not see that the buffer type is a vector.
fn host<E: Dtype>(v: &mut <Cpu as Storage<E>>::Vec) -> &mut [E] {
    v
}
