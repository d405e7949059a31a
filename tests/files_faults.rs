//! The "Files" rule of issue 10 at the checkpoint and audit-log level (items 4 and 7): saves
//! never touch another file and never mix two saves; reads refuse devices and FIFOs at once
//! and bound what one line of a log may take.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use dfdx_grow::audit::{AuditError, AuditLog, AuditRecord, DeclinedEvent, MAX_LINE_BYTES};
use dfdx_grow::checkpoint::{Checkpoint, CheckpointError};
use dfdx_grow::dfdx::prelude::Cpu;
use dfdx_grow::rand::{rngs::StdRng, SeedableRng};
use dfdx_grow::{Activation, Mlp};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dfdx-grow-files-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn ckpt(seed: u64, hidden: usize) -> Checkpoint {
    let m = Mlp::<f32, Cpu>::new(
        &[6, hidden, 3],
        Activation::Relu,
        &Cpu::default(),
        &mut StdRng::seed_from_u64(seed),
    );
    Checkpoint::of(&m)
}

/// Runs `f` on another thread and fails the test if it does not return within 2 s.
fn within_two_seconds<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(2))
        .expect("blocked instead of refusing")
}

#[test]
fn checkpoint_load_refuses_dev_zero_a_fifo_and_a_directory_at_once() {
    let dir = scratch("load");
    let fifo = dir.join("fifo.ckpt");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for path in [PathBuf::from("/dev/zero"), fifo, dir.clone()] {
        let p = path.clone();
        let e = within_two_seconds(move || Checkpoint::load(&p)).expect_err("not a file");
        assert!(matches!(e, CheckpointError::Io { .. }), "{e:?}");
        let shown = e.to_string();
        assert!(
            shown.contains(&path.display().to_string()) && shown.contains("not a regular file"),
            "{shown}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn checkpoint_saves_touch_no_sibling_and_concurrent_saves_each_keep_their_model() {
    let dir = scratch("siblings");
    // A target named like a temporary file, and an unrelated `.tmp` next to a `.json` target.
    std::fs::write(dir.join("notes.tmp"), b"my notes").unwrap();
    let (a, b) = (ckpt(1, 5), ckpt(2, 9));
    a.save(dir.join("model.tmp")).unwrap();
    a.save(dir.join("notes.json")).unwrap();
    assert_eq!(std::fs::read(dir.join("notes.tmp")).unwrap(), b"my notes");
    assert_eq!(Checkpoint::load(dir.join("model.tmp")).unwrap(), a);
    assert_eq!(Checkpoint::load(dir.join("notes.json")).unwrap(), a);

    // `run.json` and `run.ckpt` saved at once, 20 times each: each file holds its own model.
    let targets = [
        (dir.join("run.json"), a.clone()),
        (dir.join("run.ckpt"), b.clone()),
    ];
    let handles: Vec<_> = targets
        .iter()
        .cloned()
        .map(|(path, c)| {
            std::thread::spawn(move || {
                for _ in 0..20 {
                    c.save(&path).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    for (path, c) in &targets {
        assert_eq!(&Checkpoint::load(path).unwrap(), c, "{}", path.display());
    }
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "model.tmp",
            "notes.json",
            "notes.tmp",
            "run.ckpt",
            "run.json"
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn declined(step: u64) -> AuditRecord {
    AuditRecord::Declined(DeclinedEvent {
        first_step: step,
        step,
        epoch: 0,
        policy: "schedule".into(),
        why: "max_events 1 reached".into(),
        sites: vec!["hidden.0".into()],
        count: 1,
    })
}

#[test]
fn an_audit_line_past_the_bound_is_an_error_naming_it_and_lenient_reading_skips_it() {
    let dir = scratch("long-line");
    let path = dir.join("log.jsonl");
    let line = |r: &AuditRecord| format!("{}\n", serde_json::to_string(r).unwrap());
    std::fs::write(&path, line(&declined(1))).unwrap();
    // A hole of zeros one past the bound (sparse: no disk written), then a good record.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len + MAX_LINE_BYTES as u64 + 1).unwrap();
    drop(f);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(format!("\n{}", line(&declined(3))).as_bytes())
        .unwrap();
    drop(f);

    let e = AuditLog::read(&path).expect_err("line 2 is too long");
    assert!(
        matches!(&e, AuditError::Parse { line: 2, message, .. } if message.contains("longer than")),
        "{e:?}"
    );
    let lenient = AuditLog::read_lenient(&path).unwrap();
    assert_eq!(lenient.records, vec![declined(1), declined(3)]);
    assert_eq!(lenient.bad_lines.len(), 1);
    assert_eq!(lenient.bad_lines[0].line, 2);
    let _ = std::fs::remove_dir_all(&dir);
}
