//! Every file in `policies/` (and `policies/fashion-mnist/`) loads, validates for a
//! one-hidden-layer model, and round-trips.

mod common;

use std::path::PathBuf;

use dfdx_grow::policy::{load_policy, load_spec, PolicySpec};

fn ron_files_in(sub: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(sub);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the policy folder exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "ron"))
        .collect();
    v.sort();
    v
}

fn policy_files() -> Vec<PathBuf> {
    ron_files_in("policies")
}

/// The digits set and the Fashion-MNIST set.
fn all_policy_files() -> Vec<PathBuf> {
    let mut v = policy_files();
    v.extend(ron_files_in("policies/fashion-mnist"));
    v
}

#[test]
fn the_four_shipped_policy_files_exist() {
    let names: Vec<String> = policy_files()
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        names,
        [
            "combined.ron",
            "gradnorm.ron",
            "plateau.ron",
            "schedule.ron"
        ]
    );
}

#[test]
fn every_policy_file_loads_and_validates_for_one_hidden_layer() {
    let files = all_policy_files();
    assert_eq!(
        files.len(),
        8,
        "four digits files and four Fashion-MNIST files"
    );
    for p in files {
        let spec = load_spec(&p).unwrap_or_else(|e| panic!("{e}"));
        // A 64-32-10 model with gradient norms (what gradnorm.ron watches).
        spec.validate_for(&common::m(0, 1.0))
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(load_policy(&p).is_ok());
    }
}

#[test]
fn every_policy_file_round_trips_through_to_ron() {
    for p in all_policy_files() {
        let spec = load_spec(&p).unwrap_or_else(|e| panic!("{e}"));
        let text = spec.to_ron().unwrap_or_else(|e| panic!("{e}"));
        let again =
            PolicySpec::from_ron(&text, "round-trip").unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(spec, again, "{}", p.display());
        assert_eq!(again.to_ron().ok(), Some(text));
    }
}
