//! What the gradient-informed inits cost and do at Fashion-MNIST's sizes (784 inputs, 10
//! classes), on random data with random labels, where no new unit can help on new examples:
//!
//! ```text
//! cargo run --release --example informed_inits
//! ```
//!
//! For each init it prints the wall time of the statistics and of the growth (decompositions
//! and line search), the FLOPs the report counts (against one Adam training step at batch
//! 128), and the loss before and after on the statistics batch and on a held-out batch, with
//! TINY's line search first on the statistics batch, then on the held-out one
//! ([`dfdx_grow::informed::SplitProbe`]).

use std::time::Instant;

use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::flops::{train_step, ADAM_UPDATE_FLOPS};
use dfdx_grow::rand::{rngs::StdRng, Rng, SeedableRng};
use dfdx_grow::{grow_site_informed, Activation, Init, Loss, LossProbe, Mlp, Probe};

fn batch(dev: &Cpu, n: usize, rng: &mut StdRng) -> Probe<f32, Cpu> {
    let x: Vec<f32> = (0..n * 784).map(|_| rng.gen_range(0.0..1.0)).collect();
    let mut y = vec![0f32; n * 10];
    for i in 0..n {
        y[i * 10 + rng.gen_range(0..10)] = 1.0;
    }
    Probe {
        input: dev.tensor_from_vec(x, (n, 784)),
        target: Some((dev.tensor_from_vec(y, (n, 10)), Loss::CrossEntropy)),
    }
}

fn main() {
    let dev = Cpu::default();
    let mut rng = StdRng::seed_from_u64(0);
    let inits = [
        Init::GradMax {
            scale: 0.5,
            epsilon: 0.01,
        },
        Init::Tiny {
            min_singular: 1e-3,
            gamma: None,
            project: true,
        },
        Init::Tiny {
            min_singular: 1e-3,
            gamma: None,
            project: false,
        },
    ];
    for (width, n) in [(256, 512), (1024, 512), (1024, 2048)] {
        let mlp = Mlp::<f32, Cpu>::new(&[784, width, 10], Activation::Relu, &dev, &mut rng);
        let (stats_batch, held) = (batch(&dev, n, &mut rng), batch(&dev, n, &mut rng));
        let (x, (y, loss)) = (&stats_batch.input, stats_batch.target.clone().unwrap());
        let t = Instant::now();
        let stats = mlp.site_statistics(0, x, &y, loss).unwrap();
        let stats_s = t.elapsed().as_secs_f64();
        let step = train_step(&mlp.widths(), 128, ADAM_UPDATE_FLOPS);
        println!("784-{width}-10, statistics on {n} examples: {stats_s:.3} s");
        for init in &inits {
            for (label, probe) in [("same batch", &stats_batch), ("held-out", &held)] {
                let mut m = mlp.clone();
                let t = Instant::now();
                let r =
                    grow_site_informed(&mut m, "hidden.0", 16, init, &stats, &mut rng, Some(probe));
                let grow_s = t.elapsed().as_secs_f64();
                match r {
                    Ok(r) => println!(
                        "  {init:?}, line search on the {label}: grow {grow_s:.3} s, informed {:?}, \
                         gamma {:?}, {:.2e} FLOPs (= {:.1} training steps); loss on the \
                         statistics batch {:.4} -> {:.4}, held-out {:.4} -> {:.4}",
                        r.informed,
                        r.gamma,
                        r.init_flops.unwrap_or(f64::NAN),
                        r.init_flops.unwrap_or(f64::NAN) / step,
                        stats_batch.loss(&mlp),
                        stats_batch.loss(&m),
                        held.loss(&mlp),
                        held.loss(&m),
                    ),
                    Err(e) => println!("  {init:?}: {e}"),
                }
                if matches!(init, Init::GradMax { .. }) {
                    break; // GradMax has no line search.
                }
            }
        }
    }
}
