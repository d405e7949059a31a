//! Data sets for dfdx-grow's examples, benchmarks and tests: a small in-memory [`Dataset`]
//! type, a seeded [`stratified_split`], the embedded UCI optical [`digits`](digits::digits) and
//! a reader for IDX files such as [Fashion-MNIST](idx::load_fashion_mnist).
//!
//! A crate of its own, depending on dfdx but not on dfdx-grow, so that the library carries no
//! data and no gzip dependency (and the library's tests, which use this crate, see one copy of
//! its types).
//!
//! Nothing here downloads anything: loaders read local files (or bytes embedded in the crate)
//! and, when a file is missing, say where they looked and how to get it.
//!
//! ```
//! use dfdx_grow_data::{digits::digits, stratified_split};
//!
//! let ds = digits().unwrap();
//! let split = stratified_split(&ds, 0.2, 42).unwrap();
//! assert_eq!(split.train.len() + split.val.len(), ds.len());
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod digits;
mod error;
mod gz;
pub mod idx;
mod split;
pub mod teacher_student;

pub use error::DataError;
pub use split::{stratified_split, Split};

use dfdx::prelude::{Device, Dtype, Tensor};

/// A runtime-sized dfdx matrix, the same type as dfdx-grow's `Matrix`.
pub type Matrix<E, D> = Tensor<(usize, usize), E, D>;

/// A labelled classification data set held in memory.
///
/// `features` is row-major with one row of `n_features` values per example, each scaled to
/// `[0, 1]`; `labels[i]` is the class of row `i`, below `n_classes`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// All feature values, row after row (`len() * n_features` of them).
    pub features: Vec<f32>,
    /// One class label per row.
    pub labels: Vec<u8>,
    /// The number of features in each row.
    pub n_features: usize,
    /// The number of classes; every label is below it.
    pub n_classes: usize,
}

impl Dataset {
    /// Builds a data set after checking that the parts fit: `features.len()` must be
    /// `labels.len() * n_features` and every label below `n_classes`.
    ///
    /// ```
    /// use dfdx_grow_data::Dataset;
    ///
    /// let ds = Dataset::new(vec![0.0, 1.0, 0.5, 0.5], vec![1, 0], 2, 2).unwrap();
    /// assert_eq!(ds.row(1), &[0.5, 0.5]);
    /// assert!(Dataset::new(vec![0.0], vec![0, 1], 1, 2).is_err());
    /// ```
    pub fn new(
        features: Vec<f32>,
        labels: Vec<u8>,
        n_features: usize,
        n_classes: usize,
    ) -> Result<Self, DataError> {
        if labels.len().checked_mul(n_features) != Some(features.len()) {
            return Err(DataError::Shape(format!(
                "{} feature values for {} rows of {} features",
                features.len(),
                labels.len(),
                n_features
            )));
        }
        if let Some((i, &l)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| usize::from(l) >= n_classes)
        {
            return Err(DataError::Shape(format!(
                "label {l} of row {i} is not below n_classes = {n_classes}"
            )));
        }
        Ok(Self {
            features,
            labels,
            n_features,
            n_classes,
        })
    }

    /// The number of examples (rows).
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The features of example `i`.
    ///
    /// # Panics
    /// If `i >= self.len()`, like slice indexing.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.features[i * self.n_features..(i + 1) * self.n_features]
    }

    /// Rows `indices` as a `(rows, n_features)` input matrix and `(rows, n_classes)` one-hot
    /// targets on `dev` (in dfdx-grow's terms: a `Matrix` input for an `Mlp` and targets for
    /// `Loss::CrossEntropy`).
    ///
    /// # Panics
    /// If an index is out of range, like a slice.
    ///
    /// ```
    /// use dfdx::prelude::*;
    /// use dfdx_grow_data::digits::digits;
    ///
    /// let ds = digits().unwrap();
    /// let (x, y) = ds.batch::<f32, Cpu>(&Cpu::default(), &[0, 1, 2]);
    /// assert_eq!((*x.shape(), *y.shape()), ((3, 64), (3, 10)));
    /// assert_eq!(y.as_vec().iter().sum::<f32>(), 3.0);
    /// ```
    pub fn batch<E, D>(&self, dev: &D, indices: &[usize]) -> (Matrix<E, D>, Matrix<E, D>)
    where
        E: Dtype + num_traits::Float,
        D: Device<E>,
    {
        let cast = |v: f32| E::from_f32(v).unwrap_or_else(E::zero);
        let mut x = Vec::with_capacity(indices.len() * self.n_features);
        let mut y = vec![E::zero(); indices.len() * self.n_classes];
        for (r, &i) in indices.iter().enumerate() {
            x.extend(self.row(i).iter().map(|&v| cast(v)));
            y[r * self.n_classes + usize::from(self.labels[i])] = E::one();
        }
        (
            dev.tensor_from_vec(x, (indices.len(), self.n_features)),
            dev.tensor_from_vec(y, (indices.len(), self.n_classes)),
        )
    }

    /// A new data set holding the given rows, in the given order (repeats allowed).
    ///
    /// ```
    /// use dfdx_grow_data::Dataset;
    ///
    /// let ds = Dataset::new(vec![0.0, 0.1, 0.2], vec![0, 1, 2], 1, 3).unwrap();
    /// let sub = ds.gather(&[2, 0]);
    /// assert_eq!(sub.labels, vec![2, 0]);
    /// assert_eq!(sub.features, vec![0.2, 0.0]);
    /// ```
    ///
    /// # Panics
    /// If an index is `>= self.len()`, like slice indexing.
    pub fn gather(&self, indices: &[usize]) -> Dataset {
        let mut features = Vec::with_capacity(indices.len() * self.n_features);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            features.extend_from_slice(self.row(i));
            labels.push(self.labels[i]);
        }
        Dataset {
            features,
            labels,
            n_features: self.n_features,
            n_classes: self.n_classes,
        }
    }

    /// How many examples each class has: `n_classes` counts (labels at or above `n_classes`,
    /// which [`Dataset::new`] rules out, are not counted).
    ///
    /// ```
    /// use dfdx_grow_data::Dataset;
    ///
    /// let ds = Dataset::new(vec![0.0; 3], vec![0, 2, 2], 1, 3).unwrap();
    /// assert_eq!(ds.class_counts(), vec![1, 0, 2]);
    /// ```
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.n_classes];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(usize::from(l)) {
                *c += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_rejects_label_at_n_classes() {
        let e = Dataset::new(vec![0.0, 0.0], vec![0, 2], 1, 2).unwrap_err();
        assert!(e.to_string().contains("label 2 of row 1"), "{e}");
    }

    #[test]
    fn empty_dataset_has_zero_len() {
        let ds = Dataset::new(vec![], vec![], 4, 3).unwrap();
        assert!(ds.is_empty());
        assert_eq!(ds.len(), 0);
        assert_eq!(ds.gather(&[]).len(), 0);
    }
}
