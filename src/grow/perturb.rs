//! Shrink-and-perturb (Ash & Adams, 2020) at a growth: `theta <- lambda theta + p noise` on
//! the weights that existed before, the usual remedy for the worse generalisation of
//! warm-started networks. Not function-preserving; off unless asked for.

use dfdx::prelude::Device;
use rand::RngCore;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::{GrowError, Params, Real};

/// Which tensors [`shrink_perturb`] touches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PerturbScope {
    /// The tensors whose shape the growth changed: the grown site's producer (weight and
    /// bias) and its consumers' weights (the default).
    #[default]
    Grown,
    /// Every tensor that existed before the growth.
    Model,
}

/// The setting: `theta <- shrink * theta + noise * N(0, 1)` on the old entries.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShrinkPerturb {
    /// `lambda`, in `(0, 1]` (Ash & Adams: about 0.8 when warm-starting).
    pub shrink: f64,
    /// `p`, the standard deviation of the added Gaussian noise, `>= 0` (about 0.01).
    pub noise: f64,
    /// Which tensors.
    #[serde(default)]
    pub scope: PerturbScope,
}

impl ShrinkPerturb {
    /// The setting, checked: `shrink` in `(0, 1]`, `noise` finite and `>= 0`.
    pub fn new(shrink: f64, noise: f64, scope: PerturbScope) -> Result<Self, GrowError> {
        let s = Self {
            shrink,
            noise,
            scope,
        };
        s.check()?;
        Ok(s)
    }

    /// Checks the values (for settings read from a file).
    pub fn check(&self) -> Result<(), GrowError> {
        if !(self.shrink > 0.0 && self.shrink <= 1.0) {
            return Err(GrowError::InvalidHyper {
                name: "shrink",
                value: self.shrink,
                reason: "must be in (0, 1]",
            });
        }
        if !(self.noise.is_finite() && self.noise >= 0.0) {
            return Err(GrowError::InvalidHyper {
                name: "noise",
                value: self.noise,
                reason: "must be finite and >= 0",
            });
        }
        Ok(())
    }
}

/// Applies `setting` to `model` after a growth: `before` is the model's
/// [`Params::param_dims`] from before it. The old entries of a tensor are the top-left
/// block of its old shape (growth appends rows and columns after the existing ones); new
/// entries and tensors that did not exist before are left alone. Returns how many entries
/// changed.
///
/// With `shrink = 1` and `noise = 0` the model is unchanged, bit for bit.
pub fn shrink_perturb<E: Real, D: Device<E>, M: Params<E, D>>(
    model: &mut M,
    before: &[(String, (usize, usize))],
    setting: &ShrinkPerturb,
    rng: &mut dyn RngCore,
) -> Result<usize, GrowError> {
    setting.check()?;
    let lambda = E::from_f64(setting.shrink).unwrap_or_else(E::one);
    let mut changed = 0usize;
    let mut buf: Vec<E> = Vec::new();
    model.visit_mut(&mut |name, mut p| {
        let Some(&(_, (r0, c0))) = before.iter().find(|(n, _)| n == name) else {
            return;
        };
        let (rows, cols) = p.as_ref().dims();
        let grown = (rows, cols) != (r0, c0);
        if (setting.scope == PerturbScope::Grown && !grown) || r0 > rows || c0 > cols {
            return;
        }
        buf.clear();
        buf.resize(rows * cols, E::zero());
        p.as_ref().copy_into(&mut buf);
        for r in 0..r0 {
            for x in &mut buf[r * cols..r * cols + c0] {
                *x *= lambda;
                if setting.noise > 0.0 {
                    let z: f64 = StandardNormal.sample(rng);
                    *x += E::from_f64(setting.noise * z).unwrap_or_else(E::zero);
                }
            }
        }
        p.copy_from(&buf);
        changed += r0 * c0;
    });
    Ok(changed)
}
