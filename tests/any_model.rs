//! The controller grows a model of the user's own: two heads reading one hidden layer, whose
//! producer is a layer type of the user's own implementing `Expandable`.

use dfdx_grow::audit::{AuditLog, AuditRecord};
use dfdx_grow::checkpoint::Checkpoint;
use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::optim::{Adam, AdamConfig, Optimizer};
use dfdx_grow::policy::{load_policy, Metrics, PolicyError};
use dfdx_grow::rand::{rngs::StdRng, Rng, SeedableRng};
use dfdx_grow::{
    grow_site, scoped, scoped_mut, ControllerError, Expandable, GrowError, Growable,
    GrowthController, Init, Linear, Matrix, Outcome, ParamMut, ParamRef, Params, Real, Site,
    SiteMut,
};

#[path = "../examples/custom_model/model.rs"]
mod model;
use model::TwoHeads;

fn data<E: Real>(n: usize, rng: &mut StdRng) -> (Matrix<E, Cpu>, Matrix<E, Cpu>, Matrix<E, Cpu>)
where
    Cpu: Device<E>,
{
    let dev = Cpu::default();
    let x: Vec<f64> = (0..n * 6).map(|_| rng.gen_range(0.0..1.0)).collect();
    let mut y = vec![E::zero(); n * 3];
    let mut s = vec![E::zero(); n];
    for r in 0..n {
        let row = &x[r * 6..(r + 1) * 6];
        let c = usize::from(row[0] + row[1] > 1.0) + usize::from(row[2] * row[3] > 0.3);
        y[r * 3 + c] = E::one();
        s[r] = E::from_f64(row[4] * row[5]).unwrap();
    }
    let cast = |v: Vec<f64>| v.into_iter().map(|x| E::from_f64(x).unwrap()).collect();
    (
        dev.tensor_from_vec(cast(x), (n, 6)),
        dev.tensor_from_vec(y, (n, 3)),
        dev.tensor_from_vec(s, (n, 1)),
    )
}

fn loss<E: Real>(m: &TwoHeads<E>, x: &Matrix<E, Cpu>, y: &Matrix<E, Cpu>, s: &Matrix<E, Cpu>) -> f64
where
    Cpu: Device<E>,
{
    let (c, r) = m.forward(x.clone());
    let l = cross_entropy_with_logits_loss(c, y.clone()) + mse_loss(r, s.clone());
    l.as_vec()[0].to_f64().unwrap()
}

fn exact_growth<E: Real>(tol: f64)
where
    Cpu: Device<E>,
{
    let mut rng = StdRng::seed_from_u64(21);
    for case in 0..40 {
        let mut m = TwoHeads::<E>::new(6, rng.gen_range(1..30), 3, 1, &mut rng);
        let (x, _, _) = data::<E>(rng.gen_range(1..20), &mut rng);
        let (c0, s0) = m.forward(x.clone());
        let k = 2 * rng.gen_range(1..10);
        let init = [Init::ZerosOut, Init::MirrorPairs, Init::CopyHalve][case % 3].clone();
        grow_site(&mut m, "trunk", k, &init, &mut rng).unwrap();
        let (c1, s1) = m.forward(x);
        let f = |v: E| v.to_f64().unwrap();
        for (a, b) in [(c0, c1), (s0, s1)] {
            let (a, b) = (a.as_vec(), b.as_vec());
            let scale = a.iter().map(|v| f(*v).abs()).fold(1e-30, f64::max);
            let d = a
                .iter()
                .zip(&b)
                .map(|(p, q)| (f(*p) - f(*q)).abs())
                .fold(0.0, f64::max);
            assert!(d / scale <= tol, "case {case} {}: {d}", init.name());
        }
        assert_eq!(m.classes.weight.shape().1, m.trunk.out_width());
        assert_eq!(m.score.weight.shape().1, m.trunk.out_width());
    }
}

#[test]
fn growing_the_shared_layer_preserves_both_heads_in_f64() {
    exact_growth::<f64>(1e-12);
}

#[test]
fn growing_the_shared_layer_preserves_both_heads_in_f32() {
    exact_growth::<f32>(1e-5);
}

#[test]
fn a_site_counts_every_consumers_fan_out() {
    let m = TwoHeads::<f32>::new(6, 8, 3, 1, &mut StdRng::seed_from_u64(0));
    // fan-in 6, no bias of its own but the site still counts one slot (the gain), 3 + 1 out.
    assert_eq!(m.sites()[0].params_per_unit, 6 + 1 + 3 + 1);
    let mut g = m.clone();
    grow_site(
        &mut g,
        "trunk",
        4,
        &Init::ZerosOut,
        &mut StdRng::seed_from_u64(1),
    )
    .unwrap();
    assert_eq!(g.num_params() - m.num_params(), 4 * (6 + 1 + 3 + 1));
}

#[test]
fn a_refused_growth_leaves_the_user_model_as_it_was() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut m = TwoHeads::<f64>::new(6, 60, 3, 1, &mut rng);
    let before = Checkpoint::of(&m);
    let e = grow_site(&mut m, "trunk", 8, &Init::ZerosOut, &mut rng).unwrap_err();
    assert!(matches!(e, GrowError::WidthCap { .. }), "{e}");
    let e = grow_site(&mut m, "head", 2, &Init::ZerosOut, &mut rng).unwrap_err();
    assert!(e.to_string().contains("\"trunk\""), "lists the sites: {e}");
    assert_eq!(Checkpoint::of(&m), before);
}

fn policy_file(name: &str, text: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("dfdx_grow_any_{}_{name}.ron", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn the_controller_grows_the_user_model_from_a_policy_file() {
    let mut rng = StdRng::seed_from_u64(5);
    let mut m = TwoHeads::<f32>::new(6, 8, 3, 1, &mut rng);
    let (x, y, s) = data::<f32>(128, &mut rng);
    let mut opt = Adam::<f32>::new(AdamConfig {
        lr: 1e-2,
        ..AdamConfig::default()
    })
    .unwrap();
    let file = policy_file(
        "plateau",
        "// grow the shared layer whenever the training loss stalls
        Limits(max_width: 32, policy: Plateau(
            monitor: Train, patience: 3, threshold: Rel(0.05), cooldown: 10,
            target: Site(\"trunk\"), size: Fraction(1.0), init: ZerosOut,
        ))",
    );
    let log = std::env::temp_dir().join(format!("dfdx_grow_any_{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let mut ctl = GrowthController::new(load_policy(&file).unwrap(), 1)
        .with_audit(AuditLog::open(&log).unwrap());
    let probe = |m: &TwoHeads<f32>| loss(m, &x, &y, &s);
    let first = probe(&m);
    for step in 1..=300 {
        let grads = m.try_alloc_grads().unwrap();
        let (c, r) = m.forward(x.clone().traced(grads));
        let l = cross_entropy_with_logits_loss(c, y.clone()) + mse_loss(r, s.clone());
        let train = l.as_vec()[0] as f64;
        let mut grads = l.backward();
        opt.update(&mut m, &mut grads).unwrap();
        let metrics = Metrics::of(&m)
            .step(step)
            .train_loss(train)
            .grads(&mut grads)
            .build()
            .unwrap();
        if let Outcome::Grown(events) = ctl
            .observe(&metrics, &mut m, &mut opt, Some(&probe))
            .unwrap()
        {
            for e in events {
                assert!(e.loss_after.unwrap() <= e.loss_before.unwrap() * (1.0 + 1e-6));
            }
        }
    }
    assert!(probe(&m) < first, "it trained: {} -> {}", first, probe(&m));
    assert_eq!(
        m.trunk.out_width(),
        32,
        "grew 8 -> 16 -> 32 and stopped at the cap"
    );
    let records = AuditLog::read(&log).unwrap();
    let grown: Vec<(usize, usize)> = records
        .iter()
        .filter_map(|r| match r {
            AuditRecord::Growth(g) => Some((g.old_width, g.new_width)),
            _ => None,
        })
        .collect();
    assert_eq!(grown, [(8, 16), (16, 32)]);
    assert!(records.iter().all(|r| match r {
        AuditRecord::Growth(g) => g.site == "trunk" && g.policy.contains("plateau"),
        _ => true,
    }));
    let _ = std::fs::remove_file(&log);
}

#[test]
fn a_policy_naming_a_missing_site_is_an_error_naming_the_file_and_nothing_grows() {
    let mut rng = StdRng::seed_from_u64(6);
    let mut m = TwoHeads::<f32>::new(6, 8, 3, 1, &mut rng);
    let mut opt = Adam::<f32>::new(AdamConfig::default()).unwrap();
    let file = policy_file(
        "typo",
        "Schedule(events: [(at: Step(2), target: Site(\"trunc\"), size: Fixed(4))])",
    );
    let mut ctl = GrowthController::new(load_policy(&file).unwrap(), 1);
    let before = Checkpoint::of(&m);
    let metrics = |m: &TwoHeads<f32>, step| Metrics::of(m).step(step).build().unwrap();
    // The policy cannot grow in depth, so the site cannot appear later: the first observation
    // is already an error, long before the event is due.
    for step in [1, 2, 3] {
        let e = ctl
            .observe(&metrics(&m, step), &mut m, &mut opt, None)
            .unwrap_err();
        let ControllerError::Policy(PolicyError::Model { origin, reason, .. }) = &e else {
            panic!("{e}")
        };
        assert_eq!(origin, &file.display().to_string());
        assert!(
            reason.contains("\"trunc\"") && reason.contains("\"trunk\""),
            "{reason}"
        );
    }
    assert_eq!(Checkpoint::of(&m), before);
    assert!(ctl.events().is_empty());

    // An index past the sites is caught at the first observation.
    let file = policy_file(
        "index",
        "Schedule(events: [(at: Step(50), target: Layer(1), size: Fixed(4))])",
    );
    let mut ctl = GrowthController::new(load_policy(&file).unwrap(), 1);
    let e = ctl
        .observe(&metrics(&m, 1), &mut m, &mut opt, None)
        .unwrap_err();
    assert!(
        e.to_string().contains("Layer(1)") && e.to_string().contains("trunk"),
        "{e}"
    );
}

/// Two crate layers around a site that may start with no unit at all.
#[derive(Clone, Debug)]
struct Thin {
    a: Linear<f64, Cpu>,
    b: Linear<f64, Cpu>,
}

impl Params<f64, Cpu> for Thin {
    fn visit(&self, f: &mut dyn FnMut(&str, ParamRef<'_, f64, Cpu>)) {
        self.a.visit(&mut scoped("a", f));
        self.b.visit(&mut scoped("b", f));
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_, f64, Cpu>)) {
        self.a.visit_mut(&mut scoped_mut("a", f));
        self.b.visit_mut(&mut scoped_mut("b", f));
    }
}

impl Growable<f64, Cpu> for Thin {
    fn sites(&self) -> Vec<Site> {
        vec![Site::new("a", &self.a, &[&self.b]).with_params(["a.weight", "a.bias"])]
    }
    fn site_mut(&mut self, name: &str) -> Option<SiteMut<'_, f64>> {
        (name == "a").then(|| SiteMut {
            producer: &mut self.a,
            consumers: vec![&mut self.b],
        })
    }
    fn forward_flops(&self) -> f64 {
        self.a.forward_flops() + self.b.forward_flops()
    }
}

#[test]
fn a_site_with_no_unit_grows_by_the_default_init_and_its_optimizer_state_saves_and_loads() {
    let (dev, mut rng) = (Cpu::default(), StdRng::seed_from_u64(8));
    let mut m = Thin {
        a: Linear::new(4, 0, &dev, &mut rng).unwrap(),
        b: Linear::new(0, 3, &dev, &mut rng).unwrap(),
    };
    let x: Matrix<f64, Cpu> = dev.sample_normal_like(&(5, 4));
    let out = |m: &Thin| m.b.forward(m.a.forward(x.clone()).relu()).as_vec();
    let mut opt = Adam::<f64>::new(AdamConfig::default()).unwrap();
    opt.sync(&m).unwrap();
    for k in [3, 2] {
        let before = out(&m);
        grow_site(&mut m, "a", k, &Init::ZerosOut, &mut rng).unwrap();
        assert_eq!(out(&m), before, "the new units' fan-out is zero");
        opt.sync(&m).unwrap();
        let grads = m.try_alloc_grads().unwrap();
        let l =
            m.b.forward(m.a.forward(x.clone().traced(grads)).relu())
                .square()
                .mean();
        opt.update(&mut m, &mut l.backward()).unwrap();
    }
    let saved = opt.save_state();
    let mut again = Adam::<f64>::new(AdamConfig::default()).unwrap();
    again.load_state(&saved, &m).unwrap();
    let path = std::env::temp_dir().join(format!("dfdx_grow_thin_{}.ckpt", std::process::id()));
    Checkpoint::of(&m)
        .with_optimizer(saved)
        .save(&path)
        .unwrap();
    let _ = std::fs::remove_file(&path);
}

/// `Thin` whose site names parameters as given.
#[derive(Clone, Debug)]
struct Named(Thin, Vec<&'static str>);

impl Params<f64, Cpu> for Named {
    fn visit(&self, f: &mut dyn FnMut(&str, ParamRef<'_, f64, Cpu>)) {
        self.0.visit(f)
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_, f64, Cpu>)) {
        self.0.visit_mut(f)
    }
}

impl Growable<f64, Cpu> for Named {
    fn sites(&self) -> Vec<Site> {
        vec![Site::new("a", &self.0.a, &[&self.0.b]).with_params(self.1.iter().copied())]
    }
    fn site_mut(&mut self, name: &str) -> Option<SiteMut<'_, f64>> {
        self.0.site_mut(name)
    }
    fn forward_flops(&self) -> f64 {
        self.0.forward_flops()
    }
}

#[test]
fn a_site_naming_no_parameter_has_no_gradient_norm_and_a_mistyped_name_is_an_error() {
    let (dev, mut rng) = (Cpu::default(), StdRng::seed_from_u64(9));
    let thin = Thin {
        a: Linear::new(4, 3, &dev, &mut rng).unwrap(),
        b: Linear::new(3, 2, &dev, &mut rng).unwrap(),
    };
    let x: Matrix<f64, Cpu> = dev.sample_normal_like(&(5, 4));
    let grads_of = |m: &Named| {
        let g = m.try_alloc_grads().unwrap();
        m.0.b
            .forward(m.0.a.forward(x.clone().traced(g)).relu())
            .square()
            .mean()
            .backward()
    };
    let named = Named(thin.clone(), vec!["a.weight", "a.bias"]);
    let m = Metrics::of(&named)
        .grads(&mut grads_of(&named))
        .build()
        .unwrap();
    assert!(m.sites[0].grad_norm.unwrap() > 0.0);
    let none = Named(thin.clone(), vec![]);
    let m = Metrics::of(&none)
        .grads(&mut grads_of(&none))
        .build()
        .unwrap();
    assert_eq!(m.sites[0].grad_norm, None);
    let typo = Named(thin, vec!["a.weigth"]);
    let e = Metrics::of(&typo)
        .grads(&mut grads_of(&typo))
        .build()
        .unwrap_err();
    assert!(
        matches!(&e, GrowError::UnknownParam { param, .. } if param == "a.weigth"),
        "{e}"
    );
    assert!(
        e.to_string().contains("a.weight"),
        "lists the real names: {e}"
    );
}

/// `Thin` whose walk names both layers alike.
#[derive(Clone, Debug)]
struct Twice(Thin);

impl Params<f64, Cpu> for Twice {
    fn visit(&self, f: &mut dyn FnMut(&str, ParamRef<'_, f64, Cpu>)) {
        self.0.a.visit(&mut scoped("layer", f));
        self.0.b.visit(&mut scoped("layer", f));
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_, f64, Cpu>)) {
        self.0.a.visit_mut(&mut scoped_mut("layer", f));
        self.0.b.visit_mut(&mut scoped_mut("layer", f));
    }
}

#[test]
fn a_walk_that_names_two_tensors_alike_is_an_error_naming_the_name() {
    let (dev, mut rng) = (Cpu::default(), StdRng::seed_from_u64(10));
    let m = Twice(Thin {
        a: Linear::new(4, 3, &dev, &mut rng).unwrap(),
        b: Linear::new(3, 2, &dev, &mut rng).unwrap(),
    });
    let mut opt = Adam::<f64>::new(AdamConfig::default()).unwrap();
    let e = opt.sync(&m).unwrap_err();
    assert!(
        matches!(&e, GrowError::ParamName { name } if name == "layer.weight"),
        "{e}"
    );
}
