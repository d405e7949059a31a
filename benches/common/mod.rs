//! A tiny timing helper shared by the bench binaries (no criterion): warm-up, then
//! repetitions run interleaved (A, B, C, A, B, C, ... with the order rotated every round) so
//! that the machine's noise hits every case alike; reports median and min in ms and, per
//! case, the median over rounds of its time divided by the baseline's time in the same round.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// The number of rayon threads dfdx's matmul uses: `RAYON_NUM_THREADS` or the core count.
pub fn threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
}

/// Prints what every bench prints first: the machine and the thread count.
pub fn header(title: &str) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("# {title}\n");
    println!(
        "cpu: {cpu}; cores: {}; rayon threads: {}\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        threads()
    );
}

/// The summary of one case.
#[derive(Clone, Debug)]
pub struct Stats {
    pub name: String,
    pub median_ms: f64,
    pub min_ms: f64,
    /// Median over rounds of (this case / baseline case) in the same round.
    pub ratio: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// One case: a closure that does its own (untimed) setup and returns the time of the part
/// being measured.
pub type Case<'a> = (String, Box<dyn FnMut() -> Duration + 'a>);

/// Wraps a closure whose whole run is timed.
pub fn whole<'a>(name: &str, mut f: impl FnMut() + 'a) -> Case<'a> {
    (
        name.to_string(),
        Box::new(move || {
            let t = Instant::now();
            f();
            t.elapsed()
        }),
    )
}

/// Wraps a closure that returns the duration of the part it measures.
pub fn part<'a>(name: &str, f: impl FnMut() -> Duration + 'a) -> Case<'a> {
    (name.to_string(), Box::new(f))
}

/// Runs `warmup` then `reps` rounds of every case, interleaved; case `baseline` is the
/// denominator of the ratios.
pub fn compare(cases: &mut [Case<'_>], baseline: usize, warmup: usize, reps: usize) -> Vec<Stats> {
    let n = cases.len();
    for _ in 0..warmup {
        for c in cases.iter_mut() {
            (c.1)();
        }
    }
    let mut times = vec![Vec::with_capacity(reps); n];
    for round in 0..reps {
        for j in 0..n {
            let i = (j + round) % n;
            times[i].push(ms((cases[i].1)()));
        }
    }
    (0..n)
        .map(|i| {
            let mut ratios: Vec<f64> = times[i]
                .iter()
                .zip(&times[baseline])
                .map(|(a, b)| a / b)
                .collect();
            let mut t = times[i].clone();
            Stats {
                name: cases[i].0.clone(),
                median_ms: median(&mut t),
                min_ms: t.iter().cloned().fold(f64::INFINITY, f64::min),
                ratio: median(&mut ratios),
            }
        })
        .collect()
}

/// Prints a markdown table of `stats`, ratios against the case named `baseline`.
pub fn table(title: &str, baseline: &str, stats: &[Stats]) {
    println!("### {title}\n");
    println!("| case | median ms | min ms | ratio vs `{baseline}` (median of per-round ratios) |");
    println!("|---|---:|---:|---:|");
    for s in stats {
        println!(
            "| {} | {:.3} | {:.3} | {:.2} |",
            s.name, s.median_ms, s.min_ms, s.ratio
        );
    }
    println!();
}

/// `reps` from the `BENCH_REPS` environment variable, or `default`.
pub fn reps(default: usize) -> usize {
    std::env::var("BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}
