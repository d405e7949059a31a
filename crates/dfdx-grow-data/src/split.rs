//! Seeded, stratified train/validation split.

use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};

use crate::{DataError, Dataset};

/// A data set cut in two: examples to train on and examples held out for validation.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    /// The training examples.
    pub train: Dataset,
    /// The held-out validation examples.
    pub val: Dataset,
}

/// Splits `ds` into train and validation sets, class by class.
///
/// Each class with `c` examples sends `round(val_fraction * c)` of them (rounding halves away
/// from zero) to `val` and the rest to `train`, so both keep the class proportions of `ds`.
/// Which examples go where, and the order of each set, are shuffled with
/// `StdRng::seed_from_u64(seed)`: the same seed gives the same split. Every example of `ds` ends
/// up in exactly one of the two sets.
///
/// `val_fraction` must be finite and in `[0, 1)`; otherwise [`DataError::BadFraction`].
///
/// ```
/// use dfdx_grow_data::{stratified_split, Dataset};
///
/// let ds = Dataset::new(vec![0.0; 10], vec![0, 0, 0, 0, 1, 1, 1, 1, 1, 1], 1, 2).unwrap();
/// let split = stratified_split(&ds, 0.5, 7).unwrap();
/// assert_eq!(split.val.class_counts(), vec![2, 3]);
/// assert_eq!(split.train.class_counts(), vec![2, 3]);
/// assert!(stratified_split(&ds, 1.0, 7).is_err());
/// ```
pub fn stratified_split(ds: &Dataset, val_fraction: f64, seed: u64) -> Result<Split, DataError> {
    if !(0.0..1.0).contains(&val_fraction) {
        return Err(DataError::BadFraction(val_fraction));
    }
    let (train_idx, val_idx) = split_indices(&ds.labels, val_fraction, seed);
    Ok(Split {
        train: ds.gather(&train_idx),
        val: ds.gather(&val_idx),
    })
}

/// The index lists behind [`stratified_split`]; `val_fraction` is already checked.
fn split_indices(labels: &[u8], val_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); 256];
    for (i, &l) in labels.iter().enumerate() {
        by_class[usize::from(l)].push(i);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut train = Vec::with_capacity(labels.len());
    let mut val = Vec::new();
    for mut members in by_class.into_iter().filter(|m| !m.is_empty()) {
        members.shuffle(&mut rng);
        // In [0, len] because val_fraction is in [0, 1); the `min` only guards rounding.
        let n_val = ((val_fraction * members.len() as f64).round() as usize).min(members.len());
        val.extend_from_slice(&members[..n_val]);
        train.extend_from_slice(&members[n_val..]);
    }
    train.shuffle(&mut rng);
    val.shuffle(&mut rng);
    (train, val)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_nan_negative_and_one() {
        let ds = Dataset::new(vec![0.0; 2], vec![0, 1], 1, 2).unwrap();
        for f in [f64::NAN, -0.1, 1.0, 1.5, f64::INFINITY] {
            let e = stratified_split(&ds, f, 0).unwrap_err();
            assert!(matches!(e, DataError::BadFraction(_)), "{f}: {e}");
        }
    }

    #[test]
    fn zero_fraction_keeps_everything_in_train() {
        let ds = Dataset::new(vec![0.0; 3], vec![0, 1, 1], 1, 2).unwrap();
        let s = stratified_split(&ds, 0.0, 0).unwrap();
        assert_eq!(s.train.len(), 3);
        assert!(s.val.is_empty());
    }

    #[test]
    fn rounds_half_away_from_zero_per_class() {
        // 5 of class 0 -> round(2.5) = 3; 3 of class 1 -> round(1.5) = 2.
        let labels = [0, 0, 0, 0, 0, 1, 1, 1];
        let (train, val) = split_indices(&labels, 0.5, 1);
        assert_eq!(val.len(), 5);
        assert_eq!(train.len(), 3);
    }

    #[test]
    fn labels_beyond_n_classes_do_not_panic() {
        let ds = Dataset {
            features: vec![0.0; 3],
            labels: vec![0, 200, 255],
            n_features: 1,
            n_classes: 2,
        };
        let s = stratified_split(&ds, 0.5, 3).unwrap();
        assert_eq!(s.train.len() + s.val.len(), 3);
    }
}
