//! Policies that cannot work with the model they watch, and RON as users write it (issue 10,
//! items 13 and 15): a site the model lacks, or gradient norms the metrics lack, are errors at
//! the first observation that name the file, the field and the model's sites; both spellings
//! of an option (`256` and `Some(256)`) read alike.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use dfdx_grow::audit::AuditLog;
use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::optim::{Adam, AdamConfig};
use dfdx_grow::policy::{load_policy, load_spec, Metrics, PolicyError, PolicySpec};
use dfdx_grow::{Activation, ControllerError, GrowthController, Mlp, Params};

fn temp_file(name: &str, text: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "dfdx-grow-policy-faults-{}-{name}",
        std::process::id()
    ));
    std::fs::write(&p, text).unwrap();
    p
}

/// A 4-8-2 model, one Adam step taken, with the gradients of that step.
fn model() -> (Mlp<f32, Cpu>, Adam<f32>, Gradients<f32, Cpu>) {
    let dev = Cpu::default();
    let mut r = rng(1);
    let mut mlp = Mlp::<f32, Cpu>::new(&[4, 8, 2], Activation::Relu, &dev, &mut r);
    let mut opt = Adam::<f32>::new(AdamConfig::default()).unwrap();
    let x = input::<f32>(&dev, 8, 4, &mut r);
    let y = one_hot::<f32>(&dev, 8, 2, &mut r);
    let (_, grads) = step(&mut mlp, &mut opt, &x, &y);
    (mlp, opt, grads)
}

/// Policies that name a site a 4-8-2 MLP lacks, and the field each error must name.
const MISSING_SITE: &[(&str, &str)] = &[
    (
        "Schedule(events: [(at: Step(1000), target: Layer(3), size: Fixed(4))])",
        "Schedule.events[0].target",
    ),
    (
        "Schedule(events: [(at: Step(1000), target: Site(\"hidden.9\"), size: Fixed(4))])",
        "Schedule.events[0].target",
    ),
    (
        "Plateau(monitor: Val, patience: 3, target: Layer(1), size: Fixed(4))",
        "Plateau.target",
    ),
    (
        "GradNorm(rules: [(layer: 0, cross: Below(0.1)), (site: \"head\", cross: Below(0.1))], \
         sustain: 2, size: Fixed(4))",
        "GradNorm.rules[1]",
    ),
    (
        "Limits(max_events: 2, policy: AnyOf([
            Schedule(events: [(at: Step(5), target: Layer(0), size: Fixed(4))]),
            Sequence([(policy: Plateau(monitor: Train, patience: 3, target: Layer(2), size: Fixed(4)), times: 1)]),
        ]))",
        "Limits.policy.AnyOf[1].Sequence[0].policy.Plateau.target",
    ),
];

#[test]
fn a_policy_file_naming_a_missing_site_fails_the_first_observation_naming_file_field_and_sites() {
    for (i, (ron, field)) in MISSING_SITE.iter().enumerate() {
        let file = temp_file(&format!("missing-{i}.ron"), ron);
        let log = file.with_extension("jsonl");
        let _ = std::fs::remove_file(&log);
        let (mut mlp, mut opt, mut grads) = model();
        let mut ctl = GrowthController::new(load_policy(&file).unwrap(), 0)
            .with_audit(AuditLog::open(&log).unwrap());
        let before = (snapshot(&mlp), opt.state().clone(), ctl.state());
        // The first observation, long before any event is due; and every one after it.
        for s in [1, 2] {
            let m = Metrics::of(&mlp)
                .step(s)
                .train_loss(1.0)
                .val_loss(Some(1.0))
                .grads(&mut grads)
                .build()
                .unwrap();
            let e = ctl
                .observe(&m, &mut mlp, &mut opt, None)
                .expect_err(&format!("{ron} at step {s}"));
            let ControllerError::Policy(PolicyError::Model {
                origin,
                path,
                reason,
            }) = &e
            else {
                panic!("{ron}: {e:?}")
            };
            assert_eq!(origin, &file.display().to_string(), "{ron}");
            assert_eq!(path, field, "{ron}");
            assert!(reason.contains("hidden.0"), "{ron}: {reason}");
            let shown = e.to_string();
            assert!(
                shown.contains(&file.display().to_string()) && shown.contains(field),
                "{shown}"
            );
        }
        assert_eq!(
            (snapshot(&mlp), opt.state().clone(), ctl.state()),
            before,
            "{ron}"
        );
        drop(ctl);
        assert!(AuditLog::read(&log).unwrap().is_empty());
        // The same check, before any training, from the file alone.
        let e = load_policy(&file)
            .unwrap()
            .check(&Metrics::of(&mlp).grads(&mut grads).build().unwrap())
            .unwrap_err();
        assert!(e.to_string().contains(&file.display().to_string()), "{e}");
        let e = load_spec(&file)
            .unwrap()
            .validate_for(&Metrics::of(&mlp).grads(&mut grads).build().unwrap())
            .unwrap_err();
        assert!(e.to_string().contains(field), "{e}");
        let _ = std::fs::remove_file(&file);
        let _ = std::fs::remove_file(&log);
    }
}

#[test]
fn a_gradnorm_policy_observed_without_gradients_is_an_error_naming_the_file() {
    let file = temp_file(
        "gradnorm.ron",
        "AnyOf([GradNorm(rules: [(layer: 0, cross: Below(0.1))], sustain: 2, size: Fixed(4))])",
    );
    let (mut mlp, mut opt, mut grads) = model();
    let mut ctl = GrowthController::new(load_policy(&file).unwrap(), 0);
    let m = Metrics::of(&mlp).step(1).train_loss(1.0).build().unwrap();
    let e = ctl
        .observe(&m, &mut mlp, &mut opt, None)
        .expect_err("no gradients");
    let shown = e.to_string();
    assert!(
        shown.contains(&file.display().to_string())
            && shown.contains("AnyOf[0].GradNorm")
            && shown.contains("gradient norms"),
        "{shown}"
    );
    // With gradients the same controller runs.
    let m = Metrics::of(&mlp)
        .step(1)
        .train_loss(1.0)
        .grads(&mut grads)
        .build()
        .unwrap();
    ctl.observe(&m, &mut mlp, &mut opt, None).unwrap();
    let _ = std::fs::remove_file(&file);
}

fn policy_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "ron"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_shipped_policy_reads_alike_in_standard_ron_with_some_and_double_parentheses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let files = [
        policy_files(&root),
        policy_files(&root.join("fashion-mnist")),
    ]
    .concat();
    assert_eq!(files.len(), 8);
    for file in files {
        let spec = load_spec(&file).unwrap();
        // Standard RON, no extension: `Some(..)` everywhere, newtype variants in `((..))`.
        let standard = ron::ser::to_string(&spec).unwrap();
        assert!(standard.contains("Some("), "{}: {standard}", file.display());
        let back = PolicySpec::from_ron(&standard, "standard").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, spec, "{}", file.display());
    }
}

#[test]
fn both_spellings_of_every_option_read_alike() {
    let pairs = [
        ("max_width: 256", "max_width: Some(256)"),
        ("max_flops: 1e12", "max_flops: Some(1e12)"),
        (
            "max_params: 100000, max_events: 3",
            "max_params: Some(100000), max_events: Some(3)",
        ),
    ];
    for (implicit, standard) in pairs {
        let text = |opts: &str| {
            format!(
                "Limits({opts}, policy: Schedule(events: [(at: Step(5), target: Layer(0), size: Fixed(4))]))"
            )
        };
        let a = PolicySpec::from_ron(&text(implicit), "implicit").unwrap();
        let b = PolicySpec::from_ron(&text(standard), "standard").unwrap();
        assert_eq!(a, b, "{standard}");
    }
    let plateau = |opts: &str| {
        format!("Plateau(monitor: Val, patience: 3, {opts}, target: Layer(0), size: Fixed(4))")
    };
    let implicit = plateau("ema: 0.5, test: (window: 5, confidence: 0.9)");
    let standard = plateau("ema: Some(0.5), test: Some((window: 5, confidence: 0.9))");
    let one_paren = plateau("ema: Some(0.5), test: Some(window: 5, confidence: 0.9)");
    let a = PolicySpec::from_ron(&implicit, "implicit").unwrap();
    assert_eq!(PolicySpec::from_ron(&standard, "standard").unwrap(), a);
    assert_eq!(PolicySpec::from_ron(&one_paren, "one paren").unwrap(), a);
    let gradnorm = |rule: &str| {
        format!("GradNorm(rules: [({rule}, cross: Below(0.1))], sustain: 2, size: Fixed(4))")
    };
    assert_eq!(
        PolicySpec::from_ron(&gradnorm("layer: 0"), "a").unwrap(),
        PolicySpec::from_ron(&gradnorm("layer: Some(0)"), "b").unwrap()
    );
    assert_eq!(
        PolicySpec::from_ron(&gradnorm("site: \"hidden.0\""), "a").unwrap(),
        PolicySpec::from_ron(&gradnorm("site: Some(\"hidden.0\")"), "b").unwrap()
    );
    // `None` in either form, and an error in either form still points at the file's text.
    assert!(PolicySpec::from_ron(&plateau("ema: None, test: None"), "none").is_ok());
    let e = PolicySpec::from_ron(&plateau("ema: Some(0.5"), "broken.ron").unwrap_err();
    assert!(matches!(e, PolicyError::Syntax { .. }), "{e:?}");
    assert!(e.to_string().starts_with("broken.ron:1:"), "{e}");
}

#[test]
fn the_model_the_metrics_describe_is_the_one_checked() {
    // A policy fine for two hidden layers is refused by a model with one, and accepted by a
    // model with two.
    let file = temp_file(
        "two.ron",
        "Schedule(events: [(at: Step(5), target: Layer(1), size: Fixed(4))])",
    );
    let dev = Cpu::default();
    let two = Mlp::<f32, Cpu>::new(&[4, 8, 8, 2], Activation::Relu, &dev, &mut rng(2));
    let (one, _, _) = model();
    let policy = load_policy(&file).unwrap();
    assert!(policy.check(&Metrics::of(&two).build().unwrap()).is_ok());
    assert!(policy.check(&Metrics::of(&one).build().unwrap()).is_err());
    assert_eq!(one.num_params(), 4 * 8 + 8 + 8 * 2 + 2);
    let _ = std::fs::remove_file(&file);
}

#[test]
fn a_site_a_depth_growth_will_make_is_not_an_error_before_it_exists() {
    let dev = Cpu::default();
    let net =
        dfdx_grow::ResMlp::<f32, Cpu>::new(4, 6, &[5], 2, Activation::Relu, &dev, &mut rng(3))
            .unwrap();
    let m = Metrics::of(&net).build().unwrap();
    let deepens = "Schedule(events: [
        (at: Step(5), grow: Depth(after: \"blocks.0\", hidden: 4)),
        (at: Step(9), target: Site(\"blocks.1.hidden\"), size: Fixed(4)),
    ])";
    let file = temp_file("deepens.ron", deepens);
    load_policy(&file).unwrap().check(&m).unwrap();
    load_spec(&file).unwrap().validate_for(&m).unwrap();
    // Without the depth growth, the same site is an error.
    let widens_only =
        "Schedule(events: [(at: Step(9), target: Site(\"blocks.1.hidden\"), size: Fixed(4))])";
    std::fs::write(&file, widens_only).unwrap();
    let e = load_policy(&file).unwrap().check(&m).unwrap_err();
    assert!(e.to_string().contains("blocks.0.hidden"), "{e}");
    let _ = std::fs::remove_file(&file);
}
