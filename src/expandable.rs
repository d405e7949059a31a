//! The `Expandable` trait: a layer that can report and grow its widths.

use rand::Rng;

use crate::{GrowError, Init, Real};

/// A layer whose number of inputs and outputs can grow.
///
/// Growing hidden units between a *producer* (the layer whose outputs are the units) and a
/// *consumer* (the layer that reads them) means `grow_outputs` on the producer and
/// `grow_inputs` on the consumer with the same `k`; [`grow_between`] does both from an
/// [`Init`], atomically. New rows and columns are always appended after the existing ones,
/// which is what the growth-aware optimizers assume when they pad their state.
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
///         let k = fan_out.len() / self.out;
///         let mut w = Vec::with_capacity(self.out * (self.inp + k));
///         for r in 0..self.out {
///             let mut row = self.w[r * self.inp..(r + 1) * self.inp].to_vec();
///             for &(c, f) in rescale { row[c] *= f; }
///             w.extend(row);
///             w.extend_from_slice(&fan_out[r * k..(r + 1) * k]);
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
    /// The number of inputs.
    fn in_width(&self) -> usize;

    /// The number of outputs (units).
    fn out_width(&self) -> usize;

    /// The fan-in weights and bias of output unit `unit`, or `None` past the width.
    fn output_unit(&self, unit: usize) -> Option<(Vec<E>, E)>;

    /// The fan-out column of input `unit` (one entry per output), or `None` past the width.
    fn input_column(&self, unit: usize) -> Option<Vec<E>>;

    /// Appends `bias.len()` output units: `fan_in` holds their weights, row-major
    /// (`bias.len()` x [`Self::in_width`]).
    fn grow_outputs(&mut self, fan_in: &[E], bias: &[E]) -> Result<(), GrowError>;

    /// Appends `fan_out.len() / out_width` input columns (`fan_out` is row-major,
    /// [`Self::out_width`] x k), after multiplying the existing columns listed in `rescale`.
    fn grow_inputs(&mut self, fan_out: &[E], rescale: &[(usize, E)]) -> Result<(), GrowError>;
}

/// Adds `k` units between `producer` and `consumer`, initialised by `init`.
///
/// Either both layers grow or neither does: every check runs before anything changes, and a
/// failure in the second layer restores the first.
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
            layer: 1,
            expected: consumer.in_width(),
            found: producer.out_width(),
        });
    }
    let units = init.plan(producer, consumer, k, rng)?;
    let saved = producer.clone();
    producer.grow_outputs(&units.fan_in, &units.bias)?;
    if let Err(e) = consumer.grow_inputs(&units.fan_out, &units.rescale) {
        *producer = saved;
        return Err(e);
    }
    Ok(())
}
