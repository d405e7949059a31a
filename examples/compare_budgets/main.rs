//! The main job: how much training compute does growing save against training the large
//! network from scratch, at the same final quality, on real data?
//!
//! ```text
//! cargo run --release --example compare_budgets            # embedded UCI digits, < 60 s
//! cargo run --release --example compare_budgets -- --dataset fashion-mnist \
//!     --data-dir /usr/share/datasets/fashion-mnist
//! ```
//!
//! Trains `static-small`, `static-large` and one `grown-<policy>` run per policy file with the
//! same seed, data order, optimizer and learning rate (grown runs train on until they have
//! spent static-large's FLOPs, or for the same steps with `--same-steps`); prints a table and
//! writes
//! `summary.json`, `audit-<policy>.jsonl` and `loss_vs_flops.svg` to `--out`.

mod check;
mod plot;
mod summary;
mod train;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use dfdx_grow::audit::{summary_table, AuditLog};
use dfdx_grow::optim::{NewUnitLr, NewUnitSteps};
use dfdx_grow::GrowthController;
use dfdx_grow_data::{self as data, Split};

use train::{Point, Settings};

/// The command line.
struct Args {
    dataset: String,
    data_dir: Option<PathBuf>,
    policies: Vec<PathBuf>,
    out: PathBuf,
    seed: u64,
    steps: Option<usize>,
    same_steps: bool,
    new_units: NewUnitSteps,
    new_unit_lr: Option<NewUnitLr>,
}

const USAGE: &str = "usage: compare_budgets [--dataset digits|fashion-mnist] [--data-dir DIR] \
[--policy FILE]... [--out DIR] [--seed N] [--steps N] [--same-steps] [--adam-new-units cohort|global] [--new-unit-lr SCALE:STEPS]";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        dataset: "digits".into(),
        data_dir: None,
        policies: Vec::new(),
        out: PathBuf::from("target/compare_budgets"),
        seed: 0,
        steps: None,
        same_steps: false,
        new_units: NewUnitSteps::Cohort,
        new_unit_lr: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--dataset" => a.dataset = value()?,
            "--data-dir" => a.data_dir = Some(value()?.into()),
            "--policy" => a.policies.push(value()?.into()),
            "--out" => a.out = value()?.into(),
            "--seed" => a.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--steps" => a.steps = Some(value()?.parse().map_err(|e| format!("--steps: {e}"))?),
            "--same-steps" => a.same_steps = true,
            "--adam-new-units" => {
                a.new_units = match value()?.as_str() {
                    "cohort" => NewUnitSteps::Cohort,
                    "global" => NewUnitSteps::Global,
                    other => {
                        return Err(format!(
                            "--adam-new-units: {other:?} is not cohort or global"
                        ))
                    }
                }
            }
            "--new-unit-lr" => {
                // SCALE:STEPS, e.g. 3:500
                let v = value()?;
                let parsed = v.split_once(':').and_then(|(a, b)| {
                    Some(NewUnitLr {
                        scale: a.parse().ok()?,
                        steps: b.parse().ok()?,
                    })
                });
                a.new_unit_lr =
                    Some(parsed.ok_or(format!("--new-unit-lr: {v:?} is not SCALE:STEPS"))?);
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    Ok(a)
}

/// The data, the small and large hidden widths, and the run settings of a data set.
fn setup(a: &Args) -> Result<(Split, usize, usize, Settings, PathBuf), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    match a.dataset.as_str() {
        "digits" => {
            let ds = data::digits::digits().map_err(|e| e.to_string())?;
            let split = data::stratified_split(&ds, 0.2, a.seed).map_err(|e| e.to_string())?;
            let s = Settings {
                flops_budget: None,
                new_units: a.new_units,
                new_unit_lr: a.new_unit_lr,
                steps: a.steps.unwrap_or(3000),
                batch: 64,
                lr: 1e-3,
                eval_every: 25,
                seed: a.seed,
            };
            Ok((split, 32, 256, s, root.join("policies")))
        }
        "fashion-mnist" => {
            let dir = a
                .data_dir
                .clone()
                .unwrap_or_else(|| data::idx::FASHION_MNIST_DIR.into());
            let (train, val) = data::idx::load_fashion_mnist(&dir).map_err(|e| e.to_string())?;
            // 10 epochs of 60,000 images at batch 128.
            let s = Settings {
                flops_budget: None,
                new_units: a.new_units,
                new_unit_lr: a.new_unit_lr,
                steps: a.steps.unwrap_or(4690),
                batch: 128,
                lr: 1e-3,
                eval_every: 100,
                seed: a.seed,
            };
            Ok((
                Split { train, val },
                64,
                1024,
                s,
                root.join("policies/fashion-mnist"),
            ))
        }
        other => Err(format!(
            "unknown data set {other:?}: use digits or fashion-mnist"
        )),
    }
}

fn run() -> Result<(), String> {
    let a = parse_args()?;
    check::check_options(&a.dataset, a.data_dir.as_deref(), a.steps)?;
    let (split, small, large, settings, policy_dir) = setup(&a)?;
    let policies = if a.policies.is_empty() {
        ron_files(&policy_dir)?
    } else {
        a.policies.clone()
    };
    let (d, c) = (split.train.n_features, split.train.n_classes);
    // Everything the user passed is checked before the first step.
    check::check_out(&a.out)?;
    let grown = check::plan_grown_runs(&policies, &[d, small, c], large, &a.out)?;
    train::check_data(&split, settings.batch)?;
    eprintln!(
        "{}: {} training and {} validation examples; {} steps of Adam (lr {}, batch {}); hidden {} -> {}",
        a.dataset, split.train.len(), split.val.len(), settings.steps, settings.lr, settings.batch, small, large
    );
    let mut progress = |name: &str, p: &Point, widths: &[usize]| {
        if p.step.is_multiple_of(settings.eval_every * 20) || p.step == settings.steps {
            eprintln!(
                "  {name:<24} step {:>5}  val loss {:.4}  acc {:.3}  widths {widths:?}",
                p.step, p.val_loss, p.val_accuracy
            );
        }
    };
    let mut runs = Vec::new();
    for (name, hidden) in [("static-small", small), ("static-large", large)] {
        runs.push(train::train(
            name,
            &split,
            &[d, hidden, c],
            large,
            None,
            &settings,
            &mut progress,
        )?);
    }
    // Grown runs get static-large's compute budget: they train until they have spent its
    // FLOPs (their steps are cheaper), unless --same-steps asks for equal step counts.
    let grown_settings = Settings {
        flops_budget: (!a.same_steps).then_some(runs[1].train_flops),
        ..settings.clone()
    };
    let mut logs = Vec::new();
    for run in grown {
        // The log is append-only: start each comparison with a fresh one.
        let _ = std::fs::remove_file(&run.log);
        // Once a layer is at its cap, a policy may keep asking: the controller writes each run
        // of identical refusals as one record with its count.
        let log = AuditLog::open(&run.log).map_err(|e| e.to_string())?;
        let ctl = GrowthController::new(run.policy, settings.seed).with_audit(log);
        runs.push(train::train(
            &run.name,
            &split,
            &[d, small, c],
            large,
            Some(ctl),
            &grown_settings,
            &mut progress,
        )?);
        logs.push((run.name, run.log));
    }
    summary::report(&runs, &a.out, &a.dataset)?;
    for (name, log) in &logs {
        let records = AuditLog::read(log).map_err(|e| e.to_string())?;
        println!("\naudit log of {name}:\n{}", summary_table(&records));
    }
    Ok(())
}

fn ron_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot list policy files in {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "ron"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("no .ron policy file in {}", dir.display()));
    }
    Ok(files)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
