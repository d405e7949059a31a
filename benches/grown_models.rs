//! A grown residual MLP and a grown CNN step against the same models built at their final
//! sizes: what growth leaves behind (optimizer state split into birth cohorts, tensors
//! rebuilt by growth) costs per step.
//!
//! ```text
//! cargo bench --bench grown_models            # BENCH_REPS=N for more rounds
//! ```

mod common;

use std::time::{Duration, Instant};

use common::{compare, header, reps, table, whole};
use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::optim::{Adam, AdamConfig, Optimizer};
use dfdx_grow::rand::{rngs::StdRng, Rng, SeedableRng};
use dfdx_grow::{
    grow_site, Activation, Cnn, ConvSpec, Data, Growable, Init, Matrix, Params, ResMlp,
};

type Traced = Tensor<(usize, usize), f32, Cpu, OwnedTape<f32, Cpu>>;

/// A random batch of 128 inputs of `width` and one-hot targets over 10 classes.
fn batch(dev: &Cpu, width: usize) -> (Matrix<f32, Cpu>, Matrix<f32, Cpu>) {
    let mut rng = StdRng::seed_from_u64(0);
    let x = (0..128 * width).map(|_| rng.gen_range(0.0..1.0)).collect();
    let mut y = vec![0.0; 128 * 10];
    for r in 0..128 {
        y[r * 10 + rng.gen_range(0..10)] = 1.0;
    }
    (
        dev.tensor_from_vec(x, (128, width)),
        dev.tensor_from_vec(y, (128, 10)),
    )
}

/// One Adam step, the input as data.
fn step<M>(m: &mut M, opt: &mut Adam<f32>, x: &Matrix<f32, Cpu>, y: &Matrix<f32, Cpu>) -> Duration
where
    M: Params<f32, Cpu> + Module<Data<Traced>, Output = Traced>,
    <M as Module<Data<Traced>>>::Error: std::fmt::Debug,
{
    let t = Instant::now();
    let grads = m.try_alloc_grads().unwrap();
    let loss = cross_entropy_with_logits_loss(m.forward(Data(x.clone().traced(grads))), y.clone());
    let mut grads = loss.backward();
    opt.update(m, &mut grads).unwrap();
    t.elapsed()
}

fn adam() -> Adam<f32> {
    Adam::new(AdamConfig::default()).unwrap()
}

/// 784 -> stream 256, blocks of 128 grown to 512, a third block inserted at 128 and grown
/// to 512, 5 steps between edits; against the same model built with three blocks of 512.
fn resmlp(dev: &Cpu) {
    let (x, y) = batch(dev, 784);
    let mut rng = StdRng::seed_from_u64(1);
    let mut built = ResMlp::<f32, Cpu>::new(
        784,
        256,
        &[512, 512, 512],
        10,
        Activation::Relu,
        dev,
        &mut rng,
    )
    .unwrap();
    let mut bopt = adam();
    let mut grown =
        ResMlp::<f32, Cpu>::new(784, 256, &[128, 128], 10, Activation::Relu, dev, &mut rng)
            .unwrap();
    let mut gopt = adam();
    for edit in 0..4 {
        for _ in 0..5 {
            step(&mut grown, &mut gopt, &x, &y);
        }
        match edit {
            0 => {
                grown.deepen("blocks.0", 128, &mut rng).unwrap();
            }
            1 | 2 => {
                for site in grown.sites() {
                    let k = site.width;
                    grow_site(&mut grown, &site.name, k, &Init::ZerosOut, &mut rng).unwrap();
                }
            }
            _ => {}
        }
    }
    let widths: Vec<usize> = grown.sites().iter().map(|s| s.width).collect();
    assert_eq!(widths, [512, 512, 512]);
    for _ in 0..5 {
        step(&mut built, &mut bopt, &x, &y);
    }
    let mut cases = vec![
        whole("ResMlp built at 784-256-[512x3]-10", || {
            step(&mut built, &mut bopt, &x, &y);
        }),
        whole("ResMlp grown to 784-256-[512x3]-10", || {
            step(&mut grown, &mut gopt, &x, &y);
        }),
    ];
    let s = compare(&mut cases, 0, 3, reps(30));
    table(
        "residual MLP, one Adam step, batch 128: grown (2 blocks of 128, a third inserted, \
         all doubled twice) vs built at the final size",
        "ResMlp built at 784-256-[512x3]-10",
        &s,
    );
}

/// A CNN on 1x28x28 with 8 -> 16 channels grown to 16 -> 32 vs built at 16 -> 32.
fn cnn(dev: &Cpu) {
    let (x, y) = batch(dev, 784);
    let mut rng = StdRng::seed_from_u64(2);
    let convs = |a, b| {
        [
            ConvSpec {
                channels: a,
                kernel: 3,
                stride: 1,
                padding: 1,
            },
            ConvSpec {
                channels: b,
                kernel: 3,
                stride: 2,
                padding: 1,
            },
        ]
    };
    let mut built = Cnn::<f32, Cpu>::new(
        (1, 28, 28),
        &convs(16, 32),
        10,
        Activation::Relu,
        dev,
        &mut rng,
    )
    .unwrap();
    let mut bopt = adam();
    let mut grown = Cnn::<f32, Cpu>::new(
        (1, 28, 28),
        &convs(8, 16),
        10,
        Activation::Relu,
        dev,
        &mut rng,
    )
    .unwrap();
    let mut gopt = adam();
    for _ in 0..5 {
        step(&mut grown, &mut gopt, &x, &y);
    }
    grow_site(&mut grown, "convs.0", 8, &Init::ZerosOut, &mut rng).unwrap();
    for _ in 0..5 {
        step(&mut grown, &mut gopt, &x, &y);
    }
    grow_site(&mut grown, "convs.1", 16, &Init::ZerosOut, &mut rng).unwrap();
    for _ in 0..5 {
        step(&mut grown, &mut gopt, &x, &y);
        step(&mut built, &mut bopt, &x, &y);
    }
    let mut cases = vec![
        whole("CNN built at 16 -> 32 channels", || {
            step(&mut built, &mut bopt, &x, &y);
        }),
        whole("CNN grown from 8 -> 16 channels", || {
            step(&mut grown, &mut gopt, &x, &y);
        }),
    ];
    let s = compare(&mut cases, 0, 3, reps(30));
    table(
        "CNN 1x28x28 -> conv 3x3 -> conv 3x3 stride 2 -> linear 10, one Adam step, batch 128: \
         grown vs built at the final size",
        "CNN built at 16 -> 32 channels",
        &s,
    );
}

fn main() {
    header("grown_models: grown vs built at the final size");
    let dev = Cpu::default();
    resmlp(&dev);
    cnn(&dev);
}
