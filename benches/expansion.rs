//! Growth cost: expanding a hidden layer of a `Mlp<f32, Cpu>` that has Adam state, against a
//! plain allocate-and-copy of the bytes the growth writes.
//!
//! `cargo bench --bench expansion` (`BENCH_REPS=N` to change the repetitions).

mod common;

use std::hint::black_box;
use std::time::Instant;

use common::*;
use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::optim::{Adam, AdamConfig, Optimizer};
use dfdx_grow::rand::{rngs::StdRng, Rng, SeedableRng};
use dfdx_grow::sampling::uniform;
use dfdx_grow::{Activation, Init, Matrix, Mlp, Params};

fn batch(
    dev: &Cpu,
    rng: &mut StdRng,
    b: usize,
    inp: usize,
    classes: usize,
) -> (Matrix<f32, Cpu>, Matrix<f32, Cpu>) {
    let x: Vec<f32> = (0..b * inp).map(|_| rng.gen_range(-2.0..2.0)).collect();
    let mut y = vec![0.0f32; b * classes];
    for r in 0..b {
        y[r * classes + rng.gen_range(0..classes)] = 1.0;
    }
    (
        dev.tensor_from_vec(x, (b, inp)),
        dev.tensor_from_vec(y, (b, classes)),
    )
}

fn one_size(hidden: usize) {
    let dev = Cpu::default();
    let mut rng = StdRng::seed_from_u64(0);
    let mut mlp = Mlp::<f32, Cpu>::new(&[784, hidden, 10], Activation::Relu, &dev, &mut rng);
    let mut opt = Adam::<f32>::new(AdamConfig::default()).unwrap();
    // One Adam step, so that the optimizer holds moments to pad.
    let (x, y) = batch(&dev, &mut rng, 128, 784, 10);
    let grads = mlp.try_alloc_grads().unwrap();
    let loss = cross_entropy_with_logits_loss(mlp.forward(x.traced(grads)), y);
    let mut grads = loss.backward();
    opt.update(&mut mlp, &mut grads).unwrap();

    let k = hidden;
    let grown_params = {
        let mut m = mlp.clone();
        m.expand_hidden(0, k, &Init::ZerosOut, &mut rng).unwrap();
        m.num_params()
    };
    // The bytes the growth writes: the grown parameters plus two moments of the same size.
    let n = 3 * grown_params;
    let src: Vec<f32> = (0..n).map(|i| i as f32).collect();

    let (m0, o0) = (mlp, opt);
    // The same state under `new_unit_eps: 0`: the sync then skips the pass over the old
    // second moments that sets the new cohorts' epsilon (issue 7's fix).
    let mut o0z = Adam::<f32>::new(AdamConfig {
        new_unit_eps: 0.0,
        ..AdamConfig::default()
    })
    .unwrap();
    Optimizer::<f32, Cpu>::load_state(&mut o0z, &o0.save_state(), &m0).unwrap();
    let mut r7 = StdRng::seed_from_u64(7);
    let mut r1 = StdRng::seed_from_u64(1);
    let mut r2 = StdRng::seed_from_u64(2);
    let mut r3 = StdRng::seed_from_u64(3);
    let mut r4 = StdRng::seed_from_u64(4);
    let mut r5 = StdRng::seed_from_u64(5);
    let mut r6 = StdRng::seed_from_u64(6);
    let mut cases = vec![
        whole(
            &format!("memcpy {n} f32 (alloc + copy, {:.1} MB)", n as f64 * 4e-6),
            || {
                let mut dst: Vec<f32> = Vec::with_capacity(n);
                dst.extend_from_slice(&src);
                black_box(&dst);
            },
        ),
        part("expand_hidden + Optimizer::sync", || {
            let (mut m, mut o) = (m0.clone(), o0.clone());
            let t = Instant::now();
            m.expand_hidden(0, k, &Init::ZerosOut, &mut r1).unwrap();
            Optimizer::<f32, Cpu>::sync(&mut o, &m).unwrap();
            let d = t.elapsed();
            black_box((&m, &o));
            d
        }),
        part("expand_hidden only", || {
            let mut m = m0.clone();
            let t = Instant::now();
            m.expand_hidden(0, k, &Init::ZerosOut, &mut r2).unwrap();
            let d = t.elapsed();
            black_box(&m);
            d
        }),
        part("Optimizer::sync only (pad moments)", || {
            let (mut m, mut o) = (m0.clone(), o0.clone());
            m.expand_hidden(0, k, &Init::ZerosOut, &mut r3).unwrap();
            let t = Instant::now();
            Optimizer::<f32, Cpu>::sync(&mut o, &m).unwrap();
            let d = t.elapsed();
            black_box(&o);
            d
        }),
        part("Optimizer::sync only, new_unit_eps 0", || {
            let (mut m, mut o) = (m0.clone(), o0z.clone());
            m.expand_hidden(0, k, &Init::ZerosOut, &mut r7).unwrap();
            let t = Instant::now();
            Optimizer::<f32, Cpu>::sync(&mut o, &m).unwrap();
            let d = t.elapsed();
            black_box(&o);
            d
        }),
        part(
            "sampling the new fan-in alone, one gen_range per draw (before)",
            || {
                let t = Instant::now();
                let bound = 1.0 / 784f64.sqrt();
                let v: Vec<f32> = (0..k * 784)
                    .map(|_| (r4.gen_range(-1.0..1.0) * bound) as f32)
                    .collect();
                let d = t.elapsed();
                black_box(&v);
                d
            },
        ),
        part(
            "sampling the new fan-in alone, sampling::uniform (used by growth)",
            || {
                let t = Instant::now();
                let v: Vec<f32> = uniform(k * 784, 1.0 / 784f64.sqrt(), &mut r6);
                let d = t.elapsed();
                black_box(&v);
                d
            },
        ),
        part("expand_hidden + sync, ZerosBoth (no sampling)", || {
            let (mut m, mut o) = (m0.clone(), o0.clone());
            let t = Instant::now();
            m.expand_hidden(0, k, &Init::ZerosBoth, &mut r5).unwrap();
            Optimizer::<f32, Cpu>::sync(&mut o, &m).unwrap();
            let d = t.elapsed();
            black_box((&m, &o));
            d
        }),
    ];
    let stats = compare(&mut cases, 0, 3, reps(31));
    let name = cases[0].0.clone();
    table(
        &format!(
            "784-{hidden}-10 grown by {k} (to {}), after one Adam step; grown model {grown_params} params",
            hidden + k
        ),
        &name,
        &stats,
    );
}

fn main() {
    header("expansion: growth with Adam state vs a plain copy of the same bytes");
    one_size(1024);
    one_size(256);
}
