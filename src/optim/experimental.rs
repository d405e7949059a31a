//! EXPERIMENTAL (issue 7): switches for how Adam treats weights added by a growth, kept
//! apart from the stable configuration so that the research into dying new units can compare
//! them. Every switch defaults to the old behaviour; none changes the weights at the moment
//! of growth, only the optimizer's handling of the new entries.

use serde::{Deserialize, Serialize};

use super::TensorState;

/// How the second moment (`v`) of new entries starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NewUnitMoment {
    /// Zero, like the first moment (the old behaviour).
    #[default]
    Zero,
    /// The mean `v` of the tensor's old entries.
    TensorMean,
    /// Per line: a new row's entry in column `c` gets the mean `v` of column `c` over the old
    /// rows, a new column's entry in row `r` the mean of row `r` over the old columns; entries
    /// that are new in both get the tensor mean. Pair it with [`super::NewUnitSteps::Global`]:
    /// the inherited `v` was accumulated under the global bias correction.
    LineMean,
}

/// Experimental handling of new weights in [`super::Adam`]; the default is the old behaviour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NewUnitExperiment {
    /// Adam's epsilon for weights added by a growth (the old weights keep `eps`).
    pub eps: Option<f64>,
    /// A linear learning-rate warm-up over a cohort's first `n` updates (`lr * t / n`).
    pub warmup: Option<u64>,
    /// How new entries' second moment starts.
    pub moment: NewUnitMoment,
    /// Adam's epsilon for new weights relative to the old ones' scale: a cohort's epsilon is
    /// `eps_rel` times the mean `sqrt(v_hat)` over the tensor's old entries at the growth (at
    /// least `eps`). Overrides [`NewUnitExperiment::eps`].
    pub eps_rel: Option<f64>,
}

/// The mean of `sqrt(v / bias2)` over the entries of `st` inside its old `(rows, cols)`
/// rectangle, `v` being the index of the second-moment buffer.
pub(crate) fn mean_sqrt_v_hat<E: num_traits::Float>(
    st: &TensorState<E>,
    old: (usize, usize),
    v: usize,
    bias2: f64,
) -> f64 {
    let (r0, c0) = old;
    let cols = st.dims.1;
    if r0 * c0 == 0 || bias2 <= 0.0 {
        return 0.0;
    }
    let sum: f64 = (0..r0)
        .flat_map(|r| (0..c0).map(move |c| r * cols + c))
        .map(|j| (st.buffers[v][j].to_f64().unwrap_or(0.0) / bias2).sqrt())
        .sum();
    sum / (r0 * c0) as f64
}

/// Fills the second moment of the entries of `st` outside its old `(rows, cols)` rectangle
/// as `mode` says. `v` is the state buffer holding the second moment.
pub(crate) fn inherit_second_moment<E: num_traits::Float + Default>(
    st: &mut TensorState<E>,
    old: (usize, usize),
    v: usize,
    mode: NewUnitMoment,
) {
    let (r0, c0) = old;
    let (r1, c1) = st.dims;
    if mode == NewUnitMoment::Zero || (r0, c0) == (r1, c1) || r0 * c0 == 0 {
        return;
    }
    let buf = &mut st.buffers[v];
    let count = |n: usize| E::from(n).unwrap_or_else(E::one);
    let mut total = E::zero();
    let mut row_mean = vec![E::zero(); r0];
    let mut col_mean = vec![E::zero(); c0];
    for r in 0..r0 {
        for c in 0..c0 {
            let x = buf[r * c1 + c];
            total = total + x;
            row_mean[r] = row_mean[r] + x;
            col_mean[c] = col_mean[c] + x;
        }
    }
    let tensor_mean = total / count(r0 * c0);
    row_mean.iter_mut().for_each(|x| *x = *x / count(c0));
    col_mean.iter_mut().for_each(|x| *x = *x / count(r0));
    for r in 0..r1 {
        for c in 0..c1 {
            if r < r0 && c < c0 {
                continue;
            }
            buf[r * c1 + c] = match mode {
                NewUnitMoment::LineMean if r >= r0 && c < c0 => col_mean[c],
                NewUnitMoment::LineMean if r < r0 && c >= c0 => row_mean[r],
                _ => tensor_mean,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2 x 2 tensor with second moments 1, 2 / 3, 4 (row-major), grown to 3 x 3.
    fn grown(mode: NewUnitMoment) -> TensorState<f64> {
        let mut st = TensorState::new((2, 2), 2, 0);
        st.buffers[1] = vec![1.0, 2.0, 3.0, 4.0];
        st.resize((3, 3), 7);
        inherit_second_moment(&mut st, (2, 2), 1, mode);
        st
    }

    #[test]
    fn line_mean_gives_new_rows_column_means_and_new_columns_row_means() {
        let st = grown(NewUnitMoment::LineMean);
        #[rustfmt::skip]
        let expected = vec![
            1.0, 2.0, 1.5,
            3.0, 4.0, 3.5,
            2.0, 3.0, 2.5,
        ];
        assert_eq!(st.buffers[1], expected);
        assert_eq!(st.buffers[0], vec![0.0; 9], "the first moment stays zero");
    }

    #[test]
    fn tensor_mean_fills_every_new_entry_with_the_old_mean() {
        let st = grown(NewUnitMoment::TensorMean);
        assert_eq!(
            st.buffers[1],
            vec![1.0, 2.0, 2.5, 3.0, 4.0, 2.5, 2.5, 2.5, 2.5]
        );
    }

    #[test]
    fn zero_mode_leaves_new_entries_zero() {
        let st = grown(NewUnitMoment::Zero);
        assert_eq!(
            st.buffers[1],
            vec![1.0, 2.0, 0.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0]
        );
    }

    #[test]
    fn mean_sqrt_v_hat_reads_only_the_old_rectangle() {
        let mut st = TensorState::<f64>::new((1, 2), 2, 0);
        st.buffers[1] = vec![4.0, 16.0];
        st.resize((2, 3), 5);
        st.buffers[1][2] = 100.0; // a new entry: must not count
                                  // sqrt(4 / 0.25) = 4, sqrt(16 / 0.25) = 8.
        assert_eq!(mean_sqrt_v_hat(&st, (1, 2), 1, 0.25), 6.0);
    }
}
