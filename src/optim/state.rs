//! Per-tensor optimizer state that grows with its tensor.

use serde::{Deserialize, Serialize};

use crate::GrowError;

/// A contiguous run of rows (or columns) born at the same optimizer step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cohort {
    /// First row (or column) of the run.
    pub start: usize,
    /// The optimizer's step count when the run was added (0 for the original tensor).
    pub born: u64,
}

/// The state buffers of one tensor (e.g. Adam's two moments), row-major, plus when each
/// row and column was born.
///
/// Growth only appends rows and columns, so an element's birth is the later of its row's and
/// its column's, and the tensor splits into rectangles that share one birth step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorState<E> {
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
    /// Zeroed state for a tensor of `dims`, born at step `born`.
    pub fn new(dims: (usize, usize), n_buffers: usize, born: u64) -> Self {
        Self {
            dims,
            buffers: vec![vec![E::default(); dims.0 * dims.1]; n_buffers],
            rows: vec![Cohort { start: 0, born }],
            cols: vec![Cohort { start: 0, born }],
        }
    }

    /// Whether the state can follow a tensor that now has `dims` (it may only have grown).
    pub fn check_resize(&self, dims: (usize, usize)) -> Result<(), GrowError> {
        if dims.0 < self.dims.0 || dims.1 < self.dims.1 {
            return Err(GrowError::StateMismatch(format!(
                "a tensor shrank from {:?} to {:?}; growth only appends rows and columns",
                self.dims, dims
            )));
        }
        Ok(())
    }

    /// Follows a tensor that grew to `dims` at step `born`: old entries stay where they were
    /// (top-left), new entries are zero.
    pub fn resize(&mut self, dims: (usize, usize), born: u64) {
        let (r0, c0) = self.dims;
        let (r1, c1) = dims;
        if (r0, c0) == (r1, c1) {
            return;
        }
        for buf in &mut self.buffers {
            let mut grown = vec![E::default(); r1 * c1];
            for r in 0..r0 {
                grown[r * c1..r * c1 + c0].copy_from_slice(&buf[r * c0..(r + 1) * c0]);
            }
            *buf = grown;
        }
        if r1 > r0 {
            self.rows.push(Cohort { start: r0, born });
        }
        if c1 > c0 {
            self.cols.push(Cohort { start: c0, born });
        }
        self.dims = dims;
    }

    /// Calls `f(birth, ranges)` for every rectangle of elements sharing one birth step, where
    /// `ranges` are the flat index ranges of the rectangle's rows.
    pub fn for_each_block(
        &self,
        mut f: impl FnMut(u64, &mut dyn Iterator<Item = std::ops::Range<usize>>),
    ) {
        let (rows, cols) = self.dims;
        let ends = |cohorts: &[Cohort], n: usize| -> Vec<(usize, usize, u64)> {
            cohorts
                .iter()
                .enumerate()
                .map(|(i, c)| (c.start, cohorts.get(i + 1).map_or(n, |d| d.start), c.born))
                .collect()
        };
        let col_blocks = ends(&self.cols, cols);
        for (r0, r1, row_born) in ends(&self.rows, rows) {
            if let [(_, _, col_born)] = col_blocks[..] {
                // One column block: the rows form one contiguous range.
                f(
                    row_born.max(col_born),
                    &mut std::iter::once(r0 * cols..r1 * cols),
                );
                continue;
            }
            for &(c0, c1, col_born) in &col_blocks {
                f(
                    row_born.max(col_born),
                    &mut (r0..r1).map(move |r| r * cols + c0..r * cols + c1),
                );
            }
        }
    }
}

/// The state of every tensor of a model, in the order of its parameter walk.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelState<E> {
    /// One entry per tensor.
    pub tensors: Vec<TensorState<E>>,
}

impl<E> ModelState<E> {
    /// The same state with every value converted by `f` (e.g. f32 to f64 for a checkpoint).
    pub fn map<F>(&self, f: impl Fn(&E) -> F) -> ModelState<F> {
        ModelState {
            tensors: self
                .tensors
                .iter()
                .map(|t| TensorState {
                    dims: t.dims,
                    buffers: t
                        .buffers
                        .iter()
                        .map(|b| b.iter().map(&f).collect())
                        .collect(),
                    rows: t.rows.clone(),
                    cols: t.cols.clone(),
                })
                .collect(),
        }
    }
}

impl<E: Copy + Default> ModelState<E> {
    /// Makes the state follow a model whose tensors now have `dims`: allocates it on first
    /// use, pads grown tensors (new entries born at `step`), and refuses anything else without
    /// changing the state.
    pub fn sync(
        &mut self,
        dims: &[(usize, usize)],
        n_buffers: usize,
        step: u64,
    ) -> Result<(), GrowError> {
        if self.tensors.is_empty() {
            self.tensors = dims
                .iter()
                .map(|&d| TensorState::new(d, n_buffers, step))
                .collect();
            return Ok(());
        }
        if dims.len() != self.tensors.len() {
            return Err(GrowError::StateMismatch(format!(
                "the optimizer holds state for {} tensors but the model has {}",
                self.tensors.len(),
                dims.len()
            )));
        }
        for (s, &d) in self.tensors.iter().zip(dims) {
            s.check_resize(d)?;
        }
        for (s, &d) in self.tensors.iter_mut().zip(dims) {
            s.resize(d, step);
        }
        Ok(())
    }
}
