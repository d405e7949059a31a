//! Per-tensor optimizer state that grows with its tensor, keyed by the tensor's name.

use serde::{Deserialize, Serialize};

use crate::GrowError;

/// A contiguous run of rows (or columns) born at the same optimizer step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cohort {
    /// First row (or column) of the run.
    pub start: usize,
    /// The optimizer's step count when the run was added (0 for the original tensor).
    pub born: u64,
    /// The epsilon of the run's updates when the kernel chose one for it at its birth (Adam's
    /// new-unit epsilon); `None` for the kernel's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eps: Option<f64>,
}

/// The state buffers of one named tensor (e.g. Adam's two moments), row-major, plus when each
/// row and column was born.
///
/// Growth only appends rows and columns, so an element's birth is the later of its row's and
/// its column's, and the tensor splits into rectangles that share one birth step.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorState<E> {
    /// The tensor's name in the model's parameter walk.
    pub name: String,
    /// `(rows, columns)`.
    pub dims: (usize, usize),
    /// One buffer per state variable.
    pub buffers: Vec<Vec<E>>,
    /// Row cohorts, in order of `start`.
    pub rows: Vec<Cohort>,
    /// Column cohorts, in order of `start`.
    pub cols: Vec<Cohort>,
}

impl<E: Copy + Default> TensorState<E> {
    /// Zeroed state for a tensor `name` of `dims`, born at step `born`.
    pub fn new(name: &str, dims: (usize, usize), n_buffers: usize, born: u64) -> Self {
        Self {
            name: name.to_string(),
            dims,
            buffers: vec![vec![E::default(); dims.0 * dims.1]; n_buffers],
            rows: vec![Cohort {
                start: 0,
                born,
                eps: None,
            }],
            cols: vec![Cohort {
                start: 0,
                born,
                eps: None,
            }],
        }
    }

    /// Whether the state can follow a tensor that now has `dims` (it may only have grown).
    pub fn check_resize(&self, dims: (usize, usize)) -> Result<(), GrowError> {
        if dims.0 < self.dims.0 || dims.1 < self.dims.1 {
            return Err(GrowError::StateMismatch(format!(
                "tensor {:?} shrank from {:?} to {:?}; growth only appends rows and columns",
                self.name, self.dims, dims
            )));
        }
        if dims.0.checked_mul(dims.1).is_none() {
            return Err(GrowError::StateMismatch(format!(
                "tensor {:?} of {dims:?} has more elements than memory can address",
                self.name
            )));
        }
        Ok(())
    }

    /// Follows a tensor that grew to `dims` at step `born`: old entries stay where they were
    /// (top-left), new entries are zero and their cohorts get epsilon `eps`. One allocation
    /// per buffer at most.
    pub fn resize(&mut self, dims: (usize, usize), born: u64, eps: Option<f64>) {
        let (r0, c0) = self.dims;
        let (r1, c1) = dims;
        if (r0, c0) == (r1, c1) {
            return;
        }
        for buf in &mut self.buffers {
            // Grow in place, then move the old rows to their new places from the last one
            // back (a row never lands on one not yet moved), zeroing what they leave.
            buf.resize(r1 * c1, E::default());
            if c1 != c0 {
                for r in (0..r0).rev() {
                    buf.copy_within(r * c0..(r + 1) * c0, r * c1);
                    buf[r * c1 + c0..(r + 1) * c1].fill(E::default());
                }
            }
        }
        // A tensor that had no rows (or columns) keeps no empty run before its first cohort,
        // so its cohorts stay in increasing order and it saves and loads like any other.
        if r1 > r0 {
            if r0 == 0 {
                self.rows.clear();
            }
            self.rows.push(Cohort {
                start: r0,
                born,
                eps,
            });
        }
        if c1 > c0 {
            if c0 == 0 {
                self.cols.clear();
            }
            self.cols.push(Cohort {
                start: c0,
                born,
                eps,
            });
        }
        self.dims = dims;
    }

    /// Gives rows `rows` and columns `cols` (each in range) fresh state born at step `born`
    /// with epsilon `eps`: their buffers are zeroed and they become cohorts of their own (a
    /// row's birth is then later than its neighbours', which [`TensorState::for_each_block`]
    /// handles: an element's birth is the later of its row's and its column's).
    pub fn renew(&mut self, rows: &[usize], cols: &[usize], born: u64, eps: Option<f64>) {
        let (r, c) = self.dims;
        for buf in &mut self.buffers {
            for &row in rows.iter().filter(|&&row| row < r) {
                buf[row * c..(row + 1) * c].fill(E::default());
            }
            for &col in cols.iter().filter(|&&col| col < c) {
                for row in 0..r {
                    buf[row * c + col] = E::default();
                }
            }
        }
        self.rows = respan(&self.rows, r, rows, born, eps);
        self.cols = respan(&self.cols, c, cols, born, eps);
    }

    /// Calls `f(birth, eps, ranges)` for every rectangle of elements sharing one birth step,
    /// where `eps` is the epsilon of the cohort that brought them (the later-born of their
    /// row's and column's) and `ranges` are the flat index ranges of the rectangle's rows.
    pub fn for_each_block(
        &self,
        mut f: impl FnMut(u64, Option<f64>, &mut dyn Iterator<Item = std::ops::Range<usize>>),
    ) {
        let (rows, cols) = self.dims;
        let ends = |cohorts: &[Cohort], n: usize| -> Vec<(usize, usize, Cohort)> {
            cohorts
                .iter()
                .enumerate()
                .map(|(i, c)| (c.start, cohorts.get(i + 1).map_or(n, |d| d.start), *c))
                .collect()
        };
        let later = |r: &Cohort, c: &Cohort| {
            if c.born > r.born {
                (c.born, c.eps)
            } else {
                (
                    r.born,
                    r.eps.or(if c.born == r.born { c.eps } else { None }),
                )
            }
        };
        let col_blocks = ends(&self.cols, cols);
        for (r0, r1, row) in ends(&self.rows, rows) {
            if let [(_, _, col)] = col_blocks[..] {
                // One column block: the rows form one contiguous range.
                let (born, eps) = later(&row, &col);
                f(born, eps, &mut std::iter::once(r0 * cols..r1 * cols));
                continue;
            }
            for &(c0, c1, col) in &col_blocks {
                let (born, eps) = later(&row, &col);
                f(
                    born,
                    eps,
                    &mut (r0..r1).map(move |r| r * cols + c0..r * cols + c1),
                );
            }
        }
    }

    /// Checks that the state is well-formed: buffer lengths, cohort order and range, births
    /// no later than `steps`.
    pub fn validate(&self, n_buffers: usize, steps: u64) -> Result<(), GrowError> {
        let bad = |why: String| {
            Err(GrowError::StateMismatch(format!(
                "tensor {:?}: {why}",
                self.name
            )))
        };
        let Some(len) = self.dims.0.checked_mul(self.dims.1) else {
            return bad(format!("dims {:?} overflow", self.dims));
        };
        if self.buffers.len() != n_buffers {
            return bad(format!(
                "{} state buffers, the optimizer keeps {n_buffers}",
                self.buffers.len()
            ));
        }
        if let Some(b) = self.buffers.iter().find(|b| b.len() != len) {
            return bad(format!(
                "a buffer of {} values for dims {:?}",
                b.len(),
                self.dims
            ));
        }
        for (cohorts, n, what) in [
            (&self.rows, self.dims.0, "row"),
            (&self.cols, self.dims.1, "column"),
        ] {
            if cohorts.first().map(|c| c.start) != Some(0) {
                return bad(format!("its {what} cohorts must start at 0"));
            }
            for pair in cohorts.windows(2) {
                if pair[1].start <= pair[0].start {
                    return bad(format!("its {what} cohorts are not in increasing order"));
                }
            }
            if let Some(c) = cohorts.iter().skip(1).find(|c| c.start >= n) {
                return bad(format!("a {what} cohort starts at {} of {n}", c.start));
            }
            if let Some(c) = cohorts
                .iter()
                .find(|c| c.eps.is_some_and(|e| !(e.is_finite() && e > 0.0)))
            {
                return bad(format!("a {what} cohort with epsilon {:?}", c.eps));
            }
            if let Some(c) = cohorts.iter().find(|c| c.born > steps) {
                return bad(format!(
                    "a {what} cohort born at step {} after {steps} steps",
                    c.born
                ));
            }
        }
        Ok(())
    }

    /// The same state with every value converted by `f`.
    pub fn map<F>(&self, f: impl Fn(&E) -> F) -> TensorState<F> {
        TensorState {
            name: self.name.clone(),
            dims: self.dims,
            buffers: self
                .buffers
                .iter()
                .map(|b| b.iter().map(&f).collect())
                .collect(),
            rows: self.rows.clone(),
            cols: self.cols.clone(),
        }
    }
}

/// `cohorts` over `n` rows (or columns) with `renewed` born at `born` with `eps`: runs of
/// equal birth and epsilon, in order.
fn respan(
    cohorts: &[Cohort],
    n: usize,
    renewed: &[usize],
    born: u64,
    eps: Option<f64>,
) -> Vec<Cohort> {
    if renewed.is_empty() {
        return cohorts.to_vec();
    }
    let mut per: Vec<(u64, Option<f64>)> = Vec::with_capacity(n);
    for (i, c) in cohorts.iter().enumerate() {
        let end = cohorts.get(i + 1).map_or(n, |d| d.start).min(n);
        per.extend((c.start.min(end)..end).map(|_| (c.born, c.eps)));
    }
    let len = per.len();
    for &i in renewed.iter().filter(|&&i| i < len) {
        per[i] = (born, eps);
    }
    let mut out: Vec<Cohort> = Vec::new();
    for (i, &(b, e)) in per.iter().enumerate() {
        if out.last().is_none_or(|c| (c.born, c.eps) != (b, e)) {
            out.push(Cohort {
                start: i,
                born: b,
                eps: e,
            });
        }
    }
    if out.is_empty() {
        // No row at all: keep the (empty) tensor's cohort list as it was.
        return cohorts.to_vec();
    }
    out
}

/// The state of every tensor of a model, in the order of its parameter walk.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelState<E> {
    /// One entry per tensor.
    pub tensors: Vec<TensorState<E>>,
}

impl<E: Copy + Default> ModelState<E> {
    /// Makes the state follow a model whose tensors are now `dims` (name and size, in walk
    /// order): allocates it on first use, pads grown tensors (new entries born at `step`),
    /// gives tensors it has not seen (a new block) fresh state born at `step`, and refuses
    /// anything else (a tensor that shrank, or one that disappeared) without changing the
    /// state.
    pub fn sync(
        &mut self,
        dims: &[(String, (usize, usize))],
        n_buffers: usize,
        step: u64,
        eps_for: &dyn Fn(&TensorState<E>) -> Option<f64>,
    ) -> Result<(), GrowError> {
        let same_order = self.tensors.len() == dims.len()
            && self
                .tensors
                .iter()
                .zip(dims)
                .all(|(t, (n, _))| t.name == *n);
        if same_order {
            for (s, (_, d)) in self.tensors.iter().zip(dims) {
                s.check_resize(*d)?;
            }
            for (s, (_, d)) in self.tensors.iter_mut().zip(dims) {
                if s.dims != *d {
                    let eps = eps_for(s);
                    s.resize(*d, step, eps);
                }
            }
            return Ok(());
        }
        self.plan_sync(dims)?;
        let mut old: std::collections::BTreeMap<String, TensorState<E>> =
            std::mem::take(&mut self.tensors)
                .into_iter()
                .map(|t| (t.name.clone(), t))
                .collect();
        self.tensors = dims
            .iter()
            .map(|(name, d)| match old.remove(name) {
                Some(mut t) => {
                    if t.dims != *d {
                        let eps = eps_for(&t);
                        t.resize(*d, step, eps);
                    }
                    t
                }
                None => TensorState::new(name, *d, n_buffers, step),
            })
            .collect();
        Ok(())
    }

    /// Every check of [`ModelState::sync`], changing nothing.
    pub fn plan_sync(&self, dims: &[(String, (usize, usize))]) -> Result<(), GrowError> {
        let mut by_name = std::collections::BTreeMap::new();
        for (n, d) in dims {
            if n.is_empty() || by_name.insert(n.as_str(), *d).is_some() {
                return Err(GrowError::ParamName { name: n.clone() });
            }
        }
        for t in &self.tensors {
            match by_name.get(t.name.as_str()) {
                Some(d) => t.check_resize(*d)?,
                None => {
                    return Err(GrowError::StateMismatch(format!(
                        "the optimizer holds state for tensor {:?}, which the model no longer has",
                        t.name
                    )))
                }
            }
        }
        Ok(())
    }
}
