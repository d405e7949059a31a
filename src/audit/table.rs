//! A readable, aligned table of audit records.

use super::AuditRecord;

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.4}"))
}

/// One row per record, columns aligned:
/// `step epoch kind layer width params loss_before loss_after policy reason`.
pub fn summary_table(records: &[AuditRecord]) -> String {
    let header = [
        "step",
        "epoch",
        "kind",
        "layer",
        "width",
        "params",
        "loss_before",
        "loss_after",
        "policy",
        "reason",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in records {
        rows.push(match r {
            AuditRecord::Growth(g) => vec![
                g.step.to_string(),
                g.epoch.to_string(),
                "growth".into(),
                g.layer.to_string(),
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
                d.layers
                    .iter()
                    .map(|l| l.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                d.policy.clone(),
                format!("{} (x{})", d.why, d.count),
            ],
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
