//! Atomic writes and bounded reads: temporary names that collide with nothing, concurrent
//! saves that keep their own content, refusals of non-regular and oversized files.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dfdx_grow::fsio::{open_regular, read_bounded, write_atomic, write_atomic_with, FileError};

/// A fresh, empty directory of this test's own.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dfdx_grow_fsio_{}_{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_target_named_model_tmp_is_replaced_whole_and_leaves_no_other_file() {
    let dir = scratch("model_tmp");
    let target = dir.join("model.tmp");
    write_atomic(&target, b"old model").expect("first save");
    write_atomic(&target, &[7u8; 100_000]).expect("second save");
    assert_eq!(std::fs::read(&target).expect("read"), vec![7u8; 100_000]);
    assert_eq!(names(&dir), ["model.tmp"]);
}

#[test]
fn an_unrelated_notes_tmp_is_never_touched() {
    let dir = scratch("notes");
    std::fs::write(dir.join("notes.tmp"), b"my notes").expect("write notes.tmp");
    write_atomic(dir.join("notes.json"), b"{}").expect("save");
    write_atomic(dir.join("notes"), b"x").expect("save without extension");
    assert_eq!(
        std::fs::read(dir.join("notes.tmp")).expect("read"),
        b"my notes"
    );
    assert_eq!(names(&dir), ["notes", "notes.json", "notes.tmp"]);
}

#[test]
fn two_targets_saved_concurrently_each_end_with_their_own_content() {
    let dir = scratch("concurrent");
    let run = |name: &'static str| {
        let target = dir.join(name);
        std::thread::spawn(move || {
            for i in 0..300u32 {
                // Sizes differ from save to save so that a mixed-up file shows.
                let content = format!("{name} {i} {}", "#".repeat((i as usize * 37) % 5000));
                write_atomic(&target, content.as_bytes()).expect("save");
                let back = std::fs::read_to_string(&target).expect("read back");
                assert_eq!(back, content, "{name} after save {i}");
            }
        })
    };
    let a = run("run.json");
    let b = run("run.ckpt");
    a.join().expect("run.json thread");
    b.join().expect("run.ckpt thread");
    assert_eq!(names(&dir), ["run.ckpt", "run.json"]);
}

#[test]
fn concurrent_saves_of_one_target_leave_one_complete_content() {
    let dir = scratch("same_target");
    let target = dir.join("shared.bin");
    let contents: Vec<Vec<u8>> = (0..4u8).map(|t| vec![t; 50_000 + t as usize]).collect();
    let threads: Vec<_> = contents
        .iter()
        .cloned()
        .map(|c| {
            let target = target.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    write_atomic(&target, &c).expect("save");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let end = std::fs::read(&target).expect("read");
    assert!(contents.contains(&end), "a mix of {} bytes", end.len());
    assert_eq!(names(&dir), ["shared.bin"]);
}

#[test]
fn a_failing_writer_leaves_the_old_file_and_no_temporary() {
    let dir = scratch("failing_writer");
    let target = dir.join("ckpt.json");
    write_atomic(&target, b"good old content").expect("save");
    let e = write_atomic_with(&target, |w| {
        io::Write::write_all(w, &[1u8; 200_000])?;
        Err(io::Error::other("serialiser gave up"))
    })
    .expect_err("the writer failed");
    assert!(matches!(e, FileError::Io { op: "write", .. }), "{e:?}");
    assert!(e.to_string().contains("serialiser gave up"), "{e}");
    assert_eq!(std::fs::read(&target).expect("read"), b"good old content");
    assert_eq!(names(&dir), ["ckpt.json"]);
}

#[test]
fn saving_into_a_missing_directory_is_an_error_naming_it() {
    let dir = scratch("missing_dir");
    let target = dir.join("no").join("such").join("model.json");
    let e = write_atomic(&target, b"x").expect_err("no directory");
    assert!(matches!(e, FileError::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("no/such"), "{e}");
}

#[test]
fn a_path_without_a_file_name_is_refused() {
    for p in ["/", "..", ""] {
        let e = write_atomic(p, b"x").expect_err(p);
        assert!(matches!(e, FileError::NoFileName { .. }), "{p}: {e:?}");
    }
}

#[test]
fn a_relative_file_name_is_written_in_the_current_directory() {
    // Only checks that an empty parent means ".": the name is unique to this process.
    let name = format!("dfdx_grow_fsio_relative_{}.txt", std::process::id());
    write_atomic(&name, b"here").expect("save");
    assert_eq!(std::fs::read(&name).expect("read"), b"here");
    std::fs::remove_file(&name).expect("clean up");
}

/// Runs `f` on another thread and fails the test if it takes more than two seconds, so that a
/// read that blocks shows as a failure rather than a hung test.
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
fn a_fifo_is_refused_at_once_without_blocking() {
    let dir = scratch("fifo");
    let fifo = dir.join("policy.ron");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo failed");
    let start = Instant::now();
    let f = fifo.clone();
    let e = within_two_seconds(move || read_bounded(&f, 1 << 20)).expect_err("a FIFO");
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(
        matches!(&e, FileError::NotRegular { kind: "a FIFO", .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("policy.ron"), "{e}");
    let f = fifo.clone();
    let e = within_two_seconds(move || open_regular(&f)).expect_err("a FIFO");
    assert!(matches!(e, FileError::NotRegular { .. }), "{e:?}");
}

#[cfg(unix)]
#[test]
fn dev_zero_is_refused_at_once() {
    let e = within_two_seconds(|| read_bounded("/dev/zero", u64::MAX)).expect_err("a device");
    assert!(
        matches!(
            &e,
            FileError::NotRegular {
                kind: "a character device",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("/dev/zero"), "{e}");
    assert_eq!(e.into_io_error().kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn a_directory_is_refused() {
    let dir = scratch("a_dir");
    let e = read_bounded(&dir, 1 << 20).expect_err("a directory");
    assert!(
        matches!(
            &e,
            FileError::NotRegular {
                kind: "a directory",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.into_io_error().kind(), io::ErrorKind::IsADirectory);
}

#[test]
fn a_file_over_the_bound_is_refused_and_one_at_the_bound_is_read() {
    let dir = scratch("bound");
    let path = dir.join("big.ron");
    std::fs::write(&path, vec![b'a'; 101]).expect("write");
    let e = read_bounded(&path, 100).expect_err("101 > 100");
    assert!(
        matches!(
            e,
            FileError::TooLarge {
                size: 101,
                limit: 100,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("big.ron"), "{e}");
    assert_eq!(e.into_io_error().kind(), io::ErrorKind::FileTooLarge);
    assert_eq!(read_bounded(&path, 101).expect("at the bound").len(), 101);
    assert_eq!(read_bounded(&path, 0).expect_err("bound 0").path(), path);
    std::fs::write(&path, b"").expect("write");
    assert!(read_bounded(&path, 0).expect("empty at bound 0").is_empty());
}

#[test]
fn a_missing_file_keeps_its_not_found_kind() {
    let dir = scratch("missing");
    let e = read_bounded(dir.join("nope"), 10).expect_err("missing");
    assert!(e.to_string().contains("nope"), "{e}");
    assert_eq!(e.into_io_error().kind(), io::ErrorKind::NotFound);
}

#[cfg(unix)]
#[test]
fn load_spec_refuses_a_fifo_and_dev_zero_at_once_naming_the_file() {
    let dir = scratch("policy_fifo");
    let fifo = dir.join("grow.ron");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo failed");
    for path in [fifo, PathBuf::from("/dev/zero")] {
        let p = path.clone();
        let e = within_two_seconds(move || dfdx_grow::policy::load_spec(&p).map(|_| ()))
            .expect_err("not a regular file");
        let msg = e.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("not a regular file"), "{msg}");
    }
}

#[test]
fn load_spec_refuses_a_policy_file_over_one_mib_naming_it() {
    let dir = scratch("policy_big");
    let path = dir.join("huge.ron");
    // A valid policy file, padded with a comment past 1 MiB.
    let valid = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/schedule.ron");
    dfdx_grow::policy::load_spec(valid).expect("the unpadded file loads");
    let text = format!(
        "// {}\n{}",
        "x".repeat(1 << 20),
        std::fs::read_to_string(valid).expect("read")
    );
    std::fs::write(&path, text).expect("write");
    let msg = dfdx_grow::policy::load_spec(&path)
        .expect_err("over 1 MiB")
        .to_string();
    assert!(
        msg.contains("huge.ron") && msg.contains("over the limit"),
        "{msg}"
    );
}
