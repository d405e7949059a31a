//! Helpers shared by the integration tests.
#![allow(dead_code)]

use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::optim::Optimizer;
use dfdx_grow::rand::{rngs::StdRng, Rng, SeedableRng};
use dfdx_grow::{Matrix, Mlp, Params, Real};

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// A random (batch, width) input with entries in [-2, 2).
pub fn input<E: Real>(dev: &Cpu, batch: usize, width: usize, rng: &mut StdRng) -> Matrix<E, Cpu>
where
    Cpu: Device<E>,
{
    let v = (0..batch * width)
        .map(|_| E::from_f64(rng.gen_range(-2.0..2.0)).unwrap())
        .collect();
    dev.tensor_from_vec(v, (batch, width))
}

/// One-hot targets for random labels.
pub fn one_hot<E: Real>(dev: &Cpu, batch: usize, classes: usize, rng: &mut StdRng) -> Matrix<E, Cpu>
where
    Cpu: Device<E>,
{
    let mut v = vec![E::zero(); batch * classes];
    for r in 0..batch {
        v[r * classes + rng.gen_range(0..classes)] = E::one();
    }
    dev.tensor_from_vec(v, (batch, classes))
}

/// One training step (cross-entropy) of `mlp`; returns the loss before the step and the
/// gradients it used.
pub fn step<E: Real>(
    mlp: &mut Mlp<E, Cpu>,
    opt: &mut dyn Optimizer<E, Cpu>,
    x: &Matrix<E, Cpu>,
    y: &Matrix<E, Cpu>,
) -> (f64, Gradients<E, Cpu>)
where
    Cpu: Device<E>,
{
    let grads = mlp.try_alloc_grads().unwrap();
    let out = mlp.forward(x.clone().traced(grads));
    let loss = cross_entropy_with_logits_loss(out, y.clone());
    let value = loss.as_vec()[0].to_f64().unwrap();
    let mut grads = loss.backward();
    opt.update(mlp, &mut grads).unwrap();
    (value, grads)
}

/// Every parameter as host vectors, in walk order.
pub fn snapshot<E: Real>(model: &dyn Params<E, Cpu>) -> Vec<Vec<E>>
where
    Cpu: Device<E>,
{
    let mut out = Vec::new();
    model.visit(&mut |p| {
        let mut v = vec![E::zero(); p.len()];
        p.copy_into(&mut v);
        out.push(v);
    });
    out
}

pub fn max_abs_diff<E: Real>(a: &[E], b: &[E]) -> f64
where
    Cpu: Device<E>,
{
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x.to_f64().unwrap() - y.to_f64().unwrap()).abs())
        .fold(0.0, f64::max)
}

pub fn max_abs<E: Real>(a: &[E]) -> f64
where
    Cpu: Device<E>,
{
    a.iter()
        .map(|x| x.to_f64().unwrap().abs())
        .fold(0.0, f64::max)
}
