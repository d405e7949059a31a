//! The main job: how much training compute does growing save against training the large
//! network from scratch, at the same final quality?
//!
//! ```text
//! cargo run --release --example compare_budgets            # embedded UCI digits, < 60 s
//! cargo run --release --example compare_budgets -- --help
//! cargo run --release --example compare_budgets -- --dataset fashion-mnist \
//!     --data-dir /usr/share/datasets/fashion-mnist         # experiment 2 (issue 9)
//! cargo run --release --example compare_budgets -- --dataset teacher-student   # experiment 1
//! cargo run --release --example compare_budgets -- --sizing --dataset ...      # experiment 3
//! ```
//!
//! Every comparison trains `static-small`, `static-large` and one `grown-<policy>` run per
//! policy file (and per `--on-growth` option) with the same seed, data order, optimizer and
//! learning-rate schedule; grown runs train on until they have spent static-large's FLOPs.
//! Everything passed on the command line is checked before the first step: every policy file
//! against the model it will grow, the output directory, the flags. It prints a table per
//! comparison (and mean ± spread over `--seeds`), and writes `summary.json`, one
//! `audit-<run>.jsonl` per grown run and `loss_vs_flops.svg` to `--out`.

mod cli;
mod nets;
mod plot;
mod setup;
mod summary;
mod task;
mod train;

use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use clap::Parser;
use dfdx_grow::audit::{summary_table, AuditLog};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use cli::{Args, ModelArg};
use nets::{build_cnn, build_mlp, build_resmlp};
use setup::Plan;
use train::{Run, RunSpec};

/// Trains one run with the plan's model.
fn run_one(
    plan: &Plan,
    spec: &RunSpec,
    task: &task::Task,
    bar: &ProgressBar,
) -> Result<Run, String> {
    let (shape, cap) = (plan.shape, plan.cap);
    let progress = |p: &train::Point, done: f64| {
        bar.set_position((done.clamp(0.0, 1.0) * 1000.0) as u64);
        bar.set_message(format!(
            "step {:>5}  val loss {:.4}  acc {:.3}",
            p.step, p.val_loss, p.val_accuracy
        ));
    };
    let c = &plan.common;
    match plan.model {
        ModelArg::Mlp => train::train(
            spec,
            task,
            c,
            &|w, r| build_mlp(shape, w, cap, r),
            &progress,
        ),
        ModelArg::Resmlp => train::train(
            spec,
            task,
            c,
            &|w, r| build_resmlp(shape, w, cap, r),
            &progress,
        ),
        ModelArg::Cnn => train::train(
            spec,
            task,
            c,
            &|w, r| build_cnn(shape, w, cap, r),
            &progress,
        ),
    }
}

/// Trains every run of the plan, `plan.jobs` at a time, with a progress bar per run in flight
/// and one for the whole; returns the runs in plan order.
fn run_all(plan: &Plan) -> Result<Vec<Vec<Run>>, String> {
    let jobs: Vec<(usize, usize)> = plan
        .groups
        .iter()
        .enumerate()
        .flat_map(|(g, group)| (0..group.runs.len()).map(move |r| (g, r)))
        .collect();
    let total = jobs.len();
    let queue = Mutex::new(jobs.into_iter().collect::<VecDeque<_>>());
    let results: Mutex<Vec<Vec<Option<Run>>>> = Mutex::new(
        plan.groups
            .iter()
            .map(|g| g.runs.iter().map(|_| None).collect())
            .collect(),
    );
    let failed = AtomicBool::new(false);
    let first_error = Mutex::new(None::<String>);
    let mp = MultiProgress::with_draw_target(if plan.quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let hidden = mp.is_hidden();
    let overall = mp.add(ProgressBar::new(total as u64));
    overall.set_style(
        ProgressStyle::with_template(
            "{prefix:>30} [{bar:30}] {pos}/{len} runs  elapsed {elapsed_precise}  eta {eta}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    overall.set_prefix("all runs");
    overall.enable_steady_tick(Duration::from_millis(500));
    let style =
        ProgressStyle::with_template("{prefix:>30} [{bar:30}] {percent:>3}%  {msg}  eta {eta}")
            .expect("template")
            .progress_chars("=> ");
    let multi_seed = plan.groups.iter().any(|g| g.seed != plan.groups[0].seed);
    let multi_budget = plan
        .groups
        .iter()
        .any(|g| g.budget != plan.groups[0].budget);
    std::thread::scope(|s| {
        for _ in 0..plan.jobs.min(total) {
            s.spawn(|| loop {
                if failed.load(Ordering::Relaxed) {
                    return;
                }
                let Some((g, r)) = queue.lock().expect("queue").pop_front() else {
                    return;
                };
                let group = &plan.groups[g];
                let spec = &group.runs[r];
                let mut label = spec.name.clone();
                if multi_budget {
                    label.push_str(&format!(" {}x", group.budget));
                }
                if multi_seed {
                    label.push_str(&format!(" s{}", group.seed));
                }
                let bar = mp.insert_before(&overall, ProgressBar::new(1000));
                bar.set_style(style.clone());
                bar.set_prefix(label.clone());
                match run_one(plan, spec, &group.task, &bar) {
                    Ok(run) => {
                        bar.finish_and_clear();
                        mp.remove(&bar);
                        let last = run.curve.last().map_or(f64::NAN, |p| p.val_loss);
                        let line = format!(
                            "  done {label:<32} {:>6} steps  val loss {last:.4}  sites {:?}  {:.1} s",
                            run.steps, run.final_sites, run.wall_s
                        );
                        if hidden {
                            eprintln!("{line}");
                        } else {
                            let _ = mp.println(line);
                        }
                        results.lock().expect("results")[g][r] = Some(run);
                    }
                    Err(e) => {
                        bar.abandon();
                        failed.store(true, Ordering::Relaxed);
                        first_error.lock().expect("error").get_or_insert(e);
                    }
                }
                overall.inc(1);
            });
        }
    });
    overall.finish_and_clear();
    if let Some(e) = first_error.into_inner().expect("error") {
        return Err(e);
    }
    Ok(results
        .into_inner()
        .expect("results")
        .into_iter()
        .map(|g| g.into_iter().flatten().collect())
        .collect())
}

fn run() -> Result<(), String> {
    let args = Args::parse();
    let plan = setup::plan(&args)?;
    let runs = run_all(&plan)?;
    let mut groups = Vec::new();
    for (g, runs) in plan.groups.iter().zip(&runs) {
        groups.push(summary::group_summary(
            plan.mode,
            g.seed,
            g.budget,
            runs,
            plan.target,
        )?);
    }
    summary::report(&plan, groups)?;
    // The audit logs of the first comparison, as a table.
    if let Some(g) = plan.groups.first() {
        for spec in g
            .runs
            .iter()
            .filter_map(|r| r.grown.as_ref().map(|x| (r, x)))
        {
            let records = AuditLog::read(&spec.1.audit).map_err(|e| e.to_string())?;
            println!(
                "\naudit log of {}:\n{}",
                spec.0.name,
                summary_table(&records)
            );
        }
    }
    Ok(())
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
