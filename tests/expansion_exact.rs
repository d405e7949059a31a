//! Growth preserves the network's output, over many random networks, in f32 and f64.

mod common;

use common::*;
use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::rand::Rng;
use dfdx_grow::{Activation, Init, Mlp, Params, Probe, Real};

/// Builds random MLPs (1-5 hidden layers, widths 1-300, every activation, batch 1-64), grows
/// them several times with `init`, and returns the worst output change relative to the
/// output's scale (and the worst absolute change).
fn worst_change<E: Real>(init: &Init, cases: usize, seed: u64) -> (f64, f64)
where
    Cpu: Device<E>,
{
    let dev = Cpu::default();
    let mut rng = rng(seed);
    let (mut worst_rel, mut worst_abs) = (0.0f64, 0.0f64);
    for case in 0..cases {
        let hidden = rng.gen_range(1..=5);
        let mut sizes = vec![rng.gen_range(1..=300)];
        for _ in 0..hidden {
            // Mostly small widths keep the test fast; some reach 300.
            let w = if rng.gen_bool(0.2) {
                rng.gen_range(1..=300)
            } else {
                rng.gen_range(1..=40)
            };
            sizes.push(w);
        }
        sizes.push(rng.gen_range(1..=20));
        let act = Activation::ALL[case % Activation::ALL.len()];
        let mut mlp = Mlp::<E, Cpu>::new(&sizes, act, &dev, &mut rng);
        let batch = rng.gen_range(1..=64);
        let x = input::<E>(&dev, batch, sizes[0], &mut rng);
        let before = mlp.forward(x.clone()).as_vec();
        let scale = max_abs(&before).max(1.0);
        for _ in 0..rng.gen_range(1..=3) {
            let layer = rng.gen_range(0..hidden);
            let k = 2 * rng.gen_range(1..=20);
            let report = mlp.expand_hidden(layer, k, init, &mut rng).unwrap();
            assert_eq!(report.new_width, report.old_width + k);
            let after = mlp.forward(x.clone()).as_vec();
            let d = max_abs_diff(&before, &after);
            worst_abs = worst_abs.max(d);
            worst_rel = worst_rel.max(d / scale);
        }
    }
    (worst_rel, worst_abs)
}

const EXACT_INITS: [Init; 5] = [
    Init::ZerosOut,
    Init::MirrorPairs,
    Init::ZerosBoth,
    Init::ConstantFanIn { value: 0.3 },
    Init::CopyHalve,
];

#[test]
fn every_exact_init_preserves_the_output_in_f64_within_1e_12() {
    for (i, init) in EXACT_INITS.iter().enumerate() {
        let (_, abs) = worst_change::<f64>(init, 40, 100 + i as u64);
        assert!(abs <= 1e-12, "{init:?}: max abs change {abs:e}");
    }
}

#[test]
fn every_exact_init_preserves_the_output_in_f32_within_1e_5_of_its_scale() {
    for (i, init) in EXACT_INITS.iter().enumerate() {
        let (rel, _) = worst_change::<f32>(init, 40, 200 + i as u64);
        assert!(rel <= 1e-5, "{init:?}: max relative change {rel:e}");
    }
}

#[test]
fn zeros_out_changes_the_output_by_at_most_rounding_of_a_reordered_sum() {
    // The new terms are exact zeros; what can change is the order in which the matrix product
    // sums its terms when the inner width changes, so the change is a few ulps at most.
    let (rel64, _) = worst_change::<f64>(&Init::ZerosOut, 30, 7);
    let (rel32, _) = worst_change::<f32>(&Init::ZerosOut, 30, 8);
    assert!(rel64 <= 4.0 * f64::EPSILON, "{rel64:e}");
    assert!(rel32 <= 4.0 * f32::EPSILON as f64, "{rel32:e}");
}

#[test]
fn the_check_can_fail_copy_halve_with_noise_changes_the_output() {
    let (_, abs) = worst_change::<f64>(&Init::CopyHalveNoise { std: 0.1 }, 10, 9);
    assert!(
        abs > 1e-3,
        "noise should change the output, changed {abs:e}"
    );
}

#[test]
fn expansion_adds_the_right_rows_columns_and_parameters() {
    let dev = Cpu::default();
    let mut rng = rng(1);
    let mut mlp = Mlp::<f64, Cpu>::new(&[5, 7, 4, 3], Activation::Tanh, &dev, &mut rng);
    let old = snapshot(&mlp);
    let report = mlp.expand_hidden(1, 6, &Init::ZerosOut, &mut rng).unwrap();
    assert_eq!(mlp.widths(), vec![5, 7, 10, 3]);
    let dims: Vec<(String, (usize, usize))> = [
        ("layers.0.weight", (7, 5)),
        ("layers.0.bias", (7, 1)),
        ("layers.1.weight", (10, 7)),
        ("layers.1.bias", (10, 1)),
        ("layers.2.weight", (3, 10)),
        ("layers.2.bias", (3, 1)),
    ]
    .into_iter()
    .map(|(n, d)| (n.to_string(), d))
    .collect();
    assert_eq!(mlp.param_dims(), dims);
    assert_eq!(
        report.params_after - report.params_before,
        6 * 7 + 6 + 3 * 6
    );
    assert_eq!(report.params_after, mlp.num_params());
    let new = snapshot(&mlp);
    // Old fan-in rows kept; new rows random and non-zero, each with the old rows' mean norm;
    // new biases the old ones' mean.
    assert_eq!(&new[2][..4 * 7], &old[2][..]);
    assert!(new[2][4 * 7..].iter().all(|w| *w != 0.0));
    let norm = |r: &[f64]| r.iter().map(|w| w * w).sum::<f64>().sqrt();
    let mean_norm = old[2].chunks(7).map(norm).sum::<f64>() / 4.0;
    for row in new[2][4 * 7..].chunks(7) {
        assert!(
            (norm(row) - mean_norm).abs() < 1e-12,
            "{} vs {mean_norm}",
            norm(row)
        );
    }
    assert_eq!(&new[3][..4], &old[3][..]);
    let mean_bias = old[3].iter().sum::<f64>() / 4.0;
    assert!(new[3][4..].iter().all(|b| (*b - mean_bias).abs() < 1e-15));
    // The behaviour before, kept as ZerosOutFresh: fresh scale, zero bias.
    let mut fresh = Mlp::<f64, Cpu>::new(&[5, 7, 4, 3], Activation::Tanh, &dev, &mut rng);
    fresh
        .expand_hidden(1, 6, &Init::ZerosOutFresh, &mut rng)
        .unwrap();
    let f = snapshot(&fresh);
    assert!(f[3][4..].iter().all(|b| *b == 0.0));
    assert!(f[2][4 * 7..].iter().all(|w| w.abs() < 1.0 / 7f64.sqrt()));
    // Consumer: old columns kept, the six new columns zero.
    for r in 0..3 {
        assert_eq!(&new[4][r * 10..r * 10 + 4], &old[4][r * 4..(r + 1) * 4]);
        assert!(new[4][r * 10 + 4..(r + 1) * 10].iter().all(|w| *w == 0.0));
    }
    // Untouched layers are untouched.
    assert_eq!(new[0], old[0]);
    assert_eq!(new[5], old[5]);
}

#[test]
fn probed_expansion_reports_output_change_and_losses() {
    let dev = Cpu::default();
    let mut rng = rng(2);
    let mut mlp = Mlp::<f64, Cpu>::new(&[6, 4, 3], Activation::Relu, &dev, &mut rng);
    let x = input::<f64>(&dev, 16, 6, &mut rng);
    let y = one_hot::<f64>(&dev, 16, 3, &mut rng);
    let probe = Probe {
        input: x,
        target: Some((y, dfdx_grow::Loss::CrossEntropy)),
    };
    let r = mlp
        .expand_hidden_probed(0, 8, &Init::ZerosOut, &mut rng, &probe)
        .unwrap();
    assert_eq!(r.max_abs_output_change, Some(0.0));
    assert!(r.output_scale.unwrap() > 0.0);
    assert_eq!(r.loss_before, r.loss_after);
    assert!(r.loss_before.unwrap() > 0.0);
    let r = mlp
        .expand_hidden_probed(0, 8, &Init::CopyHalveNoise { std: 0.5 }, &mut rng, &probe)
        .unwrap();
    assert!(!r.exact);
    assert!(r.max_abs_output_change.unwrap() > 0.0);
    assert_ne!(r.loss_before, r.loss_after);
}

#[test]
fn copy_halve_splits_the_copied_units_fan_out() {
    let dev = Cpu::default();
    let mut rng = rng(3);
    let mut mlp = Mlp::<f64, Cpu>::new(&[3, 4, 2], Activation::Relu, &dev, &mut rng);
    let old = snapshot(&mlp);
    mlp.expand_hidden(0, 1, &Init::CopyHalve, &mut rng).unwrap();
    let new = snapshot(&mlp);
    let row = |w: &[f64], r: usize| w[r * 3..(r + 1) * 3].to_vec();
    let src = (0..4)
        .find(|&s| row(&new[0], s) == row(&new[0], 4))
        .expect("a copied unit");
    assert_eq!(new[1][src], new[1][4]);
    for r in 0..2 {
        assert_eq!(new[2][r * 5 + src], old[2][r * 4 + src] / 2.0);
        assert_eq!(new[2][r * 5 + 4], old[2][r * 4 + src] / 2.0);
    }
}

#[test]
fn expand_hidden_prop_many_shapes_f64_and_f32_with_repeated_growth_of_every_layer() {
    // Grows every hidden layer in turn, many times, on one network per activation.
    let dev = Cpu::default();
    let mut rng = rng(4);
    for act in Activation::ALL {
        let mut m64 = Mlp::<f64, Cpu>::new(&[9, 3, 5, 2, 4], act, &dev, &mut rng);
        let x = input::<f64>(&dev, 7, 9, &mut rng);
        let before = m64.forward(x.clone()).as_vec();
        for round in 0..12 {
            let k = 2 * (1 + round % 3);
            m64.expand_hidden(round % 3, k, &Init::MirrorPairs, &mut rng)
                .unwrap();
        }
        assert_eq!(m64.widths(), vec![9, 3 + 4 * 2, 5 + 4 * 4, 2 + 4 * 6, 4]);
        let d = max_abs_diff(&before, &m64.forward(x).as_vec());
        assert!(d <= 1e-12, "{act:?}: {d:e}");
    }
}
