//! Reuse a trained model by expanding it instead of throwing it away.
//!
//! ```text
//! cargo run --release --example reuse_model
//! ```
//!
//! 1. trains a small 64-32-10 network on the embedded UCI digits and saves it (weights, widths
//!    and Adam state) to `target/reuse_model/small.ckpt`;
//! 2. a fresh process loads it, widens the hidden layer to 256 units (exact: `ZerosOut`),
//!    and trains on with the saved optimizer state;
//! 3. compares with the small model trained on for the same steps, and with a 64-256-10 model
//!    trained from scratch with the same total FLOPs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use dfdx_grow::checkpoint::Checkpoint;
use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::optim::{Adam, AdamConfig, Optimizer};
use dfdx_grow::rand::{rngs::StdRng, SeedableRng};
use dfdx_grow::{flops, Activation, Init, Mlp};
use dfdx_grow_data::{digits::digits, stratified_split, Split};

const SEED: u64 = 0;
const FIRST: usize = 1500;
const SECOND: usize = 1500;
const BATCH: usize = 64;
const SMALL: usize = 32;
const LARGE: usize = 256;

fn data() -> Result<Split, String> {
    let ds = digits().map_err(|e| e.to_string())?;
    stratified_split(&ds, 0.2, SEED).map_err(|e| e.to_string())
}

fn adam() -> Result<Adam<f32>, String> {
    Adam::new(AdamConfig::default()).map_err(|e| e.to_string())
}

/// Trains `mlp` for `steps` steps on batches seeded by `seed`; returns the FLOPs spent.
fn train_for(
    mlp: &mut Mlp<f32, Cpu>,
    opt: &mut Adam<f32>,
    split: &Split,
    steps: usize,
    seed: u64,
) -> Result<f64, String> {
    let mut batches = common::Batches::new(&split.train, BATCH, StdRng::seed_from_u64(seed));
    let mut spent = 0.0;
    for _ in 0..steps {
        let (x, y) = batches.next_batch();
        common::adam_step(mlp, opt, x, y)?;
        spent += flops::train_step(&mlp.widths(), BATCH, flops::ADAM_UPDATE_FLOPS);
    }
    Ok(spent)
}

/// Stage 2, in a fresh process: load, expand, train on; prints `val_loss flops`.
fn continue_from(path: &Path) -> Result<(), String> {
    let split = data()?;
    let dev = Cpu::default();
    let ckpt = Checkpoint::load(path).map_err(|e| e.to_string())?;
    let mut mlp: Mlp<f32, Cpu> = ckpt.to_mlp(&dev).map_err(|e| e.to_string())?;
    let mut opt = adam()?;
    ckpt.restore_optimizer(&mut opt, &mlp)
        .map_err(|e| e.to_string())?;
    let loaded_widths = mlp.widths();
    let (before, _) = common::evaluate(&dev, &mlp, &split.val);
    let report = mlp
        .expand_hidden(
            0,
            LARGE - SMALL,
            &Init::ZerosOut,
            &mut StdRng::seed_from_u64(SEED),
        )
        .map_err(|e| e.to_string())?;
    Optimizer::<f32, Cpu>::sync(&mut opt, &mlp).map_err(|e| e.to_string())?;
    let (after, _) = common::evaluate(&dev, &mlp, &split.val);
    eprintln!(
        "  loaded {:?} ({} params), expanded to {:?} ({} params): val loss {before:.5} -> {after:.5}",
        loaded_widths, report.params_before, mlp.widths(), report.params_after
    );
    let spent = flops::growth(report.params_after, 2)
        + train_for(&mut mlp, &mut opt, &split, SECOND, SEED + 1)?;
    let (val, acc) = common::evaluate(&dev, &mlp, &split.val);
    println!("{val} {acc} {spent}");
    Ok(())
}

fn run() -> Result<(), String> {
    let out = PathBuf::from("target/reuse_model");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let split = data()?;
    let dev = Cpu::default();
    let mut rng = StdRng::seed_from_u64(SEED);

    eprintln!("stage 1: train 64-{SMALL}-10 for {FIRST} steps and save it");
    let mut small = Mlp::<f32, Cpu>::new(&[64, SMALL, 10], Activation::Relu, &dev, &mut rng);
    let mut opt = adam()?;
    let first = train_for(&mut small, &mut opt, &split, FIRST, SEED)?;
    let path = out.join("small.ckpt");
    Checkpoint::of(&small)
        .with_optimizer(opt.save_state())
        .save(&path)
        .map_err(|e| e.to_string())?;

    eprintln!(
        "stage 2: a fresh process loads it, widens it to {LARGE} and trains {SECOND} more steps"
    );
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let child = Command::new(exe)
        .arg("--continue")
        .arg(&path)
        .output()
        .map_err(|e| e.to_string())?;
    eprint!("{}", String::from_utf8_lossy(&child.stderr));
    if !child.status.success() {
        return Err("the continuing process failed".into());
    }
    let fields: Vec<f64> = String::from_utf8_lossy(&child.stdout)
        .split_whitespace()
        .map(|t| t.parse().map_err(|e| format!("bad child output: {e}")))
        .collect::<Result<_, _>>()?;
    let [reused_val, reused_acc, second] = fields[..] else {
        return Err("bad child output".into());
    };
    let reused_flops = first + second;

    eprintln!("baseline: the small model trained on for {SECOND} steps");
    let second_small = train_for(&mut small, &mut opt, &split, SECOND, SEED + 1)?;
    let (small_val, small_acc) = common::evaluate(&dev, &small, &split.val);

    let per_step = flops::train_step(&[64, LARGE, 10], BATCH, flops::ADAM_UPDATE_FLOPS);
    let large_steps = (reused_flops / per_step) as usize;
    eprintln!(
        "baseline: 64-{LARGE}-10 from scratch for {large_steps} steps (the reused run's FLOPs)"
    );
    let mut large = Mlp::<f32, Cpu>::new(&[64, LARGE, 10], Activation::Relu, &dev, &mut rng);
    let mut large_opt = adam()?;
    let large_flops = train_for(&mut large, &mut large_opt, &split, large_steps, SEED + 2)?;
    let (large_val, large_acc) = common::evaluate(&dev, &large, &split.val);

    println!(
        "\n{:<34} {:>10} {:>9} {:>12}",
        "run", "val loss", "val acc", "train FLOPs"
    );
    for (name, v, a, f) in [
        (
            "small, trained on",
            small_val,
            small_acc,
            first + second_small,
        ),
        (
            "small, saved, reloaded, widened",
            reused_val,
            reused_acc,
            reused_flops,
        ),
        (
            "large from scratch, same FLOPs",
            large_val,
            large_acc,
            large_flops,
        ),
    ] {
        println!("{name:<34} {v:>10.4} {a:>9.4} {f:>12.3e}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("--continue") => match args.get(2) {
            Some(p) => continue_from(Path::new(p)),
            None => Err("--continue needs a checkpoint path".into()),
        },
        _ => run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
