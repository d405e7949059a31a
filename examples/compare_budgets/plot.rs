//! A dependency-free SVG line plot: validation loss against cumulative training FLOPs.

use std::fmt::Write;

use crate::summary::GroupSummary;

const W: f64 = 900.0;
const H: f64 = 520.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 220.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 12] = [
    "#444444", "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b",
    "#e377c2", "#bcbd22", "#7f7f7f", "#aec7e8",
];

/// Renders every run's validation curve (log-scaled FLOPs on x; one line per seed, one colour
/// per run) with its growth events as dots, the first comparison's target as a dashed line
/// and the loss floor, when known, as a dotted one.
pub fn svg(groups: &[&GroupSummary], title: &str, floor: Option<f64>) -> String {
    let target = groups.first().map(|g| g.target);
    let runs: Vec<&crate::summary::Row> = groups.iter().flat_map(|g| &g.runs).collect();
    let mut names: Vec<&str> = Vec::new();
    for r in &runs {
        if !names.contains(&r.name.as_str()) {
            names.push(&r.name);
        }
    }
    let pts = runs
        .iter()
        .flat_map(|r| r.curve.iter().filter(|p| p.flops > 0.0));
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for p in pts.filter(|p| p.val_loss.is_finite()) {
        x0 = x0.min(p.flops.log10());
        x1 = x1.max(p.flops.log10());
        y0 = y0.min(p.val_loss);
        y1 = y1.max(p.val_loss);
    }
    if x0 >= x1 || y0 >= y1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    // Cut the y axis so the end of training, where the runs differ, fills the plot.
    let y1 = y1.min(
        y0 + 4.0
            * (runs
                .iter()
                .filter_map(|r| r.curve.last())
                .map(|p| p.val_loss)
                .fold(y0, f64::max)
                - y0)
                .max(0.05),
    );
    let sx = |f: f64| LEFT + (f.log10() - x0) / (x1 - x0) * (W - LEFT - RIGHT);
    let sy = |l: f64| TOP + (1.0 - (l - y0) / (y1 - y0)) * (H - TOP - BOTTOM);
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>
<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="#999"/>
<clipPath id="plot"><rect x="{LEFT}" y="{TOP}" width="{}" height="{}"/></clipPath>
"##,
        (W - RIGHT + LEFT) / 2.0,
        escape(title),
        W - LEFT - RIGHT,
        H - TOP - BOTTOM,
        W - LEFT - RIGHT,
        H - TOP - BOTTOM
    );
    for e in (x0.floor() as i32)..=(x1.ceil() as i32) {
        let f = 10f64.powi(e);
        if f.log10() < x0 || f.log10() > x1 {
            continue;
        }
        let x = sx(f);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{}" stroke="#eee"/><text x="{x:.1}" y="{}" text-anchor="middle">1e{e}</text>"##,
            H - BOTTOM,
            H - BOTTOM + 16.0
        );
    }
    for i in 0..=5 {
        let l = y0 + (y1 - y0) * i as f64 / 5.0;
        let y = sy(l);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{l:.3}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">cumulative training FLOPs (log scale)</text>"#,
        (W - RIGHT + LEFT) / 2.0,
        H - 18.0
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">validation loss</text>"#,
        H / 2.0,
        H / 2.0
    );
    if let Some(t) = target {
        let y = sy(t);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#444" stroke-dasharray="5,4"/>"##,
            W - RIGHT
        );
    }
    if let Some(f) = floor.filter(|f| *f >= y0 && *f <= y1) {
        let y = sy(f);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#999" stroke-dasharray="1,3"/>"##,
            W - RIGHT
        );
    }
    for r in &runs {
        let i = names.iter().position(|n| *n == r.name).unwrap_or(0);
        let c = COLORS[i % COLORS.len()];
        let path: Vec<String> = r
            .curve
            .iter()
            .filter(|p| p.flops > 0.0 && p.val_loss.is_finite())
            .map(|p| format!("{:.1},{:.1}", sx(p.flops), sy(p.val_loss)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="1.8" clip-path="url(#plot)" points="{}"/>"#,
            path.join(" ")
        );
        for m in &r.growths {
            // Place the dot on the curve at the growth's FLOPs.
            let l = r
                .curve
                .iter()
                .rev()
                .find(|p| p.flops <= m.flops)
                .map_or(y1, |p| p.val_loss);
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{c}" stroke="white"><title>{}: {} to {} units at step {}</title></circle>"#,
                sx(m.flops.max(10f64.powf(x0))),
                sy(l),
                escape(&r.name),
                escape(&m.site),
                m.new_width,
                m.step
            );
        }
    }
    for (i, name) in names.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let y = TOP + 18.0 * i as f64 + 10.0;
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="{c}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            W - RIGHT + 12.0,
            W - RIGHT + 32.0,
            W - RIGHT + 38.0,
            y + 4.0,
            escape(name)
        );
    }
    let y = TOP + 18.0 * names.len() as f64 + 14.0;
    let _ = writeln!(
        s,
        r##"<circle cx="{}" cy="{y}" r="4" fill="#888"/><text x="{}" y="{}">growth event</text>"##,
        W - RIGHT + 22.0,
        W - RIGHT + 38.0,
        y + 4.0
    );
    if target.is_some() {
        let y = y + 18.0;
        let _ = writeln!(
            s,
            r##"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="#444" stroke-dasharray="5,4"/><text x="{}" y="{}">target</text>"##,
            W - RIGHT + 12.0,
            W - RIGHT + 32.0,
            W - RIGHT + 38.0,
            y + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
