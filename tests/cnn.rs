//! The CNN as a growable model: every convolution's channels are a site; growth is exact,
//! atomic and learnable; the controller grows it from a RON file; it checkpoints by name.

mod common;

use common::{input, one_hot, rng, snapshot, step};
use dfdx_grow::audit::{AuditLog, AuditRecord};
use dfdx_grow::checkpoint::Checkpoint;
use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::optim::{Adam, AdamConfig};
use dfdx_grow::policy::{policy_from_str, Metrics};
use dfdx_grow::rand::Rng;
use dfdx_grow::{
    grow_site, Activation, Cnn, ConvSpec, Data, GrowError, Growable, GrowthController, Init, Loss,
    LossProbe, Outcome, Params, Probe, Real,
};

fn random_cnn<E: Real>(rng: &mut common::TestRng) -> Cnn<E, Cpu>
where
    Cpu: Device<E>,
{
    let (c, h, w) = (
        rng.gen_range(1..3),
        rng.gen_range(4..10),
        rng.gen_range(4..10),
    );
    let convs: Vec<ConvSpec> = (0..rng.gen_range(1..3))
        .map(|_| ConvSpec {
            channels: rng.gen_range(1..6),
            kernel: rng.gen_range(1..4),
            stride: rng.gen_range(1..3),
            padding: rng.gen_range(0..2),
        })
        .collect();
    let act = [Activation::Relu, Activation::Tanh, Activation::Gelu][rng.gen_range(0..3)];
    // A drawn geometry may not fit (a kernel larger than the map): draw again.
    match Cnn::new(
        (c, h, w),
        &convs,
        rng.gen_range(1..5),
        act,
        &Cpu::default(),
        rng,
    ) {
        Ok(cnn) => cnn,
        Err(_) => random_cnn(rng),
    }
}

fn exactness<E: Real>(tol: f64)
where
    Cpu: Device<E>,
{
    let dev = Cpu::default();
    let mut rng = rng(41);
    for case in 0..40 {
        let mut cnn = random_cnn::<E>(&mut rng);
        let spec = cnn.spec();
        let x = input::<E>(
            &dev,
            rng.gen_range(1..5),
            spec.input.0 * spec.input.1 * spec.input.2,
            &mut rng,
        );
        let before = cnn.forward(x.clone()).as_vec();
        for site in cnn.sites() {
            let init = [Init::ZerosOut, Init::MirrorPairs, Init::CopyHalve][case % 3].clone();
            grow_site(
                &mut cnn,
                &site.name,
                2 * rng.gen_range(1..4),
                &init,
                &mut rng,
            )
            .unwrap();
        }
        let after = cnn.forward(x).as_vec();
        let f = |v: &E| v.to_f64().unwrap();
        let scale = before.iter().map(|v| f(v).abs()).fold(1e-30, f64::max);
        let d = before
            .iter()
            .zip(&after)
            .map(|(a, b)| (f(a) - f(b)).abs())
            .fold(0.0, f64::max);
        assert!(d / scale <= tol, "case {case}: {d} of {scale}");
    }
}

#[test]
fn growing_every_convolution_preserves_the_function_in_f64() {
    exactness::<f64>(1e-12);
}

#[test]
fn growing_every_convolution_preserves_the_function_in_f32() {
    exactness::<f32>(1e-5);
}

#[test]
fn the_last_convolution_feeds_the_head_h_times_w_columns_a_channel() {
    let mut rng = rng(2);
    let conv = |channels, stride| ConvSpec {
        channels,
        kernel: 3,
        stride,
        padding: 1,
    };
    let mut cnn = Cnn::<f32, Cpu>::new(
        (1, 12, 12),
        &[conv(4, 1), conv(6, 2)],
        10,
        Activation::Relu,
        &Cpu::default(),
        &mut rng,
    )
    .unwrap();
    let sites = cnn.sites();
    // convs.0: a 1x3x3 fan-in, a bias, and 6 x 3x3 taps in convs.1 per channel.
    assert_eq!(sites[0].params_per_unit, 9 + 1 + 6 * 9);
    assert_eq!(sites[1].params_per_unit, 4 * 9 + 1 + 10 * 6 * 6);
    let before = cnn.num_params();
    grow_site(&mut cnn, "convs.1", 3, &Init::ZerosOut, &mut rng).unwrap();
    assert_eq!(cnn.num_params() - before, 3 * sites[1].params_per_unit);
    assert_eq!(cnn.head().channels(), 9);
    assert_eq!(cnn.head().linear().weight.shape().1, 9 * 36);
    // A width cap is a refusal that changes nothing.
    let mut capped = cnn.clone().with_max_width(10);
    let ckpt = Checkpoint::of(&capped);
    let e = grow_site(&mut capped, "convs.1", 2, &Init::ZerosOut, &mut rng).unwrap_err();
    assert!(matches!(e, GrowError::WidthCap { .. }), "{e}");
    assert_eq!(Checkpoint::of(&capped), ckpt);
}

#[test]
fn bad_geometry_and_input_are_typed_errors() {
    let mut rng = rng(3);
    let big = ConvSpec {
        channels: 2,
        kernel: 7,
        stride: 1,
        padding: 0,
    };
    let e = Cnn::<f32, Cpu>::new(
        (1, 5, 5),
        &[big],
        2,
        Activation::Relu,
        &Cpu::default(),
        &mut rng,
    )
    .unwrap_err();
    assert!(e.to_string().contains("does not fit"), "{e}");
    assert!(Cnn::<f32, Cpu>::new(
        (1, 5, 5),
        &[],
        2,
        Activation::Relu,
        &Cpu::default(),
        &mut rng
    )
    .is_err());
    let ok = ConvSpec {
        channels: 2,
        kernel: 3,
        stride: 1,
        padding: 0,
    };
    let cnn = Cnn::<f32, Cpu>::new(
        (1, 5, 5),
        &[ok],
        2,
        Activation::Relu,
        &Cpu::default(),
        &mut rng,
    )
    .unwrap();
    let x = input::<f32>(&Cpu::default(), 2, 24, &mut rng);
    assert!(matches!(
        cnn.check_input(&x),
        Err(GrowError::BadInput { expected: 25, .. })
    ));
    // A probe that does not fit gives NaN, which the controller refuses, not a panic.
    let probe = Probe {
        input: x,
        target: None,
    };
    assert!(probe.loss(&cnn).is_nan());
    // So does a target of another batch size (it panicked inside dfdx's loss).
    let dev = Cpu::default();
    let probe = Probe {
        input: input::<f32>(&dev, 2, 25, &mut rng),
        target: Some((one_hot::<f32>(&dev, 5, 2, &mut rng), Loss::CrossEntropy)),
    };
    assert!(probe.loss(&cnn).is_nan());
    assert!(probe.check(25, 2).is_err());
}

#[test]
fn new_channels_learn_and_the_data_path_gives_the_same_gradients() {
    let dev = Cpu::default();
    let mut rng = rng(5);
    let conv = |channels| ConvSpec {
        channels,
        kernel: 3,
        stride: 1,
        padding: 1,
    };
    let mut cnn = Cnn::<f64, Cpu>::new(
        (1, 6, 6),
        &[conv(3), conv(4)],
        3,
        Activation::Relu,
        &dev,
        &mut rng,
    )
    .unwrap();
    let x = input::<f64>(&dev, 16, 36, &mut rng);
    let y = one_hot::<f64>(&dev, 16, 3, &mut rng);
    // With Data the first convolution skips the input's gradient: the parameter gradients
    // are those of the plain path.
    let grads = cnn.try_alloc_grads().unwrap();
    let plain =
        cross_entropy_with_logits_loss(cnn.forward(x.clone().traced(grads)), y.clone()).backward();
    let grads = cnn.try_alloc_grads().unwrap();
    let data =
        cross_entropy_with_logits_loss(cnn.forward(Data(x.clone().traced(grads))), y.clone())
            .backward();
    let (mut plain, mut data) = (plain, data);
    for ((n, a), (_, b)) in cnn
        .grad_norms(&mut plain)
        .unwrap()
        .iter()
        .zip(cnn.grad_norms(&mut data).unwrap())
    {
        assert!((a - b).abs() <= 1e-12 * a.abs().max(1.0), "{n}: {a} vs {b}");
    }
    let mut opt = Adam::<f64>::new(AdamConfig::default()).unwrap();
    for _ in 0..3 {
        step(&mut cnn, &mut opt, &x, &y);
    }
    grow_site(&mut cnn, "convs.0", 2, &Init::ZerosOut, &mut rng).unwrap();
    let before = snapshot(&cnn);
    let (_, mut grads) = step(&mut cnn, &mut opt, &x, &y);
    let norms = cnn.grad_norms(&mut grads).unwrap();
    // convs.1.weight rows read [old 3 channels | new 2] x 9 taps: the new columns' gradient
    // is non-zero at once (the new channels are active), the new fan-in's is zero.
    let after = snapshot(&cnn);
    let (w1_before, w1_after) = (&before[2], &after[2]);
    let moved_new_cols =
        (0..4).any(|r| (27..45).any(|c| w1_before[r * 45 + c] != w1_after[r * 45 + c]));
    assert!(moved_new_cols, "the new fan-out learns from the first step");
    assert_eq!(
        &before[0][27..],
        &after[0][27..],
        "the new fan-in waits a step"
    );
    assert!(norms.iter().all(|(_, n)| n.is_finite()));
}

#[test]
fn the_controller_grows_a_cnn_from_a_policy_file_and_it_checkpoints_by_name() {
    let dev = Cpu::default();
    let mut rng = rng(7);
    let conv = |channels, stride| ConvSpec {
        channels,
        kernel: 3,
        stride,
        padding: 1,
    };
    let fresh = |rng: &mut common::TestRng| {
        Cnn::<f32, Cpu>::new(
            (1, 8, 8),
            &[conv(2, 1), conv(4, 2)],
            3,
            Activation::Relu,
            &dev,
            rng,
        )
        .unwrap()
    };
    let mut cnn = fresh(&mut rng);
    let x = input::<f32>(&dev, 32, 64, &mut rng);
    let y = one_hot::<f32>(&dev, 32, 3, &mut rng);
    let mut opt = Adam::<f32>::new(AdamConfig::default()).unwrap();
    let policy = policy_from_str(
        "Schedule(events: [
            (at: Step(5), target: Site(\"convs.0\"), size: Fraction(1.0)),
            (at: Step(10), target: All, size: Fixed(2)),
        ])",
        "cnn.ron",
    )
    .unwrap();
    let log = std::env::temp_dir().join(format!("dfdx_grow_cnn_{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let mut ctl = GrowthController::new(policy, 3).with_audit(AuditLog::open(&log).unwrap());
    let probe = Probe {
        input: x.clone(),
        target: Some((y.clone(), Loss::CrossEntropy)),
    };
    for s in 1..=12 {
        step(&mut cnn, &mut opt, &x, &y);
        let m = Metrics::of(&cnn).step(s).build().unwrap();
        let out = ctl.observe(&m, &mut cnn, &mut opt, Some(&probe)).unwrap();
        if s == 5 || s == 10 {
            assert!(matches!(out, Outcome::Grown(_)), "step {s}: {out:?}");
        }
    }
    let channels: Vec<usize> = cnn.convs().iter().map(|c| c.out_channels()).collect();
    assert_eq!(channels, [6, 6]);
    let grown: Vec<(String, usize, usize)> = AuditLog::read(&log)
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            AuditRecord::Growth(g) => Some((g.site, g.old_width, g.new_width)),
            _ => None,
        })
        .collect();
    assert_eq!(
        grown,
        [
            ("convs.0".to_string(), 2, 4),
            ("convs.0".into(), 4, 6),
            ("convs.1".into(), 4, 6)
        ]
    );
    // Restored by name into a fresh network of the starting size.
    let ckpt = Checkpoint::of(&cnn).with_optimizer(opt.save_state());
    let mut other = fresh(&mut common::rng(99));
    ckpt.restore(&mut other).unwrap();
    assert_eq!(other.forward(x.clone()).as_vec(), cnn.forward(x).as_vec());
    let mut other_opt = Adam::<f32>::new(AdamConfig::default()).unwrap();
    ckpt.restore_optimizer(&mut other_opt, &other).unwrap();
    assert_eq!(other_opt.state(), opt.state());
    let _ = std::fs::remove_file(&log);
}

#[test]
fn a_padding_that_overflows_the_map_size_is_a_typed_error() {
    let huge = ConvSpec {
        channels: 2,
        kernel: 3,
        stride: 1,
        padding: usize::MAX / 2 + 1,
    };
    let r = Cnn::<f32, Cpu>::new(
        (1, 5, 5),
        &[huge],
        2,
        Activation::Relu,
        &Cpu::default(),
        &mut rng(1),
    );
    assert!(r.is_err());
}
