//! The growth controller end to end: real data, every policy file, the audit log, refusals
//! and resumption.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use dfdx_grow::audit::{AuditLog, AuditRecord};
use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::optim::{Adam, AdamConfig, Optimizer};
use dfdx_grow::policy::{load_policy, policy_from_str, Growth, Metrics};
use dfdx_grow::rand::{seq::SliceRandom, SeedableRng};
use dfdx_grow::{Activation, GrowthController, Init, Loss, Matrix, Mlp, Outcome, Params, Probe};
use dfdx_grow_data::{digits::digits, stratified_split, Dataset};

fn batch(dev: &Cpu, ds: &Dataset, idx: &[usize]) -> (Matrix<f32, Cpu>, Matrix<f32, Cpu>) {
    ds.batch(dev, idx)
}

/// A 64-32-10 MLP learning the digits with Adam; the controller sees the train loss every
/// step and the validation loss every 25 steps.
struct Trainer {
    dev: Cpu,
    train: Dataset,
    rng: dfdx_grow::rand::rngs::StdRng,
    mlp: Mlp<f32, Cpu>,
    opt: Adam<f32>,
    probe: Probe<f32, Cpu>,
    val: (Matrix<f32, Cpu>, Matrix<f32, Cpu>),
    order: Vec<usize>,
    cursor: usize,
    epoch: u64,
}

impl Trainer {
    fn new(seed: u64) -> Self {
        let dev = Cpu::default();
        let split = stratified_split(&digits().unwrap(), 0.2, seed).unwrap();
        let mut rng = dfdx_grow::rand::rngs::StdRng::seed_from_u64(seed);
        let mlp = Mlp::<f32, Cpu>::new(&[64, 32, 10], Activation::Relu, &dev, &mut rng)
            .with_max_width(256);
        let (px, py) = batch(&dev, &split.train, &(0..256).collect::<Vec<_>>());
        let val = batch(&dev, &split.val, &(0..split.val.len()).collect::<Vec<_>>());
        let order = (0..split.train.len()).collect::<Vec<_>>();
        Self {
            cursor: order.len(),
            order,
            dev,
            train: split.train,
            rng,
            mlp,
            opt: Adam::<f32>::new(AdamConfig::default()).unwrap(),
            probe: Probe {
                input: px,
                target: Some((py, Loss::CrossEntropy)),
            },
            val,
            epoch: 0,
        }
    }

    fn run(&mut self, ctl: &mut GrowthController, steps: std::ops::RangeInclusive<u64>) {
        for step in steps {
            if self.cursor + 64 > self.order.len() {
                self.order.shuffle(&mut self.rng);
                self.cursor = 0;
                self.epoch += 1;
            }
            let (x, y) = batch(
                &self.dev,
                &self.train,
                &self.order[self.cursor..self.cursor + 64],
            );
            self.cursor += 64;
            let grads = self.mlp.try_alloc_grads().unwrap();
            let loss = cross_entropy_with_logits_loss(self.mlp.forward(x.traced(grads)), y);
            let train_loss = loss.as_vec()[0] as f64;
            let mut grads = loss.backward();
            self.opt.update(&mut self.mlp, &mut grads).unwrap();
            let val = (step % 25 == 0).then(|| {
                Loss::CrossEntropy.value(self.mlp.forward(self.val.0.clone()), &self.val.1)
            });
            let flops = step as f64 * dfdx_grow::flops::train_step(&self.mlp.widths(), 64, 12.0);
            let m = Metrics::of(&self.mlp)
                .step(step)
                .epoch(self.epoch)
                .train_loss(train_loss)
                .val_loss(val)
                .grads(&mut grads)
                .flops(flops)
                .build()
                .unwrap();
            // Limits may decline a growth (that is logged, not an outcome); a refused or
            // undone growth is a bug here.
            match ctl.observe(&m, &mut self.mlp, &mut self.opt, Some(&self.probe)) {
                Ok(Outcome::Idle | Outcome::Grown(_)) => {}
                Ok(other) => panic!("step {step}: {other:?}"),
                Err(e) => panic!("step {step}: {e}"),
            }
        }
    }
}

fn policy_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "ron"))
        .collect();
    files.sort();
    files
}

fn temp_log(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("dfdx-grow-{}-{name}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

#[test]
fn every_policy_file_grows_a_digits_model_without_raising_the_probe_loss() {
    let files = policy_files();
    assert!(
        files.len() >= 4,
        "policies/ should hold at least four files"
    );
    for file in files {
        let log_path = temp_log(&file.file_stem().unwrap().to_string_lossy());
        let mut ctl = GrowthController::new(load_policy(&file).unwrap(), 1)
            .with_audit(AuditLog::open(&log_path).unwrap());
        let mut t = Trainer::new(1);
        t.run(&mut ctl, 1..=3000);
        let events = ctl.events();
        assert!(
            !events.is_empty(),
            "{}: no growth in 3000 steps",
            file.display()
        );
        assert!(t.mlp.widths()[1] > 32);
        for e in events {
            let (before, after) = (e.loss_before.unwrap(), e.loss_after.unwrap());
            assert!(
                after <= before + 1e-6 * before.abs(),
                "{}: loss rose {before} -> {after}",
                file.display()
            );
            assert!(e.new_width > e.old_width && e.params_after > e.params_before);
        }
        // One log line per growth, each with every field.
        let records = AuditLog::read(&log_path).unwrap();
        let growths: Vec<_> = records
            .iter()
            .filter_map(|r| match r {
                AuditRecord::Growth(g) => Some(g),
                _ => None,
            })
            .collect();
        assert_eq!(growths.len(), events.len());
        let text = std::fs::read_to_string(&log_path).unwrap();
        for line in text.lines().filter(|l| l.contains("\"kind\":\"growth\"")) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            for field in [
                "step",
                "epoch",
                "site",
                "old_width",
                "new_width",
                "init",
                "policy",
                "reason",
                "evidence",
                "params_before",
                "params_after",
                "loss_before",
                "loss_after",
                "flops",
            ] {
                assert!(
                    v.get(field).is_some(),
                    "{}: field {field} missing in {line}",
                    file.display()
                );
            }
        }
        let _ = std::fs::remove_file(&log_path);
    }
}

#[test]
fn a_growth_the_model_refuses_is_a_refused_outcome_and_changes_nothing() {
    let dev = Cpu::default();
    let mut rng = rng(3);
    let mut mlp =
        Mlp::<f32, Cpu>::new(&[4, 8, 2], Activation::Relu, &dev, &mut rng).with_max_width(10);
    let mut opt = Adam::<f32>::new(AdamConfig::default()).unwrap();
    let x = input::<f32>(&dev, 8, 4, &mut rng);
    let y = one_hot::<f32>(&dev, 8, 2, &mut rng);
    step(&mut mlp, &mut opt, &x, &y);
    let policy = policy_from_str(
        "Schedule(events: [(at: Step(2), target: Layer(0), size: Fixed(4), init: MirrorPairs)])",
        "inline",
    )
    .unwrap();
    let log_path = temp_log("refused");
    let mut ctl = GrowthController::new(policy, 0).with_audit(AuditLog::open(&log_path).unwrap());
    let (before, state) = (snapshot(&mlp), opt.state().clone());
    let mut refused = None;
    for s in 1..=3 {
        let m = Metrics::of(&mlp).step(s).train_loss(1.0).build().unwrap();
        let r = ctl.observe(&m, &mut mlp, &mut opt, None).unwrap();
        if s == 2 {
            let Outcome::Refused(e) = r else {
                panic!("step 2: {r:?}")
            };
            refused = Some(e);
        } else {
            assert_eq!(r, Outcome::Idle, "step {s}");
        }
    }
    let r = refused.unwrap();
    assert_eq!((r.step, r.epoch, r.policy.as_str()), (2, 0, "schedule"));
    assert_eq!(
        r.growths,
        vec![Growth::Width {
            site: "hidden.0".into(),
            k: 4,
            init: Init::MirrorPairs
        }]
    );
    assert!(r.why.contains("width cap of 10"), "{}", r.why);
    assert_eq!((r.loss_before, r.loss_after), (None, None));
    assert_eq!(snapshot(&mlp), before);
    assert_eq!(opt.state(), &state);
    assert!(ctl.events().is_empty());
    let records = AuditLog::read(&log_path).unwrap();
    assert_eq!(records, vec![AuditRecord::Refused(r)]);
    let _ = std::fs::remove_file(&log_path);
}

#[test]
fn a_growth_that_raises_the_probe_loss_is_undone() {
    let dev = Cpu::default();
    let mut rng = rng(4);
    let mut mlp = Mlp::<f64, Cpu>::new(&[4, 8, 3], Activation::Tanh, &dev, &mut rng);
    let mut opt = Adam::<f64>::new(AdamConfig::default()).unwrap();
    let x = input::<f64>(&dev, 64, 4, &mut rng);
    let y = one_hot::<f64>(&dev, 64, 3, &mut rng);
    for _ in 0..50 {
        step(&mut mlp, &mut opt, &x, &y);
    }
    let probe = Probe {
        input: x.clone(),
        target: Some((y.clone(), Loss::CrossEntropy)),
    };
    let policy = policy_from_str(
        "Schedule(events: [(at: Step(1), target: Layer(0), size: Fixed(8), init: CopyHalveNoise(std: 5.0))])",
        "inline",
    )
    .unwrap();
    let mut ctl = GrowthController::new(policy, 0);
    let (before, state) = (snapshot(&mlp), opt.state().clone());
    let m = Metrics::of(&mlp).step(1).train_loss(1.0).build().unwrap();
    let r = ctl.observe(&m, &mut mlp, &mut opt, Some(&probe)).unwrap();
    let Outcome::Undone(e) = r else {
        panic!("{r:?}")
    };
    let (lb, la) = (e.loss_before.unwrap(), e.loss_after.unwrap());
    assert!(la > lb, "undone although the loss went {lb} -> {la}");
    assert_eq!(snapshot(&mlp), before);
    assert_eq!(mlp.widths(), vec![4, 8, 3]);
    assert_eq!(opt.state(), &state);
    assert!(ctl.events().is_empty());
}

#[test]
fn a_resumed_controller_grows_exactly_as_one_that_never_stopped() {
    for name in ["schedule.ron", "combined.ron", "plateau.ron"] {
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("policies")
            .join(name);
        let build = || GrowthController::new(load_policy(&file).unwrap(), 9);
        let mut straight = build();
        let mut a = Trainer::new(2);
        a.run(&mut straight, 1..=2000);

        let mut first = build();
        let mut b = Trainer::new(2);
        b.run(&mut first, 1..=900);
        // Stop: the controller's state goes through JSON into one rebuilt from the file.
        let json = serde_json::to_string(&first.state()).unwrap();
        let mut resumed = build();
        resumed
            .restore(&serde_json::from_str(&json).unwrap())
            .unwrap();
        b.run(&mut resumed, 901..=2000);

        assert!(!straight.events().is_empty(), "{name}: nothing to compare");
        assert_eq!(resumed.events(), straight.events(), "{name}");
        assert_eq!(
            snapshot(&b.mlp),
            snapshot(&a.mlp),
            "{name}: the models differ"
        );
    }
}
