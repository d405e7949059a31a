//! Hostile policy files give clean errors naming the file and a position or field; mutated
//! valid files never panic the loader.

mod common;

use std::path::PathBuf;

use dfdx_grow::policy::{load_spec, Metrics, PolicyError, PolicySpec};
use proptest::prelude::*;

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name)
}

/// (file, a piece of the expected message).
const EXPECTED: &[(&str, &str)] = &[
    ("binary_garbage.ron", "not UTF-8"),
    ("confidence_above_one.ron", "Plateau.test.confidence"),
    ("deep_10000.ron", "nested too deeply"),
    ("deep_40.ron", "nested deeper than 32"),
    ("empty.ron", ":1:1:"),
    ("fraction_too_big.ron", "Plateau.size"),
    ("huge_float.ron", "Plateau.threshold.Rel"),
    ("huge_int_2_pow_70.ron", "patience"),
    ("k_zero.ron", "Schedule.events[0].size"),
    ("max_events_zero.ron", "Limits.max_events"),
    (
        "max_width_below_fixed_size.ron",
        "smaller than the fixed size 32 at Limits.policy.Schedule.events[0].size",
    ),
    ("mirror_pairs_odd_k.ron", "even k"),
    ("nan_threshold.ron", "GradNorm.rules[0].cross"),
    ("negative_threshold.ron", "Plateau.threshold.Rel"),
    ("trailing_garbage.ron", ":1:"),
    ("truncated.ron", "Unexpected end"),
    ("unknown_field.ron", "colour"),
    ("unknown_init.ron", "init: Kaiming"),
    ("unknown_monitor.ron", "monitor: Sideways"),
    ("window_too_small.ron", "Plateau.test.window"),
    ("wrong_type.ron", "patience"),
];

#[test]
fn every_hostile_file_gives_a_clean_error_naming_file_and_place() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir("tests/hostile_policies"))
        .expect("corpus exists")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        EXPECTED.len(),
        "every corpus file has an expectation"
    );
    for path in files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let err = load_spec(&path).expect_err(&name);
        let msg = err.to_string();
        assert!(
            msg.contains(&name),
            "{name}: message does not name the file: {msg}"
        );
        match &err {
            PolicyError::Syntax { line, col, .. } => assert!(*line >= 1 && *col >= 1, "{msg}"),
            PolicyError::Invalid { path, .. } => assert!(!path.is_empty(), "{msg}"),
            PolicyError::NotUtf8 { .. } => {}
            other => panic!("{name}: unexpected error kind {other:?}"),
        }
        let (_, want) = EXPECTED.iter().find(|(f, _)| *f == name).expect("listed");
        assert!(msg.contains(want), "{name}: expected {want:?} in: {msg}");
    }
}

/// Metrics of a model with `n` hidden layers of 8 units between 4 inputs and 2 outputs.
fn hidden(n: usize) -> Metrics {
    let sites = (0..n)
        .map(|i| {
            let inp = if i == 0 { 4 } else { 8 };
            let out = if i + 1 == n { 2 } else { 8 };
            common::site(i, 8, inp, out, None)
        })
        .collect();
    Metrics {
        sites,
        ..common::m(0, 1.0)
    }
}

#[test]
fn validate_for_rejects_layers_the_model_does_not_have() {
    let spec = PolicySpec::from_ron(
        "Schedule(events: [(at: Step(1), target: Layer(2), size: Fixed(2))])",
        "inline",
    )
    .expect("valid without a model");
    assert!(spec.validate_for(&hidden(3)).is_ok());
    let err = spec.validate_for(&hidden(2)).expect_err("layer 2 of 2");
    assert!(matches!(err, PolicyError::Model { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("Schedule.events[0].target")
            && msg.contains("Layer(2)")
            && msg.contains("has 2 site(s)")
            && msg.contains("hidden.1"),
        "{msg}"
    );
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let msg = load_spec(dir("policies/no_such_file.ron"))
        .expect_err("missing")
        .to_string();
    assert!(msg.contains("no_such_file.ron"), "{msg}");
}

fn valid_files() -> Vec<Vec<u8>> {
    ["plateau", "gradnorm", "schedule", "combined"]
        .iter()
        .map(|n| std::fs::read(dir(&format!("policies/{n}.ron"))).expect("shipped file"))
        .collect()
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            prop::collection::vec(
                prop_oneof![
                    Just(b'('),
                    Just(b'['),
                    Just(b')'),
                    Just(b','),
                    Just(b'9'),
                    any::<u8>()
                ],
                1..40
            )
        )
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn mutated_policy_files_never_panic_the_loader(file in 0usize..4, muts in prop::collection::vec(mutation(), 1..4)) {
        let mut bytes = valid_files().swap_remove(file);
        for m in muts {
            match m {
                Mutation::Flip(i, b) => { let n = bytes.len(); if n > 0 { bytes[i % n] ^= b; } }
                Mutation::Truncate(i) => { let n = bytes.len(); bytes.truncate(i % (n + 1)); }
                Mutation::Insert(i, v) => { let at = i % (bytes.len() + 1); bytes.splice(at..at, v); }
            }
        }
        match PolicySpec::from_bytes(&bytes, "mutant.ron") {
            Ok(spec) => { let _ = spec.build(); }
            Err(e) => prop_assert!(e.to_string().contains("mutant.ron")),
        }
    }
}
