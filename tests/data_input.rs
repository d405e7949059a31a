//! `Data(x)`: the backward pass that skips the input gradient gives the same loss and the same
//! parameter gradients, bit for bit, as the ordinary traced forward.

mod common;

use common::{input, one_hot, rng, snapshot, step};
use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::optim::{Adam, AdamConfig, Optimizer};
use dfdx_grow::rand::Rng;
use dfdx_grow::{Activation, Data, Linear, Matrix, Mlp, Params, Real};

/// Loss and every parameter gradient (walk order) of one cross-entropy backward pass.
fn loss_and_grads<E: Real>(
    mlp: &Mlp<E, Cpu>,
    x: &Matrix<E, Cpu>,
    y: &Matrix<E, Cpu>,
    data: bool,
) -> (Vec<E>, Vec<Vec<E>>)
where
    Cpu: Device<E>,
{
    let grads = mlp.try_alloc_grads().unwrap();
    let traced = x.clone().traced(grads);
    let out = if data {
        mlp.forward(Data(traced))
    } else {
        mlp.forward(traced)
    };
    let loss = cross_entropy_with_logits_loss(out, y.clone());
    let value = loss.as_vec();
    let mut grads = loss.backward();
    let mut per_param = Vec::new();
    mlp.visit(&mut |_, p| {
        let mut g = vec![E::zero(); p.len()];
        p.grad_into(&mut grads, &mut g).unwrap();
        per_param.push(g);
    });
    (value, per_param)
}

fn bits<E: Real>(v: &[E]) -> Vec<u64> {
    v.iter()
        .map(|x| {
            let f = x.to_f64().unwrap();
            // f32 -> f64 is exact, so equal f64 bits mean equal values and signs.
            f.to_bits()
        })
        .collect()
}

/// Random shapes (1-3 layers, batches past gemm's k blocking, every activation): the loss and
/// every parameter gradient are bit-identical with and without `Data`.
fn gradients_match_traced_path<E: Real>(cases: usize, seed: u64)
where
    Cpu: Device<E>,
{
    let dev = Cpu::default();
    let mut r = rng(seed);
    for case in 0..cases {
        let layers = r.gen_range(1..=3);
        let mut widths = vec![r.gen_range(1..300)];
        for _ in 0..layers {
            widths.push(r.gen_range(1..200));
        }
        // Mostly small batches, some larger than a k block of gemm.
        let batch = if case % 5 == 0 {
            r.gen_range(200..700)
        } else {
            r.gen_range(1..130)
        };
        let act = Activation::ALL[case % Activation::ALL.len()];
        let mlp = Mlp::<E, Cpu>::new(&widths, act, &dev, &mut r);
        let x = input::<E>(&dev, batch, widths[0], &mut r);
        let y = one_hot::<E>(&dev, batch, *widths.last().unwrap(), &mut r);
        let (loss_plain, g_plain) = loss_and_grads(&mlp, &x, &y, false);
        let (loss_data, g_data) = loss_and_grads(&mlp, &x, &y, true);
        assert_eq!(
            bits(&loss_plain),
            bits(&loss_data),
            "loss, case {case}: widths {widths:?}, batch {batch}, {act:?}"
        );
        for (i, (a, b)) in g_plain.iter().zip(&g_data).enumerate() {
            assert_eq!(
                bits(a),
                bits(b),
                "gradient of tensor {i}, case {case}: widths {widths:?}, batch {batch}, {act:?}"
            );
        }
    }
}

#[test]
fn data_gradients_bit_identical_f32() {
    gradients_match_traced_path::<f32>(40, 1);
}

#[test]
fn data_gradients_bit_identical_f64() {
    gradients_match_traced_path::<f64>(40, 2);
}

/// Twenty Adam steps through `Data` leave exactly the weights the ordinary path leaves.
#[test]
fn training_through_data_follows_the_same_trajectory() {
    let dev = Cpu::default();
    let mut r = rng(3);
    let mlp0 = Mlp::<f32, Cpu>::new(&[50, 40, 30, 10], Activation::Relu, &dev, &mut r);
    let x = input::<f32>(&dev, 64, 50, &mut r);
    let y = one_hot::<f32>(&dev, 64, 10, &mut r);

    let mut plain = mlp0.clone();
    let mut opt = Adam::new(AdamConfig::default()).unwrap();
    for _ in 0..20 {
        step(&mut plain, &mut opt, &x, &y);
    }

    let mut fast = mlp0;
    let mut opt = Adam::new(AdamConfig::default()).unwrap();
    for _ in 0..20 {
        let grads = fast.try_alloc_grads().unwrap();
        let out = fast.forward(Data(x.clone().traced(grads)));
        let mut grads = cross_entropy_with_logits_loss(out, y.clone()).backward();
        opt.update(&mut fast, &mut grads).unwrap();
    }
    for (a, b) in snapshot(&plain).iter().zip(&snapshot(&fast)) {
        assert_eq!(bits(a), bits(b));
    }
}

/// Gradients already in the weight's buffer are added to, not overwritten.
#[test]
fn data_gradient_adds_to_an_existing_weight_gradient() {
    let dev = Cpu::default();
    let mut r = rng(4);
    let layer = Linear::<f64, Cpu>::new(7, 5, &dev, &mut r).unwrap();
    let x = input::<f64>(&dev, 9, 7, &mut r);
    let run = |data: bool| {
        let mut grads = layer.try_alloc_grads().unwrap();
        // A previous contribution of 1 to every weight and bias gradient.
        let g = grads.get_or_alloc_mut(&layer.weight).unwrap();
        g.iter_mut().for_each(|v| *v = 1.0);
        grads.get_or_alloc_mut(&layer.bias).unwrap()[0] = 1.0;
        let traced = x.clone().traced(grads);
        let out = if data {
            layer.forward(Data(traced))
        } else {
            layer.forward(traced)
        };
        let grads = out.square().sum().backward();
        (
            grads.get(&layer.weight).as_vec(),
            grads.get(&layer.bias).as_vec(),
        )
    };
    let (w_plain, b_plain) = run(false);
    let (w_data, b_data) = run(true);
    // The bias sums in dfdx's order; the weight's addition is reordered (0 + g + dW against
    // g + dW), so equal to rounding.
    assert_eq!(bits(&b_plain), bits(&b_data));
    assert_eq!(w_plain.len(), w_data.len());
    for (a, b) in w_plain.iter().zip(&w_data) {
        assert!((a - b).abs() <= 1e-12 * a.abs().max(1.0), "{a} vs {b}");
    }
    assert!(
        w_data.iter().all(|v| (v - 1.0).abs() > 1e-9),
        "the new gradient was added"
    );
}

/// Without a tape, `Data` is the ordinary forward.
#[test]
fn untraced_data_forward_equals_plain_forward() {
    let dev = Cpu::default();
    let mut r = rng(5);
    let mlp = Mlp::<f32, Cpu>::new(&[20, 30, 4], Activation::Tanh, &dev, &mut r);
    let x = input::<f32>(&dev, 8, 20, &mut r);
    assert_eq!(
        bits(&mlp.forward(Data(x.clone())).as_vec()),
        bits(&mlp.forward(x).as_vec())
    );
}

/// `Data` stops gradients: a parameter that produced the input learns nothing through it,
/// while the plain path gives it a gradient.
#[test]
fn data_stops_the_gradient_at_the_input() {
    let dev = Cpu::default();
    let mut r = rng(6);
    let layer = Linear::<f64, Cpu>::new(6, 3, &dev, &mut r).unwrap();
    let scale: Tensor<(usize, usize), f64, Cpu> = dev.tensor_from_vec(vec![2.0; 4 * 6], (4, 6));
    let x = input::<f64>(&dev, 4, 6, &mut r);
    let run = |data: bool| {
        let grads = Gradients::leaky();
        let h = scale.clone().traced(grads) * x.clone();
        let out = if data {
            layer.forward(Data(h))
        } else {
            layer.forward(h)
        };
        out.sum().backward().get(&scale).as_vec()
    };
    assert!(run(false).iter().any(|g| *g != 0.0));
    assert!(run(true).iter().all(|g| *g == 0.0));
}
