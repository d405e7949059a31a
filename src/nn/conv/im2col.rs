//! The im2col of a convolution and its backward: a host loop registered as one op on dfdx's
//! tape (the `Cpu` route) and a device-generic route through dfdx's `concat_along` and
//! `gather` (see the parent module for why both exist).

use std::any::Any;

use dfdx::prelude::*;

use super::Images;
use crate::Real;

/// The im2col of a batch: per image, `(in_channels * kh * kw + 1, oh * ow)`.
pub(super) type Cols<E, D, T = NoneTape> = Tensor<(usize, usize, usize), E, D, T>;

/// Everything the im2col needs to know about one forward call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Geometry {
    pub(super) batch: usize,
    pub(super) channels: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) kh: usize,
    pub(super) kw: usize,
    pub(super) stride: usize,
    pub(super) pad: usize,
    pub(super) oh: usize,
    pub(super) ow: usize,
}

impl Geometry {
    /// Rows of an image's im2col matrix: one per weight of an output channel.
    pub(super) fn fields(&self) -> usize {
        self.channels * self.kh * self.kw
    }

    /// Columns of an image's im2col matrix: one per output pixel.
    pub(super) fn pixels(&self) -> usize {
        self.oh * self.ow
    }

    /// The input coordinate of output `o` at kernel offset `k` on an axis of length `len`, or
    /// `None` in the zero padding.
    pub(super) fn src(&self, o: usize, k: usize, len: usize) -> Option<usize> {
        (o * self.stride + k)
            .checked_sub(self.pad)
            .filter(|&i| i < len)
    }
}

/// A CPU gradient buffer as a slice (where `Cpu: Device<E>` is assumed the compiler does not
/// see that the buffer dereferences to a vector).
pub(super) fn cpu_slice<E: Dtype>(v: &mut <Cpu as Storage<E>>::Vec) -> &mut [E] {
    v
}

/// The host im2col, as one op on dfdx's tape. The forward works on any device (through host
/// copies); the backward reads and writes gradients in place, which needs the `Cpu` device,
/// the only one that dispatches here.
pub(super) fn im2col_host<E: Real, D: Device<E>, T: Tape<E, D>>(
    x: Images<E, D, T>,
    g: &Geometry,
) -> Result<Cols<E, D, T>, D::Err> {
    // Contiguous, so that the input's data and its gradient are in logical order.
    let x = x.try_contiguous()?;
    let (x, mut tape) = x.split_tape();
    let out = im2col_values(&x, g)?;
    // dfdx's `GhostTensor` cannot be named outside dfdx (so not downcast): the backward
    // keeps the tensors themselves, which shares their buffers, copies nothing.
    let (x_held, out_held) = (x.clone(), out.clone());
    let g = *g;
    tape.add_backward_op(move |grads| {
        grads.try_alloc_for(&x_held)?;
        grads.try_alloc_for(&out_held)?;
        col2im_cpu(grads, &x_held, &out_held, &g);
        Ok(())
    });
    Ok(out.put_tape(tape))
}

/// The im2col of a contiguous batch, untraced.
pub(super) fn im2col_values<E: Real, D: Device<E>>(
    x: &Images<E, D>,
    g: &Geometry,
) -> Result<Cols<E, D>, D::Err> {
    let mut host = vec![E::zero(); g.batch * g.channels * g.h * g.w];
    x.copy_into(&mut host);
    // Written in order, so the buffer is never zeroed first.
    let mut cols = Vec::with_capacity(g.batch * (g.fields() + 1) * g.pixels());
    for_each_run(g, |src, run| match src {
        Run::Input(start, 1) => cols.extend_from_slice(&host[start..start + run]),
        Run::Input(start, step) => cols.extend((0..run).map(|n| host[start + n * step])),
        Run::Zeros => cols.extend(std::iter::repeat_n(E::zero(), run)),
        Run::Ones => cols.extend(std::iter::repeat_n(E::one(), run)),
    });
    x.device()
        .try_tensor_from_vec(cols, (g.batch, g.fields() + 1, g.pixels()))
}

/// Adds the im2col's gradient back into the input's gradient (both already allocated).
pub(super) fn col2im_cpu<E: Real, D: Device<E>>(
    grads: &mut Gradients<E, D>,
    x: &Images<E, D>,
    out: &Cols<E, D>,
    g: &Geometry,
) {
    const CPU_ONLY: &str = "im2col_host runs only on the Cpu device";
    let grads = (grads as &mut dyn Any)
        .downcast_mut::<Gradients<E, Cpu>>()
        .expect(CPU_ONLY);
    let x = (x as &dyn Any)
        .downcast_ref::<Images<E, Cpu>>()
        .expect(CPU_ONLY);
    let out = (out as &dyn Any)
        .downcast_ref::<Cols<E, Cpu>>()
        .expect(CPU_ONLY);
    // Both gradients live in the same map: move the output's out while adding into the
    // input's, then put it back untouched.
    const ALLOCATED: &str = "both gradients were allocated just before";
    let g_out = std::mem::take(&mut **grads.get_or_alloc_mut(out).expect(ALLOCATED));
    let g_x: &mut [E] = grads.get_or_alloc_mut(x).expect(ALLOCATED);
    let mut at = 0;
    for_each_run(g, |src, run| {
        let from = &g_out[at..at + run];
        match src {
            Run::Input(start, 1) => {
                for (d, s) in g_x[start..start + run].iter_mut().zip(from) {
                    *d += *s;
                }
            }
            Run::Input(start, step) => {
                for (n, s) in from.iter().enumerate() {
                    g_x[start + n * step] += *s;
                }
            }
            Run::Zeros | Run::Ones => {}
        }
        at += run;
    });
    **grads.get_or_alloc_mut(out).expect(ALLOCATED) = g_out;
}

/// Where a run of consecutive im2col entries comes from.
#[derive(Clone, Copy, Debug)]
enum Run {
    /// The flat `(batch, c, h, w)` input at `start, start + step, ...`.
    Input(usize, usize),
    /// The zero padding.
    Zeros,
    /// The ones row that carries the bias.
    Ones,
}

/// Walks the im2col matrix `(batch, c * kh * kw + 1, oh * ow)` in memory order, calling
/// `f(source, run)` for runs of consecutive output pixels on one output row; each image's
/// last row is ones (the bias).
fn for_each_run(g: &Geometry, mut f: impl FnMut(Run, usize)) {
    for b in 0..g.batch {
        for c in 0..g.channels {
            let plane = (b * g.channels + c) * g.h * g.w;
            for i in 0..g.kh {
                for j in 0..g.kw {
                    // The output columns whose input column `ox * stride + j - pad` exists.
                    let lo = g.pad.saturating_sub(j).div_ceil(g.stride).min(g.ow);
                    let hi = (g.w + g.pad)
                        .saturating_sub(j)
                        .div_ceil(g.stride)
                        .clamp(lo, g.ow);
                    for oy in 0..g.oh {
                        let Some(y) = g.src(oy, i, g.h) else {
                            f(Run::Zeros, g.ow);
                            continue;
                        };
                        if lo > 0 {
                            f(Run::Zeros, lo);
                        }
                        if hi > lo {
                            let x0 = lo * g.stride + j - g.pad;
                            f(Run::Input(plane + y * g.w + x0, g.stride), hi - lo);
                        }
                        if hi < g.ow {
                            f(Run::Zeros, g.ow - hi);
                        }
                    }
                }
            }
        }
        f(Run::Ones, g.pixels());
    }
}

/// The device-generic im2col: one zero column appended to every `(batch, channel)` plane
/// (`concat_along`) stands for the padding, then one `gather` picks every receptive field,
/// already in the im2col's order, and a row of ones is appended to every image.
pub(super) fn im2col_gather<E: Real, D: Device<E>, T: Tape<E, D>>(
    x: Images<E, D, T>,
    g: &Geometry,
) -> Result<Cols<E, D, T>, D::Err> {
    let planes = g.batch * g.channels;
    let hw = g.h * g.w;
    let dev = x.device().clone();
    let x = x.try_reshape_like(&(planes, hw))?;
    let zeros: Tensor<(usize, usize), E, D> = dev.try_zeros_like(&(planes, 1))?;
    let padded = (x, zeros).try_concat_along(Axis::<1>)?;
    // Per plane, the fields in im2col order (i, j, oy, ox); `hw` is the zero column.
    let per_plane = g.kh * g.kw * g.pixels();
    let mut one = Vec::with_capacity(per_plane);
    for i in 0..g.kh {
        for j in 0..g.kw {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    one.push(match (g.src(oy, i, g.h), g.src(ox, j, g.w)) {
                        (Some(y), Some(x)) => y * g.w + x,
                        _ => hw,
                    });
                }
            }
        }
    }
    let idx: Vec<usize> = std::iter::repeat_n(one, planes).flatten().collect();
    let idx = dev.try_tensor_from_vec(idx, (planes, per_plane))?;
    let fields: Tensor<(usize, usize), E, D, T> = padded.try_gather(idx)?;
    let ones: Cols<E, D> = dev.try_ones_like(&(g.batch, 1, g.pixels()))?;
    (
        fields.try_reshape_like(&(g.batch, g.fields(), g.pixels()))?,
        ones,
    )
        .try_concat_along(Axis::<1>)
}
