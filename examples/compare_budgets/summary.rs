//! The comparison's tables, `summary.json` and plots.

use std::collections::BTreeMap;

use dfdx_grow::health::NewUnitsSummary;
use serde::Serialize;

use crate::cli::TargetArg;
use crate::setup::{Mode, Plan};
use crate::train::{Mark, Point, Run};

/// One run, as `summary.json` carries it.
#[derive(Serialize, Clone, Debug)]
pub struct Row {
    pub name: String,
    pub seed: u64,
    pub budget: f64,
    pub final_val_loss: f64,
    pub best_val_loss: f64,
    /// The mean of the last five evaluations: how noisy the single final value is.
    pub last5_mean_val_loss: f64,
    pub final_val_accuracy: f64,
    pub train_flops: f64,
    pub steps: usize,
    /// FLOPs spent when the validation loss first reached the comparison's target.
    pub flops_to_target: Option<f64>,
    /// `flops_to_target` over the reference run's training FLOPs (static-large; in --sizing
    /// the grid's best run).
    pub flops_to_target_ratio: Option<f64>,
    /// The same against the reference's last-five mean.
    pub flops_to_last5_target: Option<f64>,
    pub flops_to_last5_target_ratio: Option<f64>,
    /// FLOPs spent when the run reached its own best validation loss.
    pub flops_at_best: f64,
    pub wall_s: f64,
    pub growth_events: usize,
    pub refused_decisions: usize,
    /// Every site's width at the end.
    pub final_widths: Vec<usize>,
    pub final_sites: Vec<(String, usize)>,
    /// For grown runs: the added units' health at the end, over the whole validation set.
    pub new_units: Option<NewUnitsSummary>,
    /// Validation loss minus the reference's at the same FLOPs (interpolated), at the end of
    /// this run and averaged over its evaluations.
    pub gap_vs_reference_at_equal_flops_final: Option<f64>,
    pub gap_vs_reference_at_equal_flops_mean: Option<f64>,
    pub growths: Vec<Mark>,
    pub curve: Vec<Point>,
}

/// One comparison (a seed at a budget).
#[derive(Serialize, Debug)]
pub struct GroupSummary {
    pub seed: u64,
    pub budget: f64,
    /// The run the targets come from.
    pub reference: String,
    pub reference_flops: f64,
    /// The loss the `flops_to_target` columns are measured against, and its kind.
    pub target: f64,
    pub target_kind: TargetArg,
    pub last5_target: f64,
    /// --sizing: the grid's total training FLOPs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grid_total_flops: Option<f64>,
    pub runs: Vec<Row>,
}

/// Mean, sample standard deviation, minimum and maximum of some values.
#[derive(Serialize, Debug, Clone, Copy)]
pub struct Spread {
    pub n: usize,
    pub mean: f64,
    pub sd: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(v: &[f64]) -> Option<Spread> {
        let v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let sd = if n > 1 {
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Some(Spread {
            n,
            mean,
            sd,
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    }

    fn show(s: Option<Spread>, digits: usize) -> String {
        match s {
            None => "-".into(),
            Some(s) if s.n == 1 => format!("{:.*}", digits, s.mean),
            Some(s) => format!("{:.*}±{:.*}", digits, s.mean, digits, s.sd),
        }
    }
}

/// A run's figures over the seeds of one budget.
#[derive(Serialize, Debug)]
pub struct Aggregate {
    pub budget: f64,
    pub name: String,
    pub seeds: usize,
    pub final_val_loss: Option<Spread>,
    pub best_val_loss: Option<Spread>,
    pub last5_mean_val_loss: Option<Spread>,
    pub train_flops: Option<Spread>,
    /// Over the seeds that reached the target.
    pub flops_to_target_ratio: Option<Spread>,
    pub reached_target: usize,
    pub flops_to_last5_target_ratio: Option<Spread>,
    pub reached_last5_target: usize,
    pub growth_events: Option<Spread>,
    pub new_units_dead_share: Option<Spread>,
    pub new_units_mean_active: Option<Spread>,
    pub old_units_mean_active: Option<Spread>,
    /// --sizing: the final width of every site, per seed.
    pub final_widths: Vec<Vec<usize>>,
}

/// The whole summary.json.
#[derive(Serialize, Debug)]
pub struct Summary<'a> {
    pub dataset: &'a str,
    pub model: &'a str,
    pub mode: Mode,
    pub lr_schedule: &'a str,
    /// The teacher's expected cross-entropy (teacher-student only).
    pub loss_floor: Option<f64>,
    /// Static runs' steps at the 1x budget.
    pub steps_1x: usize,
    /// The starting (small) and the largest width.
    pub small_width: usize,
    pub large_width: usize,
    /// The policy files and the stem each run name got.
    pub policies: Vec<(String, String)>,
    /// --sizing: the grid's total training FLOPs, mean over seeds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grid_total_flops: Option<f64>,
    pub groups: Vec<GroupSummary>,
    pub aggregate: Vec<Aggregate>,
}

/// The reference's validation loss at `flops`, linearly interpolated; None past its end,
/// except within 1 % of it (a grown run's budget can overshoot by its last growth's cost).
fn reference_at(reference: &[Point], flops: f64) -> Option<f64> {
    let last = reference.last()?;
    if flops > last.flops {
        return (flops <= 1.01 * last.flops).then_some(last.val_loss);
    }
    let i = reference.iter().position(|p| p.flops >= flops)?;
    if i == 0 {
        return Some(reference[0].val_loss);
    }
    let (a, b) = (&reference[i - 1], &reference[i]);
    let t = (flops - a.flops) / (b.flops - a.flops);
    Some(a.val_loss + t * (b.val_loss - a.val_loss))
}

fn last5(curve: &[Point]) -> f64 {
    let tail = &curve[curve.len().saturating_sub(5)..];
    tail.iter().map(|p| p.val_loss).sum::<f64>() / tail.len().max(1) as f64
}

fn best(curve: &[Point]) -> (f64, f64) {
    curve
        .iter()
        .filter(|p| p.step > 0)
        .map(|p| (p.val_loss, p.flops))
        .fold((f64::INFINITY, 0.0), |a, b| if b.0 < a.0 { b } else { a })
}

fn reach(curve: &[Point], target: f64) -> Option<f64> {
    curve
        .iter()
        .find(|p| p.step > 0 && p.val_loss <= target)
        .map(|p| p.flops)
}

/// The summary of one comparison's runs.
pub fn group_summary(
    mode: Mode,
    seed: u64,
    budget: f64,
    runs: &[Run],
    target_kind: TargetArg,
) -> Result<GroupSummary, String> {
    let reference = match mode {
        Mode::Compare => runs
            .iter()
            .find(|r| r.spec.name == "static-large")
            .ok_or("no static-large run")?,
        // The grid's best run (by best validation loss).
        Mode::Sizing => runs
            .iter()
            .filter(|r| r.spec.grown.is_none())
            .min_by(|a, b| best(&a.curve).0.total_cmp(&best(&b.curve).0))
            .ok_or("no static run in the grid")?,
    };
    let curve = &reference.curve;
    let fin = curve.last().map(|p| p.val_loss).ok_or("no evaluation")?;
    let target = match target_kind {
        TargetArg::Final => fin,
        TargetArg::Best => best(curve).0,
        TargetArg::Last5 => last5(curve),
    };
    let last5_target = last5(curve);
    let ref_flops = reference.train_flops;
    let rows = runs
        .iter()
        .map(|r| {
            let last = r.curve.last().cloned().unwrap_or(Point {
                step: 0,
                flops: 0.0,
                val_loss: f64::NAN,
                val_accuracy: 0.0,
                lr: 0.0,
            });
            let to = reach(&r.curve, target);
            let to5 = reach(&r.curve, last5_target);
            let gaps: Vec<f64> = r
                .curve
                .iter()
                .filter(|p| p.step > 0)
                .filter_map(|p| reference_at(curve, p.flops).map(|l| p.val_loss - l))
                .collect();
            let (b, fb) = best(&r.curve);
            Row {
                name: r.spec.name.clone(),
                seed,
                budget,
                final_val_loss: last.val_loss,
                best_val_loss: b,
                last5_mean_val_loss: last5(&r.curve),
                final_val_accuracy: last.val_accuracy,
                train_flops: r.train_flops,
                steps: r.steps,
                flops_to_target: to,
                flops_to_target_ratio: to.map(|f| f / ref_flops),
                flops_to_last5_target: to5,
                flops_to_last5_target_ratio: to5.map(|f| f / ref_flops),
                flops_at_best: fb,
                wall_s: r.wall_s,
                growth_events: r.marks.len(),
                refused_decisions: r.refused,
                final_widths: r.final_sites.iter().map(|s| s.1).collect(),
                final_sites: r.final_sites.clone(),
                new_units: r.new_units,
                gap_vs_reference_at_equal_flops_final: reference_at(curve, last.flops)
                    .map(|l| last.val_loss - l),
                gap_vs_reference_at_equal_flops_mean: (!gaps.is_empty())
                    .then(|| gaps.iter().sum::<f64>() / gaps.len() as f64),
                growths: r.marks.clone(),
                curve: r.curve.clone(),
            }
        })
        .collect();
    let grid_total_flops = (mode == Mode::Sizing).then(|| {
        runs.iter()
            .filter(|r| r.spec.grown.is_none())
            .map(|r| r.train_flops)
            .sum()
    });
    Ok(GroupSummary {
        seed,
        budget,
        reference: reference.spec.name.clone(),
        reference_flops: ref_flops,
        target,
        target_kind,
        last5_target,
        grid_total_flops,
        runs: rows,
    })
}

/// Every run's figures over the seeds, per budget, in the order runs first appear.
pub fn aggregate(groups: &[GroupSummary]) -> Vec<Aggregate> {
    let mut keys: Vec<(String, String)> = Vec::new();
    let mut by: BTreeMap<(String, String), Vec<&Row>> = BTreeMap::new();
    for g in groups {
        for r in &g.runs {
            let k = (format!("{}", g.budget), r.name.clone());
            if !by.contains_key(&k) {
                keys.push(k.clone());
            }
            by.entry(k).or_default().push(r);
        }
    }
    keys.into_iter()
        .map(|k| {
            let rows = &by[&k];
            let f = |g: &dyn Fn(&Row) -> Option<f64>| {
                Spread::of(&rows.iter().filter_map(|r| g(r)).collect::<Vec<_>>())
            };
            Aggregate {
                budget: rows[0].budget,
                name: k.1.clone(),
                seeds: rows.len(),
                final_val_loss: f(&|r| Some(r.final_val_loss)),
                best_val_loss: f(&|r| Some(r.best_val_loss)),
                last5_mean_val_loss: f(&|r| Some(r.last5_mean_val_loss)),
                train_flops: f(&|r| Some(r.train_flops)),
                flops_to_target_ratio: f(&|r| r.flops_to_target_ratio),
                reached_target: rows.iter().filter(|r| r.flops_to_target.is_some()).count(),
                flops_to_last5_target_ratio: f(&|r| r.flops_to_last5_target_ratio),
                reached_last5_target: rows
                    .iter()
                    .filter(|r| r.flops_to_last5_target.is_some())
                    .count(),
                growth_events: f(&|r| Some(r.growth_events as f64)),
                new_units_dead_share: f(&|r| {
                    r.new_units.filter(|n| n.added > 0).map(|n| n.dead_share())
                }),
                new_units_mean_active: f(&|r| {
                    r.new_units.filter(|n| n.added > 0).map(|n| n.mean_active)
                }),
                old_units_mean_active: f(&|r| r.new_units.map(|n| n.old_mean_active)),
                final_widths: rows.iter().map(|r| r.final_widths.clone()).collect(),
            }
        })
        .collect()
}

fn fmt_flops(f: f64) -> String {
    format!("{f:.3e}")
}

fn new_units_cell(n: Option<NewUnitsSummary>) -> String {
    match n {
        Some(n) if n.added > 0 => format!(
            "{}/{} dead, act {:.2}/{:.2}",
            n.dead, n.added, n.mean_active, n.old_mean_active
        ),
        Some(_) => "none added".into(),
        None => "-".into(),
    }
}

/// The table of one comparison, as the run always printed it, with new-unit health.
fn print_group(g: &GroupSummary) {
    println!(
        "\nseed {}, budget {}x: target = {}'s {:?} validation loss {:.4} (its last five average {:.4})",
        g.seed, g.budget, g.reference, g.target_kind, g.target, g.last5_target
    );
    println!(
        "{:<28} {:>8} {:>8} {:>8} {:>7} {:>10} {:>10} {:>6} {:>8} {:>6} {:>7}  new units (dead/added, active new/old) -> widths",
        "run",
        "val loss",
        "best",
        "last5",
        "val acc",
        "train FLOPs",
        "to target",
        "ratio",
        "gap@eqF",
        "wall s",
        "growths",
    );
    for r in &g.runs {
        println!(
            "{:<28} {:>8.4} {:>8.4} {:>8.4} {:>7.4} {:>10} {:>10} {:>6} {:>8} {:>6.1} {:>7}  {} -> {:?}",
            r.name,
            r.final_val_loss,
            r.best_val_loss,
            r.last5_mean_val_loss,
            r.final_val_accuracy,
            fmt_flops(r.train_flops),
            r.flops_to_target.map_or("never".into(), fmt_flops),
            r.flops_to_target_ratio.map_or("-".into(), |x| format!("{x:.3}")),
            r.gap_vs_reference_at_equal_flops_final
                .map_or("-".into(), |x| format!("{x:+.4}")),
            r.wall_s,
            r.growth_events,
            new_units_cell(r.new_units),
            r.final_widths
        );
    }
    if let Some(t) = g.grid_total_flops {
        println!("grid total FLOPs: {}", fmt_flops(t));
    }
}

fn print_aggregate(aggs: &[Aggregate], seeds: usize) {
    println!("\nover {seeds} seed(s): mean ± sample sd (ratio: FLOPs to reach the target / the reference's FLOPs, over the seeds that reached it)");
    println!(
        "{:>6} {:<28} {:>15} {:>15} {:>15} {:>15} {:>7} {:>15} {:>9}",
        "budget", "run", "final", "best", "last5", "ratio", "reached", "dead/added", "growths"
    );
    for a in aggs {
        println!(
            "{:>6} {:<28} {:>15} {:>15} {:>15} {:>15} {:>7} {:>15} {:>9}",
            format!("{}x", a.budget),
            a.name,
            Spread::show(a.final_val_loss, 4),
            Spread::show(a.best_val_loss, 4),
            Spread::show(a.last5_mean_val_loss, 4),
            Spread::show(a.flops_to_target_ratio, 3),
            format!("{}/{}", a.reached_target, a.seeds),
            Spread::show(a.new_units_dead_share, 3),
            Spread::show(a.growth_events, 1),
        );
    }
}

fn print_notes(plan: &Plan, groups: &[GroupSummary]) {
    for g in groups.iter().filter(|g| g.budget == 1.0).take(1) {
        let get = |n: &str| g.runs.iter().find(|r| r.name == n);
        if plan.mode == Mode::Compare {
            if let (Some(s), Some(l)) = (get("static-small"), get("static-large")) {
                println!(
                    "static-small ends {:+.4} from static-large (final {:.4} vs {:.4}){}",
                    s.final_val_loss - l.final_val_loss,
                    s.final_val_loss,
                    l.final_val_loss,
                    plan.floor.map_or(String::new(), |f| format!(
                        "; the teacher's loss floor is {f:.4}"
                    ))
                );
                if s.flops_to_target.is_some() {
                    println!("NOTE: static-small also reaches the target, so the target is too easy to show a compute saving.");
                }
                if l.best_val_loss < l.final_val_loss - 0.01 * l.final_val_loss.abs()
                    && g.target_kind == TargetArg::Final
                {
                    println!("NOTE: static-large overfits (best {:.4} < final {:.4}); grown runs that end lower benefit from training narrow longer, not from saved compute.", l.best_val_loss, l.final_val_loss);
                }
            }
        }
    }
}

/// Prints the tables and writes summary.json and the plots.
pub fn report(plan: &Plan, groups: Vec<GroupSummary>) -> Result<(), String> {
    let seeds = groups
        .iter()
        .map(|g| g.seed)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    if groups.len() <= 2 || seeds == 1 && groups.len() <= 1 {
        groups.iter().for_each(print_group);
    } else {
        // Many comparisons: each seed's tables are in summary.json; here the 1x ones.
        groups
            .iter()
            .filter(|g| g.budget == 1.0 && g.seed == groups[0].seed)
            .for_each(print_group);
    }
    let aggs = aggregate(&groups);
    if groups.len() > 1 {
        print_aggregate(&aggs, seeds);
    }
    print_notes(plan, &groups);
    if plan.mode == Mode::Sizing {
        print_sizing(&aggs, &groups);
    }
    let grid_total_flops = Spread::of(
        &groups
            .iter()
            .filter_map(|g| g.grid_total_flops)
            .collect::<Vec<_>>(),
    )
    .map(|s| s.mean);
    let summary = Summary {
        dataset: plan.dataset.name(),
        model: plan.model.name(),
        mode: plan.mode,
        lr_schedule: &plan.lr_description,
        loss_floor: plan.floor,
        steps_1x: plan.steps,
        small_width: plan.small,
        large_width: plan.large,
        policies: plan
            .policies
            .iter()
            .map(|(p, s)| (p.display().to_string(), s.clone()))
            .collect(),
        grid_total_flops,
        groups,
        aggregate: aggs,
    };
    let json = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
    let write = |name: &str, text: &str| {
        let p = plan.out.join(name);
        // Atomic: a run killed while reporting leaves the previous report whole.
        dfdx_grow::fsio::write_atomic(&p, text.as_bytes()).map_err(|e| e.to_string())
    };
    write("summary.json", &json)?;
    let title = format!(
        "{} ({}): validation loss against training FLOPs",
        plan.dataset.name(),
        plan.model.name()
    );
    let budgets: Vec<f64> = {
        let mut b: Vec<f64> = summary.groups.iter().map(|g| g.budget).collect();
        b.dedup();
        b.sort_by(f64::total_cmp);
        b.dedup();
        b
    };
    let mut written = vec!["summary.json".to_string()];
    for &b in &budgets {
        let gs: Vec<&GroupSummary> = summary.groups.iter().filter(|g| g.budget == b).collect();
        let svg = crate::plot::svg(&gs, &format!("{title}, budget {b}x"), plan.floor);
        let name = if budgets.len() == 1 || b == 1.0 {
            "loss_vs_flops.svg".to_string()
        } else {
            format!("loss_vs_flops_{b}x.svg")
        };
        write(&name, &svg)?;
        written.push(name);
    }
    println!(
        "wrote {} and the audit logs to {}",
        written.join(", "),
        plan.out.display()
    );
    Ok(())
}

fn print_sizing(aggs: &[Aggregate], groups: &[GroupSummary]) {
    let grid_best = Spread::of(
        &groups
            .iter()
            .map(|g| {
                g.runs
                    .iter()
                    .filter(|r| r.name.starts_with("static-"))
                    .map(|r| r.best_val_loss)
                    .fold(f64::INFINITY, f64::min)
            })
            .collect::<Vec<_>>(),
    );
    let grid_total = Spread::of(
        &groups
            .iter()
            .filter_map(|g| g.grid_total_flops)
            .collect::<Vec<_>>(),
    );
    println!(
        "\nsizing: the grid's best validation loss {} ; its total FLOPs {}",
        Spread::show(grid_best, 4),
        grid_total.map_or("-".into(), |s| fmt_flops(s.mean))
    );
    for a in aggs.iter().filter(|a| a.name.starts_with("grown-")) {
        let per_seed: Vec<String> = groups
            .iter()
            .filter_map(|g| {
                let r = g.runs.iter().find(|r| r.name == a.name)?;
                let gb = g
                    .runs
                    .iter()
                    .filter(|r| r.name.starts_with("static-"))
                    .map(|r| r.best_val_loss)
                    .fold(f64::INFINITY, f64::min);
                let best_single = g.runs.iter().find(|r| r.name == g.reference)?.train_flops;
                let total = g.grid_total_flops?;
                Some(format!(
                    "seed {}: widths {:?}, best {:.4} ({:+.4} vs grid best), FLOPs {:.1} % of the grid's total, {:.1} % of the best width's run",
                    g.seed,
                    r.final_widths,
                    r.best_val_loss,
                    r.best_val_loss - gb,
                    100.0 * r.train_flops / total,
                    100.0 * r.train_flops / best_single
                ))
            })
            .collect();
        println!("{}:\n  {}", a.name, per_seed.join("\n  "));
    }
}
