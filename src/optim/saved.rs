//! An optimizer's state as a file holds it: f64 values stored bit for bit, so a diverged
//! model's NaN moments save and load like any other.

use serde::{Deserialize, Serialize};

use super::state::{Cohort, TensorState};

/// The saved state of one tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedTensor {
    /// The tensor's name.
    pub name: String,
    /// `(rows, columns)`.
    pub dims: (usize, usize),
    /// One buffer per state variable, as f64 (lossless for f32 and f64).
    #[serde(with = "crate::codec::f64_vecs")]
    pub buffers: Vec<Vec<f64>>,
    /// Row cohorts.
    pub rows: Vec<Cohort>,
    /// Column cohorts.
    pub cols: Vec<Cohort>,
}

impl From<TensorState<f64>> for SavedTensor {
    fn from(t: TensorState<f64>) -> Self {
        SavedTensor {
            name: t.name,
            dims: t.dims,
            buffers: t.buffers,
            rows: t.rows,
            cols: t.cols,
        }
    }
}

impl From<SavedTensor> for TensorState<f64> {
    fn from(t: SavedTensor) -> Self {
        TensorState {
            name: t.name,
            dims: t.dims,
            buffers: t.buffers,
            rows: t.rows,
            cols: t.cols,
        }
    }
}

/// An optimizer's whole saved state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedState {
    /// The kernel's name (`"adam"`, `"sgd"`).
    pub kind: String,
    /// Updates done.
    pub steps: u64,
    /// The learning rate in force.
    pub lr: f64,
    /// Every tensor's state, in the model's walk order.
    pub tensors: Vec<SavedTensor>,
}
