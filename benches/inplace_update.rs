//! One Adam update of a 784x1024 f32 tensor: through host copies of the parameter (as
//! `optim::host_pass` does today) against `optim::adam_in_place` (dfdx's kernel on the crate's
//! state, moved in), with dfdx's kernel called directly as the floor, and the route that was
//! dropped (the step written to a buffer, dfdx's SGD kernel subtracting it).
//!
//! `cargo bench --bench inplace_update` (`BENCH_REPS=N` to change the repetitions).

mod common;

use std::hint::black_box;

use common::*;
use dfdx_grow::dfdx::optim::{AdamConfig as DAdamConfig, SgdConfig as DSgdConfig};
use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::optim::{adam_in_place, AdamConfig, InPlace};
use dfdx_grow::rand::{rngs::StdRng, Rng, SeedableRng};

const SHAPE: (usize, usize) = (1024, 784);
const LR: f32 = 1e-3;
const BETAS: [f32; 2] = [0.9, 0.999];
const EPS: f32 = 1e-8;

/// The crate's Adam loop (as `optim::adam`'s `adam_block`), updating `p`.
#[inline(never)]
fn adam_on_host(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], t: i32) {
    let [b1, b2] = BETAS;
    let (c1, c2) = ((1.0 - b1.powi(t)).recip(), (1.0 - b2.powi(t)).recip());
    for ((p, &g), (m, v)) in p.iter_mut().zip(g).zip(m.iter_mut().zip(v.iter_mut())) {
        *m = *m * b1 + g * (1.0 - b1);
        *v = *v * b2 + g.powi(2) * (1.0 - b2);
        *p -= LR * (*m * c1) / ((*v * c2).sqrt() + EPS);
    }
}

/// The same loop writing the step `d` instead of updating the parameter.
#[inline(never)]
fn adam_step(d: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], t: i32) {
    let [b1, b2] = BETAS;
    let (c1, c2) = ((1.0 - b1.powi(t)).recip(), (1.0 - b2.powi(t)).recip());
    for ((d, &g), (m, v)) in d.iter_mut().zip(g).zip(m.iter_mut().zip(v.iter_mut())) {
        *m = *m * b1 + g * (1.0 - b1);
        *v = *v * b2 + g.powi(2) * (1.0 - b2);
        *d = LR * (*m * c1) / ((*v * c2).sqrt() + EPS);
    }
}

fn main() {
    header("inplace_update: one Adam update of a 784x1024 f32 tensor");
    let dev = Cpu::default();
    let mut rng = StdRng::seed_from_u64(0);
    let n = SHAPE.0 * SHAPE.1;
    let init: Vec<f32> = (0..n).map(|_| rng.gen_range(-0.03..0.03)).collect();
    let grad: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let tensor = |dev: &Cpu| -> Tensor<(usize, usize), f32, Cpu> {
        dev.tensor_from_vec(init.clone(), SHAPE)
    };
    let grads_for = |p: &Tensor<(usize, usize), f32, Cpu>| {
        let mut g = Gradients::leaky();
        g.get_or_alloc_mut(p).unwrap().copy_from_slice(&grad);
        g
    };
    let cfg = DAdamConfig::default();

    // dfdx's kernel: moments as storage vectors of a Gradients of their own.
    let mut p0 = tensor(&dev);
    let mut g0 = grads_for(&p0);
    let (mut m0, mut v0): (Gradients<f32, Cpu>, Gradients<f32, Cpu>) =
        (Gradients::leaky(), Gradients::leaky());
    m0.get_or_alloc_mut(&p0).unwrap();
    v0.get_or_alloc_mut(&p0).unwrap();
    let mut t0 = 0;

    // Host copies, as optim::host_pass.
    let mut p1 = tensor(&dev);
    let mut g1 = grads_for(&p1);
    let (mut m1, mut v1, mut host) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
    let mut t1 = 0;

    // The dropped route: the step into a storage vector, dfdx's SGD (lr 1) subtracts it.
    let mut p2 = tensor(&dev);
    let mut g2 = grads_for(&p2);
    let (mut m2, mut v2) = (vec![0.0f32; n], vec![0.0f32; n]);
    let (mut d2, mut idle2): (Gradients<f32, Cpu>, Gradients<f32, Cpu>) =
        (Gradients::leaky(), Gradients::leaky());
    d2.get_or_alloc_mut(&p2).unwrap();
    idle2.get_or_alloc_mut(&p2).unwrap();
    let unit = DSgdConfig {
        lr: 1.0,
        momentum: None,
        weight_decay: None,
    };
    let mut t2 = 0;

    let mut p3 = tensor(&dev);
    let mut g3 = grads_for(&p3);
    let (mut m3, mut v3) = (vec![0.0f32; n], vec![0.0f32; n]);
    let mut s3 = InPlace::default();
    let ours = AdamConfig::default();
    let mut t3 = 0;

    let mut cases = vec![
        whole(
            "dfdx AdamConfig::try_update (dfdx kernel, in place)",
            || {
                t0 += 1;
                let (m, v) = (
                    m0.get_or_alloc_mut(&p0).unwrap(),
                    v0.get_or_alloc_mut(&p0).unwrap(),
                );
                let g = g0.get_or_alloc_mut(&p0).unwrap();
                cfg.try_update(t0, &mut p0, m, v, g).unwrap();
                black_box(&p0);
            },
        ),
        whole("host copies: copy_into + Adam loop + copy_from", || {
            t1 += 1;
            p1.copy_into(&mut host);
            let g = g1.get_or_alloc_mut(&p1).unwrap();
            adam_on_host(&mut host, g, &mut m1, &mut v1, t1);
            p1.copy_from(&host);
            black_box(&p1);
        }),
        whole("optim::adam_in_place (dfdx kernel, state moved in)", || {
            t3 += 1;
            adam_in_place(&mut p3, &mut g3, &ours, t3, (&mut m3, &mut v3), &mut s3).unwrap();
            black_box(&p3);
        }),
        whole(
            "dropped: Adam step into d, dfdx SGD kernel subtracts",
            || {
                t2 += 1;
                let g = g2.get_or_alloc_mut(&p2).unwrap();
                let d = d2.get_or_alloc_mut(&p2).unwrap();
                adam_step(d, g, &mut m2, &mut v2, t2);
                let idle = idle2.get_or_alloc_mut(&p2).unwrap();
                unit.try_update(&mut p2, idle, d).unwrap();
                black_box(&p2);
            },
        ),
    ];
    let s = compare(&mut cases, 1, 5, reps(60));
    table(
        &format!(
            "Adam update of a {}x{} f32 tensor ({n} values)",
            SHAPE.0, SHAPE.1
        ),
        &cases[1].0.clone(),
        &s,
    );
}
