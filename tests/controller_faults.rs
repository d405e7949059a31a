//! The controller under faults (issue 10, items 6, 9, 10, 11, 12 and 14, and the
//! "Controller" rule): the model, the optimizer, the policy state, the events and the audit log
//! change together or not at all; every growth, undo and refusal is logged once; refusals are
//! outcomes; a growth too large for memory is refused before anything is allocated; a resumed
//! run is the uninterrupted one.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use dfdx_grow::audit::{AuditLog, AuditRecord};
use dfdx_grow::checkpoint::Checkpoint;
use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::optim::{Adam, AdamConfig};
use dfdx_grow::policy::{policy_from_str, Metrics};
use dfdx_grow::{
    Activation, ControllerError, GrowthController, Loss, Mlp, Outcome, Params, Probe, ResMlp,
    DEFAULT_MAX_GROWTH_BYTES,
};

fn temp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "dfdx-grow-ctl-faults-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&p);
    p
}

fn policy(ron: &str) -> Box<dyn dfdx_grow::policy::GrowthPolicy> {
    policy_from_str(ron, "inline").unwrap()
}

/// Every parameter's bits, in walk order.
fn bits(model: &dyn Params<f32, Cpu>) -> Vec<Vec<u32>> {
    snapshot(model)
        .iter()
        .map(|t| t.iter().map(|x| x.to_bits()).collect())
        .collect()
}

fn bits64(model: &dyn Params<f64, Cpu>) -> Vec<Vec<u64>> {
    snapshot(model)
        .iter()
        .map(|t| t.iter().map(|x| x.to_bits()).collect())
        .collect()
}

fn metrics<M: dfdx_grow::Growable<f32, Cpu>>(model: &M, step: u64) -> Metrics {
    Metrics::of(model)
        .step(step)
        .train_loss(1.0)
        .build()
        .unwrap()
}

/// A trained 4-8-2 (or other) model and its Adam.
fn trained(sizes: &[usize], seed: u64) -> (Mlp<f32, Cpu>, Adam<f32>) {
    let dev = Cpu::default();
    let mut rng = rng(seed);
    let mut mlp = Mlp::<f32, Cpu>::new(sizes, Activation::Relu, &dev, &mut rng);
    let mut opt = Adam::<f32>::new(AdamConfig::default()).unwrap();
    let x = input::<f32>(&dev, 8, sizes[0], &mut rng);
    let y = one_hot::<f32>(&dev, 8, *sizes.last().unwrap(), &mut rng);
    step(&mut mlp, &mut opt, &x, &y);
    (mlp, opt)
}

// --- Item 6: a growth too large for memory is a typed refusal, allocated nowhere. ---

const LIMITED_ENV: &str = "DFDX_GROW_CTL_MEMORY_LIMITED";

/// Runs test `name` of this binary in a child limited to 4 GiB of address space.
fn run_limited(name: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -v 4194304 && exec "$0" "$@""#)
        .arg(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(LIMITED_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHILD-OK"),
        "{name} failed under the memory limit ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn child_huge_growths_are_refused_before_allocating() {
    if std::env::var(LIMITED_ENV).is_err() {
        return;
    }
    assert_eq!(DEFAULT_MAX_GROWTH_BYTES, 1 << 30);
    // Fixed(1000000) on 784-64-10: under the width cap (2^20), about 9.5 GB with Adam's state.
    let (mut mlp, mut opt) = trained(&[784, 64, 10], 1);
    let mut ctl = GrowthController::new(
        policy("Schedule(events: [(at: Step(1), target: Layer(0), size: Fixed(1000000))])"),
        0,
    );
    let (before, state) = (bits(&mlp), opt.state().clone());
    let m = metrics(&mlp, 1);
    let out = ctl.observe(&m, &mut mlp, &mut opt, None).unwrap();
    let Outcome::Refused(r) = out else {
        panic!("{out:?}")
    };
    assert!(
        r.why.contains("bytes") && r.why.contains("over the limit of 1073741824"),
        "{}",
        r.why
    );
    assert_eq!(bits(&mlp), before);
    assert_eq!(opt.state(), &state);
    assert!(ctl.events().is_empty());

    // A block of 10^6 hidden units on a stream of 4096, in a model with no block yet (so no
    // site to measure a unit by): about 33 GB.
    let dev = Cpu::default();
    let mut net =
        ResMlp::<f32, Cpu>::new(4, 4096, &[], 2, Activation::Relu, &dev, &mut rng(2)).unwrap();
    let mut opt = Adam::<f32>::new(AdamConfig::default()).unwrap();
    let mut ctl = GrowthController::new(
        policy("Schedule(events: [(at: Step(1), grow: Depth(after: \"input\", hidden: 1000000))])"),
        0,
    );
    let m = metrics(&net, 1);
    let out = ctl.observe(&m, &mut net, &mut opt, None).unwrap();
    let Outcome::Refused(r) = out else {
        panic!("{out:?}")
    };
    assert!(r.why.contains("over the limit"), "{}", r.why);
    assert!(net.block_list().is_empty());

    // And a cap the user sets applies to a modest growth too.
    let (mut mlp, mut opt) = trained(&[4, 8, 2], 3);
    let mut ctl = GrowthController::new(
        policy("Schedule(events: [(at: Step(1), target: Layer(0), size: Fixed(8))])"),
        0,
    )
    .with_max_growth_bytes(100);
    let out = ctl
        .observe(&metrics(&mlp, 1), &mut mlp, &mut opt, None)
        .unwrap();
    assert!(matches!(out, Outcome::Refused(_)), "{out:?}");
    assert_eq!(mlp.widths(), vec![4, 8, 2]);
    println!("CHILD-OK");
}

#[test]
fn growths_too_large_for_memory_are_refused_outcomes_without_allocating() {
    run_limited("child_huge_growths_are_refused_before_allocating");
}

// --- Item 9: a failed audit write keeps nothing of the observation. ---

const FSIZE_ENV: &str = "DFDX_GROW_CTL_FSIZE_CHILD";
/// The child's file size limit: 64 blocks of 512 bytes.
const LIMIT: u64 = 64 * 512;

/// Pads the log at `path` with blank lines (which readers skip) until `room` bytes are left
/// under the limit.
fn fill_leaving(path: &Path, room: u64) {
    let len = std::fs::metadata(path).map_or(0, |m| m.len());
    let mut left = (LIMIT - room).saturating_sub(len) as usize;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    while left > 0 {
        let n = left.min(1000);
        let mut line = " ".repeat(n - 1);
        line.push('\n');
        f.write_all(line.as_bytes()).unwrap();
        left -= n;
    }
}

/// Empties the log from outside (the controller's handle appends at the new end).
fn empty(path: &Path) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(0)
        .unwrap();
}

/// Everything an observation may change, for before/after comparisons.
fn everything(
    mlp: &Mlp<f32, Cpu>,
    opt: &Adam<f32>,
    ctl: &GrowthController,
    log: &Path,
) -> (
    Vec<Vec<u32>>,
    Vec<usize>,
    String,
    dfdx_grow::ControllerState,
    Vec<u8>,
) {
    (
        bits(mlp),
        mlp.widths(),
        format!("{:?}", opt.state()),
        ctl.state(),
        std::fs::read(log).unwrap(),
    )
}

#[test]
fn child_failed_audit_writes_keep_nothing() {
    let Ok(dir) = std::env::var(FSIZE_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);

    // A decision that grows one site and is declined at another: the declined record and the
    // growth record go in one write. It fails: nothing of it is kept, the schedule's events
    // included; with room again, the same observation grows.
    let log = dir.join("grow.jsonl");
    let (mut mlp, mut opt) = trained(&[4, 8, 4, 2], 4);
    let mut ctl = GrowthController::new(
        policy(
            "Limits(max_width: 8, policy: Schedule(events: [
                (at: Step(2), target: Site(\"hidden.0\"), size: Fixed(4)),
                (at: Step(2), target: Site(\"hidden.1\"), size: Fixed(4)),
            ]))",
        ),
        0,
    )
    .with_audit(AuditLog::open(&log).unwrap());
    assert_eq!(
        ctl.observe(&metrics(&mlp, 1), &mut mlp, &mut opt, None)
            .unwrap(),
        Outcome::Idle
    );
    fill_leaving(&log, 200);
    let before = everything(&mlp, &opt, &ctl, &log);
    let e = ctl
        .observe(&metrics(&mlp, 2), &mut mlp, &mut opt, None)
        .expect_err("the log is full");
    assert!(matches!(e, ControllerError::Audit(_)), "{e:?}");
    assert_eq!(everything(&mlp, &opt, &ctl, &log), before);
    assert!(ctl.events().is_empty());
    // The optimizer still follows the model it has (no state padded for the undone growth).
    let dev = Cpu::default();
    let mut r = rng(5);
    let (x, y) = (
        input::<f32>(&dev, 8, 4, &mut r),
        one_hot::<f32>(&dev, 8, 2, &mut r),
    );
    let mut probe_mlp = mlp.clone();
    let mut probe_opt = opt.clone();
    step(&mut probe_mlp, &mut probe_opt, &x, &y);

    empty(&log);
    let out = ctl
        .observe(&metrics(&mlp, 2), &mut mlp, &mut opt, None)
        .unwrap();
    assert_eq!(out.events().len(), 1, "{out:?}");
    assert_eq!(mlp.widths(), vec![4, 8, 8, 2]);
    let records = AuditLog::read(&log).unwrap();
    assert!(
        matches!(&records[..], [AuditRecord::Declined(d), AuditRecord::Growth(g)]
            if d.sites == ["hidden.0"] && d.count == 1 && g.site == "hidden.1"),
        "{records:?}"
    );
    assert_eq!(ctl.events().len(), 1);

    // A refused decision whose record cannot be written: the refusal is not reported to the
    // policy, so the same observation is refused (and logged) once there is room.
    let log = dir.join("refused.jsonl");
    let (mut mlp, mut opt) = trained(&[4, 7, 2], 6);
    let mut ctl = GrowthController::new(
        policy(
            "Schedule(events: [(at: Step(2), target: Site(\"hidden.0\"), size: Fraction(1.0), \
             init: MirrorPairs)])",
        ),
        0,
    )
    .with_audit(AuditLog::open(&log).unwrap());
    fill_leaving(&log, 100);
    let before = everything(&mlp, &opt, &ctl, &log);
    let e = ctl
        .observe(&metrics(&mlp, 2), &mut mlp, &mut opt, None)
        .expect_err("the log is full");
    assert!(matches!(e, ControllerError::Audit(_)), "{e:?}");
    assert_eq!(everything(&mlp, &opt, &ctl, &log), before);
    empty(&log);
    let out = ctl
        .observe(&metrics(&mlp, 2), &mut mlp, &mut opt, None)
        .unwrap();
    assert!(matches!(out, Outcome::Refused(_)), "{out:?}");
    assert!(matches!(
        &AuditLog::read(&log).unwrap()[..],
        [AuditRecord::Refused(_)]
    ));

    // Summarised declines whose flush fails stay pending, and are written by the next flush.
    let log = dir.join("flush.jsonl");
    let (mut mlp, mut opt) = trained(&[4, 8, 2], 7);
    let mut ctl = GrowthController::new(
        policy(
            "Limits(max_events: 1, policy: Schedule(events: [
                (at: Step(2), target: Layer(0), size: Fixed(1)),
                (at: Step(3), target: Layer(0), size: Fixed(1)),
                (at: Step(4), target: Layer(0), size: Fixed(1)),
            ]))",
        ),
        0,
    )
    .with_audit(AuditLog::open(&log).unwrap());
    for s in 2..=4 {
        ctl.observe(&metrics(&mlp, s), &mut mlp, &mut opt, None)
            .unwrap();
    }
    fill_leaving(&log, 100);
    let before = everything(&mlp, &opt, &ctl, &log);
    assert!(matches!(ctl.flush(), Err(ControllerError::Audit(_))));
    assert_eq!(everything(&mlp, &opt, &ctl, &log), before);
    empty(&log);
    ctl.flush().unwrap();
    let records = AuditLog::read(&log).unwrap();
    assert!(
        matches!(&records[..], [AuditRecord::Declined(d)]
            if (d.first_step, d.step, d.count) == (3, 4, 2)),
        "{records:?}"
    );
    println!("CHILD-OK");
}

#[test]
fn a_failed_audit_write_leaves_model_optimizer_policy_events_and_log_unchanged() {
    let dir = std::env::temp_dir().join(format!("dfdx-grow-ctl-fsize-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"trap "" XFSZ; ulimit -f 64 && exec "$0" "$@""#)
        .arg(std::env::current_exe().unwrap())
        .args([
            "child_failed_audit_writes_keep_nothing",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(FSIZE_ENV, &dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHILD-OK"),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// --- Items 10 and 14: everything logged once; refusals are outcomes. ---

/// A schedule of `n` one-unit growths of hidden.0 at steps `from`, `from + 1`, ...
fn one_unit_events(from: u64, n: u64) -> String {
    (from..from + n)
        .map(|s| format!("(at: Step({s}), target: Site(\"hidden.0\"), size: Fixed(1))"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn every_growth_undo_and_refusal_is_logged_once_and_identical_declines_once_with_their_count() {
    let dev = Cpu::default();
    let mut mlp = Mlp::<f64, Cpu>::new(&[4, 7, 3], Activation::Tanh, &dev, &mut rng(8));
    let mut opt = Adam::<f64>::new(AdamConfig::default()).unwrap();
    // A probe whose loss rises exactly when the growth of 8 units at step 10 is carried out
    // (11 -> 19 wide), so that growth is undone and no other is.
    let probe = |m: &Mlp<f64, Cpu>| if m.widths()[1] == 19 { 2.0 } else { 1.0 };
    let log = temp("once.jsonl");
    let ron = format!(
        "AnyOf([
            Schedule(events: [
                (at: Step(5), target: Site(\"hidden.0\"), size: Fixed(4)),
                (at: Step(10), target: Site(\"hidden.0\"), size: Fixed(8), init: CopyHalveNoise(std: 5.0)),
                (at: Step(15), target: Site(\"hidden.0\"), size: Fraction(1.0), init: MirrorPairs),
            ]),
            Limits(max_events: 1, policy: Schedule(events: [{}])),
        ])",
        one_unit_events(20, 44)
    );
    let mut ctl = GrowthController::new(policy(&ron), 1).with_audit(AuditLog::open(&log).unwrap());
    let mut outcomes = Vec::new();
    for s in 1..=70 {
        let m = Metrics::of(&mlp).step(s).train_loss(1.0).build().unwrap();
        // The README's loop: `?` (here unwrap) on errors only; refusals go on.
        match ctl.observe(&m, &mut mlp, &mut opt, Some(&probe)).unwrap() {
            Outcome::Idle => {}
            o => outcomes.push((s, o)),
        }
    }
    ctl.flush().unwrap();
    let kinds: Vec<(u64, &str)> = outcomes
        .iter()
        .map(|(s, o)| {
            (
                *s,
                match o {
                    Outcome::Grown(_) => "grown",
                    Outcome::Undone(_) => "undone",
                    Outcome::Refused(_) => "refused",
                    Outcome::Idle => "idle",
                },
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![(5, "grown"), (10, "undone"), (15, "refused"), (20, "grown")]
    );
    let records = AuditLog::read(&log).unwrap();
    let summary: Vec<(String, u64)> = records
        .iter()
        .map(|r| match r {
            AuditRecord::Growth(g) => ("growth".to_string(), g.step),
            AuditRecord::Undone(u) => ("undone".into(), u.step),
            AuditRecord::Refused(u) => ("refused".into(), u.step),
            AuditRecord::Declined(d) => (
                format!("declined {}x from {}", d.count, d.first_step),
                d.step,
            ),
            AuditRecord::Health(h) => ("health".into(), h.step),
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("growth".to_string(), 5),
            ("undone".into(), 10),
            ("refused".into(), 15),
            ("growth".into(), 20),
            ("declined 43x from 21".into(), 63),
        ]
    );
    let Some(AuditRecord::Undone(u)) = records.get(1) else {
        unreachable!()
    };
    assert!(u.loss_after.unwrap() > u.loss_before.unwrap());
    assert_eq!(ctl.events().len(), 2);
    assert_eq!(mlp.widths(), vec![4, 12, 3]);
    let _ = std::fs::remove_file(&log);
}

// --- Item 11: settings, probes and saved states that cannot be trusted. ---

#[test]
fn a_loss_tolerance_that_is_not_a_finite_non_negative_number_is_refused() {
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1e-9] {
        let r = GrowthController::new(policy(SCHEDULE_AT_2), 0).with_loss_tolerance(bad);
        assert!(
            matches!(
                r,
                Err(ControllerError::Setting {
                    name: "loss_tolerance",
                    ..
                })
            ),
            "{bad}: {r:?}"
        );
    }
    assert!(GrowthController::new(policy(SCHEDULE_AT_2), 0)
        .with_loss_tolerance(0.0)
        .is_ok());
}

const SCHEDULE_AT_2: &str =
    "Schedule(events: [(at: Step(2), target: Site(\"hidden.0\"), size: Fixed(4))])";

#[test]
fn a_non_finite_probe_loss_refuses_or_undoes_the_growth() {
    let (mlp0, opt0) = trained(&[4, 8, 2], 9);
    // NaN before: the growth cannot be checked, so it is refused.
    let nan_before = |_: &Mlp<f32, Cpu>| f64::NAN;
    // NaN after: counts as a rise.
    let nan_after = |m: &Mlp<f32, Cpu>| if m.widths()[1] > 8 { f64::NAN } else { 1.0 };
    let inf_after = |m: &Mlp<f32, Cpu>| {
        if m.widths()[1] > 8 {
            f64::INFINITY
        } else {
            1.0
        }
    };
    type P<'a> = &'a dyn dfdx_grow::LossProbe<Mlp<f32, Cpu>>;
    for (what, probe, refused) in [
        ("NaN before", &nan_before as P, true),
        ("NaN after", &nan_after as P, false),
        ("inf after", &inf_after as P, false),
    ] {
        let (mut mlp, mut opt) = (mlp0.clone(), opt0.clone());
        let mut ctl = GrowthController::new(policy(SCHEDULE_AT_2), 0);
        let out = ctl
            .observe(&metrics(&mlp, 2), &mut mlp, &mut opt, Some(probe))
            .unwrap();
        if refused {
            assert!(matches!(out, Outcome::Refused(_)), "{what}: {out:?}");
        } else {
            assert!(matches!(out, Outcome::Undone(_)), "{what}: {out:?}");
        }
        assert_eq!(bits(&mlp), bits(&mlp0), "{what}");
        assert!(ctl.events().is_empty());
    }
}

#[test]
fn a_controller_state_that_does_not_load_leaves_the_controller_as_it_was() {
    let ron = "AnyOf([
        Schedule(events: [(at: Step(2), target: Layer(0), size: Fixed(2))]),
        Sequence([
            (policy: Schedule(events: [(at: Step(4), target: Layer(0), size: Fixed(2))]), times: 1),
            (policy: Schedule(events: [(at: Step(6), target: Layer(0), size: Fixed(2))]), times: 1),
        ]),
    ])";
    let (mut mlp, mut opt) = trained(&[4, 8, 2], 10);
    let mut ctl = GrowthController::new(policy(ron), 0);
    // A later state: the first child has fired, the sequence is in its second stage.
    let mut later = GrowthController::new(policy(ron), 0);
    let (mut m2, mut o2) = (mlp.clone(), opt.clone());
    for s in 1..=5 {
        later
            .observe(&metrics(&m2, s), &mut m2, &mut o2, None)
            .unwrap();
    }
    let good = later.state();
    assert_eq!(good.events.len(), 2);
    ctl.observe(&metrics(&mlp, 1), &mut mlp, &mut opt, None)
        .unwrap();
    let before = ctl.state();

    let mut bad_stage = good.clone();
    bad_stage.policy["children"][1]["current"] = serde_json::json!(99);
    let mut bad_second = good.clone();
    bad_second.policy["children"][1]["children"][1] = serde_json::json!({"fired": "yes"});
    let mut bad_done = good.clone();
    bad_done.policy["children"][1]["done_in_stage"] = serde_json::json!(5);
    for (what, state, why) in [
        ("stage 99 of 2", bad_stage, "stage 99"),
        ("a later child's state", bad_second, "schedule"),
        (
            "more growths than the stage has",
            bad_done,
            "5 growths done",
        ),
    ] {
        let e = ctl.restore(&state).expect_err(what);
        assert!(matches!(e, ControllerError::Policy(_)), "{what}: {e:?}");
        assert!(e.to_string().contains(why), "{what}: {e}");
        assert_eq!(ctl.state(), before, "{what}: the controller changed");
    }
    // The good state loads whole, and the restored controller decides as the later one.
    ctl.restore(&good).unwrap();
    assert_eq!(ctl.state(), good);
    let out = ctl
        .observe(&metrics(&m2, 6), &mut m2.clone(), &mut o2.clone(), None)
        .unwrap();
    let out_later = later
        .observe(&metrics(&m2, 6), &mut m2, &mut o2, None)
        .unwrap();
    assert_eq!(out.events().len(), 1);
    assert_eq!(out, out_later);
}

// --- Item 12: a resumed run is the uninterrupted run. ---

/// Two sites; hidden.0's later growths are declined by `max_events` (summarised), hidden.1's
/// second growth is refused by the model's width cap of 12.
const RESUME_POLICY: &str = "AnyOf([
    Limits(max_events: 1, policy: Schedule(events: [
        (at: Step(10), target: Site(\"hidden.0\"), size: Fixed(4)),
        (at: Step(30), target: Site(\"hidden.0\"), size: Fixed(2)),
        (at: Step(40), target: Site(\"hidden.0\"), size: Fixed(2)),
        (at: Step(70), target: Site(\"hidden.0\"), size: Fixed(2)),
    ])),
    Schedule(events: [
        (at: Step(20), target: Site(\"hidden.1\"), size: Fixed(4)),
        (at: Step(60), target: Site(\"hidden.1\"), size: Fixed(4)),
    ]),
])";

struct Run {
    mlp: Mlp<f64, Cpu>,
    opt: Adam<f64>,
    ctl: GrowthController,
}

/// The fixed batch and probe of the resume test.
fn resume_data() -> (Matrix64, Matrix64, Probe<f64, Cpu>) {
    let dev = Cpu::default();
    let mut r = rng(12);
    let x = input::<f64>(&dev, 32, 5, &mut r);
    let y = one_hot::<f64>(&dev, 32, 3, &mut r);
    let probe = Probe {
        input: x.clone(),
        target: Some((y.clone(), Loss::CrossEntropy)),
    };
    (x, y, probe)
}

type Matrix64 = dfdx_grow::Matrix<f64, Cpu>;

impl Run {
    fn new(log: &Path) -> Self {
        let dev = Cpu::default();
        let mlp = Mlp::<f64, Cpu>::new(&[5, 8, 8, 3], Activation::Tanh, &dev, &mut rng(11))
            .with_max_width(12);
        Run {
            mlp,
            opt: Adam::<f64>::new(AdamConfig::default()).unwrap(),
            ctl: GrowthController::new(policy(RESUME_POLICY), 77)
                .with_audit(AuditLog::open(log).unwrap()),
        }
    }

    fn train(&mut self, steps: std::ops::RangeInclusive<u64>) {
        let (x, y, probe) = resume_data();
        for s in steps {
            let (loss, mut grads) = step(&mut self.mlp, &mut self.opt, &x, &y);
            let m = Metrics::of(&self.mlp)
                .step(s)
                .epoch(s / 25)
                .train_loss(loss)
                .grads(&mut grads)
                .flops(s as f64 * 1e3)
                .build()
                .unwrap();
            self.ctl
                .observe(&m, &mut self.mlp, &mut self.opt, Some(&probe))
                .unwrap();
        }
    }
}

#[test]
fn a_run_resumed_from_a_checkpoint_after_a_crash_is_the_uninterrupted_run() {
    let (log_a, log_b, ckpt_path) = (temp("a.jsonl"), temp("b.jsonl"), temp("run.ckpt"));
    let mut a = Run::new(&log_a);
    a.train(1..=80);
    a.ctl.flush().unwrap();
    let records_a = AuditLog::read(&log_a).unwrap();
    // The run means something: a growth at each site, a refusal by the width cap after the
    // checkpoint, and a summary of declines pending at the checkpoint.
    assert_eq!(a.ctl.events().len(), 2);
    assert_eq!(a.mlp.widths(), vec![5, 12, 12, 3]);
    assert!(records_a.iter().any(|r| matches!(r,
        AuditRecord::Refused(x) if x.step == 60 && x.why.contains("width cap of 12"))));
    assert!(records_a.iter().any(|r| matches!(r,
        AuditRecord::Declined(d) if (d.first_step, d.step, d.count) == (30, 40, 2))));

    let mut b = Run::new(&log_b);
    b.train(1..=50);
    Checkpoint::of(&b.mlp)
        .with_optimizer(b.opt.save_state())
        .with_controller(b.ctl.state())
        .save(&ckpt_path)
        .unwrap();
    let at_checkpoint = AuditLog::read(&log_b).unwrap().len();
    // The run goes on past the checkpoint and crashes (no flush, no drop).
    b.train(51..=65);
    let at_crash = AuditLog::read(&log_b).unwrap().len();
    assert!(
        at_crash > at_checkpoint,
        "the crash must repeat some records"
    );
    std::mem::forget(b);

    // Resume: everything from the checkpoint, the log reopened for appending.
    let dev = Cpu::default();
    let ckpt = Checkpoint::load(&ckpt_path).unwrap();
    let mlp: Mlp<f64, Cpu> = ckpt.to_mlp(&dev).unwrap();
    assert_eq!(
        mlp.max_width(),
        12,
        "the width cap is part of the checkpoint"
    );
    let mut opt = Adam::<f64>::new(AdamConfig::default()).unwrap();
    ckpt.restore_optimizer(&mut opt, &mlp).unwrap();
    let mut ctl =
        GrowthController::new(policy(RESUME_POLICY), 0).with_audit(AuditLog::open(&log_b).unwrap());
    ctl.restore(ckpt.controller.as_ref().unwrap()).unwrap();
    let mut c = Run { mlp, opt, ctl };
    c.train(51..=80);
    c.ctl.flush().unwrap();

    assert_eq!(bits64(&c.mlp), bits64(&a.mlp), "the weights differ");
    assert_eq!(c.opt.state(), a.opt.state());
    assert_eq!(c.ctl.events(), a.ctl.events());
    assert_eq!(c.ctl.state(), a.ctl.state());
    // The log is the uninterrupted one once the records written between the checkpoint and
    // the crash (which the resumed run wrote again) are left out.
    let records_b = AuditLog::read(&log_b).unwrap();
    let mut without_repeat = records_b[..at_checkpoint].to_vec();
    without_repeat.extend_from_slice(&records_b[at_crash..]);
    assert_eq!(without_repeat, records_a);
    for p in [log_a, log_b, ckpt_path] {
        let _ = std::fs::remove_file(p);
    }
}

// --- Review item 1: the health checks due are part of the observation's transaction. ---

/// Grows `hidden.0` by 2 at step 1; at step 5, while `broken` is set, names a site the model
/// does not have (a policy file with a typo, fixed before the observation is made again).
#[derive(Debug)]
struct TypoAtStep5 {
    broken: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl dfdx_grow::policy::GrowthPolicy for TypoAtStep5 {
    fn observe(&mut self, m: &Metrics) -> Option<dfdx_grow::policy::Decision> {
        let broken = self.broken.load(std::sync::atomic::Ordering::SeqCst);
        let site = match m.step {
            1 => "hidden.0",
            5 if broken => "hidden.9",
            _ => return None,
        };
        Some(dfdx_grow::policy::Decision {
            growths: vec![dfdx_grow::policy::Growth::Width {
                site: site.into(),
                k: 2,
                init: dfdx_grow::Init::ZerosOut,
            }],
            policy: "typo".into(),
            reason: "test".into(),
            evidence: Default::default(),
        })
    }
    fn name(&self) -> String {
        "typo".into()
    }
    fn save_state(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    fn load_state(&mut self, _: &serde_json::Value) -> Result<(), dfdx_grow::policy::PolicyError> {
        Ok(())
    }
}

/// Sets the bias of units `units` of `layers.0` to `value`.
fn set_hidden_bias(mlp: &mut Mlp<f64, Cpu>, units: &[usize], value: f64) {
    mlp.visit_mut(&mut |name, mut p| {
        if name == "layers.0.bias" {
            let mut b = vec![0.0; p.as_ref().len()];
            p.as_ref().copy_into(&mut b);
            for &u in units {
                b[u] = value;
            }
            p.copy_from(&b);
        }
    });
}

#[test]
fn an_error_after_a_due_health_check_keeps_nothing_of_it_and_the_retry_runs_it() {
    use dfdx_grow::{HealthAction, HealthCheck};
    let dev = Cpu::default();
    let mut r = rng(31);
    let mut mlp = Mlp::<f64, Cpu>::new(&[4, 6, 3], Activation::Relu, &dev, &mut r);
    let mut opt = Adam::<f64>::new(AdamConfig::default()).unwrap();
    let probe = Probe {
        input: input::<f64>(&dev, 8, 4, &mut r),
        target: Some((one_hot::<f64>(&dev, 8, 3, &mut r), Loss::CrossEntropy)),
    };
    let log = temp("health-txn.jsonl");
    let broken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let typo = TypoAtStep5 {
        broken: broken.clone(),
    };
    let mut ctl = GrowthController::new(Box::new(typo), 3)
        .with_audit(AuditLog::open(&log).unwrap())
        .with_health(HealthCheck {
            after_steps: 4,
            dead_share: 0.5,
            action: HealthAction::Reinitialise,
        })
        .unwrap();
    let m64 = |mlp: &Mlp<f64, Cpu>, s| Metrics::of(mlp).step(s).build().unwrap();
    for s in 1..=4 {
        ctl.observe(&m64(&mlp, s), &mut mlp, &mut opt, Some(&probe))
            .unwrap();
    }
    assert_eq!(mlp.widths(), vec![4, 8, 3]);
    // The two new units never fire on the probe: the check due at step 5 finds them dead and
    // would re-initialise them.
    set_hidden_bias(&mut mlp, &[6, 7], -100.0);
    let (records, weights, state, opt_state) = (
        AuditLog::read(&log).unwrap(),
        bits64(&mlp),
        ctl.state(),
        opt.save_state(),
    );
    let e = ctl
        .observe(&m64(&mlp, 5), &mut mlp, &mut opt, Some(&probe))
        .unwrap_err();
    assert!(matches!(e, ControllerError::Policy(_)), "{e}");
    assert_eq!(
        AuditLog::read(&log).unwrap(),
        records,
        "a health record was kept"
    );
    assert_eq!(bits64(&mlp), weights, "the re-initialisation was kept");
    assert_eq!(ctl.state(), state, "the check due was consumed");
    assert_eq!(opt.save_state(), opt_state);

    // The policy is fixed and the observation made again: the health check runs now.
    broken.store(false, std::sync::atomic::Ordering::SeqCst);
    let out = ctl
        .observe(&m64(&mlp, 5), &mut mlp, &mut opt, Some(&probe))
        .unwrap();
    assert_eq!(out, Outcome::Idle);
    let after = AuditLog::read(&log).unwrap();
    assert_eq!(after.len(), records.len() + 1);
    let Some(AuditRecord::Health(h)) = after.last() else {
        panic!("no health record: {after:?}")
    };
    assert_eq!((h.step, h.site.as_str()), (5, "hidden.0"));
    assert_eq!((h.mostly_dead.clone(), h.reinitialised), (vec![1], 2));
    assert_ne!(
        bits64(&mlp),
        weights,
        "the dead units were not re-initialised"
    );
    let _ = std::fs::remove_file(&log);
}

// --- Review item 5: a refusal repeated in a row is written once, then summarised. ---

#[test]
fn identical_refusals_in_a_row_are_written_once_and_their_repeats_as_one_record() {
    let dev = Cpu::default();
    let mut mlp =
        Mlp::<f64, Cpu>::new(&[4, 8, 6, 2], Activation::Relu, &dev, &mut rng(2)).with_max_width(8);
    let mut opt = Adam::<f64>::new(AdamConfig::default()).unwrap();
    // hidden.0 is at its cap: every growth of it is refused, identically; hidden.1 grows at 6.
    let ron = "Schedule(events: [
        (at: Step(1), target: Site(\"hidden.0\"), size: Fixed(1)),
        (at: Step(2), target: Site(\"hidden.0\"), size: Fixed(1)),
        (at: Step(3), target: Site(\"hidden.0\"), size: Fixed(1)),
        (at: Step(4), target: Site(\"hidden.0\"), size: Fixed(1)),
        (at: Step(5), target: Site(\"hidden.0\"), size: Fixed(1)),
        (at: Step(6), target: Site(\"hidden.1\"), size: Fixed(1)),
        (at: Step(7), target: Site(\"hidden.0\"), size: Fixed(1)),
        (at: Step(8), target: Site(\"hidden.0\"), size: Fixed(1)),
    ])";
    let log = temp("refusals.jsonl");
    let mut ctl = GrowthController::new(policy(ron), 1).with_audit(AuditLog::open(&log).unwrap());
    let mut refused = 0;
    for s in 1..=8 {
        let m = Metrics::of(&mlp).step(s).build().unwrap();
        let out = ctl.observe(&m, &mut mlp, &mut opt, None).unwrap();
        refused += u64::from(matches!(out, Outcome::Refused(_)));
    }
    assert_eq!(refused, 7, "every refusal is still an outcome");
    ctl.flush().unwrap();
    let summary: Vec<(&str, Option<u64>, u64, u64)> = AuditLog::read(&log)
        .unwrap()
        .iter()
        .map(|r| match r {
            AuditRecord::Refused(e) => ("refused", e.first_step, e.step, e.count),
            AuditRecord::Growth(g) => ("growth", None, g.step, 1),
            _ => ("other", None, 0, 0),
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("refused", None, 1, 1),
            ("refused", Some(2), 5, 4),
            ("growth", None, 6, 1),
            ("refused", None, 7, 1),
            ("refused", Some(8), 8, 1),
        ]
    );
    let _ = std::fs::remove_file(&log);
}

// --- Review item 9: a summary flushed at drop after a checkpoint is not written again. ---

#[test]
fn a_summary_written_when_the_controller_dropped_is_not_written_again_after_resume() {
    let dev = Cpu::default();
    let mut mlp = Mlp::<f64, Cpu>::new(&[4, 8, 2], Activation::Relu, &dev, &mut rng(0));
    let mut opt = Adam::<f64>::new(AdamConfig::default()).unwrap();
    let declines = "Limits(max_events: 1, policy: Schedule(events: [
        (at: Step(2), target: Layer(0), size: Fixed(1)),
        (at: Step(3), target: Layer(0), size: Fixed(1)),
        (at: Step(4), target: Layer(0), size: Fixed(1)),
        (at: Step(5), target: Layer(0), size: Fixed(1)),
    ]))";
    let log = temp("drop-resume.jsonl");
    let mut ctl =
        GrowthController::new(policy(declines), 0).with_audit(AuditLog::open(&log).unwrap());
    for s in 2..=4 {
        let m = Metrics::of(&mlp).step(s).build().unwrap();
        ctl.observe(&m, &mut mlp, &mut opt, None).unwrap();
    }
    // A checkpoint, then a graceful exit: dropping the controller writes the summary.
    let state = ctl.state();
    drop(ctl);
    let mut ctl =
        GrowthController::new(policy(declines), 0).with_audit(AuditLog::open(&log).unwrap());
    ctl.restore(&state).unwrap();
    let m = Metrics::of(&mlp).step(5).build().unwrap();
    ctl.observe(&m, &mut mlp, &mut opt, None).unwrap();
    drop(ctl);
    let declined: Vec<(u64, u64, u64)> = AuditLog::read(&log)
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            AuditRecord::Declined(d) => Some((d.first_step, d.step, d.count)),
            _ => None,
        })
        .collect();
    // Three declines (steps 3, 4, 5), each counted once.
    assert_eq!(declined, vec![(3, 4, 2), (5, 5, 1)]);

    // The same for repeated refusals, with the state restored before the log is given.
    let mut capped =
        Mlp::<f64, Cpu>::new(&[4, 8, 2], Activation::Relu, &dev, &mut rng(0)).with_max_width(8);
    let refusals = "Schedule(events: [
        (at: Step(1), target: Layer(0), size: Fixed(1)),
        (at: Step(2), target: Layer(0), size: Fixed(1)),
        (at: Step(3), target: Layer(0), size: Fixed(1)),
        (at: Step(4), target: Layer(0), size: Fixed(1)),
    ])";
    let log = temp("drop-resume-refused.jsonl");
    let mut ctl =
        GrowthController::new(policy(refusals), 0).with_audit(AuditLog::open(&log).unwrap());
    for s in 1..=3 {
        let m = Metrics::of(&capped).step(s).build().unwrap();
        ctl.observe(&m, &mut capped, &mut opt, None).unwrap();
    }
    let state = ctl.state();
    drop(ctl);
    let mut ctl = GrowthController::new(policy(refusals), 0);
    ctl.restore(&state).unwrap();
    let mut ctl = ctl.with_audit(AuditLog::open(&log).unwrap());
    let m = Metrics::of(&capped).step(4).build().unwrap();
    ctl.observe(&m, &mut capped, &mut opt, None).unwrap();
    drop(ctl);
    let refused: Vec<(Option<u64>, u64, u64)> = AuditLog::read(&log)
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            AuditRecord::Refused(e) => Some((e.first_step, e.step, e.count)),
            _ => None,
        })
        .collect();
    // Four refusals: the first in full, its repeats at 2-3 written at the drop, then (the run
    // over) the one at 4 in full.
    assert_eq!(refused, vec![(None, 1, 1), (Some(2), 3, 2), (None, 4, 1)]);
    let _ = std::fs::remove_file(&log);
}
