//! The few dense decompositions the informed inits need, on nalgebra's f64 matrices.

use nalgebra::{DMatrix, DVector, SymmetricEigen, SVD};

use super::HostMatrix;
use crate::GrowError;

/// Eigenvalues below this fraction of the largest count as zero: the rounding of an f64
/// covariance is about 1e-16 of its scale, and directions with so little variance on the
/// statistics batch would get weights too large to carry over to other examples.
pub(super) const EIG_REL_TOL: f64 = 1e-7;

pub(super) fn to_dmatrix(m: &HostMatrix) -> DMatrix<f64> {
    DMatrix::from_row_slice(m.rows(), m.cols(), m.data())
}

/// `[m, 1]`: the matrix with a column of ones appended (the bias input).
pub(super) fn with_ones(m: &HostMatrix) -> DMatrix<f64> {
    let mut out = DMatrix::from_element(m.rows(), m.cols() + 1, 1.0);
    out.view_mut((0, 0), (m.rows(), m.cols()))
        .copy_from(&to_dmatrix(m));
    out
}

/// `x^T y / n`: the mean of the outer products of the rows of `x` and `y`.
pub(super) fn mean_outer(x: &DMatrix<f64>, y: &DMatrix<f64>) -> DMatrix<f64> {
    let n = x.nrows().max(1) as f64;
    x.tr_mul(y) / n
}

fn failed(what: &str) -> GrowError {
    GrowError::Statistics(format!("the {what} did not converge"))
}

/// The eigen-decomposition of the symmetric matrix `s`, with an iteration cap so that a
/// pathological input ends in an error, not a hang.
fn eigen(s: DMatrix<f64>) -> Result<SymmetricEigen<f64, nalgebra::Dyn>, GrowError> {
    let cap = 1000usize.max(100 * s.nrows());
    SymmetricEigen::try_new(s, f64::EPSILON, cap).ok_or_else(|| failed("eigen-decomposition"))
}

/// `f(s)` for a symmetric positive semi-definite `s`: `Q f(L) Q^T`, where eigenvalues under
/// [`EIG_REL_TOL`] of the largest map to 0 (a pseudo-inverse for `f(l) = 1/l`).
fn psd_function(s: DMatrix<f64>, f: impl Fn(f64) -> f64) -> Result<DMatrix<f64>, GrowError> {
    let e = eigen(s)?;
    let top = e.eigenvalues.iter().fold(0.0f64, |m, &l| m.max(l));
    let mapped = DVector::from_iterator(
        e.eigenvalues.len(),
        e.eigenvalues.iter().map(|&l| {
            if top > 0.0 && l > EIG_REL_TOL * top {
                f(l)
            } else {
                0.0
            }
        }),
    );
    let q = &e.eigenvectors;
    Ok(q * DMatrix::from_diagonal(&mapped) * q.transpose())
}

/// The pseudo-inverse of a symmetric positive semi-definite matrix.
pub(super) fn psd_pinv(s: DMatrix<f64>) -> Result<DMatrix<f64>, GrowError> {
    psd_function(s, |l| 1.0 / l)
}

/// The inverse square root of a symmetric positive semi-definite matrix (on its range).
pub(super) fn psd_inv_sqrt(s: DMatrix<f64>) -> Result<DMatrix<f64>, GrowError> {
    psd_function(s, |l| 1.0 / l.sqrt())
}

/// A thin SVD: `U`, the singular values in descending order, `V`.
pub(super) type Svd = (DMatrix<f64>, Vec<f64>, DMatrix<f64>);

/// The thin SVD `m = U diag(s) V^T`.
pub(super) fn svd(m: DMatrix<f64>) -> Result<Svd, GrowError> {
    let cap = 1000usize.max(100 * m.nrows().max(m.ncols()));
    let d = SVD::try_new(m, true, true, f64::EPSILON, cap).ok_or_else(|| failed("SVD"))?;
    let (Some(u), Some(v_t)) = (d.u, d.v_t) else {
        return Err(failed("SVD"));
    };
    Ok((
        u,
        d.singular_values.iter().copied().collect(),
        v_t.transpose(),
    ))
}
