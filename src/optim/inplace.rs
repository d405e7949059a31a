//! Updating a parameter in place on the CPU, without copying it to the host and back.
//!
//! dfdx 0.13 hands a tensor's storage mutably only to its own kernels, so the crate's
//! optimizers copy each parameter out (`copy_into`), update the copy and write it back
//! (`copy_from`). dfdx's public optimizer kernels, `AdamConfig::try_update` and
//! `SgdConfig::try_update`, update a tensor in its own storage (it keeps its id) and take the
//! optimizer state as the device's storage vectors. On the CPU such a vector is a `Vec` inside
//! a `Gradients` entry, which can be swapped with the crate's own `Vec` state: the state is
//! moved in for the call and back out, never copied. So [`adam_in_place`] and
//! [`sgd_in_place`] run dfdx's kernels on the crate's state, bit for bit dfdx's `Adam` and
//! `Sgd` (and so the crate's), for a tensor whose blocks of elements share one update: the
//! kernel's constants are equal for all of them (every tensor before a growth; a grown tensor
//! under SGD or Adam's global step count, unless a new-unit learning rate or epsilon sets its
//! new entries apart). A grown tensor under per-cohort Adam steps is updated on host copies,
//! block by block.
//!
//! On other devices both fall back to host copies of the parameter and the same element loop.
//!
//! A third route was measured and dropped: writing Adam's step into a buffer and letting
//! dfdx's SGD kernel (lr 1, no momentum) subtract it, which would serve blocks with step
//! counts of their own too, was no faster than the host copies (dfdx's SGD loop is not
//! vectorised).

use std::any::Any;

use dfdx::optim::{
    AdamConfig as DAdamConfig, Momentum as DMomentum, SgdConfig as DSgdConfig,
    WeightDecay as DDecay,
};
use dfdx::prelude::{Cpu, Device, Dtype, Gradients, HasShape, Shape, Storage, Tensor, ZerosTensor};

use super::{AdamConfig, Momentum, SgdConfig, WeightDecay};
use crate::{GrowError, Real};

/// Reusable shells for the state moved into dfdx's kernels, and a host buffer for the
/// fallback on other devices.
#[derive(Debug)]
pub struct InPlace<E: Dtype> {
    /// One storage vector each, keyed by `key`: the state is swapped into them for a call.
    moment1: Gradients<E, Cpu>,
    moment2: Gradients<E, Cpu>,
    /// Zeros as long as the largest tensor: SGD's kernel zips the parameter with a velocity
    /// even without momentum (and then never reads it).
    idle: Gradients<E, Cpu>,
    key: Tensor<(usize,), E, Cpu>,
    host: Vec<E>,
}

impl<E: Dtype> Default for InPlace<E>
where
    Cpu: Device<E>,
{
    fn default() -> Self {
        Self {
            moment1: Gradients::leaky(),
            moment2: Gradients::leaky(),
            idle: Gradients::leaky(),
            key: Cpu::default().zeros_like(&(0,)),
            host: Vec::new(),
        }
    }
}

impl<E: Dtype> Clone for InPlace<E>
where
    Cpu: Device<E>,
{
    /// Scratch space only: a clone starts empty.
    fn clone(&self) -> Self {
        Self::default()
    }
}

/// A CPU storage vector as the `Vec` it is. A function of its own because where
/// `Cpu: Device<E>` is assumed, the compiler does not see through the storage type.
fn as_vec<E: Dtype>(v: &mut <Cpu as Storage<E>>::Vec) -> &mut Vec<E> {
    v
}

fn shell<'a, E: Dtype>(
    owner: &'a mut Gradients<E, Cpu>,
    key: &Tensor<(usize,), E, Cpu>,
) -> Result<&'a mut <Cpu as Storage<E>>::Vec, GrowError>
where
    Cpu: Device<E>,
{
    owner.get_or_alloc_mut(key).map_err(GrowError::device)
}

fn check_len(what: &str, found: usize, n: usize) -> Result<(), GrowError> {
    if found == n {
        Ok(())
    } else {
        Err(GrowError::StateMismatch(format!(
            "{what} of {found} entries for a tensor of {n}"
        )))
    }
}

fn decay(wd: Option<WeightDecay>) -> Option<DDecay> {
    wd.map(|w| match w {
        WeightDecay::L2(x) => DDecay::L2(x),
        WeightDecay::Decoupled(x) => DDecay::Decoupled(x),
    })
}

/// One Adam step of the whole tensor `p` with step count `t`, learning rate `cfg.lr` (scale it
/// in a copy of the configuration for boosted new units) and moments `m`, `v` (the crate's
/// state, one entry per element), from `p`'s gradient in `grads` (zero if absent).
///
/// dfdx's own kernel on the CPU, in place (`p` keeps its id), the moments moved in and out
/// rather than copied; host copies on other devices. Moments of the wrong length are a
/// [`GrowError::StateMismatch`], with nothing changed.
pub fn adam_in_place<S: Shape, E: Real, D: Device<E>>(
    p: &mut Tensor<S, E, D>,
    grads: &mut Gradients<E, D>,
    cfg: &AdamConfig,
    t: i32,
    (m, v): (&mut Vec<E>, &mut Vec<E>),
    scratch: &mut InPlace<E>,
) -> Result<(), GrowError>
where
    Cpu: Device<E>,
{
    let n = p.shape().num_elements();
    check_len("first moment", m.len(), n)?;
    check_len("second moment", v.len(), n)?;
    let dcfg = DAdamConfig {
        lr: cfg.lr,
        betas: cfg.betas,
        eps: cfg.eps,
        weight_decay: decay(cfg.weight_decay),
    };
    let on_cpu = (
        (p as &mut dyn Any).downcast_mut::<Tensor<S, E, Cpu>>(),
        (grads as &mut dyn Any).downcast_mut::<Gradients<E, Cpu>>(),
    );
    let (Some(p), Some(grads)) = on_cpu else {
        return adam_on_host(p, grads, cfg, t, (m, v), &mut scratch.host);
    };
    let grad = grads.get_or_alloc_mut(p).map_err(GrowError::device)?;
    let m_shell = shell(&mut scratch.moment1, &scratch.key)?;
    let v_shell = shell(&mut scratch.moment2, &scratch.key)?;
    std::mem::swap(as_vec::<E>(m_shell), m);
    std::mem::swap(as_vec::<E>(v_shell), v);
    let result = dcfg.try_update(t, p, m_shell, v_shell, grad);
    std::mem::swap(as_vec::<E>(m_shell), m);
    std::mem::swap(as_vec::<E>(v_shell), v);
    result.map_err(GrowError::device)
}

/// One SGD step of the tensor `p` with velocity `velocity` (the crate's state; `None` without
/// momentum), from `p`'s gradient in `grads` (zero if absent).
///
/// dfdx's own kernel on the CPU, in place (`p` keeps its id), the velocity moved in and out;
/// host copies on other devices. A velocity of the wrong length, or missing with momentum,
/// is a [`GrowError::StateMismatch`], with nothing changed.
pub fn sgd_in_place<S: Shape, E: Real, D: Device<E>>(
    p: &mut Tensor<S, E, D>,
    grads: &mut Gradients<E, D>,
    cfg: &SgdConfig,
    velocity: Option<&mut Vec<E>>,
    scratch: &mut InPlace<E>,
) -> Result<(), GrowError>
where
    Cpu: Device<E>,
{
    let n = p.shape().num_elements();
    match (&velocity, cfg.momentum) {
        (Some(vel), _) => check_len("velocity", vel.len(), n)?,
        (None, Some(_)) => check_len("velocity", 0, n)?,
        (None, None) => {}
    }
    let dcfg = DSgdConfig {
        lr: cfg.lr,
        momentum: cfg.momentum.map(|m| match m {
            Momentum::Classic(u) => DMomentum::Classic(u),
            Momentum::Nesterov(u) => DMomentum::Nesterov(u),
        }),
        weight_decay: decay(cfg.weight_decay),
    };
    let on_cpu = (
        (p as &mut dyn Any).downcast_mut::<Tensor<S, E, Cpu>>(),
        (grads as &mut dyn Any).downcast_mut::<Gradients<E, Cpu>>(),
    );
    let (Some(p), Some(grads)) = on_cpu else {
        return sgd_on_host(p, grads, cfg, velocity, &mut scratch.host);
    };
    let grad = grads.get_or_alloc_mut(p).map_err(GrowError::device)?;
    match velocity {
        Some(vel) => {
            let shell = shell(&mut scratch.moment1, &scratch.key)?;
            std::mem::swap(as_vec::<E>(shell), vel);
            let result = dcfg.try_update(p, shell, grad);
            std::mem::swap(as_vec::<E>(shell), vel);
            result.map_err(GrowError::device)
        }
        None => {
            let idle = shell(&mut scratch.idle, &scratch.key)?;
            if as_vec::<E>(idle).len() < n {
                as_vec::<E>(idle).resize(n, E::zero());
            }
            dcfg.try_update(p, idle, grad).map_err(GrowError::device)
        }
    }
}

/// The gradient of `p` on the host (zeros when absent), and `p` itself in `host`.
fn host_copies<S: Shape, E: Real, D: Device<E>>(
    p: &Tensor<S, E, D>,
    grads: &mut Gradients<E, D>,
    host: &mut Vec<E>,
) -> Result<Vec<E>, GrowError> {
    let n = p.shape().num_elements();
    let mut g = vec![E::zero(); n];
    grads.try_alloc_for(p).map_err(GrowError::device)?;
    grads.get(p).copy_into(&mut g);
    host.resize(n, E::zero());
    p.copy_into(host);
    Ok(g)
}

/// dfdx's Adam kernel's element loop, on host copies.
fn adam_on_host<S: Shape, E: Real, D: Device<E>>(
    p: &mut Tensor<S, E, D>,
    grads: &mut Gradients<E, D>,
    cfg: &AdamConfig,
    t: i32,
    (m, v): (&mut Vec<E>, &mut Vec<E>),
    host: &mut Vec<E>,
) -> Result<(), GrowError> {
    let g = host_copies(p, grads, host)?;
    let cast = |x: f64| E::from_f64(x).unwrap_or_else(E::zero);
    let (b1, b2, eps, lr) = (
        cast(cfg.betas[0]),
        cast(cfg.betas[1]),
        cast(cfg.eps),
        cast(cfg.lr),
    );
    for ((p, mut g), (m, v)) in host.iter_mut().zip(g).zip(m.iter_mut().zip(v.iter_mut())) {
        if let Some(WeightDecay::L2(wd)) = cfg.weight_decay {
            g += cast(wd) * *p;
        }
        *m = *m * b1 + g * (E::one() - b1);
        *v = *v * b2 + g.powi(2) * (E::one() - b2);
        let m_hat = *m * (E::one() - b1.powi(t)).recip();
        let v_hat = *v * (E::one() - b2.powi(t)).recip();
        g = lr * m_hat / (v_hat.sqrt() + eps);
        if let Some(WeightDecay::Decoupled(wd)) = cfg.weight_decay {
            g += cast(wd * cfg.lr) * *p;
        }
        *p -= g;
    }
    p.copy_from(host);
    Ok(())
}

/// dfdx's SGD kernel's element loop, on host copies.
fn sgd_on_host<S: Shape, E: Real, D: Device<E>>(
    p: &mut Tensor<S, E, D>,
    grads: &mut Gradients<E, D>,
    cfg: &SgdConfig,
    mut velocity: Option<&mut Vec<E>>,
    host: &mut Vec<E>,
) -> Result<(), GrowError> {
    let g = host_copies(p, grads, host)?;
    let cast = |x: f64| E::from_f64(x).unwrap_or_else(E::zero);
    let lr = cast(cfg.lr);
    for (i, (p, mut g)) in host.iter_mut().zip(g).enumerate() {
        if let Some(WeightDecay::L2(wd)) = cfg.weight_decay {
            g += cast(wd) * *p;
        }
        match (cfg.momentum, velocity.as_deref_mut()) {
            (Some(Momentum::Classic(u)), Some(vel)) => {
                vel[i] = g + cast(u) * vel[i];
                g = vel[i] * lr;
            }
            (Some(Momentum::Nesterov(u)), Some(vel)) => {
                vel[i] = g + cast(u) * vel[i];
                g = (g + cast(u) * vel[i]) * lr;
            }
            _ => g *= lr,
        }
        if let Some(WeightDecay::Decoupled(wd)) = cfg.weight_decay {
            g += cast(wd * cfg.lr) * *p;
        }
        *p -= g;
    }
    p.copy_from(host);
    Ok(())
}

#[cfg(test)]
mod tests {
    use dfdx::prelude::TensorFromVec;

    use super::*;

    /// The host fallbacks (used on devices other than the CPU) compute what dfdx's kernels
    /// compute, bit for bit: run both on CPU tensors.
    #[test]
    fn host_fallbacks_match_dfdx_kernels() {
        let dev = Cpu::default();
        let init: Vec<f64> = (0..35).map(|i| (i as f64 * 0.37).sin()).collect();
        let grad: Vec<f64> = (0..35).map(|i| (i as f64 * 0.91).cos()).collect();
        let decays = [
            None,
            Some(WeightDecay::L2(0.01)),
            Some(WeightDecay::Decoupled(0.1)),
        ];
        let mut scratch = InPlace::<f64>::default();
        for wd in decays {
            let cfg = AdamConfig {
                weight_decay: wd,
                ..AdamConfig::default()
            };
            let mut a: Tensor<(usize, usize), f64, Cpu> = dev.tensor_from_vec(init.clone(), (5, 7));
            let mut b = a.clone();
            let (mut ma, mut va, mut mb, mut vb) =
                (vec![0.0; 35], vec![0.0; 35], vec![0.0; 35], vec![0.0; 35]);
            for t in 1..=5 {
                let mut ga = Gradients::leaky();
                ga.get_or_alloc_mut(&a).unwrap().copy_from_slice(&grad);
                let mut gb = Gradients::leaky();
                gb.get_or_alloc_mut(&b).unwrap().copy_from_slice(&grad);
                adam_in_place(&mut a, &mut ga, &cfg, t, (&mut ma, &mut va), &mut scratch).unwrap();
                adam_on_host(
                    &mut b,
                    &mut gb,
                    &cfg,
                    t,
                    (&mut mb, &mut vb),
                    &mut Vec::new(),
                )
                .unwrap();
            }
            assert_eq!(a.as_vec(), b.as_vec(), "Adam, {wd:?}");
            assert_eq!((ma, va), (mb, vb));
            for momentum in [
                None,
                Some(Momentum::Classic(0.9)),
                Some(Momentum::Nesterov(0.8)),
            ] {
                let cfg = SgdConfig {
                    lr: 0.1,
                    momentum,
                    weight_decay: wd,
                };
                let mut a: Tensor<(usize, usize), f64, Cpu> =
                    dev.tensor_from_vec(init.clone(), (5, 7));
                let mut b = a.clone();
                let (mut va, mut vb) = (vec![0.0; 35], vec![0.0; 35]);
                for _ in 0..5 {
                    let mut ga = Gradients::leaky();
                    ga.get_or_alloc_mut(&a).unwrap().copy_from_slice(&grad);
                    let mut gb = Gradients::leaky();
                    gb.get_or_alloc_mut(&b).unwrap().copy_from_slice(&grad);
                    let vel_a = momentum.map(|_| &mut va);
                    sgd_in_place(&mut a, &mut ga, &cfg, vel_a, &mut scratch).unwrap();
                    let vel_b = momentum.map(|_| &mut vb);
                    sgd_on_host(&mut b, &mut gb, &cfg, vel_b, &mut Vec::new()).unwrap();
                }
                assert_eq!(a.as_vec(), b.as_vec(), "SGD, {momentum:?}, {wd:?}");
                assert_eq!(va, vb);
            }
        }
    }
}
