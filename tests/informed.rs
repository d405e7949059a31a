//! Gradient-informed inits (GradMax, TINY), the statistics they read, and shrink-and-perturb.

mod common;

use common::{input, one_hot, rng};
use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::informed::{
    bracket_search, default_gamma_grid, informed_flops, line_search, plan_informed, HostMatrix,
    SiteStatistics, SplitProbe,
};
use dfdx_grow::optim::{Adam, AdamConfig};
use dfdx_grow::policy::{policy_from_str, Metrics};
use dfdx_grow::rand::Rng;
use dfdx_grow::{
    grow_site, grow_site_informed, shrink_perturb, Activation, Expandable, ExpansionReport,
    GrowError, Growable, GrowthController, Init, Loss, LossProbe, Matrix, Mlp, Outcome, ParamMut,
    Params, PerturbScope, Probe, Real, ResMlp, ShrinkPerturb,
};

const GRADMAX: Init = Init::GradMax {
    scale: 0.5,
    epsilon: 0.0,
};
const TINY: Init = Init::Tiny {
    min_singular: 1e-3,
    gamma: None,
    project: true,
};
const TINY_UNPROJECTED: Init = Init::Tiny {
    min_singular: 1e-3,
    gamma: None,
    project: false,
};

fn probe<E: Real>(x: &Matrix<E, Cpu>, y: &Matrix<E, Cpu>, loss: Loss) -> Probe<E, Cpu>
where
    Cpu: Device<E>,
{
    Probe {
        input: x.clone(),
        target: Some((y.clone(), loss)),
    }
}

/// Reads tensor `name` of `model` as f64.
fn tensor<M: Params<f64, Cpu>>(model: &M, name: &str) -> Vec<f64> {
    let mut out = None;
    model.visit(&mut |n, p| {
        if n == name {
            let mut v = vec![0.0; p.len()];
            p.copy_into(&mut v);
            out = Some(v);
        }
    });
    out.unwrap_or_else(|| panic!("no tensor {name}"))
}

/// Overwrites tensor `name` of `model`.
fn set_tensor<M: Params<f64, Cpu>>(model: &mut M, name: &str, v: &[f64]) {
    model.visit_mut(&mut |n, mut p: ParamMut<'_, f64, Cpu>| {
        if n == name {
            p.copy_from(v);
        }
    });
}

fn outputs<E: Real>(mlp: &Mlp<E, Cpu>, x: &Matrix<E, Cpu>) -> Vec<f64>
where
    Cpu: Device<E>,
{
    let out = mlp.forward(x.clone()).as_vec();
    out.iter().map(|v| v.to_f64().unwrap()).collect()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// The top `k` left singular vectors and values of the row-major `rows x cols` matrix `m`,
/// by power iteration on `m m^T` with deflation: an SVD independent of the crate's.
fn top_left_singular(m: &[f64], rows: usize, cols: usize, k: usize) -> Vec<(f64, Vec<f64>)> {
    let mut mmt = vec![0.0; rows * rows];
    for i in 0..rows {
        for j in 0..rows {
            mmt[i * rows + j] = (0..cols).map(|c| m[i * cols + c] * m[j * cols + c]).sum();
        }
    }
    let mut found: Vec<(f64, Vec<f64>)> = Vec::new();
    for p in 0..k {
        let mut v: Vec<f64> = (0..rows)
            .map(|i| 1.0 + (i * 7 + p * 3) as f64 % 5.0)
            .collect();
        let mut lambda = 0.0;
        for _ in 0..5000 {
            let mut w: Vec<f64> = (0..rows)
                .map(|i| (0..rows).map(|j| mmt[i * rows + j] * v[j]).sum())
                .collect();
            for (_, u) in &found {
                let d: f64 = w.iter().zip(u).map(|(a, b)| a * b).sum();
                for (x, y) in w.iter_mut().zip(u) {
                    *x -= d * y;
                }
            }
            let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
            lambda = norm;
            v = w.iter().map(|x| x / norm).collect();
        }
        found.push((lambda.sqrt(), v));
    }
    found
}

/// A fitted tanh network and a batch: the informed inits need non-trivial gradients.
fn tanh_case(
    seed: u64,
    sizes: &[usize],
    batch: usize,
) -> (Mlp<f64, Cpu>, Matrix<f64, Cpu>, Matrix<f64, Cpu>) {
    let dev = Cpu::default();
    let mut r = rng(seed);
    let mlp = Mlp::<f64, Cpu>::new(sizes, Activation::Tanh, &dev, &mut r);
    let x = input::<f64>(&dev, batch, sizes[0], &mut r);
    let y = one_hot::<f64>(&dev, batch, *sizes.last().unwrap(), &mut r);
    (mlp, x, y)
}

#[test]
fn mlp_statistics_match_finite_differences_of_the_consumer_weights() {
    for (hidden, loss) in [
        (0, Loss::CrossEntropy),
        (1, Loss::CrossEntropy),
        (0, Loss::Mse),
        (1, Loss::Mse),
    ] {
        let (mut mlp, x, y) = tanh_case(3, &[3, 5, 4, 2], 7);
        let stats = mlp.site_statistics(hidden, &x, &y, loss).unwrap();
        let n = stats.rows() as f64;
        let consumer = format!("layers.{}", hidden + 1);
        let w = tensor(&mlp, &format!("{consumer}.weight"));
        let (out, inp) = (stats.g()[0].cols(), stats.a().cols());
        assert_eq!(w.len(), out * inp);
        let value = |m: &Mlp<f64, Cpu>| loss.value(m.forward(x.clone()), &y);
        let eps = 1e-6;
        let mut worst = 0.0f64;
        for j in 0..out {
            for k in 0..inp {
                let analytic: f64 = (0..stats.rows())
                    .map(|i| stats.g()[0].get(i, j) * stats.a().get(i, k))
                    .sum::<f64>()
                    / n;
                let mut wp = w.clone();
                wp[j * inp + k] += eps;
                set_tensor(&mut mlp, &format!("{consumer}.weight"), &wp);
                let up = value(&mlp);
                wp[j * inp + k] -= 2.0 * eps;
                set_tensor(&mut mlp, &format!("{consumer}.weight"), &wp);
                let down = value(&mlp);
                set_tensor(&mut mlp, &format!("{consumer}.weight"), &w);
                let numeric = (up - down) / (2.0 * eps);
                worst = worst.max((numeric - analytic).abs() / analytic.abs().max(1e-3));
            }
        }
        assert!(
            worst < 1e-6,
            "site {hidden} {loss:?}: relative error {worst:e}"
        );
        // h and a are the forward pass's own.
        let pre = mlp.pre_activations(hidden, &x).unwrap();
        for (i, z) in pre.iter().enumerate() {
            assert!((stats.a().data()[i] - z.tanh()).abs() < 1e-15);
        }
        if hidden == 0 {
            assert_eq!(stats.h().data(), &x.as_vec()[..]);
        }
        assert!(stats.flops() > 0.0);
    }
}

#[test]
fn resmlp_statistics_match_finite_differences_of_the_block_output_weights() {
    let dev = Cpu::default();
    let mut r = rng(5);
    let mut net =
        ResMlp::<f64, Cpu>::new(3, 4, &[5, 6], 2, Activation::Tanh, &dev, &mut r).unwrap();
    let x = input::<f64>(&dev, 6, 3, &mut r);
    let y = one_hot::<f64>(&dev, 6, 2, &mut r);
    for block in ["blocks.0", "blocks.1"] {
        let stats = net
            .site_statistics(&format!("{block}.hidden"), &x, &y, Loss::CrossEntropy)
            .unwrap();
        let name = format!("{block}.fc2.weight");
        let w = tensor(&net, &name);
        let (out, inp) = (stats.g()[0].cols(), stats.a().cols());
        let mut worst = 0.0f64;
        for j in 0..out {
            for k in 0..inp {
                let analytic: f64 = (0..stats.rows())
                    .map(|i| stats.g()[0].get(i, j) * stats.a().get(i, k))
                    .sum::<f64>()
                    / stats.rows() as f64;
                let mut wp = w.clone();
                let mut at = |delta: f64| {
                    wp[j * inp + k] = w[j * inp + k] + delta;
                    set_tensor(&mut net, &name, &wp);
                    Loss::CrossEntropy.value(net.forward(x.clone()), &y)
                };
                let numeric = (at(1e-6) - at(-1e-6)) / 2e-6;
                set_tensor(&mut net, &name, &w);
                worst = worst.max((numeric - analytic).abs() / analytic.abs().max(1e-3));
            }
        }
        assert!(worst < 1e-6, "{block}: relative error {worst:e}");
    }
}

#[test]
fn gradmax_fan_out_is_the_top_left_singular_vectors_of_an_independent_svd() {
    let (mut mlp, x, y) = tanh_case(11, &[6, 5, 4], 32);
    let stats = mlp.site_statistics(0, &x, &y, Loss::CrossEntropy).unwrap();
    // M = E[g h^T], 4 x 6, by hand.
    let (n, c, d) = (stats.rows(), 4, 6);
    let mut m = vec![0.0; c * d];
    for i in 0..n {
        for a in 0..c {
            for b in 0..d {
                m[a * d + b] += stats.g()[0].get(i, a) * stats.h().get(i, b) / n as f64;
            }
        }
    }
    let reference = top_left_singular(&m, c, d, 3);
    let old = tensor(&mlp, "layers.1.weight"); // 4 x 5
    let mean_norm = (0..5)
        .map(|u| (0..4).map(|r| old[r * 5 + u].powi(2)).sum::<f64>().sqrt())
        .sum::<f64>()
        / 5.0;
    let before = outputs(&mlp, &x);
    let report =
        grow_site_informed(&mut mlp, "hidden.0", 3, &GRADMAX, &stats, &mut rng(0), None).unwrap();
    assert_eq!(report.informed, Some(3));
    assert!(report.exact);
    let w = tensor(&mlp, "layers.1.weight"); // 4 x 8
    let cols: Vec<Vec<f64>> = (5..8)
        .map(|u| (0..4).map(|r| w[r * 8 + u] / (0.5 * mean_norm)).collect())
        .collect();
    for (j, (sigma, u)) in reference.iter().enumerate() {
        let dot: f64 = cols[j].iter().zip(u).map(|(a, b)| a * b).sum();
        assert!(
            (dot.abs() - 1.0).abs() < 1e-9,
            "unit {j} (sigma {sigma}): |dot| = {}",
            dot.abs()
        );
    }
    // Orthonormal before the scaling.
    for a in 0..3 {
        for b in 0..3 {
            let dot: f64 = cols[a].iter().zip(&cols[b]).map(|(x, y)| x * y).sum();
            let expected = if a == b { 1.0 } else { 0.0 };
            assert!((dot - expected).abs() < 1e-12, "gram[{a}][{b}] = {dot}");
        }
    }
    // Zero fan-in and bias, so the function is unchanged.
    let fan_in = tensor(&mlp, "layers.0.weight");
    assert!(fan_in[5 * 6..].iter().all(|&v| v == 0.0));
    assert!(tensor(&mlp, "layers.0.bias")[5..].iter().all(|&v| v == 0.0));
    assert_eq!(max_abs_diff(&before, &outputs(&mlp, &x)), 0.0);
}

#[test]
fn gradmax_gives_the_new_fan_in_the_largest_gradient_any_fan_out_of_its_norm_can() {
    let (mut mlp, x, y) = tanh_case(21, &[6, 5, 4], 32);
    let stats = mlp.site_statistics(0, &x, &y, Loss::CrossEntropy).unwrap();
    let sigma1 = {
        let g = stats.g()[0].clone();
        let h = stats.h();
        let n = stats.rows() as f64;
        let m: Vec<f64> = (0..4 * 6)
            .map(|e| {
                (0..stats.rows())
                    .map(|i| g.get(i, e / 6) * h.get(i, e % 6))
                    .sum::<f64>()
                    / n
            })
            .collect();
        top_left_singular(&m, 4, 6, 1)[0].0
    };
    grow_site_informed(&mut mlp, "hidden.0", 1, &GRADMAX, &stats, &mut rng(0), None).unwrap();
    // The gradient of the new fan-in row: tanh'(0) = 1, so its norm is |w| sigma_1.
    let fan_in_grad = |m: &Mlp<f64, Cpu>| {
        let grads = m.try_alloc_grads().unwrap();
        let out = m.forward(x.clone().traced(grads));
        let grads = Loss::CrossEntropy.apply(out, y.clone()).backward();
        let g = grads.get(&m.layers()[0].weight).as_vec();
        g[5 * 6..].iter().map(|v| v * v).sum::<f64>().sqrt()
    };
    let w = tensor(&mlp, "layers.1.weight"); // 4 x 6
    let col: Vec<f64> = (0..4).map(|r| w[r * 6 + 5]).collect();
    let norm = col.iter().map(|v| v * v).sum::<f64>().sqrt();
    let best = fan_in_grad(&mlp);
    assert!(
        (best - norm * sigma1).abs() < 1e-10 * best.max(1.0),
        "{best} vs {}",
        norm * sigma1
    );
    // No random fan-out of the same norm does better.
    let mut r = rng(99);
    for _ in 0..20 {
        let v: Vec<f64> = (0..4).map(|_| r.gen_range(-1.0..1.0)).collect();
        let vn = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let mut w2 = w.clone();
        for row in 0..4 {
            w2[row * 6 + 5] = v[row] / vn * norm;
        }
        let mut other = mlp.clone();
        set_tensor(&mut other, "layers.1.weight", &w2);
        assert!(fan_in_grad(&other) <= best * (1.0 + 1e-12));
    }
}

fn gradmax_exact_over_shapes<E: Real>(tol: f64)
where
    Cpu: Device<E>,
{
    let dev = Cpu::default();
    let mut r = rng(77);
    for case in 0..24 {
        let act = [Activation::Tanh, Activation::Gelu, Activation::Identity][case % 3];
        let depth = 1 + case % 3;
        let sizes: Vec<usize> = (0..depth + 2).map(|_| r.gen_range(1..12)).collect();
        let mut mlp = Mlp::<E, Cpu>::new(&sizes, act, &dev, &mut r);
        let batch = r.gen_range(1..20);
        let x = input::<E>(&dev, batch, sizes[0], &mut r);
        let y = one_hot::<E>(&dev, batch, *sizes.last().unwrap(), &mut r);
        let hidden = r.gen_range(0..depth);
        let k = r.gen_range(1..9);
        let stats = mlp
            .site_statistics(hidden, &x, &y, Loss::CrossEntropy)
            .unwrap();
        let before = outputs(&mlp, &x);
        let site = Mlp::<E, Cpu>::site_name(hidden);
        let report =
            grow_site_informed(&mut mlp, &site, k, &GRADMAX, &stats, &mut r, None).unwrap();
        let scale = before.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        let change = max_abs_diff(&before, &outputs(&mlp, &x));
        assert!(
            change <= tol * scale,
            "case {case} {sizes:?} {act:?} k={k}: change {change}"
        );
        assert!(report.informed.unwrap() <= k.min(sizes[hidden]).min(sizes[hidden + 2]));
    }
}

#[test]
fn gradmax_preserves_the_function_over_random_shapes_f64() {
    gradmax_exact_over_shapes::<f64>(1e-12);
}

#[test]
fn gradmax_preserves_the_function_over_random_shapes_f32() {
    gradmax_exact_over_shapes::<f32>(1e-5);
}

#[test]
fn gradmax_is_refused_where_its_units_would_change_the_output_or_never_learn() {
    let dev = Cpu::default();
    let mut r = rng(1);
    for (act, epsilon, refused) in [
        (Activation::Relu, 0.0, true),
        (Activation::Sigmoid, 0.0, true),
        (Activation::Relu, 0.1, false),
        (Activation::Tanh, 0.0, false),
    ] {
        let mut mlp = Mlp::<f64, Cpu>::new(&[4, 6, 3], act, &dev, &mut r);
        let x = input::<f64>(&dev, 8, 4, &mut r);
        let y = one_hot::<f64>(&dev, 8, 3, &mut r);
        let stats = mlp.site_statistics(0, &x, &y, Loss::CrossEntropy).unwrap();
        let init = Init::GradMax {
            scale: 0.5,
            epsilon,
        };
        let widths = mlp.widths();
        let result = grow_site_informed(&mut mlp, "hidden.0", 2, &init, &stats, &mut r, None);
        match (refused, result) {
            (
                true,
                Err(GrowError::InitMismatch {
                    init: "GradMax",
                    reason,
                }),
            ) => {
                assert!(
                    reason.contains("act(0)") || reason.contains("epsilon"),
                    "{reason}"
                );
                assert_eq!(mlp.widths(), widths);
            }
            (false, Ok(report)) => assert_eq!(report.exact, epsilon == 0.0),
            (_, other) => panic!("{act:?} epsilon {epsilon}: {other:?}"),
        }
    }
}

#[test]
fn informed_inits_without_statistics_are_a_typed_error() {
    let (mut mlp, x, y) = tanh_case(2, &[4, 6, 3], 8);
    for init in [GRADMAX, TINY] {
        let err = grow_site(&mut mlp, "hidden.0", 2, &init, &mut rng(0)).unwrap_err();
        match err {
            GrowError::InitMismatch { reason, .. } => assert!(reason.contains("statistics")),
            other => panic!("{other:?}"),
        }
        assert_eq!(mlp.widths(), vec![4, 6, 3]);
    }
    // The controller without a probe refuses the growth with the reason.
    let policy = policy_from_str(
        "Schedule(events: [(at: Step(1), target: Layer(0), size: Fixed(2), init: GradMax(scale: 0.5))])",
        "inline",
    )
    .unwrap();
    let mut ctl = GrowthController::new(policy, 1);
    let mut opt = Adam::<f64>::new(AdamConfig::default()).unwrap();
    let m = Metrics::of(&mlp).step(1).train_loss(1.0).build().unwrap();
    match ctl.observe(&m, &mut mlp, &mut opt, None).unwrap() {
        Outcome::Refused(r) => assert!(r.why.contains("statistics"), "{}", r.why),
        other => panic!("{other:?}"),
    }
    // Statistics of another shape are refused too.
    let stats = mlp.site_statistics(0, &x, &y, Loss::CrossEntropy).unwrap();
    let err = grow_site_informed(
        &mut mlp.clone(),
        "hidden.1",
        2,
        &GRADMAX,
        &stats,
        &mut rng(0),
        None,
    );
    assert!(err.is_err());
    let (other, ox, oy) = tanh_case(2, &[5, 6, 3], 8);
    let wrong = other
        .site_statistics(0, &ox, &oy, Loss::CrossEntropy)
        .unwrap();
    let err = grow_site_informed(&mut mlp, "hidden.0", 2, &GRADMAX, &wrong, &mut rng(0), None);
    assert!(
        matches!(err, Err(GrowError::ShapeMismatch { .. })),
        "{err:?}"
    );
    // Non-finite statistics are refused when built.
    let h = HostMatrix::new(1, 1, vec![f64::NAN]).unwrap();
    let a = HostMatrix::new(1, 1, vec![0.0]).unwrap();
    assert!(matches!(
        SiteStatistics::new(h, a.clone(), vec![a], None),
        Err(GrowError::Statistics(_))
    ));
}

#[test]
fn rank_overflow_is_filled_with_zeros_out_units_and_reported() {
    // GradMax: E[g h^T] is 3 x 8, so at most 3 informed units of the 5 asked for.
    let (mut mlp, x, y) = tanh_case(4, &[8, 6, 3], 40);
    let stats = mlp.site_statistics(0, &x, &y, Loss::CrossEntropy).unwrap();
    let before = outputs(&mlp, &x);
    let report =
        grow_site_informed(&mut mlp, "hidden.0", 5, &GRADMAX, &stats, &mut rng(0), None).unwrap();
    // Cross-entropy gradients sum to zero over the classes: the rank is 2, not 3.
    assert_eq!(report.informed, Some(2));
    let w_out = tensor(&mlp, "layers.1.weight"); // 3 x 11
    let w_in = tensor(&mlp, "layers.0.weight"); // 11 x 8
    for u in 6..11 {
        let fan_out_zero = (0..3).all(|r| w_out[r * 11 + u] == 0.0);
        let fan_in_zero = w_in[u * 8..(u + 1) * 8].iter().all(|&v| v == 0.0);
        let informed = u < 8;
        assert_eq!(fan_out_zero, !informed, "unit {u}");
        assert_eq!(fan_in_zero, informed, "unit {u}");
    }
    // Unchanged to rounding: the wider product may take another gemm kernel.
    let change = max_abs_diff(&before, &outputs(&mlp, &x));
    assert!(change <= 1e-12, "{change:e}");
    // The filler units are today's ZerosOut units: fan-in norms at the old units' mean norm,
    // bias at their mean bias (not the fresh fan-in that left most added units dead).
    let b_in = tensor(&mlp, "layers.0.bias");
    let norm = |u: usize| {
        w_in[u * 8..(u + 1) * 8]
            .iter()
            .map(|v| v * v)
            .sum::<f64>()
            .sqrt()
    };
    let mean_norm = (0..6).map(norm).sum::<f64>() / 6.0;
    let mean_bias = b_in[..6].iter().sum::<f64>() / 6.0;
    for (u, b) in b_in.iter().enumerate().skip(8) {
        assert!((norm(u) - mean_norm).abs() <= 1e-12 * mean_norm, "unit {u}");
        assert!((b - mean_bias).abs() <= 1e-12, "unit {u}");
    }

    // TINY: its matrix is 9 x 3, with the same rank limit.
    let (mut mlp, x, y) = tanh_case(4, &[8, 6, 3], 40);
    let stats = mlp.site_statistics(0, &x, &y, Loss::CrossEntropy).unwrap();
    let p = probe(&x, &y, Loss::CrossEntropy);
    let report = grow_site_informed(
        &mut mlp,
        "hidden.0",
        6,
        &TINY,
        &stats,
        &mut rng(0),
        Some(&p),
    )
    .unwrap();
    let informed = report.informed.unwrap();
    assert!((1..=2).contains(&informed), "{informed}");
    let w_out = tensor(&mlp, "layers.1.weight"); // 3 x 12
    for u in 6 + informed..12 {
        assert!((0..3).all(|r| w_out[r * 12 + u] == 0.0), "unit {u}");
    }
    assert!(report.loss_after.unwrap() < report.loss_before.unwrap());
    println!(
        "rank overflow: GradMax informed 2 of 5; TINY informed {informed} of 6, gamma {:?}",
        report.gamma
    );
}

/// A tanh teacher of 5 hidden units and a student that is the teacher without its last unit:
/// the student needs exactly one more unit.
fn bottleneck(seed: u64) -> (Mlp<f64, Cpu>, Matrix<f64, Cpu>, Matrix<f64, Cpu>) {
    let dev = Cpu::default();
    let mut r = rng(seed);
    let (d, w, c, n) = (6, 5, 3, 256);
    let teacher = Mlp::<f64, Cpu>::new(&[d, w, c], Activation::Tanh, &dev, &mut r);
    // Make the missing unit matter: a strong fan-out.
    let mut teacher = teacher;
    let mut w2 = tensor(&teacher, "layers.1.weight");
    for row in 0..c {
        w2[row * w + w - 1] = 2.0 * if row % 2 == 0 { 1.0 } else { -1.0 };
    }
    set_tensor(&mut teacher, "layers.1.weight", &w2);
    let x = input::<f64>(&dev, n, d, &mut r);
    let y = teacher.forward(x.clone());
    let w1 = tensor(&teacher, "layers.0.weight");
    let b1 = tensor(&teacher, "layers.0.bias");
    let w2s: Vec<f64> = (0..c)
        .flat_map(|row| w2[row * w..row * w + w - 1].to_vec())
        .collect();
    let l0 = dfdx_grow::Linear::from_parts(
        dev.tensor_from_vec(w1[..(w - 1) * d].to_vec(), (w - 1, d)),
        dev.tensor_from_vec(b1[..w - 1].to_vec(), (w - 1,)),
    )
    .unwrap();
    let l1 = dfdx_grow::Linear::from_parts(
        dev.tensor_from_vec(w2s, (c, w - 1)),
        dev.tensor_from_vec(tensor(&teacher, "layers.1.bias"), (c,)),
    )
    .unwrap();
    let student = Mlp::from_layers(vec![l0, l1], Activation::Tanh).unwrap();
    (student, x, y)
}

/// One plain gradient step of size `lr` on the probe batch; the loss after it.
fn loss_after_one_step(mlp: &Mlp<f64, Cpu>, p: &Probe<f64, Cpu>, lr: f64) -> f64 {
    let mut m = mlp.clone();
    let (y, loss) = p.target.clone().unwrap();
    let grads = m.try_alloc_grads().unwrap();
    let out = m.forward(p.input.clone().traced(grads));
    let grads = loss.apply(out, y).backward();
    let mut updates = Vec::new();
    m.visit(&mut |name, t| {
        let mut v = vec![0.0; t.len()];
        t.copy_into(&mut v);
        let g = match t {
            dfdx_grow::ParamRef::Matrix(t) => grads.get(t).as_vec(),
            dfdx_grow::ParamRef::Vector(t) => grads.get(t).as_vec(),
        };
        let new: Vec<f64> = v.iter().zip(&g).map(|(w, g)| w - lr * g).collect();
        updates.push((name.to_string(), new));
    });
    for (name, v) in updates {
        set_tensor(&mut m, &name, &v);
    }
    p.loss(&m)
}

#[test]
fn tiny_closes_a_known_bottleneck_better_than_zeros_out_and_a_random_init() {
    let lr = 0.5;
    let mut rows = Vec::new();
    for seed in 0..5 {
        let (student, x, y) = bottleneck(seed);
        let p = probe(&x, &y, Loss::Mse);
        let stats = student.site_statistics(0, &x, &y, Loss::Mse).unwrap();
        let start = p.loss(&student);

        let mut zeros = student.clone();
        grow_site(&mut zeros, "hidden.0", 1, &Init::ZerosOut, &mut rng(seed)).unwrap();
        // A random unit: a fresh fan-in, and a fresh fan-out at the consumer's init scale.
        let mut random = zeros.clone();
        let mut w = tensor(&random, "layers.1.weight"); // 3 x 5
        let mut r = rng(seed + 100);
        for row in 0..3 {
            w[row * 5 + 4] = r.gen_range(-1.0..1.0) / 5f64.sqrt();
        }
        set_tensor(&mut random, "layers.1.weight", &w);
        let (l_zeros, l_random) = (p.loss(&zeros), p.loss(&random));
        assert_eq!(l_zeros, start, "ZerosOut is exact");
        let (s_zeros, s_random) = (
            loss_after_one_step(&zeros, &p, lr),
            loss_after_one_step(&random, &p, lr),
        );

        let mut tiny = Vec::new();
        for init in [TINY, TINY_UNPROJECTED] {
            let mut m = student.clone();
            let report = grow_site_informed(
                &mut m,
                "hidden.0",
                1,
                &init,
                &stats,
                &mut rng(seed),
                Some(&p),
            )
            .unwrap();
            assert_eq!(report.informed, Some(1));
            assert!(!report.exact);
            let l = p.loss(&m);
            assert_eq!(report.loss_after, Some(l));
            let s = loss_after_one_step(&m, &p, lr);
            assert!(
                l < 0.98 * l_zeros,
                "seed {seed} {init:?}: {l} vs ZerosOut {l_zeros}"
            );
            assert!(
                l < l_random,
                "seed {seed} {init:?}: {l} vs random {l_random}"
            );
            assert!(
                s < s_zeros && s < s_random,
                "seed {seed} {init:?}: after a step {s}"
            );
            tiny.push((l, s, report.gamma.unwrap()));
        }
        rows.push((seed, start, tiny, l_random, s_zeros, s_random));
    }
    for (seed, start, t, l_random, s_zeros, s_random) in rows {
        println!(
            "seed {seed}: after growth ZerosOut {start:.4}, random {l_random:.4}, TINY {:.4} \
             (gamma {}), TINY unprojected {:.4} (gamma {}); after one SGD step (lr {lr}): \
             ZerosOut {s_zeros:.4}, random {s_random:.4}, TINY {:.4}, unprojected {:.4}",
            t[0].0, t[0].2, t[1].0, t[1].2, t[0].1, t[1].1
        );
    }
}

#[test]
fn line_search_picks_the_lowest_loss_and_refuses_bad_grids() {
    let grid = default_gamma_grid();
    assert_eq!(grid.len(), 25);
    let s = line_search(|g| (g.log2() + 3.2).powi(2), &grid).unwrap();
    assert_eq!((s.gamma, s.evaluations), (0.125, 25));
    let nan_below_one = line_search(|g| if g < 1.0 { f64::NAN } else { g }, &grid).unwrap();
    assert_eq!(nan_below_one.gamma, 1.0);
    assert!(matches!(
        line_search(|_| 0.0, &[]),
        Err(GrowError::Statistics(_))
    ));
    assert!(matches!(
        line_search(|_| f64::NAN, &grid),
        Err(GrowError::Statistics(_))
    ));
    for bad in [0.0, -1.0, f64::INFINITY, f64::NAN] {
        assert!(matches!(
            line_search(|_| 0.0, &[1.0, bad]),
            Err(GrowError::InvalidHyper { name: "gamma", .. })
        ));
    }
}

#[test]
fn bracket_search_walks_to_the_best_power_of_two_either_way() {
    // Minimum at 2^5: 1, 2, ..., 32, 64 (worse): 7 evaluations.
    let s = bracket_search(|g| (g.log2() - 5.2).powi(2), 32).unwrap();
    assert_eq!((s.gamma, s.evaluations), (32.0, 7));
    // Minimum at 2^-3: 1, 2 (worse), 1/2, 1/4, 1/8, 1/16 (worse): 6 evaluations.
    let s = bracket_search(|g| (g.log2() + 3.1).powi(2), 32).unwrap();
    assert_eq!((s.gamma, s.evaluations), (0.125, 6));
    // Capped.
    let s = bracket_search(|g| -g, 10).unwrap();
    assert_eq!((s.gamma, s.evaluations), (512.0, 10));
    // NaN counts as a rise; all NaN is an error.
    let s = bracket_search(|g| if g > 1.5 { f64::NAN } else { g * g }, 32).unwrap();
    assert_eq!(s.gamma, 2f64.powi(-30));
    assert!(matches!(
        bracket_search(|_| f64::NAN, 32),
        Err(GrowError::Statistics(_))
    ));
}

#[test]
fn informed_inits_round_trip_through_ron_and_are_checked_in_policy_files() {
    for (text, expected) in [
        ("GradMax(scale: 0.5)", GRADMAX),
        (
            "GradMax(scale: 0.25, epsilon: 0.01)",
            Init::GradMax {
                scale: 0.25,
                epsilon: 0.01,
            },
        ),
        ("Tiny(min_singular: 0.001)", TINY),
        (
            "Tiny(min_singular: 0.01, gamma: Some(0.5))",
            Init::Tiny {
                min_singular: 0.01,
                gamma: Some(0.5),
                project: true,
            },
        ),
        (
            "Tiny(min_singular: 0.001, project: false)",
            TINY_UNPROJECTED,
        ),
    ] {
        let init: Init = ron::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(init, expected, "{text}");
        let back: Init = ron::from_str(&ron::to_string(&init).unwrap()).unwrap();
        assert_eq!(back, init);
        assert!(init.needs_statistics() && init.is_learnable());
    }
    assert!(GRADMAX.is_exact() && !TINY.is_exact());
    let ok = "Schedule(events: [(at: Step(5), target: Layer(0), size: Fixed(4), init: GradMax(scale: 0.5))])";
    assert!(policy_from_str(ok, "inline").is_ok());
    let tiny = "Schedule(events: [(at: Step(5), target: Layer(0), size: Fixed(4), init: Tiny(min_singular: 0.001))])";
    assert!(policy_from_str(tiny, "inline").is_ok());
    for bad in [
        "GradMax(scale: -1.0)",
        "GradMax(scale: 0.5, epsilon: -0.1)",
        "Tiny(min_singular: 0.001, gamma: Some(0.0))",
    ] {
        let text = format!(
            "Schedule(events: [(at: Step(5), target: Layer(0), size: Fixed(4), init: {bad})])"
        );
        let err = policy_from_str(&text, "inline").map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("init"), "{bad}: {err}");
    }
    // An old report without the new fields still reads.
    let old = r#"{"site":"hidden.0","old_width":4,"new_width":6,"params_before":1,"params_after":2,
        "init":"ZerosOut","exact":true,"max_abs_output_change":null,"output_scale":null,
        "loss_before":null,"loss_after":null}"#;
    let r: ExpansionReport = serde_json::from_str(old).unwrap();
    assert_eq!((r.informed, r.gamma, r.init_flops), (None, None, None));
}

#[test]
fn the_controller_grows_with_informed_inits_through_its_probe() {
    for (init, exact) in [(GRADMAX, true), (TINY, false)] {
        let (mut mlp, x, y) = bottleneck(7);
        let p = probe(&x, &y, Loss::Mse);
        let text = format!(
            "Schedule(events: [(at: Step(1), target: Layer(0), size: Fixed(2), init: {})])",
            ron::to_string(&init).unwrap()
        );
        let mut ctl = GrowthController::new(policy_from_str(&text, "inline").unwrap(), 3);
        let mut opt = Adam::<f64>::new(AdamConfig::default()).unwrap();
        let m = Metrics::of(&mlp).step(1).train_loss(1.0).build().unwrap();
        let outcome = ctl.observe(&m, &mut mlp, &mut opt, Some(&p)).unwrap();
        let events = outcome.events();
        assert_eq!(events.len(), 1, "{init:?}: {outcome:?}");
        let (before, after) = (
            events[0].loss_before.unwrap(),
            events[0].loss_after.unwrap(),
        );
        if exact {
            assert!(
                (after - before).abs() <= 1e-12 * before,
                "{before} -> {after}"
            );
        } else {
            assert!(after < before, "{before} -> {after}");
        }
        assert_eq!(mlp.widths(), vec![6, 6, 3]);
        println!(
            "controller, {}: probe loss {before:.5} -> {after:.5}",
            init.name()
        );
    }
}

#[test]
fn informed_flops_are_counted() {
    let (mut mlp, x, y) = tanh_case(8, &[10, 7, 4], 16);
    let stats = mlp.site_statistics(0, &x, &y, Loss::CrossEntropy).unwrap();
    // The consumer is the last layer: a forward pass plus the loss's gradient.
    let expected = dfdx_grow::flops::forward(&[10, 7, 4], 16) + 3.0 * 16.0 * 4.0;
    assert_eq!(stats.flops(), expected);
    assert_eq!(mlp.statistics_flops(0, 16), expected);
    let deeper = Mlp::<f64, Cpu>::new(
        &[10, 7, 5, 4],
        Activation::Tanh,
        &Cpu::default(),
        &mut rng(0),
    );
    let later = 4.0 * 16.0 * 5.0 * 4.0 + 2.0 * 16.0 * 5.0;
    assert_eq!(
        deeper.statistics_flops(0, 16),
        dfdx_grow::flops::forward(&[10, 7, 5, 4], 16) + later + 3.0 * 16.0 * 4.0
    );
    let g = informed_flops(&GRADMAX, 16, 10, 7, 4);
    assert_eq!(g, 2.0 * 16.0 * 4.0 * 10.0 + 4.0 * 10.0 * 16.0 + 8.0 * 64.0);
    assert!(informed_flops(&TINY, 16, 10, 7, 4) > g);
    assert_eq!(informed_flops(&Init::ZerosOut, 16, 10, 7, 4), 0.0);
    let p = probe(&x, &y, Loss::CrossEntropy);
    let report = grow_site_informed(
        &mut mlp,
        "hidden.0",
        2,
        &TINY,
        &stats,
        &mut rng(0),
        Some(&p),
    )
    .unwrap();
    let total = report.init_flops.unwrap();
    let planned = informed_flops(&TINY, 16, 10, 7, 4);
    let evaluations = (total - expected - planned) / (16.0 * mlp.forward_flops());
    assert!(
        (evaluations - evaluations.round()).abs() < 1e-9,
        "{evaluations}"
    );
    assert!((2.0..=32.0).contains(&evaluations), "{evaluations}");
}

#[test]
fn plan_informed_leaves_other_inits_to_plan() {
    let (mlp, x, y) = tanh_case(8, &[5, 4, 3], 6);
    let stats = mlp.site_statistics(0, &x, &y, Loss::CrossEntropy).unwrap();
    let (p, c) = (&mlp.layers()[0], &mlp.layers()[1]);
    let consumers: [&dyn Expandable<f64>; 1] = [c];
    let a = plan_informed(&Init::MirrorPairs, &stats, p, &consumers, 2, &mut rng(3)).unwrap();
    let b = Init::MirrorPairs
        .plan(p, &consumers, 2, &mut rng(3))
        .unwrap();
    assert_eq!((a.units, a.informed), (b, 0));
}

#[test]
fn shrink_perturb_with_shrink_one_and_no_noise_is_the_identity() {
    let (mut mlp, _, _) = tanh_case(1, &[5, 4, 3], 2);
    let before = mlp.param_dims();
    grow_site(&mut mlp, "hidden.0", 2, &Init::ZerosOut, &mut rng(0)).unwrap();
    let snapshot = common::snapshot::<f64>(&mlp);
    for scope in [PerturbScope::Grown, PerturbScope::Model] {
        let sp = ShrinkPerturb::new(1.0, 0.0, scope).unwrap();
        shrink_perturb(&mut mlp, &before, &sp, &mut rng(1)).unwrap();
        let after = common::snapshot::<f64>(&mlp);
        for (a, b) in snapshot.iter().flatten().zip(after.iter().flatten()) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
    }
}

#[test]
fn shrink_perturb_scales_the_old_weights_and_adds_noise_of_the_asked_size() {
    let (mut mlp, _, _) = tanh_case(1, &[40, 30, 20], 2);
    let before_dims = mlp.param_dims();
    let old = [
        tensor(&mlp, "layers.0.weight"),
        tensor(&mlp, "layers.1.weight"),
        tensor(&mlp, "layers.1.bias"),
    ];
    grow_site(&mut mlp, "hidden.0", 5, &Init::ZerosOut, &mut rng(0)).unwrap();
    let grown = [
        tensor(&mlp, "layers.0.weight"),
        tensor(&mlp, "layers.1.weight"),
    ];

    // Shrink only: old entries times 0.8 exactly, new entries and the untouched consumer
    // bias (its shape did not change) as they were.
    let mut m = mlp.clone();
    let sp = ShrinkPerturb::new(0.8, 0.0, PerturbScope::Grown).unwrap();
    let n = shrink_perturb(&mut m, &before_dims, &sp, &mut rng(1)).unwrap();
    assert_eq!(n, 30 * 40 + 30 + 20 * 30);
    let w0 = tensor(&m, "layers.0.weight");
    assert!(w0[..30 * 40]
        .iter()
        .zip(&old[0])
        .all(|(a, b)| *a == 0.8 * b));
    assert_eq!(&w0[30 * 40..], &grown[0][30 * 40..]);
    let w1 = tensor(&m, "layers.1.weight"); // 20 x 35
    for r in 0..20 {
        for c in 0..35 {
            let expected = if c < 30 {
                0.8 * old[1][r * 30 + c]
            } else {
                grown[1][r * 35 + c]
            };
            assert_eq!(w1[r * 35 + c], expected);
        }
    }
    assert_eq!(tensor(&m, "layers.1.bias"), old[2]);

    // Noise only: the change has mean about 0 and standard deviation about p.
    let mut m = mlp.clone();
    let sp = ShrinkPerturb::new(1.0, 0.01, PerturbScope::Model).unwrap();
    let n = shrink_perturb(&mut m, &before_dims, &sp, &mut rng(2)).unwrap();
    assert_eq!(n, 30 * 40 + 30 + 20 * 30 + 20);
    let before: Vec<f64> = old[0].clone();
    let after = tensor(&m, "layers.0.weight");
    let d: Vec<f64> = after[..30 * 40]
        .iter()
        .zip(&before)
        .map(|(a, b)| a - b)
        .collect();
    let mean = d.iter().sum::<f64>() / d.len() as f64;
    let sd = (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / d.len() as f64).sqrt();
    assert!(mean.abs() < 0.001, "mean {mean}");
    assert!((sd - 0.01).abs() < 0.0008, "sd {sd}");
    assert_eq!(&after[30 * 40..], &grown[0][30 * 40..]);

    for (shrink, noise) in [(0.0, 0.0), (1.5, 0.0), (0.8, -0.1), (f64::NAN, 0.0)] {
        assert!(matches!(
            ShrinkPerturb::new(shrink, noise, PerturbScope::Grown),
            Err(GrowError::InvalidHyper { .. })
        ));
    }
}

#[test]
fn the_controller_applies_shrink_perturb_after_a_growth() {
    let (mut mlp, x, y) = tanh_case(6, &[5, 4, 3], 8);
    let p = probe(&x, &y, Loss::CrossEntropy);
    let old = tensor(&mlp, "layers.0.weight");
    let policy = policy_from_str(
        "Schedule(events: [(at: Step(1), target: Layer(0), size: Fixed(2))])",
        "inline",
    )
    .unwrap();
    let sp = ShrinkPerturb::new(0.5, 0.0, PerturbScope::Grown).unwrap();
    let mut ctl = GrowthController::new(policy, 3)
        .with_shrink_perturb(sp)
        .unwrap();
    let mut opt = Adam::<f64>::new(AdamConfig::default()).unwrap();
    let m = Metrics::of(&mlp).step(1).train_loss(1.0).build().unwrap();
    let outcome = ctl.observe(&m, &mut mlp, &mut opt, Some(&p)).unwrap();
    assert_eq!(outcome.events().len(), 1);
    let w = tensor(&mlp, "layers.0.weight");
    assert!(w[..20].iter().zip(&old).all(|(a, b)| *a == 0.5 * b));
    let bad = ShrinkPerturb {
        shrink: 2.0,
        noise: 0.0,
        scope: PerturbScope::Grown,
    };
    let policy = policy_from_str(
        "Schedule(events: [(at: Step(1), target: Layer(0), size: Fixed(2))])",
        "inline",
    )
    .unwrap();
    assert!(GrowthController::new(policy, 3)
        .with_shrink_perturb(bad)
        .is_err());
}

/// Random labels: no unit can help on new examples.
fn noise_case(seed: u64, n: usize) -> (Mlp<f64, Cpu>, Probe<f64, Cpu>, Probe<f64, Cpu>) {
    let dev = Cpu::default();
    let mut r = rng(seed);
    let mlp = Mlp::<f64, Cpu>::new(&[20, 16, 5], Activation::Relu, &dev, &mut r);
    let mut batch = || {
        let x = input::<f64>(&dev, n, 20, &mut r);
        let y = one_hot::<f64>(&dev, n, 5, &mut r);
        probe(&x, &y, Loss::CrossEntropy)
    };
    let (a, b) = (batch(), batch());
    (mlp, a, b)
}

#[test]
fn a_split_probe_keeps_tiny_from_fitting_the_noise_of_its_statistics_batch() {
    for seed in 0..3 {
        let (mlp, stats_batch, held_out) = noise_case(seed, 64);
        let held_before = held_out.loss(&mlp);
        // In-sample: statistics, line search and check on one batch.
        let mut same = mlp.clone();
        let stats = stats_batch.statistics(&same, "hidden.0").unwrap();
        assert_eq!(stats.rows(), 64);
        let r = grow_site_informed(
            &mut same,
            "hidden.0",
            4,
            &TINY,
            &stats,
            &mut rng(0),
            Some(&stats_batch),
        )
        .unwrap();
        let in_sample = (
            r.loss_before.unwrap(),
            r.loss_after.unwrap(),
            held_out.loss(&same),
        );
        // Split: statistics on one batch, line search and check on the other.
        let split = SplitProbe {
            probe: held_out.clone(),
            statistics: stats_batch.clone(),
        };
        let mut apart = mlp.clone();
        let stats = split.statistics(&apart, "hidden.0").unwrap();
        let r = grow_site_informed(
            &mut apart,
            "hidden.0",
            4,
            &TINY,
            &stats,
            &mut rng(0),
            Some(&split),
        )
        .unwrap();
        let held_after = held_out.loss(&apart);
        assert_eq!(r.loss_after, Some(held_after));
        println!(
            "seed {seed}: same batch: stats batch {:.4} -> {:.4}, held-out {held_before:.4} -> {:.4}; \
             split: held-out {held_before:.4} -> {held_after:.4} (gamma {:?})",
            in_sample.0, in_sample.1, in_sample.2, r.gamma
        );
        assert!(in_sample.1 < in_sample.0, "fits its own batch");
        assert!(in_sample.2 > held_before, "and pays for it on new examples");
        // At worst gamma walks down to 2^-30: within the controller's default tolerance.
        assert!(
            held_after <= held_before * (1.0 + 1e-6),
            "the split search does not raise its own probe: {held_after}"
        );
    }
}
