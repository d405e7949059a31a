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

/// A least-squares line `y = a + b x` through points, with the standard error of `b`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LineFit {
    /// The slope `b`.
    pub slope: f64,
    /// Its standard error (0 for points exactly on a line).
    pub se: f64,
    /// Degrees of freedom, `n - 2`.
    pub dof: f64,
}

/// Fits a line through `(xs[i], ys[i])`. `None` for fewer than 3 points, non-finite input, or
/// `x` values that are all equal.
pub fn fit_line(xs: &[f64], ys: &[f64]) -> Option<LineFit> {
    let n = xs.len();
    if n < 3 || ys.len() != n || xs.iter().chain(ys).any(|v| !v.is_finite()) {
        return None;
    }
    let nf = n as f64;
    let (xm, ym) = (xs.iter().sum::<f64>() / nf, ys.iter().sum::<f64>() / nf);
    let (mut sxx, mut sxy) = (0.0, 0.0);
    for (x, y) in xs.iter().zip(ys) {
        sxx += (x - xm) * (x - xm);
        sxy += (x - xm) * (y - ym);
    }
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let sse: f64 = xs
        .iter()
        .zip(ys)
        .map(|(x, y)| (y - ym - slope * (x - xm)).powi(2))
        .sum();
    let dof = nf - 2.0;
    Some(LineFit {
        slope,
        se: (sse / dof / sxx).sqrt(),
        dof,
    })
}

impl LineFit {
    /// The one-sided p value of "the slope is above `threshold`" being false: `P(T >= t)`
    /// with `t = (slope - threshold) / se`. Small means the slope is surely above the
    /// threshold. A fit with zero error gives 0 (above), 1 (below) or 0.5 (on it).
    pub fn p_above(&self, threshold: f64) -> f64 {
        let d = self.slope - threshold;
        let scale = self.slope.abs().max(threshold.abs()).max(f64::MIN_POSITIVE);
        if !self.se.is_finite() || self.se <= scale * 1e-12 {
            return if d > 0.0 {
                0.0
            } else if d < 0.0 {
                1.0
            } else {
                0.5
            };
        }
        match StudentsT::new(0.0, 1.0, self.dof) {
            Ok(t) => 1.0 - t.cdf(d / self.se),
            Err(_) => f64::NAN,
        }
    }
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
    fn line_fit_matches_hand_computed_regression_and_tests_against_a_threshold() {
        // x = 0..5 with the same y as above: the same slope and standard error.
        let ys = [1.0, 0.9, 0.95, 0.7, 0.75];
        let f = fit_line(&[0.0, 1.0, 2.0, 3.0, 4.0], &ys).unwrap();
        assert!((f.slope + 0.07).abs() < 1e-12);
        let t = f.slope / f.se;
        assert!((t + 2.857_738_033_247_041).abs() < 1e-9);
        // P(T >= t) = 1 - P(T <= t) for the same t(3) distribution.
        assert!((f.p_above(0.0) - (1.0 - 0.032_348_421)).abs() < 1e-7);
        // Shifting x scales nothing; stretching it divides the slope.
        let g = fit_line(&[10.0, 12.0, 14.0, 16.0, 18.0], &ys).unwrap();
        assert!((g.slope + 0.035).abs() < 1e-12);
        assert!(fit_line(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]).is_none());
        let exact = fit_line(&[0.0, 1.0, 2.0], &[0.0, -1.0, -2.0]).unwrap();
        assert_eq!(
            (exact.p_above(-2.0), exact.p_above(0.0), exact.p_above(-1.0)),
            (0.0, 1.0, 0.5)
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
