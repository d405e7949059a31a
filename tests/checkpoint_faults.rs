//! Checkpoints under faults and hostile input (issue 10, items 1, 3, 8 and the "Files" rule):
//! non-finite weights round-trip bit for bit, a damaged file is always an error and never a
//! panic, restoring validates everything before it changes anything, and a checkpoint that
//! would not read back is never written over a good one.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use dfdx_grow::checkpoint::{Checkpoint, CheckpointError, SavedParam};
use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::optim::{Adam, AdamConfig, Momentum, Optimizer, Sgd, SgdConfig};
use dfdx_grow::policy::{policy_from_str, Metrics};
use dfdx_grow::{Activation, GrowthController, Init, Mlp, Params, Real};
use proptest::prelude::*;

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "dfdx-grow-ckpt-faults-{}-{name}.ckpt",
        std::process::id()
    ))
}

/// Every parameter's bits, in walk order (NaN payloads and the sign of zero included).
fn bits<E: Real + Bits>(model: &dyn Params<E, Cpu>) -> Vec<Vec<u64>>
where
    Cpu: Device<E>,
{
    snapshot(model)
        .iter()
        .map(|t| t.iter().map(|x| x.bits()).collect())
        .collect()
}

trait Bits {
    fn bits(&self) -> u64;
}
impl Bits for f32 {
    fn bits(&self) -> u64 {
        u64::from(self.to_bits())
    }
}
impl Bits for f64 {
    fn bits(&self) -> u64 {
        self.to_bits()
    }
}

/// Values no JSON number can hold, and a few that are easy to lose.
fn awkward<E: Real>(i: usize) -> E {
    let v = [
        f64::NAN,
        -f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        f64::MIN_POSITIVE,
        1e-310, // subnormal in f64, flushed to 0 in f32
        0.1,
    ];
    E::from_f64(v[i % v.len()]).unwrap()
}

/// A grown 3-4-2 model, one Adam step taken, every weight then made awkward.
fn awkward_model<E: Real>() -> (Mlp<E, Cpu>, Adam<E>)
where
    Cpu: Device<E>,
{
    let dev = Cpu::default();
    let mut rng = rng(11);
    let mut mlp = Mlp::<E, Cpu>::new(&[3, 4, 2], Activation::Relu, &dev, &mut rng);
    let mut opt = Adam::<E>::new(AdamConfig::default()).unwrap();
    let x = input::<E>(&dev, 4, 3, &mut rng);
    let y = one_hot::<E>(&dev, 4, 2, &mut rng);
    step(&mut mlp, &mut opt, &x, &y);
    mlp.expand_hidden(0, 2, &Init::ZerosOut, &mut rng).unwrap();
    step(&mut mlp, &mut opt, &x, &y);
    let mut n = 0;
    mlp.visit_mut(&mut |_, mut p| {
        let v: Vec<E> = (0..p.as_ref().len())
            .map(|_| {
                n += 1;
                awkward(n)
            })
            .collect();
        p.copy_from(&v);
    });
    // One more step spreads the NaNs into the optimizer's moments.
    step(&mut mlp, &mut opt, &x, &y);
    mlp.visit_mut(&mut |_, mut p| {
        let v: Vec<E> = (0..p.as_ref().len())
            .map(|_| {
                n += 1;
                awkward(n)
            })
            .collect();
        p.copy_from(&v);
    });
    (mlp, opt)
}

fn non_finite_weights_round_trip<E: Real + Bits>()
where
    Cpu: Device<E>,
{
    let dev = Cpu::default();
    let path = temp(&format!("nan-{}", std::any::type_name::<E>()));
    // A good checkpoint first: the NaN one is saved over it.
    let good = Mlp::<E, Cpu>::new(&[3, 4, 2], Activation::Relu, &dev, &mut rng(1));
    Checkpoint::of(&good).save(&path).unwrap();
    let (mlp, opt) = awkward_model::<E>();
    Checkpoint::of(&mlp)
        .with_optimizer(opt.save_state())
        .save(&path)
        .unwrap();
    let ckpt = Checkpoint::load(&path).expect("a checkpoint with NaN weights loads back");
    let loaded: Mlp<E, Cpu> = ckpt.to_mlp(&dev).unwrap();
    assert_eq!(bits(&loaded), bits(&mlp));
    let mut opt2 = Adam::<E>::new(AdamConfig::default()).unwrap();
    ckpt.restore_optimizer(&mut opt2, &loaded).unwrap();
    let state_bits = |o: &Adam<E>| -> Vec<Vec<u64>> {
        o.state()
            .tensors
            .iter()
            .flat_map(|t| t.buffers.iter().map(|b| b.iter().map(Bits::bits).collect()))
            .collect()
    };
    assert!(
        opt.state()
            .tensors
            .iter()
            .any(|t| t.buffers.iter().any(|b| b.iter().any(|x| x.is_nan()))),
        "the test means to save NaN moments"
    );
    assert_eq!(state_bits(&opt2), state_bits(&opt));
    assert_eq!(
        Optimizer::<E, Cpu>::steps(&opt2),
        Optimizer::<E, Cpu>::steps(&opt)
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn nan_and_infinite_weights_and_moments_save_over_a_good_file_and_load_back_bit_for_bit_f32() {
    non_finite_weights_round_trip::<f32>();
}

#[test]
fn nan_and_infinite_weights_and_moments_save_over_a_good_file_and_load_back_bit_for_bit_f64() {
    non_finite_weights_round_trip::<f64>();
}

const SCHEDULE: &str = "Schedule(events: [(at: Step(2), target: Layer(0), size: Fixed(3))])";

/// A checkpoint with everything in it: a grown model, SGD-momentum or Adam state, and a
/// controller's state with one growth event.
fn full_checkpoint() -> (Checkpoint, Mlp<f64, Cpu>, Adam<f64>) {
    let dev = Cpu::default();
    let mut rng = rng(5);
    let mut mlp = Mlp::<f64, Cpu>::new(&[3, 4, 2], Activation::Tanh, &dev, &mut rng);
    let mut opt = Adam::<f64>::new(AdamConfig::default()).unwrap();
    let x = input::<f64>(&dev, 6, 3, &mut rng);
    let y = one_hot::<f64>(&dev, 6, 2, &mut rng);
    let policy = policy_from_str(SCHEDULE, "inline").unwrap();
    let mut ctl = GrowthController::new(policy, 3);
    for s in 1..=3 {
        step(&mut mlp, &mut opt, &x, &y);
        let m = Metrics::of(&mlp).step(s).train_loss(1.0).build().unwrap();
        ctl.observe(&m, &mut mlp, &mut opt, None).unwrap();
    }
    step(&mut mlp, &mut opt, &x, &y);
    assert_eq!(mlp.widths(), vec![3, 7, 2]);
    let ckpt = Checkpoint::of(&mlp)
        .with_optimizer(opt.save_state())
        .with_controller(ctl.state());
    (ckpt, mlp, opt)
}

fn file_bytes(c: &Checkpoint) -> Vec<u8> {
    let path = temp(&format!("bytes-{:?}", std::thread::current().id()));
    c.save(&path).unwrap();
    let b = std::fs::read(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    b
}

/// Splits a file into its header (as JSON) and payload, if it has a JSON header line.
fn try_split(bytes: &[u8]) -> Option<(serde_json::Value, Vec<u8>)> {
    let nl = bytes.iter().position(|&b| b == b'\n')?;
    Some((
        serde_json::from_slice(&bytes[..nl]).ok()?,
        bytes[nl + 1..].to_vec(),
    ))
}

fn split(bytes: &[u8]) -> (serde_json::Value, Vec<u8>) {
    try_split(bytes).expect("a header line")
}

/// A file of `payload` under a header with its true length and checksum.
fn with_valid_header(payload: &[u8]) -> Vec<u8> {
    let header = serde_json::json!({
        "format": "dfdx-grow checkpoint",
        "version": dfdx_grow::checkpoint::FORMAT_VERSION,
        "bytes": payload.len(),
        "crc32": crc32fast_like(payload),
    });
    let mut out = serde_json::to_vec(&header).unwrap();
    out.push(b'\n');
    out.extend_from_slice(payload);
    out
}

/// CRC-32 (IEEE), the checksum the header holds.
fn crc32fast_like(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `from_bytes` and `load` (through a file) agree; returns the result.
fn parse_both(bytes: &[u8], tag: u64) -> Result<Checkpoint, String> {
    let direct = Checkpoint::from_bytes(bytes);
    let path = temp(&format!("fuzz-{tag}-{:?}", std::thread::current().id()));
    std::fs::write(&path, bytes).unwrap();
    let loaded = Checkpoint::load(&path);
    let _ = std::fs::remove_file(&path);
    match (&direct, &loaded) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(CheckpointError::Format { .. })) => {}
        other => panic!("from_bytes and load disagree: {other:?}"),
    }
    direct
}

#[derive(Clone, Debug)]
enum Damage {
    Flip {
        at: usize,
        mask: u8,
    },
    Truncate {
        at: usize,
    },
    Append(Vec<u8>),
    Header {
        field: usize,
        value: serde_json::Value,
    },
}

fn damage() -> impl Strategy<Value = Damage> {
    let json_value = prop_oneof![
        any::<u64>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        Just(serde_json::json!(u64::MAX)),
        Just(serde_json::json!(-1)),
        Just(serde_json::json!(1.5)),
        Just(serde_json::json!("dfdx-grow checkpoint")),
        "[a-z ]{0,20}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::Null),
    ];
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Damage::Flip { at, mask }),
        any::<usize>().prop_map(|at| Damage::Truncate { at }),
        prop::collection::vec(any::<u8>(), 1..64).prop_map(Damage::Append),
        (0usize..4, json_value).prop_map(|(field, value)| Damage::Header { field, value }),
    ]
}

fn apply(bytes: &[u8], d: &Damage) -> Vec<u8> {
    let mut b = bytes.to_vec();
    if b.is_empty() && matches!(d, Damage::Flip { .. } | Damage::Truncate { .. }) {
        // An earlier truncation left nothing to flip or cut.
        return b;
    }
    match d {
        Damage::Flip { at, mask } => {
            let i = at % b.len();
            b[i] ^= mask;
        }
        Damage::Truncate { at } => b.truncate(at % b.len()),
        Damage::Append(tail) => b.extend_from_slice(tail),
        Damage::Header { field, value } => {
            // A header already damaged past parsing stays as it is.
            let Some((mut header, payload)) = try_split(bytes) else {
                return b;
            };
            if !header.is_object() {
                return b;
            }
            let name = ["format", "version", "bytes", "crc32"][*field];
            header[name] = value.clone();
            b = serde_json::to_vec(&header).unwrap();
            b.push(b'\n');
            b.extend_from_slice(&payload);
        }
    }
    b
}

/// Every leaf of a JSON value, as a JSON pointer.
fn leaves(v: &serde_json::Value, at: String, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                leaves(x, format!("{at}/{k}"), out);
            }
            out.push(at);
        }
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                leaves(x, format!("{at}/{i}"), out);
            }
            out.push(at);
        }
        _ => out.push(at),
    }
}

/// Fields that size or index something.
const SIZING: &[&str] = &[
    "/sites/0/1",
    "/blocks",
    "/model/widths/0",
    "/model/widths/1",
    "/model/widths/2",
    "/model/max_width",
    "/tensors/0/dims/0",
    "/tensors/0/dims/1",
    "/tensors/3/dims/0",
    "/optimizer/steps",
    "/optimizer/lr",
    "/optimizer/tensors/0/rows/0/born",
    "/optimizer/tensors/0/rows/1/start",
    "/optimizer/tensors/0/cols/0/start",
    "/optimizer/tensors/1/dims/0",
    "/controller/seed",
    "/controller/events/0/new_width",
    "/controller/events/0/old_width",
    "/controller/policy/fired",
    "/controller/policy/growths",
];

fn hostile_value() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::json!(0)),
        Just(serde_json::json!(1)),
        Just(serde_json::json!(7)),
        Just(serde_json::json!(1u64 << 20)),
        Just(serde_json::json!(1u64 << 32)),
        Just(serde_json::json!(u64::MAX)),
        Just(serde_json::json!(usize::MAX / 2 + 1)),
        Just(serde_json::json!(-1)),
        Just(serde_json::json!(1e300)),
        Just(serde_json::json!("AAAAAAAAAAA=")),
        Just(serde_json::json!("not base64")),
        Just(serde_json::json!("hidden.0")),
        Just(serde_json::json!([])),
        Just(serde_json::json!([0, 0])),
        Just(serde_json::json!([1048576, 1])),
        Just(serde_json::json!({})),
        Just(serde_json::Value::Null),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, .. ProptestConfig::default() })]

    /// Byte flips, truncations, appended garbage and header edits: never a panic; an error
    /// unless the bytes are the original ones, which load as the same checkpoint.
    #[test]
    fn damaged_checkpoint_files_are_errors_never_panics(damages in prop::collection::vec(damage(), 1..4), tag in any::<u64>()) {
        let (ckpt, _, _) = full_checkpoint();
        let good = file_bytes(&ckpt);
        let mut bytes = good.clone();
        for d in &damages {
            bytes = apply(&bytes, d);
        }
        match parse_both(&bytes, tag) {
            // Only the header's spelling may differ (its fields re-serialised in another
            // order): the payload must be the one saved.
            Ok(c) => {
                prop_assert_eq!(c, ckpt);
                prop_assert_eq!(split(&bytes).1, split(&good).1);
            }
            Err(_) => prop_assert!(bytes != good),
        }
    }

    /// A payload edited behind a valid checksum (what a hand-edited or hostile file is):
    /// loading, building and restoring never panic nor allocate without bound, and a failed
    /// restore changes nothing.
    #[test]
    fn hostile_payloads_with_a_valid_checksum_never_panic_and_fail_cleanly(picks in prop::collection::vec((any::<prop::sample::Index>(), hostile_value()), 1..4), tag in any::<u64>()) {
        let (ckpt, mlp, _) = full_checkpoint();
        let (_, payload) = split(&file_bytes(&ckpt));
        let mut v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        for (idx, value) in &picks {
            // Half the edits hit a field that sizes or indexes something, half any leaf.
            let mut paths: Vec<String> = Vec::new();
            if idx.index(2) == 0 {
                paths.extend(SIZING.iter().map(|p| p.to_string()));
            } else {
                leaves(&v, String::new(), &mut paths);
            }
            let p = idx.get(&paths).clone();
            if p.is_empty() {
                v = value.clone();
            } else if let Some(slot) = v.pointer_mut(&p) {
                *slot = value.clone();
            }
        }
        let bytes = with_valid_header(v.to_string().as_bytes());
        let Ok(loaded) = parse_both(&bytes, tag) else { return Ok(()) };
        let dev = Cpu::default();
        let _ = loaded.to_mlp::<f64, Cpu>(&dev);
        // Into a model built as the saved one started, and into the saved model itself.
        for mut target in [Mlp::<f64, Cpu>::new(&[3, 4, 2], Activation::Tanh, &dev, &mut rng(0)), mlp.clone()] {
            let before = bits(&target);
            if loaded.restore(&mut target).is_err() {
                prop_assert_eq!(bits(&target), before);
                continue;
            }
            let mut o = Adam::<f64>::new(AdamConfig::default()).unwrap();
            let o_before = o.state().clone();
            if loaded.restore_optimizer(&mut o, &target).is_err() {
                prop_assert_eq!(o.state(), &o_before);
            }
        }
        if let Some(state) = &loaded.controller {
            let mut ctl = GrowthController::new(policy_from_str(SCHEDULE, "inline").unwrap(), 3);
            let before = ctl.state();
            if ctl.restore(state).is_err() {
                prop_assert_eq!(ctl.state(), before);
            }
        }
    }
}

#[test]
fn an_untouched_file_loads_as_the_checkpoint_saved() {
    let (ckpt, _, _) = full_checkpoint();
    assert_eq!(parse_both(&file_bytes(&ckpt), 0).unwrap(), ckpt);
}

/// Restores `saved` into `opt` and checks it is refused with `why` and changes nothing.
fn refused_unchanged<O: Optimizer<f64, Cpu> + PartialEqState>(
    ckpt: &Checkpoint,
    opt: &mut O,
    model: &Mlp<f64, Cpu>,
    why: &str,
) {
    let before = opt.snapshot();
    let e = ckpt
        .restore_optimizer(opt, model)
        .expect_err("must be refused");
    assert!(matches!(e, CheckpointError::Mismatch(_)), "{e:?}");
    assert!(e.to_string().contains(why), "expected {why:?} in {e}");
    assert_eq!(
        opt.snapshot(),
        before,
        "a refused restore changed the state"
    );
}

/// What an optimizer holds (state, hyper-parameters, step count), for before/after
/// comparisons.
trait PartialEqState {
    fn snapshot(&self) -> String;
}
impl<K: dfdx_grow::optim::Kernel> PartialEqState for dfdx_grow::optim::GrowingOptimizer<K, f64> {
    fn snapshot(&self) -> String {
        let steps = Optimizer::<f64, Cpu>::steps(self);
        format!("{:?} {:?} {steps}", self.state(), self.config())
    }
}

#[test]
fn optimizer_state_is_validated_whole_before_the_optimizer_changes() {
    let (ckpt, mlp, adam) = full_checkpoint();
    let dev = Cpu::default();
    let mut rng = rng(8);
    let x = input::<f64>(&dev, 6, 3, &mut rng);
    let y = one_hot::<f64>(&dev, 6, 2, &mut rng);
    // A trained Adam to restore into: its state must survive every refusal.
    let mut victim_model = mlp.clone();
    let mut victim = Adam::<f64>::new(AdamConfig::default()).unwrap();
    step(&mut victim_model, &mut victim, &x, &y);

    // SGD (momentum) state into Adam, and Adam state into SGD.
    let mut sgd_model = mlp.clone();
    let mut sgd = Sgd::<f64>::new(SgdConfig {
        momentum: Some(Momentum::Classic(0.9)),
        ..Default::default()
    })
    .unwrap();
    step(&mut sgd_model, &mut sgd, &x, &y);
    let sgd_ckpt = Checkpoint::of(&sgd_model).with_optimizer(sgd.save_state());
    refused_unchanged(&sgd_ckpt, &mut victim, &mlp, "\"sgd\"");
    refused_unchanged(&ckpt, &mut sgd, &mlp, "\"adam\"");

    // An Adam cohort that starts past its tensor.
    let mut past = ckpt.clone();
    let st = past.optimizer.as_mut().unwrap();
    st.tensors[0].rows.push(dfdx_grow::optim::Cohort {
        start: 1000,
        born: 1,
        eps: None,
    });
    refused_unchanged(&past, &mut victim, &mlp, "cohort starts at 1000");
    assert!(
        Checkpoint::from_bytes(&with_valid_header(
            serde_json::to_string(&past).unwrap().as_bytes()
        ))
        .unwrap_err()
        .contains("cohort starts at 1000"),
        "the file check refuses it too"
    );

    // A cohort born after the optimizer's last step, and buffers of the wrong length.
    let mut late = ckpt.clone();
    late.optimizer.as_mut().unwrap().tensors[1].rows[0].born = 99;
    refused_unchanged(&late, &mut victim, &mlp, "born at step 99");
    let mut nan_eps = ckpt.clone();
    nan_eps.optimizer.as_mut().unwrap().tensors[0].rows[0].eps = Some(f64::NAN);
    refused_unchanged(&nan_eps, &mut victim, &mlp, "epsilon");
    let mut short = ckpt.clone();
    short.optimizer.as_mut().unwrap().tensors[2].buffers[1].pop();
    refused_unchanged(&short, &mut victim, &mlp, "buffer of");

    // A smaller model's state is not padded as if the model had grown.
    let small = Mlp::<f64, Cpu>::new(&[3, 4, 2], Activation::Tanh, &dev, &mut rng);
    let mut small_opt = Adam::<f64>::new(AdamConfig::default()).unwrap();
    let mut small_m = small.clone();
    step(&mut small_m, &mut small_opt, &x, &y);
    let mut smaller = ckpt.clone();
    smaller.optimizer = Some(small_opt.save_state());
    refused_unchanged(&smaller, &mut victim, &mlp, "layers.0.weight");

    // Dims whose element count overflows.
    let mut huge = ckpt.clone();
    huge.optimizer.as_mut().unwrap().tensors[0].dims = (1 << 32, 1 << 32);
    refused_unchanged(&huge, &mut victim, &mlp, "layers.0.weight");

    // A NaN learning rate.
    let mut nan_lr = ckpt.clone();
    nan_lr.optimizer.as_mut().unwrap().lr = f64::NAN;
    refused_unchanged(&nan_lr, &mut victim, &mlp, "lr");

    // And the untouched state restores and trains on exactly like the original.
    let mut fresh = Adam::<f64>::new(AdamConfig::default()).unwrap();
    ckpt.restore_optimizer(&mut fresh, &mlp).unwrap();
    assert_eq!(fresh.state(), adam.state());
}

#[test]
fn model_restore_validates_every_tensor_and_changes_nothing_on_error() {
    let (ckpt, mlp, _) = full_checkpoint();
    let dev = Cpu::default();
    let fresh = || Mlp::<f64, Cpu>::new(&[3, 4, 2], Activation::Tanh, &dev, &mut rng(0));
    type Edit = Box<dyn Fn(&mut Checkpoint)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "overflowing dims",
            Box::new(|c| c.tensors[0].dims = (1 << 32, 1 << 32)),
            "layers.0.weight",
        ),
        (
            "a tensor renamed",
            Box::new(|c| c.tensors[1].name = "layers.0.bias2".into()),
            "layers.0.bias",
        ),
        (
            "a tensor missing",
            Box::new(|c| {
                c.tensors.pop();
            }),
            "layers.1.bias",
        ),
        (
            "a site the model lacks",
            Box::new(|c| c.sites.push(("hidden.7".into(), 3))),
            "hidden.7",
        ),
        (
            "a site narrower than the model's",
            Box::new(|c| c.sites[0].1 = 2),
            "hidden.0",
        ),
    ];
    for (what, edit, why) in cases {
        let mut c = ckpt.clone();
        edit(&mut c);
        let mut target = fresh();
        let before = bits(&target);
        let e = c.restore(&mut target).expect_err(what);
        assert!(matches!(e, CheckpointError::Mismatch(_)), "{what}: {e:?}");
        assert!(
            e.to_string().contains(why),
            "{what}: expected {why:?} in {e}"
        );
        assert_eq!(bits(&target), before, "{what}: the model changed");
        assert_eq!(target.widths(), vec![3, 4, 2], "{what}");
    }
    let mut target = fresh();
    ckpt.restore(&mut target).unwrap();
    assert_eq!(bits(&target), bits(&mlp));
}

#[test]
fn overflowing_dims_in_a_file_are_a_format_error_not_a_panic() {
    let (ckpt, _, _) = full_checkpoint();
    for edit in [
        |c: &mut Checkpoint| c.tensors[0].dims = (1 << 32, 1 << 32),
        |c: &mut Checkpoint| c.tensors[0].dims = (usize::MAX, 2),
        |c: &mut Checkpoint| c.optimizer.as_mut().unwrap().tensors[0].dims = (1 << 32, 1 << 32),
        |c: &mut Checkpoint| {
            let t = &mut c.optimizer.as_mut().unwrap().tensors[0];
            t.cols.push(dfdx_grow::optim::Cohort {
                start: usize::MAX,
                born: 0,
                eps: None,
            });
        },
    ] {
        let mut c = ckpt.clone();
        edit(&mut c);
        let bytes = with_valid_header(serde_json::to_string(&c).unwrap().as_bytes());
        assert!(Checkpoint::from_bytes(&bytes).is_err());
    }
}

#[test]
fn a_checkpoint_that_would_not_read_back_is_refused_and_the_good_file_kept() {
    let (ckpt, _, _) = full_checkpoint();
    let path = temp("unreadable");
    ckpt.save(&path).unwrap();
    let good = std::fs::read(&path).unwrap();
    let mut twice = ckpt.clone();
    twice.tensors.push(SavedParam {
        name: twice.tensors[0].name.clone(),
        ..twice.tensors[0].clone()
    });
    let mut other_state = ckpt.clone();
    other_state.optimizer.as_mut().unwrap().tensors.pop();
    let mut short = ckpt.clone();
    short.tensors[0].values.pop();
    for (what, bad) in [
        ("a tensor named twice", twice),
        ("optimizer state of another model", other_state),
        ("a tensor short of values", short),
    ] {
        let e = bad.save(&path).expect_err(what);
        assert!(
            matches!(e, CheckpointError::NotSaved { .. }),
            "{what}: {e:?}"
        );
        assert!(e.to_string().contains("would not load"), "{what}: {e}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            good,
            "{what}: the good file was replaced"
        );
    }
    assert_eq!(Checkpoint::load(&path).unwrap(), ckpt);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn restoring_into_a_model_with_another_width_cap_or_activation_is_a_mismatch() {
    let dev = Cpu::default();
    let saved =
        Mlp::<f64, Cpu>::new(&[3, 4, 2], Activation::Relu, &dev, &mut rng(2)).with_max_width(6);
    let ckpt = Checkpoint::of(&saved);
    assert_eq!(ckpt.to_mlp::<f64, Cpu>(&dev).unwrap().max_width(), 6);
    for (what, mut target) in [
        (
            "default cap",
            Mlp::<f64, Cpu>::new(&[3, 4, 2], Activation::Relu, &dev, &mut rng(3)),
        ),
        (
            "other activation",
            Mlp::<f64, Cpu>::new(&[3, 4, 2], Activation::Tanh, &dev, &mut rng(3)).with_max_width(6),
        ),
    ] {
        let before = bits(&target);
        let e = ckpt.restore(&mut target).expect_err(what);
        assert!(matches!(e, CheckpointError::Mismatch(_)), "{what}: {e:?}");
        assert_eq!(bits(&target), before, "{what}");
    }
    let mut same =
        Mlp::<f64, Cpu>::new(&[3, 4, 2], Activation::Relu, &dev, &mut rng(3)).with_max_width(6);
    ckpt.restore(&mut same).unwrap();
    assert_eq!(bits(&same), bits(&saved));
}

// --- Checks that need a bound on memory: run in a child process under `ulimit -v`. ---

const LIMITED_ENV: &str = "DFDX_GROW_CKPT_MEMORY_LIMITED";

/// Runs test `name` of this binary in a child limited to 4 GiB of address space: an attempt
/// to allocate the tens of GiB a lying checkpoint asks for aborts it.
fn run_limited(name: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -v 4194304 && exec "$0" "$@""#)
        .arg(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(LIMITED_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHILD-OK"),
        "{name} failed under the memory limit ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A checkpoint of a 3-2-2 model whose `edit` lies about its size; its tensors stay small.
fn lying(edit: impl Fn(&mut Checkpoint)) -> Checkpoint {
    let dev = Cpu::default();
    let m = Mlp::<f32, Cpu>::new(&[3, 2, 2], Activation::Relu, &dev, &mut rng(4));
    let mut c = Checkpoint::of(&m);
    edit(&mut c);
    // Through the file check, as a loaded checkpoint would be.
    Checkpoint::from_bytes(&with_valid_header(
        serde_json::to_string(&c).unwrap().as_bytes(),
    ))
    .expect("the lie is consistent on its face")
}

#[test]
fn child_lying_checkpoints_are_refused_without_allocating() {
    if std::env::var(LIMITED_ENV).is_err() {
        return;
    }
    let dev = Cpu::default();
    // A site 2^20 wide (the default cap) on a model with 2^16 inputs: growing it first would
    // allocate 2^36 floats.
    let wide_input = Mlp::<f32, Cpu>::new(&[1 << 16, 2, 2], Activation::Relu, &dev, &mut rng(5));
    let mut c = Checkpoint::of(&wide_input);
    c.sites[0].1 = 1 << 20;
    let mut target = wide_input.clone();
    let e = c
        .restore(&mut target)
        .expect_err("sites wider than the tensors");
    assert!(matches!(e, CheckpointError::Mismatch(_)), "{e:?}");
    assert_eq!(target.widths(), vec![1 << 16, 2, 2]);

    // A description of a 2^20-2^20-2 model over a 3-2-2 model's tensors.
    let c = lying(|c| {
        c.model["widths"] = serde_json::json!([1 << 20, 1 << 20, 2]);
    });
    let e = c
        .to_mlp::<f32, Cpu>(&dev)
        .expect_err("a description bigger than the tensors");
    assert!(matches!(e, CheckpointError::Mismatch(_)), "{e:?}");
    println!("CHILD-OK");
}

#[test]
fn lying_checkpoints_are_refused_before_anything_is_allocated() {
    run_limited("child_lying_checkpoints_are_refused_without_allocating");
}
