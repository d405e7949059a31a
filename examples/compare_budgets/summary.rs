//! The comparison's table, `summary.json` and plot.

use std::path::Path;

use serde::Serialize;

use crate::train::{Point, Run};

/// One run, as `summary.json` carries it.
#[derive(Serialize)]
struct Row {
    name: String,
    final_val_loss: f64,
    final_val_accuracy: f64,
    best_val_loss: f64,
    /// The mean of the last five evaluations: how noisy the single final value is.
    last5_mean_val_loss: f64,
    train_flops: f64,
    /// FLOPs spent when the validation loss first reached static-large's final loss.
    flops_to_target: Option<f64>,
    /// `flops_to_target` over static-large's training FLOPs.
    flops_to_target_ratio: Option<f64>,
    wall_s: f64,
    growth_events: usize,
    refused_decisions: usize,
    final_widths: Vec<usize>,
    /// Validation loss minus static-large's at the same FLOPs (interpolated), at the end of
    /// this run and averaged over its evaluations.
    gap_vs_large_at_equal_flops_final: Option<f64>,
    gap_vs_large_at_equal_flops_mean: Option<f64>,
    curve: Vec<Point>,
}

/// Static-large's validation loss at `flops`, linearly interpolated; None past its end,
/// except within 1 % of it (a grown run's budget can overshoot by its last growth's cost).
fn large_at(large: &[Point], flops: f64) -> Option<f64> {
    let last = large.last()?;
    if flops > last.flops {
        return (flops <= 1.01 * last.flops).then_some(last.val_loss);
    }
    let i = large.iter().position(|p| p.flops >= flops)?;
    if i == 0 {
        return Some(large[0].val_loss);
    }
    let (a, b) = (&large[i - 1], &large[i]);
    let t = (flops - a.flops) / (b.flops - a.flops);
    Some(a.val_loss + t * (b.val_loss - a.val_loss))
}

fn fmt_flops(f: f64) -> String {
    format!("{:.3e}", f)
}

pub fn report(runs: &[Run], out: &Path, dataset: &str) -> Result<(), String> {
    let large = runs
        .iter()
        .find(|r| r.name == "static-large")
        .ok_or("no static-large run")?;
    let target = large
        .curve
        .last()
        .map(|p| p.val_loss)
        .ok_or("static-large has no evaluation")?;
    let rows: Vec<Row> = runs
        .iter()
        .map(|r| {
            let last = r.curve.last().cloned().unwrap_or(Point {
                step: 0,
                flops: 0.0,
                val_loss: f64::NAN,
                val_accuracy: 0.0,
            });
            let reach = r
                .curve
                .iter()
                .find(|p| p.step > 0 && p.val_loss <= target)
                .map(|p| p.flops);
            let gaps: Vec<f64> = r
                .curve
                .iter()
                .filter(|p| p.step > 0)
                .filter_map(|p| large_at(&large.curve, p.flops).map(|l| p.val_loss - l))
                .collect();
            Row {
                name: r.name.clone(),
                final_val_loss: last.val_loss,
                final_val_accuracy: last.val_accuracy,
                best_val_loss: r
                    .curve
                    .iter()
                    .map(|p| p.val_loss)
                    .fold(f64::INFINITY, f64::min),
                last5_mean_val_loss: {
                    let tail = &r.curve[r.curve.len().saturating_sub(5)..];
                    tail.iter().map(|p| p.val_loss).sum::<f64>() / tail.len().max(1) as f64
                },
                train_flops: r.train_flops,
                flops_to_target: reach,
                flops_to_target_ratio: reach.map(|f| f / large.train_flops),
                wall_s: r.wall_s,
                growth_events: r.marks.len(),
                refused_decisions: r.refused,
                final_widths: r.final_widths.clone(),
                gap_vs_large_at_equal_flops_final: large_at(&large.curve, last.flops)
                    .map(|l| last.val_loss - l),
                gap_vs_large_at_equal_flops_mean: (!gaps.is_empty())
                    .then(|| gaps.iter().sum::<f64>() / gaps.len() as f64),
                curve: r.curve.clone(),
            }
        })
        .collect();

    println!();
    let large_last5 = rows
        .iter()
        .find(|r| r.name == "static-large")
        .map_or(target, |r| r.last5_mean_val_loss);
    println!(
        "target = static-large's final validation loss: {target:.4} (a single evaluation; its last five average {large_last5:.4})"
    );
    println!(
        "{:<22} {:>9} {:>9} {:>8} {:>11} {:>11} {:>8} {:>8} {:>7} {:>9}",
        "run",
        "val loss",
        "best",
        "val acc",
        "train FLOPs",
        "to target",
        "ratio",
        "gap@eqF",
        "wall s",
        "growths"
    );
    for r in &rows {
        println!(
            "{:<22} {:>9.4} {:>9.4} {:>8.4} {:>11} {:>11} {:>8} {:>8} {:>7.1} {:>9}",
            r.name,
            r.final_val_loss,
            r.best_val_loss,
            r.final_val_accuracy,
            fmt_flops(r.train_flops),
            r.flops_to_target.map_or("never".into(), fmt_flops),
            r.flops_to_target_ratio
                .map_or("-".into(), |x| format!("{x:.3}")),
            r.gap_vs_large_at_equal_flops_final
                .map_or("-".into(), |g| format!("{g:+.4}")),
            r.wall_s,
            r.growth_events
        );
    }
    println!("(ratio: FLOPs to reach the target / static-large's training FLOPs; gap@eqF: val loss minus static-large's at the same FLOPs)");
    let small_reaches = rows
        .iter()
        .any(|r| r.name == "static-small" && r.flops_to_target.is_some());
    let large_best = rows
        .iter()
        .find(|r| r.name == "static-large")
        .map_or(target, |r| r.best_val_loss);
    if small_reaches {
        println!("NOTE: static-small also reaches the target, so the target is too easy to show a compute saving: a grown run reaching it says little.");
    }
    if large_best < target - 0.01 * target.abs() {
        println!(
            "NOTE: static-large overfits (best {large_best:.4} < final {target:.4}); grown runs that end lower benefit from training narrow longer, not from saved compute."
        );
    }
    if let Some(best) = rows
        .iter()
        .filter(|r| r.name.starts_with("grown-"))
        .filter_map(|r| r.flops_to_target_ratio.map(|x| (x, &r.name)))
        .min_by(|a, b| a.0.total_cmp(&b.0))
    {
        println!("best grown run: {} reaches the target with {:.1} % of static-large's FLOPs ({:.1} % saved)", best.1, 100.0 * best.0, 100.0 * (1.0 - best.0));
    } else {
        println!("no grown run reaches static-large's final validation loss");
    }

    let json = serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?;
    let write = |name: &str, text: &str| {
        let p = out.join(name);
        // Atomic: a run killed while reporting leaves the previous report whole.
        dfdx_grow::fsio::write_atomic(&p, text.as_bytes()).map_err(|e| e.to_string())
    };
    write("summary.json", &json)?;
    write(
        "loss_vs_flops.svg",
        &crate::plot::svg(
            runs,
            Some(target),
            &format!("{dataset}: validation loss against training FLOPs"),
        ),
    )?;
    println!(
        "wrote {}/summary.json, loss_vs_flops.svg and the audit logs",
        out.display()
    );
    Ok(())
}
