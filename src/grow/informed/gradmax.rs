//! GradMax (Evci et al., ICLR 2022): zero fan-in, fan-out along the top left singular
//! vectors of `E[g h^T]`, which maximises the gradient norm of the new fan-in.

use rand::RngCore;

use super::linalg::{mean_outer, svd, to_dmatrix};
use super::{cast, informed_flops, zero_units, InformedUnits, SiteStatistics};
use crate::sampling::uniform;
use crate::{Activation, Expandable, GrowError, Init, Real};

/// Singular values below this fraction of the largest count as zero. Statistics computed in
/// f32 carry rounding of about 1e-7 of their scale (a cross-entropy gradient's classes sum to
/// zero only up to it), and a unit whose fan-in gradient is a millionth of the best one's is
/// no better informed than a [`Init::ZerosOut`] unit.
const RANK_REL_TOL: f64 = 1e-6;

pub(super) fn plan<E: Real>(
    scale: f64,
    epsilon: f64,
    stats: &SiteStatistics,
    producer: &dyn Expandable<E>,
    consumers: &[&dyn Expandable<E>],
    k: usize,
    rng: &mut dyn RngCore,
) -> Result<InformedUnits<E>, GrowError> {
    let refuse = |reason: String| {
        Err(GrowError::InitMismatch {
            init: "GradMax",
            reason,
        })
    };
    match stats.activation() {
        Some(act) if act.at_zero() != 0.0 => {
            return refuse(format!(
                "new units start at pre-activation 0 and {act:?}(0) = {}, so the output would \
                 change: GradMax needs act(0) = 0",
                act.at_zero()
            ))
        }
        Some(Activation::Relu) if epsilon == 0.0 => {
            return refuse(
                "ReLU's derivative at 0 is 0 (in dfdx as in PyTorch), so units with a zero \
                 fan-in would never get a gradient: set epsilon > 0 (a small random fan-in, not \
                 exact) or use tanh, GELU or identity"
                    .into(),
            )
        }
        _ => {}
    }
    let g = stats.g_joined();
    // M = E[g h^T] (outputs x inputs): the gradient of the loss with respect to a zero map
    // from the producer's input to the consumers' output, which new units of zero fan-in
    // and fan-out `w` turn into the fan-in gradient `w^T M` (times act'(0)).
    let m = mean_outer(&to_dmatrix(&g), &to_dmatrix(stats.h()));
    let (u, s, _) = svd(m)?;
    let top = s.first().copied().unwrap_or(0.0);
    let rank = s
        .iter()
        .filter(|&&x| top > 0.0 && x > RANK_REL_TOL * top)
        .count();
    let informed = k.min(rank);

    let norm = scale * fan_out_norm(producer, consumers);
    let mut units = zero_units(producer, consumers, k);
    let mut row = 0;
    for (c, fan_out) in consumers.iter().zip(&mut units.fan_out) {
        let n = c.unit_fan_out();
        for j in 0..informed {
            for r in 0..n {
                fan_out[j * n + r] = cast(norm * u[(row + r, j)]);
            }
        }
        row += n;
    }
    if epsilon > 0.0 {
        let fan_in = producer.unit_fan_in();
        let fresh: Vec<E> = uniform(informed * fan_in, epsilon * producer.init_bound(), rng);
        units.fan_in[..informed * fan_in].copy_from_slice(&fresh);
    }
    let flops = informed_flops(
        &Init::GradMax { scale, epsilon },
        stats.rows(),
        stats.h().cols(),
        stats.a().cols(),
        g.cols(),
    );
    Ok(InformedUnits {
        units,
        informed,
        flops,
    })
}

/// The mean L2 norm of the existing units' fan-out (all consumers together), or, with no
/// existing unit or only zero fan-outs, the norm a freshly initialised fan-out would have
/// (uniform in `[-b, b)` has mean square `b^2 / 3`).
fn fan_out_norm<E: Real>(producer: &dyn Expandable<E>, consumers: &[&dyn Expandable<E>]) -> f64 {
    let width = producer.out_width();
    let mut squares = vec![0.0f64; width];
    for c in consumers {
        for (s, n) in squares.iter_mut().zip(c.input_norms()) {
            *s += n * n;
        }
    }
    let mean = squares.iter().map(|s| s.sqrt()).sum::<f64>() / width.max(1) as f64;
    if mean.is_finite() && mean > 0.0 {
        return mean;
    }
    consumers
        .iter()
        .map(|c| c.unit_fan_out() as f64 * c.init_bound().powi(2) / 3.0)
        .sum::<f64>()
        .sqrt()
}
