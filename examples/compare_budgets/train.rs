//! One training run (static or grown), measured in FLOPs and validation loss.

use std::time::Instant;

use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::optim::{Adam, AdamConfig, NewUnitLr, NewUnitSteps, Optimizer};
use dfdx_grow::policy::Metrics;
use dfdx_grow::rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use dfdx_grow::{flops, Activation, GrowthController, Loss, Mlp, Outcome, Params, Probe};
use dfdx_grow_data::{Dataset, Split};

/// Settings shared by every run of a comparison.
#[derive(Clone, Debug)]
pub struct Settings {
    pub steps: usize,
    /// When set, the run goes on past `steps` (up to 3x) until it has spent this many
    /// training FLOPs: grown runs get the static large model's compute budget.
    pub flops_budget: Option<f64>,
    /// The step count of new weights in Adam (the crate's per-cohort count, or the naive
    /// global one).
    pub new_units: NewUnitSteps,
    /// A learning rate of their own for new weights, if any.
    pub new_unit_lr: Option<NewUnitLr>,
    pub batch: usize,
    pub lr: f64,
    pub eval_every: usize,
    pub seed: u64,
}

/// One evaluation point.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Point {
    pub step: usize,
    pub flops: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
}

/// A growth, placed on the loss-FLOPs plane.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Mark {
    pub step: u64,
    pub flops: f64,
    pub site: String,
    pub new_width: usize,
}

/// What one run produced.
#[derive(Clone, Debug)]
pub struct Run {
    pub name: String,
    pub curve: Vec<Point>,
    pub marks: Vec<Mark>,
    pub train_flops: f64,
    pub wall_s: f64,
    pub final_widths: Vec<usize>,
    pub refused: usize,
}

type M = dfdx_grow::Matrix<f32, Cpu>;

/// Rows `idx` of `ds` as an input matrix and one-hot targets.
pub fn batch(dev: &Cpu, ds: &Dataset, idx: &[usize]) -> (M, M) {
    ds.batch(dev, idx)
}

/// Mean cross-entropy and accuracy of `mlp` on all of `ds`.
pub fn evaluate(dev: &Cpu, mlp: &Mlp<f32, Cpu>, ds: &Dataset) -> (f64, f64) {
    let (mut loss, mut correct) = (0.0, 0usize);
    let all: Vec<usize> = (0..ds.len()).collect();
    for chunk in all.chunks(2000) {
        let (x, y) = batch(dev, ds, chunk);
        let out = mlp.forward(x);
        let logits = out.as_vec();
        loss += Loss::CrossEntropy.value(out, &y) * chunk.len() as f64;
        for (r, &i) in chunk.iter().enumerate() {
            let row = &logits[r * ds.n_classes..(r + 1) * ds.n_classes];
            let argmax = (0..ds.n_classes)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap_or(0);
            correct += usize::from(argmax == ds.labels[i] as usize);
        }
    }
    (loss / ds.len() as f64, correct as f64 / ds.len() as f64)
}

/// The batches of one run: a seeded shuffle of the training set each epoch.
pub struct Batches<'a> {
    dev: Cpu,
    data: &'a Dataset,
    size: usize,
    rng: StdRng,
    order: Vec<usize>,
    cursor: usize,
    /// Epochs started so far.
    pub epoch: u64,
}

impl<'a> Batches<'a> {
    pub fn new(data: &'a Dataset, size: usize, rng: StdRng) -> Self {
        let order: Vec<usize> = (0..data.len()).collect();
        Self {
            dev: Cpu::default(),
            data,
            size,
            rng,
            cursor: order.len(),
            order,
            epoch: 0,
        }
    }

    /// Epochs completed (what [`Metrics::epoch`] means): the epoch in progress counts once its
    /// last whole batch has been taken.
    pub fn epochs_completed(&self) -> u64 {
        if self.cursor + self.size > self.order.len() {
            self.epoch
        } else {
            self.epoch.saturating_sub(1)
        }
    }

    /// The next batch, reshuffling at each epoch's start.
    pub fn next_batch(&mut self) -> (M, M) {
        if self.cursor + self.size > self.order.len() {
            self.order.shuffle(&mut self.rng);
            self.cursor = 0;
            self.epoch += 1;
        }
        self.cursor += self.size;
        batch(
            &self.dev,
            self.data,
            &self.order[self.cursor - self.size..self.cursor],
        )
    }
}

/// Refuses data a run cannot use: a batch size of 0, a training set smaller than one batch
/// (`Batches` takes whole batches), an empty validation set (nothing to evaluate on).
pub fn check_data(data: &Split, batch: usize) -> Result<(), String> {
    if batch == 0 {
        return Err("the batch size must be at least 1".into());
    }
    if data.train.len() < batch {
        return Err(format!(
            "the training set has {} example(s), fewer than one batch of {batch}",
            data.train.len()
        ));
    }
    if data.val.is_empty() {
        return Err("the validation set is empty: nothing to evaluate the runs on".into());
    }
    Ok(())
}

/// One Adam step on `(x, y)`; returns the training loss and the gradients.
pub fn adam_step(
    mlp: &mut Mlp<f32, Cpu>,
    opt: &mut Adam<f32>,
    x: M,
    y: M,
) -> Result<(f64, Gradients<f32, Cpu>), String> {
    let grads = mlp.try_alloc_grads().map_err(|e| e.to_string())?;
    let loss = cross_entropy_with_logits_loss(mlp.forward(x.traced(grads)), y);
    let train_loss = loss.as_vec()[0] as f64;
    let mut grads = loss.backward();
    opt.update(mlp, &mut grads).map_err(|e| e.to_string())?;
    Ok((train_loss, grads))
}

/// Trains an MLP of `sizes` on `data` for `s.steps` steps of Adam, growing it through
/// `controller` when one is given. The data order, init and optimizer depend only on the seed,
/// so every run of a comparison sees the same batches.
pub fn train(
    name: &str,
    data: &Split,
    sizes: &[usize],
    max_width: usize,
    mut controller: Option<GrowthController>,
    s: &Settings,
    progress: &mut dyn FnMut(&str, &Point, &[usize]),
) -> Result<Run, String> {
    check_data(data, s.batch).map_err(|e| format!("{name}: {e}"))?;
    let dev = Cpu::default();
    let mut rng = StdRng::seed_from_u64(s.seed);
    let mut mlp = Mlp::<f32, Cpu>::try_new(sizes, Activation::Relu, &dev, &mut rng)
        .map_err(|e| e.to_string())?
        .with_max_width(max_width);
    let mut opt = Adam::<f32>::new(AdamConfig {
        lr: s.lr,
        new_units: s.new_units,
        ..Default::default()
    })
    .map_err(|e| e.to_string())?;
    if let Some(lr) = s.new_unit_lr {
        opt = opt.with_new_unit_lr(lr).map_err(|e| e.to_string())?;
    }
    let train_set = &data.train;
    let probe_idx: Vec<usize> = (0..train_set.len().min(512)).collect();
    let (px, py) = batch(&dev, train_set, &probe_idx);
    let probe = Probe {
        input: px,
        target: Some((py, Loss::CrossEntropy)),
    };

    // The shuffles continue the init's random stream.
    let mut batches = Batches::new(train_set, s.batch, rng);
    let mut spent = 0.0;
    let (mut curve, mut marks, mut refused) = (Vec::new(), Vec::new(), 0);
    let start = Instant::now();
    let eval = |mlp: &Mlp<f32, Cpu>, step: usize, spent: f64| {
        let (val_loss, val_accuracy) = evaluate(&dev, mlp, &data.val);
        Point {
            step,
            flops: spent,
            val_loss,
            val_accuracy,
        }
    };
    curve.push(eval(&mlp, 0, 0.0));
    let last_step = if s.flops_budget.is_some() {
        3 * s.steps
    } else {
        s.steps
    };
    for step in 1..=last_step {
        let cost = flops::train_step(&mlp.widths(), s.batch, flops::ADAM_UPDATE_FLOPS);
        // The step that reaches the budget is the last one.
        let done = step == last_step || s.flops_budget.is_some_and(|b| spent + cost > b);
        let (x, y) = batches.next_batch();
        let (train_loss, mut grads) = adam_step(&mut mlp, &mut opt, x, y)?;
        spent += cost;

        let evaluated = step.is_multiple_of(s.eval_every) || done;
        if evaluated {
            let p = eval(&mlp, step, spent);
            progress(name, &p, &mlp.widths());
            curve.push(p);
        }
        if let Some(ctl) = controller.as_mut() {
            let val = evaluated.then(|| curve[curve.len() - 1].val_loss);
            let m = Metrics::of(&mlp)
                .step(step as u64)
                .epoch(batches.epochs_completed())
                .train_loss(train_loss)
                .val_loss(val)
                .grads(&mut grads)
                .flops(spent)
                .build()
                .map_err(|e| e.to_string())?;
            // What the policy's statistics cost: a slope window and the gradient norms.
            spent += flops::policy_observation(100, mlp.num_params());
            match ctl
                .observe(&m, &mut mlp, &mut opt, Some(&probe))
                .map_err(|e| format!("{name}: step {step}: {e}"))?
            {
                Outcome::Grown(events) => {
                    for e in events {
                        spent += flops::growth(e.params_after, 2)
                            + 2.0 * flops::forward(&mlp.widths(), probe_idx.len());
                        marks.push(Mark {
                            step: e.step,
                            flops: spent,
                            site: e.site,
                            new_width: e.new_width,
                        });
                    }
                }
                Outcome::Refused(r) => {
                    refused += 1;
                    eprintln!(
                        "  {name}: step {step}: {} asked for a growth that was refused: {}",
                        r.policy, r.why
                    );
                }
                Outcome::Undone(r) => {
                    refused += 1;
                    eprintln!(
                        "  {name}: step {step}: {}: growth undone: {}",
                        r.policy, r.why
                    );
                }
                Outcome::Idle => {}
            }
        }
        if done {
            break;
        }
    }
    // The declined growths still pending are summarised in the log.
    if let Some(ctl) = controller.as_mut() {
        ctl.flush().map_err(|e| e.to_string())?;
    }
    Ok(Run {
        name: name.to_string(),
        curve,
        marks,
        train_flops: spent,
        wall_s: start.elapsed().as_secs_f64(),
        final_widths: mlp.widths(),
        refused,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dfdx_grow_data::Dataset;

    fn settings(batch: usize) -> Settings {
        Settings {
            steps: 5,
            flops_budget: None,
            new_units: NewUnitSteps::Cohort,
            new_unit_lr: None,
            batch,
            lr: 1e-3,
            eval_every: 1,
            seed: 0,
        }
    }

    fn set(n: usize) -> Dataset {
        Dataset::new(
            vec![0.5; n * 4],
            (0..n).map(|i| (i % 2) as u8).collect(),
            4,
            2,
        )
        .expect("consistent")
    }

    fn run(train_n: usize, val_n: usize, batch: usize) -> Result<Run, String> {
        let data = Split {
            train: set(train_n),
            val: set(val_n),
        };
        train(
            "t",
            &data,
            &[4, 3, 2],
            64,
            None,
            &settings(batch),
            &mut |_, _, _| {},
        )
    }

    #[test]
    fn fewer_training_examples_than_a_batch_is_an_error_not_a_panic() {
        let e = run(3, 2, 64).expect_err("3 < 64");
        assert!(
            e.contains("3 example(s), fewer than one batch of 64"),
            "{e}"
        );
        let e = run(0, 2, 1).expect_err("no training data");
        assert!(e.contains("0 example(s)"), "{e}");
    }

    #[test]
    fn an_empty_validation_set_or_a_zero_batch_is_an_error() {
        assert!(run(8, 0, 4)
            .expect_err("no val")
            .contains("validation set is empty"));
        assert!(run(8, 2, 0).expect_err("batch 0").contains("at least 1"));
    }

    #[test]
    fn epochs_completed_counts_whole_passes_not_the_epoch_in_progress() {
        let data = set(8);
        let mut b = Batches::new(&data, 3, StdRng::seed_from_u64(0));
        assert_eq!(b.epochs_completed(), 0);
        // 8 examples in batches of 3: two batches an epoch (the last 2 are skipped).
        let mut seen = Vec::new();
        for _ in 0..5 {
            b.next_batch();
            seen.push(b.epochs_completed());
        }
        assert_eq!(seen, [0, 1, 1, 2, 2]);
    }

    #[test]
    fn exactly_one_batch_of_data_trains() {
        let r = run(4, 2, 4).expect("one batch per epoch is enough");
        assert_eq!(r.curve.last().map(|p| p.step), Some(5));
    }
}
