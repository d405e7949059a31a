//! The audit log: round trip, non-finite numbers, summarised declines, table, and crash
//! safety.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dfdx_grow::audit::{summary_table, AuditLog, AuditRecord, DeclinedEvent, GrowthEvent};
use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::init::Init;
use dfdx_grow::optim::{Adam, AdamConfig};
use dfdx_grow::policy::{policy_from_str, Metrics};
use dfdx_grow::rand::{rngs::StdRng, SeedableRng};
use dfdx_grow::{Activation, GrowthController, Mlp, Outcome};

const WRITER_ENV: &str = "DFDX_GROW_AUDIT_WRITER";
const MODE_ENV: &str = "DFDX_GROW_AUDIT_MODE";

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "dfdx_grow_audit_{}_{name}.jsonl",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&p);
    p
}

fn event(step: u64) -> GrowthEvent {
    GrowthEvent {
        step,
        epoch: step / 100,
        site: "hidden.0".into(),
        old_width: 32,
        new_width: 64,
        init: Init::CopyHalveNoise { std: 0.01 },
        after: None,
        policy: "any_of[1]/plateau".into(),
        reason: "loss has not improved".into(),
        evidence: BTreeMap::from([("p_value".to_string(), 0.4), ("slope".to_string(), -1e-5)]),
        params_before: 2410,
        params_after: 4810,
        loss_before: Some(0.5),
        loss_after: Some(0.5),
        flops: step as f64 * 1e6,
        lr: None,
        informed: None,
        init_flops: None,
    }
}

#[test]
fn growth_records_round_trip_including_non_finite_losses() {
    let path = tmp("round_trip");
    let mut log = AuditLog::open(&path).expect("open");
    let mut diverged = event(2);
    diverged.loss_after = Some(f64::NAN);
    diverged.evidence.insert("t".into(), f64::NEG_INFINITY);
    log.growth(event(1)).expect("write");
    log.growth(diverged).expect("write");
    drop(log);
    // Re-opening appends rather than truncating.
    AuditLog::open(&path)
        .expect("reopen")
        .growth(event(3))
        .expect("write");
    let records = AuditLog::read(&path).expect("read");
    assert_eq!(records.len(), 3);
    assert_eq!(records[0], AuditRecord::Growth(event(1)));
    let AuditRecord::Growth(g) = &records[1] else {
        panic!("growth expected")
    };
    assert!(g.loss_after.is_some_and(f64::is_nan));
    assert_eq!(g.evidence["t"], f64::NEG_INFINITY);
    let text = std::fs::read_to_string(&path).expect("text");
    assert!(
        text.lines().all(|l| l.contains("\"kind\":\"growth\"")),
        "{text}"
    );
}

#[test]
fn identical_declines_are_summarised_in_one_record_with_their_count_and_steps() {
    let path = tmp("declined");
    let dev = Cpu::default();
    let mut mlp = Mlp::<f32, Cpu>::new(
        &[4, 8, 2],
        Activation::Relu,
        &dev,
        &mut StdRng::seed_from_u64(0),
    );
    let mut opt = Adam::<f32>::new(AdamConfig::default()).unwrap();
    // On a flat loss, a plateau of patience 1 asks for a growth at every observation from the
    // second on; the width limit leaves no room, so each one is declined.
    let policy = policy_from_str(
        "Limits(max_width: 8, policy: Plateau(monitor: Train, patience: 1, \
         target: Layer(0), size: Fixed(4)))",
        "inline",
    )
    .unwrap();
    let mut ctl = GrowthController::new(policy, 0).with_audit(AuditLog::open(&path).expect("open"));
    let mut observe = |ctl: &mut GrowthController, step: u64| {
        let m = Metrics::of(&mlp)
            .step(step)
            .train_loss(1.0)
            .build()
            .unwrap();
        let outcome = ctl.observe(&m, &mut mlp, &mut opt, None).expect("observe");
        assert_eq!(outcome, Outcome::Idle, "step {step}");
    };
    for step in 1..=8 {
        observe(&mut ctl, step);
    }
    // The summary is written when the run of identical declines ends (or on flush).
    assert_eq!(AuditLog::read(&path).expect("read"), vec![]);
    ctl.flush().expect("flush");
    let records = AuditLog::read(&path).expect("read");
    let [AuditRecord::Declined(d)] = records.as_slice() else {
        panic!("one declined record expected: {records:?}")
    };
    assert_eq!(
        (d.first_step, d.step, d.epoch, d.count),
        (2, 8, 0, 7),
        "{d:?}"
    );
    assert_eq!(d.sites, vec!["hidden.0".to_string()]);
    assert_eq!(d.policy, "plateau");
    assert!(d.why.contains("max_width 8"), "{}", d.why);
    // A second flush has nothing left to write.
    ctl.flush().expect("flush");
    assert_eq!(AuditLog::read(&path).expect("read").len(), 1);
    // Declines after the flush start a new record, which dropping the controller writes.
    for step in 9..=10 {
        observe(&mut ctl, step);
    }
    drop(ctl);
    let records = AuditLog::read(&path).expect("read");
    assert_eq!(records.len(), 2);
    assert_eq!(
        records[1],
        AuditRecord::Declined(DeclinedEvent {
            first_step: 9,
            step: 10,
            count: 2,
            ..d.clone()
        })
    );
}

#[test]
fn a_bad_line_is_reported_with_its_number() {
    let path = tmp("bad_line");
    AuditLog::open(&path)
        .expect("open")
        .growth(event(1))
        .expect("write");
    std::fs::write(
        &path,
        format!(
            "{}{{\"kind\":\"growth\",\n",
            std::fs::read_to_string(&path).expect("read")
        ),
    )
    .expect("write");
    let msg = AuditLog::read(&path)
        .expect_err("line 2 is broken")
        .to_string();
    assert!(msg.contains(":2:"), "{msg}");
}

#[test]
fn summary_table_aligns_columns() {
    let records = vec![
        AuditRecord::Growth(event(5)),
        AuditRecord::Growth(event(12345)),
    ];
    let table = summary_table(&records);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0].starts_with("step"));
    let col = |l: &str| l.find("growth").expect("kind column");
    assert_eq!(col(lines[1]), col(lines[2]));
    assert_eq!(lines[0].find("kind"), Some(col(lines[1])));
    assert!(lines[2].contains("32->64") && lines[2].contains("2410->4810"));
}

/// When the env var is set this test is the child writer: it appends records forever (or
/// aborts after a few), and is killed by the parent test.
#[test]
fn child_writer_role_only_runs_when_asked() {
    let Ok(path) = std::env::var(WRITER_ENV) else {
        assert!(std::env::var(MODE_ENV).is_err());
        return;
    };
    let mut log = AuditLog::open(&path).expect("child opens log");
    let abort_after = std::env::var(MODE_ENV)
        .ok()
        .and_then(|m| m.parse::<u64>().ok());
    for step in 0.. {
        log.growth(event(step)).expect("child writes");
        if abort_after == Some(step + 1) {
            std::process::abort();
        }
    }
}

fn spawn_writer(path: &PathBuf, mode: Option<&str>) -> std::process::Child {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args([
        "child_writer_role_only_runs_when_asked",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(WRITER_ENV, path)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if let Some(m) = mode {
        cmd.env(MODE_ENV, m);
    }
    cmd.spawn().expect("spawn child")
}

fn assert_all_lines_parse_in_order(path: &PathBuf, at_least: usize) {
    // Opening cuts a line torn by the kill, as a resumed run's open would.
    AuditLog::open(path).expect("reopen the killed writer's log");
    let records = AuditLog::read(path).expect("every line of the killed writer's log parses");
    assert!(records.len() >= at_least, "only {} records", records.len());
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r, &AuditRecord::Growth(event(i as u64)));
    }
}

#[test]
fn a_writer_killed_mid_run_leaves_a_log_whose_lines_all_parse() {
    let path = tmp("killed");
    let mut child = spawn_writer(&path, None);
    let start = Instant::now();
    while std::fs::read_to_string(&path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
        < 200
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "child wrote too little"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("kill");
    let status = child.wait().expect("wait");
    assert!(!status.success());
    assert_all_lines_parse_in_order(&path, 200);
}

#[test]
fn a_writer_that_aborts_loses_no_reported_record() {
    let path = tmp("aborted");
    let status = spawn_writer(&path, Some("50")).wait().expect("wait");
    assert!(!status.success(), "abort is a failure exit");
    let records = AuditLog::read(&path).expect("read");
    assert_eq!(records.len(), 50);
    assert_all_lines_parse_in_order(&path, 50);
}
