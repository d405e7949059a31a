//! Bad requests get typed errors and leave the model untouched.

mod common;

use common::*;
use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::{Activation, GrowError, Init, Loss, Mlp, Probe};

fn model() -> Mlp<f64, Cpu> {
    Mlp::<f64, Cpu>::new(
        &[4, 6, 5, 3],
        Activation::Relu,
        &Cpu::default(),
        &mut rng(1),
    )
    .with_max_width(64)
}

#[test]
fn each_bad_growth_request_is_a_typed_error_and_changes_nothing() {
    type Case = (usize, usize, Init, fn(&GrowError) -> bool);
    let cases: Vec<Case> = vec![
        (2, 1, Init::ZerosOut, |e| {
            matches!(
                e,
                GrowError::NoSuchLayer {
                    index: 2,
                    hidden_layers: 2
                }
            )
        }),
        (usize::MAX, 1, Init::ZerosOut, |e| {
            matches!(e, GrowError::NoSuchLayer { .. })
        }),
        (0, 0, Init::ZerosOut, |e| matches!(e, GrowError::ZeroUnits)),
        (0, 59, Init::ZerosOut, |e| {
            matches!(
                e,
                GrowError::WidthCap {
                    width: 6,
                    k: 59,
                    cap: 64,
                    ..
                }
            )
        }),
        (1, usize::MAX, Init::ZerosOut, |e| {
            matches!(e, GrowError::WidthCap { .. })
        }),
        (0, 3, Init::MirrorPairs, |e| {
            matches!(
                e,
                GrowError::InitMismatch {
                    init: "MirrorPairs",
                    ..
                }
            )
        }),
        (0, 2, Init::ConstantFanIn { value: f64::NAN }, |e| {
            matches!(e, GrowError::InitMismatch { .. })
        }),
        (0, 2, Init::CopyHalveNoise { std: -1.0 }, |e| {
            matches!(e, GrowError::InitMismatch { .. })
        }),
    ];
    for (layer, k, init, expected) in cases {
        let mut mlp = model();
        let before = snapshot(&mlp);
        let err = mlp.expand_hidden(layer, k, &init, &mut rng(2)).unwrap_err();
        assert!(expected(&err), "({layer}, {k}, {init:?}) gave {err:?}");
        assert!(!err.to_string().is_empty());
        assert_eq!(
            snapshot(&mlp),
            before,
            "({layer}, {k}, {init:?}) changed the model"
        );
        assert_eq!(mlp.widths(), vec![4, 6, 5, 3]);
    }
}

#[test]
fn the_width_cap_admits_exactly_the_cap() {
    let mut mlp = model();
    mlp.expand_hidden(0, 58, &Init::ZerosOut, &mut rng(3))
        .unwrap();
    assert_eq!(mlp.widths()[1], 64);
    assert!(matches!(
        mlp.expand_hidden(0, 1, &Init::ZerosOut, &mut rng(3)),
        Err(GrowError::WidthCap { .. })
    ));
}

#[test]
fn a_probe_of_the_wrong_shape_is_refused_before_growth() {
    let dev = Cpu::default();
    let mut mlp = model();
    let before = snapshot(&mlp);
    let bad_input = Probe {
        input: input::<f64>(&dev, 4, 5, &mut rng(4)),
        target: None,
    };
    let e = mlp
        .expand_hidden_probed(0, 2, &Init::ZerosOut, &mut rng(4), &bad_input)
        .unwrap_err();
    assert!(matches!(
        e,
        GrowError::BadInput {
            expected: 4,
            found: (4, 5)
        }
    ));
    let bad_target = Probe {
        input: input::<f64>(&dev, 4, 4, &mut rng(4)),
        target: Some((one_hot::<f64>(&dev, 4, 2, &mut rng(4)), Loss::CrossEntropy)),
    };
    let e = mlp
        .expand_hidden_probed(0, 2, &Init::ZerosOut, &mut rng(4), &bad_target)
        .unwrap_err();
    assert!(matches!(e, GrowError::BadInput { .. }));
    assert_eq!(snapshot(&mlp), before);
}

#[test]
fn invalid_sizes_are_typed_errors() {
    let dev = Cpu::default();
    for sizes in [&[][..], &[3][..], &[3, 0, 2][..]] {
        let e = Mlp::<f32, Cpu>::try_new(sizes, Activation::Relu, &dev, &mut rng(5)).unwrap_err();
        assert!(matches!(e, GrowError::InvalidSizes { .. }), "{sizes:?}");
    }
}

#[test]
fn layers_that_do_not_chain_are_refused() {
    let dev = Cpu::default();
    let a = dfdx_grow::Linear::<f32, Cpu>::new(3, 4, &dev, &mut rng(6)).unwrap();
    let b = dfdx_grow::Linear::<f32, Cpu>::new(5, 2, &dev, &mut rng(6)).unwrap();
    let e = Mlp::from_layers(vec![a, b], Activation::Relu).unwrap_err();
    assert!(
        matches!(
            &e,
            GrowError::ShapeMismatch {
                what,
                expected: 5,
                found: 4
            } if what.contains("layers.1")
        ),
        "{e:?}"
    );
}
