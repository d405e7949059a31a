//! The residual MLP: width growth of every block and depth growth are exact, atomic and
//! learnable; a deepened model checkpoints and restores by name.

use dfdx_grow::checkpoint::Checkpoint;
use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::optim::{Adam, AdamConfig, Optimizer};
use dfdx_grow::rand::{rngs::StdRng, Rng, SeedableRng};
use dfdx_grow::{grow_site, Activation, GrowError, Growable, Init, Params, Real, ResMlp};

fn input<E: Real>(
    dev: &Cpu,
    batch: usize,
    width: usize,
    rng: &mut StdRng,
) -> Tensor<(usize, usize), E, Cpu>
where
    Cpu: Device<E>,
{
    let v = (0..batch * width)
        .map(|_| E::from_f64(rng.gen_range(-2.0..2.0)).unwrap())
        .collect();
    dev.tensor_from_vec(v, (batch, width))
}

fn random_net<E: Real>(dev: &Cpu, rng: &mut StdRng) -> ResMlp<E, Cpu>
where
    Cpu: Device<E>,
{
    let blocks: Vec<usize> = (0..rng.gen_range(1..4))
        .map(|_| rng.gen_range(1..40))
        .collect();
    let act = Activation::ALL[rng.gen_range(0..Activation::ALL.len())];
    let (i, w, o) = (
        rng.gen_range(1..20),
        rng.gen_range(1..24),
        rng.gen_range(1..6),
    );
    ResMlp::new(i, w, &blocks, o, act, dev, rng).unwrap()
}

/// The largest output change after `grow`, relative to the output's scale.
fn change<E: Real>(
    net: &mut ResMlp<E, Cpu>,
    x: &Tensor<(usize, usize), E, Cpu>,
    grow: impl FnOnce(&mut ResMlp<E, Cpu>),
) -> f64
where
    Cpu: Device<E>,
{
    let before = net.forward(x.clone()).as_vec();
    grow(net);
    let after = net.forward(x.clone()).as_vec();
    let f = |v: E| v.to_f64().unwrap();
    let scale = before.iter().map(|v| f(*v).abs()).fold(1e-30, f64::max);
    before
        .iter()
        .zip(&after)
        .map(|(b, a)| (f(*b) - f(*a)).abs())
        .fold(0.0, f64::max)
        / scale
}

fn exactness<E: Real>(tol: f64)
where
    Cpu: Device<E>,
{
    let dev = Cpu::default();
    let mut rng = StdRng::seed_from_u64(11);
    for case in 0..60 {
        let mut net = random_net::<E>(&dev, &mut rng);
        let x = input::<E>(&dev, rng.gen_range(1..16), net.spec().input, &mut rng);
        let sites = net.sites();
        let site = sites[rng.gen_range(0..sites.len())].name.clone();
        let k = 2 * rng.gen_range(1..20);
        for init in [Init::ZerosOut, Init::MirrorPairs, Init::CopyHalve] {
            let mut grown = net.clone();
            let d = change(&mut grown, &x, |n| {
                grow_site(n, &site, k, &init, &mut rng).unwrap();
            });
            assert!(
                d <= tol,
                "case {case}: {} on {site} changed the output by {d}",
                init.name()
            );
        }
        let blocks = net.blocks();
        let after = blocks[rng.gen_range(0..blocks.len())].clone();
        let hidden = rng.gen_range(1..30);
        let d = change(&mut net, &x, |n| {
            n.deepen(&after, hidden, &mut rng).unwrap();
        });
        assert!(
            d <= tol,
            "case {case}: a block after {after} changed the output by {d}"
        );
    }
}

#[test]
fn width_and_depth_growth_preserve_the_function_in_f64() {
    exactness::<f64>(1e-12);
}

#[test]
fn width_and_depth_growth_preserve_the_function_in_f32() {
    exactness::<f32>(1e-5);
}

#[test]
fn a_noisy_init_does_change_the_function() {
    // The check above can fail: a non-exact init moves the output.
    let (dev, mut rng) = (Cpu::default(), StdRng::seed_from_u64(3));
    let mut net =
        ResMlp::<f64, Cpu>::new(6, 8, &[10], 3, Activation::Tanh, &dev, &mut rng).unwrap();
    let x = input::<f64>(&dev, 8, 6, &mut rng);
    let d = change(&mut net, &x, |n| {
        grow_site(
            n,
            "blocks.0.hidden",
            4,
            &Init::CopyHalveNoise { std: 0.1 },
            &mut rng,
        )
        .unwrap();
    });
    assert!(d > 1e-6, "{d}");
}

#[test]
fn blocks_keep_their_names_when_others_are_inserted() {
    let (dev, mut rng) = (Cpu::default(), StdRng::seed_from_u64(1));
    let mut net =
        ResMlp::<f32, Cpu>::new(4, 8, &[16, 16], 2, Activation::Relu, &dev, &mut rng).unwrap();
    assert_eq!(net.deepen("input", 4, &mut rng).unwrap(), "blocks.2");
    assert_eq!(net.deepen("blocks.2", 4, &mut rng).unwrap(), "blocks.3");
    assert_eq!(
        net.blocks(),
        ["blocks.2", "blocks.3", "blocks.0", "blocks.1"]
    );
    let names: Vec<String> = net.param_dims().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names[0], "input.weight");
    assert_eq!(names[2], "blocks.2.fc1.weight");
    assert_eq!(names.last().unwrap(), "head.bias");
    let e = net.deepen("blocks.9", 4, &mut rng).unwrap_err();
    assert!(
        matches!(e, GrowError::Depth { .. }) && e.to_string().contains("blocks.0"),
        "{e}"
    );
    assert!(net.deepen("blocks.0", 0, &mut rng).is_err());
    assert_eq!(net.blocks().len(), 4, "a refused insertion changes nothing");
}

#[test]
fn growth_is_atomic_on_a_refused_site() {
    let (dev, mut rng) = (Cpu::default(), StdRng::seed_from_u64(2));
    let mut net = ResMlp::<f32, Cpu>::new(4, 8, &[6], 2, Activation::Relu, &dev, &mut rng)
        .unwrap()
        .with_max_width(10);
    let before = Checkpoint::of(&net);
    for (site, k, init) in [
        ("blocks.0.hidden", 6, Init::ZerosOut),
        ("blocks.7.hidden", 2, Init::ZerosOut),
        ("blocks.0.hidden", 3, Init::MirrorPairs),
    ] {
        assert!(grow_site(&mut net, site, k, &init, &mut rng).is_err());
        assert_eq!(Checkpoint::of(&net), before, "{site} {k}");
    }
}

/// One Adam step of cross-entropy on (x, y); returns the gradients.
fn step(
    net: &mut ResMlp<f64, Cpu>,
    opt: &mut Adam<f64>,
    x: &Tensor<(usize, usize), f64, Cpu>,
    y: &Tensor<(usize, usize), f64, Cpu>,
) -> Gradients<f64, Cpu> {
    let grads = net.try_alloc_grads().unwrap();
    let loss = cross_entropy_with_logits_loss(net.forward(x.clone().traced(grads)), y.clone());
    let mut grads = loss.backward();
    opt.update(net, &mut grads).unwrap();
    grads
}

#[test]
fn a_new_block_learns_its_output_first_then_its_input() {
    let (dev, mut rng) = (Cpu::default(), StdRng::seed_from_u64(5));
    let mut net =
        ResMlp::<f64, Cpu>::new(6, 8, &[12], 3, Activation::Relu, &dev, &mut rng).unwrap();
    let mut opt = Adam::<f64>::new(AdamConfig::default()).unwrap();
    let x = input::<f64>(&dev, 32, 6, &mut rng);
    let y: Tensor<(usize, usize), f64, Cpu> = dev.tensor_from_vec(
        (0..96)
            .map(|i| f64::from(u8::from(i % 3 == (i / 3) % 3)))
            .collect(),
        (32, 3),
    );
    for _ in 0..5 {
        step(&mut net, &mut opt, &x, &y);
    }
    let name = net.deepen("blocks.0", 10, &mut rng).unwrap();
    let values = |net: &ResMlp<f64, Cpu>, which: &str| {
        let mut v = Vec::new();
        net.visit(&mut |n, p| {
            if n == which {
                v = vec![0.0; p.len()];
                p.copy_into(&mut v);
            }
        });
        v
    };
    let (fc1, fc2) = (format!("{name}.fc1.weight"), format!("{name}.fc2.weight"));
    assert!(values(&net, &fc2).iter().all(|&w| w == 0.0));
    let fc1_before = values(&net, &fc1);
    let mut grads = step(&mut net, &mut opt, &x, &y);
    let norms = net.grad_norms(&mut grads).unwrap();
    let norm = |n: &str| norms.iter().find(|(m, _)| m == n).unwrap().1;
    assert!(
        norm(&fc2) > 0.0,
        "the zero projection gets a gradient at once"
    );
    assert_eq!(
        norm(&fc1),
        0.0,
        "the input side waits for the projection to move"
    );
    assert!(values(&net, &fc2).iter().any(|&w| w != 0.0));
    assert_eq!(values(&net, &fc1), fc1_before);
    step(&mut net, &mut opt, &x, &y);
    assert_ne!(
        values(&net, &fc1),
        fc1_before,
        "then the input side moves too"
    );
    // The optimizer gave the new tensors fresh state of their own.
    let st = opt.state().tensors.iter().find(|t| t.name == fc1).unwrap();
    assert_eq!(st.rows[0].born, 5);
}

#[test]
fn a_deepened_model_restores_into_a_fresh_one_by_name() {
    let (dev, mut rng) = (Cpu::default(), StdRng::seed_from_u64(8));
    let fresh = |rng: &mut StdRng| {
        ResMlp::<f32, Cpu>::new(5, 6, &[7, 7], 2, Activation::Gelu, &dev, rng).unwrap()
    };
    let mut net = fresh(&mut rng);
    net.deepen("blocks.1", 3, &mut rng).unwrap(); // blocks.2 last
    net.deepen("input", 4, &mut rng).unwrap(); // blocks.3 first
    net.deepen("blocks.3", 5, &mut rng).unwrap(); // blocks.4 second
    grow_site(&mut net, "blocks.0.hidden", 9, &Init::ZerosOut, &mut rng).unwrap();
    grow_site(&mut net, "blocks.3.hidden", 2, &Init::ZerosOut, &mut rng).unwrap();
    let ckpt = Checkpoint::of(&net);
    let mut other = fresh(&mut StdRng::seed_from_u64(99));
    ckpt.restore(&mut other).unwrap();
    assert_eq!(other.blocks(), net.blocks());
    assert_eq!(Checkpoint::of(&other), ckpt);
    let x = input::<f32>(&dev, 4, 5, &mut rng);
    assert_eq!(other.forward(x.clone()).as_vec(), net.forward(x).as_vec());

    // A model of another shape is refused, naming the tensor, and left as it was.
    let mut wrong =
        ResMlp::<f32, Cpu>::new(5, 9, &[7, 7], 2, Activation::Gelu, &dev, &mut rng).unwrap();
    let before = Checkpoint::of(&wrong);
    let e = ckpt.restore(&mut wrong).unwrap_err().to_string();
    assert!(e.contains("input.weight"), "{e}");
    assert_eq!(Checkpoint::of(&wrong), before);
}

#[test]
fn the_controller_widens_and_deepens_a_resmlp_from_a_policy_file() {
    use dfdx_grow::audit::{AuditLog, AuditRecord};
    use dfdx_grow::policy::{policy_from_str, Metrics};
    use dfdx_grow::{GrowthController, Loss, Outcome, Probe};

    let (dev, mut rng) = (Cpu::default(), StdRng::seed_from_u64(4));
    let mut net =
        ResMlp::<f64, Cpu>::new(6, 8, &[8, 8], 3, Activation::Relu, &dev, &mut rng).unwrap();
    let mut opt = Adam::<f64>::new(AdamConfig::default()).unwrap();
    let x = input::<f64>(&dev, 32, 6, &mut rng);
    let y: Tensor<(usize, usize), f64, Cpu> = dev.tensor_from_vec(
        (0..96)
            .map(|i| f64::from(u8::from(i % 3 == (i / 3) % 3)))
            .collect(),
        (32, 3),
    );
    let policy = policy_from_str(
        r#"Schedule(events: [
            (at: Step(3), target: Site("blocks.1.hidden"), size: Fixed(8)),
            (at: Step(6), grow: Depth(after: "blocks.0", hidden: 16)),
            (at: Step(9), target: Site("blocks.2.hidden"), size: Fraction(0.5)),
        ])"#,
        "resmlp.ron",
    )
    .unwrap();
    let path = std::env::temp_dir().join(format!("dfdx_grow_resmlp_{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut ctl = GrowthController::new(policy, 7).with_audit(AuditLog::open(&path).unwrap());
    let probe = Probe {
        input: x.clone(),
        target: Some((y.clone(), Loss::CrossEntropy)),
    };
    for s in 1..=12 {
        step(&mut net, &mut opt, &x, &y);
        let m = Metrics::of(&net).step(s).train_loss(1.0).build().unwrap();
        let out = ctl.observe(&m, &mut net, &mut opt, Some(&probe)).unwrap();
        if [3, 6, 9].contains(&s) {
            assert!(matches!(out, Outcome::Grown(_)), "step {s}: {out:?}");
        }
    }
    assert_eq!(net.blocks(), ["blocks.0", "blocks.2", "blocks.1"]);
    let widths: Vec<(String, usize)> = net.sites().into_iter().map(|s| (s.name, s.width)).collect();
    assert_eq!(
        widths,
        [
            ("blocks.0.hidden".to_string(), 8),
            ("blocks.2.hidden".into(), 24),
            ("blocks.1.hidden".into(), 16)
        ]
    );
    let records = AuditLog::read(&path).unwrap();
    let grown: Vec<(String, Option<String>)> = records
        .iter()
        .filter_map(|r| match r {
            AuditRecord::Growth(g) => Some((g.site.clone(), g.after.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        grown,
        [
            ("blocks.1.hidden".to_string(), None),
            ("blocks.2".into(), Some("blocks.0".into())),
            ("blocks.2.hidden".into(), None),
        ]
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_depth_growth_is_labelled_as_what_deepen_does_and_is_not_health_checked() {
    use dfdx_grow::audit::{AuditLog, AuditRecord};
    use dfdx_grow::policy::{policy_from_str, Metrics};
    use dfdx_grow::{GrowthController, HealthAction, HealthCheck, Loss, Probe};
    let dev = Cpu::default();
    let mut rng = StdRng::seed_from_u64(0);
    let mut net = ResMlp::<f64, Cpu>::new(4, 6, &[5], 3, Activation::Relu, &dev, &mut rng).unwrap();
    let mut opt = Adam::<f64>::new(AdamConfig::default()).unwrap();
    let log = std::env::temp_dir().join(format!(
        "dfdx-grow-resmlp-depth-{}.jsonl",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&log);
    let policy = policy_from_str(
        "Schedule(events: [
            (at: Step(1), grow: Depth(after: \"blocks.0\", hidden: 4)),
            (at: Step(2), target: Site(\"blocks.0.hidden\"), size: Fixed(2)),
        ])",
        "inline",
    )
    .unwrap();
    let mut ctl = GrowthController::new(policy, 1)
        .with_audit(AuditLog::open(&log).unwrap())
        .with_health(HealthCheck {
            after_steps: 1,
            dead_share: 0.5,
            action: HealthAction::Report,
        })
        .unwrap();
    let y: Vec<f64> = (0..8 * 3)
        .map(|i| f64::from(u8::from(i % 3 == (i / 3) % 3)))
        .collect();
    let probe = Probe {
        input: input::<f64>(&dev, 8, 4, &mut rng),
        target: Some((dev.tensor_from_vec(y, (8, 3)), Loss::CrossEntropy)),
    };
    for s in 1..=4 {
        let m = Metrics::of(&net).step(s).build().unwrap();
        ctl.observe(&m, &mut net, &mut opt, Some(&probe)).unwrap();
    }
    let records = AuditLog::read(&log).unwrap();
    let depth = ctl.events().iter().find(|e| e.after.is_some()).unwrap();
    // ResMlp::deepen draws the block's first layer like a fresh one, its output layer zero.
    assert_eq!(
        (depth.site.as_str(), &depth.init),
        ("blocks.1", &Init::ZerosOutFresh)
    );
    let health: Vec<&str> = records
        .iter()
        .filter_map(|r| match r {
            AuditRecord::Health(h) => Some(h.site.as_str()),
            _ => None,
        })
        .collect();
    // Only the width growth is checked, and it is measured.
    assert_eq!(health, vec!["blocks.0.hidden"]);
    assert!(records
        .iter()
        .all(|r| !matches!(r, AuditRecord::Health(h) if h.note.is_some())));
    let _ = std::fs::remove_file(&log);
}
