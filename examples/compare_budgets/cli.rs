//! The command line (clap). Everything here is only parsed; `setup` checks it against the data,
//! the models and the files before anything trains.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// How much training compute does growing save against training the large network from
/// scratch, at the same final quality? Trains static-small, static-large and one grown run
/// per policy file (and per learning-rate option), and writes summary.json, one audit log per
/// grown run and a plot of validation loss against training FLOPs.
#[derive(Parser, Debug, Clone)]
#[command(name = "compare_budgets", version)]
pub struct Args {
    /// The data: the embedded UCI digits, Fashion-MNIST (IDX files, see --data-dir), or a
    /// fixed random teacher network labelling fresh inputs at every step (compute-bound).
    #[arg(long, value_enum, default_value_t = DatasetArg::Digits)]
    pub dataset: DatasetArg,

    /// Where the Fashion-MNIST IDX files are (default /usr/share/datasets/fashion-mnist).
    /// Only for --dataset fashion-mnist.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// The model: an MLP with one hidden layer, a residual MLP (a 64-wide stream, two blocks
    /// whose hidden layers grow), or a CNN (two 3x3 convolutions whose channels grow, then a
    /// linear head; image data sets only).
    #[arg(long, value_enum, default_value_t = ModelArg::Mlp)]
    pub model: ModelArg,

    /// The automatic-sizing experiment: static runs at every --grid width against grown runs
    /// (by default the efficiency trigger with the stop rule).
    #[arg(long)]
    pub sizing: bool,

    /// The static widths of --sizing (only with --sizing). Default: 64,128,256,512,1024.
    #[arg(long, value_delimiter = ',')]
    pub grid: Vec<usize>,

    /// A policy file for a grown run; repeat for several. Default: every .ron file of the
    /// data set's and model's policy directory (`policies/...`).
    #[arg(long = "policy", value_name = "FILE")]
    pub policies: Vec<PathBuf>,

    /// Where summary.json, the audit logs and the plots go (created if missing).
    #[arg(long, value_name = "DIR", default_value = "target/compare_budgets")]
    pub out: PathBuf,

    /// The first seed (init, data order, split of the digits, the runs' random streams).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// How many seeds (seed, seed+1, ...): every run is repeated for each, and the summary
    /// gives each run's mean and spread.
    #[arg(long, default_value_t = 1)]
    pub seeds: u64,

    /// Training steps of the static runs at the 1x budget. Default: digits 3000, Fashion-MNIST
    /// 4690 (10 epochs at batch 128), teacher-student 4000.
    #[arg(long)]
    pub steps: Option<usize>,

    /// Budget multipliers: every comparison is run at each (static runs train steps x m
    /// steps; schedule events in policy files are written for 1x and scaled with m).
    /// Default: 1, and 0.25,0.5,1,2 for the teacher-student task.
    #[arg(long, value_delimiter = ',')]
    pub budgets: Vec<f64>,

    /// Grown runs stop after the same number of steps as the static runs instead of training
    /// on until they have spent static-large's FLOPs.
    #[arg(long)]
    pub same_steps: bool,

    /// The peak learning rate of Adam.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,

    /// The learning-rate schedule of every run: constant, cosine (linear warm-up over
    /// --warmup steps, then half a cosine to 0 over the run's FLOP budget), or a RON file of an
    /// `LrScheduleSpec` (its budget is replaced by each run's). Default: constant on the
    /// digits (the run as it always was), cosine elsewhere.
    #[arg(long, value_name = "constant|cosine|FILE")]
    pub lr_schedule: Option<String>,

    /// Warm-up steps of the cosine schedule. Default: 2 % of the static runs' steps.
    #[arg(long)]
    pub warmup: Option<u64>,

    /// What a growth does to the learning rate, one grown run per entry: keep, rewarm:STEPS
    /// (ramp from 0 back up), rewind (back to the peak, then decay over what is left). Default:
    /// the schedule file's own, or keep; keep,rewind for teacher-student (rewarm:200 had the
    /// worst mean final loss of the three at every budget, for both policies, over 3 seeds).
    #[arg(long, value_delimiter = ',')]
    pub on_growth: Vec<String>,

    /// Adam's step count for new weights: each growth cohort its own (cohort), or the global
    /// one (global, the naive padding).
    #[arg(long, value_enum, default_value_t = NewUnitsArg::Cohort)]
    pub adam_new_units: NewUnitsArg,

    /// Adam's epsilon for new weights relative to the existing weights' update scale
    /// (`AdamConfig::new_unit_eps`; 0 is the behaviour before the fix of issue 7).
    #[arg(long, default_value_t = 0.03)]
    pub new_unit_eps: f64,

    /// A learning rate of their own for new weights: SCALE:STEPS (e.g. 0.1:300).
    #[arg(long, value_name = "SCALE:STEPS")]
    pub new_unit_lr: Option<String>,

    /// The optimizer state at a growth: carried (old moments kept, new ones zero) or reset
    /// (a fresh Adam for the whole grown model).
    #[arg(long, value_enum, default_value_t = OptStateArg::Carry)]
    pub opt_state: OptStateArg,

    /// Shrink-and-perturb the grown site's old weights after every growth: SHRINK:NOISE
    /// (e.g. 0.8:0.01). Off by default; not function-preserving.
    #[arg(long, value_name = "SHRINK:NOISE")]
    pub shrink_perturb: Option<String>,

    /// Steps after a growth at which the controller measures the new units on the probe
    /// batch and writes a `health` record to the audit log (0: no check).
    #[arg(long, default_value_t = 300)]
    pub health_after: u64,

    /// The relative rise of the probe loss past which the controller undoes a growth (an
    /// inexact init such as GradMax with epsilon > 0 or TINY needs more than the default).
    #[arg(long, default_value_t = 1e-6)]
    pub loss_tolerance: f64,

    /// Examples in the probe batch the controller checks growths on and computes the
    /// gradient-informed inits' statistics from (TINY's projection needs more than the
    /// site's width + 1).
    #[arg(long, default_value_t = 512)]
    pub probe_size: usize,

    /// Which of static-large's validation losses is the target of flops_to_target: its final
    /// one, its best (early-stopped), or the mean of its last five evaluations. Default: best
    /// on Fashion-MNIST, final elsewhere.
    #[arg(long, value_enum)]
    pub target: Option<TargetArg>,

    /// Evaluate on the validation set every N steps. Default: digits 25, else 100.
    #[arg(long)]
    pub eval_every: Option<usize>,

    /// Runs trained at the same time, each on its own thread (set RAYON_NUM_THREADS=1 to keep
    /// each on one core).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,

    /// The teacher network's seed (the task is the same for every --seed). Only for
    /// --dataset teacher-student. Default: 0.
    #[arg(long)]
    pub teacher_seed: Option<u64>,

    /// No progress bars (one line per finished run instead).
    #[arg(long)]
    pub quiet: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetArg {
    Digits,
    FashionMnist,
    TeacherStudent,
}

impl DatasetArg {
    pub fn name(self) -> &'static str {
        match self {
            DatasetArg::Digits => "digits",
            DatasetArg::FashionMnist => "fashion-mnist",
            DatasetArg::TeacherStudent => "teacher-student",
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelArg {
    Mlp,
    Resmlp,
    Cnn,
}

impl ModelArg {
    pub fn name(self) -> &'static str {
        match self {
            ModelArg::Mlp => "mlp",
            ModelArg::Resmlp => "resmlp",
            ModelArg::Cnn => "cnn",
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewUnitsArg {
    Cohort,
    Global,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptStateArg {
    Carry,
    Reset,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetArg {
    Final,
    Best,
    Last5,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn help_lists_every_flag_with_its_default() {
        let help = Args::command().render_long_help().to_string();
        for flag in [
            "--dataset",
            "--model",
            "--sizing",
            "--seeds",
            "--lr-schedule",
            "--on-growth",
            "--opt-state",
            "--shrink-perturb",
            "--jobs",
        ] {
            assert!(help.contains(flag), "{flag} missing from --help");
        }
        assert!(help.contains("[default: digits]"), "{help}");
        assert!(help.contains("Default: 64,128,256,512,1024"), "{help}");
    }
}
