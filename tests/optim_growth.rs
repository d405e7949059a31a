//! The growth-aware optimizers: equal to dfdx's before growth, blind to growth for old
//! weights, and a normal first step for new ones.

mod common;

use common::*;
use dfdx_grow::dfdx::nn::builders::{Linear as DLinear, ReLU};
use dfdx_grow::dfdx::optim::WeightDecay as DWeightDecay;
use dfdx_grow::dfdx::optim::{Adam as DAdam, AdamConfig as DAdamConfig, Momentum as DMomentum};
use dfdx_grow::dfdx::optim::{Optimizer as DOptimizer, Sgd as DSgd, SgdConfig as DSgdConfig};
use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::optim::{
    Adam, AdamConfig, Momentum, NewUnitSteps, Optimizer, Sgd, SgdConfig, WeightDecay,
};
use dfdx_grow::{Activation, GrowError, Init, Linear, Mlp, Params};

type DModel = (DLinear<6, 8>, ReLU, DLinear<8, 3>);

/// Our Mlp holding exactly the weights of a dfdx const-generic model.
fn twin(dev: &Cpu, m: &<DModel as BuildOnDevice<Cpu, f64>>::Built) -> Mlp<f64, Cpu> {
    let l0 = Linear::from_parts(
        dev.tensor_from_vec(m.0.weight.as_vec(), (8, 6)),
        dev.tensor_from_vec(m.0.bias.as_vec(), (8,)),
    )
    .unwrap();
    let l1 = Linear::from_parts(
        dev.tensor_from_vec(m.2.weight.as_vec(), (3, 8)),
        dev.tensor_from_vec(m.2.bias.as_vec(), (3,)),
    )
    .unwrap();
    Mlp::from_layers(vec![l0, l1], Activation::Relu).unwrap()
}

/// Trains a dfdx model and our twin side by side for 30 steps, both optimizers fed the
/// gradients of dfdx's model (the optimizers are what is compared: the crate's layers run a
/// matmul of their own), and returns the largest difference between their weights.
fn side_by_side(
    mut theirs: impl DOptimizer<<DModel as BuildOnDevice<Cpu, f64>>::Built, Cpu, f64>,
    ours: &mut dyn Optimizer<f64, Cpu>,
) -> f64 {
    let dev = Cpu::seed_from_u64(11);
    let mut model = dev.build_module::<DModel, f64>();
    let mut mlp = twin(&dev, &model);
    let mut rng = rng(5);
    for _ in 0..30 {
        let x = input::<f64>(&dev, 16, 6, &mut rng);
        let y = one_hot::<f64>(&dev, 16, 3, &mut rng);
        let xs: Tensor<Rank2<16, 6>, f64, Cpu> = dev.tensor(x.as_vec());
        let ys: Tensor<Rank2<16, 3>, f64, Cpu> = dev.tensor(y.as_vec());
        let grads = model.alloc_grads();
        let loss = cross_entropy_with_logits_loss(model.forward(xs.traced(grads)), ys);
        let grads = loss.backward();
        let dfdx_grads = [
            grads.get(&model.0.weight).as_vec(),
            grads.get(&model.0.bias).as_vec(),
            grads.get(&model.2.weight).as_vec(),
            grads.get(&model.2.bias).as_vec(),
        ];
        theirs.update(&mut model, &grads).unwrap();
        let mut ours_grads = mlp.try_alloc_grads().unwrap();
        for (layer, g) in mlp.layers().iter().zip(dfdx_grads.chunks(2)) {
            ours_grads
                .get_or_alloc_mut(&layer.weight)
                .unwrap()
                .copy_from_slice(&g[0]);
            ours_grads
                .get_or_alloc_mut(&layer.bias)
                .unwrap()
                .copy_from_slice(&g[1]);
        }
        ours.update(&mut mlp, &mut ours_grads).unwrap();
    }
    let w = snapshot(&mlp);
    [
        max_abs_diff(&w[0], &model.0.weight.as_vec()),
        max_abs_diff(&w[1], &model.0.bias.as_vec()),
        max_abs_diff(&w[2], &model.2.weight.as_vec()),
        max_abs_diff(&w[3], &model.2.bias.as_vec()),
    ]
    .into_iter()
    .fold(0.0, f64::max)
}

#[test]
fn adam_matches_dfdx_adam_bit_for_bit_before_growth() {
    for (wd, dwd) in [
        (None, None),
        (Some(WeightDecay::L2(1e-2)), Some(DWeightDecay::L2(1e-2))),
        (
            Some(WeightDecay::Decoupled(1e-2)),
            Some(DWeightDecay::Decoupled(1e-2)),
        ),
    ] {
        let dev = Cpu::default();
        let probe = dev.build_module::<DModel, f64>();
        let theirs = DAdam::new(
            &probe,
            DAdamConfig {
                lr: 1e-2,
                weight_decay: dwd,
                ..Default::default()
            },
        );
        let mut ours = Adam::new(AdamConfig {
            lr: 1e-2,
            weight_decay: wd,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(side_by_side(theirs, &mut ours), 0.0, "weight decay {wd:?}");
    }
}

#[test]
fn sgd_matches_dfdx_sgd_bit_for_bit_before_growth() {
    let cases = [
        (None, None, None, None),
        (
            Some(Momentum::Classic(0.9)),
            Some(DMomentum::Classic(0.9)),
            None,
            None,
        ),
        (
            Some(Momentum::Nesterov(0.8)),
            Some(DMomentum::Nesterov(0.8)),
            Some(WeightDecay::L2(1e-3)),
            Some(DWeightDecay::L2(1e-3)),
        ),
        (
            Some(Momentum::Classic(0.5)),
            Some(DMomentum::Classic(0.5)),
            Some(WeightDecay::Decoupled(1e-2)),
            Some(DWeightDecay::Decoupled(1e-2)),
        ),
    ];
    for (m, dm, wd, dwd) in cases {
        let dev = Cpu::default();
        let probe = dev.build_module::<DModel, f64>();
        let theirs = DSgd::new(
            &probe,
            DSgdConfig {
                lr: 5e-2,
                momentum: dm,
                weight_decay: dwd,
            },
        );
        let mut ours = Sgd::new(SgdConfig {
            lr: 5e-2,
            momentum: m,
            weight_decay: wd,
        })
        .unwrap();
        assert_eq!(side_by_side(theirs, &mut ours), 0.0, "{m:?} {wd:?}");
    }
}

/// Trains a few steps, then takes the next step twice from the same state (model and
/// optimizer cloned): once after two ZerosOut growths and once without; every pre-existing
/// weight must end exactly where it ends without growth.
fn old_weights_ignore_growth<O: Optimizer<f64, Cpu> + Clone>(mut opt: O) {
    let dev = Cpu::default();
    let mut rng = rng(6);
    let mut mlp = Mlp::<f64, Cpu>::new(&[6, 5, 4, 3], Activation::Tanh, &dev, &mut rng);
    let batches: Vec<_> = (0..6)
        .map(|_| {
            (
                input::<f64>(&dev, 12, 6, &mut rng),
                one_hot::<f64>(&dev, 12, 3, &mut rng),
            )
        })
        .collect();
    for (x, y) in &batches[..4] {
        step(&mut mlp, &mut opt, x, y);
    }
    let (mut plain, mut plain_opt) = (mlp.clone(), opt.clone());
    let dims_before = plain.param_dims();
    mlp.expand_hidden(0, 3, &Init::ZerosOut, &mut rng).unwrap();
    mlp.expand_hidden(1, 2, &Init::ZerosOut, &mut rng).unwrap();
    for (x, y) in &batches[4..5] {
        step(&mut mlp, &mut opt, x, y);
        step(&mut plain, &mut plain_opt, x, y);
    }
    let (grown, plain) = (snapshot(&mlp), snapshot(&plain));
    let grown_dims = mlp.param_dims();
    assert_ne!(grown_dims, dims_before);
    for (i, ((name, (r, c)), (grown_name, (_, gc)))) in
        dims_before.iter().zip(&grown_dims).enumerate()
    {
        assert_eq!(name, grown_name);
        let (r, c, gc) = (*r, *c, *gc);
        for row in 0..r {
            let old = &plain[i][row * c..(row + 1) * c];
            let new = &grown[i][row * gc..row * gc + c];
            assert_eq!(
                old, new,
                "tensor {i} row {row}: an old weight moved differently"
            );
        }
    }
}

#[test]
fn after_zeros_out_growth_old_weights_update_exactly_as_without_growth() {
    old_weights_ignore_growth(Adam::<f64>::new(AdamConfig::default()).unwrap());
    old_weights_ignore_growth(
        Adam::<f64>::new(AdamConfig {
            new_units: NewUnitSteps::Global,
            ..Default::default()
        })
        .unwrap(),
    );
    old_weights_ignore_growth(Adam::<f64>::adamw(1e-2, 1e-2).unwrap());
    old_weights_ignore_growth(
        Sgd::<f64>::new(SgdConfig {
            lr: 0.1,
            momentum: Some(Momentum::Nesterov(0.9)),
            weight_decay: None,
        })
        .unwrap(),
    );
}

/// Trains 200 steps, grows the hidden layer with ZerosOut, takes one step, and returns the
/// size of that step for every new fan-out weight divided by lr (with the plain epsilon for
/// new entries: `new_unit_eps` 0).
fn first_step_of_new_weights(mode: NewUnitSteps) -> Vec<f64> {
    first_step_with(mode, 0.0).0
}

/// As [`first_step_of_new_weights`] with `new_unit_eps`; also returns the new fan-out's
/// gradients and the consumer weight's second moment before the growth.
fn first_step_with(mode: NewUnitSteps, new_unit_eps: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let dev = Cpu::default();
    let mut rng = rng(8);
    let lr = 1e-3;
    let mut opt = Adam::<f64>::new(AdamConfig {
        lr,
        new_units: mode,
        new_unit_eps,
        ..Default::default()
    })
    .unwrap();
    let mut mlp = Mlp::<f64, Cpu>::new(&[4, 3, 2], Activation::Relu, &dev, &mut rng);
    let x = input::<f64>(&dev, 32, 4, &mut rng);
    let y = one_hot::<f64>(&dev, 32, 2, &mut rng);
    for _ in 0..200 {
        step(&mut mlp, &mut opt, &x, &y);
    }
    let v_before = opt.state().tensors[2].buffers[1].clone();
    mlp.expand_hidden(0, 4, &Init::ZerosOut, &mut rng).unwrap();
    let before = snapshot(&mlp)[2].clone();
    let (_, mut grads) = step(&mut mlp, &mut opt, &x, &y);
    let after = snapshot(&mlp)[2].clone();
    let new = || (0..2).flat_map(|r| (3..7).map(move |c| r * 7 + c));
    let g = grads_of(&mlp, &mut grads)[2].clone();
    (
        new().map(|i| (after[i] - before[i]).abs() / lr).collect(),
        new().map(|i| g[i]).collect(),
        v_before,
    )
}

#[test]
fn new_entries_get_an_epsilon_relative_to_the_old_entries_update_scale() {
    let (steps, grads, v) = first_step_with(NewUnitSteps::Cohort, 0.03);
    // eps_new = max(1e-8, 0.03 * mean sqrt(v / (1 - b2^200))) over the old entries.
    let c2 = 1.0 - 0.999f64.powi(200);
    let eps = 0.03 * v.iter().map(|v| (v / c2).sqrt()).sum::<f64>() / v.len() as f64;
    assert!(eps > 1e-6, "{eps}");
    for (s, g) in steps.iter().zip(&grads) {
        // The first step of a fresh cohort: lr * |g| / (|g| + eps_new).
        let want = g.abs() / (g.abs() + eps);
        assert!(
            (s - want).abs() < 1e-6 * want.max(1e-3),
            "step {s}, want {want}"
        );
        assert!(*s < 0.99, "smaller than the plain first step");
    }
}

#[test]
fn cohort_steps_give_new_weights_an_ordinary_first_adam_step() {
    for s in first_step_of_new_weights(NewUnitSteps::Cohort) {
        // m_hat = g, v_hat = g^2: the step is lr * |g| / (|g| + eps).
        assert!((0.99..=1.0).contains(&s), "first step was {s} x lr");
    }
}

#[test]
fn global_steps_reproduce_the_naive_padding_jump() {
    // With t = 201 kept, the first step is lr * (1 - b1) c1 / sqrt((1 - b2) c2).
    let t = 201;
    let c1 = 1.0 / (1.0 - 0.9f64.powi(t));
    let c2 = 1.0 / (1.0 - 0.999f64.powi(t));
    let expected = 0.1 * c1 / (0.001 * c2).sqrt();
    for s in first_step_of_new_weights(NewUnitSteps::Global) {
        assert!(
            (s - expected).abs() < 0.01 * expected,
            "step {s} x lr, expected {expected}"
        );
    }
    assert!(expected > 1.3);
}

#[test]
fn optimizer_refuses_a_model_it_does_not_fit_and_keeps_its_state() {
    let dev = Cpu::default();
    let mut rng = rng(9);
    let mut a = Mlp::<f64, Cpu>::new(&[4, 3, 2], Activation::Relu, &dev, &mut rng);
    let mut opt = Adam::<f64>::new(AdamConfig::default()).unwrap();
    let x = input::<f64>(&dev, 8, 4, &mut rng);
    let y = one_hot::<f64>(&dev, 8, 2, &mut rng);
    step(&mut a, &mut opt, &x, &y);
    let state = opt.state().clone();
    // A model that lost a tensor the state holds (layers.1.*).
    let shallower = Mlp::<f64, Cpu>::new(&[4, 3], Activation::Relu, &dev, &mut rng);
    let e = Optimizer::<f64, Cpu>::sync(&mut opt, &shallower).unwrap_err();
    assert!(
        matches!(&e, GrowError::StateMismatch(m) if m.contains("layers.1.weight")),
        "{e:?}"
    );
    // A model whose tensor shrank.
    let narrower = Mlp::<f64, Cpu>::new(&[4, 2, 2], Activation::Relu, &dev, &mut rng);
    let e = Optimizer::<f64, Cpu>::sync(&mut opt, &narrower).unwrap_err();
    assert!(
        matches!(&e, GrowError::StateMismatch(m) if m.contains("shrank")),
        "{e:?}"
    );
    assert_eq!(opt.state(), &state);
    // State is keyed by name: a model with the same tensors plus new ones (a new block) fits,
    // the new tensors getting fresh state.
    let deeper = Mlp::<f64, Cpu>::new(&[4, 3, 2, 2], Activation::Relu, &dev, &mut rng);
    Optimizer::<f64, Cpu>::check_sync(&opt, &deeper).unwrap();
    Optimizer::<f64, Cpu>::sync(&mut opt, &deeper).unwrap();
    let names: Vec<&str> = opt
        .state()
        .tensors
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "layers.0.weight",
            "layers.0.bias",
            "layers.1.weight",
            "layers.1.bias",
            "layers.2.weight",
            "layers.2.bias"
        ]
    );
    assert_eq!(opt.state().tensors[..4], state.tensors[..]);
    assert!(opt.state().tensors[4..]
        .iter()
        .all(|t| t.buffers.iter().flatten().all(|x| *x == 0.0)));
}

#[test]
fn invalid_hyper_parameters_are_typed_errors() {
    assert!(matches!(
        Adam::<f32>::new(AdamConfig {
            lr: f64::NAN,
            ..Default::default()
        }),
        Err(GrowError::InvalidHyper { name: "lr", .. })
    ));
    assert!(matches!(
        Adam::<f32>::new(AdamConfig {
            betas: [0.9, 1.0],
            ..Default::default()
        }),
        Err(GrowError::InvalidHyper { name: "betas", .. })
    ));
    assert!(matches!(
        Adam::<f32>::new(AdamConfig {
            eps: 0.0,
            ..Default::default()
        }),
        Err(GrowError::InvalidHyper { name: "eps", .. })
    ));
    assert!(matches!(
        Sgd::<f32>::new(SgdConfig {
            momentum: Some(Momentum::Classic(-0.1)),
            ..Default::default()
        }),
        Err(GrowError::InvalidHyper {
            name: "momentum",
            ..
        })
    ));
    assert!(matches!(
        Sgd::<f32>::new(SgdConfig {
            weight_decay: Some(WeightDecay::L2(-1.0)),
            ..Default::default()
        }),
        Err(GrowError::InvalidHyper {
            name: "weight_decay",
            ..
        })
    ));
}

#[test]
fn new_unit_lr_boosts_only_new_weights_and_only_for_its_steps() {
    use dfdx_grow::optim::NewUnitLr;
    let dev = Cpu::default();
    let run = |boost: Option<NewUnitLr>| {
        let mut rng = rng(10);
        let cfg = AdamConfig {
            lr: 1e-3,
            ..Default::default()
        };
        let mut opt = Adam::<f64>::new(cfg).unwrap();
        if let Some(b) = boost {
            opt = opt.with_new_unit_lr(b).unwrap();
        }
        let mut mlp = Mlp::<f64, Cpu>::new(&[4, 3, 2], Activation::Relu, &dev, &mut rng);
        let x = input::<f64>(&dev, 32, 4, &mut rng);
        let y = one_hot::<f64>(&dev, 32, 2, &mut rng);
        for _ in 0..20 {
            step(&mut mlp, &mut opt, &x, &y);
        }
        mlp.expand_hidden(0, 4, &Init::ZerosOut, &mut rng).unwrap();
        let mut snaps = vec![snapshot(&mlp)];
        for _ in 0..3 {
            step(&mut mlp, &mut opt, &x, &y);
            snaps.push(snapshot(&mlp));
        }
        snaps
    };
    let plain = run(None);
    let boosted = run(Some(NewUnitLr {
        scale: 3.0,
        steps: 2,
    }));
    // Fan-out columns 3..7 of the output layer (tensor 2, 2 x 7) are new; columns 0..3 old.
    let col = |s: &Vec<Vec<f64>>, r: usize, c: usize| s[2][r * 7 + c];
    for r in 0..2 {
        for c in 3..7 {
            let d_plain = col(&plain[1], r, c) - col(&plain[0], r, c);
            let d_boost = col(&boosted[1], r, c) - col(&boosted[0], r, c);
            assert!(
                (d_boost / d_plain - 3.0).abs() < 1e-9,
                "first step {d_boost} vs {d_plain}"
            );
        }
        // The old weights' first step after growth is untouched by the boost.
        for c in 0..3 {
            assert_eq!(col(&boosted[1], r, c), col(&plain[1], r, c));
        }
    }
    // The window: with steps = 0 the boost never applies; steps = 1 and 2 agree after the
    // first update and part after the second.
    assert_eq!(
        run(Some(NewUnitLr {
            scale: 3.0,
            steps: 0
        })),
        plain
    );
    let one = run(Some(NewUnitLr {
        scale: 3.0,
        steps: 1,
    }));
    assert_eq!(one[1], boosted[1]);
    assert_ne!(one[2], boosted[2]);
    assert!(matches!(
        Adam::<f64>::new(AdamConfig::default())
            .unwrap()
            .with_new_unit_lr(NewUnitLr {
                scale: 0.0,
                steps: 1
            }),
        Err(GrowError::InvalidHyper {
            name: "new_unit_lr.scale",
            ..
        })
    ));
}

#[test]
fn renewed_rows_and_columns_get_zero_state_and_a_birth_of_their_own() {
    use dfdx_grow::optim::{Cohort, TensorState};
    let c = |start, born, eps| Cohort { start, born, eps };
    // A 4 x 5 tensor grown at step 3 by a row and two columns.
    let mut t = TensorState::<f64>::new("w", (3, 3), 2, 0);
    t.buffers = vec![vec![1.0; 9]; 2];
    t.resize((4, 5), 3, Some(0.5));
    for b in &mut t.buffers {
        b.iter_mut().for_each(|x| *x += 2.0);
    }
    t.renew(&[1, 3], &[4], 9, Some(0.25));
    assert_eq!(
        t.rows,
        vec![
            c(0, 0, None),
            c(1, 9, Some(0.25)),
            c(2, 0, None),
            c(3, 9, Some(0.25))
        ]
    );
    assert_eq!(
        t.cols,
        vec![c(0, 0, None), c(3, 3, Some(0.5)), c(4, 9, Some(0.25))]
    );
    for b in &t.buffers {
        for (i, &x) in b.iter().enumerate() {
            let (r, col) = (i / 5, i % 5);
            let renewed = r == 1 || r == 3 || col == 4;
            assert_eq!(x == 0.0, renewed, "entry ({r}, {col})");
        }
    }
    t.validate(2, 9).unwrap();
    // Each entry's birth is the later of its row's and its column's.
    let mut births = [0; 20];
    t.for_each_block(|born, _, ranges| {
        for r in ranges {
            births[r].iter_mut().for_each(|b| *b = born);
        }
    });
    assert_eq!(&births[5..10], &[9; 5]);
    assert_eq!(&births[10..15], &[0, 0, 0, 3, 9]);
    // Renewing nothing changes nothing.
    let before = t.clone();
    t.renew(&[], &[], 10, None);
    assert_eq!(t, before);
}
