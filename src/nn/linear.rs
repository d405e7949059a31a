//! A linear layer whose widths are decided at run time, so it can grow.

use dfdx::prelude::*;
use rand::Rng;

use crate::grow::expandable::fan_in_bound;
use crate::nn::host_vec;
use crate::params::{Matrix, ParamMut, ParamRef, Params, Vector};
use crate::{Expandable, GrowError, Real};

/// `y = x W^T + b`, with `W` of shape (out, in) and `b` of out entries, sizes known only at run
/// time.
///
/// dfdx 0.13's own `nn::Linear<I, O>` fixes its size in the type; this one holds runtime-sized
/// dfdx tensors and forwards batches `Tensor<(usize, usize), E, D, T>`, traced or not. On the
/// [`Cpu`] device its products run through gemm's AVX-512 kernels where the CPU has them, with
/// a backward op of the crate's own; on other devices through dfdx's ops. The results agree
/// to rounding.
///
/// ```
/// use dfdx_grow::dfdx::prelude::*;
/// use dfdx_grow::rand::{rngs::StdRng, SeedableRng};
/// use dfdx_grow::Linear;
///
/// let dev = Cpu::default();
/// let mut rng = StdRng::seed_from_u64(0);
/// let layer = Linear::<f32, Cpu>::new(4, 3, &dev, &mut rng).unwrap();
/// let y = layer.forward(dev.sample_normal_like(&(2, 4)));
/// assert_eq!(*y.shape(), (2, 3));
/// ```
#[derive(Clone, Debug)]
pub struct Linear<E: Dtype, D: Device<E>> {
    /// Weight, shape (out, in).
    pub weight: Matrix<E, D>,
    /// Bias, shape (out,).
    pub bias: Vector<E, D>,
}

impl<E: Real, D: Device<E>> Linear<E, D> {
    /// A layer of `out` units over `inp` inputs, weights and bias uniform in
    /// `[-1/sqrt(inp), 1/sqrt(inp))` as dfdx's and PyTorch's defaults.
    pub fn new(inp: usize, out: usize, dev: &D, rng: &mut impl Rng) -> Result<Self, GrowError> {
        let bound = fan_in_bound(inp);
        let n = inp
            .checked_mul(out)
            .ok_or_else(|| GrowError::InvalidSizes {
                sizes: vec![inp, out],
                reason: "the weight's size overflows usize".into(),
            })?;
        let weight = dev
            .try_tensor_from_vec(crate::sampling::uniform(n, bound, rng), (out, inp))
            .map_err(GrowError::device)?;
        let bias = dev
            .try_tensor_from_vec(crate::sampling::uniform(out, bound, rng), (out,))
            .map_err(GrowError::device)?;
        Ok(Self { weight, bias })
    }

    /// A layer from existing tensors; the bias must have one entry per weight row.
    pub fn from_parts(weight: Matrix<E, D>, bias: Vector<E, D>) -> Result<Self, GrowError> {
        let (out, _) = *weight.shape();
        if bias.shape().0 != out {
            return Err(GrowError::ShapeMismatch {
                what: "Linear bias".into(),
                expected: out,
                found: bias.shape().0,
            });
        }
        Ok(Self { weight, bias })
    }

    /// The weight as a host vector, row-major.
    pub fn weight_vec(&self) -> Vec<E> {
        host_vec(&self.weight)
    }

    /// The bias as a host vector.
    pub fn bias_vec(&self) -> Vec<E> {
        host_vec(&self.bias)
    }

    /// The FLOPs of a forward pass of one example: the product and the bias.
    pub fn forward_flops(&self) -> f64 {
        let (out, inp) = *self.weight.shape();
        2.0 * inp as f64 * out as f64 + out as f64
    }
}

impl<E: Real, D: Device<E>> Expandable<E> for Linear<E, D> {
    fn in_width(&self) -> usize {
        self.weight.shape().1
    }

    fn out_width(&self) -> usize {
        self.weight.shape().0
    }

    fn output_unit(&self, unit: usize) -> Option<(Vec<E>, E)> {
        let (out, inp) = *self.weight.shape();
        if unit >= out {
            return None;
        }
        let w = host_vec(&self.weight);
        let b = host_vec(&self.bias);
        Some((w[unit * inp..(unit + 1) * inp].to_vec(), b[unit]))
    }

    fn input_column(&self, unit: usize) -> Option<Vec<E>> {
        let (out, inp) = *self.weight.shape();
        if unit >= inp {
            return None;
        }
        let w = host_vec(&self.weight);
        Some((0..out).map(|r| w[r * inp + unit]).collect())
    }

    fn output_norms(&self) -> Vec<f64> {
        let w = host_vec(&self.weight);
        if self.in_width() == 0 {
            return vec![0.0; self.out_width()];
        }
        w.chunks(self.in_width())
            .map(crate::params::l2_norm)
            .collect()
    }

    fn output_biases(&self) -> Vec<f64> {
        let b = host_vec(&self.bias);
        b.iter().map(|b| b.to_f64().unwrap_or(f64::NAN)).collect()
    }

    fn input_norms(&self) -> Vec<f64> {
        let inp = self.in_width();
        grouped_column_norms(&host_vec(&self.weight), inp, 1, inp)
    }

    fn replace_outputs(
        &mut self,
        units: &[usize],
        fan_in: &[E],
        bias: &[E],
    ) -> Result<(), GrowError> {
        let (out, inp) = *self.weight.shape();
        check_units(units, out, fan_in.len(), inp, bias.len())?;
        let (mut w, mut b) = (host_vec(&self.weight), host_vec(&self.bias));
        for (j, &u) in units.iter().enumerate() {
            w[u * inp..(u + 1) * inp].copy_from_slice(&fan_in[j * inp..(j + 1) * inp]);
            b[u] = bias[j];
        }
        // In place: the tensors keep their ids.
        self.weight.copy_from(&w);
        self.bias.copy_from(&b);
        Ok(())
    }

    fn replace_inputs(&mut self, units: &[usize], fan_out: &[E]) -> Result<(), GrowError> {
        let (out, inp) = *self.weight.shape();
        check_units(units, inp, fan_out.len(), out, units.len())?;
        let mut w = host_vec(&self.weight);
        for (j, &u) in units.iter().enumerate() {
            for r in 0..out {
                w[r * inp + u] = fan_out[j * out + r];
            }
        }
        self.weight.copy_from(&w);
        Ok(())
    }

    fn grow_outputs(&mut self, fan_in: &[E], bias: &[E]) -> Result<(), GrowError> {
        append_units(
            &mut self.weight,
            &mut self.bias,
            fan_in,
            bias,
            "Linear new units' fan-in",
        )
    }

    fn grow_inputs(&mut self, fan_out: &[E], rescale: &[(usize, E)]) -> Result<(), GrowError> {
        self.grow_input_groups(1, fan_out, rescale)
    }
}

/// Appends `bias.len()` rows to `weight` (their values `fan_in`, row-major) and the entries
/// `bias` to `bias_vec`: what a new output unit is, in a layer whose weight is a matrix of
/// one row per unit (a linear layer; a convolution's flattened kernels). Both tensors are
/// built before either is stored, so an error (`what` names the layer) changes nothing.
pub(crate) fn append_units<E: Real, D: Device<E>>(
    weight: &mut Matrix<E, D>,
    bias_vec: &mut Vector<E, D>,
    fan_in: &[E],
    bias: &[E],
    what: &str,
) -> Result<(), GrowError> {
    let (out, cols) = *weight.shape();
    let k = bias.len();
    if Some(fan_in.len()) != k.checked_mul(cols) {
        return Err(GrowError::ShapeMismatch {
            what: what.into(),
            expected: k.saturating_mul(cols),
            found: fan_in.len(),
        });
    }
    // One allocation of the final size, the old rows copied in, the new ones appended: the
    // cheapest way to append rows on any device (only the old rows are zeroed first, as
    // `copy_into` writes into initialised memory).
    let append = |old: usize, new: &[E], copy: &dyn Fn(&mut [E])| {
        let mut v = Vec::with_capacity(old + new.len());
        v.resize(old, E::zero());
        copy(&mut v);
        v.extend_from_slice(new);
        v
    };
    let w = append(out * cols, fan_in, &|v| weight.copy_into(v));
    let b = append(out, bias, &|v| bias_vec.copy_into(v));
    let dev = weight.device().clone();
    let new_weight = dev
        .try_tensor_from_vec(w, (out + k, cols))
        .map_err(GrowError::device)?;
    let new_bias = dev
        .try_tensor_from_vec(b, (out + k,))
        .map_err(GrowError::device)?;
    *weight = new_weight;
    *bias_vec = new_bias;
    Ok(())
}

/// Appends `k` input units of `group` columns each to `weight` (a row-major matrix whose
/// input unit `u` owns columns `u * group .. (u + 1) * group` of every row): `fan_out` is
/// unit-major, each unit's block row-major (rows x group), and `rescale` multiplies every
/// column of the listed existing units first. What a new input unit is to a linear layer
/// (`group` 1, or `h x w` after a flatten) and a new input channel to a convolution (`group`
/// = the kernel's area). The caller has checked the sizes.
pub(crate) fn append_column_groups<E: Real, D: Device<E>>(
    weight: &mut Matrix<E, D>,
    group: usize,
    k: usize,
    fan_out: &[E],
    rescale: &[(usize, E)],
) -> Result<(), GrowError> {
    let (out, cols) = *weight.shape();
    let per_unit = out * group;
    let mut old = vec![E::zero(); out * cols];
    weight.copy_into(&mut old);
    for &(unit, factor) in rescale {
        for r in 0..out {
            for x in &mut old[r * cols + unit * group..r * cols + (unit + 1) * group] {
                *x *= factor;
            }
        }
    }
    let width = cols + k * group;
    let mut w = Vec::with_capacity(out * width);
    for r in 0..out {
        w.extend_from_slice(&old[r * cols..(r + 1) * cols]);
        for j in 0..k {
            let unit = &fan_out[j * per_unit..(j + 1) * per_unit];
            w.extend_from_slice(&unit[r * group..(r + 1) * group]);
        }
    }
    *weight = weight
        .device()
        .clone()
        .try_tensor_from_vec(w, (out, width))
        .map_err(GrowError::device)?;
    Ok(())
}

/// The L2 norm of every input unit's fan-out in a row-major matrix of rows of `row_len`
/// values, where input unit `u` owns the columns `u * group .. (u + 1) * group` of every row.
pub(crate) fn grouped_column_norms<E: Real>(
    w: &[E],
    row_len: usize,
    group: usize,
    units: usize,
) -> Vec<f64> {
    let mut sums = vec![0.0f64; units];
    if row_len == 0 || group == 0 {
        return sums;
    }
    for row in w.chunks(row_len) {
        for (s, block) in sums.iter_mut().zip(row.chunks(group)) {
            *s += crate::params::l2_norm(block).powi(2);
        }
    }
    sums.into_iter().map(f64::sqrt).collect()
}

/// Checks a list of `units` below `width` with `values` of `per_unit` each and `n` extras.
fn check_units(
    units: &[usize],
    width: usize,
    values: usize,
    per_unit: usize,
    n: usize,
) -> Result<(), GrowError> {
    if let Some(&u) = units.iter().find(|&&u| u >= width) {
        return Err(GrowError::ShapeMismatch {
            what: "a unit to replace".into(),
            expected: width,
            found: u,
        });
    }
    if Some(values) != units.len().checked_mul(per_unit) || n != units.len() {
        return Err(GrowError::ShapeMismatch {
            what: "the values of the units to replace".into(),
            expected: units.len().saturating_mul(per_unit),
            found: values,
        });
    }
    Ok(())
}

impl<E: Real, D: Device<E>> Linear<E, D> {
    /// Appends input units of `group` columns each (e.g. the `h x w` positions of a channel
    /// that a flattened feature map feeds in): `fan_out` is unit-major, each unit's block
    /// row-major (out x group); `rescale` multiplies every column of the listed input units.
    ///
    /// [`Linear::grow_inputs`] is the case `group = 1`.
    pub fn grow_input_groups(
        &mut self,
        group: usize,
        fan_out: &[E],
        rescale: &[(usize, E)],
    ) -> Result<(), GrowError> {
        let (out, inp) = *self.weight.shape();
        let per_unit = out.saturating_mul(group);
        if per_unit == 0 || !fan_out.len().is_multiple_of(per_unit) || !inp.is_multiple_of(group) {
            return Err(GrowError::ShapeMismatch {
                what: format!("Linear::grow_inputs fan-out (units of {group} column(s))"),
                expected: per_unit,
                found: fan_out.len(),
            });
        }
        let k = fan_out.len() / per_unit;
        if let Some(&(unit, _)) = rescale.iter().find(|(u, _)| *u >= inp / group) {
            return Err(GrowError::ShapeMismatch {
                what: "Linear::grow_inputs rescaled unit".into(),
                expected: inp / group,
                found: unit,
            });
        }
        append_column_groups(&mut self.weight, group, k, fan_out, rescale)
    }

    /// The fan-out of input unit `unit` made of `group` columns, row-major (out x group).
    pub fn input_group(&self, group: usize, unit: usize) -> Option<Vec<E>> {
        let (out, inp) = *self.weight.shape();
        if group == 0 || (unit + 1) * group > inp {
            return None;
        }
        let w = host_vec(&self.weight);
        Some(
            (0..out)
                .flat_map(|r| w[r * inp + unit * group..r * inp + (unit + 1) * group].to_vec())
                .collect(),
        )
    }
}

impl<E: Dtype, D: Device<E>> Params<E, D> for Linear<E, D> {
    fn visit(&self, f: &mut dyn FnMut(&str, ParamRef<'_, E, D>)) {
        f("weight", ParamRef::Matrix(&self.weight));
        f("bias", ParamRef::Vector(&self.bias));
    }

    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_, E, D>)) {
        f("weight", ParamMut::Matrix(&mut self.weight));
        f("bias", ParamMut::Vector(&mut self.bias));
    }
}
