//! A compute-bound task: a fixed random teacher network labels fresh random inputs, so a
//! student never sees an example twice and more compute always means more data.
//!
//! The teacher is an MLP with `tanh` hidden layers: `x ~ N(0, I)`, each hidden layer
//! `h = tanh(W h_prev + b)` with `W ~ N(0, weight_gain^2 / fan_in)` and `b ~ N(0, bias_std^2)`,
//! the logits `W_out h` with `W_out ~ N(0, logit_gain^2 / fan_in)`. A label is drawn from the
//! softmax of the logits. Larger gains make the function less smooth (more saturated units) and
//! the labels less noisy, which is what makes a student's width matter.
//!
//! The best any student can do is the teacher itself: its expected cross-entropy against its
//! own labels is the mean entropy of its softmax, [`SoftSet::loss_floor`].
//!
//! ```
//! use dfdx_grow_data::teacher_student::{Teacher, TeacherSpec};
//!
//! let teacher = Teacher::new(TeacherSpec { inputs: 4, hidden: vec![8], ..TeacherSpec::default() }, 1).unwrap();
//! let mut stream = teacher.stream(2);
//! let batch = stream.next_batch(16).unwrap();
//! assert_eq!((batch.features.len(), batch.labels.len()), (16 * 4, 16));
//! let val = teacher.soft_set(100, 3).unwrap();
//! let floor = val.loss_floor();
//! assert!(floor > 0.0 && floor < (10f64).ln());
//! ```

use dfdx::prelude::{Axis, BroadcastTo, Cpu, Tensor, TensorFromVec, TryMatMul};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

use crate::{DataError, Dataset, Matrix};

/// The teacher's shape and scales.
#[derive(Clone, Debug, PartialEq)]
pub struct TeacherSpec {
    /// Input features (each drawn from N(0, 1)).
    pub inputs: usize,
    /// The widths of the `tanh` hidden layers (at least one).
    pub hidden: Vec<usize>,
    /// Classes.
    pub classes: usize,
    /// The hidden weights' standard deviation times `sqrt(fan_in)`.
    pub weight_gain: f32,
    /// The hidden biases' standard deviation.
    pub bias_std: f32,
    /// The output weights' standard deviation times `sqrt(fan_in)`: the logits' scale.
    pub logit_gain: f32,
}

impl Default for TeacherSpec {
    /// The task of `compare_budgets --dataset teacher-student`: 32 inputs, one hidden layer
    /// of 512, 10 classes, gains 2 and 6 (see BENCHMARKS.md for why: a 64-wide student ends
    /// about 0.045 nats behind a 1024-wide one at every budget from 2,000 to 8,000 steps).
    fn default() -> Self {
        Self {
            inputs: 32,
            hidden: vec![512],
            classes: 10,
            weight_gain: 2.0,
            bias_std: 0.5,
            logit_gain: 6.0,
        }
    }
}

impl TeacherSpec {
    /// Checks the sizes and scales.
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |why: String| Err(DataError::BadTeacher(why));
        if self.inputs == 0 || self.hidden.is_empty() || self.hidden.contains(&0) {
            return bad(format!(
                "inputs ({}) and every hidden width ({:?}, at least one layer) must be at least 1",
                self.inputs, self.hidden
            ));
        }
        if !(2..=256).contains(&self.classes) {
            return bad(format!(
                "classes must be in 2..=256 (labels are bytes), got {}",
                self.classes
            ));
        }
        for (name, v) in [
            ("weight_gain", self.weight_gain),
            ("bias_std", self.bias_std),
            ("logit_gain", self.logit_gain),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(format!("{name} must be finite and >= 0, got {v}"));
            }
        }
        Ok(())
    }
}

/// One layer of the teacher: weights `(inputs, outputs)` row-major, and biases.
#[derive(Clone, Debug)]
struct Layer {
    inputs: usize,
    outputs: usize,
    weight: Vec<f32>,
    bias: Vec<f32>,
}

/// A fixed random teacher network (see the module docs).
#[derive(Clone, Debug)]
pub struct Teacher {
    spec: TeacherSpec,
    layers: Vec<Layer>,
}

/// A batch of inputs with labels drawn from the teacher.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelledBatch {
    /// `n x inputs` features, row-major.
    pub features: Vec<f32>,
    /// One label per row.
    pub labels: Vec<u8>,
}

/// Inputs with the teacher's class probabilities: a validation set whose loss is the expected
/// cross-entropy over the teacher's labels (no label noise in the measurement).
#[derive(Clone, Debug, PartialEq)]
pub struct SoftSet {
    /// `n x n_features` features, row-major.
    pub features: Vec<f32>,
    /// `n x n_classes` probabilities, row-major.
    pub probs: Vec<f32>,
    /// Features per row.
    pub n_features: usize,
    /// Classes.
    pub n_classes: usize,
}

impl SoftSet {
    /// The number of examples.
    pub fn len(&self) -> usize {
        self.probs.len() / self.n_classes.max(1)
    }

    /// Whether there is no example.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The teacher's most probable class of every example.
    pub fn labels(&self) -> Vec<u8> {
        self.probs
            .chunks(self.n_classes)
            .map(|p| {
                (0..p.len())
                    .max_by(|&a, &b| p[a].total_cmp(&p[b]))
                    .unwrap_or(0) as u8
            })
            .collect()
    }

    /// The lowest expected cross-entropy a student can reach on this set: the mean entropy of
    /// the teacher's softmax (the teacher's own loss against its labels).
    pub fn loss_floor(&self) -> f64 {
        let total: f64 = self
            .probs
            .chunks(self.n_classes)
            .map(|p| {
                -p.iter()
                    .filter(|&&q| q > 0.0)
                    .map(|&q| f64::from(q) * f64::from(q).ln())
                    .sum::<f64>()
            })
            .sum();
        total / self.len().max(1) as f64
    }

    /// The set as a [`Dataset`] with the most probable class as label (for code that wants
    /// hard labels).
    pub fn to_dataset(&self) -> Result<Dataset, DataError> {
        Dataset::new(
            self.features.clone(),
            self.labels(),
            self.n_features,
            self.n_classes,
        )
    }
}

impl Teacher {
    /// A teacher drawn from `seed`.
    pub fn new(spec: TeacherSpec, seed: u64) -> Result<Self, DataError> {
        spec.validate()?;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut layers = Vec::new();
        let mut inputs = spec.inputs;
        let mut layer = |inputs: usize, outputs: usize, gain: f32, bias: f32| {
            let std = gain / (inputs as f32).sqrt();
            let weight = (0..inputs * outputs)
                .map(|_| std * normal(&mut rng))
                .collect();
            let bias = (0..outputs).map(|_| bias * normal(&mut rng)).collect();
            Layer {
                inputs,
                outputs,
                weight,
                bias,
            }
        };
        for &h in &spec.hidden {
            layers.push(layer(inputs, h, spec.weight_gain, spec.bias_std));
            inputs = h;
        }
        layers.push(layer(inputs, spec.classes, spec.logit_gain, 0.0));
        Ok(Self { spec, layers })
    }

    /// The spec it was drawn from.
    pub fn spec(&self) -> &TeacherSpec {
        &self.spec
    }

    /// The class probabilities of the `n x inputs` row-major `features`, `n x classes`.
    pub fn probabilities(&self, features: &[f32]) -> Result<Vec<f32>, DataError> {
        let d = self.spec.inputs;
        if !features.len().is_multiple_of(d) {
            return Err(DataError::Shape(format!(
                "{} feature values are not rows of {d}",
                features.len()
            )));
        }
        let n = features.len() / d;
        if n == 0 {
            return Ok(Vec::new());
        }
        let dev = Cpu::default();
        let mut h: Matrix<f32, Cpu> = dev.tensor_from_vec(features.to_vec(), (n, d));
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            let w: Matrix<f32, Cpu> = dev.tensor_from_vec(l.weight.clone(), (l.inputs, l.outputs));
            let b: Tensor<(usize,), f32, Cpu> = dev.tensor_from_vec(l.bias.clone(), (l.outputs,));
            let z = h
                .try_matmul(w)
                .map_err(|e| DataError::Shape(format!("teacher forward: {e:?}")))?
                + b.broadcast_like::<_, Axis<0>>(&(n, l.outputs));
            h = if i < last {
                z.tanh()
            } else {
                z.softmax::<Axis<1>>()
            };
        }
        Ok(h.as_vec())
    }

    /// A stream of fresh labelled batches drawn from `seed`.
    pub fn stream(&self, seed: u64) -> Stream<'_> {
        Stream {
            teacher: self,
            rng: StdRng::seed_from_u64(seed),
            drawn: 0,
        }
    }

    /// `n` fresh inputs drawn from `seed` with their class probabilities.
    pub fn soft_set(&self, n: usize, seed: u64) -> Result<SoftSet, DataError> {
        let mut rng = StdRng::seed_from_u64(seed);
        let features: Vec<f32> = (0..n * self.spec.inputs)
            .map(|_| normal(&mut rng))
            .collect();
        let probs = self.probabilities(&features)?;
        Ok(SoftSet {
            features,
            probs,
            n_features: self.spec.inputs,
            n_classes: self.spec.classes,
        })
    }
}

/// Fresh batches from a [`Teacher`]: inputs from N(0, I), labels drawn from its softmax.
#[derive(Debug)]
pub struct Stream<'t> {
    teacher: &'t Teacher,
    rng: StdRng,
    drawn: u64,
}

impl Stream<'_> {
    /// The next `n` examples.
    pub fn next_batch(&mut self, n: usize) -> Result<LabelledBatch, DataError> {
        let d = self.teacher.spec.inputs;
        let c = self.teacher.spec.classes;
        let features: Vec<f32> = (0..n * d).map(|_| normal(&mut self.rng)).collect();
        let probs = self.teacher.probabilities(&features)?;
        let labels = probs
            .chunks(c)
            .map(|p| sample_class(p, self.rng.gen::<f32>()))
            .collect();
        self.drawn += n as u64;
        Ok(LabelledBatch { features, labels })
    }

    /// Examples drawn so far.
    pub fn examples_drawn(&self) -> u64 {
        self.drawn
    }
}

/// The class whose cumulative probability first passes `u` (the last class for rounding).
fn sample_class(p: &[f32], u: f32) -> u8 {
    let mut acc = 0.0;
    for (i, &q) in p.iter().enumerate() {
        acc += q;
        if u < acc {
            return i as u8;
        }
    }
    (p.len() - 1) as u8
}

fn normal(rng: &mut StdRng) -> f32 {
    StandardNormal.sample(rng)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> TeacherSpec {
        TeacherSpec {
            inputs: 3,
            hidden: vec![5],
            classes: 4,
            ..TeacherSpec::default()
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_teacher_and_batches() {
        let a = Teacher::new(small(), 9).unwrap();
        let b = Teacher::new(small(), 9).unwrap();
        let c = Teacher::new(small(), 10).unwrap();
        let x = vec![0.5, -1.0, 2.0];
        assert_eq!(a.probabilities(&x).unwrap(), b.probabilities(&x).unwrap());
        assert_ne!(a.probabilities(&x).unwrap(), c.probabilities(&x).unwrap());
        let (mut sa, mut sb) = (a.stream(1), b.stream(1));
        assert_eq!(sa.next_batch(7).unwrap(), sb.next_batch(7).unwrap());
        // A stream never repeats itself: the next batch is new.
        assert_ne!(
            sa.next_batch(7).unwrap().features,
            a.stream(1).next_batch(7).unwrap().features
        );
        assert_eq!(sa.examples_drawn(), 14);
    }

    #[test]
    fn probabilities_match_a_direct_computation() {
        let t = Teacher::new(small(), 3).unwrap();
        let x = [0.3f32, -0.7, 1.1];
        let l0 = &t.layers[0];
        let h: Vec<f64> = (0..l0.outputs)
            .map(|o| {
                let z: f64 = (0..3)
                    .map(|i| f64::from(x[i]) * f64::from(l0.weight[i * l0.outputs + o]))
                    .sum::<f64>()
                    + f64::from(l0.bias[o]);
                z.tanh()
            })
            .collect();
        let l1 = &t.layers[1];
        let z: Vec<f64> = (0..4)
            .map(|o| (0..5).map(|i| h[i] * f64::from(l1.weight[i * 4 + o])).sum())
            .collect();
        let m = z.iter().cloned().fold(f64::MIN, f64::max);
        let s: f64 = z.iter().map(|v| (v - m).exp()).sum();
        let p = t.probabilities(&x).unwrap();
        for o in 0..4 {
            let want = (z[o] - m).exp() / s;
            assert!(
                (f64::from(p[o]) - want).abs() < 1e-5,
                "{o}: {} vs {want}",
                p[o]
            );
        }
    }

    #[test]
    fn sampled_labels_follow_the_teacher_probabilities() {
        // One fixed input repeated: the label frequencies converge to its probabilities.
        let t = Teacher::new(small(), 4).unwrap();
        let x = [0.2f32, 0.4, -0.3];
        let p = t.probabilities(&x).unwrap();
        let mut rng = StdRng::seed_from_u64(5);
        let n = 40_000;
        let mut counts = [0usize; 4];
        for _ in 0..n {
            counts[usize::from(sample_class(&p, rng.gen::<f32>()))] += 1;
        }
        for c in 0..4 {
            let freq = counts[c] as f64 / n as f64;
            assert!(
                (freq - f64::from(p[c])).abs() < 0.01,
                "{c}: {freq} vs {}",
                p[c]
            );
        }
    }

    #[test]
    fn the_loss_floor_is_the_mean_entropy_and_below_uniform() {
        let set = SoftSet {
            features: vec![0.0; 2],
            probs: vec![0.25, 0.75, 1.0, 0.0],
            n_features: 1,
            n_classes: 2,
        };
        let h = -(0.25 * 0.25f64.ln() + 0.75 * 0.75f64.ln());
        assert!((set.loss_floor() - 0.5 * h).abs() < 1e-7);
        assert_eq!(set.labels(), vec![1, 0]);
        let t = Teacher::new(TeacherSpec::default(), 0).unwrap();
        let val = t.soft_set(512, 1).unwrap();
        assert!(val.loss_floor() < 10f64.ln() - 0.5, "{}", val.loss_floor());
    }

    #[test]
    fn bad_specs_are_errors() {
        for spec in [
            TeacherSpec {
                hidden: vec![],
                ..small()
            },
            TeacherSpec {
                classes: 1,
                ..small()
            },
            TeacherSpec {
                logit_gain: f32::NAN,
                ..small()
            },
        ] {
            let e = Teacher::new(spec, 0).unwrap_err();
            assert!(matches!(e, DataError::BadTeacher(_)), "{e}");
        }
        let t = Teacher::new(small(), 0).unwrap();
        assert!(t.probabilities(&[1.0, 2.0]).is_err());
    }
}
