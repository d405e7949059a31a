//! Issue 7's experiment on today's API: do units added in the middle of a run stay alive,
//! with the old behaviour and with the defaults?
//!
//! ```text
//! cargo run --release --example new_units -- --dataset fashion-mnist --variant default --seed 0
//! cargo run --release --example new_units -- --dataset digits --variant old --seed 1
//! cargo run --release --example new_units -- summarise target/new_units
//! ```
//!
//! Trains a ReLU MLP with Adam and grows one hidden layer on a fixed schedule, then measures
//! with [`dfdx_grow::health`], on the whole validation set, per growth cohort: dead units (no
//! positive pre-activation on any validation example), the mean share of examples on which a
//! unit fires, and the mean fan-in and fan-out norms. Every run writes
//! `--out/<dataset>_h<hidden>_g<layer>_lr<lr>_<variant>_s<seed>.jsonl`, one JSON object a
//! line (`kind`: `setup`, `growth`, `eval`, `final`); `summarise DIR` reads the `final`
//! records of a directory and prints the markdown tables (mean ± sample std over seeds, and
//! same-seed differences against `old` and `static`).
//!
//! Schedules (the issue's run for Fashion-MNIST, an analogue for digits):
//! - fashion-mnist: 784-64-10, Adam lr 1e-3, batch 128, 4,690 steps, +64 at 469, +128 at
//!   938, +256 at 1642, evaluated every 469 steps;
//! - digits: 64-32-10 (a stratified 80/20 split per seed), Adam lr 1e-2, batch 64, 3,000
//!   steps, +32 at 300, +64 at 600, +128 at 1050, evaluated every 100 steps.
//!
//! `--hidden 64,64 --grow-layer 1` grows the second hidden layer instead (its inputs are ReLU
//! outputs, non-negative like pixels).
//!
//! Variants (the init of the new units, and `AdamConfig::new_unit_eps`):
//! `old` (`ZerosOutFresh`, 0), `matchnorm` (`ZerosOut`, 0), `epsrel` (`ZerosOutFresh`, 0.03),
//! `default` (`ZerosOut`, 0.03, the crate's defaults), `epsrel0.1` (`ZerosOut`, 0.1), and
//! `static` (no growth: the final width from the start).
//!
//! Seeds: the model's init draws from `StdRng(seed)`, the batch order from `StdRng(seed + 1)`,
//! growth from `StdRng(seed ^ 0x9e3779b9)`, so every variant of a seed sees the same batches.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::health::{site_health, CohortHealth, NewUnitsSummary};
use dfdx_grow::optim::{Adam, AdamConfig, Optimizer};
use dfdx_grow::rand::{rngs::StdRng, SeedableRng};
use dfdx_grow::{Activation, Init, Loss, LossProbe, Mlp, Probe};
use dfdx_grow_data::{self as data, Dataset};
use serde_json::{json, Value};

const USAGE: &str = "usage: new_units [--dataset fashion-mnist|digits] [--data-dir DIR] \
[--variant old|matchnorm|epsrel|default|epsrel0.1|static] [--seed N] [--out DIR] [--steps N] \
[--lr X] [--hidden W,W..] [--grow-layer L] [--schedule STEP:K,..] [--batch N] \
[--eval-every N] [--quiet]\n       new_units summarise DIR";

const VARIANTS: [&str; 6] = [
    "old",
    "matchnorm",
    "epsrel",
    "default",
    "epsrel0.1",
    "static",
];

struct Args {
    dataset: String,
    data_dir: PathBuf,
    variant: String,
    seed: u64,
    out: PathBuf,
    steps: Option<usize>,
    lr: Option<f64>,
    hidden: Option<Vec<usize>>,
    grow_layer: usize,
    schedule: Option<Vec<(usize, usize)>>,
    batch: Option<usize>,
    eval_every: Option<usize>,
    quiet: bool,
}

fn parse_list<T: std::str::FromStr>(s: &str) -> Option<Vec<T>> {
    s.split(',').map(|x| x.trim().parse().ok()).collect()
}

fn parse_args(args: Vec<String>) -> Result<Args, String> {
    let mut a = Args {
        dataset: "digits".into(),
        data_dir: PathBuf::from(data::idx::FASHION_MNIST_DIR),
        variant: "default".into(),
        seed: 0,
        out: PathBuf::from("target/new_units"),
        steps: None,
        lr: None,
        hidden: None,
        grow_layer: 0,
        schedule: None,
        batch: None,
        eval_every: None,
        quiet: false,
    };
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value\n{USAGE}"));
        let num = |v: String| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--dataset" => a.dataset = value()?,
            "--data-dir" => a.data_dir = value()?.into(),
            "--variant" => a.variant = value()?,
            "--seed" => a.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--out" => a.out = value()?.into(),
            "--steps" => a.steps = Some(num(value()?)?),
            "--lr" => a.lr = Some(value()?.parse().map_err(|e| format!("--lr: {e}"))?),
            "--hidden" => a.hidden = Some(parse_list(&value()?).ok_or("--hidden: W,W,..")?),
            "--grow-layer" => a.grow_layer = num(value()?)?,
            "--schedule" => {
                let v = value()?;
                let parsed: Option<Vec<(usize, usize)>> = v
                    .split(',')
                    .map(|p| {
                        let (s, k) = p.split_once(':')?;
                        Some((s.parse().ok()?, k.parse().ok()?))
                    })
                    .collect();
                a.schedule = Some(parsed.ok_or("--schedule: STEP:K,STEP:K,..")?);
            }
            "--batch" => a.batch = Some(num(value()?)?),
            "--eval-every" => a.eval_every = Some(num(value()?)?),
            "--quiet" => a.quiet = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    Ok(a)
}

/// The init of new units and Adam's `new_unit_eps` of a variant; `None` for `static`.
fn variant(name: &str) -> Result<Option<(Init, f64)>, String> {
    Ok(Some(match name {
        "old" => (Init::ZerosOutFresh, 0.0),
        "matchnorm" => (Init::ZerosOut, 0.0),
        "epsrel" => (Init::ZerosOutFresh, 0.03),
        "default" => (Init::ZerosOut, AdamConfig::default().new_unit_eps),
        "epsrel0.1" => (Init::ZerosOut, 0.1),
        "static" => return Ok(None),
        other => return Err(format!("unknown variant {other:?}: one of {VARIANTS:?}")),
    }))
}

/// The data, base widths, schedule and run settings of a data set.
struct Setup {
    train: Dataset,
    val: Dataset,
    hidden: Vec<usize>,
    schedule: Vec<(usize, usize)>,
    steps: usize,
    batch: usize,
    eval_every: usize,
    lr: f64,
}

fn setup(a: &Args) -> Result<Setup, String> {
    let (train, val, hidden, schedule, steps, batch, eval_every, lr) = match a.dataset.as_str() {
        "fashion-mnist" => {
            let (train, test) =
                data::idx::load_fashion_mnist(&a.data_dir).map_err(|e| e.to_string())?;
            let schedule = vec![(469, 64), (938, 128), (1642, 256)];
            (train, test, vec![64], schedule, 4690, 128, 469, 1e-3)
        }
        "digits" => {
            let ds = data::digits::digits().map_err(|e| e.to_string())?;
            let split = data::stratified_split(&ds, 0.2, a.seed).map_err(|e| e.to_string())?;
            let schedule = vec![(300, 32), (600, 64), (1050, 128)];
            (
                split.train,
                split.val,
                vec![32],
                schedule,
                3000,
                64,
                100,
                1e-2,
            )
        }
        other => return Err(format!("unknown dataset {other:?}\n{USAGE}")),
    };
    Ok(Setup {
        train,
        val,
        hidden: a.hidden.clone().unwrap_or(hidden),
        schedule: a.schedule.clone().unwrap_or(schedule),
        steps: a.steps.unwrap_or(steps),
        batch: a.batch.unwrap_or(batch),
        eval_every: a.eval_every.unwrap_or(eval_every),
        lr: a.lr.unwrap_or(lr),
    })
}

fn run(a: &Args) -> Result<(), String> {
    let grow = variant(&a.variant)?;
    let s = setup(a)?;
    let l = a.grow_layer;
    if l >= s.hidden.len() {
        return Err(format!(
            "--grow-layer {l}: only {} hidden layers",
            s.hidden.len()
        ));
    }
    let site = format!("hidden.{l}");
    let final_width = s.hidden[l] + s.schedule.iter().map(|(_, k)| k).sum::<usize>();
    let mut hidden = s.hidden.clone();
    if grow.is_none() {
        hidden[l] = final_width;
    }
    let mut sizes = vec![s.train.n_features];
    sizes.extend(&hidden);
    sizes.push(s.train.n_classes);
    let schedule = if grow.is_some() {
        s.schedule.clone()
    } else {
        vec![]
    };

    std::fs::create_dir_all(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    let hidden_tag: Vec<String> = s.hidden.iter().map(|w| w.to_string()).collect();
    let path = a.out.join(format!(
        "{}_h{}_g{l}_lr{}_{}_s{}.jsonl",
        a.dataset,
        hidden_tag.join("-"),
        s.lr,
        a.variant,
        a.seed
    ));
    let mut file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut emit =
        |v: Value| -> Result<(), String> { writeln!(file, "{v}").map_err(|e| e.to_string()) };

    let dev = Cpu::default();
    let mut rng = StdRng::seed_from_u64(a.seed);
    let mut mlp = Mlp::<f32, Cpu>::try_new(&sizes, Activation::Relu, &dev, &mut rng)
        .map_err(|e| e.to_string())?;
    let new_unit_eps = grow.as_ref().map_or(0.0, |(_, eps)| *eps);
    let cfg = AdamConfig {
        lr: s.lr,
        new_unit_eps,
        ..AdamConfig::default()
    };
    let mut opt = Adam::<f32>::new(cfg).map_err(|e| e.to_string())?;
    // Growth draws from its own stream, so every variant of a seed sees the same batches.
    let mut grow_rng = StdRng::seed_from_u64(a.seed ^ 0x9e37_79b9);
    let mut batches = common::Batches::new(
        &s.train,
        s.batch,
        StdRng::seed_from_u64(a.seed.wrapping_add(1)),
    );
    // The whole validation set measures health; its first 1,000 images check each growth.
    let all: Vec<usize> = (0..s.val.len()).collect();
    let (vx, vy) = s.val.batch::<f32, Cpu>(&dev, &all);
    let val_probe = Probe {
        input: vx,
        target: Some((vy, Loss::CrossEntropy)),
    };
    let (px, py) = s.val.batch::<f32, Cpu>(&dev, &all[..all.len().min(1000)]);
    let growth_probe = Probe {
        input: px,
        target: Some((py, Loss::CrossEntropy)),
    };
    emit(json!({
        "kind": "setup", "dataset": a.dataset, "variant": a.variant, "seed": a.seed,
        "sizes": sizes, "grow_layer": l, "schedule": schedule, "steps": s.steps,
        "batch": s.batch, "lr": s.lr, "init": grow.as_ref().map(|(i, _)| i.name()),
        "adam": serde_json::to_value(cfg).ok(),
    }))?;

    let mut cohorts: Vec<(u64, Range<usize>)> = vec![(0, 0..hidden[l])];
    let (mut best, mut last, mut last_acc) = (f64::INFINITY, f64::NAN, f64::NAN);
    let start_time = Instant::now();
    for step in 1..=s.steps {
        let (x, y) = batches.next_batch();
        common::adam_step(&mut mlp, &mut opt, x, y)?;

        if let (Some((init, _)), Some(&(_, k))) =
            (&grow, schedule.iter().find(|(at, _)| *at == step))
        {
            let start = mlp.widths()[l + 1];
            let report = mlp
                .expand_hidden_probed(l, k, init, &mut grow_rng, &growth_probe)
                .map_err(|e| e.to_string())?;
            // The state follows at the next update anyway; syncing now pins the new
            // cohort's birth (and its epsilon) to this step.
            Optimizer::<f32, Cpu>::sync(&mut opt, &mlp).map_err(|e| e.to_string())?;
            cohorts.push((step as u64, start..start + k));
            emit(json!({
                "kind": "growth", "step": step, "k": k, "new_width": report.new_width,
                "max_abs_output_change": report.max_abs_output_change,
                "loss_before": report.loss_before, "loss_after": report.loss_after,
            }))?;
        }

        if step % s.eval_every == 0 || step == s.steps {
            let (vl, va) = common::evaluate(&dev, &mlp, &s.val);
            best = best.min(vl);
            (last, last_acc) = (vl, va);
            emit(
                json!({"kind": "eval", "step": step, "val_loss": vl, "val_acc": va,
                "width": mlp.widths()[l + 1]}),
            )?;
            if !a.quiet {
                eprintln!(
                    "{} {} s{} step {step}: val {vl:.4} acc {va:.4} width {} ({:.0} s)",
                    a.dataset,
                    a.variant,
                    a.seed,
                    mlp.widths()[l + 1],
                    start_time.elapsed().as_secs_f64()
                );
            }
        }
    }
    let activity = val_probe
        .activity(&mlp, &site)
        .ok_or("the probe reports no activity")?;
    let health = site_health(&mlp, &site, &activity, &cohorts).map_err(|e| e.to_string())?;
    let summary = NewUnitsSummary::of(&health);
    let fin = json!({
        "kind": "final", "dataset": a.dataset, "variant": a.variant, "seed": a.seed,
        "hidden": s.hidden, "grow_layer": l, "lr": s.lr,
        "final_val_loss": last, "best_val_loss": best, "final_val_acc": last_acc,
        "cohorts": health, "new_units": summary,
        "orig_dead": health[0].dead, "orig_units": health[0].len(),
        "wall_s": start_time.elapsed().as_secs_f64(),
    });
    println!("{fin}");
    emit(fin)
}

/// Mean and sample standard deviation (0 for one value).
fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (m, 0.0);
    }
    (
        m,
        (xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0)).sqrt(),
    )
}

fn pm(xs: &[f64], digits: usize) -> String {
    match xs.len() {
        0 => "–".into(),
        1 => format!("{:.*}", digits, xs[0]),
        _ => {
            let (m, s) = mean_std(xs);
            format!("{m:.digits$} ± {s:.digits$}")
        }
    }
}

fn signed_pm(xs: &[f64]) -> String {
    match xs.len() {
        0 => "–".into(),
        1 => format!("{:+.4}", xs[0]),
        _ => {
            let (m, s) = mean_std(xs);
            format!("{m:+.4} ± {s:.4} (n={})", xs.len())
        }
    }
}

/// One run's `final` record.
struct Final {
    variant: String,
    seed: u64,
    final_loss: f64,
    best_loss: f64,
    summary: NewUnitsSummary,
    cohorts: Vec<CohortHealth>,
    wall_s: f64,
}

/// Prints, per experiment (data set, widths, grown layer, lr), the markdown tables of the
/// `final` records under `dir`.
fn summarise(dir: &Path) -> Result<(), String> {
    let mut groups: BTreeMap<String, Vec<Final>> = BTreeMap::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    paths.sort();
    for p in paths {
        let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        let Some(v) = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["kind"] == "final")
        else {
            eprintln!("{}: no final record (unfinished?)", p.display());
            continue;
        };
        let key = format!(
            "{} {} grow hidden.{} lr {}",
            v["dataset"].as_str().unwrap_or("?"),
            v["hidden"],
            v["grow_layer"],
            v["lr"]
        );
        let f = Final {
            variant: v["variant"].as_str().unwrap_or("?").to_string(),
            seed: v["seed"].as_u64().unwrap_or(0),
            final_loss: v["final_val_loss"].as_f64().unwrap_or(f64::NAN),
            best_loss: v["best_val_loss"].as_f64().unwrap_or(f64::NAN),
            summary: serde_json::from_value(v["new_units"].clone()).map_err(|e| e.to_string())?,
            cohorts: serde_json::from_value(v["cohorts"].clone()).map_err(|e| e.to_string())?,
            wall_s: v["wall_s"].as_f64().unwrap_or(f64::NAN),
        };
        groups.entry(key).or_default().push(f);
    }
    for (key, runs) in &groups {
        println!("### {key}\n");
        println!(
            "| variant | seeds | added dead (share) | new firing | original firing | new/original | \
final val loss | best val loss | final − old (paired) | best − old (paired) | \
final − static (paired) | best − static (paired) | wall s |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        let by = |name: &str| -> BTreeMap<u64, &Final> {
            runs.iter()
                .filter(|r| r.variant == name)
                .map(|r| (r.seed, r))
                .collect()
        };
        let (old, stat) = (by("old"), by("static"));
        let paired = |this: &BTreeMap<u64, &Final>,
                      other: &BTreeMap<u64, &Final>,
                      f: fn(&Final) -> f64|
         -> Vec<f64> {
            this.iter()
                .filter_map(|(s, r)| other.get(s).map(|o| f(r) - f(o)))
                .collect()
        };
        for name in VARIANTS {
            let these = by(name);
            if these.is_empty() {
                continue;
            }
            let rs: Vec<&Final> = these.values().copied().collect();
            let col = |f: fn(&Final) -> f64| rs.iter().map(|r| f(r)).collect::<Vec<f64>>();
            let dead = if name == "static" {
                let d = col(|r| r.cohorts[0].dead as f64);
                format!("({} of {})", pm(&d, 1), rs[0].cohorts[0].len())
            } else {
                let d = col(|r| r.summary.dead as f64);
                let share = col(|r| r.summary.dead_share());
                format!(
                    "{} of {} ({})",
                    pm(&d, 1),
                    rs[0].summary.added,
                    pm(&share, 2)
                )
            };
            let (new_fire, ratio) = if name == "static" {
                ("–".to_string(), "–".to_string())
            } else {
                (
                    pm(&col(|r| r.summary.mean_active), 3),
                    pm(
                        &col(|r| r.summary.mean_active / r.summary.old_mean_active),
                        2,
                    ),
                )
            };
            let fl = |r: &Final| r.final_loss;
            let bl = |r: &Final| r.best_loss;
            println!(
                "| `{name}` | {} | {dead} | {new_fire} | {} | {ratio} | {} | {} | {} | {} | {} | {} | {:.0} |",
                rs.len(),
                pm(&col(|r| r.cohorts[0].mean_active), 3),
                pm(&col(fl), 4),
                pm(&col(bl), 4),
                signed_pm(&paired(&these, &old, fl)),
                signed_pm(&paired(&these, &old, bl)),
                signed_pm(&paired(&these, &stat, fl)),
                signed_pm(&paired(&these, &stat, bl)),
                mean_std(&col(|r| r.wall_s)).0,
            );
        }
        println!("\nPer cohort at the end:\n");
        println!("| variant | cohort | units | dead | firing | fan-in norm | fan-out norm |");
        println!("|---|---|---|---|---|---|---|");
        for name in VARIANTS {
            let rs: Vec<&Final> = by(name).values().copied().collect();
            let Some(first) = rs.first() else { continue };
            for (i, c) in first.cohorts.iter().enumerate() {
                let per = |f: fn(&CohortHealth) -> f64| -> Vec<f64> {
                    rs.iter().filter_map(|r| r.cohorts.get(i).map(f)).collect()
                };
                let label = if c.born == 0 {
                    if name == "static" {
                        "all".to_string()
                    } else {
                        "original".to_string()
                    }
                } else {
                    format!("+{} at {}", c.len(), c.born)
                };
                println!(
                    "| `{name}` | {label} | {} | {} | {} | {} | {} |",
                    c.len(),
                    pm(&per(|c| c.dead as f64), 1),
                    pm(&per(|c| c.mean_active), 3),
                    pm(&per(|c| c.fan_in_norm), 2),
                    pm(&per(|c| c.fan_out_norm), 3),
                );
            }
        }
        println!();
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("summarise") => match args.get(1) {
            Some(dir) => summarise(Path::new(dir)),
            None => Err(USAGE.into()),
        },
        _ => parse_args(args).and_then(|a| run(&a)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}
