//! Saving and loading a grown model: exact, atomic, and resumable.

mod common;

use common::*;
use dfdx_grow::checkpoint::{Checkpoint, CheckpointError};
use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::optim::{Adam, AdamConfig, Optimizer};
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
    Checkpoint::of(
        &mlp,
        Some((opt.state(), Optimizer::<f32, Cpu>::steps(&opt))),
    )
    .save(&path)
    .unwrap();
    let ckpt = Checkpoint::load(&path).unwrap();
    let mut loaded: Mlp<f32, Cpu> = ckpt.to_mlp(&dev).unwrap();
    let (state, steps) = ckpt.optimizer_state::<f32>().unwrap();
    let mut loaded_opt = Adam::<f32>::new(AdamConfig::default())
        .unwrap()
        .with_state(state, steps);
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

#[test]
fn corrupt_or_mismatched_checkpoints_are_clear_errors() {
    let dev = Cpu::default();
    let mlp = Mlp::<f64, Cpu>::new(&[3, 2, 2], Activation::Relu, &dev, &mut rng(2));
    let good = serde_json::to_value(Checkpoint::of(&mlp, None)).unwrap();
    let mut cases = vec![("garbage", "not json".to_string())];
    let mut wrong_widths = good.clone();
    wrong_widths["widths"] = serde_json::json!([3, 5, 2]);
    cases.push(("widths", wrong_widths.to_string()));
    let mut short = good.clone();
    short["tensors"][0] = serde_json::json!([1.0]);
    cases.push(("short tensor", short.to_string()));
    let mut version = good.clone();
    version["version"] = serde_json::json!(99);
    cases.push(("version", version.to_string()));
    let mut unknown = good.clone();
    unknown["extra"] = serde_json::json!(1);
    cases.push(("unknown field", unknown.to_string()));
    for (what, text) in cases {
        let path = temp(&what.replace(' ', "-"));
        std::fs::write(&path, text).unwrap();
        let e = Checkpoint::load(&path).unwrap_err();
        assert!(matches!(e, CheckpointError::Format { .. }), "{what}: {e:?}");
        assert!(
            e.to_string().contains(&path.display().to_string()),
            "{what}: {e}"
        );
        let _ = std::fs::remove_file(&path);
    }
    let missing = Checkpoint::load(temp("missing")).unwrap_err();
    assert!(matches!(missing, CheckpointError::Io { .. }));
}
