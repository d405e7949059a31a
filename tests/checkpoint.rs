//! Saving and loading a grown model: exact, atomic, and resumable.

mod common;

use common::*;
use dfdx_grow::checkpoint::{Checkpoint, CheckpointError, FORMAT_VERSION};
use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::optim::{Adam, AdamConfig};
use dfdx_grow::{Activation, Init, Mlp};

fn temp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("dfdx-grow-ckpt-{}-{name}.json", std::process::id()))
}

#[test]
fn a_grown_model_and_its_adam_state_resume_exactly_after_save_and_load() {
    let dev = Cpu::default();
    let mut rng = rng(1);
    let mut mlp = Mlp::<f32, Cpu>::new(&[5, 4, 3], Activation::Gelu, &dev, &mut rng);
    let mut opt = Adam::<f32>::new(AdamConfig::default()).unwrap();
    let x = input::<f32>(&dev, 16, 5, &mut rng);
    let y = one_hot::<f32>(&dev, 16, 3, &mut rng);
    for _ in 0..3 {
        step(&mut mlp, &mut opt, &x, &y);
    }
    mlp.expand_hidden(0, 6, &Init::ZerosOut, &mut rng).unwrap();
    step(&mut mlp, &mut opt, &x, &y);

    let path = temp("resume");
    Checkpoint::of(&mlp)
        .with_optimizer(opt.save_state())
        .save(&path)
        .unwrap();
    let ckpt = Checkpoint::load(&path).unwrap();
    let mut loaded: Mlp<f32, Cpu> = ckpt.to_mlp(&dev).unwrap();
    let mut loaded_opt = Adam::<f32>::new(AdamConfig::default()).unwrap();
    ckpt.restore_optimizer(&mut loaded_opt, &loaded).unwrap();
    assert_eq!(loaded.widths(), vec![5, 10, 3]);
    assert_eq!(snapshot(&loaded), snapshot(&mlp));
    assert_eq!(loaded_opt.state(), opt.state());

    for _ in 0..3 {
        step(&mut mlp, &mut opt, &x, &y);
        step(&mut loaded, &mut loaded_opt, &x, &y);
    }
    assert_eq!(snapshot(&loaded), snapshot(&mlp));
    let _ = std::fs::remove_file(&path);
}

/// CRC-32 (IEEE), as the checkpoint header records it: lets the tests write payloads with a
/// valid checksum, so each case reaches the check it is about.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A checkpoint file holding `payload` under a header of `version` with a correct length and
/// checksum.
fn file_with(payload: &[u8], version: u32) -> Vec<u8> {
    let header = serde_json::json!({
        "format": "dfdx-grow checkpoint",
        "version": version,
        "bytes": payload.len(),
        "crc32": crc32(payload),
    });
    let mut bytes = serde_json::to_vec(&header).unwrap();
    bytes.push(b'\n');
    bytes.extend_from_slice(payload);
    bytes
}

#[test]
fn corrupt_or_mismatched_checkpoints_are_clear_errors() {
    let dev = Cpu::default();
    let mlp = Mlp::<f64, Cpu>::new(&[3, 2, 2], Activation::Relu, &dev, &mut rng(2));
    let path = temp("good");
    Checkpoint::of(&mlp).save(&path).unwrap();
    let saved = std::fs::read(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let nl = saved.iter().position(|&b| b == b'\n').unwrap();
    let payload = &saved[nl + 1..];
    // The helper's checksum is the one `save` writes.
    let header: serde_json::Value = serde_json::from_slice(&saved[..nl]).unwrap();
    assert_eq!(header["crc32"], serde_json::json!(crc32(payload)));
    assert_eq!(header["bytes"], serde_json::json!(payload.len()));
    assert_eq!(header["version"], serde_json::json!(FORMAT_VERSION));
    // And a file it writes from the saved payload loads.
    let path = temp("rewritten");
    std::fs::write(&path, file_with(payload, FORMAT_VERSION)).unwrap();
    assert_eq!(Checkpoint::load(&path).unwrap(), Checkpoint::of(&mlp));
    let _ = std::fs::remove_file(&path);
    let good: serde_json::Value = serde_json::from_slice(payload).unwrap();

    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("garbage", b"not json".to_vec(), "no header line"),
        ("truncated", saved[..saved.len() - 10].to_vec(), "truncated"),
    ];
    let mut altered = saved.clone();
    let last = altered.len() - 2;
    altered[last] ^= 0x01;
    cases.push(("altered", altered, "checksum"));
    cases.push(("version", file_with(payload, 99), "version 99"));
    // The first weight (2 x 3) with the two values of the first bias.
    let mut short = good.clone();
    short["tensors"][0]["values"] = good["tensors"][1]["values"].clone();
    cases.push((
        "short tensor",
        file_with(short.to_string().as_bytes(), FORMAT_VERSION),
        "values for dims",
    ));
    let mut unknown = good.clone();
    unknown["extra"] = serde_json::json!(1);
    cases.push((
        "unknown field",
        file_with(unknown.to_string().as_bytes(), FORMAT_VERSION),
        "unknown field",
    ));
    for (what, bytes, why) in cases {
        let path = temp(&what.replace(' ', "-"));
        std::fs::write(&path, bytes).unwrap();
        let e = Checkpoint::load(&path).unwrap_err();
        assert!(matches!(e, CheckpointError::Format { .. }), "{what}: {e:?}");
        let msg = e.to_string();
        assert!(msg.contains(&path.display().to_string()), "{what}: {msg}");
        assert!(msg.contains(why), "{what}: expected {why:?} in {msg}");
        let _ = std::fs::remove_file(&path);
    }
    let missing = Checkpoint::load(temp("missing")).unwrap_err();
    assert!(matches!(missing, CheckpointError::Io { .. }));

    // A well-formed checkpoint of other widths does not fit the model: restoring it is a
    // mismatch and leaves the model as it was.
    let mut wrong_widths = good.clone();
    wrong_widths["sites"] = serde_json::json!([["hidden.0", 5]]);
    let path = temp("widths");
    std::fs::write(
        &path,
        file_with(wrong_widths.to_string().as_bytes(), FORMAT_VERSION),
    )
    .unwrap();
    let ckpt = Checkpoint::load(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        matches!(
            ckpt.to_mlp::<f64, Cpu>(&dev),
            Err(CheckpointError::Mismatch(_))
        ),
        "a checkpoint whose sites and tensors disagree must not build"
    );
    let mut target = mlp.clone();
    let before = snapshot(&target);
    let e = ckpt.restore(&mut target).unwrap_err();
    assert!(matches!(e, CheckpointError::Mismatch(_)), "{e:?}");
    // Refused before any site grows: the widths claimed need more than the tensors hold.
    assert!(e.to_string().contains("hidden.0 2 -> 5"), "{e}");
    assert_eq!(target.widths(), vec![3, 2, 2]);
    assert_eq!(snapshot(&target), before);
}
