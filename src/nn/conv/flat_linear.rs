//! The bridge from convolutions to linear layers: [`flatten`] and [`FlatLinear`], whose
//! input units are channels of `h x w` columns each.

use dfdx::prelude::*;
use rand::Rng;

use super::{invalid, Images};
use crate::nn::linear::grouped_column_norms;
use crate::params::{ParamMut, ParamRef, Params};
use crate::{Expandable, GrowError, Linear, Real};

/// `(batch, c, h, w) -> (batch, c * h * w)`, channel-major (`c` slowest, then `h`, then `w`,
/// as PyTorch's `flatten(1)`): the input of a [`Linear`] after a convolution. Copies only
/// when the input is not contiguous (a convolution's output is a permuted view).
pub fn flatten<E: Dtype, D: Device<E>, T: Tape<E, D>>(
    x: Images<E, D, T>,
) -> Tensor<(usize, usize), E, D, T> {
    let (b, c, h, w) = *x.shape();
    x.reshape_like(&(b, c * h * w))
}

/// A [`Linear`] over flattened `(channels, h, w)` feature maps: [`flatten`], then the
/// product. Its input units are the channels, each `h * w` weight columns (channel-major, as
/// `flatten` lays them out), so it can read a convolution's channel site: a new channel
/// appends `h * w` columns at the end of every row, its fan-out is `out * h * w` weights.
///
/// ```
/// use dfdx_grow::dfdx::prelude::*;
/// use dfdx_grow::rand::{rngs::StdRng, SeedableRng};
/// use dfdx_grow::{grow_between, Conv2d, Expandable, FlatLinear, Init};
///
/// let (dev, mut rng) = (Cpu::default(), StdRng::seed_from_u64(0));
/// let mut conv = Conv2d::<f64, Cpu>::new(1, 4, 3, 1, 0, &dev, &mut rng).unwrap();
/// let mut head = FlatLinear::new(4, (6, 6), 10, &dev, &mut rng).unwrap();
/// let x = dev.sample_normal_like(&(2, 1, 8, 8));
/// let before = head.forward(conv.forward(x.clone()).relu()).as_vec();
/// grow_between(&mut conv, &mut head, 2, &Init::ZerosOut, &mut rng).unwrap();
/// assert_eq!((head.in_width(), head.linear().weight.shape().1), (6, 6 * 36));
/// let after = head.forward(conv.forward(x).relu()).as_vec();
/// assert!(before.iter().zip(&after).all(|(a, b)| (a - b).abs() < 1e-12));
/// ```
#[derive(Clone, Debug)]
pub struct FlatLinear<E: Dtype, D: Device<E>> {
    linear: Linear<E, D>,
    map: (usize, usize),
}

impl<E: Real, D: Device<E>> FlatLinear<E, D> {
    /// `out` units over `channels` maps of `map = (h, w)`, initialised as
    /// [`Linear::new`] over `channels * h * w` inputs (PyTorch's `nn.Linear` default).
    pub fn new(
        channels: usize,
        map: (usize, usize),
        out: usize,
        dev: &D,
        rng: &mut impl Rng,
    ) -> Result<Self, GrowError> {
        let inputs = channels
            .checked_mul(map.0)
            .and_then(|n| n.checked_mul(map.1))
            .ok_or_else(|| invalid(vec![channels, map.0, map.1], "the input width overflows"))?;
        Self::from_linear(Linear::new(inputs, out, dev, rng)?, map)
    }

    /// Reads `(channels, h, w)` maps with an existing layer, whose input width must be a
    /// multiple of `h * w`.
    pub fn from_linear(linear: Linear<E, D>, map: (usize, usize)) -> Result<Self, GrowError> {
        let inputs = linear.weight.shape().1;
        let group = map.0.checked_mul(map.1).unwrap_or(0);
        if group == 0 || !inputs.is_multiple_of(group) {
            return Err(invalid(
                vec![inputs, map.0, map.1],
                "the layer's input width is not a whole number of (h, w) maps",
            ));
        }
        Ok(Self { linear, map })
    }

    /// The product over the flattened maps.
    pub fn linear(&self) -> &Linear<E, D> {
        &self.linear
    }

    /// The layer without the flattening.
    pub fn into_linear(self) -> Linear<E, D> {
        self.linear
    }

    /// The `(h, w)` of one input map.
    pub fn map_size(&self) -> (usize, usize) {
        self.map
    }

    /// The number of input channels.
    pub fn channels(&self) -> usize {
        self.linear.weight.shape().1 / self.group()
    }

    /// The FLOPs of a forward pass of one example.
    pub fn forward_flops(&self) -> f64 {
        self.linear.forward_flops()
    }

    /// Whether this layer can take an input of `shape` (`(batch >= 1, channels, h, w)`).
    pub fn check_input(&self, shape: &(usize, usize, usize, usize)) -> Result<(), GrowError> {
        let &(b, c, h, w) = shape;
        if b == 0 || (c, h, w) != (self.channels(), self.map.0, self.map.1) {
            return Err(invalid(
                vec![b, c, h, w],
                format!(
                    "FlatLinear takes (batch >= 1, {}, {}, {})",
                    self.channels(),
                    self.map.0,
                    self.map.1
                ),
            ));
        }
        Ok(())
    }

    fn group(&self) -> usize {
        self.map.0 * self.map.1
    }
}

impl<E: Dtype, D: Device<E>> Params<E, D> for FlatLinear<E, D> {
    /// The linear layer's `"weight"` and `"bias"`.
    fn visit(&self, f: &mut dyn FnMut(&str, ParamRef<'_, E, D>)) {
        self.linear.visit(f);
    }

    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_, E, D>)) {
        self.linear.visit_mut(f);
    }
}

/// Input units are channels of `h * w` columns; output units are the linear layer's.
impl<E: Real, D: Device<E>> Expandable<E> for FlatLinear<E, D> {
    fn in_width(&self) -> usize {
        self.channels()
    }

    fn out_width(&self) -> usize {
        self.linear.out_width()
    }

    fn unit_fan_in(&self) -> usize {
        self.linear.in_width()
    }

    fn unit_fan_out(&self) -> usize {
        self.linear.out_width() * self.group()
    }

    fn output_unit(&self, unit: usize) -> Option<(Vec<E>, E)> {
        self.linear.output_unit(unit)
    }

    fn input_column(&self, unit: usize) -> Option<Vec<E>> {
        self.linear.input_group(self.group(), unit)
    }

    fn output_norms(&self) -> Vec<f64> {
        self.linear.output_norms()
    }

    fn output_biases(&self) -> Vec<f64> {
        self.linear.output_biases()
    }

    fn input_norms(&self) -> Vec<f64> {
        let w = self.linear.weight_vec();
        grouped_column_norms(&w, self.unit_fan_in(), self.group(), self.channels())
    }

    fn grow_outputs(&mut self, fan_in: &[E], bias: &[E]) -> Result<(), GrowError> {
        self.linear.grow_outputs(fan_in, bias)
    }

    fn grow_inputs(&mut self, fan_out: &[E], rescale: &[(usize, E)]) -> Result<(), GrowError> {
        if fan_out.is_empty() {
            return Err(GrowError::ZeroUnits);
        }
        self.linear
            .grow_input_groups(self.group(), fan_out, rescale)
    }
}

impl<E: Real, D: Device<E>, T: Tape<E, D>> Module<Images<E, D, T>> for FlatLinear<E, D> {
    type Output = Tensor<(usize, usize), E, D, T>;
    type Error = D::Err;

    /// Panics where [`FlatLinear::check_input`] fails.
    fn try_forward(&self, x: Images<E, D, T>) -> Result<Self::Output, D::Err> {
        if let Err(e) = self.check_input(x.shape()) {
            panic!("FlatLinear::forward: {e}");
        }
        self.linear.try_forward(flatten(x))
    }
}
