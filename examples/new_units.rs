//! Issue 7's experiment: do units added in the middle of a run stay alive?
//!
//! ```text
//! cargo run --release --example new_units -- --dataset fashion-mnist --variant cohort --seed 0
//! cargo run --release --example new_units -- --dataset digits --variant global+v:line --seed 1
//! ```
//!
//! Trains a one-hidden-layer ReLU MLP with Adam and grows its hidden layer on a fixed schedule
//! with `Init::ZerosOut` (or the variant's init), then measures, per growth cohort, on the
//! validation set: units, dead units (no positive pre-activation on any validation example),
//! mean firing share, mean fan-in and fan-out norms. With `--trace` it also records, for the
//! first `--trace-steps` steps after each growth, how the newest cohort's fan-in moves (the
//! mechanism). Everything goes to `--out/<dataset>_<variant>_s<seed>.jsonl`, one JSON object
//! a line (`kind`: `setup`, `eval`, `health`, `growth`, `trace`, `final`).
//!
//! Schedules (the issue's run for Fashion-MNIST, an analogue for digits):
//! - fashion-mnist: 784-64-10, batch 128, 4,690 steps, +64 at 469, +128 at 938, +256 at 1642;
//! - digits: 64-32-10, batch 64, 3,000 steps, +32 at 300, +64 at 600, +128 at 1050.
//!
//! A variant is a `+`-joined list of switches, applied in order:
//! `static` (no growth: the final width from the start), `cohort` / `global` (Adam's step count
//! for new weights), `mirror` (`Init::MirrorPairs`), `lr:SCALE:STEPS` (new-unit learning-rate
//! multiplier), `warmup:N` (linear new-unit warm-up), `eps:X` (Adam epsilon for new weights),
//! `epsrel:C` (that epsilon as C x the old entries' mean sqrt(v_hat) in the same tensor),
//! `v:line` / `v:tensor` (new entries inherit the second moment of the old ones, with the global
//! step count), `matchnorm` (new fan-in rows scaled to the old rows' mean norm, bias to their
//! mean), `bias:X` (new bias X), `std` (per-feature standardised inputs, a reference only).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use dfdx_grow::data::{self, Dataset};
use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::optim::experimental::NewUnitMoment;
use dfdx_grow::optim::{Adam, AdamConfig, NewUnitLr, NewUnitSteps, Optimizer};
use dfdx_grow::rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use dfdx_grow::{Activation, Init, Loss, Mlp, ParamMut, Params};
use serde_json::{json, Value};

type M = dfdx_grow::Matrix<f32, Cpu>;

const USAGE: &str = "usage: new_units [--dataset fashion-mnist|digits] [--data-dir DIR] \
[--variant V] [--seed N] [--out DIR] [--steps N] [--lr X] [--hidden W,W..] [--grow-layer L] \
[--schedule STEP:K,..] [--batch N] [--eval-every N] [--trace] [--trace-steps N] [--quiet]";

struct Args {
    dataset: String,
    data_dir: PathBuf,
    variant: String,
    seed: u64,
    out: PathBuf,
    steps: Option<usize>,
    lr: f64,
    hidden: Option<Vec<usize>>,
    grow_layer: usize,
    schedule: Option<Vec<(usize, usize)>>,
    batch: Option<usize>,
    eval_every: Option<usize>,
    trace: bool,
    trace_steps: usize,
    quiet: bool,
}

fn parse_list<T: std::str::FromStr>(s: &str) -> Option<Vec<T>> {
    s.split(',').map(|x| x.trim().parse().ok()).collect()
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        dataset: "digits".into(),
        data_dir: PathBuf::from(data::idx::FASHION_MNIST_DIR),
        variant: "cohort".into(),
        seed: 0,
        out: PathBuf::from("target/new_units"),
        steps: None,
        lr: 1e-3,
        hidden: None,
        grow_layer: 0,
        schedule: None,
        batch: None,
        eval_every: None,
        trace: false,
        trace_steps: 200,
        quiet: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value\n{USAGE}"));
        let num = |v: String| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--dataset" => a.dataset = value()?,
            "--data-dir" => a.data_dir = value()?.into(),
            "--variant" => a.variant = value()?,
            "--seed" => a.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--out" => a.out = value()?.into(),
            "--steps" => a.steps = Some(num(value()?)?),
            "--lr" => a.lr = value()?.parse().map_err(|e| format!("--lr: {e}"))?,
            "--hidden" => a.hidden = Some(parse_list(&value()?).ok_or("--hidden: W,W,..")?),
            "--grow-layer" => a.grow_layer = num(value()?)?,
            "--schedule" => {
                let v = value()?;
                let parsed: Option<Vec<(usize, usize)>> = v
                    .split(',')
                    .map(|p| {
                        let (s, k) = p.split_once(':')?;
                        Some((s.parse().ok()?, k.parse().ok()?))
                    })
                    .collect();
                a.schedule = Some(parsed.ok_or("--schedule: STEP:K,STEP:K,..")?);
            }
            "--batch" => a.batch = Some(num(value()?)?),
            "--eval-every" => a.eval_every = Some(num(value()?)?),
            "--trace" => a.trace = true,
            "--trace-steps" => a.trace_steps = num(value()?)?,
            "--quiet" => a.quiet = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    Ok(a)
}

/// What a variant string switches on.
#[derive(Debug, Default)]
struct Variant {
    is_static: bool,
    cfg: AdamConfig,
    init: Init,
    match_norm: bool,
    bias: Option<f32>,
    standardize: bool,
}

fn parse_variant(s: &str) -> Result<Variant, String> {
    let mut v = Variant::default();
    for tok in s.split('+') {
        let parts: Vec<&str> = tok.split(':').collect();
        let f = |i: usize| -> Result<f64, String> {
            parts
                .get(i)
                .and_then(|x| x.parse().ok())
                .ok_or(format!("variant switch {tok:?} needs a number"))
        };
        match parts[0] {
            "static" => v.is_static = true,
            "cohort" => v.cfg.new_units = NewUnitSteps::Cohort,
            "global" => v.cfg.new_units = NewUnitSteps::Global,
            "mirror" => v.init = Init::MirrorPairs,
            "lr" => {
                v.cfg.new_unit_lr = Some(NewUnitLr {
                    scale: f(1)?,
                    steps: f(2)? as u64,
                })
            }
            "warmup" => v.cfg.new_unit_experiment.warmup = Some(f(1)? as u64),
            "eps" => v.cfg.new_unit_experiment.eps = Some(f(1)?),
            "epsrel" => v.cfg.new_unit_experiment.eps_rel = Some(f(1)?),
            "v" => {
                v.cfg.new_unit_experiment.moment = match parts.get(1) {
                    Some(&"line") => NewUnitMoment::LineMean,
                    Some(&"tensor") => NewUnitMoment::TensorMean,
                    _ => return Err(format!("{tok:?}: v:line or v:tensor")),
                };
                v.cfg.new_units = NewUnitSteps::Global;
            }
            "matchnorm" => v.match_norm = true,
            "bias" => v.bias = Some(f(1)? as f32),
            "std" => v.standardize = true,
            _ => return Err(format!("unknown variant switch {tok:?}")),
        }
    }
    Ok(v)
}

/// Per-feature standardisation with the training set's statistics (constant features -> 0).
fn standardize(train: &mut Dataset, val: &mut Dataset) {
    let n = train.n_features;
    let rows = train.len() as f64;
    let (mut mean, mut sq) = (vec![0.0f64; n], vec![0.0f64; n]);
    for r in 0..train.len() {
        for (j, &x) in train.row(r).iter().enumerate() {
            mean[j] += x as f64;
            sq[j] += (x as f64) * (x as f64);
        }
    }
    let std: Vec<f64> = (0..n)
        .map(|j| {
            mean[j] /= rows;
            (sq[j] / rows - mean[j] * mean[j]).max(0.0).sqrt()
        })
        .collect();
    for ds in [train, val] {
        for (i, x) in ds.features.iter_mut().enumerate() {
            let j = i % n;
            *x = if std[j] > 1e-6 {
                ((*x as f64 - mean[j]) / std[j]) as f32
            } else {
                0.0
            };
        }
    }
}

struct Batches<'a> {
    dev: Cpu,
    data: &'a Dataset,
    size: usize,
    rng: StdRng,
    order: Vec<usize>,
    cursor: usize,
}

impl Batches<'_> {
    fn next_batch(&mut self) -> (M, M) {
        if self.cursor + self.size > self.order.len() {
            self.order.shuffle(&mut self.rng);
            self.cursor = 0;
        }
        self.cursor += self.size;
        self.data
            .batch(&self.dev, &self.order[self.cursor - self.size..self.cursor])
    }
}

/// Mean cross-entropy and accuracy on all of `ds`.
fn evaluate(dev: &Cpu, mlp: &Mlp<f32, Cpu>, ds: &Dataset) -> (f64, f64) {
    let (mut loss, mut correct) = (0.0, 0usize);
    let all: Vec<usize> = (0..ds.len()).collect();
    for chunk in all.chunks(2000) {
        let (x, y) = ds.batch::<f32, Cpu>(dev, chunk);
        let out = mlp.forward(x);
        let logits = out.as_vec();
        loss += Loss::CrossEntropy.value(out, &y) * chunk.len() as f64;
        for (r, &i) in chunk.iter().enumerate() {
            let row = &logits[r * ds.n_classes..(r + 1) * ds.n_classes];
            let argmax = (0..ds.n_classes)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap_or(0);
            correct += usize::from(argmax == ds.labels[i] as usize);
        }
    }
    (loss / ds.len() as f64, correct as f64 / ds.len() as f64)
}

/// The input of layer `l` (the ReLU outputs of layer `l - 1`, or the data) and layer `l`'s
/// pre-activations, for rows `idx` of `ds`, both row-major on the host.
fn layer_io(
    dev: &Cpu,
    mlp: &Mlp<f32, Cpu>,
    l: usize,
    ds: &Dataset,
    idx: &[usize],
) -> (Vec<f32>, Vec<f32>) {
    let (mut h, _) = ds.batch::<f32, Cpu>(dev, idx);
    for layer in &mlp.layers()[..l] {
        h = layer.forward(h).relu();
    }
    let z = mlp.layers()[l].forward(h.clone());
    (h.as_vec(), z.as_vec())
}

/// A contiguous run of units of the grown layer added at one step.
#[derive(Clone, Copy, Debug)]
struct Cohort {
    born: usize,
    start: usize,
    end: usize,
}

fn norm(v: impl Iterator<Item = f32>) -> f64 {
    v.map(|x| (x as f64) * (x as f64)).sum::<f64>().sqrt()
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Per-cohort health of hidden layer `l` on all of `ds`.
fn health(
    dev: &Cpu,
    mlp: &Mlp<f32, Cpu>,
    l: usize,
    ds: &Dataset,
    cohorts: &[Cohort],
    step: usize,
) -> Vec<Value> {
    let width = mlp.widths()[l + 1];
    let mut fires = vec![0usize; width];
    let all: Vec<usize> = (0..ds.len()).collect();
    for chunk in all.chunks(2000) {
        let (_, z) = layer_io(dev, mlp, l, ds, chunk);
        for row in z.chunks(width) {
            for (u, &x) in row.iter().enumerate() {
                fires[u] += usize::from(x > 0.0);
            }
        }
    }
    let w_in = mlp.layers()[l].weight_vec();
    let bias = mlp.layers()[l].bias_vec();
    let inp = mlp.widths()[l];
    let w_out = mlp.layers()[l + 1].weight_vec();
    let out = mlp.widths()[l + 2];
    cohorts
        .iter()
        .map(|c| {
            let units = c.end - c.start;
            let dead = (c.start..c.end).filter(|&u| fires[u] == 0).count();
            let share: Vec<f64> = (c.start..c.end)
                .map(|u| fires[u] as f64 / ds.len() as f64)
                .collect();
            let fan_in: Vec<f64> = (c.start..c.end)
                .map(|u| norm(w_in[u * inp..(u + 1) * inp].iter().copied()))
                .collect();
            let fan_out: Vec<f64> = (c.start..c.end)
                .map(|u| norm((0..out).map(|r| w_out[r * width + u])))
                .collect();
            let b: Vec<f64> = (c.start..c.end).map(|u| bias[u] as f64).collect();
            json!({
                "kind": "health", "step": step, "born": c.born, "units": units, "dead": dead,
                "firing": mean(&share), "fan_in_norm": mean(&fan_in),
                "fan_out_norm": mean(&fan_out), "bias": mean(&b),
            })
        })
        .collect()
}

/// The growth schedule, base widths and run settings of a data set.
struct Setup {
    train: Dataset,
    val: Dataset,
    hidden: Vec<usize>,
    schedule: Vec<(usize, usize)>,
    steps: usize,
    batch: usize,
    eval_every: usize,
}

fn setup(a: &Args) -> Result<Setup, String> {
    let (train, val, hidden, schedule, steps, batch, eval_every) = match a.dataset.as_str() {
        "fashion-mnist" => {
            let (train, test) =
                data::idx::load_fashion_mnist(&a.data_dir).map_err(|e| e.to_string())?;
            (
                train,
                test,
                vec![64],
                vec![(469, 64), (938, 128), (1642, 256)],
                4690,
                128,
                469,
            )
        }
        "digits" => {
            let ds = data::digits::digits().map_err(|e| e.to_string())?;
            let split = data::stratified_split(&ds, 0.2, a.seed).map_err(|e| e.to_string())?;
            (
                split.train,
                split.val,
                vec![32],
                vec![(300, 32), (600, 64), (1050, 128)],
                3000,
                64,
                100,
            )
        }
        other => return Err(format!("unknown dataset {other:?}\n{USAGE}")),
    };
    Ok(Setup {
        train,
        val,
        hidden: a.hidden.clone().unwrap_or(hidden),
        schedule: a.schedule.clone().unwrap_or(schedule),
        steps: a.steps.unwrap_or(steps),
        batch: a.batch.unwrap_or(batch),
        eval_every: a.eval_every.unwrap_or(eval_every),
    })
}

/// Rewrites the new units' fan-in rows `[start, end)` of layer `l` (their fan-out is still
/// zero, so the function is unchanged).
fn adjust_new_units(mlp: &mut Mlp<f32, Cpu>, l: usize, start: usize, end: usize, v: &Variant) {
    if !v.match_norm && v.bias.is_none() {
        return;
    }
    let inp = mlp.widths()[l];
    let mut w = mlp.layers()[l].weight_vec();
    let mut b = mlp.layers()[l].bias_vec();
    if v.match_norm {
        let target = mean(
            &(0..start)
                .map(|u| norm(w[u * inp..(u + 1) * inp].iter().copied()))
                .collect::<Vec<_>>(),
        );
        let old_bias = mean(&b[..start].iter().map(|&x| x as f64).collect::<Vec<_>>());
        for u in start..end {
            let row = &mut w[u * inp..(u + 1) * inp];
            let n = norm(row.iter().copied());
            if n > 0.0 {
                row.iter_mut()
                    .for_each(|x| *x = (*x as f64 * target / n) as f32);
            }
            b[u] = old_bias as f32;
        }
    }
    if let Some(x) = v.bias {
        b[start..end].iter_mut().for_each(|b| *b = x);
    }
    let mut i = 0;
    mlp.visit_mut(&mut |mut p: ParamMut<'_, f32, Cpu>| {
        if i == 2 * l {
            p.copy_from(&w);
        } else if i == 2 * l + 1 {
            p.copy_from(&b);
        }
        i += 1;
    });
}

/// One traced step's view of the newest cohort (units `[start, end)`) against the old units:
/// `w0`/`b0` the layer's fan-in and bias before the update, `g` its weight gradient.
#[allow(clippy::too_many_arguments)]
fn trace_record(
    mlp: &Mlp<f32, Cpu>,
    l: usize,
    c: Cohort,
    step: usize,
    w0: &[f32],
    b0: &[f32],
    g: &[f32],
    xbar: &[f64],
    z: &[f32],
    lr: f64,
) -> Value {
    let inp = mlp.widths()[l];
    let width = mlp.widths()[l + 1];
    let w1 = mlp.layers()[l].weight_vec();
    let b1 = mlp.layers()[l].bias_vec();
    let rows = z.len() / width;
    let (mut coh, mut sign_share, mut dz, mut dz_dead) = (vec![], vec![], vec![], vec![]);
    let (mut zmean, mut alive, mut fire) = (vec![], 0usize, vec![]);
    let (mut gn_new, mut gn_old, mut up_new, mut up_old) = (vec![], vec![], vec![], vec![]);
    for u in 0..c.end {
        let range = u * inp..(u + 1) * inp;
        let gn = norm(g[range.clone()].iter().copied());
        let dw: Vec<f64> = range.clone().map(|i| (w1[i] - w0[i]) as f64).collect();
        let un = dw.iter().map(|x| x * x).sum::<f64>().sqrt();
        if u < c.start {
            gn_old.push(gn);
            up_old.push(un);
            continue;
        }
        gn_new.push(gn);
        up_new.push(un);
        let signed: f64 = dw.iter().zip(xbar).map(|(d, x)| d * x).sum();
        let abs: f64 = dw.iter().zip(xbar).map(|(d, x)| d.abs() * x.abs()).sum();
        if abs > 0.0 {
            coh.push(signed.abs() / abs);
            // The x-weighted share of the update that has the majority sign.
            let pos: f64 = dw
                .iter()
                .zip(xbar)
                .filter(|(d, _)| **d > 0.0)
                .map(|(d, x)| d.abs() * x.abs())
                .sum();
            sign_share.push(pos.max(abs - pos) / abs);
        }
        let zs: Vec<f32> = (0..rows).map(|r| z[r * width + u]).collect();
        let on = zs.iter().filter(|&&x| x > 0.0).count();
        let d = signed + (b1[u] - b0[u]) as f64;
        dz.push(d);
        if on == 0 {
            dz_dead.push(d);
        } else {
            alive += 1;
        }
        zmean.push(zs.iter().map(|&x| x as f64).sum::<f64>() / rows as f64);
        fire.push(on as f64 / rows as f64);
    }
    let lr_sum_x = lr * xbar.iter().sum::<f64>();
    json!({
        "kind": "trace", "step": step, "born": c.born, "since": step - c.born,
        "z_mean": mean(&zmean), "alive_probe": alive as f64 / (c.end - c.start) as f64,
        "firing_probe": mean(&fire), "coherence": mean(&coh), "sign_share": mean(&sign_share),
        "dz_mean": mean(&dz), "dz_abs_mean": mean(&dz.iter().map(|x| x.abs()).collect::<Vec<_>>()),
        "dz_dead_mean": mean(&dz_dead), "n_dead_probe": dz_dead.len(),
        "lr_sum_x": lr_sum_x,
        "grad_ratio": mean(&gn_new) / mean(&gn_old), "update_ratio": mean(&up_new) / mean(&up_old),
        "update_new": mean(&up_new), "update_old": mean(&up_old),
        "update_new_per_elem": mean(&up_new) / (inp as f64).sqrt(),
    })
}

fn run(a: &Args) -> Result<(), String> {
    let v = parse_variant(&a.variant)?;
    let mut s = setup(a)?;
    if v.standardize {
        standardize(&mut s.train, &mut s.val);
    }
    let l = a.grow_layer;
    if l >= s.hidden.len() {
        return Err(format!(
            "--grow-layer {l}: only {} hidden layers",
            s.hidden.len()
        ));
    }
    let final_width = s.hidden[l] + s.schedule.iter().map(|(_, k)| k).sum::<usize>();
    let mut hidden = s.hidden.clone();
    if v.is_static {
        hidden[l] = final_width;
    }
    let mut sizes = vec![s.train.n_features];
    sizes.extend(&hidden);
    sizes.push(s.train.n_classes);

    std::fs::create_dir_all(&a.out).map_err(|e| e.to_string())?;
    let path = a.out.join(format!(
        "{}_{}_s{}.jsonl",
        a.dataset,
        a.variant.replace(':', "="),
        a.seed
    ));
    let mut file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut emit =
        |v: Value| -> Result<(), String> { writeln!(file, "{v}").map_err(|e| e.to_string()) };

    let dev = Cpu::default();
    let mut rng = StdRng::seed_from_u64(a.seed);
    let mut mlp = Mlp::<f32, Cpu>::try_new(&sizes, Activation::Relu, &dev, &mut rng)
        .map_err(|e| e.to_string())?;
    let mut opt = Adam::<f32>::new(AdamConfig { lr: a.lr, ..v.cfg }).map_err(|e| e.to_string())?;
    // Growth draws from its own stream, so every variant sees the same batches.
    let mut grow_rng = StdRng::seed_from_u64(a.seed ^ 0x9e37_79b9);
    let shuffle_rng = StdRng::seed_from_u64(a.seed.wrapping_add(1));
    let order: Vec<usize> = (0..s.train.len()).collect();
    let mut batches = Batches {
        dev: dev.clone(),
        data: &s.train,
        size: s.batch,
        rng: shuffle_rng,
        cursor: order.len(),
        order,
    };
    emit(json!({
        "kind": "setup", "dataset": a.dataset, "variant": a.variant, "seed": a.seed,
        "sizes": sizes, "grow_layer": l, "schedule": if v.is_static { vec![] } else { s.schedule.clone() },
        "steps": s.steps, "batch": s.batch, "lr": a.lr, "adam": serde_json::to_value(opt.config()).ok(),
        "init": v.init.name(),
    }))?;

    let mut cohorts = vec![Cohort {
        born: 0,
        start: 0,
        end: hidden[l],
    }];
    let probe_idx: Vec<usize> = (0..s.val.len().min(1000)).collect();
    let health_at: Vec<usize> = if v.is_static {
        vec![]
    } else {
        s.schedule.iter().map(|(st, _)| st + 200).collect()
    };
    let (mut best, mut last) = (f64::INFINITY, f64::NAN);
    let start_time = Instant::now();
    let mut traced: Option<Cohort> = None;
    for step in 1..=s.steps {
        let (x, y) = batches.next_batch();
        let trace_now = traced.filter(|c| a.trace && step - c.born <= a.trace_steps);
        let before = trace_now
            .as_ref()
            .map(|_| (mlp.layers()[l].weight_vec(), mlp.layers()[l].bias_vec()));
        let grads = mlp.try_alloc_grads().map_err(|e| e.to_string())?;
        let loss = cross_entropy_with_logits_loss(mlp.forward(x.traced(grads)), y);
        let mut grads = loss.backward();
        let g = trace_now
            .as_ref()
            .map(|_| grads.get(&mlp.layers()[l].weight).as_vec());
        opt.update(&mut mlp, &mut grads)
            .map_err(|e| e.to_string())?;
        if let (Some(c), Some((w0, b0)), Some(g)) = (trace_now, &before, &g) {
            let (h, z) = layer_io(&dev, &mlp, l, &s.val, &probe_idx);
            let inp = mlp.widths()[l];
            let xbar: Vec<f64> = (0..inp)
                .map(|j| h.chunks(inp).map(|r| r[j] as f64).sum::<f64>() / probe_idx.len() as f64)
                .collect();
            emit(trace_record(&mlp, l, c, step, w0, b0, g, &xbar, &z, a.lr))?;
        }

        if !v.is_static {
            if let Some(&(_, k)) = s.schedule.iter().find(|(st, _)| *st == step) {
                let start = mlp.widths()[l + 1];
                let (px, _) = s.val.batch::<f32, Cpu>(&dev, &probe_idx);
                let out_before = mlp.forward(px.clone()).as_vec();
                mlp.expand_hidden(l, k, &v.init, &mut grow_rng)
                    .map_err(|e| e.to_string())?;
                adjust_new_units(&mut mlp, l, start, start + k, &v);
                // Growth must leave the function unchanged (up to a reordered sum's rounding).
                let change = out_before
                    .iter()
                    .zip(mlp.forward(px).as_vec())
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                Optimizer::<f32, Cpu>::sync(&mut opt, &mlp).map_err(|e| e.to_string())?;
                let c = Cohort {
                    born: step,
                    start,
                    end: start + k,
                };
                cohorts.push(c);
                // The spread of the new units' pre-activations at birth, over probe images
                // (per unit) and over units (of their per-unit means).
                let (h, z) = layer_io(&dev, &mlp, l, &s.val, &probe_idx);
                let width = start + k;
                let rows = probe_idx.len();
                let (mut within, mut means) = (vec![], vec![]);
                for u in start..start + k {
                    let zs: Vec<f64> = (0..rows).map(|r| z[r * width + u] as f64).collect();
                    let m = mean(&zs);
                    within.push(
                        (zs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / rows as f64).sqrt(),
                    );
                    means.push(m);
                }
                let mm = mean(&means);
                let between =
                    (means.iter().map(|x| (x - mm) * (x - mm)).sum::<f64>() / k as f64).sqrt();
                let sum_x = h.iter().map(|&x| x as f64).sum::<f64>() / rows as f64;
                // The scale of the old weights' Adam denominators, sqrt(v_hat), to set eps
                // against: mean and median over the old entries with v > 0.
                let t = Optimizer::<f32, Cpu>::steps(&opt) as i32;
                let c2 = 1.0 - 0.999f64.powi(t);
                let sqrt_v = |i: usize, old_cols: usize, old_rows: usize| -> (f64, f64) {
                    let st = &opt.state().tensors[i];
                    let cols = st.dims.1;
                    let mut xs: Vec<f64> = (0..old_rows)
                        .flat_map(|r| (0..old_cols).map(move |c| r * cols + c))
                        .map(|j| (st.buffers[1][j] as f64 / c2).sqrt())
                        .filter(|x| *x > 0.0)
                        .collect();
                    xs.sort_by(f64::total_cmp);
                    (mean(&xs), xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN))
                };
                let inp = mlp.widths()[l];
                let outw = mlp.widths()[l + 2];
                let (fi_mean, fi_median) = sqrt_v(2 * l, inp, start);
                let (fo_mean, fo_median) = sqrt_v(2 * l + 2, start, outw);
                emit(json!({
                    "kind": "growth", "max_abs_output_change": change,
                    "old_fan_in_sqrt_v_mean": fi_mean, "old_fan_in_sqrt_v_median": fi_median,
                    "old_fan_out_sqrt_v_mean": fo_mean, "old_fan_out_sqrt_v_median": fo_median, "step": step, "k": k, "new_width": width,
                    "z_within_std": mean(&within), "z_between_std": between, "z_mean": mm,
                    "sum_x_mean": sum_x, "lr_sum_x": a.lr * sum_x,
                }))?;
                traced = Some(c);
            }
        }

        if step % s.eval_every == 0 || step == s.steps {
            let (vl, va) = evaluate(&dev, &mlp, &s.val);
            best = best.min(vl);
            last = vl;
            emit(
                json!({"kind": "eval", "step": step, "val_loss": vl, "val_acc": va,
                "width": mlp.widths()[l + 1]}),
            )?;
            if !a.quiet {
                eprintln!(
                    "{} {} s{} step {step}: val {vl:.4} acc {va:.4} width {} ({:.0} s)",
                    a.dataset,
                    a.variant,
                    a.seed,
                    mlp.widths()[l + 1],
                    start_time.elapsed().as_secs_f64()
                );
            }
        }
        if health_at.contains(&step) {
            for h in health(&dev, &mlp, l, &s.val, &cohorts, step) {
                emit(h)?;
            }
        }
    }
    let hs = health(&dev, &mlp, l, &s.val, &cohorts, s.steps);
    for h in &hs {
        emit(h.clone())?;
    }
    let added: usize = hs
        .iter()
        .skip(1)
        .map(|h| h["units"].as_u64().unwrap_or(0) as usize)
        .sum();
    let dead_added: usize = hs
        .iter()
        .skip(1)
        .map(|h| h["dead"].as_u64().unwrap_or(0) as usize)
        .sum();
    let firing_added = if added > 0 {
        hs.iter()
            .skip(1)
            .map(|h| h["firing"].as_f64().unwrap_or(0.0) * h["units"].as_f64().unwrap_or(0.0))
            .sum::<f64>()
            / added as f64
    } else {
        f64::NAN
    };
    let fin = json!({
        "kind": "final", "dataset": a.dataset, "variant": a.variant, "seed": a.seed,
        "final_val_loss": last, "best_val_loss": best,
        "orig_units": hs[0]["units"], "orig_dead": hs[0]["dead"], "orig_firing": hs[0]["firing"],
        "added": added, "added_dead": dead_added, "added_firing": firing_added,
        "wall_s": start_time.elapsed().as_secs_f64(),
    });
    println!("{fin}");
    emit(fin)
}

fn main() -> std::process::ExitCode {
    match parse_args().and_then(|a| run(&a)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}
