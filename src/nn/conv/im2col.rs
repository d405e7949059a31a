//! The im2col of a convolution and its backward: host loops over a batch-major layout (the
//! `Cpu` route, whose op is `fused`) and a device-generic route through dfdx's `concat_along`
//! and `gather` (see the parent module for why both exist).

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

/// The im2col of a contiguous batch `x` (flat `(batch, c, h, w)`) laid out batch-major:
/// `(c * kh * kw + 1, batch * oh * ow)`, image `b`'s columns at `b * oh * ow ..`, the last row
/// ones. One product with `[weight | bias]` then convolves the whole batch (see `fused`).
pub(super) fn im2col_batch_major<E: Real>(x: &[E], g: &Geometry) -> Vec<E> {
    let mut cols = vec![E::zero(); (g.fields() + 1) * g.batch * g.pixels()];
    if cols.is_empty() {
        return cols;
    }
    let mut at = 0;
    for_each_run(g, |src, run| {
        let dst = &mut cols[batch_major(g, at)..][..run];
        match src {
            Run::Input(start, 1) => dst.copy_from_slice(&x[start..start + run]),
            Run::Input(start, step) => {
                for (n, d) in dst.iter_mut().enumerate() {
                    *d = x[start + n * step];
                }
            }
            Run::Zeros => {}
            Run::Ones => dst.fill(E::one()),
        }
        at += run;
    });
    cols
}

/// Adds a batch-major im2col gradient `(c * kh * kw + 1, batch * oh * ow)` back into the
/// gradient of the contiguous input, `gx` (flat `(batch, c, h, w)`).
pub(super) fn col2im_batch_major<E: Real>(cols: &[E], g: &Geometry, gx: &mut [E]) {
    if cols.is_empty() {
        return;
    }
    let mut at = 0;
    for_each_run(g, |src, run| {
        let from = &cols[batch_major(g, at)..][..run];
        match src {
            Run::Input(start, 1) => {
                for (d, s) in gx[start..start + run].iter_mut().zip(from) {
                    *d += *s;
                }
            }
            Run::Input(start, step) => {
                for (n, s) in from.iter().enumerate() {
                    gx[start + n * step] += *s;
                }
            }
            Run::Zeros | Run::Ones => {}
        }
        at += run;
    });
}

/// Where entry `at` of the image-major im2col `(batch, fields + 1, pixels)` lies in the
/// batch-major one `(fields + 1, batch * pixels)`. A run never crosses a row, so a run
/// starting at `at` stays contiguous there.
fn batch_major(g: &Geometry, at: usize) -> usize {
    let (rows, pixels) = (g.fields() + 1, g.pixels());
    let (image, within) = (at / (rows * pixels), at % (rows * pixels));
    let (row, pixel) = (within / pixels, within % pixels);
    row * g.batch * pixels + image * pixels + pixel
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
