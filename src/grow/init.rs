//! How the weights of newly added units are initialised.

use rand::seq::index::sample;
use rand::RngCore;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use crate::grow::expandable::fan_in_bound;
use crate::sampling::uniform;
use crate::{Expandable, GrowError, Real};

/// How new units are initialised when a hidden layer grows.
///
/// "Fan-in" is the new rows of the producing layer (and their bias), "fan-out" the new columns of
/// the consuming layer.
///
/// | init | fan-in | fan-out | exact | learnable |
/// |---|---|---|---|---|
/// | [`Init::ZerosOut`] (default) | random, scaled like the existing units' | 0 | yes | yes |
/// | [`Init::ZerosOutFresh`] | fresh random, like a new layer | 0 | yes | yes, but most new units die mid-run |
/// | [`Init::MirrorPairs`] | random, same for each pair | `+v` / `-v` | yes (needs even k) | yes, from step one |
/// | [`Init::CopyHalveNoise`] | copy of a random unit | half of it, plus noise | no | yes |
/// | [`Init::ZerosBoth`] | 0 | 0 | yes | no: gradients stay zero |
/// | [`Init::ConstantFanIn`] | constant | 0 | yes | no: units stay identical |
/// | [`Init::CopyHalve`] | copy of a random unit | half of it | yes | no: pair stays collapsed |
/// | [`Init::GradMax`] | 0 (or `epsilon` x fresh) | top singular vectors of `E[g h^T]` | yes when `act(0) = 0` and `epsilon = 0` | yes, where `act'(0) != 0` |
/// | [`Init::Tiny`] | from the statistics | from the statistics | no: the probe check applies | yes |
///
/// The last two read a site's statistics on a batch (see [`crate::informed`]): plan them with
/// [`crate::informed::plan_informed`] or grow with [`crate::grow_site_informed`];
/// [`Init::plan`] refuses them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum Init {
    /// New fan-out zero; new fan-in sampled like a fresh layer, then each row scaled to the
    /// mean norm of the existing units' fan-in, and new biases set to their mean bias, so the
    /// new units start on the scale the network has trained its units to (a fresh layer's
    /// scale is what the existing units started from, not where they are). With
    /// [`crate::optim::AdamConfig::new_unit_eps`] this keeps new units alive mid-run; see the
    /// README. A site with no unit yet falls back to [`Init::ZerosOutFresh`].
    #[default]
    ZerosOut,
    /// New fan-in sampled like a fresh layer, new bias zero, new fan-out zero: the behaviour
    /// before [`Init::ZerosOut`] matched the existing units, kept for comparison.
    ZerosOutFresh,
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
    /// GradMax (Evci et al., 2022): new fan-in and bias zero, new fan-out along the top left
    /// singular vectors of `E[g h^T]` (`g`: the consumers' output gradient, `h`: the producer's
    /// input), which maximises the new fan-in's gradient norm; each fan-out has `scale` times
    /// the mean norm of the existing units' fan-out. Exact when `act(0) = 0` and `epsilon = 0`;
    /// refused with ReLU and `epsilon = 0` (ReLU's derivative at 0 is 0: the units would never
    /// learn). At most `rank E[g h^T]` units are informed, the rest are [`Init::ZerosOut`].
    GradMax {
        /// The new fan-out's norm, as a fraction of the existing fan-outs' mean norm.
        #[serde(default = "half")]
        scale: f64,
        /// The new fan-in is `epsilon` times a fresh layer's (0: zero, exact).
        #[serde(default)]
        epsilon: f64,
    },
    /// TINY (GroMo's recipe): the fan-in and fan-out that best produce, to first order, the
    /// part of the loss's descent direction the existing units cannot, from the site's
    /// second-order statistics; scaled by `sqrt(gamma)` each, `gamma` from a line search on
    /// the probe unless fixed. Not exact: the controller's probe check applies. Units whose
    /// singular value is below `min_singular` are [`Init::ZerosOut`] units instead.
    Tiny {
        /// Singular values below this are dropped (GroMo's default `1e-3`).
        #[serde(default = "min_singular")]
        min_singular: f64,
        /// A fixed `gamma`; `None` runs the line search on the probe.
        #[serde(default)]
        gamma: Option<f64>,
        /// Whether the new units aim at what the existing units cannot do (GroMo's
        /// projection, the default) or at the whole descent direction. GroMo also moves the
        /// existing fan-out by `dW*`; this crate leaves that to the optimizer, and without it
        /// `project: false` often lowers the loss more at the growth itself.
        #[serde(default = "yes")]
        project: bool,
    },
}

fn yes() -> bool {
    true
}

fn half() -> f64 {
    0.5
}

fn min_singular() -> f64 {
    1e-3
}

/// The weights that [`Init::plan`] chose for `k` new units.
#[derive(Clone, Debug, PartialEq)]
pub struct NewUnits<E> {
    /// Fan-in of the new units, unit-major (k x the producer's unit fan-in).
    pub fan_in: Vec<E>,
    /// Bias of the new units (k entries).
    pub bias: Vec<E>,
    /// Fan-out of the new units in each consumer, unit-major (k x that consumer's unit
    /// fan-out), one vector per consumer in the order given.
    pub fan_out: Vec<Vec<E>>,
    /// Existing input units whose fan-out every consumer multiplies (Net2Net's split of the
    /// copied units).
    pub rescale: Vec<(usize, E)>,
}

impl Init {
    /// The name used in error messages and the audit log.
    pub fn name(&self) -> &'static str {
        match self {
            Init::ZerosOut => "ZerosOut",
            Init::ZerosOutFresh => "ZerosOutFresh",
            Init::ZerosBoth => "ZerosBoth",
            Init::ConstantFanIn { .. } => "ConstantFanIn",
            Init::CopyHalve => "CopyHalve",
            Init::CopyHalveNoise { .. } => "CopyHalveNoise",
            Init::MirrorPairs => "MirrorPairs",
            Init::GradMax { .. } => "GradMax",
            Init::Tiny { .. } => "Tiny",
        }
    }

    /// Whether the init reads a site's statistics ([`Init::GradMax`], [`Init::Tiny`]).
    pub fn needs_statistics(&self) -> bool {
        matches!(self, Init::GradMax { .. } | Init::Tiny { .. })
    }

    /// Whether growth with this init leaves the network's function unchanged (in exact
    /// arithmetic; in floating point up to rounding). True for every init but
    /// [`Init::CopyHalveNoise`] with a positive `std`, [`Init::GradMax`] with a positive
    /// `epsilon` and [`Init::Tiny`], whatever the activation ([`Init::GradMax`] refuses an
    /// activation with `act(0) != 0` when the statistics name it).
    pub fn is_exact(&self) -> bool {
        match self {
            Init::CopyHalveNoise { std } => *std == 0.0,
            Init::GradMax { epsilon, .. } => *epsilon == 0.0,
            Init::Tiny { .. } => false,
            _ => true,
        }
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
            Init::GradMax { scale, .. } if !scale.is_finite() || *scale <= 0.0 => {
                bad(format!("scale must be finite and > 0 (got {scale})"))
            }
            Init::GradMax { epsilon, .. } if !epsilon.is_finite() || *epsilon < 0.0 => {
                bad(format!("epsilon must be finite and >= 0 (got {epsilon})"))
            }
            Init::Tiny { min_singular, .. } if !min_singular.is_finite() || *min_singular < 0.0 => {
                bad(format!(
                    "min_singular must be finite and >= 0 (got {min_singular})"
                ))
            }
            Init::Tiny { gamma: Some(g), .. } if !g.is_finite() || *g <= 0.0 => {
                bad(format!("gamma must be finite and > 0 (got {g})"))
            }
            _ => Ok(()),
        }
    }

    /// Chooses the weights of `k` new units between `producer` and `consumers` (every layer
    /// that reads the producer's units). [`Init::GradMax`] and [`Init::Tiny`] need the site's
    /// statistics, which this has not: they are refused here (see
    /// [`crate::informed::plan_informed`]).
    pub fn plan<E: Real>(
        &self,
        producer: &dyn Expandable<E>,
        consumers: &[&dyn Expandable<E>],
        k: usize,
        rng: &mut dyn RngCore,
    ) -> Result<NewUnits<E>, GrowError> {
        self.check(k)?;
        let fan_in = producer.unit_fan_in();
        // Every buffer below must be addressable: k units of each size, in bytes.
        let fits = |per_unit: usize| {
            k.checked_mul(per_unit.max(1))
                .and_then(|n| n.checked_mul(std::mem::size_of::<E>()))
                .is_some_and(|bytes| bytes <= isize::MAX as usize)
        };
        if !fits(fan_in) || !consumers.iter().all(|c| fits(c.unit_fan_out())) {
            return Err(GrowError::InitMismatch {
                init: self.name(),
                reason: format!("{k} new units do not fit in addressable memory"),
            });
        }
        let cast = |x: f64| E::from_f64(x).unwrap_or_else(E::zero);
        let zeros = |n: usize| vec![E::zero(); n];
        // Drawn here rather than over a zeroed buffer: a growth should cost about a copy.
        let drawn = matches!(self, Init::ZerosOut | Init::ZerosOutFresh);
        let mut units = NewUnits {
            fan_in: if drawn {
                uniform(k * fan_in, producer.init_bound(), rng)
            } else {
                zeros(k * fan_in)
            },
            bias: zeros(k),
            fan_out: consumers
                .iter()
                .map(|c| zeros(k * c.unit_fan_out()))
                .collect(),
            rescale: Vec::new(),
        };
        match self {
            Init::ZerosOut => match_existing(&mut units, producer, k),
            Init::ZerosOutFresh => {}
            Init::ZerosBoth => {}
            Init::ConstantFanIn { value } => units.fan_in = vec![cast(*value); k * fan_in],
            Init::CopyHalve | Init::CopyHalveNoise { .. } => {
                copy_units(self.name(), &mut units, producer, consumers, k, rng)?;
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
                let rows: Vec<E> = uniform(half * fan_in, producer.init_bound(), rng);
                for p in 0..half {
                    for twin in [2 * p, 2 * p + 1] {
                        units.fan_in[twin * fan_in..(twin + 1) * fan_in]
                            .copy_from_slice(&rows[p * fan_in..(p + 1) * fan_in]);
                    }
                }
                for (c, fan_out) in consumers.iter().zip(&mut units.fan_out) {
                    let n = c.unit_fan_out();
                    // The consumer's fresh-init scale at its grown width.
                    let grown_fan_in = (c.unit_fan_in() / c.in_width().max(1))
                        .saturating_mul(c.in_width().saturating_add(k));
                    let cols: Vec<E> = uniform(half * n, fan_in_bound(grown_fan_in), rng);
                    for p in 0..half {
                        let v = &cols[p * n..(p + 1) * n];
                        fan_out[2 * p * n..(2 * p + 1) * n].copy_from_slice(v);
                        for (dst, &x) in fan_out[(2 * p + 1) * n..(2 * p + 2) * n].iter_mut().zip(v)
                        {
                            *dst = -x;
                        }
                    }
                }
            }
            Init::GradMax { .. } | Init::Tiny { .. } => {
                return Err(GrowError::InitMismatch {
                    init: self.name(),
                    reason: "it needs the site's statistics (inputs, activations and output \
                             gradients on a batch): plan it with informed::plan_informed, grow \
                             with grow_site_informed, or give the controller a probe that \
                             computes them"
                        .into(),
                })
            }
        }
        Ok(units)
    }
}

/// Scales each new fan-in row to the mean norm of the producer's existing rows and sets the
/// new biases to their mean; leaves the fresh draw where the producer has no unit (or its
/// rows are all zero, which would make the new units a trap of their own).
fn match_existing<E: Real>(units: &mut NewUnits<E>, producer: &dyn Expandable<E>, k: usize) {
    let norms = producer.output_norms();
    let biases = producer.output_biases();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (target, bias) = (mean(&norms), mean(&biases));
    if norms.is_empty() || !(target.is_finite() && target > 0.0) || !bias.is_finite() {
        return;
    }
    let fan_in = units.fan_in.len() / k.max(1);
    for row in units.fan_in.chunks_mut(fan_in.max(1)) {
        let n = crate::params::l2_norm(row);
        if n > 0.0 {
            let scale = E::from_f64(target / n).unwrap_or_else(E::one);
            row.iter_mut().for_each(|w| *w *= scale);
        }
    }
    let b = E::from_f64(bias).unwrap_or_else(E::zero);
    units.bias.iter_mut().for_each(|x| *x = b);
}

/// Net2Net's split: each new unit copies a random existing unit (distinct while they last),
/// and every copied unit's fan-out is shared equally among its copies, in every consumer.
fn copy_units<E: Real>(
    init: &'static str,
    units: &mut NewUnits<E>,
    producer: &dyn Expandable<E>,
    consumers: &[&dyn Expandable<E>],
    k: usize,
    rng: &mut dyn RngCore,
) -> Result<(), GrowError> {
    let (fan_in, width) = (producer.unit_fan_in(), producer.out_width());
    if width == 0 {
        return Err(GrowError::InitMismatch {
            init,
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
    let missing = |u: usize| GrowError::InitMismatch {
        init,
        reason: format!("unit {u} could not be read"),
    };
    let share = |s: usize| E::one() / E::from_usize(copies[s]).unwrap_or_else(E::one);
    for (j, &s) in sources.iter().enumerate() {
        let (row, b) = producer.output_unit(s).ok_or_else(|| missing(s))?;
        if row.len() != fan_in {
            return Err(missing(s));
        }
        units.fan_in[j * fan_in..(j + 1) * fan_in].copy_from_slice(&row);
        units.bias[j] = b;
        for (c, fan_out) in consumers.iter().zip(&mut units.fan_out) {
            let n = c.unit_fan_out();
            let col = c.input_column(s).filter(|col| col.len() == n);
            let col = col.ok_or_else(|| missing(s))?;
            for (dst, &w) in fan_out[j * n..(j + 1) * n].iter_mut().zip(&col) {
                *dst = w * share(s);
            }
        }
    }
    units
        .rescale
        .extend((0..width).filter(|&s| copies[s] > 1).map(|s| (s, share(s))));
    Ok(())
}
