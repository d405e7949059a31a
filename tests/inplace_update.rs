//! In-place parameter updates (`optim::adam_in_place`, `optim::sgd_in_place`): the tensor
//! keeps its id, and the steps are bit for bit those of the crate's `Adam` and `Sgd` (and so
//! dfdx's).

use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::optim::{
    adam_in_place, sgd_in_place, Adam, AdamConfig, InPlace, Momentum, Optimizer, Sgd, SgdConfig,
    WeightDecay,
};
use dfdx_grow::rand::{rngs::StdRng, Rng, SeedableRng};
use dfdx_grow::{GrowError, Linear, Real};

/// A CPU gradient buffer as a slice (in generic code assuming `Cpu: Device<E>` the compiler
/// does not see through the storage type).
fn host<E: Dtype>(v: &mut <Cpu as Storage<E>>::Vec) -> &mut [E] {
    v
}

fn bits<E: Real>(v: &[E]) -> Vec<u64> {
    v.iter().map(|x| x.to_f64().unwrap().to_bits()).collect()
}

fn random<E: Real>(n: usize, rng: &mut StdRng) -> Vec<E> {
    (0..n)
        .map(|_| E::from_f64(rng.gen_range(-1.0..1.0)).unwrap())
        .collect()
}

fn snap<E: Real>(l: &Linear<E, Cpu>) -> [Vec<u64>; 2]
where
    Cpu: Device<E>,
{
    [bits(&l.weight_vec()), bits(&l.bias_vec())]
}

const DECAYS: [Option<WeightDecay>; 3] = [
    None,
    Some(WeightDecay::L2(0.01)),
    Some(WeightDecay::Decoupled(0.1)),
];

/// Gradients holding `gw` and `gb` for the layer's weight and bias.
fn grads_for<E: Real>(l: &Linear<E, Cpu>, gw: &[E], gb: &[E]) -> Gradients<E, Cpu>
where
    Cpu: Device<E>,
{
    let mut g = Gradients::leaky();
    host::<E>(g.get_or_alloc_mut(&l.weight).unwrap()).copy_from_slice(gw);
    host::<E>(g.get_or_alloc_mut(&l.bias).unwrap()).copy_from_slice(gb);
    g
}

/// Ten steps of the crate's `Adam` on a layer against the same steps by `adam_in_place`,
/// tensor by tensor: bit for bit equal, for no, L2 and decoupled weight decay; and the
/// tensors keep their ids (their gradient entries are found again after the update).
fn adam_matches<E: Real>()
where
    Cpu: Device<E>,
{
    let dev = Cpu::default();
    for wd in DECAYS {
        let mut rng = StdRng::seed_from_u64(2);
        let mut a = Linear::<E, Cpu>::new(13, 9, &dev, &mut rng).unwrap();
        let initial = snap(&a);
        let mut b = a.clone();
        let cfg = AdamConfig {
            weight_decay: wd,
            ..AdamConfig::default()
        };
        let mut opt = Adam::<E>::new(cfg).unwrap();
        let mut scratch = InPlace::<E>::default();
        let mut state: Vec<[Vec<E>; 2]> = [9 * 13, 9]
            .iter()
            .map(|&n| [vec![E::zero(); n], vec![E::zero(); n]])
            .collect();
        for t in 1..=10 {
            let (gw, gb): (Vec<E>, Vec<E>) = (random(9 * 13, &mut rng), random(9, &mut rng));
            let mut ga = grads_for(&a, &gw, &gb);
            opt.update(&mut a, &mut ga).unwrap();

            let mut grads = grads_for(&b, &gw, &gb);
            let [m, v] = &mut state[0];
            adam_in_place(&mut b.weight, &mut grads, &cfg, t, (m, v), &mut scratch).unwrap();
            let [m, v] = &mut state[1];
            adam_in_place(&mut b.bias, &mut grads, &cfg, t, (m, v), &mut scratch).unwrap();
            // Same ids: the gradient entries are the ones filled above, not fresh zeros.
            assert_eq!(
                host::<E>(grads.get_or_alloc_mut(&b.weight).unwrap()),
                &gw[..]
            );
            assert_eq!(host::<E>(grads.get_or_alloc_mut(&b.bias).unwrap()), &gb[..]);
        }
        assert_eq!(snap(&a), snap(&b), "{wd:?}");
        assert_ne!(snap(&a)[0], initial[0], "the steps moved the weights");
    }
}

#[test]
fn adam_in_place_is_the_crates_adam_bit_for_bit_f32() {
    adam_matches::<f32>();
}

#[test]
fn adam_in_place_is_the_crates_adam_bit_for_bit_f64() {
    adam_matches::<f64>();
}

/// The same for SGD, with every momentum kind and weight decay.
fn sgd_matches<E: Real>()
where
    Cpu: Device<E>,
{
    let dev = Cpu::default();
    let momenta = [
        None,
        Some(Momentum::Classic(0.9)),
        Some(Momentum::Nesterov(0.8)),
    ];
    for wd in DECAYS {
        for momentum in momenta {
            let mut rng = StdRng::seed_from_u64(3);
            let mut a = Linear::<E, Cpu>::new(11, 6, &dev, &mut rng).unwrap();
            let mut b = a.clone();
            let cfg = SgdConfig {
                lr: 0.05,
                momentum,
                weight_decay: wd,
            };
            let mut opt = Sgd::<E>::new(cfg).unwrap();
            let mut scratch = InPlace::<E>::default();
            let (mut vw, mut vb) = (vec![E::zero(); 66], vec![E::zero(); 6]);
            for _ in 0..10 {
                let (gw, gb): (Vec<E>, Vec<E>) = (random(66, &mut rng), random(6, &mut rng));
                let mut ga = grads_for(&a, &gw, &gb);
                opt.update(&mut a, &mut ga).unwrap();
                let mut grads = grads_for(&b, &gw, &gb);
                let vel = momentum.map(|_| &mut vw);
                sgd_in_place(&mut b.weight, &mut grads, &cfg, vel, &mut scratch).unwrap();
                let vel = momentum.map(|_| &mut vb);
                sgd_in_place(&mut b.bias, &mut grads, &cfg, vel, &mut scratch).unwrap();
            }
            assert_eq!(snap(&a), snap(&b), "{momentum:?}, {wd:?}");
        }
    }
}

#[test]
fn sgd_in_place_is_the_crates_sgd_bit_for_bit_f32() {
    sgd_matches::<f32>();
}

#[test]
fn sgd_in_place_is_the_crates_sgd_bit_for_bit_f64() {
    sgd_matches::<f64>();
}

/// A clone taken before the update keeps the old values: a shared storage is unshared first.
#[test]
fn a_clone_keeps_the_old_values() {
    let dev = Cpu::default();
    let mut p: Tensor<(usize, usize), f32, Cpu> = dev.tensor_from_vec(vec![1.0; 6], (2, 3));
    let copy = p.clone();
    let mut grads = Gradients::leaky();
    grads.get_or_alloc_mut(&p).unwrap().fill(1.0);
    let cfg = SgdConfig {
        lr: 0.5,
        ..SgdConfig::default()
    };
    sgd_in_place(&mut p, &mut grads, &cfg, None, &mut InPlace::default()).unwrap();
    assert_eq!(p.as_vec(), vec![0.5; 6]);
    assert_eq!(copy.as_vec(), vec![1.0; 6]);
}

/// State of the wrong length is a typed error, and nothing changes.
#[test]
fn mismatched_state_is_an_error_and_changes_nothing() {
    let dev = Cpu::default();
    let mut p: Tensor<(usize, usize), f32, Cpu> = dev.tensor_from_vec(vec![1.0; 6], (2, 3));
    let mut grads = Gradients::leaky();
    grads.get_or_alloc_mut(&p).unwrap().fill(1.0);
    let mut scratch = InPlace::default();
    let (mut m, mut v) = (vec![0.0; 5], vec![0.0; 6]);
    let cfg = AdamConfig::default();
    let err = adam_in_place(&mut p, &mut grads, &cfg, 1, (&mut m, &mut v), &mut scratch);
    assert!(matches!(err, Err(GrowError::StateMismatch(_))), "{err:?}");
    let sgd = SgdConfig {
        momentum: Some(Momentum::Classic(0.9)),
        ..SgdConfig::default()
    };
    let err = sgd_in_place(&mut p, &mut grads, &sgd, None, &mut scratch);
    assert!(matches!(err, Err(GrowError::StateMismatch(_))), "{err:?}");
    let err = sgd_in_place(&mut p, &mut grads, &sgd, Some(&mut m), &mut scratch);
    assert!(matches!(err, Err(GrowError::StateMismatch(_))), "{err:?}");
    assert_eq!(p.as_vec(), vec![1.0; 6]);
    assert_eq!((m, v), (vec![0.0; 5], vec![0.0; 6]));
}
