//! TINY (GroMo's recipe, Verbockhaven et al.): the new units that best produce, to first
//! order, the part of the loss's descent direction the existing units cannot.

use super::linalg::{mean_outer, psd_inv_sqrt, psd_pinv, svd, to_dmatrix, with_ones};
use super::{cast, informed_flops, zero_units, InformedUnits, SiteStatistics};
use crate::{Expandable, GrowError, Init, Real};

pub(super) fn plan<E: Real>(
    min_singular: f64,
    project: bool,
    stats: &SiteStatistics,
    producer: &dyn Expandable<E>,
    consumers: &[&dyn Expandable<E>],
    k: usize,
) -> Result<InformedUnits<E>, GrowError> {
    let g = to_dmatrix(&stats.g_joined());
    let b2 = with_ones(stats.h()); // [h; 1]: what the new units read
    let m2 = mean_outer(&b2, &g);
    // dW*^T = S1^+ M1: the least-squares change of the consumers that best follows g with
    // the existing units; N is what remains for new units to do, seen from [h; 1]
    // (without the projection: the whole of -g).
    let (rows, width) = (stats.rows(), stats.a().cols());
    if project && rows <= width + 1 {
        // [a; 1] then spans every direction of the batch: dW* explains g exactly and nothing
        // is left for new units.
        return Err(GrowError::InitMismatch {
            init: "Tiny",
            reason: format!(
                "its projection needs more examples than the site's width + 1, but the \
                 statistics have {rows} examples for {width} units: use a larger statistics \
                 batch, or project: false"
            ),
        });
    }
    let n = if project {
        let b1 = with_ones(stats.a()); // [a; 1]: what the consumers read now
        let dw_t = psd_pinv(mean_outer(&b1, &b1))? * mean_outer(&b1, &g);
        mean_outer(&b2, &b1) * dw_t - m2
    } else {
        -m2
    };
    let s2_inv_sqrt = psd_inv_sqrt(mean_outer(&b2, &b2))?;
    let (u, s, v) = svd(&s2_inv_sqrt * n)?;
    let informed = s.iter().take_while(|&&x| x >= min_singular).count().min(k);

    let fan_in = producer.unit_fan_in();
    let mut units = zero_units(producer, consumers, k);
    if informed > 0 {
        let root = nalgebra::DMatrix::from_diagonal(&nalgebra::DVector::from_iterator(
            informed,
            s[..informed].iter().map(|x| x.sqrt()),
        ));
        let alpha = &s2_inv_sqrt * u.columns(0, informed) * &root; // (fan_in + 1) x r
        let omega = v.columns(0, informed) * &root; // outputs x r
        for j in 0..informed {
            for i in 0..fan_in {
                units.fan_in[j * fan_in + i] = cast(alpha[(i, j)]);
            }
            units.bias[j] = cast(alpha[(fan_in, j)]);
        }
        let mut row = 0;
        for (c, fan_out) in consumers.iter().zip(&mut units.fan_out) {
            let n = c.unit_fan_out();
            for j in 0..informed {
                for r in 0..n {
                    fan_out[j * n + r] = cast(omega[(row + r, j)]);
                }
            }
            row += n;
        }
    }
    let flops = informed_flops(
        &Init::Tiny {
            min_singular,
            gamma: None,
            project,
        },
        stats.rows(),
        fan_in,
        stats.a().cols(),
        g.ncols(),
    );
    Ok(InformedUnits {
        units,
        informed,
        flops,
    })
}
