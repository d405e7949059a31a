//! The audit log's file handling: torn last lines cut away on open (and reported), lenient
//! reading with line numbers, multi-record appends, and a failed write that leaves the log as
//! it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use dfdx_grow::audit::{AuditError, AuditLog, AuditRecord, GrowthEvent};
use dfdx_grow::fsio::FileError;
use dfdx_grow::init::Init;

const FSIZE_ENV: &str = "DFDX_GROW_AUDIT_FSIZE_WRITER";

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "dfdx_grow_audit_repair_{}_{name}.jsonl",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&p);
    p
}

/// A growth record for `step` with `n_evidence` evidence entries (about 30 bytes each).
fn record(step: u64, n_evidence: usize) -> AuditRecord {
    AuditRecord::Growth(GrowthEvent {
        step,
        epoch: step / 100,
        site: "hidden.0".into(),
        old_width: 32,
        new_width: 64,
        init: Init::ZerosOut,
        after: None,
        policy: "plateau".into(),
        reason: "loss has not improved".into(),
        evidence: (0..n_evidence)
            .map(|i| (format!("e{i:05}"), i as f64 * 0.5))
            .collect::<BTreeMap<_, _>>(),
        params_before: 2410,
        params_after: 4810,
        loss_before: Some(0.5),
        loss_after: Some(0.5),
        flops: step as f64 * 1e6,
        lr: None,
        informed: None,
        init_flops: None,
    })
}

fn line_of(r: &AuditRecord) -> String {
    format!("{}\n", serde_json::to_string(r).expect("serialise"))
}

/// Writes `records` and then `tail` (raw bytes) to a fresh log.
fn log_with_tail(name: &str, records: &[AuditRecord], tail: &[u8]) -> PathBuf {
    let path = tmp(name);
    let mut bytes: Vec<u8> = records
        .iter()
        .flat_map(|r| line_of(r).into_bytes())
        .collect();
    bytes.extend_from_slice(tail);
    std::fs::write(&path, bytes).expect("write log");
    path
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("metadata").len()
}

#[test]
fn a_torn_last_line_is_cut_on_open_and_reported_and_appends_follow_cleanly() {
    let good = [record(1, 3), record(2, 3)];
    let torn = line_of(&record(3, 3));
    let fragment = &torn.as_bytes()[..torn.len() / 2];
    let path = log_with_tail("torn", &good, fragment);
    assert!(
        AuditLog::read(&path).is_err(),
        "torn line reads as an error"
    );
    let before = len(&path);

    let mut log = AuditLog::open(&path).expect("open");
    let repair = log.repaired().expect("a repair is reported").clone();
    assert_eq!(repair.removed_bytes, fragment.len() as u64);
    assert_eq!(repair.kept_bytes, before - fragment.len() as u64);
    assert_eq!(repair.why, "a last line without its newline");
    assert!(repair.removed_start.starts_with("{\"kind\":\"growth\""));
    let warning = repair.to_string();
    assert!(warning.contains(&path.display().to_string()), "{warning}");
    assert!(
        warning.contains(&format!("{} bytes", fragment.len())),
        "{warning}"
    );

    log.append(&record(3, 3)).expect("append");
    drop(log);
    assert_eq!(
        AuditLog::read(&path).expect("reads back"),
        [record(1, 3), record(2, 3), record(3, 3)]
    );
    // Opening again finds nothing to repair.
    assert!(AuditLog::open(&path).expect("reopen").repaired().is_none());
}

#[test]
fn a_torn_line_longer_than_the_scan_block_is_cut_whole() {
    // About 300 KB per line, so the backwards scan crosses several 64 KiB blocks.
    let big = line_of(&record(2, 20_000));
    assert!(big.len() > 200_000);
    let path = log_with_tail(
        "long_torn",
        &[record(1, 20_000)],
        &big.as_bytes()[..250_000],
    );
    let log = AuditLog::open(&path).expect("open");
    assert_eq!(log.repaired().expect("repaired").removed_bytes, 250_000);
    assert_eq!(AuditLog::read(&path).expect("reads"), [record(1, 20_000)]);
}

#[test]
fn a_whole_file_that_is_one_torn_line_is_cut_to_empty() {
    let path = log_with_tail("only_torn", &[], b"{\"kind\":\"gro");
    let log = AuditLog::open(&path).expect("open");
    assert_eq!(log.repaired().expect("repaired").kept_bytes, 0);
    assert_eq!(len(&path), 0);
    assert!(AuditLog::read(&path).expect("reads").is_empty());
}

#[test]
fn a_complete_last_line_that_is_not_json_is_cut() {
    // A crash of the machine can leave zeros where the last write was.
    let path = log_with_tail("zeros", &[record(1, 2)], b"\0\0\0\0\0\0\n");
    let log = AuditLog::open(&path).expect("open");
    let repair = log.repaired().expect("repaired");
    assert_eq!(repair.removed_bytes, 7);
    assert_eq!(repair.why, "a last line that is not JSON");
    assert_eq!(AuditLog::read(&path).expect("reads"), [record(1, 2)]);
}

#[test]
fn a_torn_fragment_after_a_line_that_is_not_json_cuts_both() {
    let path = log_with_tail("both", &[record(1, 2)], b"garbage\n{\"kind\":");
    let log = AuditLog::open(&path).expect("open");
    let repair = log.repaired().expect("repaired");
    assert_eq!(repair.removed_bytes, 8 + 8);
    assert!(repair.why.contains("without its newline") && repair.why.contains("not JSON"));
    assert_eq!(AuditLog::read(&path).expect("reads"), [record(1, 2)]);
}

#[test]
fn a_last_line_that_is_json_but_not_a_record_is_kept_for_the_reader_to_report() {
    // Could be a record of another version of the crate: not ours to delete.
    let path = log_with_tail("future", &[record(1, 2)], b"{\"kind\":\"future\"}\n");
    let before = len(&path);
    let log = AuditLog::open(&path).expect("open");
    assert!(log.repaired().is_none());
    drop(log);
    assert_eq!(len(&path), before);
    let e = AuditLog::read(&path).expect_err("line 2 is not a record");
    assert!(matches!(e, AuditError::Parse { line: 2, .. }), "{e:?}");
}

#[test]
fn a_clean_log_and_a_new_log_are_left_as_they_are() {
    let path = log_with_tail("clean", &[record(1, 2), record(2, 2)], b"\n");
    let before = std::fs::read(&path).expect("read");
    assert!(AuditLog::open(&path).expect("open").repaired().is_none());
    assert_eq!(std::fs::read(&path).expect("read"), before);

    let fresh = tmp("fresh");
    assert!(AuditLog::open(&fresh).expect("create").repaired().is_none());
    assert_eq!(len(&fresh), 0);
}

#[test]
fn read_names_the_first_bad_line_and_read_lenient_skips_every_bad_line() {
    let mut bytes = line_of(&record(1, 2)).into_bytes();
    bytes.extend_from_slice(b"{\"kind\":\"growth\",\"step\":\n");
    bytes.extend_from_slice(&line_of(&record(3, 2)).into_bytes());
    bytes.extend_from_slice(b"\n   \n");
    bytes.extend_from_slice(&[0xff, 0xfe, b'x', b'\n']);
    bytes.extend_from_slice(&line_of(&record(7, 2)).into_bytes());
    let path = tmp("lenient");
    std::fs::write(&path, &bytes).expect("write");

    let e = AuditLog::read(&path).expect_err("line 2 is broken");
    assert!(matches!(e, AuditError::Parse { line: 2, .. }), "{e:?}");
    assert!(e.to_string().contains(":2:"), "{e}");

    let lenient = AuditLog::read_lenient(&path).expect("lenient read");
    assert_eq!(lenient.records, [record(1, 2), record(3, 2), record(7, 2)]);
    let lines: Vec<usize> = lenient.bad_lines.iter().map(|b| b.line).collect();
    assert_eq!(lines, [2, 6]);
    assert!(lenient.bad_lines[0]
        .text_start
        .starts_with("{\"kind\":\"growth\""));
    assert!(!lenient.bad_lines[1].message.is_empty());
}

#[test]
fn append_all_writes_every_record_as_one_line_each_and_nothing_for_none() {
    let path = tmp("append_all");
    let mut log = AuditLog::open(&path).expect("open");
    let group = [record(1, 2), record(2, 2), record(3, 2)];
    log.append_all(&group).expect("append");
    log.append_all(&[]).expect("nothing");
    log.append(&record(4, 2)).expect("append one");
    drop(log);
    let text = std::fs::read_to_string(&path).expect("read");
    let expected: String = group.iter().chain([&record(4, 2)]).map(line_of).collect();
    assert_eq!(text, expected);
}

/// Runs `f` on another thread and fails the test if it takes more than two seconds.
fn within_two_seconds<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(2))
        .expect("the call blocked for over two seconds")
}

#[cfg(unix)]
#[test]
fn a_fifo_is_refused_by_open_and_read_without_blocking() {
    let fifo = tmp("fifo");
    let status = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(status.success());
    let f = fifo.clone();
    let e = within_two_seconds(move || AuditLog::open(&f).map(|_| ())).expect_err("FIFO");
    assert!(
        matches!(e, AuditError::File(FileError::NotRegular { .. })),
        "{e:?}"
    );
    assert!(e.to_string().contains(&fifo.display().to_string()), "{e}");
    let f = fifo.clone();
    let e = within_two_seconds(move || AuditLog::read(&f).map(|_| ())).expect_err("FIFO");
    assert!(matches!(e, AuditError::File(_)), "{e:?}");
    let _ = std::fs::remove_file(&fifo);
}

/// With `FSIZE_ENV` set, this test is a writer run under a file size limit (`ulimit -f`, with
/// SIGXFSZ ignored): it appends groups of records until a write fails, and checks that the
/// failed append left the log as it was.
#[test]
fn child_role_fsize_writer_only_runs_when_asked() {
    let Ok(path) = std::env::var(FSIZE_ENV) else {
        return;
    };
    let mut log = AuditLog::open(&path).expect("open");
    let mut written = 0u64;
    loop {
        let before = std::fs::read(&path).expect("read");
        let group: Vec<AuditRecord> = (0..4).map(|i| record(written + i, 4)).collect();
        match log.append_all(&group) {
            Ok(()) => written += 4,
            Err(e) => {
                assert!(
                    matches!(
                        &e,
                        AuditError::Append {
                            rollback_error: None,
                            ..
                        }
                    ),
                    "{e:?}"
                );
                assert!(e.to_string().contains("the log is unchanged"), "{e}");
                assert_eq!(std::fs::read(&path).expect("read"), before);
                break;
            }
        }
        assert!(written < 100_000, "the size limit never bit");
    }
    let records = AuditLog::read(&path).expect("the log reads back");
    assert_eq!(records.len() as u64, written);
    println!("CHILD-OK {written}");
}

#[cfg(unix)]
#[test]
fn a_write_that_fails_part_way_is_cut_back_so_the_log_is_unchanged() {
    let path = tmp("fsize");
    // 64 blocks of 512 bytes (dash's unit; bash in POSIX mode agrees): 32 KiB. A group is
    // about 1.6 KB, so some group's write crosses the limit part way and is cut short.
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"trap "" XFSZ; ulimit -f 64 && exec "$0" "$@""#)
        .arg(std::env::current_exe().expect("test binary"))
        .args([
            "child_role_fsize_writer_only_runs_when_asked",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(FSIZE_ENV, &path)
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHILD-OK"),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written: usize = stdout
        .split("CHILD-OK ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("count");
    assert!(written >= 4, "{written}");
    let records = AuditLog::read(&path).expect("reads back");
    assert_eq!(records.len(), written);
    assert!(len(&path) < 32 * 1024);
    assert!(AuditLog::open(&path).expect("open").repaired().is_none());
}
