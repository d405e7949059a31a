//! What the runs learn from: a fixed data set read in shuffled epochs, or a teacher network
//! labelling fresh inputs at every step; and what they are measured on.

use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use dfdx_grow::{Loss, Probe};
use dfdx_grow_data::teacher_student::{SoftSet, Teacher};
use dfdx_grow_data::Dataset;

pub type M = dfdx_grow::Matrix<f32, Cpu>;

/// A set to evaluate on (or probe with): inputs, target distributions (one-hot for labelled
/// data, the teacher's probabilities for the teacher-student task) and the class counted as
/// right for accuracy.
#[derive(Clone, Debug)]
pub struct EvalSet {
    pub features: Vec<f32>,
    pub targets: Vec<f32>,
    pub labels: Vec<u8>,
    pub n_features: usize,
    pub n_classes: usize,
}

impl EvalSet {
    pub fn from_dataset(ds: &Dataset) -> Self {
        let mut targets = vec![0.0; ds.len() * ds.n_classes];
        for (i, &l) in ds.labels.iter().enumerate() {
            targets[i * ds.n_classes + usize::from(l)] = 1.0;
        }
        Self {
            features: ds.features.clone(),
            targets,
            labels: ds.labels.clone(),
            n_features: ds.n_features,
            n_classes: ds.n_classes,
        }
    }

    pub fn from_soft(s: &SoftSet) -> Self {
        Self {
            features: s.features.clone(),
            targets: s.probs.clone(),
            labels: s.labels(),
            n_features: s.n_features,
            n_classes: s.n_classes,
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Rows `range` as input and target matrices.
    pub fn matrices(&self, dev: &Cpu, range: std::ops::Range<usize>) -> (M, M) {
        let n = range.len();
        let (d, c) = (self.n_features, self.n_classes);
        (
            dev.tensor_from_vec(
                self.features[range.start * d..range.end * d].to_vec(),
                (n, d),
            ),
            dev.tensor_from_vec(
                self.targets[range.start * c..range.end * c].to_vec(),
                (n, c),
            ),
        )
    }

    /// The first `n` rows as a probe batch with cross-entropy as its loss.
    pub fn probe(&self, dev: &Cpu, n: usize) -> Probe<f32, Cpu> {
        let (x, y) = self.matrices(dev, 0..n.min(self.len()));
        Probe {
            input: x,
            target: Some((y, Loss::CrossEntropy)),
        }
    }
}

/// The source of training data of one comparison.
#[derive(Debug)]
pub enum Task {
    /// A fixed training set and a validation set.
    Fixed { train: Dataset, val: EvalSet },
    /// A teacher, its fixed validation set and the probe batch (drawn apart from the stream).
    Teacher {
        teacher: Teacher,
        val: EvalSet,
        /// Inputs for the probe batch, as many as the largest probe asked for.
        probe: EvalSet,
        floor: f64,
    },
}

impl Task {
    pub fn val(&self) -> &EvalSet {
        match self {
            Task::Fixed { val, .. } | Task::Teacher { val, .. } => val,
        }
    }

    /// The probe batch: the first `n` training examples, or `n` inputs of the teacher's own
    /// (drawn apart from the training stream).
    pub fn probe(&self, dev: &Cpu, n: usize) -> Probe<f32, Cpu> {
        match self {
            Task::Fixed { train, .. } => {
                EvalSet::from_dataset(&train.gather(&(0..train.len().min(n)).collect::<Vec<_>>()))
                    .probe(dev, n)
            }
            Task::Teacher { probe, .. } => probe.probe(dev, n),
        }
    }

    /// The lowest loss possible, when known (the teacher's own).
    pub fn floor(&self) -> Option<f64> {
        match self {
            Task::Teacher { floor, .. } => Some(*floor),
            Task::Fixed { .. } => None,
        }
    }

    /// Refuses data a run cannot use: a batch size of 0, a training set smaller than one batch
    /// (epochs are whole batches), an empty validation set.
    pub fn check(&self, batch: usize) -> Result<(), String> {
        if batch == 0 {
            return Err("the batch size must be at least 1".into());
        }
        if let Task::Fixed { train, .. } = self {
            if train.len() < batch {
                return Err(format!(
                    "the training set has {} example(s), fewer than one batch of {batch}",
                    train.len()
                ));
            }
        }
        if self.val().len() == 0 {
            return Err("the validation set is empty: nothing to evaluate the runs on".into());
        }
        Ok(())
    }

    /// The batches of one run, from `seed`: every run of a comparison with the same seed sees
    /// the same batches in the same order.
    pub fn batches(&self, size: usize, seed: u64) -> Batches<'_> {
        match self {
            Task::Fixed { train, .. } => Batches::Epochs {
                data: train,
                size,
                rng: StdRng::seed_from_u64(seed ^ 0x5eed_da7a),
                order: (0..train.len()).collect(),
                cursor: usize::MAX,
                drawn: 0,
            },
            Task::Teacher { teacher, .. } => Batches::Stream {
                stream: teacher.stream(seed ^ 0x7eac_4e85),
                size,
                n_classes: teacher.spec().classes,
            },
        }
    }
}

/// A run's batches.
pub enum Batches<'a> {
    /// Shuffled epochs of whole batches.
    Epochs {
        data: &'a Dataset,
        size: usize,
        rng: StdRng,
        order: Vec<usize>,
        cursor: usize,
        drawn: u64,
    },
    /// Fresh examples at every step.
    Stream {
        stream: dfdx_grow_data::teacher_student::Stream<'a>,
        size: usize,
        n_classes: usize,
    },
}

impl Batches<'_> {
    /// The next batch: inputs and one-hot targets.
    pub fn next_batch(&mut self, dev: &Cpu) -> Result<(M, M), String> {
        match self {
            Batches::Epochs {
                data,
                size,
                rng,
                order,
                cursor,
                drawn,
            } => {
                if cursor.saturating_add(*size) > order.len() {
                    order.shuffle(rng);
                    *cursor = 0;
                }
                *cursor += *size;
                *drawn += 1;
                Ok(data.batch(dev, &order[*cursor - *size..*cursor]))
            }
            Batches::Stream {
                stream,
                size,
                n_classes,
            } => {
                let b = stream.next_batch(*size).map_err(|e| e.to_string())?;
                let d = b.features.len() / *size;
                let mut y = vec![0.0f32; *size * *n_classes];
                for (i, &l) in b.labels.iter().enumerate() {
                    y[i * *n_classes + usize::from(l)] = 1.0;
                }
                Ok((
                    dev.tensor_from_vec(b.features, (*size, d)),
                    dev.tensor_from_vec(y, (*size, *n_classes)),
                ))
            }
        }
    }

    /// Epochs completed so far (whole passes over the training set; a stream has none).
    pub fn epochs_completed(&self) -> u64 {
        match self {
            Batches::Epochs {
                data, size, drawn, ..
            } => *drawn / (data.len() / *size).max(1) as u64,
            Batches::Stream { .. } => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: usize) -> Dataset {
        Dataset::new(
            (0..n * 2).map(|i| i as f32).collect(),
            (0..n).map(|i| (i % 2) as u8).collect(),
            2,
            2,
        )
        .expect("consistent")
    }

    #[test]
    fn epochs_completed_counts_whole_passes_not_the_current_one() {
        let task = Task::Fixed {
            train: set(10),
            val: EvalSet::from_dataset(&set(2)),
        };
        // 10 examples at batch 4: two batches an epoch (the last 2 examples wait).
        let mut b = task.batches(4, 0);
        let dev = Cpu::default();
        let mut seen = Vec::new();
        for _ in 0..5 {
            b.next_batch(&dev).unwrap();
            seen.push(b.epochs_completed());
        }
        assert_eq!(seen, vec![0, 1, 1, 2, 2]);
    }

    #[test]
    fn an_epoch_sees_no_example_twice() {
        let task = Task::Fixed {
            train: set(8),
            val: EvalSet::from_dataset(&set(2)),
        };
        let mut b = task.batches(4, 3);
        let dev = Cpu::default();
        let mut firsts: Vec<f32> = Vec::new();
        for _ in 0..2 {
            let (x, _) = b.next_batch(&dev).unwrap();
            firsts.extend(x.as_vec().chunks(2).map(|r| r[0]));
        }
        firsts.sort_by(f32::total_cmp);
        assert_eq!(firsts, (0..8).map(|i| (2 * i) as f32).collect::<Vec<_>>());
    }

    #[test]
    fn checks_refuse_unusable_data() {
        let task = Task::Fixed {
            train: set(3),
            val: EvalSet::from_dataset(&set(0)),
        };
        assert!(task.check(64).unwrap_err().contains("3 example(s)"));
        assert!(task
            .check(2)
            .unwrap_err()
            .contains("validation set is empty"));
        assert!(task.check(0).unwrap_err().contains("at least 1"));
    }
}
