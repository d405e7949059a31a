//! A readable, aligned table of audit records.

use super::AuditRecord;

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.4}"))
}

/// One row per record, columns aligned:
/// `step epoch kind site width params loss_before loss_after policy reason`.
pub fn summary_table(records: &[AuditRecord]) -> String {
    let header = [
        "step",
        "epoch",
        "kind",
        "site",
        "width",
        "params",
        "loss_before",
        "loss_after",
        "policy",
        "reason",
    ];
    let dash = || "-".to_string();
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in records {
        rows.push(match r {
            AuditRecord::Growth(g) => vec![
                g.step.to_string(),
                g.epoch.to_string(),
                if g.after.is_some() {
                    "deepen"
                } else {
                    "growth"
                }
                .into(),
                match &g.after {
                    Some(after) => format!("{} after {after}", g.site),
                    None => g.site.clone(),
                },
                format!("{}->{}", g.old_width, g.new_width),
                format!("{}->{}", g.params_before, g.params_after),
                opt(g.loss_before),
                opt(g.loss_after),
                g.policy.clone(),
                g.reason.clone(),
            ],
            AuditRecord::Declined(d) => vec![
                d.step.to_string(),
                d.epoch.to_string(),
                "declined".into(),
                d.sites.join(","),
                dash(),
                dash(),
                dash(),
                dash(),
                d.policy.clone(),
                format!("{} (x{} since step {})", d.why, d.count, d.first_step),
            ],
            AuditRecord::Refused(e) | AuditRecord::Undone(e) => vec![
                e.step.to_string(),
                e.epoch.to_string(),
                if matches!(r, AuditRecord::Undone(_)) {
                    "undone"
                } else {
                    "refused"
                }
                .into(),
                e.growths
                    .iter()
                    .map(|g| g.place().to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                dash(),
                dash(),
                opt(e.loss_before),
                opt(e.loss_after),
                e.policy.clone(),
                match e.first_step {
                    Some(first) => format!("{} (x{} since step {first})", e.why, e.count),
                    None => e.why.clone(),
                },
            ],
            AuditRecord::Health(h) => {
                let s = crate::health::NewUnitsSummary::of(&h.cohorts);
                vec![
                    h.step.to_string(),
                    h.epoch.to_string(),
                    "health".into(),
                    h.site.clone(),
                    dash(),
                    dash(),
                    dash(),
                    dash(),
                    dash(),
                    h.note.clone().unwrap_or_else(|| {
                        format!(
                            "new units: {} of {} dead, active {:.1} % (original units {:.1} %){}",
                            s.dead,
                            s.added,
                            100.0 * s.mean_active,
                            100.0 * s.old_mean_active,
                            if h.reinitialised > 0 {
                                format!("; {} re-initialised", h.reinitialised)
                            } else {
                                String::new()
                            }
                        )
                    }),
                ]
            }
        });
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, &w))| {
                if c + 1 == row.len() {
                    cell.clone()
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        out += cells.join("  ").trim_end();
        out.push('\n');
    }
    out
}
