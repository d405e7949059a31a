//! One training run (static or grown), measured in FLOPs and validation loss.

use std::path::PathBuf;
use std::time::Instant;

use dfdx_grow::audit::AuditLog;
use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::health::{site_health, NewUnitsSummary};
use dfdx_grow::informed::LINE_SEARCH_EVALUATIONS;
use dfdx_grow::lr::{LrSchedule, LrScheduleSpec};
use dfdx_grow::optim::{Adam, AdamConfig, NewUnitLr, NewUnitSteps, Optimizer};
use dfdx_grow::policy::{policy_from_str, Metrics};
use dfdx_grow::rand::{rngs::StdRng, SeedableRng};
use dfdx_grow::{
    flops, GrowthController, HealthAction, HealthCheck, Init, LossProbe, Outcome, Probe,
    ShrinkPerturb,
};

use crate::nets::{activity_on, evaluate, Net};
use crate::task::Task;

/// Settings shared by every run of an invocation.
#[derive(Clone, Debug)]
pub struct Common {
    pub batch: usize,
    pub eval_every: usize,
    pub new_units: NewUnitSteps,
    pub new_unit_eps: f64,
    pub new_unit_lr: Option<NewUnitLr>,
    /// A fresh optimizer after every growth instead of the padded state.
    pub reset_optimizer: bool,
    pub shrink_perturb: Option<ShrinkPerturb>,
    /// Steps after a growth at which the controller checks the new units (0: never).
    pub health_after: u64,
    /// The probe loss's allowed relative rise at a growth.
    pub loss_tolerance: f64,
    /// Examples in the probe batch.
    pub probe_size: usize,
}

/// A grown run's policy: its RON text (already scaled to the run's budget) and where it came
/// from (named in errors).
#[derive(Clone, Debug)]
pub struct GrownSpec {
    pub policy_ron: String,
    pub origin: String,
    pub audit: PathBuf,
}

/// One run to train.
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub name: String,
    pub seed: u64,
    /// The starting width.
    pub width: usize,
    /// Steps (for a run with a FLOP budget: the nominal count; it may go on to 3x that).
    pub steps: usize,
    /// Train until this many FLOPs are spent (grown runs get static-large's).
    pub flops_budget: Option<f64>,
    pub lr: LrScheduleSpec,
    pub grown: Option<GrownSpec>,
}

/// One evaluation point.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Point {
    pub step: usize,
    pub flops: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub lr: f64,
}

/// A growth, placed on the loss-FLOPs plane.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Mark {
    pub step: u64,
    pub flops: f64,
    pub site: String,
    pub new_width: usize,
}

/// What one run produced.
#[derive(Clone, Debug)]
pub struct Run {
    pub spec: RunSpec,
    pub curve: Vec<Point>,
    pub marks: Vec<Mark>,
    pub train_flops: f64,
    pub steps: usize,
    pub wall_s: f64,
    pub final_sites: Vec<(String, usize)>,
    pub refused: usize,
    pub new_units: Option<NewUnitsSummary>,
}

/// Called after every evaluation: the run's name, the point, the fraction of its budget done.
pub type Progress<'a> = dyn Fn(&Point, f64) + 'a;

fn lr_of(opt: &Adam<f32>) -> f64 {
    Optimizer::<f32, Cpu>::lr(opt)
}

fn adam(c: &Common, lr: f64) -> Result<Adam<f32>, String> {
    let mut opt = Adam::<f32>::new(AdamConfig {
        lr,
        new_units: c.new_units,
        new_unit_eps: c.new_unit_eps,
        ..Default::default()
    })
    .map_err(|e| e.to_string())?;
    if let Some(lr) = c.new_unit_lr {
        opt = opt.with_new_unit_lr(lr).map_err(|e| e.to_string())?;
    }
    Ok(opt)
}

/// The FLOPs of one training step of `net`: forward and backward on a batch, and Adam's
/// element-wise update of every parameter.
pub fn step_flops<N: Net>(net: &N, batch: usize) -> f64 {
    net.train_flops() * batch as f64 + flops::ADAM_UPDATE_FLOPS * net.num_params() as f64
}

/// Trains the model `build` makes at `spec.width` for `spec`, growing it through a controller
/// for a grown run. The init and the data order depend only on the seed, so every run of a
/// comparison sees the same batches.
pub fn train<N: Net>(
    spec: &RunSpec,
    task: &Task,
    common: &Common,
    build: &(dyn Fn(usize, &mut StdRng) -> Result<N, String> + Sync),
    progress: &Progress,
) -> Result<Run, String>
where
    Probe<f32, Cpu>: LossProbe<N>,
{
    let name = &spec.name;
    let err = |e: String| format!("{name} (seed {}): {e}", spec.seed);
    task.check(common.batch).map_err(err)?;
    let dev = Cpu::default();
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut net = build(spec.width, &mut rng).map_err(err)?;
    let schedule = LrSchedule::new(spec.lr.clone()).map_err(|e| err(e.to_string()))?;
    let mut opt = adam(common, schedule.lr(0, 0.0)).map_err(err)?;
    let mut ctl = match &spec.grown {
        None => None,
        Some(g) => {
            let policy =
                policy_from_str(&g.policy_ron, &g.origin).map_err(|e| err(e.to_string()))?;
            // The log is append-only: start each run with a fresh one.
            let _ = std::fs::remove_file(&g.audit);
            let log = AuditLog::open(&g.audit).map_err(|e| err(e.to_string()))?;
            let mut c = GrowthController::new(policy, spec.seed)
                .with_audit(log)
                .with_lr_schedule(schedule.clone())
                .with_loss_tolerance(common.loss_tolerance)
                .map_err(|e| err(e.to_string()))?;
            if common.health_after > 0 {
                c = c
                    .with_health(HealthCheck {
                        after_steps: common.health_after,
                        dead_share: 0.5,
                        action: HealthAction::Report,
                    })
                    .map_err(|e| err(e.to_string()))?;
            }
            if let Some(sp) = common.shrink_perturb {
                c = c.with_shrink_perturb(sp).map_err(|e| err(e.to_string()))?;
            }
            Some(c)
        }
    };
    let probe = task.probe(&dev, common.probe_size);
    let probe_rows = probe.input.shape().0;
    let mut batches = task.batches(common.batch, spec.seed);
    let mut spent = 0.0;
    let (mut curve, mut marks, mut refused) = (Vec::new(), Vec::new(), 0);
    let start = Instant::now();
    let val = task.val();
    let eval = |net: &N, step: usize, spent: f64, lr: f64| {
        let (val_loss, val_accuracy) = evaluate(net, val);
        Point {
            step,
            flops: spent,
            val_loss,
            val_accuracy,
            lr,
        }
    };
    curve.push(eval(&net, 0, 0.0, lr_of(&opt)));
    let last_step = if spec.flops_budget.is_some() {
        3 * spec.steps
    } else {
        spec.steps
    };
    let fraction = |step: usize, spent: f64| match spec.flops_budget {
        Some(b) => spent / b,
        None => step as f64 / spec.steps as f64,
    };
    let mut steps = 0;
    for step in 1..=last_step {
        let cost = step_flops(&net, common.batch);
        // The step that reaches the budget is the last one.
        let done = step == last_step || spec.flops_budget.is_some_and(|b| spent + cost > b);
        if ctl.is_none() {
            // A grown run's rate is set by its controller at every observation.
            Optimizer::<f32, Cpu>::set_lr(&mut opt, schedule.lr(step as u64 - 1, spent))
                .map_err(|e| err(e.to_string()))?;
        }
        let lr = lr_of(&opt);
        let (x, y) = batches.next_batch(&dev).map_err(err)?;
        let grads = net.try_alloc_grads().map_err(|e| err(e.to_string()))?;
        let loss = cross_entropy_with_logits_loss(net.train_logits(x, grads), y);
        let train_loss = loss.as_vec()[0] as f64;
        let mut grads = loss.backward();
        opt.update(&mut net, &mut grads)
            .map_err(|e| err(e.to_string()))?;
        spent += cost;
        steps = step;

        let evaluated = step.is_multiple_of(common.eval_every) || done;
        if evaluated {
            let p = eval(&net, step, spent, lr);
            progress(&p, fraction(step, spent));
            curve.push(p);
        }
        if let Some(ctl) = ctl.as_mut() {
            let val_loss = evaluated.then(|| curve[curve.len() - 1].val_loss);
            let m = Metrics::of(&net)
                .step(step as u64)
                .epoch(batches.epochs_completed())
                .train_loss(train_loss)
                .val_loss(val_loss)
                .grads(&mut grads)
                .flops(spent)
                .build()
                .map_err(|e| err(e.to_string()))?;
            // What the policy's statistics cost: a slope window and the gradient norms.
            spent += flops::policy_observation(100, net.num_params());
            match ctl
                .observe(&m, &mut net, &mut opt, Some(&probe))
                .map_err(|e| err(format!("step {step}: {e}")))?
            {
                Outcome::Grown(events) => {
                    for e in events {
                        // The new tensors and optimizer buffers, and the probe's loss before
                        // and after.
                        spent += flops::growth(e.params_after, 2)
                            + 2.0 * net.forward_flops() * probe_rows as f64;
                        spent += informed_init_flops(&net, &e.init, &e.site, probe_rows);
                        marks.push(Mark {
                            step: e.step,
                            flops: spent,
                            site: e.site,
                            new_width: e.new_width,
                        });
                    }
                    if common.reset_optimizer {
                        let lr = lr_of(&opt);
                        opt = adam(common, lr).map_err(err)?;
                    }
                }
                Outcome::Refused(r) | Outcome::Undone(r) => {
                    refused += 1;
                    let _ = r;
                }
                Outcome::Idle => {}
            }
        }
        if done {
            break;
        }
    }
    let new_units = match ctl.as_mut() {
        None => None,
        Some(ctl) => {
            // Pending declined growths are summarised in the log.
            ctl.flush().map_err(|e| err(e.to_string()))?;
            Some(new_unit_health(&net, ctl, val).map_err(err)?)
        }
    };
    Ok(Run {
        spec: spec.clone(),
        curve,
        marks,
        train_flops: spent,
        steps,
        wall_s: start.elapsed().as_secs_f64(),
        final_sites: net.sites().into_iter().map(|s| (s.name, s.width)).collect(),
        refused,
        new_units,
    })
}

/// What choosing gradient-informed units costs, which the growth event does not carry: the
/// site's statistics (one forward and backward pass on the probe batch), the decompositions
/// (bounded by ten times the cube of the site's per-unit parameters) and, for TINY, the line
/// search's probe evaluations.
fn informed_init_flops<N: Net>(net: &N, init: &Init, site: &str, rows: usize) -> f64 {
    if !init.needs_statistics() {
        return 0.0;
    }
    let per_unit = net
        .sites()
        .iter()
        .find(|s| s.name == site)
        .map_or(0, |s| s.params_per_unit) as f64;
    let mut f = net.train_flops() * rows as f64 + 10.0 * per_unit.powi(3);
    if matches!(init, Init::Tiny { .. }) {
        f += LINE_SEARCH_EVALUATIONS as f64 * net.forward_flops() * rows as f64;
    }
    f
}

/// The new units' health at the end of a run, over the whole validation set: every site's
/// cohorts (from the controller's growth events) summed.
fn new_unit_health<N: Net>(
    net: &N,
    ctl: &GrowthController,
    val: &crate::task::EvalSet,
) -> Result<NewUnitsSummary, String>
where
    Probe<f32, Cpu>: LossProbe<N>,
{
    let mut cohorts = Vec::new();
    for site in net.sites() {
        let a = activity_on(net, &site.name, val)
            .ok_or_else(|| format!("no unit activity for site {}", site.name))?;
        let c = ctl.cohorts(&site.name, a.width);
        cohorts.extend(site_health(net, &site.name, &a, &c).map_err(|e| e.to_string())?);
    }
    Ok(NewUnitsSummary::of(&cohorts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nets::{build_mlp, InputShape};
    use crate::task::EvalSet;
    use dfdx_grow::lr::{Budget, Decay, OnGrowth};
    use dfdx_grow_data::Dataset;

    fn set(n: usize) -> Dataset {
        Dataset::new(
            (0..n * 4).map(|i| (i % 7) as f32 / 7.0).collect(),
            (0..n).map(|i| (i % 2) as u8).collect(),
            4,
            2,
        )
        .expect("consistent")
    }

    fn common() -> Common {
        Common {
            batch: 4,
            eval_every: 1,
            new_units: NewUnitSteps::Cohort,
            new_unit_eps: 0.03,
            new_unit_lr: None,
            reset_optimizer: false,
            shrink_perturb: None,
            health_after: 0,
            loss_tolerance: 1e-6,
            probe_size: 512,
        }
    }

    fn spec(grown: Option<GrownSpec>, steps: usize) -> RunSpec {
        RunSpec {
            name: "t".into(),
            seed: 0,
            width: 3,
            steps,
            flops_budget: None,
            lr: LrScheduleSpec {
                peak: 1e-2,
                warmup: 2,
                decay: Decay::Cosine { floor: 0.0 },
                budget: Budget::Steps(steps as u64),
                on_growth: OnGrowth::Keep,
            },
            grown,
        }
    }

    fn run(task: &Task, s: &RunSpec) -> Result<Run, String> {
        let shape = InputShape {
            channels: 1,
            height: 1,
            width: 4,
            classes: 2,
        };
        train(
            s,
            task,
            &common(),
            &|w, rng| build_mlp(shape, w, 64, rng),
            &|_, _| {},
        )
    }

    #[test]
    fn fewer_training_examples_than_a_batch_is_an_error_not_a_panic() {
        let task = Task::Fixed {
            train: set(3),
            val: EvalSet::from_dataset(&set(2)),
        };
        let e = run(&task, &spec(None, 5)).expect_err("3 < 4");
        assert!(e.contains("3 example(s), fewer than one batch of 4"), "{e}");
    }

    #[test]
    fn a_static_run_follows_its_schedule_and_counts_its_flops() {
        let task = Task::Fixed {
            train: set(8),
            val: EvalSet::from_dataset(&set(2)),
        };
        let s = spec(None, 6);
        let r = run(&task, &s).expect("trains");
        assert_eq!(r.curve.last().map(|p| p.step), Some(6));
        // Warm-up: the first update at half the peak, the second at the peak.
        assert_eq!(r.curve[1].lr, 0.5e-2);
        assert_eq!(r.curve[2].lr, 1e-2);
        assert!(r.curve[6].lr < r.curve[3].lr);
        // Six steps of a 4-3-2 MLP at batch 4.
        let per_step = flops::train_step(&[4, 3, 2], 4, flops::ADAM_UPDATE_FLOPS);
        assert!((r.train_flops - 6.0 * per_step).abs() < 1e-6);
    }

    #[test]
    fn a_grown_run_grows_writes_its_log_and_measures_its_new_units() {
        let task = Task::Fixed {
            train: set(16),
            val: EvalSet::from_dataset(&set(6)),
        };
        let dir = std::env::temp_dir().join(format!("cb-train-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let g = GrownSpec {
            policy_ron: "Schedule(events: [(at: Step(3), target: Layer(0), size: Fixed(5))])"
                .into(),
            origin: "inline".into(),
            audit: dir.join("audit.jsonl"),
        };
        let r = run(&task, &spec(Some(g), 8)).expect("trains");
        assert_eq!(r.final_sites, vec![("hidden.0".to_string(), 8)]);
        assert_eq!(r.marks.len(), 1);
        let nu = r.new_units.expect("a grown run measures its new units");
        assert_eq!(nu.added, 5);
        assert!(nu.dead <= 5);
        let log = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap();
        assert!(
            log.contains("\"growth\"") || log.contains("Growth"),
            "{log}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
