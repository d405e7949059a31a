//! Least-squares slope of a window of values and a one-sided Student's t test on it.

use statrs::distribution::{ContinuousCDF, StudentsT};

/// The fitted slope over a window and how surely it is negative.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SlopeResult {
    /// Least-squares slope per observation.
    pub slope: f64,
    /// t statistic of the slope (`slope / standard error`), clamped to finite values.
    pub t: f64,
    /// One-sided p value of "the slope is negative": `P(T <= t)` with `n - 2` degrees of
    /// freedom. Small means the values are surely still decreasing.
    pub p_value: f64,
}

/// Fit `y = a + b x` with `x = 0, 1, .., n-1` and test `H1: b < 0`.
///
/// Returns `None` for fewer than 3 values or non-finite input. A perfectly straight window
/// has zero standard error: a falling one gives `p = 0`, a rising one `p = 1`, a flat one
/// `p = 0.5`.
pub fn slope_test(values: &[f64]) -> Option<SlopeResult> {
    let n = values.len();
    if n < 3 || values.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let nf = n as f64;
    let x_mean = (nf - 1.0) / 2.0;
    let y_mean = values.iter().sum::<f64>() / nf;
    let (mut sxx, mut sxy) = (0.0, 0.0);
    for (i, &y) in values.iter().enumerate() {
        let dx = i as f64 - x_mean;
        sxx += dx * dx;
        sxy += dx * (y - y_mean);
    }
    let slope = sxy / sxx;
    let intercept = y_mean - slope * x_mean;
    let sse: f64 = values
        .iter()
        .enumerate()
        .map(|(i, &y)| (y - intercept - slope * i as f64).powi(2))
        .sum();
    let dof = nf - 2.0;
    let se = (sse / dof / sxx).sqrt();
    // Treat residuals at rounding level as an exact line.
    let scale = values
        .iter()
        .fold(0.0f64, |a, v| a.max(v.abs()))
        .max(f64::MIN_POSITIVE);
    if !se.is_finite() || se <= scale * 1e-12 {
        let (t, p_value) = if slope < 0.0 {
            (f64::MIN, 0.0)
        } else if slope > 0.0 {
            (f64::MAX, 1.0)
        } else {
            (0.0, 0.5)
        };
        return Some(SlopeResult { slope, t, p_value });
    }
    let t = slope / se;
    let dist = StudentsT::new(0.0, 1.0, dof).ok()?;
    Some(SlopeResult {
        slope,
        t,
        p_value: dist.cdf(t),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_hand_computed_regression() {
        // By hand (Python): slope = Sxy/Sxx = -0.7/10, SSE = 0.018, se = sqrt(0.018/3/10),
        // t = -2.857738; the t(3) CDF has the closed form
        // 0.5 + (t/(sqrt(3)(1+t^2/3)) + atan(t/sqrt(3)))/pi = 0.0323484.
        let r = slope_test(&[1.0, 0.9, 0.95, 0.7, 0.75]).expect("5 finite values");
        assert!((r.slope + 0.07).abs() < 1e-12);
        assert!((r.t + 2.857_738_033_247_041).abs() < 1e-9, "t = {}", r.t);
        assert!(
            (r.p_value - 0.032_348_421).abs() < 1e-7,
            "p = {}",
            r.p_value
        );
    }

    #[test]
    fn exact_lines_and_short_windows() {
        assert_eq!(slope_test(&[3.0, 2.0, 1.0]).map(|r| r.p_value), Some(0.0));
        assert_eq!(slope_test(&[1.0, 1.0, 1.0]).map(|r| r.p_value), Some(0.5));
        assert_eq!(slope_test(&[1.0, 2.0, 3.0]).map(|r| r.p_value), Some(1.0));
        assert!(slope_test(&[1.0, 2.0]).is_none());
        assert!(slope_test(&[1.0, f64::NAN, 3.0]).is_none());
    }
}
