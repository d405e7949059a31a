//! Gradient-informed new units: the statistics of a site on a batch, and the inits that read
//! them ([`Init::GradMax`], [`Init::Tiny`]).
//!
//! A site's statistics on a batch of `n` examples are three matrices (f64, row-major):
//!
//! | name | shape | what |
//! |---|---|---|
//! | `h` | n x fan_in | the producer's input |
//! | `a` | n x width | the site's units after the activation (what the consumers read) |
//! | `g` | n x out, one per consumer | the gradient of each example's loss with respect to the consumer's output |
//!
//! `g` is per example: with the batch loss `L = (1/n) sum_i l_i`, row `i` of `g` is
//! `dl_i/dy_i = n dL/dy_i`, so that `E[g h^T] = (1/n) sum_i g_i h_i^T = G^T H / n` is the
//! gradient of `L` with respect to a zero linear map from `h` to `y`.
//!
//! [`plan_informed`] turns them into new units; [`crate::grow_site_informed`] grows a model's
//! site with them (and runs TINY's line search on a probe).

mod gradmax;
mod linalg;
mod tiny;

use rand::RngCore;

use crate::{Activation, Expandable, GrowError, Init, LossProbe, NewUnits, Real};

/// A row-major matrix of f64 on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct HostMatrix {
    rows: usize,
    cols: usize,
    data: Vec<f64>,
}

impl HostMatrix {
    /// A `rows` x `cols` matrix from its entries, row-major.
    pub fn new(rows: usize, cols: usize, data: Vec<f64>) -> Result<Self, GrowError> {
        if Some(data.len()) != rows.checked_mul(cols) {
            return Err(GrowError::ShapeMismatch {
                what: format!("a {rows} x {cols} host matrix"),
                expected: rows.saturating_mul(cols),
                found: data.len(),
            });
        }
        Ok(Self { rows, cols, data })
    }

    /// A matrix from the entries of a dfdx tensor of shape (rows, cols), converted to f64.
    pub fn from_values<E: Real>(rows: usize, cols: usize, v: &[E]) -> Result<Self, GrowError> {
        let data = v.iter().map(|x| x.to_f64().unwrap_or(f64::NAN)).collect();
        Self::new(rows, cols, data)
    }

    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The entries, row-major.
    pub fn data(&self) -> &[f64] {
        &self.data
    }

    /// Entry `(r, c)`.
    pub fn get(&self, r: usize, c: usize) -> f64 {
        self.data[r * self.cols + c]
    }
}

/// What the gradient-informed inits read about one site, on one batch (see the module
/// documentation for the shapes and the convention on `g`).
#[derive(Clone, Debug, PartialEq)]
pub struct SiteStatistics {
    h: HostMatrix,
    a: HostMatrix,
    g: Vec<HostMatrix>,
    activation: Option<Activation>,
    flops: f64,
}

impl SiteStatistics {
    /// Statistics from their matrices; `activation` is the site's activation when known (the
    /// inits check it: GradMax needs `act(0) = 0` to be exact, and `act'(0) != 0` for its units
    /// to learn).
    ///
    /// Every matrix must have the same number of rows (at least one), finite entries, and
    /// there must be at least one consumer.
    pub fn new(
        h: HostMatrix,
        a: HostMatrix,
        g: Vec<HostMatrix>,
        activation: Option<Activation>,
    ) -> Result<Self, GrowError> {
        let bad = |why: String| Err(GrowError::Statistics(why));
        if h.rows == 0 {
            return bad("the batch has no example".into());
        }
        if g.is_empty() {
            return bad("no consumer gradient was given".into());
        }
        for (what, m) in [("a", &a)].into_iter().chain(g.iter().map(|m| ("g", m))) {
            if m.rows != h.rows {
                return Err(GrowError::ShapeMismatch {
                    what: format!("rows of the statistics' {what}"),
                    expected: h.rows,
                    found: m.rows,
                });
            }
        }
        let all = std::iter::once(&h).chain([&a]).chain(&g);
        if let Some(x) = all.flat_map(|m| &m.data).find(|x| !x.is_finite()) {
            return bad(format!("an entry is {x}: statistics must be finite"));
        }
        Ok(Self {
            h,
            a,
            g,
            activation,
            flops: 0.0,
        })
    }

    /// Records what computing these statistics cost, in FLOPs (see
    /// [`crate::Mlp::statistics_flops`]).
    pub fn with_flops(mut self, flops: f64) -> Self {
        self.flops = flops;
        self
    }

    /// The number of examples.
    pub fn rows(&self) -> usize {
        self.h.rows
    }

    /// The producer's input, n x fan_in.
    pub fn h(&self) -> &HostMatrix {
        &self.h
    }

    /// The site's activations, n x width.
    pub fn a(&self) -> &HostMatrix {
        &self.a
    }

    /// The per-example gradient at each consumer's output, n x out each.
    pub fn g(&self) -> &[HostMatrix] {
        &self.g
    }

    /// The site's activation, when known.
    pub fn activation(&self) -> Option<Activation> {
        self.activation
    }

    /// What computing the statistics cost, in FLOPs (0 unless recorded).
    pub fn flops(&self) -> f64 {
        self.flops
    }

    /// The consumers' outputs side by side: n x (sum of the consumers' outputs).
    pub(crate) fn g_joined(&self) -> HostMatrix {
        let cols: usize = self.g.iter().map(|m| m.cols).sum();
        let mut data = Vec::with_capacity(self.rows() * cols);
        for r in 0..self.rows() {
            for m in &self.g {
                data.extend_from_slice(&m.data[r * m.cols..(r + 1) * m.cols]);
            }
        }
        HostMatrix {
            rows: self.rows(),
            cols,
            data,
        }
    }

    /// Checks that the statistics describe this producer and these consumers.
    fn check_fits<E>(
        &self,
        producer: &dyn Expandable<E>,
        consumers: &[&dyn Expandable<E>],
    ) -> Result<(), GrowError> {
        let shape = |what: &str, expected: usize, found: usize| {
            if expected == found {
                Ok(())
            } else {
                Err(GrowError::ShapeMismatch {
                    what: format!("the statistics' {what}"),
                    expected,
                    found,
                })
            }
        };
        shape(
            "input width (columns of h)",
            producer.unit_fan_in(),
            self.h.cols,
        )?;
        shape(
            "site width (columns of a)",
            producer.out_width(),
            self.a.cols,
        )?;
        shape("number of consumers", consumers.len(), self.g.len())?;
        for (c, g) in consumers.iter().zip(&self.g) {
            shape("consumer output (columns of g)", c.unit_fan_out(), g.cols)?;
        }
        Ok(())
    }
}

/// New units chosen from statistics: the weights, how many of them are informed (the first
/// `informed`; the rest are [`Init::ZerosOut`] units), and what choosing them cost.
#[derive(Clone, Debug, PartialEq)]
pub struct InformedUnits<E> {
    /// The weights of all `k` units (TINY's informed units at `gamma = 1` unless the init fixes
    /// `gamma`).
    pub units: NewUnits<E>,
    /// How many units come from the statistics (at most the rank the statistics allow).
    pub informed: usize,
    /// The FLOPs of the products and decompositions (not the statistics themselves).
    pub flops: f64,
}

impl<E: Real> InformedUnits<E> {
    /// The units with the informed ones' fan-in, bias and fan-out each multiplied by
    /// `sqrt(gamma)` (TINY's scale; a ReLU unit's contribution then scales by `gamma`).
    pub fn scaled(&self, gamma: f64) -> NewUnits<E> {
        let r = E::from_f64(gamma.max(0.0).sqrt()).unwrap_or_else(E::zero);
        let mut u = self.units.clone();
        let fan_in = if u.bias.is_empty() {
            0
        } else {
            u.fan_in.len() / u.bias.len()
        };
        for x in &mut u.fan_in[..self.informed * fan_in] {
            *x *= r;
        }
        for b in &mut u.bias[..self.informed] {
            *b *= r;
        }
        for out in &mut u.fan_out {
            let n = out.len() / self.units.bias.len().max(1);
            for x in &mut out[..self.informed * n] {
                *x *= r;
            }
        }
        u
    }
}

/// Chooses `k` new units for `init` from `stats`: [`Init::GradMax`] and [`Init::Tiny`] read
/// the statistics; every other init ignores them and is planned by [`Init::plan`].
///
/// Both informed inits are rank-limited: GradMax gives at most `rank(E[g h^T])` informed
/// units, TINY at most the number of singular values of its matrix above `min_singular`
/// (each at most the consumers' total output width, and one less for a cross-entropy
/// output, whose per-example gradients sum to zero over the classes). The remaining units
/// are [`Init::ZerosOut`] units, placed after the informed ones.
///
/// TINY's projection (`project: true`) needs more examples than the site's width + 1;
/// otherwise the existing units already fit the batch's gradient exactly and it is refused.
pub fn plan_informed<E: Real>(
    init: &Init,
    stats: &SiteStatistics,
    producer: &dyn Expandable<E>,
    consumers: &[&dyn Expandable<E>],
    k: usize,
    rng: &mut dyn RngCore,
) -> Result<InformedUnits<E>, GrowError> {
    init.check(k)?;
    if init.needs_statistics() {
        stats.check_fits(producer, consumers)?;
    }
    let mut planned = match init {
        Init::GradMax { scale, epsilon } => {
            gradmax::plan(*scale, *epsilon, stats, producer, consumers, k, rng)?
        }
        Init::Tiny {
            min_singular,
            gamma,
            project,
        } => {
            let p = tiny::plan(*min_singular, *project, stats, producer, consumers, k)?;
            match gamma {
                Some(g) => InformedUnits {
                    units: p.scaled(*g),
                    ..p
                },
                None => p,
            }
        }
        _ => {
            return Ok(InformedUnits {
                units: init.plan(producer, consumers, k, rng)?,
                informed: 0,
                flops: 0.0,
            })
        }
    };
    fill_zeros_out(&mut planned, producer, consumers, k, rng)?;
    Ok(planned)
}

/// Plans the units after the informed ones by the default init, [`Init::ZerosOut`] (a
/// fan-in matched to the existing units' norms and mean bias, a zero fan-out): the fresh
/// fan-in of [`Init::ZerosOutFresh`] is what left most added units dead (docs/new_units_findings.md).
fn fill_zeros_out<E: Real>(
    planned: &mut InformedUnits<E>,
    producer: &dyn Expandable<E>,
    consumers: &[&dyn Expandable<E>],
    k: usize,
    rng: &mut dyn RngCore,
) -> Result<(), GrowError> {
    let rest = k - planned.informed;
    if rest == 0 {
        return Ok(());
    }
    let filler = Init::ZerosOut.plan(producer, consumers, rest, rng)?;
    let fan_in = producer.unit_fan_in();
    planned.units.fan_in[planned.informed * fan_in..].copy_from_slice(&filler.fan_in);
    planned.units.bias[planned.informed..].copy_from_slice(&filler.bias);
    Ok(())
}

/// Zero weights for `k` units between `producer` and `consumers`.
fn zero_units<E: Real>(
    producer: &dyn Expandable<E>,
    consumers: &[&dyn Expandable<E>],
    k: usize,
) -> NewUnits<E> {
    NewUnits {
        fan_in: vec![E::zero(); k * producer.unit_fan_in()],
        bias: vec![E::zero(); k],
        fan_out: consumers
            .iter()
            .map(|c| vec![E::zero(); k * c.unit_fan_out()])
            .collect(),
        rescale: Vec::new(),
    }
}

fn cast<E: Real>(x: f64) -> E {
    E::from_f64(x).unwrap_or_else(E::zero)
}

/// The most probe evaluations TINY's line search makes (powers of two from `2^-30` to `2^30`
/// are within reach).
pub const LINE_SEARCH_EVALUATIONS: usize = 32;

/// The result of [`line_search`]: the best `gamma`, its loss, and how many losses were
/// evaluated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LineSearch {
    /// The `gamma` of the lowest loss.
    pub gamma: f64,
    /// Its loss.
    pub loss: f64,
    /// How many times the loss was evaluated.
    pub evaluations: usize,
}

/// A grid of `gamma` for [`line_search`]: powers of two from `2^-12` to `2^12`.
pub fn default_gamma_grid() -> Vec<f64> {
    (-12..=12).map(|e| 2f64.powi(e)).collect()
}

/// TINY's line search: from `gamma = 1`, doubles `gamma` while the loss falls, else halves
/// it while the loss falls, at most `max_evaluations` times (at least 2), and returns the
/// lowest loss seen. The loss's scale depends on the loss function and the data, so the
/// search walks rather than reading a fixed grid; it finds a local minimum over the powers
/// of two. NaN counts as a rise. An error when every loss is NaN.
pub fn bracket_search(
    mut loss: impl FnMut(f64) -> f64,
    max_evaluations: usize,
) -> Result<LineSearch, GrowError> {
    let max = max_evaluations.max(2);
    let mut evaluations = 0;
    let mut eval = |g: f64| {
        let l = loss(g);
        if l.is_nan() {
            f64::INFINITY
        } else {
            l
        }
    };
    let mut best = (1.0, eval(1.0));
    evaluations += 1;
    for factor in [2.0, 0.5] {
        let mut moved = false;
        while evaluations < max {
            let g = best.0 * factor;
            let l = eval(g);
            evaluations += 1;
            if l < best.1 {
                best = (g, l);
                moved = true;
            } else {
                break;
            }
        }
        if moved {
            break;
        }
    }
    if best.1 == f64::INFINITY {
        return Err(GrowError::Statistics(
            "every loss of the line search was NaN or infinite".into(),
        ));
    }
    Ok(LineSearch {
        gamma: best.0,
        loss: best.1,
        evaluations,
    })
}

/// Evaluates `loss` at every `gamma` of `grid` and returns the lowest (NaN losses are
/// skipped; the first of equal losses wins). An error when the grid is empty, holds a value
/// that is not finite and positive, or every loss is NaN.
pub fn line_search(
    mut loss: impl FnMut(f64) -> f64,
    grid: &[f64],
) -> Result<LineSearch, GrowError> {
    if let Some(&g) = grid.iter().find(|g| !(g.is_finite() && **g > 0.0)) {
        return Err(GrowError::InvalidHyper {
            name: "gamma",
            value: g,
            reason: "every gamma of the line search must be finite and positive",
        });
    }
    let mut best: Option<LineSearch> = None;
    for (i, &gamma) in grid.iter().enumerate() {
        let l = loss(gamma);
        if !l.is_nan() && best.is_none_or(|b| l < b.loss) {
            best = Some(LineSearch {
                gamma,
                loss: l,
                evaluations: i + 1,
            });
        }
    }
    best.map(|b| LineSearch {
        evaluations: grid.len(),
        ..b
    })
    .ok_or_else(|| GrowError::Statistics("every loss of the line search was NaN".into()))
}

/// The FLOPs [`plan_informed`] spends on products and decompositions for `init`, on `rows`
/// examples of a site of `width` units over `fan_in` inputs, read by consumers with `out`
/// outputs in all. Counts a multiply-add as two, an SVD of an m x n matrix (m >= n) as
/// `4 m n^2 + 8 n^3` and a symmetric eigen-decomposition of order d as `9 d^3` (Golub and
/// Van Loan's estimates).
pub fn informed_flops(init: &Init, rows: usize, fan_in: usize, width: usize, out: usize) -> f64 {
    let (n, d, w, c) = (rows as f64, fan_in as f64, width as f64, out as f64);
    let svd = |m: f64, k: f64| {
        let (m, k) = (m.max(k), m.min(k));
        4.0 * m * k * k + 8.0 * k * k * k
    };
    match init {
        Init::GradMax { .. } => 2.0 * n * c * d + svd(c, d),
        Init::Tiny { project, .. } => {
            let (d1, w1) = (d + 1.0, w + 1.0);
            // S2 and M2, the eigen-decomposition of S2, S2^(-1/2) N, the SVD and alpha.
            let mut total = 2.0 * n * (d1 * d1 + d1 * c)
                + 9.0 * d1 * d1 * d1
                + 2.0 * d1 * d1 * d1
                + 4.0 * d1 * d1 * c
                + svd(d1, c);
            if *project {
                // S1, M1 and C, the pseudo-inverse of S1, S1^+ M1 and C (S1^+ M1).
                total += 2.0 * n * (w1 * w1 + w1 * c + d1 * w1)
                    + 11.0 * w1 * w1 * w1
                    + 2.0 * (w1 * w1 * c + d1 * w1 * c);
            }
            total
        }
        _ => 0.0,
    }
}

/// A probe that measures on one batch and computes the statistics on another.
///
/// TINY chooses `gamma` on the probe, and the controller checks the growth on it: when the
/// statistics come from the same batch, both are in-sample, and the new units can fit that
/// batch's noise (on random labels, a TINY growth whose line search ran on its own statistics
/// batch lowered that batch's loss and raised a held-out batch's; see the `informed_inits`
/// example). Give the controller a `SplitProbe` to keep them apart.
#[derive(Clone, Debug)]
pub struct SplitProbe<P, S> {
    /// Measures the loss, outputs and activity.
    pub probe: P,
    /// Computes the statistics.
    pub statistics: S,
}

impl<M, P: LossProbe<M>, S: LossProbe<M>> LossProbe<M> for SplitProbe<P, S> {
    fn loss(&self, model: &M) -> f64 {
        self.probe.loss(model)
    }

    fn outputs(&self, model: &M) -> Option<Vec<f64>> {
        self.probe.outputs(model)
    }

    fn activity(&self, model: &M, site: &str) -> Option<crate::health::Activity> {
        self.probe.activity(model, site)
    }

    fn statistics(&self, model: &M, site: &str) -> Option<SiteStatistics> {
        self.statistics.statistics(model, site)
    }
}
