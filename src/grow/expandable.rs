//! The `Expandable` trait: a layer that can report and grow its widths.

use rand::Rng;

use crate::{GrowError, Init, Real};

/// A layer whose number of inputs and outputs can grow.
///
/// Growing hidden units between a *producer* (the layer whose outputs are the units) and its
/// *consumers* (the layers that read them) means `grow_outputs` on the producer and
/// `grow_inputs` on every consumer with the same `k`; [`crate::grow_site`] does it for a
/// model's named site, [`grow_between`] for one pair of layers. New units are always appended
/// after the existing ones, which is what the growth-aware optimizers assume when they pad
/// their state.
///
/// A *unit* is one output (a neuron, a channel) and one input (a feature, a channel). A unit's
/// fan-in is the [`unit_fan_in`](Self::unit_fan_in) weights that produce it (all inputs of a
/// linear layer; `in_channels x kh x kw` for a convolution), and an input unit's fan-out is
/// the [`unit_fan_out`](Self::unit_fan_out) weights that read it. Several units are passed
/// unit-major: unit 0's whole vector, then unit 1's, and so on.
///
/// Implementing it for a layer of your own (here a bias-free linear map kept in a `Vec`):
///
/// ```
/// use dfdx_grow::{grow_between, Expandable, GrowError, Init};
/// use dfdx_grow::rand::{rngs::StdRng, SeedableRng};
///
/// #[derive(Clone)]
/// struct Dense { w: Vec<f64>, out: usize, inp: usize } // row-major (out, inp)
///
/// impl Expandable<f64> for Dense {
///     fn in_width(&self) -> usize { self.inp }
///     fn out_width(&self) -> usize { self.out }
///     fn output_unit(&self, u: usize) -> Option<(Vec<f64>, f64)> {
///         (u < self.out).then(|| (self.w[u * self.inp..(u + 1) * self.inp].to_vec(), 0.0))
///     }
///     fn input_column(&self, u: usize) -> Option<Vec<f64>> {
///         (u < self.inp).then(|| (0..self.out).map(|r| self.w[r * self.inp + u]).collect())
///     }
///     fn grow_outputs(&mut self, fan_in: &[f64], bias: &[f64]) -> Result<(), GrowError> {
///         self.w.extend_from_slice(fan_in); // this layer has no bias: `bias` is ignored
///         self.out += bias.len();
///         Ok(())
///     }
///     fn grow_inputs(&mut self, fan_out: &[f64], rescale: &[(usize, f64)]) -> Result<(), GrowError> {
///         let k = fan_out.len() / self.out; // unit-major: k columns of `out` entries
///         let mut w = Vec::with_capacity(self.out * (self.inp + k));
///         for r in 0..self.out {
///             let mut row = self.w[r * self.inp..(r + 1) * self.inp].to_vec();
///             for &(c, f) in rescale { row[c] *= f; }
///             w.extend(row);
///             w.extend((0..k).map(|j| fan_out[j * self.out + r]));
///         }
///         self.w = w;
///         self.inp += k;
///         Ok(())
///     }
/// }
///
/// let mut a = Dense { w: vec![1.0; 3 * 2], out: 3, inp: 2 };
/// let mut b = Dense { w: vec![1.0; 1 * 3], out: 1, inp: 3 };
/// let mut rng = StdRng::seed_from_u64(7);
/// grow_between(&mut a, &mut b, 2, &Init::ZerosOut, &mut rng).unwrap();
/// assert_eq!((a.out_width(), b.in_width()), (5, 5));
/// assert_eq!(&b.w[3..], &[0.0, 0.0]); // new fan-out is zero: the output is unchanged
/// ```
pub trait Expandable<E> {
    /// The number of input units.
    fn in_width(&self) -> usize;

    /// The number of output units.
    fn out_width(&self) -> usize;

    /// The number of weights that produce one output unit (its bias excluded). Default
    /// [`Self::in_width`], as for a linear layer.
    fn unit_fan_in(&self) -> usize {
        self.in_width()
    }

    /// The number of weights that read one input unit. Default [`Self::out_width`], as for a
    /// linear layer.
    fn unit_fan_out(&self) -> usize {
        self.out_width()
    }

    /// The half-width of the uniform distribution a fresh output unit's fan-in is drawn from.
    /// Default `1 / sqrt(unit_fan_in)`, dfdx's and PyTorch's default for linear and
    /// convolution layers.
    fn init_bound(&self) -> f64 {
        fan_in_bound(self.unit_fan_in())
    }

    /// The fan-in weights ([`Self::unit_fan_in`] of them) and bias of output unit `unit`, or
    /// `None` past the width.
    fn output_unit(&self, unit: usize) -> Option<(Vec<E>, E)>;

    /// The fan-out ([`Self::unit_fan_out`] weights) of input unit `unit`, or `None` past the
    /// width.
    fn input_column(&self, unit: usize) -> Option<Vec<E>>;

    /// The L2 norm of every output unit's fan-in weights (bias excluded). The default reads
    /// the units one by one; a layer can do it in one pass.
    fn output_norms(&self) -> Vec<f64>
    where
        E: Real,
    {
        crate::health::output_norms(self)
    }

    /// Every output unit's bias.
    fn output_biases(&self) -> Vec<f64>
    where
        E: Real,
    {
        (0..self.out_width())
            .map(|u| {
                self.output_unit(u)
                    .map_or(f64::NAN, |(_, b)| b.to_f64().unwrap_or(f64::NAN))
            })
            .collect()
    }

    /// The L2 norm of every input unit's fan-out.
    fn input_norms(&self) -> Vec<f64>
    where
        E: Real,
    {
        crate::health::input_norms(self)
    }

    /// Overwrites the fan-in and bias of output units `units` (`fan_in` unit-major, one row
    /// per listed unit), e.g. to give dead units a fresh start. Default: not supported.
    fn replace_outputs(
        &mut self,
        units: &[usize],
        fan_in: &[E],
        bias: &[E],
    ) -> Result<(), GrowError> {
        let _ = (units, fan_in, bias);
        Err(GrowError::Unsupported {
            operation: "overwriting existing output units (replace_outputs)",
        })
    }

    /// Overwrites the fan-out of input units `units` (`fan_out` unit-major). Default: not
    /// supported.
    fn replace_inputs(&mut self, units: &[usize], fan_out: &[E]) -> Result<(), GrowError> {
        let _ = (units, fan_out);
        Err(GrowError::Unsupported {
            operation: "overwriting existing input units (replace_inputs)",
        })
    }

    /// Appends `bias.len()` output units: `fan_in` holds their weights, unit-major
    /// (`bias.len()` x [`Self::unit_fan_in`]).
    fn grow_outputs(&mut self, fan_in: &[E], bias: &[E]) -> Result<(), GrowError>;

    /// Appends `fan_out.len() / unit_fan_out` input units (`fan_out` is unit-major, k x
    /// [`Self::unit_fan_out`]), after multiplying the fan-out of the existing input units
    /// listed in `rescale`.
    fn grow_inputs(&mut self, fan_out: &[E], rescale: &[(usize, E)]) -> Result<(), GrowError>;
}

/// The bound of dfdx's (and PyTorch's) default init: `1 / sqrt(fan_in)`.
pub(crate) fn fan_in_bound(fan_in: usize) -> f64 {
    1.0 / (fan_in.max(1) as f64).sqrt()
}

/// Adds `k` units between `producer` and `consumer`, initialised by `init`.
///
/// Either both layers grow or neither does: every check runs before anything changes, and a
/// failure in the second layer restores the first. A model's sites grow through
/// [`crate::grow_site`], which does the same for any number of consumers.
pub fn grow_between<E: Real, P, C>(
    producer: &mut P,
    consumer: &mut C,
    k: usize,
    init: &Init,
    rng: &mut impl Rng,
) -> Result<(), GrowError>
where
    P: Expandable<E> + Clone,
    C: Expandable<E>,
{
    if k == 0 {
        return Err(GrowError::ZeroUnits);
    }
    if producer.out_width() != consumer.in_width() {
        return Err(GrowError::ShapeMismatch {
            what: "consumer".into(),
            expected: producer.out_width(),
            found: consumer.in_width(),
        });
    }
    let units = init.plan(producer, &[&*consumer], k, rng)?;
    let saved = producer.clone();
    producer.grow_outputs(&units.fan_in, &units.bias)?;
    if let Err(e) = consumer.grow_inputs(&units.fan_out[0], &units.rescale) {
        *producer = saved;
        return Err(e);
    }
    Ok(())
}
