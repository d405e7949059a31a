//! A 2-D convolution whose channel counts are decided at run time, so it can grow.
//!
//! dfdx 0.13 compiles its own `conv2d` op and `nn::Conv2D` only with its `nightly` feature.
//! This layer is built from what stable dfdx offers. An im2col lays the receptive fields out
//! as a matrix with one row per weight of an output channel (`in_channels * kh * kw`, plus a
//! row of ones) and one column per output pixel; a product with `[weight | bias]`
//! (`(out, in * kh * kw + 1)`) gives the output, with the bias added by the product itself.
//!
//! Two routes compute it, with the same result to rounding:
//! - on the `Cpu` device (f32, f64), one op on dfdx's tape (`fused`): the im2col of the whole
//!   batch laid out batch-major, `(fields + 1, batch * oh * ow)`, by host loops that copy runs
//!   of pixels, and **one** product through gemm's AVX-512 kernels (`nn::affine`); its backward
//!   is one product for `[weight | bias]` and one for the im2col, folded back into the input's
//!   gradient;
//! - on any other device, dfdx's own `concat_along` (the zero padding, the ones row) and
//!   `gather` (the receptive fields) per image, `(fields + 1, oh * ow)`, and one batched dfdx
//!   `matmul` (a product per image): device-generic, but several times slower on the CPU,
//!   where dfdx's gather walks its index one element at a time and each image's small product
//!   pays a call's fixed cost.
//!
//! A first layer on data takes `Data(x)` (as [`Linear`](crate::Linear) does): its backward
//! computes only the weight and bias gradients, skipping the im2col's product and backward.
//!
//! Slices were not used: dfdx 0.13's `slice` backward *assigns* the incoming gradient instead
//! of adding it, so overlapping slices of one tensor (every kernel offset of a convolution)
//! give wrong input gradients.
//!
//! # Layout of the parameters
//!
//! The weight is kept as a 2-D [`Matrix`] of shape `(out_channels, in_channels * kh * kw)`,
//! each row ordered `(in_channel, kernel_row, kernel_col)`: PyTorch's `(out, in, kh, kw)`
//! weight, flattened after its first axis. In that view, the one the crate's [`Params`] walk
//! and its optimizers see:
//! - a new **output** channel appends one **row** to the weight and one entry to the bias;
//! - a new **input** channel appends `kh * kw` **columns** at the end of every row (the
//!   channel index is the slowest within a row), and nothing to the bias.
//!
//! So growth only appends rows and columns, which is what the growth-aware optimizers assume
//! when they pad their state, and the weight is already the matrix the product needs.

use dfdx::prelude::*;
use rand::Rng;

use crate::grow::expandable::fan_in_bound;
use crate::nn::host_vec;
use crate::nn::linear::{append_column_groups, append_units, grouped_column_norms};
use crate::params::l2_norm;
use crate::params::{Matrix, ParamMut, ParamRef, Params, Vector};
use crate::sampling::uniform;
use crate::{Data, Expandable, GrowError, Real};

mod flat_linear;
mod fused;
mod im2col;

pub use flat_linear::{flatten, FlatLinear};
use im2col::{im2col_gather, Cols, Geometry};

use crate::nn::affine::InputGrad;
use crate::nn::gemm::runs_here;

/// A batch of images, `(batch, channels, height, width)`.
pub type Images<E, D, T = NoneTape> = Tensor<(usize, usize, usize, usize), E, D, T>;

/// A 2-D convolution (cross-correlation, as PyTorch's `conv2d`) with zero padding, runtime
/// channel counts, kernel size, stride and padding.
///
/// Input batches are `(batch, in_channels, height, width)` tensors, traced or not; the output
/// is `(batch, out_channels, out_height, out_width)` with
/// `out = (in + 2 * padding - kernel) / stride + 1` on each axis.
///
/// ```
/// use dfdx_grow::dfdx::prelude::*;
/// use dfdx_grow::rand::{rngs::StdRng, SeedableRng};
/// use dfdx_grow::{flatten, Conv2d, Linear};
///
/// let dev = Cpu::default();
/// let mut rng = StdRng::seed_from_u64(0);
/// let conv = Conv2d::<f32, Cpu>::new(1, 4, 3, 1, 1, &dev, &mut rng).unwrap();
/// let head = Linear::<f32, Cpu>::new(4 * 8 * 8, 10, &dev, &mut rng).unwrap();
/// let x = dev.sample_normal_like(&(2, 1, 8, 8));
/// let y = head.forward(flatten(conv.forward(x).relu()));
/// assert_eq!(*y.shape(), (2, 10));
/// ```
#[derive(Clone, Debug)]
pub struct Conv2d<E: Dtype, D: Device<E>> {
    /// `(out_channels, in_channels * kh * kw)`, rows ordered `(in_channel, kh, kw)`.
    weight: Matrix<E, D>,
    /// `(out_channels,)`.
    bias: Vector<E, D>,
    kernel: (usize, usize),
    stride: usize,
    padding: usize,
}

fn invalid(sizes: Vec<usize>, reason: impl Into<String>) -> GrowError {
    GrowError::InvalidSizes {
        sizes,
        reason: reason.into(),
    }
}

/// The output length of a convolution over `len` positions, or `None` when the kernel does
/// not fit or the padded length overflows.
pub(crate) fn out_len(len: usize, k: usize, stride: usize, pad: usize) -> Option<usize> {
    let padded = len.checked_add(pad.checked_mul(2)?)?;
    Some(padded.checked_sub(k)? / stride + 1)
}

impl<E: Real, D: Device<E>> Conv2d<E, D> {
    /// A layer of `out_c` channels over `in_c` input channels with a square `kernel`, weights
    /// and bias uniform in `[-1/sqrt(fan_in), 1/sqrt(fan_in))`, `fan_in = in_c * kernel^2`
    /// (PyTorch's default for `nn.Conv2d`).
    pub fn new(
        in_c: usize,
        out_c: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        dev: &D,
        rng: &mut impl Rng,
    ) -> Result<Self, GrowError> {
        Self::with_kernel(in_c, out_c, (kernel, kernel), stride, padding, dev, rng)
    }

    /// As [`Conv2d::new`] with a rectangular kernel `(kh, kw)`.
    pub fn with_kernel(
        in_c: usize,
        out_c: usize,
        kernel: (usize, usize),
        stride: usize,
        padding: usize,
        dev: &D,
        rng: &mut impl Rng,
    ) -> Result<Self, GrowError> {
        let sizes = vec![in_c, out_c, kernel.0, kernel.1, stride, padding];
        check_hyper(kernel, stride).map_err(|r| invalid(sizes.clone(), r))?;
        let fan_in = in_c
            .checked_mul(kernel.0)
            .and_then(|n| n.checked_mul(kernel.1))
            .ok_or_else(|| invalid(sizes.clone(), "the fan-in overflows usize"))?;
        let n = fan_in
            .checked_mul(out_c)
            .ok_or_else(|| invalid(sizes, "the weight's size overflows usize"))?;
        let bound = fan_in_bound(fan_in);
        let weight = dev
            .try_tensor_from_vec(uniform(n, bound, rng), (out_c, fan_in))
            .map_err(GrowError::device)?;
        let bias = dev
            .try_tensor_from_vec(uniform(out_c, bound, rng), (out_c,))
            .map_err(GrowError::device)?;
        Ok(Self {
            weight,
            bias,
            kernel,
            stride,
            padding,
        })
    }

    /// A layer from existing tensors: `weight` is `(out_c, in_c * kh * kw)` with rows ordered
    /// `(in_channel, kh, kw)` (a PyTorch `(out, in, kh, kw)` weight, row-major), `bias` has
    /// `out_c` entries.
    pub fn from_parts(
        weight: Matrix<E, D>,
        bias: Vector<E, D>,
        kernel: (usize, usize),
        stride: usize,
        padding: usize,
    ) -> Result<Self, GrowError> {
        let (out, cols) = *weight.shape();
        let sizes = vec![out, cols, kernel.0, kernel.1, stride, padding];
        check_hyper(kernel, stride).map_err(|r| invalid(sizes.clone(), r))?;
        if cols % (kernel.0 * kernel.1) != 0 {
            return Err(invalid(
                sizes,
                format!(
                    "the weight has {cols} columns, not a multiple of kh * kw = {}",
                    kernel.0 * kernel.1
                ),
            ));
        }
        if bias.shape().0 != out {
            return Err(GrowError::ShapeMismatch {
                what: "Conv2d bias".into(),
                expected: out,
                found: bias.shape().0,
            });
        }
        Ok(Self {
            weight,
            bias,
            kernel,
            stride,
            padding,
        })
    }

    /// The number of input channels.
    pub fn in_channels(&self) -> usize {
        self.weight.shape().1 / self.kernel_area()
    }

    /// The number of output channels.
    pub fn out_channels(&self) -> usize {
        self.weight.shape().0
    }

    /// `(kh, kw)`.
    pub fn kernel(&self) -> (usize, usize) {
        self.kernel
    }

    /// The stride (the same on both axes).
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// The zero padding on each side (the same on both axes).
    pub fn padding(&self) -> usize {
        self.padding
    }

    /// The weight, `(out_channels, in_channels * kh * kw)`.
    pub fn weight(&self) -> &Matrix<E, D> {
        &self.weight
    }

    /// The bias, `(out_channels,)`.
    pub fn bias(&self) -> &Vector<E, D> {
        &self.bias
    }

    /// The weight as a host vector, in PyTorch's `(out, in, kh, kw)` order.
    pub fn weight_vec(&self) -> Vec<E> {
        host_vec(&self.weight)
    }

    /// The bias as a host vector.
    pub fn bias_vec(&self) -> Vec<E> {
        host_vec(&self.bias)
    }

    /// The output's `(height, width)` for an input of `(height, width)`, or `None` when the
    /// kernel does not fit in the padded input.
    pub fn output_size(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        Some((
            out_len(h, self.kernel.0, self.stride, self.padding)?,
            out_len(w, self.kernel.1, self.stride, self.padding)?,
        ))
    }

    /// The FLOPs of a forward pass of one `(h, w)` image: the products and the bias, or `None`
    /// when the kernel does not fit.
    pub fn forward_flops(&self, h: usize, w: usize) -> Option<f64> {
        let (oh, ow) = self.output_size(h, w)?;
        let pixels = oh as f64 * ow as f64;
        let out = self.out_channels() as f64;
        Some(pixels * out * (2.0 * self.unit_fan_in() as f64 + 1.0))
    }

    /// Whether this layer can take an input of `shape` (`(batch, channels, height, width)`);
    /// returns the output's `(height, width)`. The forward pass panics where this fails.
    pub fn check_input(
        &self,
        shape: &(usize, usize, usize, usize),
    ) -> Result<(usize, usize), GrowError> {
        let &(b, c, h, w) = shape;
        if c != self.in_channels() {
            return Err(GrowError::ShapeMismatch {
                what: "Conv2d input channels".into(),
                expected: self.in_channels(),
                found: c,
            });
        }
        if b == 0 {
            return Err(invalid(vec![b, c, h, w], "a batch of zero images"));
        }
        self.output_size(h, w).ok_or_else(|| {
            invalid(
                vec![b, c, h, w],
                format!(
                    "the kernel {:?} does not fit in the input padded by {}",
                    self.kernel, self.padding
                ),
            )
        })
    }

    fn kernel_area(&self) -> usize {
        self.kernel.0 * self.kernel.1
    }

    fn geometry(&self, shape: &(usize, usize, usize, usize)) -> Geometry {
        let (oh, ow) = self
            .check_input(shape)
            .unwrap_or_else(|e| panic!("Conv2d::forward: {e}"));
        let &(batch, channels, h, w) = shape;
        Geometry {
            batch,
            channels,
            h,
            w,
            kh: self.kernel.0,
            kw: self.kernel.1,
            stride: self.stride,
            pad: self.padding,
            oh,
            ow,
        }
    }

    /// The forward pass with the device-generic im2col (dfdx's `concat_along` and `gather`),
    /// the one every device other than `Cpu` takes. Exposed so that it can be tested and
    /// timed on the CPU.
    pub fn forward_portable<T: Tape<E, D>>(
        &self,
        x: Images<E, D, T>,
    ) -> Result<Images<E, D, T>, D::Err> {
        let g = self.geometry(x.shape());
        let cols = im2col_gather(x, &g)?;
        self.project(cols, &g)
    }

    /// `[weight | bias] @ cols[b]` for every image `b` (the last row of `cols[b]` is ones, so
    /// the product adds the bias), as `(batch, out, oh, ow)`.
    fn project<T: Tape<E, D>>(
        &self,
        cols: Cols<E, D, T>,
        g: &Geometry,
    ) -> Result<Images<E, D, T>, D::Err> {
        let out = self.out_channels();
        let bias = self.bias.retaped::<T>().try_reshape_like(&(out, 1))?;
        let w = (self.weight.retaped::<T>(), bias).try_concat_along(Axis::<1>)?;
        // A broadcast is a stride-0 view (same tensor id): dfdx's batched matmul adds every
        // image's gradient straight into the one `[weight | bias]` gradient.
        w.try_broadcast_like::<_, Axis<0>>(&(g.batch, out, g.fields() + 1))?
            .try_matmul(cols)?
            .try_reshape_like(&(g.batch, out, g.oh, g.ow))
    }

    /// The fan-in of output channel `u`: its `in_channels * kh * kw` weights, ordered
    /// `(in_channel, kh, kw)`, and its bias; `None` past the last channel.
    pub fn out_channel(&self, u: usize) -> Option<(Vec<E>, E)> {
        let (out, cols) = *self.weight.shape();
        if u >= out {
            return None;
        }
        let w = host_vec(&self.weight);
        let b = host_vec(&self.bias);
        Some((w[u * cols..(u + 1) * cols].to_vec(), b[u]))
    }

    /// The fan-out of input channel `c`: its `out_channels * kh * kw` weights, ordered
    /// `(out_channel, kh, kw)`; `None` past the last channel.
    pub fn in_channel(&self, c: usize) -> Option<Vec<E>> {
        let (out, cols) = *self.weight.shape();
        let area = self.kernel_area();
        if c >= cols / area {
            return None;
        }
        let w = host_vec(&self.weight);
        let mut v = Vec::with_capacity(out * area);
        for r in 0..out {
            v.extend_from_slice(&w[r * cols + c * area..r * cols + (c + 1) * area]);
        }
        Some(v)
    }

    /// Appends `bias.len()` output channels: `fan_in` holds their weights, unit-major
    /// (`bias.len()` x `in_channels * kh * kw`, each ordered `(in_channel, kh, kw)`).
    ///
    /// Appends rows to the weight matrix and entries to the bias. Sizes are checked first;
    /// on error nothing changes.
    pub fn grow_out_channels(&mut self, fan_in: &[E], bias: &[E]) -> Result<(), GrowError> {
        if bias.is_empty() {
            return Err(GrowError::ZeroUnits);
        }
        append_units(
            &mut self.weight,
            &mut self.bias,
            fan_in,
            bias,
            "Conv2d new output channels' fan-in",
        )
    }

    /// Appends `fan_out.len() / (out_channels * kh * kw)` input channels: `fan_out` holds their
    /// weights, unit-major (k x `out_channels * kh * kw`, each ordered `(out_channel, kh, kw)`),
    /// after multiplying the whole fan-out of each existing input channel listed in `rescale`
    /// by its factor.
    ///
    /// Appends `k * kh * kw` columns at the end of every weight row; the bias is unchanged.
    /// Sizes are checked first; on error nothing changes.
    pub fn grow_in_channels(
        &mut self,
        fan_out: &[E],
        rescale: &[(usize, E)],
    ) -> Result<(), GrowError> {
        let (out, cols) = *self.weight.shape();
        let area = self.kernel_area();
        let block = out * area;
        if fan_out.is_empty() {
            return Err(GrowError::ZeroUnits);
        }
        if block == 0 || !fan_out.len().is_multiple_of(block) {
            return Err(GrowError::ShapeMismatch {
                what: "Conv2d new input channels' fan-out (a multiple of out * kh * kw)".into(),
                expected: block,
                found: fan_out.len(),
            });
        }
        let k = fan_out.len() / block;
        let in_c = cols / area;
        if let Some(&(c, _)) = rescale.iter().find(|(c, _)| *c >= in_c) {
            return Err(GrowError::ShapeMismatch {
                what: "Conv2d rescaled input channel (below the input channels)".into(),
                expected: in_c,
                found: c,
            });
        }
        append_column_groups(&mut self.weight, area, k, fan_out, rescale)
    }
}

fn check_hyper(kernel: (usize, usize), stride: usize) -> Result<(), String> {
    if kernel.0 == 0 || kernel.1 == 0 {
        return Err(format!("the kernel {kernel:?} has a zero side"));
    }
    if stride == 0 {
        return Err("the stride is 0".into());
    }
    Ok(())
}

impl<E: Dtype, D: Device<E>> Params<E, D> for Conv2d<E, D> {
    /// `"weight"` (a `(out, in * kh * kw)` matrix) and `"bias"`.
    fn visit(&self, f: &mut dyn FnMut(&str, ParamRef<'_, E, D>)) {
        f("weight", ParamRef::Matrix(&self.weight));
        f("bias", ParamRef::Vector(&self.bias));
    }

    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_, E, D>)) {
        f("weight", ParamMut::Matrix(&mut self.weight));
        f("bias", ParamMut::Vector(&mut self.bias));
    }
}

/// Units are channels: an output unit's fan-in is its `in_channels * kh * kw` weights
/// (ordered `(in_channel, kh, kw)`), an input unit's fan-out the `out_channels * kh * kw`
/// weights that read it (ordered `(out_channel, kh, kw)`). The default init bound,
/// `1 / sqrt(in_channels * kh * kw)`, is PyTorch's for `nn.Conv2d`.
impl<E: Real, D: Device<E>> Expandable<E> for Conv2d<E, D> {
    fn in_width(&self) -> usize {
        self.in_channels()
    }

    fn out_width(&self) -> usize {
        self.out_channels()
    }

    fn unit_fan_in(&self) -> usize {
        self.weight.shape().1
    }

    fn unit_fan_out(&self) -> usize {
        self.out_channels() * self.kernel_area()
    }

    fn output_unit(&self, unit: usize) -> Option<(Vec<E>, E)> {
        self.out_channel(unit)
    }

    fn input_column(&self, unit: usize) -> Option<Vec<E>> {
        self.in_channel(unit)
    }

    fn output_norms(&self) -> Vec<f64> {
        let w = host_vec(&self.weight);
        if self.unit_fan_in() == 0 {
            return vec![0.0; self.out_channels()];
        }
        w.chunks(self.unit_fan_in()).map(l2_norm).collect()
    }

    fn output_biases(&self) -> Vec<f64> {
        let b = host_vec(&self.bias);
        b.iter().map(|b| b.to_f64().unwrap_or(f64::NAN)).collect()
    }

    fn input_norms(&self) -> Vec<f64> {
        let w = host_vec(&self.weight);
        grouped_column_norms(
            &w,
            self.unit_fan_in(),
            self.kernel_area(),
            self.in_channels(),
        )
    }

    fn grow_outputs(&mut self, fan_in: &[E], bias: &[E]) -> Result<(), GrowError> {
        self.grow_out_channels(fan_in, bias)
    }

    fn grow_inputs(&mut self, fan_out: &[E], rescale: &[(usize, E)]) -> Result<(), GrowError> {
        self.grow_in_channels(fan_out, rescale)
    }
}

impl<E: Real, D: Device<E>, T: Tape<E, D>> Module<Images<E, D, T>> for Conv2d<E, D> {
    type Output = Images<E, D, T>;
    type Error = D::Err;

    /// Panics where [`Conv2d::check_input`] fails (as dfdx's own layers panic on shapes).
    fn try_forward(&self, x: Images<E, D, T>) -> Result<Self::Output, D::Err> {
        let g = self.geometry(x.shape());
        if runs_here::<E, D>() {
            return fused::conv(self, x, &g, InputGrad::Wanted);
        }
        let cols = im2col_gather(x, &g)?;
        self.project(cols, &g)
    }
}

/// A first layer on data: the same output and weight and bias gradients as the plain
/// forward, without the input's gradient (see [`Data`]), which saves one product and the
/// im2col's backward in the backward pass. On devices other than the `Cpu`, the plain forward.
impl<E: Real, D: Device<E>, T: Tape<E, D>> Module<Data<Images<E, D, T>>> for Conv2d<E, D> {
    type Output = Images<E, D, T>;
    type Error = D::Err;

    /// Panics where [`Conv2d::check_input`] fails.
    fn try_forward(&self, x: Data<Images<E, D, T>>) -> Result<Self::Output, D::Err> {
        if runs_here::<E, D>() {
            let g = self.geometry(x.0.shape());
            return fused::conv(self, x.0, &g, InputGrad::Skipped);
        }
        self.try_forward(x.0)
    }
}
