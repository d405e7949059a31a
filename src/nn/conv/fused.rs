//! The `Cpu` route of a convolution as one op on dfdx's tape: the im2col of the whole batch,
//! one product with `[weight | bias]`, and the backward of both.
//!
//! A per-image product (what dfdx's batched matmul does) is a small matrix product per image:
//! `(8, 10)` by `(10, 676)` for a 3x3 convolution of one channel into eight on 28x28 images,
//! where each call's fixed cost outweighs its arithmetic. Laid out batch-major, `(fields + 1,
//! batch * pixels)`, the im2col of the whole batch is one matrix, and the convolution one
//! product through gemm's AVX-512 kernels (`nn::affine`); the backward is one product for
//! `[weight | bias]` and, unless the input is data, one for the im2col, folded back into the
//! input's gradient. Results agree with the per-image route to rounding.

use dfdx::prelude::*;

use super::im2col::{col2im_batch_major, im2col_batch_major, Geometry};
use super::{Conv2d, Images};
use crate::nn::affine::InputGrad;
use crate::nn::cpu_vec;
use crate::nn::gemm::{gemm_into, Accumulate, Mat, MatRef, Threads};
use crate::nn::host_vec;
use crate::Real;

/// The convolution of `x` by `layer` through one product over the batch (the caller has
/// checked `nn::gemm::runs_here` and the input's shape).
pub(super) fn conv<E: Real, D: Device<E>, T: Tape<E, D>>(
    layer: &Conv2d<E, D>,
    x: Images<E, D, T>,
    g: &Geometry,
    input: InputGrad,
) -> Result<Images<E, D, T>, D::Err> {
    // Contiguous, so that the input's data and its gradient are in logical order.
    let x = x.try_contiguous()?;
    let (x, mut tape) = x.split_tape();
    let (out, fields, pixels) = (layer.out_channels(), g.fields(), g.pixels());
    let (rows, n) = (fields + 1, g.batch * pixels);
    let cols = im2col_batch_major(&host_vec(&x), g);
    // [weight | bias], (out, fields + 1): the ones row of the im2col adds the bias.
    let (w, b) = (host_vec(&layer.weight), host_vec(&layer.bias));
    let mut wb = Vec::with_capacity(out * rows);
    for (o, bias) in b.iter().enumerate() {
        wb.extend_from_slice(&w[o * fields..(o + 1) * fields]);
        wb.push(*bias);
    }
    let mut product = vec![E::default(); out * n];
    gemm_into(
        Mat::rows(&mut product, out, n),
        MatRef::rows(&wb, out, rows),
        MatRef::rows(&cols, rows, n),
        Accumulate::No,
        Threads::Pool,
    );
    let y = x
        .device()
        .try_tensor_from_vec(to_images(&product, out, g), (g.batch, out, g.oh, g.ow))?;

    if T::OWNS_TAPE {
        let (y_ghost, w_ghost, b_ghost) = (y.ghost(), layer.weight.ghost(), layer.bias.ghost());
        let x_ghost = (input == InputGrad::Wanted).then(|| x.ghost());
        let g = *g;
        tape.add_backward_op(move |grads: &mut Gradients<E, D>| {
            let dy = to_batch_major(cpu_vec::<E, D>(grads.get_or_alloc_mut(&y_ghost)?), out, &g);
            // d[weight | bias] = dY cols^T, (out, fields + 1).
            let mut dwb = vec![E::default(); out * rows];
            gemm_into(
                Mat::rows(&mut dwb, out, rows),
                MatRef::rows(&dy, out, n),
                MatRef::transposed(&cols, n, rows),
                Accumulate::No,
                Threads::Pool,
            );
            let gw = cpu_vec::<E, D>(grads.get_or_alloc_mut(&w_ghost)?);
            for (gw, d) in gw
                .chunks_exact_mut(fields.max(1))
                .zip(dwb.chunks_exact(rows))
            {
                for (g, d) in gw.iter_mut().zip(d) {
                    *g += *d;
                }
            }
            let gb = cpu_vec::<E, D>(grads.get_or_alloc_mut(&b_ghost)?);
            for (g, d) in gb.iter_mut().zip(dwb.chunks_exact(rows)) {
                *g += d[fields];
            }
            if let Some(x_ghost) = x_ghost {
                // d cols = [weight | bias]^T dY, folded back into the input's gradient.
                let mut dcols = vec![E::default(); rows * n];
                gemm_into(
                    Mat::rows(&mut dcols, rows, n),
                    MatRef::transposed(&wb, rows, out),
                    MatRef::rows(&dy, out, n),
                    Accumulate::No,
                    Threads::Pool,
                );
                col2im_batch_major(
                    &dcols,
                    &g,
                    cpu_vec::<E, D>(grads.get_or_alloc_mut(&x_ghost)?),
                );
            }
            Ok(())
        });
    }
    Ok(y.put_tape(tape))
}

/// `(out, batch * pixels)` to `(batch, out, pixels)`.
fn to_images<E: Copy>(product: &[E], out: usize, g: &Geometry) -> Vec<E> {
    let (pixels, n) = (g.pixels(), g.batch * g.pixels());
    let mut y = Vec::with_capacity(product.len());
    for image in 0..g.batch {
        for o in 0..out {
            let start = o * n + image * pixels;
            y.extend_from_slice(&product[start..start + pixels]);
        }
    }
    y
}

/// `(batch, out, pixels)` to `(out, batch * pixels)`.
fn to_batch_major<E: Copy + Default>(y: &[E], out: usize, g: &Geometry) -> Vec<E> {
    let (pixels, n) = (g.pixels(), g.batch * g.pixels());
    let mut t = vec![E::default(); out * n];
    if pixels == 0 {
        return t;
    }
    for (i, run) in y.chunks_exact(pixels).enumerate() {
        let (image, o) = (i / out, i % out);
        t[o * n + image * pixels..][..pixels].copy_from_slice(run);
    }
    t
}
