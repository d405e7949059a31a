//! Where a training step's time goes: dfdx's matmul of one 784->1024 layer against the
//! crate's `Linear` (its own gemm product on the CPU, which first copies the weight to the
//! host), untraced and traced forward + backward (dfdx computes the input's gradient too; with
//! the input wrapped in `Data` the crate's backward op skips it), and the optimizer's update
//! against its data movement (host copies of every parameter and gradient).
//!
//! `cargo bench --bench step_anatomy` (`BENCH_REPS=N` to change the repetitions).

mod common;

use std::hint::black_box;

use common::*;
use dfdx_grow::dfdx::nn::builders::{Linear as DLinear, ReLU};
use dfdx_grow::dfdx::optim::{Adam as DAdam, AdamConfig as DAdamConfig, Optimizer as DOptimizer};
use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::optim::{Adam, AdamConfig, Optimizer};
use dfdx_grow::rand::{rngs::StdRng, Rng, SeedableRng};
use dfdx_grow::{Activation, Data, Linear, Matrix, Mlp, Params};

const B: usize = 128;

fn matmul(dev: &Cpu) {
    let mut rng = StdRng::seed_from_u64(3);
    let layer = Linear::<f32, Cpu>::new(784, 1024, dev, &mut rng).unwrap();
    let xv: Vec<f32> = (0..B * 784).map(|_| rng.gen_range(-2.0..2.0)).collect();
    let x: Matrix<f32, Cpu> = dev.tensor_from_vec(xv.clone(), (B, 784));
    let w = layer.weight.clone();
    let flops = 2.0 * (B * 784 * 1024) as f64;
    let mut cases = vec![
        whole("x W^T untraced (one matmul, dfdx's)", || {
            black_box(x.clone().matmul(w.clone().permute::<_, Axes2<1, 0>>()));
        }),
        whole(
            "the weight to a fresh host buffer (what the crate's CPU forward reads)",
            || {
                let mut v = vec![0.0f32; 1024 * 784];
                w.copy_into(&mut v);
                black_box(v);
            },
        ),
        whole("Linear forward untraced (matmul + bias)", || {
            black_box(layer.forward(x.clone()));
        }),
        whole("Linear traced forward + backward (loss = sum)", || {
            let g = layer.try_alloc_grads().unwrap();
            let y = layer.forward(x.clone().traced(g));
            black_box(y.sum().backward());
        }),
        whole(
            "Linear traced forward + backward, input as Data (no input gradient)",
            || {
                let g = layer.try_alloc_grads().unwrap();
                let y = layer.forward(Data(x.clone().traced(g)));
                black_box(y.sum().backward());
            },
        ),
        whole("x W^T traced forward + backward (loss = sum)", || {
            let y = x.clone().traced(Gradients::leaky()).matmul(
                w.clone()
                    .traced(Gradients::leaky())
                    .permute::<_, Axes2<1, 0>>(),
            );
            black_box(y.sum().backward());
        }),
    ];
    let s = compare(&mut cases, 0, 5, reps(60));
    table(
        &format!(
            "matmul 128x784 by 784x1024 (f32; one matmul = {:.0} MFLOP)",
            flops * 1e-6
        ),
        &cases[0].0.clone(),
        &s,
    );
    println!(
        "one matmul at the median: {:.1} GFLOP/s\n",
        flops / (s[0].median_ms * 1e-3) * 1e-9
    );
}

type Wide = (DLinear<784, 1024>, ReLU, DLinear<1024, 10>);

fn optimizer(dev: &Cpu) {
    let mut rng = StdRng::seed_from_u64(4);
    let xv: Vec<f32> = (0..B * 784).map(|_| rng.gen_range(-2.0..2.0)).collect();
    let mut yv = vec![0.0f32; B * 10];
    for r in 0..B {
        yv[r * 10 + rng.gen_range(0..10)] = 1.0;
    }
    // dfdx's model and grads.
    let mut model = dev.build_module::<Wide, f32>();
    let xs: Tensor<Rank2<B, 784>, f32, Cpu> = dev.tensor(xv.clone());
    let ys: Tensor<Rank2<B, 10>, f32, Cpu> = dev.tensor(yv.clone());
    let loss = cross_entropy_with_logits_loss(model.forward(xs.traced(model.alloc_grads())), ys);
    let dgrads = loss.backward();
    let mut dopt = DAdam::new(&model, DAdamConfig::default());
    // Ours.
    let mut mlp = Mlp::<f32, Cpu>::new(&[784, 1024, 10], Activation::Relu, dev, &mut rng);
    let x: Matrix<f32, Cpu> = dev.tensor_from_vec(xv, (B, 784));
    let y: Matrix<f32, Cpu> = dev.tensor_from_vec(yv, (B, 10));
    let loss =
        cross_entropy_with_logits_loss(mlp.forward(x.traced(mlp.try_alloc_grads().unwrap())), y);
    let mut grads = loss.backward();
    let mut opt = Adam::<f32>::new(AdamConfig::default()).unwrap();
    let n = mlp.num_params();
    let mut grads2 = grads.clone();
    let mut grads3 = grads.clone();
    let mut mlp2 = mlp.clone();
    let mlp3 = mlp.clone();
    let (mut p, mut g) = (vec![0.0f32; n], vec![0.0f32; n]);
    let mut g3 = vec![0.0f32; n];
    let src = vec![1.0f32; n];
    let mut dst = vec![0.0f32; n];
    let mut cases = vec![
        whole("dfdx Adam update (in place, dfdx kernel)", || {
            dopt.update(&mut model, &dgrads).unwrap();
        }),
        whole("dfdx-grow optim::Adam update", || {
            opt.update(&mut mlp, &mut grads).unwrap();
        }),
        whole(
            "its data movement alone: copy_into + grad_into + copy_from",
            || {
                let mut off = 0;
                mlp2.visit_mut(&mut |_, mut t| {
                    let l = t.as_ref().len();
                    t.as_ref().copy_into(&mut p[off..off + l]);
                    t.as_ref()
                        .grad_into(&mut grads2, &mut g[off..off + l])
                        .unwrap();
                    t.copy_from(&p[off..off + l]);
                    off += l;
                });
                black_box(&p);
            },
        ),
        whole("grad_into alone (every gradient to the host)", || {
            let mut off = 0;
            mlp3.visit(&mut |_, t| {
                let l = t.len();
                t.grad_into(&mut grads3, &mut g3[off..off + l]).unwrap();
                off += l;
            });
            black_box(&g3);
        }),
        whole(&format!("3 x memcpy of {n} f32 (no allocation)"), || {
            for _ in 0..3 {
                dst.copy_from_slice(black_box(&src));
            }
            black_box(&dst);
        }),
    ];
    let s = compare(&mut cases, 0, 5, reps(60));
    table(
        &format!("optimizer update, 784-1024-10 ({n} params), f32"),
        &cases[0].0.clone(),
        &s,
    );
}

fn main() {
    header("step_anatomy: matmul forward vs backward, optimizer update vs its copies");
    let dev = Cpu::default();
    matmul(&dev);
    optimizer(&dev);
}
