//! A [`Linear`] layer's map `x W^T + b` and its backward pass, on the CPU through gemm's
//! AVX-512 kernels (`nn::gemm`).
//!
//! dfdx 0.13's CPU matmul runs gemm 0.15's 256-bit FMA kernels on stable Rust; on an AVX-512
//! Xeon the crate's forward of a 784->1024 layer, batch 128, takes 0.77x the time of dfdx's
//! matmul alone, copies included (`cargo bench --bench step_anatomy`, BENCHMARKS.md).
//! So on the [`Cpu`] device, for f32 and f64, a `Linear` computes its forward here and
//! records a backward op of its own, which writes the weight and bias gradients and the
//! input's unless the input is [`crate::Data`]. Other devices and dtypes keep dfdx's ops.
//!
//! dfdx 0.13 lends a tensor's storage to its own kernels only, so the op reads the weight and
//! the input through a copy into a buffer of its own (0.33 ms for a 784x1024 f32 weight, about
//! a fifth of the product it feeds), and keeps those copies for the backward pass. Gradients
//! are written in place. With more than one rayon thread the forward product runs in fixed
//! blocks of output units spread over the threads ([`UNITS_PER_BLOCK`]), because gemm splits
//! it poorly itself.

use std::any::Any;

use rayon::prelude::*;

use dfdx::prelude::{
    Axes2, Axis, BroadcastTo, Cpu, Device, Dtype, Gradients, HasShape, Module, NoneTape, PermuteTo,
    PutTape, SplitTape, Tape, Tensor, TryAdd, TryMatMul,
};

use super::cpu_vec;
use super::gemm::{gemm_into, runs_here, Accumulate, Mat, MatRef, Threads};
use crate::Linear;

pub(crate) type Batch<E, D, T> = Tensor<(usize, usize), E, D, T>;

/// Whether the backward pass computes the input's gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InputGrad {
    /// The input is an activation or a parameter: its producers learn through it.
    Wanted,
    /// The input is data ([`crate::Data`]): nothing reads its gradient.
    Skipped,
}

/// `x W^T + b`, through gemm on the CPU and dfdx's ops elsewhere.
pub(crate) fn affine<E: Dtype, D: Device<E>, T: Tape<E, D>>(
    layer: &Linear<E, D>,
    x: Batch<E, D, T>,
    input: InputGrad,
) -> Result<Batch<E, D, T>, D::Err> {
    // A mismatched input goes to dfdx, which reports it as it always has.
    if !runs_here::<E, D>() || x.shape().1 != layer.weight.shape().1 {
        return dfdx_affine(layer, x);
    }
    let (x, mut tape) = x.split_tape();
    let (batch, fan_in) = *x.shape();
    let out = layer.weight.shape().0;
    let (Some(x_cpu), Some(w), Some(b)) = (
        (&x as &dyn Any).downcast_ref::<Batch<E, Cpu, NoneTape>>(),
        (&layer.weight as &dyn Any).downcast_ref::<Tensor<(usize, usize), E, Cpu>>(),
        (&layer.bias as &dyn Any).downcast_ref::<Tensor<(usize,), E, Cpu>>(),
    ) else {
        // Not reachable: D is Cpu.
        return dfdx_affine(layer, x.put_tape(tape));
    };
    let x_strides = Strides::of(x_cpu);
    let xs = super::host_vec(x_cpu);
    let ws = super::host_vec(w);
    let bs = super::host_vec(b);

    let mut ys = vec![E::default(); batch * out];
    // y = x W^T, then + b as a pass of its own: the order of dfdx's matmul-then-add.
    forward_product(&mut ys, &xs, &ws, (batch, fan_in, out));
    if out > 0 {
        for row in ys.chunks_exact_mut(out) {
            for (y, b) in row.iter_mut().zip(&bs) {
                *y += *b;
            }
        }
    }
    let y = x.device().try_tensor_from_vec(ys, (batch, out))?;

    if T::OWNS_TAPE {
        let (y_ghost, w_ghost, b_ghost) = (y.ghost(), layer.weight.ghost(), layer.bias.ghost());
        let x_ghost = (input == InputGrad::Wanted).then(|| (x.ghost(), ws));
        tape.add_backward_op(move |grads: &mut Gradients<E, D>| {
            // The output's gradient is moved out for the op and back in after: no copy, and
            // no second borrow of `grads`.
            let dy = std::mem::take(cpu_vec::<E, D>(grads.get_or_alloc_mut(&y_ghost)?));
            let gb = cpu_vec::<E, D>(grads.get_or_alloc_mut(&b_ghost)?);
            if out > 0 {
                // Row by row, in order: the sum dfdx's broadcast-add backward makes.
                for row in dy.chunks_exact(out) {
                    for (g, d) in gb.iter_mut().zip(row) {
                        *g += *d;
                    }
                }
            }
            // dW += dY^T x
            gemm_into(
                Mat::rows(
                    cpu_vec::<E, D>(grads.get_or_alloc_mut(&w_ghost)?),
                    out,
                    fan_in,
                ),
                MatRef::transposed(&dy, out, batch),
                MatRef::rows(&xs, batch, fan_in),
                Accumulate::Yes,
                Threads::Pool,
            );
            if let Some((x_ghost, ws)) = x_ghost {
                // dx += dY W, into the input's gradient laid out as the input is.
                let gx = cpu_vec::<E, D>(grads.get_or_alloc_mut(&x_ghost)?);
                let product = |dst: Mat<'_, E>, acc| {
                    gemm_into(
                        dst,
                        MatRef::rows(&dy, batch, out),
                        MatRef::rows(&ws, out, fan_in),
                        acc,
                        Threads::Pool,
                    )
                };
                if x_strides.row_major(fan_in) {
                    product(Mat::rows(gx, batch, fan_in), Accumulate::Yes);
                } else {
                    let mut dx = vec![E::default(); batch * fan_in];
                    product(Mat::rows(&mut dx, batch, fan_in), Accumulate::No);
                    for (i, row) in dx.chunks_exact(fan_in.max(1)).enumerate() {
                        for (j, d) in row.iter().enumerate() {
                            gx[i * x_strides.row + j * x_strides.col] += *d;
                        }
                    }
                }
            }
            *cpu_vec::<E, D>(grads.get_or_alloc_mut(&y_ghost)?) = dy;
            Ok(())
        });
    }
    Ok(y.put_tape(tape))
}

/// Output units per block when the forward product is split over threads.
const UNITS_PER_BLOCK: usize = 256;

/// `ys = xs ws^T` for `(batch, fan_in, out)`. gemm splits this product poorly over threads
/// (its destination, transposed, has only `batch` columns: a 784-1024-1024-10 forward took
/// 6.46 ms on two threads against 6.50 ms on one, BENCHMARKS.md), so with more than one rayon
/// thread the output units go in fixed blocks of [`UNITS_PER_BLOCK`], one gemm call per block
/// on a thread of its own (4.35-4.56 ms). The blocks are fixed, so results do not depend on
/// how many threads there are; they differ from the one-thread product by rounding only.
fn forward_product<E: Dtype>(
    ys: &mut [E],
    xs: &[E],
    ws: &[E],
    (batch, fan_in, out): (usize, usize, usize),
) {
    let split =
        rayon::current_num_threads() > 1 && batch > 0 && fan_in > 0 && out >= 2 * UNITS_PER_BLOCK;
    if !split {
        gemm_into(
            Mat::rows(ys, batch, out),
            MatRef::rows(xs, batch, fan_in),
            MatRef::transposed(ws, fan_in, out),
            Accumulate::No,
            Threads::Pool,
        );
        return;
    }
    let parts: Vec<Vec<E>> = ws
        .par_chunks(UNITS_PER_BLOCK * fan_in)
        .map(|block| {
            let units = block.len() / fan_in;
            let mut part = vec![E::default(); batch * units];
            gemm_into(
                Mat::rows(&mut part, batch, units),
                MatRef::rows(xs, batch, fan_in),
                MatRef::transposed(block, fan_in, units),
                Accumulate::No,
                Threads::One,
            );
            part
        })
        .collect();
    for (i, part) in parts.iter().enumerate() {
        let (first, units) = (i * UNITS_PER_BLOCK, part.len() / batch);
        for (row, src) in ys.chunks_exact_mut(out).zip(part.chunks_exact(units)) {
            row[first..first + units].copy_from_slice(src);
        }
    }
}

/// dfdx's own ops: matmul with the permuted weight, then the broadcast bias.
fn dfdx_affine<E: Dtype, D: Device<E>, T: Tape<E, D>>(
    layer: &Linear<E, D>,
    x: Batch<E, D, T>,
) -> Result<Batch<E, D, T>, D::Err> {
    let batch = x.shape().0;
    let out = layer.weight.shape().0;
    let y = x.try_matmul(
        layer
            .weight
            .retaped::<T>()
            .try_permute::<_, Axes2<1, 0>>()?,
    )?;
    let b = layer
        .bias
        .retaped::<T>()
        .try_broadcast_like::<_, Axis<0>>(&(batch, out))?;
    y.try_add(b)
}

impl<E: Dtype, D: Device<E>, T: Tape<E, D>> Module<Batch<E, D, T>> for Linear<E, D> {
    type Output = Batch<E, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Batch<E, D, T>) -> Result<Self::Output, D::Err> {
        affine(self, x, InputGrad::Wanted)
    }
}

/// Where a CPU matrix's elements lie in its storage: the step, in elements, from one row to
/// the next and from one column to the next. Every tensor the crate makes and every output of
/// dfdx's ops is row-major (`(cols, 1)`); a permuted view swaps the two, a broadcast one has
/// a step of 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Strides {
    row: usize,
    col: usize,
}

impl Strides {
    fn of<E: Dtype>(t: &Tensor<(usize, usize), E, Cpu>) -> Self {
        let [row, col] = super::cpu_steps(t);
        Self { row, col }
    }

    fn row_major(self, cols: usize) -> bool {
        self == Self { row: cols, col: 1 }
    }
}
