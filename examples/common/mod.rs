//! The training helpers the examples share (the data's shuffled batches, one Adam step,
//! evaluation): `mod common;` in an example. A folder without a `main.rs`, so cargo does not
//! build it as an example of its own.

use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::optim::{Adam, Optimizer};
use dfdx_grow::rand::{rngs::StdRng, seq::SliceRandom};
use dfdx_grow::{Data, Loss, Mlp, Params};
use dfdx_grow_data::Dataset;

type M = dfdx_grow::Matrix<f32, Cpu>;

/// Mean cross-entropy and accuracy of `mlp` on all of `ds`.
pub fn evaluate(dev: &Cpu, mlp: &Mlp<f32, Cpu>, ds: &Dataset) -> (f64, f64) {
    let (mut loss, mut correct) = (0.0, 0usize);
    let all: Vec<usize> = (0..ds.len()).collect();
    for chunk in all.chunks(2000) {
        let (x, y): (M, M) = ds.batch(dev, chunk);
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

/// Batches of a seeded shuffle of the training set, reshuffled at each epoch's start.
pub struct Batches<'a> {
    dev: Cpu,
    data: &'a Dataset,
    size: usize,
    rng: StdRng,
    order: Vec<usize>,
    cursor: usize,
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
        }
    }

    pub fn next_batch(&mut self) -> (M, M) {
        if self.cursor + self.size > self.order.len() {
            self.order.shuffle(&mut self.rng);
            self.cursor = 0;
        }
        self.cursor += self.size;
        self.data
            .batch(&self.dev, &self.order[self.cursor - self.size..self.cursor])
    }
}

/// One Adam step on `(x, y)`.
pub fn adam_step(mlp: &mut Mlp<f32, Cpu>, opt: &mut Adam<f32>, x: M, y: M) -> Result<(), String> {
    let grads = mlp.try_alloc_grads().map_err(|e| e.to_string())?;
    let loss = cross_entropy_with_logits_loss(mlp.forward(Data(x.traced(grads))), y);
    let mut grads = loss.backward();
    opt.update(mlp, &mut grads).map_err(|e| e.to_string())
}
