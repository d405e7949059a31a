//! Everything the user passed, checked before any training starts: a mistake in the last
//! policy file or in `--out` is reported at once, not after the static runs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::policy::{load_policy, GrowthPolicy, Metrics};
use dfdx_grow::rand::{rngs::StdRng, SeedableRng};
use dfdx_grow::{Activation, Mlp, Params};

/// One grown run to train: its name, its policy (read and checked) and its audit log.
pub struct GrownRun {
    /// `grown-<file stem>`, made unique.
    pub name: String,
    pub policy: Box<dyn GrowthPolicy>,
    pub log: PathBuf,
}

/// Refuses option values no run can use: `--steps 0`, and `--data-dir` for a data set that is
/// not read from disk.
pub fn check_options(
    dataset: &str,
    data_dir: Option<&Path>,
    steps: Option<usize>,
) -> Result<(), String> {
    if steps == Some(0) {
        return Err("--steps 0: a run needs at least one step".into());
    }
    if let (Some(dir), "digits") = (data_dir, dataset) {
        return Err(format!(
            "--data-dir {}: the digits are embedded in the data crate and read from nowhere \
             else; --data-dir is for --dataset fashion-mnist",
            dir.display()
        ));
    }
    Ok(())
}

/// Creates the output directory, or says why it cannot be written to.
pub fn check_out(out: &Path) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("--out {}: {e}", out.display()))?;
    let probe = out.join(".compare_budgets-write-check");
    dfdx_grow::fsio::write_atomic(&probe, b"ok")
        .map_err(|e| format!("--out {}: cannot write there: {e}", out.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Reads every policy file and checks it against the grown runs' starting model (`sizes`,
/// width cap `max_width`), with gradient norms in the metrics as training has them; names the
/// runs (`grown-<stem>`, `-2`, `-3`.. for stems met before) and their logs in `out`.
pub fn plan_grown_runs(
    files: &[PathBuf],
    sizes: &[usize],
    max_width: usize,
    out: &Path,
) -> Result<Vec<GrownRun>, String> {
    let dev = Cpu::default();
    let mlp =
        Mlp::<f32, Cpu>::try_new(sizes, Activation::Relu, &dev, &mut StdRng::seed_from_u64(0))
            .map_err(|e| e.to_string())?
            .with_max_width(max_width);
    let mut grads = mlp.try_alloc_grads().map_err(|e| e.to_string())?;
    let m = Metrics::of(&mlp)
        .grads(&mut grads)
        .build()
        .map_err(|e| e.to_string())?;
    let mut used = BTreeSet::new();
    let mut runs = Vec::new();
    for file in files {
        let policy = load_policy(file).map_err(|e| e.to_string())?;
        policy.check(&m).map_err(|e| e.to_string())?;
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "policy".into());
        let name = (1..)
            .map(|i| match i {
                1 => format!("grown-{stem}"),
                i => format!("grown-{stem}-{i}"),
            })
            .find(|n| !used.contains(n))
            .expect("an unused name");
        used.insert(name.clone());
        runs.push(GrownRun {
            log: out.join(format!("audit-{}.jsonl", &name["grown-".len()..])),
            name,
            policy,
        });
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cb-check-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    const GOOD: &str = "Schedule(events: [(at: Step(5), target: Layer(0), size: Fixed(4))])";

    #[test]
    fn zero_steps_and_a_data_dir_for_the_embedded_digits_are_errors() {
        assert!(check_options("digits", None, Some(0))
            .unwrap_err()
            .contains("--steps 0"));
        assert!(check_options("digits", Some(Path::new("/data")), None)
            .unwrap_err()
            .contains("--data-dir /data"));
        check_options("fashion-mnist", Some(Path::new("/data")), Some(1)).unwrap();
        check_options("digits", None, None).unwrap();
    }

    #[test]
    fn a_bad_policy_among_good_ones_is_reported_naming_the_file() {
        let dir = scratch("bad");
        let good = write(&dir, "good.ron", GOOD);
        let syntax = write(&dir, "syntax.ron", "Schedule(events: [(at: Step(5)");
        let missing = write(
            &dir,
            "missing.ron",
            "Schedule(events: [(at: Step(5), target: Layer(2), size: Fixed(4))])",
        );
        let typo = write(
            &dir,
            "typo.ron",
            "Schedule(events: [(at: Step(5), target: Site(\"hidden.1\"), size: Fixed(4))])",
        );
        for bad in [&syntax, &missing, &typo] {
            let e = plan_grown_runs(&[good.clone(), bad.clone()], &[64, 32, 10], 256, &dir)
                .err()
                .expect("refused");
            assert!(e.contains(&bad.display().to_string()), "{e}");
        }
        // A GradNorm file passes: the metrics carry gradient norms as in training.
        let gradnorm = write(
            &dir,
            "g.ron",
            "GradNorm(rules: [(layer: 0, cross: Below(0.1))], sustain: 2, size: Fixed(4))",
        );
        plan_grown_runs(&[gradnorm], &[64, 32, 10], 256, &dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn policy_files_with_the_same_stem_get_their_own_run_names_and_logs() {
        let dir = scratch("stems");
        let files = [
            write(&dir, "a/plateau.ron", GOOD),
            write(&dir, "b/plateau.ron", GOOD),
            write(&dir, "plateau-2.ron", GOOD),
            write(&dir, "c/plateau.ron", GOOD),
        ];
        let runs = plan_grown_runs(&files, &[64, 32, 10], 256, &dir).unwrap();
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "grown-plateau",
                "grown-plateau-2",
                "grown-plateau-2-2",
                "grown-plateau-3"
            ]
        );
        let logs: BTreeSet<&PathBuf> = runs.iter().map(|r| &r.log).collect();
        assert_eq!(logs.len(), 4);
        assert_eq!(runs[1].log, dir.join("audit-plateau-2.jsonl"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_output_directory_is_created_or_refused_before_training() {
        let dir = scratch("out");
        let fresh = dir.join("new/nested");
        check_out(&fresh).unwrap();
        assert!(fresh.is_dir());
        assert_eq!(
            std::fs::read_dir(&fresh).unwrap().count(),
            0,
            "no probe left"
        );
        let file = write(&dir, "a-file", "x");
        assert!(check_out(&file).unwrap_err().contains("--out"));
        assert!(check_out(&file.join("below"))
            .unwrap_err()
            .contains("--out"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
