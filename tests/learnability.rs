//! What happens to new units under training: the default learns, the rejected inits fail
//! exactly as the design says.

mod common;

use common::*;
use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::optim::{Adam, AdamConfig, Optimizer, Sgd, SgdConfig};
use dfdx_grow::{Activation, Init, Matrix, Mlp};

const OLD: usize = 5;
const K: usize = 4;

/// A 6-5-3 network on a fixed batch; grows the hidden layer by K with `init`.
fn grown(
    init: &Init,
    act: Activation,
    seed: u64,
) -> (Mlp<f64, Cpu>, Matrix<f64, Cpu>, Matrix<f64, Cpu>) {
    let dev = Cpu::default();
    let mut rng = rng(seed);
    let mut mlp = Mlp::<f64, Cpu>::new(&[6, OLD, 3], act, &dev, &mut rng);
    let x = input::<f64>(&dev, 32, 6, &mut rng);
    let y = one_hot::<f64>(&dev, 32, 3, &mut rng);
    let mut opt = Adam::<f64>::new(AdamConfig {
        lr: 1e-2,
        ..Default::default()
    })
    .unwrap();
    for _ in 0..5 {
        step(&mut mlp, &mut opt, &x, &y);
    }
    mlp.expand_hidden(0, K, init, &mut rng).unwrap();
    (mlp, x, y)
}

/// Fan-in row `u` (weights then bias) and fan-out column `u` of the hidden layer.
fn unit(mlp: &Mlp<f64, Cpu>, u: usize) -> (Vec<f64>, Vec<f64>) {
    let w = snapshot(mlp);
    let width = mlp.widths()[1];
    let mut fan_in = w[0][u * 6..(u + 1) * 6].to_vec();
    fan_in.push(w[1][u]);
    let fan_out = (0..3).map(|r| w[2][r * width + u]).collect();
    (fan_in, fan_out)
}

fn train(
    mlp: &mut Mlp<f64, Cpu>,
    opt: &mut dyn Optimizer<f64, Cpu>,
    x: &Matrix<f64, Cpu>,
    y: &Matrix<f64, Cpu>,
    steps: usize,
) {
    for _ in 0..steps {
        step(mlp, opt, x, y);
    }
}

fn optimizers() -> Vec<Box<dyn Optimizer<f64, Cpu>>> {
    vec![
        Box::new(
            Adam::<f64>::new(AdamConfig {
                lr: 1e-2,
                ..Default::default()
            })
            .unwrap(),
        ),
        Box::new(
            Sgd::<f64>::new(SgdConfig {
                lr: 0.1,
                ..Default::default()
            })
            .unwrap(),
        ),
    ]
}

#[test]
fn zeros_out_new_fan_out_moves_at_the_first_step_and_fan_in_soon_after() {
    for mut opt in optimizers() {
        let (mut mlp, x, y) = grown(&Init::ZerosOut, Activation::Relu, 1);
        let start: Vec<_> = (OLD..OLD + K).map(|u| unit(&mlp, u)).collect();
        train(&mut mlp, opt.as_mut(), &x, &y, 1);
        let one: Vec<_> = (OLD..OLD + K).map(|u| unit(&mlp, u)).collect();
        for (u, ((in0, out0), (in1, out1))) in start.iter().zip(&one).enumerate() {
            assert!(out0.iter().all(|w| *w == 0.0));
            assert!(
                out1.iter().any(|w| *w != 0.0),
                "unit {u}: fan-out did not move"
            );
            // Right after growth the fan-in gradient is zero (the fan-out was zero).
            assert_eq!(in0, in1, "unit {u}: fan-in moved at step one");
        }
        train(&mut mlp, opt.as_mut(), &x, &y, 3);
        let later: Vec<_> = (OLD..OLD + K).map(|u| unit(&mlp, u)).collect();
        let moved = start
            .iter()
            .zip(&later)
            .filter(|((a, _), (b, _))| a != b)
            .count();
        assert!(moved > 0, "no new fan-in moved after four steps");
        for i in 0..K {
            for j in i + 1..K {
                assert!(
                    max_abs_diff(&later[i].0, &later[j].0) > 1e-3,
                    "units {i} and {j} are copies"
                );
            }
        }
    }
}

#[test]
fn mirror_pairs_give_every_new_weight_a_non_zero_gradient_at_step_one() {
    for act in [
        Activation::Relu,
        Activation::Tanh,
        Activation::Gelu,
        Activation::Sigmoid,
    ] {
        let (mut mlp, x, y) = grown(&Init::MirrorPairs, act, 2);
        let before: Vec<_> = (OLD..OLD + K).map(|u| unit(&mlp, u)).collect();
        // SGD moves each weight by lr x its gradient, so "moved" = "non-zero gradient".
        let mut sgd = Sgd::<f64>::new(SgdConfig {
            lr: 0.1,
            ..Default::default()
        })
        .unwrap();
        train(&mut mlp, &mut sgd, &x, &y, 1);
        for (u, b) in (OLD..OLD + K).zip(&before) {
            let a = unit(&mlp, u);
            for (i, (w0, w1)) in b.0.iter().zip(&a.0).chain(b.1.iter().zip(&a.1)).enumerate() {
                assert_ne!(w0, w1, "{act:?} unit {u} weight {i} got no gradient");
            }
        }
    }
}

#[test]
fn rejected_zeros_both_stays_zero_forever() {
    for act in [
        Activation::Relu,
        Activation::Tanh,
        Activation::Gelu,
        Activation::Identity,
    ] {
        for mut opt in optimizers() {
            let (mut mlp, x, y) = grown(&Init::ZerosBoth, act, 3);
            train(&mut mlp, opt.as_mut(), &x, &y, 50);
            for u in OLD..OLD + K {
                let (fan_in, fan_out) = unit(&mlp, u);
                assert!(
                    fan_in.iter().chain(&fan_out).all(|w| *w == 0.0),
                    "{act:?} unit {u} moved"
                );
            }
        }
    }
}

#[test]
fn rejected_constant_fan_in_units_stay_identical_forever() {
    for mut opt in optimizers() {
        let (mut mlp, x, y) = grown(&Init::ConstantFanIn { value: 0.2 }, Activation::Tanh, 4);
        train(&mut mlp, opt.as_mut(), &x, &y, 50);
        let first = unit(&mlp, OLD);
        assert!(
            first.1.iter().any(|w| *w != 0.0),
            "the units did learn something"
        );
        for u in OLD + 1..OLD + K {
            assert_eq!(unit(&mlp, u), first, "unit {u} became different");
        }
    }
}

#[test]
fn rejected_copy_halve_pair_stays_collapsed_forever() {
    for mut opt in optimizers() {
        let (mut mlp, x, y) = grown(&Init::CopyHalve, Activation::Relu, 5);
        // Each new unit is a copy of a distinct old unit: find its twin.
        let twins: Vec<usize> = (OLD..OLD + K)
            .map(|u| {
                (0..OLD)
                    .find(|&s| unit(&mlp, s) == unit(&mlp, u))
                    .expect("a twin")
            })
            .collect();
        train(&mut mlp, opt.as_mut(), &x, &y, 50);
        for (u, &s) in (OLD..OLD + K).zip(&twins) {
            let (a, b) = (unit(&mlp, u), unit(&mlp, s));
            assert_eq!(a, b, "unit {u} separated from its source {s}");
        }
    }
}

#[test]
fn the_learnability_check_can_fail_zeros_out_units_do_separate() {
    // The same measure that shows CopyHalve collapsed shows ZerosOut units apart.
    let (mut mlp, x, y) = grown(&Init::ZerosOut, Activation::Relu, 5);
    let mut opt = Adam::<f64>::new(AdamConfig {
        lr: 1e-2,
        ..Default::default()
    })
    .unwrap();
    train(&mut mlp, &mut opt, &x, &y, 50);
    assert_ne!(unit(&mlp, OLD), unit(&mlp, OLD + 1));
}
