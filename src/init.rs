//! How the weights of newly added units are initialised.

use rand::seq::index::sample;
use rand::Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use crate::linear::{fan_in_bound, uniform};
use crate::{Expandable, GrowError, Real};

/// How new units are initialised when a hidden layer grows.
///
/// "Fan-in" is the new rows of the producing layer (and their bias), "fan-out" the new columns of
/// the consuming layer.
///
/// | init | fan-in | fan-out | exact | learnable |
/// |---|---|---|---|---|
/// | [`Init::ZerosOut`] (default) | fresh random | 0 | yes | yes |
/// | [`Init::MirrorPairs`] | random, same for each pair | `+v` / `-v` | yes (needs even k) | yes, from step one |
/// | [`Init::CopyHalveNoise`] | copy of a random unit | half of it, plus noise | no | yes |
/// | [`Init::ZerosBoth`] | 0 | 0 | yes | no: gradients stay zero |
/// | [`Init::ConstantFanIn`] | constant | 0 | yes | no: units stay identical |
/// | [`Init::CopyHalve`] | copy of a random unit | half of it | yes | no: pair stays collapsed |
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum Init {
    /// New fan-in sampled like a fresh layer, new bias zero, new fan-out zero.
    #[default]
    ZerosOut,
    /// New fan-in, bias and fan-out all zero. Rejected: the new weights never get a gradient.
    ZerosBoth,
    /// New fan-in set to one constant, bias and fan-out zero. Rejected: all new units are
    /// identical and stay identical.
    ConstantFanIn {
        /// The value every new fan-in weight gets.
        value: f64,
    },
    /// Net2Net without noise: copy a random existing unit and halve the fan-out of both copies.
    /// Rejected: the pair gets identical gradients and stays collapsed.
    CopyHalve,
    /// Net2Net with noise: like [`Init::CopyHalve`], then Gaussian noise of standard deviation
    /// `std` is added to the copy's fan-in. Not function-preserving.
    CopyHalveNoise {
        /// Standard deviation of the noise added to the copied fan-in.
        std: f64,
    },
    /// Units come in pairs with the same random fan-in and opposite random fan-out `+v`, `-v`.
    /// Exact, and every new weight gets a non-zero gradient at the first step. Needs an even k.
    MirrorPairs,
}

/// The weights that [`Init::plan`] chose for `k` new units.
#[derive(Clone, Debug, PartialEq)]
pub struct NewUnits<E> {
    /// Fan-in of the new units, row-major (k x producer inputs).
    pub fan_in: Vec<E>,
    /// Bias of the new units (k entries).
    pub bias: Vec<E>,
    /// Fan-out of the new units, row-major (consumer outputs x k).
    pub fan_out: Vec<E>,
    /// Existing consumer columns to multiply (Net2Net's split of the copied units).
    pub rescale: Vec<(usize, E)>,
}

impl Init {
    /// The name used in error messages and the audit log.
    pub fn name(&self) -> &'static str {
        match self {
            Init::ZerosOut => "ZerosOut",
            Init::ZerosBoth => "ZerosBoth",
            Init::ConstantFanIn { .. } => "ConstantFanIn",
            Init::CopyHalve => "CopyHalve",
            Init::CopyHalveNoise { .. } => "CopyHalveNoise",
            Init::MirrorPairs => "MirrorPairs",
        }
    }

    /// Whether growth with this init leaves the network's function unchanged (in exact
    /// arithmetic; in floating point up to rounding). True for every init but
    /// [`Init::CopyHalveNoise`] with a positive `std`, whatever the activation.
    pub fn is_exact(&self) -> bool {
        !matches!(self, Init::CopyHalveNoise { std } if *std != 0.0)
    }

    /// Whether the design accepts this init: the rejected ones are kept to show their failure.
    pub fn is_learnable(&self) -> bool {
        !matches!(
            self,
            Init::ZerosBoth | Init::ConstantFanIn { .. } | Init::CopyHalve
        )
    }

    /// Checks that the init can add `k` units (MirrorPairs needs an even `k`; values must be
    /// finite) without sampling anything.
    pub fn check(&self, k: usize) -> Result<(), GrowError> {
        let bad = |reason: String| {
            Err(GrowError::InitMismatch {
                init: self.name(),
                reason,
            })
        };
        match self {
            Init::MirrorPairs if !k.is_multiple_of(2) => bad(format!(
                "units come in +v/-v pairs, so k must be even (got {k})"
            )),
            Init::ConstantFanIn { value } if !value.is_finite() => {
                bad(format!("value must be finite (got {value})"))
            }
            Init::CopyHalveNoise { std } if !std.is_finite() || *std < 0.0 => {
                bad(format!("std must be finite and >= 0 (got {std})"))
            }
            _ => Ok(()),
        }
    }

    /// Chooses the weights of `k` new units between `producer` and `consumer`.
    pub fn plan<E: Real>(
        &self,
        producer: &impl Expandable<E>,
        consumer: &impl Expandable<E>,
        k: usize,
        rng: &mut impl Rng,
    ) -> Result<NewUnits<E>, GrowError> {
        self.check(k)?;
        let (inp, width, out) = (
            producer.in_width(),
            producer.out_width(),
            consumer.out_width(),
        );
        let cast = |x: f64| E::from_f64(x).unwrap_or_else(E::zero);
        let zeros = |n: usize| vec![E::zero(); n];
        let mut units = NewUnits {
            fan_in: zeros(k * inp),
            bias: zeros(k),
            fan_out: zeros(out * k),
            rescale: Vec::new(),
        };
        match self {
            Init::ZerosOut => units.fan_in = uniform(k * inp, fan_in_bound(inp), rng),
            Init::ZerosBoth => {}
            Init::ConstantFanIn { value } => units.fan_in = vec![cast(*value); k * inp],
            Init::CopyHalve | Init::CopyHalveNoise { .. } => {
                copy_units(&mut units, producer, consumer, k, rng)?;
                if let Init::CopyHalveNoise { std } = self {
                    let noise = Normal::new(0.0, *std).map_err(|e| GrowError::InitMismatch {
                        init: self.name(),
                        reason: e.to_string(),
                    })?;
                    for w in &mut units.fan_in {
                        *w += cast(noise.sample(rng));
                    }
                }
            }
            Init::MirrorPairs => {
                let half = k / 2;
                let rows: Vec<E> = uniform(half * inp, fan_in_bound(inp), rng);
                let cols: Vec<E> = uniform(out * half, fan_in_bound(width + k), rng);
                for p in 0..half {
                    for twin in [2 * p, 2 * p + 1] {
                        units.fan_in[twin * inp..(twin + 1) * inp]
                            .copy_from_slice(&rows[p * inp..(p + 1) * inp]);
                    }
                    for r in 0..out {
                        let v = cols[r * half + p];
                        units.fan_out[r * k + 2 * p] = v;
                        units.fan_out[r * k + 2 * p + 1] = -v;
                    }
                }
            }
        }
        Ok(units)
    }
}

/// Net2Net's split: each new unit copies a random existing unit (distinct while they last),
/// and every copied unit's fan-out is shared equally among its copies.
fn copy_units<E: Real>(
    units: &mut NewUnits<E>,
    producer: &impl Expandable<E>,
    consumer: &impl Expandable<E>,
    k: usize,
    rng: &mut impl Rng,
) -> Result<(), GrowError> {
    let (inp, width) = (producer.in_width(), producer.out_width());
    if width == 0 {
        return Err(GrowError::InitMismatch {
            init: "CopyHalve",
            reason: "there is no existing unit to copy".into(),
        });
    }
    let mut sources = Vec::with_capacity(k);
    while sources.len() < k {
        let n = (k - sources.len()).min(width);
        sources.extend(sample(rng, width, n));
    }
    let mut copies = vec![1usize; width];
    for &s in &sources {
        copies[s] += 1;
    }
    let out = consumer.out_width();
    let missing = |u: usize| GrowError::InitMismatch {
        init: "CopyHalve",
        reason: format!("unit {u} could not be read"),
    };
    for (j, &s) in sources.iter().enumerate() {
        let (row, b) = producer.output_unit(s).ok_or_else(|| missing(s))?;
        units.fan_in[j * inp..(j + 1) * inp].copy_from_slice(&row);
        units.bias[j] = b;
        let col = consumer.input_column(s).ok_or_else(|| missing(s))?;
        let share = E::one() / E::from_usize(copies[s]).unwrap_or_else(E::one);
        for (r, &w) in col.iter().enumerate().take(out) {
            units.fan_out[r * k + j] = w * share;
        }
    }
    for (s, &c) in copies.iter().enumerate().filter(|(_, &c)| c > 1) {
        units
            .rescale
            .push((s, E::one() / E::from_usize(c).unwrap_or_else(E::one)));
    }
    Ok(())
}
