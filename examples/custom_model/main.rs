//! A model of your own, grown by the controller from a RON file.
//!
//! ```text
//! cargo run --release --example custom_model
//! ```
//!
//! The model (model.rs) is a trunk of a layer type of its own, `Scaled` (`y = (x W^T) * g`,
//! implementing `Expandable`), read by two heads on the embedded digits: the digit (10
//! classes) and its parity (2 classes). It tells the controller its one growth site, the
//! trunk, with its two consumers; the controller grows it when the policy in
//! `examples/custom_model.ron` decides, checks the probe loss, and writes every growth to
//! `target/custom_model/audit.jsonl`.

mod model;

use std::path::Path;
use std::process::ExitCode;

use dfdx_grow::audit::{summary_table, AuditLog};
use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::health::Activity;
use dfdx_grow::optim::{Adam, AdamConfig, Optimizer};
use dfdx_grow::policy::{load_policy, Metrics};
use dfdx_grow::rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use dfdx_grow::{GrowthController, HealthAction, HealthCheck, LossProbe, Matrix, Outcome, Params};
use dfdx_grow_data::{digits::digits, stratified_split, Dataset};
use model::TwoHeads;

/// Rows `idx` of `ds`: the images, the one-hot digits and the one-hot parities.
fn batch(
    dev: &Cpu,
    ds: &Dataset,
    idx: &[usize],
) -> (Matrix<f32, Cpu>, Matrix<f32, Cpu>, Matrix<f32, Cpu>) {
    let (x, y) = ds.batch::<f32, Cpu>(dev, idx);
    let mut parity = vec![0.0f32; idx.len() * 2];
    for (r, &i) in idx.iter().enumerate() {
        parity[r * 2 + usize::from(ds.labels[i] % 2)] = 1.0;
    }
    (x, y, dev.tensor_from_vec(parity, (idx.len(), 2)))
}

/// The sum of both heads' cross-entropies.
fn loss<T: Tape<f32, Cpu>>(
    m: &TwoHeads<f32>,
    x: Tensor<(usize, usize), f32, Cpu, T>,
    y: &Matrix<f32, Cpu>,
    p: &Matrix<f32, Cpu>,
) -> Tensor<(), f32, Cpu, T> {
    let (digit, parity) = m.forward(x);
    cross_entropy_with_logits_loss(digit, y.clone())
        + cross_entropy_with_logits_loss(parity, p.clone())
}

/// The validation set as the controller's probe: the loss it checks growths against, and
/// which trunk units are active on which images (for the health checks).
struct ValProbe {
    x: Matrix<f32, Cpu>,
    y: Matrix<f32, Cpu>,
    parity: Matrix<f32, Cpu>,
}

impl LossProbe<TwoHeads<f32>> for ValProbe {
    fn loss(&self, m: &TwoHeads<f32>) -> f64 {
        f64::from(loss(m, self.x.clone(), &self.y, &self.parity).as_vec()[0])
    }

    fn activity(&self, m: &TwoHeads<f32>, site: &str) -> Option<Activity> {
        let pre = (site == "trunk").then(|| m.trunk.forward(self.x.clone()).as_vec())?;
        Activity::from_pre_activations(&pre, m.trunk.weight.shape().0, |z| z > 0.0).ok()
    }
}

fn run() -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = root.join("target/custom_model");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let dev = Cpu::default();
    let split = stratified_split(&digits().map_err(|e| e.to_string())?, 0.2, 0)
        .map_err(|e| e.to_string())?;
    let mut rng = StdRng::seed_from_u64(0);
    let mut model = TwoHeads::<f32>::new(64, 8, 10, 2, &mut rng);
    let mut opt = Adam::<f32>::new(AdamConfig::default()).map_err(|e| e.to_string())?;

    let policy_file = root.join("examples/custom_model.ron");
    let policy = load_policy(&policy_file).map_err(|e| e.to_string())?;
    let log_path = out.join("audit.jsonl");
    // A fresh log for each run (the log itself only ever appends).
    let _ = std::fs::remove_file(&log_path);
    let log = AuditLog::open(&log_path).map_err(|e| e.to_string())?;
    let health = HealthCheck {
        after_steps: 200,
        dead_share: 0.5,
        action: HealthAction::Report,
    };
    let mut ctl = GrowthController::new(policy, 0)
        .with_audit(log)
        .with_health(health)
        .map_err(|e| e.to_string())?;

    // The probe: the validation set (a closure `|m| loss` would do for the loss alone).
    let val: Vec<usize> = (0..split.val.len()).collect();
    let (x, y, parity) = batch(&dev, &split.val, &val);
    let probe = ValProbe { x, y, parity };

    let mut order: Vec<usize> = (0..split.train.len()).collect();
    let (mut cursor, mut epochs) = (order.len(), 0);
    for step in 1..=3000u64 {
        if cursor + 64 > order.len() {
            order.shuffle(&mut rng);
            cursor = 0;
            if step > 1 {
                epochs += 1;
            }
        }
        let (x, y, p) = batch(&dev, &split.train, &order[cursor..cursor + 64]);
        cursor += 64;
        let grads = model.try_alloc_grads().map_err(|e| e.to_string())?;
        let l = loss(&model, x.traced(grads), &y, &p);
        let train_loss = f64::from(l.as_vec()[0]);
        let mut grads = l.backward();
        opt.update(&mut model, &mut grads)
            .map_err(|e| e.to_string())?;

        let val_loss = step.is_multiple_of(50).then(|| probe.loss(&model));
        let m = Metrics::of(&model)
            .step(step)
            .epoch(epochs)
            .train_loss(train_loss)
            .val_loss(val_loss)
            .grads(&mut grads)
            .build()
            .map_err(|e| e.to_string())?;
        match ctl
            .observe(&m, &mut model, &mut opt, Some(&probe))
            .map_err(|e| e.to_string())?
        {
            Outcome::Grown(events) => {
                for e in events {
                    println!(
                        "step {step}: {} grew {} -> {} ({})",
                        e.site, e.old_width, e.new_width, e.reason
                    );
                }
            }
            Outcome::Refused(r) | Outcome::Undone(r) => println!("step {step}: {}", r.why),
            Outcome::Idle => {}
        }
        if step.is_multiple_of(500) {
            println!(
                "step {step}: val loss {:.4}, trunk {} units",
                probe.loss(&model),
                model.trunk.weight.shape().0
            );
        }
    }
    ctl.flush().map_err(|e| e.to_string())?;
    let records = AuditLog::read(&log_path).map_err(|e| e.to_string())?;
    println!("\n{}", summary_table(&records));
    println!("audit log: {}", log_path.display());
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
