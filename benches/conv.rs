//! One Adam training step of a small CNN (batch 64, 1x28x28 -> conv 3x3 8 ch -> relu -> conv
//! 3x3 stride 2 16 ch -> relu -> flatten -> linear 10, cross-entropy, f32): the crate's
//! `Conv2d` against the same CNN in PyTorch, interleaved in one run (a `python3
//! benches/torch_step.py --serve-cnn` child process times its own steps), and where the
//! step's time goes.
//!
//! `RAYON_NUM_THREADS=1 cargo bench --bench conv` (`BENCH_REPS=N` to change the repetitions;
//! PyTorch gets the same thread count). Without an importable torch the PyTorch case is
//! skipped with a message.

mod common;

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::optim::{Adam, AdamConfig, Optimizer};
use dfdx_grow::rand::{rngs::StdRng, Rng, SeedableRng};
use dfdx_grow::{
    scoped, scoped_mut, Conv2d, Data, FlatLinear, Images, Matrix, ParamMut, ParamRef, Params,
};

const B: usize = 64;
const WARMUP: usize = 3;

type Tp = OwnedTape<f32, Cpu>;

/// How the CNN runs its convolutions.
#[derive(Clone, Copy, Debug)]
enum Path {
    /// The first convolution on `Data(x)` (no input gradient), as PyTorch does for data.
    Data,
    /// The input traced like any tensor: its gradient is computed and thrown away.
    Traced,
    /// Both convolutions through the device-generic im2col (`concat_along` + `gather`).
    Portable,
}

/// Phase times of one step: forward (grads allocation, forward, loss), backward, update.
type Phases = [Duration; 3];

#[derive(Clone, Debug)]
struct Cnn {
    c1: Conv2d<f32, Cpu>,
    c2: Conv2d<f32, Cpu>,
    fc: FlatLinear<f32, Cpu>,
}

impl Cnn {
    fn new(dev: &Cpu) -> Self {
        let mut rng = StdRng::seed_from_u64(0);
        Self {
            c1: Conv2d::new(1, 8, 3, 1, 0, dev, &mut rng).unwrap(),
            c2: Conv2d::new(8, 16, 3, 2, 0, dev, &mut rng).unwrap(),
            fc: FlatLinear::new(16, (12, 12), 10, dev, &mut rng).unwrap(),
        }
    }

    fn forward(&self, x: Images<f32, Cpu, Tp>, path: Path) -> Tensor<(usize, usize), f32, Cpu, Tp> {
        let a = match path {
            Path::Data => self.c1.forward(Data(x)),
            Path::Traced => self.c1.forward(x),
            Path::Portable => self.c1.forward_portable(x).unwrap(),
        };
        let b = match path {
            Path::Portable => self.c2.forward_portable(a.relu()).unwrap(),
            _ => self.c2.forward(a.relu()),
        };
        self.fc.forward(b.relu())
    }
}

impl Params<f32, Cpu> for Cnn {
    fn visit(&self, f: &mut dyn FnMut(&str, ParamRef<'_, f32, Cpu>)) {
        self.c1.visit(&mut scoped("c1", f));
        self.c2.visit(&mut scoped("c2", f));
        self.fc.visit(&mut scoped("fc", f));
    }

    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_, f32, Cpu>)) {
        self.c1.visit_mut(&mut scoped_mut("c1", f));
        self.c2.visit_mut(&mut scoped_mut("c2", f));
        self.fc.visit_mut(&mut scoped_mut("fc", f));
    }
}

fn data(dev: &Cpu) -> (Images<f32, Cpu>, Matrix<f32, Cpu>) {
    let mut rng = StdRng::seed_from_u64(9);
    let x: Vec<f32> = (0..B * 28 * 28).map(|_| rng.gen_range(-2.0..2.0)).collect();
    let mut y = vec![0.0f32; B * 10];
    for r in 0..B {
        y[r * 10 + rng.gen_range(0..10)] = 1.0;
    }
    (
        dev.tensor_from_vec(x, (B, 1, 28, 28)),
        dev.tensor_from_vec(y, (B, 10)),
    )
}

fn step(
    cnn: &mut Cnn,
    opt: &mut Adam<f32>,
    x: &Images<f32, Cpu>,
    y: &Matrix<f32, Cpu>,
    path: Path,
) -> Phases {
    let t0 = Instant::now();
    let grads = cnn.try_alloc_grads().unwrap();
    let out = cnn.forward(x.clone().traced(grads), path);
    let loss = cross_entropy_with_logits_loss(out, y.clone());
    let t1 = Instant::now();
    let mut grads = loss.backward();
    let t2 = Instant::now();
    opt.update(cnn, &mut grads).unwrap();
    let t3 = Instant::now();
    [t1 - t0, t2 - t1, t3 - t2]
}

/// The PyTorch CNN step in a child process, one step per request.
struct Torch {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Torch {
    fn spawn() -> Option<(Self, String)> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/torch_step.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg("--serve-cnn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| println!("PyTorch case skipped: cannot run python3 ({e})\n"))
            .ok()?;
        let stdin = child.stdin.take()?;
        let mut stdout = BufReader::new(child.stdout.take()?);
        let mut line = String::new();
        stdout.read_line(&mut line).ok()?;
        if !line.starts_with("ready") {
            println!("PyTorch case skipped: {}\n", line.trim());
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        let version = line.trim().trim_start_matches("ready ").to_string();
        Some((
            Self {
                child,
                stdin,
                stdout,
            },
            version,
        ))
    }

    /// Sends one request, returns the numbers of the answer.
    fn ask(&mut self, request: &str, numbers: usize) -> Vec<f64> {
        writeln!(self.stdin, "{request}").expect("the PyTorch child takes requests");
        self.stdin
            .flush()
            .expect("the PyTorch child takes requests");
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("the PyTorch child answers");
        let t: Vec<f64> = line
            .split_whitespace()
            .map(|s| s.parse().expect("times in seconds"))
            .collect();
        assert_eq!(t.len(), numbers, "the PyTorch child answered {line:?}");
        t
    }

    fn step(&mut self) -> Phases {
        let t = self.ask("step", 3);
        [0, 1, 2].map(|i| Duration::from_secs_f64(t[i]))
    }

    /// `(wall, cpu)` seconds per step over `n` steps back to back.
    fn cpu_steps(&mut self, n: usize) -> (f64, f64) {
        let t = self.ask(&format!("cpu {n}"), 2);
        (t[0], t[1])
    }
}

impl Drop for Torch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn split_table(title: &str, rows: &[(&str, &RefCell<Vec<Phases>>)]) {
    println!("### {title}\n");
    println!("| case | forward (alloc grads + forward + loss) ms | backward ms | optimizer update ms | step ms (sum of medians) |");
    println!("|---|---:|---:|---:|---:|");
    for (name, log) in rows {
        let log = log.borrow();
        let med = |k: usize| {
            median(
                log[WARMUP..]
                    .iter()
                    .map(|p| p[k].as_secs_f64() * 1e3)
                    .collect(),
            )
        };
        let (f, b, u) = (med(0), med(1), med(2));
        println!("| {name} | {f:.3} | {b:.3} | {u:.3} | {:.3} |", f + b + u);
    }
    println!();
}

fn compare_with_torch(dev: &Cpu) {
    let (x, y) = data(dev);
    let mut ours = Cnn::new(dev);
    let mut traced = ours.clone();
    let (mut opt, mut topt) = (adam(), adam());
    let mut torch = Torch::spawn();
    let logs: Vec<RefCell<Vec<Phases>>> = (0..3).map(|_| RefCell::new(vec![])).collect();
    let names = [
        "PyTorch CNN + torch.optim.Adam (child process)",
        "dfdx-grow Conv2d CNN + optim::Adam, conv1 on Data(x)",
        "dfdx-grow Conv2d CNN + optim::Adam, x traced (its gradient computed)",
    ];
    let mut cases = Vec::new();
    let torch_version = torch.as_ref().map(|(_, v)| v.clone());
    if let Some((t, _)) = torch.as_mut() {
        cases.push(logged(names[0], &logs[0], move || t.step()));
    }
    cases.push(logged(names[1], &logs[1], || {
        step(&mut ours, &mut opt, &x, &y, Path::Data)
    }));
    cases.push(logged(names[2], &logs[2], || {
        step(&mut traced, &mut topt, &x, &y, Path::Traced)
    }));
    let s = compare(&mut cases, 0, WARMUP, reps(40));
    drop(cases);
    if let Some(v) = &torch_version {
        println!("PyTorch child: {v}\n");
    }
    table(
        "(a) CNN, one Adam step, batch 64 (f32)",
        &s[0].name.clone(),
        &s,
    );
    let rows: Vec<(&str, &RefCell<Vec<Phases>>)> = names
        .iter()
        .copied()
        .zip(logs.iter())
        .filter(|(_, l)| !l.borrow().is_empty())
        .collect();
    split_table("(b) CNN: where the step's time goes (medians)", &rows);

    // CPU time per step, each side running back to back (not interleaved): on a machine
    // shared with other jobs, wall times measure the load as much as the step.
    let n = reps(40) * 5;
    println!("### (c) CPU time per step, {n} steps back to back each (not interleaved)\n");
    println!("| case | wall ms/step | CPU ms/step | CPU ratio vs PyTorch |");
    println!("|---|---:|---:|---:|");
    let (w0, c0) = (Instant::now(), cpu_seconds());
    for _ in 0..n {
        step(&mut ours, &mut opt, &x, &y, Path::Data);
    }
    let wall = w0.elapsed().as_secs_f64() / n as f64;
    let ours_cpu = cpu_seconds().zip(c0).map(|(c1, c0)| (c1 - c0) / n as f64);
    let torch_cpu = torch.as_mut().map(|(t, _)| t.cpu_steps(n));
    let show = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{:.3}", v * 1e3));
    if let Some((tw, tc)) = torch_cpu {
        println!(
            "| {} | {:.3} | {:.3} | 1.00 |",
            names[0],
            tw * 1e3,
            tc * 1e3
        );
    }
    println!(
        "| {} | {:.3} | {} | {} |",
        names[1],
        wall * 1e3,
        show(ours_cpu),
        ours_cpu
            .zip(torch_cpu)
            .map_or("n/a".into(), |(o, (_, t))| format!("{:.2}", o / t))
    );
    println!();
}

fn adam() -> Adam<f32> {
    Adam::new(AdamConfig {
        lr: 1e-3,
        ..Default::default()
    })
    .unwrap()
}

/// The two routes of `Conv2d` (the `Cpu` one and the portable one) in the same CNN step. Run
/// after the PyTorch comparison: the portable route's large allocations change glibc's heap
/// thresholds for the rest of the process, which makes the other case's step cheaper than in
/// a process of its own.
fn compare_portable(dev: &Cpu) {
    let (x, y) = data(dev);
    let mut ours = Cnn::new(dev);
    let mut portable = ours.clone();
    let (mut opt, mut popt) = (adam(), adam());
    let names = [
        "dfdx-grow Conv2d CNN + optim::Adam (the Cpu route: batch-major im2col, one gemm product), x traced",
        "dfdx-grow Conv2d CNN, portable im2col (concat_along + gather), x traced",
    ];
    let mut cases = vec![
        part(names[0], || {
            step(&mut ours, &mut opt, &x, &y, Path::Traced).iter().sum()
        }),
        part(names[1], || {
            step(&mut portable, &mut popt, &x, &y, Path::Portable)
                .iter()
                .sum()
        }),
    ];
    let s = compare(&mut cases, 0, WARMUP, reps(40));
    table("(d) the two routes, one Adam step", names[0], &s);
}

/// This process's CPU time (user + system) in seconds, from `/proc/self/stat` (Linux; in
/// USER_HZ = 100 ticks per second).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// A conv's forward + backward (`loss = sum(y * r)`, input traced as inside a network),
/// against the same product on a ready-made im2col matrix: the difference is the im2col and
/// its backward.
fn anatomy(dev: &Cpu) {
    type Tp = OwnedTape<f32, Cpu>;
    let cnn = Cnn::new(dev);
    let x1: Images<f32, Cpu> = dev.sample_uniform_like(&(B, 1, 28, 28));
    let x2: Images<f32, Cpu> = dev.sample_uniform_like(&(B, 8, 26, 26));
    let layers = [
        (&cnn.c1, &x1, "conv1 1->8 3x3, 28x28"),
        (&cnn.c2, &x2, "conv2 8->16 3x3/2, 26x26"),
    ];
    let mut cases: Vec<Case<'_>> = Vec::new();
    for (conv, x, name) in layers {
        let (b, c, h, w) = *x.shape();
        let (oh, ow) = conv.output_size(h, w).unwrap();
        let o = conv.out_channels();
        let r: Images<f32, Cpu> = dev.sample_uniform_like(&(b, o, oh, ow));
        // The portable route's im2col layout: per image, (c * 3 * 3 + 1 ones row, oh * ow),
        // multiplied image by image by dfdx's batched matmul.
        let cols: Tensor<(usize, usize, usize), f32, Cpu> =
            dev.sample_uniform_like(&(b, c * 9 + 1, oh * ow));
        let (r1, r2) = (r.clone(), r.clone());
        cases.push(whole(&format!("{name}: forward + backward"), move || {
            let grads = conv.try_alloc_grads().unwrap();
            let y = conv.forward(x.clone().traced(grads));
            let _ = (y * r1.clone()).sum().backward();
        }));
        if c == 1 {
            let r0 = r.clone();
            cases.push(whole(
                &format!("{name}: forward + backward on Data(x)"),
                move || {
                    let grads = conv.try_alloc_grads().unwrap();
                    let y = conv.forward(Data(x.clone().traced(grads)));
                    let _ = (y * r0.clone()).sum().backward();
                },
            ));
        }
        cases.push(whole(
            &format!("{name}: forward only (untraced)"),
            move || {
                let _ = conv.forward(x.clone());
            },
        ));
        cases.push(whole(
            &format!(
                "{name}: dfdx's per-image product alone (the portable route's), forward + backward"
            ),
            move || {
                let grads = conv.try_alloc_grads().unwrap();
                let bias = conv.bias().retaped::<Tp>().reshape_like(&(o, 1));
                let wb = (conv.weight().retaped::<Tp>(), bias).concat_along(Axis::<1>);
                let y = wb
                    .broadcast_like::<_, Axis<0>>(&(b, o, c * 9 + 1))
                    .matmul(cols.clone().traced(grads))
                    .reshape_like(&(b, o, oh, ow));
                let _ = (y * r2.clone()).sum().backward();
            },
        ));
    }
    let s = compare(&mut cases, 0, WARMUP, reps(40));
    table(
        "(e) one convolution at a time (f32, batch 64)",
        &s[0].name.clone(),
        &s,
    );
}

fn main() {
    header("conv: one Adam step of a small CNN, batch 64, cross-entropy, f32");
    let dev = Cpu::default();
    compare_with_torch(&dev);
    compare_portable(&dev);
    anatomy(&dev);
}
