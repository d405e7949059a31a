//! One Adam training step (batch 128, cross-entropy, f32): the crate's runtime-sized `Mlp`
//! against dfdx's const-generic layers and dfdx's own `Adam`; a grown model against one built
//! at its final size; and where the time of a step goes (forward, backward, optimizer update).
//!
//! `cargo bench --bench train_step` (`BENCH_REPS=N` to change the repetitions).

mod common;

use std::cell::RefCell;
use std::time::{Duration, Instant};

use common::*;
use dfdx_grow::dfdx::nn::builders::{Linear as DLinear, ReLU};
use dfdx_grow::dfdx::optim::{Adam as DAdam, AdamConfig as DAdamConfig, Optimizer as DOptimizer};
use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::optim::{Adam, AdamConfig, NewUnitSteps, Optimizer};
use dfdx_grow::rand::{rngs::StdRng, Rng, SeedableRng};
use dfdx_grow::{Activation, Data, Init, Linear, Matrix, Mlp, Params};

const B: usize = 128;
type X = Tensor<Rank2<B, 784>, f32, Cpu>;
type Y = Tensor<Rank2<B, 10>, f32, Cpu>;

type Small = (DLinear<784, 256>, ReLU, DLinear<256, 10>);
type Wide = (DLinear<784, 1024>, ReLU, DLinear<1024, 10>);
type Deep = (
    DLinear<784, 1024>,
    ReLU,
    DLinear<1024, 1024>,
    ReLU,
    DLinear<1024, 10>,
);

/// Phase times of one step: forward (grads allocation, forward, loss), backward, update.
type Phases = [Duration; 3];

/// One step of the crate's `Mlp`, exactly as tests/common's `step`.
fn ours_step(
    mlp: &mut Mlp<f32, Cpu>,
    opt: &mut dyn Optimizer<f32, Cpu>,
    x: &Matrix<f32, Cpu>,
    y: &Matrix<f32, Cpu>,
) -> Phases {
    step_with(mlp, opt, x, y, false)
}

/// As [`ours_step`], the input wrapped in [`Data`] (no input gradient).
fn data_step(
    mlp: &mut Mlp<f32, Cpu>,
    opt: &mut dyn Optimizer<f32, Cpu>,
    x: &Matrix<f32, Cpu>,
    y: &Matrix<f32, Cpu>,
) -> Phases {
    step_with(mlp, opt, x, y, true)
}

fn step_with(
    mlp: &mut Mlp<f32, Cpu>,
    opt: &mut dyn Optimizer<f32, Cpu>,
    x: &Matrix<f32, Cpu>,
    y: &Matrix<f32, Cpu>,
    data: bool,
) -> Phases {
    let t0 = Instant::now();
    let grads = mlp.try_alloc_grads().unwrap();
    let traced = x.clone().traced(grads);
    let out = if data {
        mlp.forward(Data(traced))
    } else {
        mlp.forward(traced)
    };
    let loss = cross_entropy_with_logits_loss(out, y.clone());
    let t1 = Instant::now();
    let mut grads = loss.backward();
    let t2 = Instant::now();
    opt.update(mlp, &mut grads).unwrap();
    let t3 = Instant::now();
    [t1 - t0, t2 - t1, t3 - t2]
}

/// One step of a dfdx const-generic model with dfdx's Adam.
macro_rules! dfdx_step {
    ($model:expr, $opt:expr, $x:expr, $y:expr) => {{
        let t0 = Instant::now();
        let grads = $model.alloc_grads();
        let out = $model.forward($x.clone().traced(grads));
        let loss = cross_entropy_with_logits_loss(out, $y.clone());
        let t1 = Instant::now();
        let grads = loss.backward();
        let t2 = Instant::now();
        $opt.update(&mut $model, &grads).unwrap();
        let t3 = Instant::now();
        [t1 - t0, t2 - t1, t3 - t2]
    }};
}

/// Our `Mlp` holding the weights of dfdx layers given as (weight, bias, out, in).
fn twin(dev: &Cpu, layers: &[(Vec<f32>, Vec<f32>, usize, usize)]) -> Mlp<f32, Cpu> {
    let layers = layers
        .iter()
        .map(|(w, b, o, i)| {
            Linear::from_parts(
                dev.tensor_from_vec(w.clone(), (*o, *i)),
                dev.tensor_from_vec(b.clone(), (*o,)),
            )
            .unwrap()
        })
        .collect();
    Mlp::from_layers(layers, Activation::Relu).unwrap()
}

fn data(dev: &Cpu) -> (X, Y, Matrix<f32, Cpu>, Matrix<f32, Cpu>) {
    let mut rng = StdRng::seed_from_u64(9);
    let x: Vec<f32> = (0..B * 784).map(|_| rng.gen_range(-2.0..2.0)).collect();
    let mut y = vec![0.0f32; B * 10];
    for r in 0..B {
        y[r * 10 + rng.gen_range(0..10)] = 1.0;
    }
    (
        dev.tensor(x.clone()),
        dev.tensor(y.clone()),
        dev.tensor_from_vec(x, (B, 784)),
        dev.tensor_from_vec(y, (B, 10)),
    )
}

/// A case that runs a step, records its phases in `log` and returns the whole step's time.
fn logged<'a>(
    name: &str,
    log: &'a RefCell<Vec<Phases>>,
    mut f: impl FnMut() -> Phases + 'a,
) -> Case<'a> {
    part(name, move || {
        let p = f();
        log.borrow_mut().push(p);
        p.iter().sum()
    })
}

fn split_table(title: &str, rows: &[(&str, &RefCell<Vec<Phases>>)], warmup: usize) {
    println!("### {title}\n");
    println!("| case | forward (alloc grads + forward + loss) ms | backward ms | optimizer update ms | step ms (sum of medians) |");
    println!("|---|---:|---:|---:|---:|");
    for (name, log) in rows {
        let log = log.borrow();
        let med = |k: usize| {
            let mut v: Vec<f64> = log[warmup..]
                .iter()
                .map(|p| p[k].as_secs_f64() * 1e3)
                .collect();
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[v.len() / 2]
        };
        let (f, b, u) = (med(0), med(1), med(2));
        println!("| {name} | {f:.3} | {b:.3} | {u:.3} | {:.3} |", f + b + u);
    }
    println!();
}

const WARMUP: usize = 3;

/// The crate's step with the input wrapped in `Data` (benches/vs_torch.sh reads this name).
const DATA_CASE: &str = "dfdx-grow Mlp (input as Data) + optim::Adam";

fn dcfg() -> DAdamConfig {
    DAdamConfig {
        lr: 1e-3,
        ..Default::default()
    }
}

/// Steps a dfdx const-generic model (bound to `$m`, built from `$model`) and the crate's twin
/// of it (from `$layers`, which may read `$m`) side by side, and prints the tables (a) and (c).
macro_rules! compare_with_dfdx {
    ($dev:expr, $model:ty, $m:ident => $layers:expr, $name:literal, $reps:expr) => {{
        let dev: &Cpu = $dev;
        let (xs, ys, x, y) = data(dev);
        let mut $m = dev.build_module::<$model, f32>();
        let mut mlp = twin(dev, &$layers);
        let mut mlp_data = mlp.clone();
        let mut dopt = DAdam::new(&$m, dcfg());
        let mut opt = Adam::<f32>::new(AdamConfig::default()).unwrap();
        let mut opt_data = Adam::<f32>::new(AdamConfig::default()).unwrap();
        let (la, lb, lc) = (
            RefCell::new(vec![]),
            RefCell::new(vec![]),
            RefCell::new(vec![]),
        );
        let mut cases = vec![
            logged("dfdx nn::Linear + dfdx Adam", &la, || {
                dfdx_step!($m, dopt, xs, ys)
            }),
            logged("dfdx-grow Mlp + optim::Adam", &lb, || {
                ours_step(&mut mlp, &mut opt, &x, &y)
            }),
            logged(DATA_CASE, &lc, || {
                data_step(&mut mlp_data, &mut opt_data, &x, &y)
            }),
        ];
        let s = compare(&mut cases, 0, WARMUP, reps($reps));
        drop(cases);
        table(
            concat!("(a) ", $name, ", one Adam step, batch 128"),
            "dfdx nn::Linear + dfdx Adam",
            &s,
        );
        split_table(
            concat!("(c) ", $name, ": where the step's time goes (medians)"),
            &[
                ("dfdx nn::Linear + dfdx Adam", &la),
                ("dfdx-grow Mlp + optim::Adam", &lb),
                (DATA_CASE, &lc),
            ],
            WARMUP,
        );
    }};
}

fn compare_small(dev: &Cpu) {
    compare_with_dfdx!(dev, Small, model => [
        (model.0.weight.as_vec(), model.0.bias.as_vec(), 256, 784),
        (model.2.weight.as_vec(), model.2.bias.as_vec(), 10, 256),
    ], "784-256-10", 60);
}

fn compare_wide(dev: &Cpu) {
    compare_with_dfdx!(dev, Wide, model => [
        (model.0.weight.as_vec(), model.0.bias.as_vec(), 1024, 784),
        (model.2.weight.as_vec(), model.2.bias.as_vec(), 10, 1024),
    ], "784-1024-10", 40);
}

fn compare_deep(dev: &Cpu) {
    compare_with_dfdx!(dev, Deep, model => [
        (model.0.weight.as_vec(), model.0.bias.as_vec(), 1024, 784),
        (model.2.weight.as_vec(), model.2.bias.as_vec(), 1024, 1024),
        (model.4.weight.as_vec(), model.4.bias.as_vec(), 10, 1024),
    ], "784-1024-1024-10", 20);
}

/// 784-256-10 trained 5 steps, grown to 512, 5 steps, grown to 1024, 5 steps.
fn grown(
    dev: &Cpu,
    mode: NewUnitSteps,
    x: &Matrix<f32, Cpu>,
    y: &Matrix<f32, Cpu>,
) -> (Mlp<f32, Cpu>, Adam<f32>) {
    let mut rng = StdRng::seed_from_u64(1);
    let mut mlp = Mlp::<f32, Cpu>::new(&[784, 256, 10], Activation::Relu, dev, &mut rng);
    let mut opt = Adam::<f32>::new(AdamConfig {
        new_units: mode,
        ..Default::default()
    })
    .unwrap();
    for k in [256, 512, 0] {
        for _ in 0..5 {
            ours_step(&mut mlp, &mut opt, x, y);
        }
        if k > 0 {
            mlp.expand_hidden(0, k, &Init::ZerosOut, &mut rng).unwrap();
        }
    }
    assert_eq!(mlp.widths(), vec![784, 1024, 10]);
    (mlp, opt)
}

fn compare_grown(dev: &Cpu) {
    let (xs, ys, x, y) = data(dev);
    let mut rng = StdRng::seed_from_u64(1);
    let mut fixed = Mlp::<f32, Cpu>::new(&[784, 1024, 10], Activation::Relu, dev, &mut rng);
    let mut fopt = Adam::<f32>::new(AdamConfig::default()).unwrap();
    for _ in 0..15 {
        ours_step(&mut fixed, &mut fopt, &x, &y);
    }
    let (mut gc, mut oc) = grown(dev, NewUnitSteps::Cohort, &x, &y);
    let (mut gg, mut og) = grown(dev, NewUnitSteps::Global, &x, &y);
    let cohorts: usize = oc
        .state()
        .tensors
        .iter()
        .map(|t| t.rows.len() * t.cols.len())
        .sum();
    let mut model = dev.build_module::<Wide, f32>();
    let mut dopt = DAdam::new(&model, dcfg());
    let logs: Vec<RefCell<Vec<Phases>>> = (0..4).map(|_| RefCell::new(vec![])).collect();
    let names = [
        "built at 784-1024-10 (Mlp + Adam)",
        "grown 256->512->1024, Adam Cohort",
        "grown 256->512->1024, Adam Global",
        "dfdx nn::Linear 784-1024-10 + dfdx Adam",
    ];
    let mut cases = vec![
        logged(names[0], &logs[0], || {
            ours_step(&mut fixed, &mut fopt, &x, &y)
        }),
        logged(names[1], &logs[1], || ours_step(&mut gc, &mut oc, &x, &y)),
        logged(names[2], &logs[2], || ours_step(&mut gg, &mut og, &x, &y)),
        logged(names[3], &logs[3], || dfdx_step!(model, dopt, xs, ys)),
    ];
    let s = compare(&mut cases, 0, WARMUP, reps(40));
    drop(cases);
    table(
        &format!(
            "(b) grown vs built at the final size: 784-1024-10, one Adam step, batch 128 \
             (the grown Cohort state holds {cohorts} birth blocks over 4 tensors)"
        ),
        names[0],
        &s,
    );
    let rows: Vec<(&str, &RefCell<Vec<Phases>>)> = names.iter().copied().zip(logs.iter()).collect();
    split_table(
        "(c) 784-1024-10: where the step's time goes (medians)",
        &rows,
        WARMUP,
    );
}

fn main() {
    header("train_step: one Adam step, batch 128, cross-entropy, f32");
    let dev = Cpu::default();
    // `BENCH_ONLY=sizes` runs only the three (a)/(c) comparisons (as benches/vs_torch.sh does).
    let only_sizes = std::env::var("BENCH_ONLY").is_ok_and(|v| v == "sizes");
    compare_small(&dev);
    compare_wide(&dev);
    if !only_sizes {
        compare_grown(&dev);
    }
    compare_deep(&dev);
}
