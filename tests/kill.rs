//! SIGKILL at random points, over and over: the audit log always reads back after the repair
//! `AuditLog::open` makes, with every acknowledged record in it; a checkpoint saved with
//! `Checkpoint::save` always loads, as the whole old or the whole new checkpoint, never older
//! than the last acknowledged save.
//!
//! The writers are this test binary run again with an environment variable that turns one
//! `child_role_*` test into a writer loop; the parent kills it a random time after it is ready.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dfdx_grow::audit::{AuditLog, AuditRecord, GrowthEvent};
use dfdx_grow::checkpoint::Checkpoint;
use dfdx_grow::dfdx::prelude::Cpu;
use dfdx_grow::init::Init;
use dfdx_grow::rand::{rngs::StdRng, Rng, SeedableRng};
use dfdx_grow::{Activation, Mlp, Params};

const AUDIT_ENV: &str = "DFDX_GROW_KILL_AUDIT_LOG";
const SAVE_ENV: &str = "DFDX_GROW_KILL_SAVE_TARGET";
const START_ENV: &str = "DFDX_GROW_KILL_START";

const KILLS: usize = 100;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dfdx_grow_kill_{}_{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// The record for `step`. Every third one carries a long reason (50 KB to 450 KB), so that
/// much of the writer's time is spent inside `write` calls spanning many pages, where a kill
/// can tear a line; the others are a few hundred bytes.
fn record(step: u64) -> AuditRecord {
    let reason = if step.is_multiple_of(3) {
        let n = 50_000 + (step * 7919 % 400_000) as usize;
        format!("long {step} {}", "r".repeat(n))
    } else {
        format!("short {step}")
    };
    AuditRecord::Growth(GrowthEvent {
        step,
        epoch: step / 100,
        site: format!("hidden.{}", step % 3),
        after: None,
        old_width: 32,
        new_width: 64,
        init: Init::ZerosOut,
        policy: "plateau".into(),
        reason,
        evidence: (0..5)
            .map(|i| (format!("e{i}"), (step + i) as f64 * 0.25))
            .collect::<BTreeMap<_, _>>(),
        params_before: 2410,
        params_after: 4810,
        loss_before: Some(0.5),
        loss_after: None,
        flops: step as f64 * 1e6,
        lr: None,
        informed: None,
        init_flops: None,
    })
}

/// The model of save number `gen`: a 16-h-4 MLP, h from 8 to 807 (checkpoints of about 3 KB
/// to 280 KB), weights drawn from a seed of `gen`, and `gen` itself as the first bias.
fn model_of(gen: u64) -> Mlp<f64, Cpu> {
    let hidden = 8 + (gen * 7919 % 800) as usize;
    let mut mlp = Mlp::<f64, Cpu>::new(
        &[16, hidden, 4],
        Activation::Relu,
        &Cpu::default(),
        &mut StdRng::seed_from_u64(gen),
    );
    mlp.visit_mut(&mut |name, mut p| {
        if name == "layers.0.bias" {
            let mut v = vec![0.0; p.as_ref().len()];
            p.as_ref().copy_into(&mut v);
            v[0] = gen as f64;
            p.copy_from(&v);
        }
    });
    mlp
}

/// The save number a checkpoint holds.
fn gen_of(c: &Checkpoint) -> u64 {
    let bias = c
        .tensors
        .iter()
        .find(|t| t.name == "layers.0.bias")
        .expect("the first bias");
    bias.values[0] as u64
}

fn start_from_env() -> u64 {
    std::env::var(START_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("start step")
}

/// With `AUDIT_ENV` set: open (and so repair) the log, then append groups of one to four
/// records forever, printing `ACK n` once the records up to step `n` are written.
#[test]
fn child_role_audit_writer_only_runs_when_asked() {
    let Ok(path) = std::env::var(AUDIT_ENV) else {
        return;
    };
    let mut step = start_from_env();
    let mut log = AuditLog::open(&path).expect("child opens the log");
    println!("READY");
    loop {
        let group: Vec<AuditRecord> = (step..step + 1 + step % 4).map(record).collect();
        log.append_all(&group).expect("child appends");
        step += group.len() as u64;
        println!("ACK {}", step - 1);
    }
}

/// With `SAVE_ENV` set: save the checkpoint of `model_of(gen)` for gen = start, start + 1,
/// ..., printing `ACK gen` after each save returns.
#[test]
fn child_role_checkpoint_saver_only_runs_when_asked() {
    let Ok(path) = std::env::var(SAVE_ENV) else {
        return;
    };
    // The models are made before the first save, so the kills land in saves.
    let start = start_from_env();
    let models: Vec<Checkpoint> = (start..start + 64)
        .map(|g| Checkpoint::of(&model_of(g)))
        .collect();
    println!("READY");
    for gen in start.. {
        let ckpt = match models.get((gen - start) as usize) {
            Some(c) => c.clone(),
            None => Checkpoint::of(&model_of(gen)),
        };
        ckpt.save(&path).expect("child saves");
        println!("ACK {gen}");
    }
}

/// A writer process, its readiness, and the last number it acknowledged.
struct Writer {
    child: std::process::Child,
    ready: mpsc::Receiver<()>,
    acks: JoinHandle<Option<u64>>,
}

fn spawn(role: &str, env: &str, path: &Path, start: u64) -> Writer {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([role, "--exact", "--nocapture", "--test-threads=1"])
        .env(env, path)
        .env(START_ENV, start.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn writer");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, ready) = mpsc::channel();
    // Drains the pipe (so the writer never blocks on it) and keeps the last ACK.
    let acks = std::thread::spawn(move || {
        let mut last = None;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains("READY") {
                let _ = tx.send(());
            } else if let Some(n) = line.strip_prefix("ACK ") {
                last = n.trim().parse().ok();
            }
        }
        last
    });
    Writer { child, ready, acks }
}

/// Waits until the writer is ready, lets it run for a random 0-6 ms, SIGKILLs it, and returns
/// the last number it acknowledged.
fn kill_at_random(mut w: Writer, rng: &mut StdRng) -> Option<u64> {
    w.ready
        .recv_timeout(Duration::from_secs(30))
        .expect("the writer never got ready");
    std::thread::sleep(Duration::from_micros(rng.gen_range(0..6000)));
    w.child.kill().expect("SIGKILL");
    let status = w.child.wait().expect("wait");
    assert!(!status.success(), "the writer was killed, not finished");
    w.acks.join().expect("ack reader")
}

#[test]
fn audit_log_reads_back_with_every_acknowledged_record_after_100_random_kills() {
    let dir = scratch("audit");
    let mut rng = StdRng::seed_from_u64(0x5eed_a0d1);
    let (mut repairs, mut cut_bytes, mut records_checked) = (0, 0, 0);
    let start = Instant::now();
    // A fresh log every 5 kills keeps the files (and the time to check them) small; each
    // log is still reopened, repaired and appended to by 4 writers after the first.
    for round in 0..KILLS / 5 {
        let path = dir.join(format!("round{round}.jsonl"));
        let mut next = 0u64;
        for _ in 0..5 {
            let acked = kill_at_random(
                spawn(
                    "child_role_audit_writer_only_runs_when_asked",
                    AUDIT_ENV,
                    &path,
                    next,
                ),
                &mut rng,
            );
            // The open a resumed run would make: cuts a torn last line.
            let log = AuditLog::open(&path).expect("reopen after the kill");
            if let Some(r) = log.repaired() {
                repairs += 1;
                cut_bytes += r.removed_bytes;
            }
            drop(log);
            let records = AuditLog::read(&path).expect("every line reads back after the repair");
            // Every record whole and in order: steps 0, 1, 2, ... with the content written.
            for (i, r) in records.iter().enumerate() {
                assert_eq!(r, &record(i as u64), "{}: record {i}", path.display());
            }
            records_checked += records.len();
            let n = records.len() as u64;
            if let Some(a) = acked {
                assert!(
                    n > a,
                    "step {a} was acknowledged but the log ends before it ({n} records)"
                );
            }
            next = n;
        }
    }
    eprintln!(
        "{KILLS} kills in {:.1} s: {repairs} torn endings cut ({cut_bytes} bytes), \
         {records_checked} records checked",
        start.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn checkpoint_saves_load_as_the_whole_old_or_new_checkpoint_after_100_random_kills() {
    let dir = scratch("save");
    let target = dir.join("model.ckpt");
    let mut rng = StdRng::seed_from_u64(0x5eed_5a7e);
    let (mut next, mut leftovers) = (0u64, 0);
    let start = Instant::now();
    for _ in 0..KILLS {
        let acked = kill_at_random(
            spawn(
                "child_role_checkpoint_saver_only_runs_when_asked",
                SAVE_ENV,
                &target,
                next,
            ),
            &mut rng,
        );
        let found = if target.exists() {
            let c = Checkpoint::load(&target).expect("the checkpoint loads after the kill");
            let gen = gen_of(&c);
            assert!(
                c == Checkpoint::of(&model_of(gen)),
                "the checkpoint of save {gen} is not that save's model"
            );
            Some(gen)
        } else {
            None
        };
        // Never older than the last save that returned, never newer than the one after it.
        if let Some(a) = acked {
            let g = found.expect("a save was acknowledged, so the file exists");
            assert!(g == a || g == a + 1, "acknowledged {a}, found {g}");
        }
        assert!(
            found.is_none_or(|g| g + 1 >= next),
            "found {found:?} after starting at {next}"
        );
        // A killed save may leave its temporary file: a hidden name of its own, never the
        // target's or another file's.
        for entry in std::fs::read_dir(&dir).expect("list") {
            let name = entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned();
            if name == "model.ckpt" {
                continue;
            }
            assert!(
                name.starts_with(".model.ckpt.") && name.ends_with(".tmp"),
                "unexpected file {name}"
            );
            std::fs::remove_file(dir.join(&name)).expect("remove leftover");
            leftovers += 1;
        }
        next = found
            .map_or(next, |g| g + 1)
            .max(acked.map_or(0, |a| a + 1));
    }
    eprintln!(
        "{KILLS} kills in {:.1} s: {next} checkpoints saved, {leftovers} temporary files left by \
         kills",
        start.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
