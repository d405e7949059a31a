//! From the command line to a checked plan: the data, the models' widths, every run of every
//! comparison, with every file read and every policy checked against the model it will grow,
//! before any training starts.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::lr::{Budget, Decay, LrScheduleSpec, OnGrowth};
use dfdx_grow::optim::{NewUnitLr, NewUnitSteps};
use dfdx_grow::policy::{load_spec, At, Metrics, PolicySpec};
use dfdx_grow::rand::{rngs::StdRng, SeedableRng};
use dfdx_grow::{Growable, PerturbScope, ShrinkPerturb};
use dfdx_grow_data::teacher_student::{Teacher, TeacherSpec};
use dfdx_grow_data::{self as data, stratified_split};

use crate::cli::{Args, DatasetArg, ModelArg, NewUnitsArg, OptStateArg, TargetArg};
use crate::nets::{build_cnn, build_mlp, build_resmlp, describe, InputShape};
use crate::task::{EvalSet, Task};
use crate::train::{step_flops, Common, GrownSpec, RunSpec};

/// Examples in the teacher-student task's validation set.
pub const TEACHER_VAL: usize = 8192;

/// The static widths of `--sizing` unless `--grid` says otherwise.
pub const DEFAULT_GRID: [usize; 5] = [64, 128, 256, 512, 1024];
/// The most seeds one invocation trains (each trains every run).
const MAX_SEEDS: u64 = 1000;
/// The most steps one run may be asked for (a run with a FLOP budget may take 3x).
const MAX_STEPS: usize = 1 << 40;
/// The widest hidden layer an MLP or ResMLP may be built with (a 784-input layer of this
/// width holds 51 M weights).
const MAX_WIDTH: usize = 1 << 16;
/// The most channels a CNN's first convolution may have (the second has twice as many).
const MAX_CNN_WIDTH: usize = 1 << 10;
/// The largest probe batch (the controller's checks and the informed inits' statistics).
const MAX_PROBE: usize = 1 << 16;

/// The experiment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// static-small, static-large, grown runs.
    Compare,
    /// A grid of static widths against grown runs.
    Sizing,
}

/// One comparison: the runs of one seed at one budget multiplier.
#[derive(Debug)]
pub struct Group {
    pub seed: u64,
    pub budget: f64,
    pub task: Arc<Task>,
    pub runs: Vec<RunSpec>,
}

/// Everything to run, checked.
#[derive(Debug)]
pub struct Plan {
    pub dataset: DatasetArg,
    pub model: ModelArg,
    pub mode: Mode,
    pub shape: InputShape,
    pub small: usize,
    pub large: usize,
    /// The width cap of every model.
    pub cap: usize,
    pub steps: usize,
    pub common: Common,
    pub groups: Vec<Group>,
    pub out: PathBuf,
    pub target: TargetArg,
    pub jobs: usize,
    pub quiet: bool,
    pub lr_description: String,
    /// The policy files in use and the stem each run name got.
    pub policies: Vec<(PathBuf, String)>,
    pub floor: Option<f64>,
}

/// Each data set's sizes and run settings.
struct Defaults {
    shape: InputShape,
    steps: usize,
    batch: usize,
    eval_every: usize,
    /// (small, large) widths per model; `None` where the model does not fit the data.
    widths: fn(ModelArg) -> Option<(usize, usize)>,
    policy_dir: &'static str,
}

fn defaults(d: DatasetArg) -> Defaults {
    match d {
        DatasetArg::Digits => Defaults {
            shape: InputShape {
                channels: 1,
                height: 8,
                width: 8,
                classes: 10,
            },
            steps: 3000,
            batch: 64,
            eval_every: 25,
            widths: |m| match m {
                ModelArg::Mlp | ModelArg::Resmlp => Some((32, 256)),
                ModelArg::Cnn => Some((4, 16)),
            },
            policy_dir: "",
        },
        DatasetArg::FashionMnist => Defaults {
            shape: InputShape {
                channels: 1,
                height: 28,
                width: 28,
                classes: 10,
            },
            // 10 epochs of 60,000 images at batch 128.
            steps: 4690,
            batch: 128,
            eval_every: 100,
            widths: |m| match m {
                ModelArg::Mlp | ModelArg::Resmlp => Some((64, 1024)),
                ModelArg::Cnn => Some((4, 16)),
            },
            policy_dir: "fashion-mnist",
        },
        DatasetArg::TeacherStudent => {
            let t = TeacherSpec::default();
            Defaults {
                shape: InputShape {
                    channels: 1,
                    height: 1,
                    width: t.inputs,
                    classes: t.classes,
                },
                steps: 4000,
                batch: 128,
                eval_every: 100,
                widths: |m| match m {
                    ModelArg::Mlp | ModelArg::Resmlp => Some((64, 1024)),
                    ModelArg::Cnn => None,
                },
                policy_dir: "teacher-student",
            }
        }
    }
}

/// The directory of the default policy files: `policies/[dataset/][model/][sizing/]`.
pub fn policy_dir(dataset: DatasetArg, model: ModelArg, sizing: bool) -> PathBuf {
    let mut p = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let d = defaults(dataset).policy_dir;
    if !d.is_empty() {
        p.push(d);
    }
    if model != ModelArg::Mlp {
        p.push(model.name());
    }
    if sizing {
        p.push("sizing");
    }
    p
}

fn ron_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot list policy files in {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "ron") && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("no .ron policy file in {}", dir.display()));
    }
    Ok(files)
}

/// Run-name stems for the policy files: the file stem, or, where two files share one, the
/// stem with its parent directories' names until they differ (and a number as a last resort).
pub fn stems(files: &[PathBuf]) -> Vec<String> {
    let parts = |p: &Path| -> Vec<String> {
        let mut v: Vec<String> = p
            .with_extension("")
            .components()
            // A root, a drive or `.` names no directory: they would put a `/` in a file name.
            .filter(|c| matches!(c, Component::Normal(_) | Component::ParentDir))
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        v.reverse();
        v
    };
    let all: Vec<Vec<String>> = files.iter().map(|f| parts(f)).collect();
    let name = |i: usize, depth: usize| -> String {
        let p = &all[i];
        let mut take: Vec<&str> = p.iter().take(depth).map(String::as_str).collect();
        take.reverse();
        take.join("-")
    };
    let mut out: Vec<String> = Vec::new();
    for (i, parts_i) in all.iter().enumerate() {
        // The shortest name no other file shares; the bare stem if every depth is shared
        // (the same path twice).
        let depth = (1..=parts_i.len())
            .find(|&d| {
                let mine = name(i, d);
                (0..files.len()).all(|j| j == i || name(j, d) != mine)
            })
            .unwrap_or(1);
        out.push(name(i, depth));
    }
    // The same file twice, or names that still meet (a stem chosen at one depth can be another
    // file's at another depth): number the repeats, skipping every name already taken.
    let mut taken: BTreeSet<String> = out.iter().cloned().collect();
    let mut kept: BTreeSet<String> = BTreeSet::new();
    for s in &mut out {
        if !kept.insert(s.clone()) {
            let fresh = (2..)
                .map(|n| format!("{s}-{n}"))
                .find(|c| !taken.contains(c))
                .unwrap_or_default();
            taken.insert(fresh.clone());
            kept.insert(fresh.clone());
            *s = fresh;
        }
    }
    out
}

/// Moves everything a policy file writes in steps (schedule events, warm-ups) and its FLOP
/// cap by the budget multiplier `m`: files are written for the 1x budget.
pub fn scale_policy(spec: &mut PolicySpec, m: f64) {
    let s = |v: u64| (v as f64 * m).round() as u64;
    match spec {
        PolicySpec::Schedule(sch) => {
            for e in &mut sch.events {
                if let At::Step(v) = &mut e.at {
                    *v = s(*v);
                }
            }
        }
        PolicySpec::Plateau(p) => p.warmup = s(p.warmup),
        PolicySpec::Efficiency(p) => p.warmup = s(p.warmup),
        PolicySpec::GradNorm(_) => {}
        PolicySpec::AnyOf(v) | PolicySpec::AllOf(v) => {
            v.iter_mut().for_each(|p| scale_policy(p, m));
        }
        PolicySpec::Sequence(stages) => {
            stages
                .iter_mut()
                .for_each(|st| scale_policy(&mut st.policy, m));
        }
        PolicySpec::Limits {
            max_flops, policy, ..
        } => {
            if let Some(f) = max_flops {
                *f *= m;
            }
            scale_policy(policy, m);
        }
        // A policy kind added later is left as written.
        #[allow(unreachable_patterns)]
        _ => {}
    }
}

/// Refuses a list that names the same value twice: two runs would share a name and a log.
fn distinct<T: PartialEq + std::fmt::Display>(flag: &str, v: &[T]) -> Result<(), String> {
    match v.iter().enumerate().find(|(i, x)| v[..*i].contains(x)) {
        Some((_, x)) => Err(format!("{flag}: {x} is given twice")),
        None => Ok(()),
    }
}

/// Parses `keep`, `rewarm:STEPS`, `rewind`.
pub fn parse_on_growth(s: &str) -> Result<OnGrowth, String> {
    match s.trim() {
        "keep" => Ok(OnGrowth::Keep),
        "rewind" => Ok(OnGrowth::RewindToPeak),
        other => {
            let steps = other
                .strip_prefix("rewarm:")
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|&n| n > 0)
                .ok_or(format!(
                    "--on-growth: {other:?} is not keep, rewarm:STEPS (STEPS >= 1) or rewind"
                ))?;
            Ok(OnGrowth::Rewarm { steps })
        }
    }
}

fn on_growth_suffix(o: OnGrowth) -> String {
    match o {
        OnGrowth::Keep => "keep".into(),
        OnGrowth::Rewarm { steps } => format!("rewarm{steps}"),
        OnGrowth::RewindToPeak => "rewind".into(),
    }
}

fn pair<A: std::str::FromStr, B: std::str::FromStr>(v: &str) -> Option<(A, B)> {
    let (a, b) = v.split_once(':')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// The output directory, created if missing, and shown to be writable.
fn prepare_out(out: &Path) -> Result<(), String> {
    if out.exists() && !out.is_dir() {
        return Err(format!(
            "--out {}: exists and is not a directory",
            out.display()
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| format!("--out {}: {e}", out.display()))?;
    // Written as the report will be (atomically), so a directory that refuses it fails here.
    let probe = out.join(format!(".write-test-{}", std::process::id()));
    dfdx_grow::fsio::write_atomic(&probe, b"")
        .map_err(|e| format!("--out {}: cannot write there: {e}", out.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// The metrics a policy sees at the first observation of a model built at `width`, with
/// (zero) gradients so that gradient-norm rules can be checked.
fn first_metrics(
    model: ModelArg,
    shape: InputShape,
    width: usize,
    cap: usize,
) -> Result<Metrics, String> {
    fn of<N: Growable<f32, Cpu>>(n: &N) -> Result<Metrics, String> {
        let mut g = n.try_alloc_grads().map_err(|e| e.to_string())?;
        Metrics::of(n)
            .grads(&mut g)
            .build()
            .map_err(|e| e.to_string())
    }
    let rng = &mut StdRng::seed_from_u64(0);
    match model {
        ModelArg::Mlp => of(&build_mlp(shape, width, cap, rng)?),
        ModelArg::Resmlp => of(&build_resmlp(shape, width, cap, rng)?),
        ModelArg::Cnn => of(&build_cnn(shape, width, cap, rng)?),
    }
}

/// The FLOPs of one training step of the model at `width`.
fn flops_per_step(
    model: ModelArg,
    shape: InputShape,
    width: usize,
    cap: usize,
    batch: usize,
) -> Result<f64, String> {
    let rng = &mut StdRng::seed_from_u64(0);
    Ok(match model {
        ModelArg::Mlp => step_flops(&build_mlp(shape, width, cap, rng)?, batch),
        ModelArg::Resmlp => step_flops(&build_resmlp(shape, width, cap, rng)?, batch),
        ModelArg::Cnn => step_flops(&build_cnn(shape, width, cap, rng)?, batch),
    })
}

/// Reads the data of every seed: the digits are split anew per seed, Fashion-MNIST and the
/// teacher are the same for all.
fn tasks(a: &Args, seeds: &[u64]) -> Result<Vec<Arc<Task>>, String> {
    match a.dataset {
        DatasetArg::Digits => {
            let ds = data::digits::digits().map_err(|e| e.to_string())?;
            seeds
                .iter()
                .map(|&s| {
                    let split = stratified_split(&ds, 0.2, s).map_err(|e| e.to_string())?;
                    Ok(Arc::new(Task::Fixed {
                        train: split.train,
                        val: EvalSet::from_dataset(&split.val),
                    }))
                })
                .collect()
        }
        DatasetArg::FashionMnist => {
            let dir = a
                .data_dir
                .clone()
                .unwrap_or_else(|| data::idx::FASHION_MNIST_DIR.into());
            let (train, val) = data::idx::load_fashion_mnist(&dir).map_err(|e| e.to_string())?;
            let t = Arc::new(Task::Fixed {
                train,
                val: EvalSet::from_dataset(&val),
            });
            Ok(seeds.iter().map(|_| t.clone()).collect())
        }
        DatasetArg::TeacherStudent => {
            let teacher_seed = a.teacher_seed.unwrap_or(0);
            let teacher =
                Teacher::new(TeacherSpec::default(), teacher_seed).map_err(|e| e.to_string())?;
            let val = teacher
                .soft_set(TEACHER_VAL, teacher_seed ^ 0x7a1)
                .map_err(|e| e.to_string())?;
            let probe = teacher
                .soft_set(a.probe_size, teacher_seed ^ 0x9b0be)
                .map_err(|e| e.to_string())?;
            let floor = val.loss_floor();
            let t = Arc::new(Task::Teacher {
                teacher,
                val: EvalSet::from_soft(&val),
                probe: EvalSet::from_soft(&probe),
                floor,
            });
            Ok(seeds.iter().map(|_| t.clone()).collect())
        }
    }
}

/// Checks every flag, reads every file and builds the plan.
pub fn plan(a: &Args) -> Result<Plan, String> {
    let d = defaults(a.dataset);
    // Flags that cannot work, before anything is read.
    if a.data_dir.is_some() && a.dataset != DatasetArg::FashionMnist {
        return Err(format!(
            "--data-dir is only for --dataset fashion-mnist (the {} data need no files)",
            a.dataset.name()
        ));
    }
    let (small, large) = (d.widths)(a.model).ok_or(format!(
        "--model {} does not fit --dataset {} (a CNN needs images)",
        a.model.name(),
        a.dataset.name()
    ))?;
    if a.teacher_seed.is_some() && a.dataset != DatasetArg::TeacherStudent {
        return Err(format!(
            "--teacher-seed is only for --dataset teacher-student (not {})",
            a.dataset.name()
        ));
    }
    let steps = a.steps.unwrap_or(d.steps);
    if steps == 0 {
        return Err("--steps 0: a run needs at least one step".into());
    }
    if a.seeds == 0 {
        return Err("--seeds 0: at least one seed".into());
    }
    if a.seeds > MAX_SEEDS {
        return Err(format!(
            "--seeds {}: at most {MAX_SEEDS} (every seed trains every run)",
            a.seeds
        ));
    }
    if a.seed.checked_add(a.seeds - 1).is_none() {
        return Err(format!(
            "--seed {} --seeds {}: the last seed would be past {}",
            a.seed,
            a.seeds,
            u64::MAX
        ));
    }
    if a.jobs == 0 {
        return Err("--jobs 0: at least one".into());
    }
    let eval_every = a.eval_every.unwrap_or(d.eval_every);
    if eval_every == 0 {
        return Err("--eval-every 0: at least 1".into());
    }
    let budgets = if a.budgets.is_empty() {
        if a.dataset == DatasetArg::TeacherStudent && !a.sizing {
            vec![0.25, 0.5, 1.0, 2.0]
        } else {
            vec![1.0]
        }
    } else {
        a.budgets.clone()
    };
    for &b in &budgets {
        if !(b.is_finite() && b > 0.0) || (steps as f64 * b).round() < 1.0 {
            return Err(format!(
                "--budgets: {b} is not a multiplier > 0 that leaves at least one of {steps} steps"
            ));
        }
        // A run with a FLOP budget may take three times its steps: keep that countable.
        if steps as f64 * b > MAX_STEPS as f64 {
            return Err(format!(
                "--steps {steps} at budget {b}x: more than {MAX_STEPS} steps in one run"
            ));
        }
    }
    distinct("--budgets", &budgets)?;
    let mode = if a.sizing {
        Mode::Sizing
    } else {
        Mode::Compare
    };
    let max_width = match a.model {
        ModelArg::Mlp | ModelArg::Resmlp => MAX_WIDTH,
        ModelArg::Cnn => MAX_CNN_WIDTH,
    };
    let grid: Vec<usize> = match mode {
        Mode::Compare if !a.grid.is_empty() => {
            return Err("--grid is only for --sizing (the static widths it compares)".into())
        }
        Mode::Compare => Vec::new(),
        Mode::Sizing if a.grid.is_empty() => DEFAULT_GRID.to_vec(),
        Mode::Sizing => a.grid.clone(),
    };
    if let Some(&w) = grid.iter().find(|&&w| w == 0 || w > max_width) {
        return Err(format!(
            "--grid: width {w}: every width must be in 1..={max_width} for --model {}",
            a.model.name()
        ));
    }
    distinct("--grid", &grid)?;
    let cap = match mode {
        Mode::Compare => large,
        Mode::Sizing => grid.iter().copied().max().unwrap_or(large),
    };
    let start_width = match mode {
        Mode::Compare => small,
        Mode::Sizing => grid.iter().copied().min().unwrap_or(small),
    };
    let new_unit_lr = a
        .new_unit_lr
        .as_deref()
        .map(|v| {
            pair(v)
                .map(|(scale, steps)| NewUnitLr { scale, steps })
                .ok_or(format!("--new-unit-lr: {v:?} is not SCALE:STEPS"))
        })
        .transpose()?;
    let shrink_perturb = a
        .shrink_perturb
        .as_deref()
        .map(|v| {
            let (s, n) = pair::<f64, f64>(v)
                .ok_or(format!("--shrink-perturb: {v:?} is not SHRINK:NOISE"))?;
            ShrinkPerturb::new(s, n, PerturbScope::Grown)
                .map_err(|e| format!("--shrink-perturb: {e}"))
        })
        .transpose()?;
    let common = Common {
        batch: d.batch,
        eval_every,
        new_units: match a.adam_new_units {
            NewUnitsArg::Cohort => NewUnitSteps::Cohort,
            NewUnitsArg::Global => NewUnitSteps::Global,
        },
        new_unit_eps: a.new_unit_eps,
        new_unit_lr,
        reset_optimizer: a.opt_state == OptStateArg::Reset,
        shrink_perturb,
        health_after: a.health_after,
        loss_tolerance: a.loss_tolerance,
        probe_size: a.probe_size,
    };
    if !(a.loss_tolerance.is_finite() && a.loss_tolerance >= 0.0) {
        return Err(format!(
            "--loss-tolerance {}: must be finite and >= 0",
            a.loss_tolerance
        ));
    }
    if a.probe_size == 0 || a.probe_size > MAX_PROBE {
        return Err(format!(
            "--probe-size {}: the probe batch needs 1..={MAX_PROBE} examples",
            a.probe_size
        ));
    }
    // The optimizer settings, checked once.
    {
        let mut opt = dfdx_grow::optim::Adam::<f32>::new(dfdx_grow::optim::AdamConfig {
            lr: a.lr,
            new_units: common.new_units,
            new_unit_eps: common.new_unit_eps,
            ..Default::default()
        })
        .map_err(|e| format!("Adam (--lr, --new-unit-eps): {e}"))?;
        if let Some(l) = new_unit_lr {
            opt = opt
                .with_new_unit_lr(l)
                .map_err(|e| format!("--new-unit-lr: {e}"))?;
        }
        let _ = opt;
    }

    // The learning-rate schedule (its budget is set per run) and the growth actions.
    let default_sched = if a.dataset == DatasetArg::Digits {
        "constant"
    } else {
        "cosine"
    };
    let sched_arg = a.lr_schedule.clone().unwrap_or(default_sched.into());
    if a.warmup.is_some() && sched_arg != "cosine" {
        return Err(format!(
            "--warmup is only for --lr-schedule cosine (the schedule here is {sched_arg})"
        ));
    }
    let warmup = a.warmup.unwrap_or((steps as u64).div_ceil(50));
    if warmup >= steps as u64 {
        return Err(format!(
            "--warmup {warmup}: the warm-up must end before the run's {steps} steps do"
        ));
    }
    let base_lr = match sched_arg.as_str() {
        "constant" => LrScheduleSpec {
            peak: a.lr,
            warmup: 0,
            decay: Decay::Constant,
            budget: Budget::Steps(steps as u64),
            on_growth: OnGrowth::Keep,
        },
        "cosine" => LrScheduleSpec {
            peak: a.lr,
            warmup,
            decay: Decay::Cosine { floor: 0.0 },
            budget: Budget::Steps(steps as u64),
            on_growth: OnGrowth::Keep,
        },
        file => {
            let text = dfdx_grow::fsio::read_bounded(Path::new(file), 1 << 20)
                .map_err(|e| format!("--lr-schedule {file}: {}", e.into_io_error()))?;
            let text = String::from_utf8(text)
                .map_err(|_| format!("--lr-schedule {file}: not UTF-8 text"))?;
            LrScheduleSpec::from_ron(&text, file).map_err(|e| e.to_string())?
        }
    };
    base_lr.validate("--lr").map_err(|e| e.to_string())?;
    let on_growth: Vec<OnGrowth> = if !a.on_growth.is_empty() {
        a.on_growth
            .iter()
            .map(|s| parse_on_growth(s))
            .collect::<Result<_, _>>()?
    } else if a.dataset == DatasetArg::TeacherStudent && a.lr_schedule.is_none() {
        vec![OnGrowth::Keep, OnGrowth::RewindToPeak]
    } else {
        vec![base_lr.on_growth]
    };
    distinct(
        "--on-growth",
        &on_growth
            .iter()
            .map(|&o| on_growth_suffix(o))
            .collect::<Vec<_>>(),
    )?;
    let lr_description = format!(
        "{} (peak {}, warm-up {} steps, decay {:?})",
        sched_arg, base_lr.peak, base_lr.warmup, base_lr.decay
    );

    // The policy files: read, scaled, and checked against the model they will grow.
    let files = if a.policies.is_empty() {
        ron_files(&policy_dir(a.dataset, a.model, a.sizing))?
    } else {
        a.policies.clone()
    };
    let file_stems = stems(&files);
    let metrics = first_metrics(a.model, d.shape, start_width, cap)?;
    let mut specs: Vec<(PathBuf, String, PolicySpec)> = Vec::new();
    for (f, stem) in files.iter().zip(&file_stems) {
        let origin = f.display().to_string();
        let spec = load_spec(f).map_err(|e| e.to_string())?;
        for &b in &budgets {
            let mut scaled = spec.clone();
            scale_policy(&mut scaled, b);
            scaled
                .validate_for(&metrics)
                .map_err(|e| e.from_origin(&origin).to_string())?;
        }
        specs.push((f.clone(), stem.clone(), spec));
    }

    prepare_out(&a.out)?;
    let seeds: Vec<u64> = (0..a.seeds).map(|i| a.seed + i).collect();
    let tasks = tasks(a, &seeds)?;
    for t in &tasks {
        t.check(d.batch)?;
    }

    // The runs.
    let multi_seed = seeds.len() > 1;
    let multi_budget = budgets.len() > 1;
    let suffix = |seed: u64, b: f64| {
        let mut s = String::new();
        if multi_budget {
            s.push_str(&format!("-{b}x"));
        }
        if multi_seed {
            s.push_str(&format!("-seed{seed}"));
        }
        s
    };
    // The warm-up is written for the 1x budget and scales with it, as schedule events do.
    // Each run's schedule is checked too: its budget is the run's own.
    let lr_for = |budget: Budget, on: OnGrowth, b: f64| -> Result<LrScheduleSpec, String> {
        let spec = LrScheduleSpec {
            budget,
            on_growth: on,
            warmup: (base_lr.warmup as f64 * b).round() as u64,
            ..base_lr.clone()
        };
        spec.validate(&lr_description).map_err(|e| e.to_string())?;
        Ok(spec)
    };
    let mut groups = Vec::new();
    for (&seed, task) in seeds.iter().zip(&tasks) {
        for &b in &budgets {
            let n = ((steps as f64) * b).round() as usize;
            // Where grown runs spend static-large's FLOPs, every schedule runs over FLOPs (a
            // static run's over its own); otherwise over steps.
            let over_flops = mode == Mode::Compare && !a.same_steps;
            let static_run = |name: String, width: usize| -> Result<RunSpec, String> {
                let f = flops_per_step(a.model, d.shape, width, cap, d.batch)? * n as f64;
                let budget = if over_flops {
                    Budget::Flops(f)
                } else {
                    Budget::Steps(n as u64)
                };
                Ok(RunSpec {
                    name,
                    seed,
                    width,
                    steps: n,
                    flops_budget: None,
                    lr: lr_for(budget, OnGrowth::Keep, b)?,
                    grown: None,
                })
            };
            let mut runs = Vec::new();
            let grown_budget = match mode {
                Mode::Compare => {
                    runs.push(static_run("static-small".into(), small)?);
                    runs.push(static_run("static-large".into(), large)?);
                    let large_flops =
                        flops_per_step(a.model, d.shape, large, cap, d.batch)? * n as f64;
                    (!a.same_steps).then_some(large_flops)
                }
                Mode::Sizing => {
                    for &w in &grid {
                        runs.push(static_run(format!("static-{w}"), w)?);
                    }
                    None
                }
            };
            for (file, stem, spec) in &specs {
                let mut scaled = spec.clone();
                scale_policy(&mut scaled, b);
                let ron = scaled.to_ron().map_err(|e| e.to_string())?;
                for &on in &on_growth {
                    let mut name = format!("grown-{stem}");
                    if on_growth.len() > 1 {
                        name.push_str(&format!("-{}", on_growth_suffix(on)));
                    }
                    let budget = match grown_budget {
                        Some(f) => Budget::Flops(f),
                        None => Budget::Steps(n as u64),
                    };
                    let audit = a.out.join(format!(
                        "audit-{}{}.jsonl",
                        name.trim_start_matches("grown-"),
                        suffix(seed, b)
                    ));
                    runs.push(RunSpec {
                        name,
                        seed,
                        width: start_width,
                        steps: n,
                        flops_budget: grown_budget,
                        lr: lr_for(budget, on, b)?,
                        grown: Some(GrownSpec {
                            policy_ron: ron.clone(),
                            origin: file.display().to_string(),
                            audit,
                        }),
                    });
                }
            }
            groups.push(Group {
                seed,
                budget: b,
                task: task.clone(),
                runs,
            });
        }
    }
    let target = a.target.unwrap_or(match a.dataset {
        DatasetArg::FashionMnist => TargetArg::Best,
        _ => TargetArg::Final,
    });
    let floor = tasks.first().and_then(|t| t.floor());
    eprintln!(
        "{} ({}): {} runs in {} comparison(s) (seeds {:?}, budgets {:?}); {} steps at 1x of Adam (batch {}), lr {}; {} -> {}",
        a.dataset.name(),
        a.model.name(),
        groups.iter().map(|g| g.runs.len()).sum::<usize>(),
        groups.len(),
        seeds,
        budgets,
        steps,
        d.batch,
        lr_description,
        describe(a.model, d.shape, start_width),
        describe(a.model, d.shape, cap),
    );
    Ok(Plan {
        dataset: a.dataset,
        model: a.model,
        mode,
        shape: d.shape,
        small: start_width,
        large: cap,
        cap,
        steps,
        common,
        groups,
        out: a.out.clone(),
        target,
        jobs: a.jobs,
        quiet: a.quiet,
        lr_description,
        policies: files.into_iter().zip(file_stems).collect(),
        floor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["compare_budgets"];
        v.extend_from_slice(extra);
        Args::try_parse_from(v).expect("parses")
    }

    /// The error of a plan that must be refused (a `Plan` holds the data: no Debug dump).
    fn refused(a: &Args) -> String {
        match plan(a) {
            Ok(_) => panic!("accepted"),
            Err(e) => e,
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cb-setup-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    const GOOD: &str = "Schedule(events: [(at: Step(5), target: Layer(0), size: Fixed(4))])";

    /// The built-in schedules validated with a placeholder budget of one step once refused
    /// every warm-up, so the default runs of teacher-student and Fashion-MNIST did not start.
    #[test]
    fn the_built_in_schedules_with_a_warm_up_plan() {
        for sched in ["cosine", "constant"] {
            let out = tmp(&format!("sched-{sched}"));
            let a = args(&[
                "--dataset",
                "teacher-student",
                "--steps",
                "400",
                "--lr-schedule",
                sched,
                "--out",
                out.to_str().unwrap(),
            ]);
            if let Err(e) = plan(&a) {
                panic!("{sched}: {e}");
            }
            let _ = std::fs::remove_dir_all(&out);
        }
    }

    #[test]
    fn same_stems_get_distinct_run_names() {
        let files = [
            PathBuf::from("policies/schedule.ron"),
            PathBuf::from("policies/fashion-mnist/schedule.ron"),
            PathBuf::from("policies/plateau.ron"),
            PathBuf::from("policies/plateau.ron"),
        ];
        assert_eq!(
            stems(&files),
            vec![
                "policies-schedule",
                "fashion-mnist-schedule",
                "plateau",
                "plateau-2"
            ]
        );
        // A stem chosen at one depth can be another file's at another: still distinct, and
        // the numbering skips names a file has already.
        let files = [
            PathBuf::from("a/plateau.ron"),
            PathBuf::from("b/plateau.ron"),
            PathBuf::from("dir/a-plateau.ron"),
            PathBuf::from("a-plateau-2.ron"),
            PathBuf::from("/p.ron"),
            PathBuf::from("./p.ron"),
        ];
        let s = stems(&files);
        assert_eq!(s.iter().collect::<BTreeSet<_>>().len(), s.len(), "{s:?}");
        assert!(s.iter().all(|n| !n.contains('/')), "{s:?}");
    }

    #[test]
    fn zero_steps_and_data_dir_with_digits_are_refused_before_anything_runs() {
        let out = tmp("steps0");
        let o = out.to_str().unwrap();
        assert!(refused(&args(&["--steps", "0", "--out", o])).contains("--steps 0"));
        assert!(refused(&args(&["--data-dir", "/tmp", "--out", o]))
            .contains("--data-dir is only for --dataset fashion-mnist"));
        // Neither created the output directory: they failed first.
        assert!(!out.exists());
    }

    #[test]
    fn a_bad_policy_file_is_reported_before_training_with_its_name() {
        let out = tmp("badpolicy");
        let bad = std::env::temp_dir().join(format!("cb-bad-{}.ron", std::process::id()));
        std::fs::write(
            &bad,
            "Schedule(events: [(at: Step(10), target: Site(\"nope\"), size: Fixed(4))])",
        )
        .unwrap();
        let e = refused(&args(&[
            "--policy",
            bad.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]));
        assert!(
            e.contains(bad.to_str().unwrap()) && e.contains("nope"),
            "{e}"
        );
        std::fs::write(&bad, "Schedule(events: [(at: Step(10)").unwrap();
        let e = refused(&args(&["--policy", bad.to_str().unwrap()]));
        assert!(e.contains(bad.to_str().unwrap()), "{e}");
        let _ = std::fs::remove_file(bad);
    }

    #[test]
    fn the_output_directory_is_created_or_refused_before_training() {
        let dir = tmp("out");
        let fresh = dir.join("new/nested");
        prepare_out(&fresh).unwrap();
        assert!(fresh.is_dir());
        assert_eq!(
            std::fs::read_dir(&fresh).unwrap().count(),
            0,
            "no probe left"
        );
        let file = dir.join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let e = refused(&args(&["--out", file.to_str().unwrap()]));
        assert!(e.contains("--out") && e.contains("not a directory"), "{e}");
        let e = refused(&args(&["--out", file.join("below").to_str().unwrap()]));
        assert!(e.contains("--out"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Every numeric flag out of range, and every flag the run would ignore, is an error
    /// naming the flag, and none of them creates the output directory.
    #[test]
    fn numeric_flags_out_of_range_and_flags_that_would_be_ignored_are_refused() {
        let out = tmp("flags");
        let o = out.to_str().unwrap();
        let max = u64::MAX.to_string();
        let cases: &[(&[&str], &str)] = &[
            (&["--seeds", "0"], "--seeds 0"),
            (&["--seeds", "1001"], "--seeds 1001"),
            (&["--seed", &max, "--seeds", "2"], "--seed"),
            (&["--budgets", "0"], "--budgets"),
            (&["--budgets=-1"], "--budgets"),
            (&["--budgets", "nan"], "--budgets"),
            (&["--budgets", "inf"], "--budgets"),
            (&["--budgets", "0.0001"], "--budgets"),
            (&["--budgets", "1,0.5,1"], "--budgets: 1 is given twice"),
            (&["--steps", "1000000000000000"], "more than"),
            (&["--grid", "64,128"], "--grid is only for --sizing"),
            (&["--sizing", "--grid", "64,0"], "--grid: width 0"),
            (
                &["--sizing", "--grid", "64,64"],
                "--grid: 64 is given twice",
            ),
            (&["--sizing", "--grid", "64,100000000"], "--grid: width"),
            (
                &["--on-growth", "keep,keep"],
                "--on-growth: keep is given twice",
            ),
            (&["--on-growth", "sometimes"], "--on-growth"),
            (
                &["--warmup", "10"],
                "--warmup is only for --lr-schedule cosine",
            ),
            (
                &["--lr-schedule", "cosine", "--warmup", "3000"],
                "--warmup 3000",
            ),
            (&["--teacher-seed", "3"], "--teacher-seed"),
            (&["--probe-size", "0"], "--probe-size 0"),
            (&["--probe-size", "100000000"], "--probe-size"),
            (&["--lr=-1"], "--lr"),
            (&["--lr", "nan"], "--lr"),
            (&["--new-unit-eps=-1"], "--new-unit-eps"),
            (&["--eval-every", "0"], "--eval-every 0"),
            (&["--jobs", "0"], "--jobs 0"),
            (&["--loss-tolerance", "nan"], "--loss-tolerance"),
            (&["--new-unit-lr", "fast"], "--new-unit-lr"),
            (&["--shrink-perturb", "2:0.1"], "--shrink-perturb"),
            (
                &["--model", "cnn", "--dataset", "teacher-student"],
                "--model cnn",
            ),
        ];
        for (flags, expected) in cases {
            let mut v = flags.to_vec();
            v.extend(["--out", o]);
            let e = refused(&args(&v));
            assert!(e.contains(expected), "{flags:?}: {e}");
        }
        assert!(!out.exists(), "a refused plan created --out");
    }

    /// A mistake in any one policy file is reported before training, naming that file: a
    /// syntax error, a layer the model lacks, a site name with a typo. A gradient-norm file
    /// passes: the check's metrics carry gradient norms as training's do.
    #[test]
    fn a_bad_policy_among_good_ones_is_reported_naming_the_file() {
        let dir = tmp("policies");
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let good = write("good.ron", GOOD);
        let bad = [
            write("syntax.ron", "Schedule(events: [(at: Step(5)"),
            write(
                "missing.ron",
                "Schedule(events: [(at: Step(5), target: Layer(2), size: Fixed(4))])",
            ),
            write(
                "typo.ron",
                "Schedule(events: [(at: Step(5), target: Site(\"hidden.1\"), size: Fixed(4))])",
            ),
        ];
        let out = dir.join("out");
        let o = out.to_str().unwrap();
        for bad in &bad {
            let b = bad.to_str().unwrap();
            let e = refused(&args(&[
                "--policy",
                good.to_str().unwrap(),
                "--policy",
                b,
                "--out",
                o,
            ]));
            assert!(e.contains(b), "{e}");
        }
        assert!(!out.exists(), "a refused plan created --out");
        let gradnorm = write(
            "g.ron",
            "GradNorm(rules: [(layer: 0, cross: Below(0.1))], sustain: 2, size: Fixed(4))",
        );
        plan(&args(&["--policy", gradnorm.to_str().unwrap(), "--out", o])).expect("plans");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Policy files that share a stem (or the same file twice) get runs of their own: distinct
    /// names and distinct audit logs, at every seed, budget and growth action.
    #[test]
    fn policy_files_with_the_same_stem_get_their_own_run_names_and_logs() {
        let dir = tmp("stems");
        let files: Vec<PathBuf> = [
            "a/plateau.ron",
            "b/plateau.ron",
            "plateau-2.ron",
            "c/plateau.ron",
        ]
        .iter()
        .map(|rel| {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, GOOD).unwrap();
            p
        })
        .collect();
        let mut v: Vec<&str> = Vec::new();
        for f in files.iter().chain([&files[0]]) {
            v.extend(["--policy", f.to_str().unwrap()]);
        }
        let o = dir.join("out");
        v.extend([
            "--out",
            o.to_str().unwrap(),
            "--seeds",
            "2",
            "--budgets",
            "0.5,1",
        ]);
        v.extend(["--on-growth", "keep,rewind"]);
        let p = plan(&args(&v)).expect("plans");
        let mut names = BTreeSet::new();
        let mut logs = BTreeSet::new();
        for g in &p.groups {
            let mut in_group = BTreeSet::new();
            for r in &g.runs {
                assert!(in_group.insert(r.name.clone()), "{} twice", r.name);
                names.insert(r.name.clone());
                if let Some(x) = &r.grown {
                    assert!(logs.insert(x.audit.clone()), "{} twice", x.audit.display());
                    assert_eq!(x.audit.parent(), Some(o.as_path()));
                }
            }
        }
        // 5 files x 2 growth actions, each at 2 seeds x 2 budgets.
        assert_eq!(logs.len(), 5 * 2 * 4);
        assert!(names.contains("grown-plateau-2-keep"), "{names:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_default_plan_is_the_digits_comparison() {
        let out = tmp("default");
        let p = plan(&args(&["--out", out.to_str().unwrap()])).expect("plans");
        assert_eq!(p.groups.len(), 1);
        let names: Vec<&str> = p.groups[0].runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "static-small",
                "static-large",
                "grown-combined",
                "grown-gradnorm",
                "grown-plateau",
                "grown-schedule"
            ]
        );
        // Grown runs get static-large's FLOPs; every run a constant rate of 1e-3.
        let large = &p.groups[0].runs[1];
        let Budget::Flops(f) = large.lr.budget else {
            panic!("FLOP budget")
        };
        assert_eq!(p.groups[0].runs[2].flops_budget, Some(f));
        assert_eq!(large.lr.decay, Decay::Constant);
        assert!(out.is_dir());
        let _ = std::fs::remove_dir_all(out);
    }

    #[test]
    fn schedule_steps_scale_with_the_budget() {
        let mut spec = PolicySpec::from_ron(
            "Limits(max_flops: 100.0, policy: Schedule(events: [(at: Step(400), target: Layer(0), size: Fixed(1))]))",
            "t",
        )
        .unwrap();
        scale_policy(&mut spec, 0.25);
        let ron = spec.to_ron().unwrap();
        assert!(ron.contains("Step(100)"), "{ron}");
        assert!(ron.contains("25.0"), "{ron}");
    }

    /// Every shipped policy file parses and fits the model of its directory, at every budget
    /// multiplier the experiments use; every shipped schedule file parses.
    #[test]
    fn every_shipped_policy_file_fits_its_model() {
        let mut checked = 0;
        for dataset in [
            DatasetArg::Digits,
            DatasetArg::FashionMnist,
            DatasetArg::TeacherStudent,
        ] {
            let d = defaults(dataset);
            for model in [ModelArg::Mlp, ModelArg::Resmlp, ModelArg::Cnn] {
                let Some((small, large)) = (d.widths)(model) else {
                    continue;
                };
                for sizing in [false, true] {
                    let dir = policy_dir(dataset, model, sizing);
                    let Ok(files) = ron_files(&dir) else { continue };
                    let width = if sizing { 64 } else { small };
                    let cap = if sizing { 1024 } else { large };
                    let m = first_metrics(model, d.shape, width, cap).unwrap();
                    for f in files {
                        let spec = load_spec(&f).unwrap_or_else(|e| panic!("{e}"));
                        for b in [0.25, 1.0, 2.0] {
                            let mut s = spec.clone();
                            scale_policy(&mut s, b);
                            s.validate_for(&m)
                                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                        }
                        checked += 1;
                    }
                }
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        for f in ron_files(&root.join("fashion-mnist/ablations")).unwrap() {
            let m = first_metrics(
                ModelArg::Mlp,
                defaults(DatasetArg::FashionMnist).shape,
                64,
                1024,
            )
            .unwrap();
            load_spec(&f).unwrap().validate_for(&m).unwrap();
            checked += 1;
        }
        for f in ron_files(&root.join("lr")).unwrap() {
            let text = std::fs::read_to_string(&f).unwrap();
            LrScheduleSpec::from_ron(&text, &f.display().to_string()).unwrap();
            checked += 1;
        }
        assert!(checked >= 30, "only {checked} files checked");
    }

    #[test]
    fn on_growth_options_parse() {
        assert_eq!(parse_on_growth("keep"), Ok(OnGrowth::Keep));
        assert_eq!(
            parse_on_growth("rewarm:200"),
            Ok(OnGrowth::Rewarm { steps: 200 })
        );
        assert_eq!(parse_on_growth("rewind"), Ok(OnGrowth::RewindToPeak));
        assert!(parse_on_growth("rewarm:0").is_err());
        assert!(parse_on_growth("sometimes").is_err());
    }
}
