//! Plateau: counting edges, thresholds, NaN and missing values, the t test, save/restore.

mod common;

use common::{assert_resume_equivalent, fire_steps, m};
use dfdx_grow::init::Init;
use dfdx_grow::policy::{
    GrowthPolicy, Metrics, Monitor, Plateau, PlateauSpec, Size, SlopeTest, Target, Threshold,
};
use rand::{rngs::StdRng, Rng, SeedableRng};

fn spec(patience: u32) -> PlateauSpec {
    PlateauSpec {
        monitor: Monitor::Train,
        patience,
        threshold: Threshold::Rel(0.0),
        cooldown: 0,
        warmup: 0,
        ema: None,
        test: None,
        target: Target::Layer(0),
        size: Size::Fixed(4),
        init: Init::ZerosOut,
    }
}

fn flat(n: usize) -> Vec<Metrics> {
    (0..n).map(|i| m(i as u64, 1.0)).collect()
}

#[test]
fn clear_plateau_fires_when_bad_observations_reach_patience() {
    // Observation 0 sets best; 1, 2, 3 are bad: the third bad one (index 3) fires.
    let mut p = Plateau::new(spec(3));
    assert_eq!(fire_steps(&mut p, &flat(4)), vec![3]);
    let mut p = Plateau::new(spec(3));
    assert_eq!(fire_steps(&mut p, &flat(3)), Vec::<usize>::new());
}

#[test]
fn worked_table_in_the_docs_holds() {
    let mut p = Plateau::new(PlateauSpec {
        cooldown: 1,
        ..spec(2)
    });
    // Table rows are 1-based: fires at obs 3 and 6.
    assert_eq!(fire_steps(&mut p, &flat(6)), vec![2, 5]);
}

#[test]
fn cooldown_of_n_skips_exactly_n_observations() {
    let mut p = Plateau::new(PlateauSpec {
        cooldown: 3,
        ..spec(1)
    });
    // fire at 1; 2, 3, 4 in cooldown; 5 is bad again with patience 1.
    assert_eq!(fire_steps(&mut p, &flat(7)), vec![1, 5]);
}

#[test]
fn refused_decision_starts_no_cooldown_and_retries_after_patience() {
    let mut p = Plateau::new(PlateauSpec {
        cooldown: 5,
        ..spec(2)
    });
    let mut fired = Vec::new();
    for (i, x) in flat(8).iter().enumerate() {
        if let Some(d) = p.observe(x) {
            p.on_refused(&d, "test refuses");
            fired.push(i);
        }
    }
    assert_eq!(fired, vec![2, 4, 6]);
}

#[test]
fn warmup_ignores_steps_before_it_and_counts_from_it() {
    let mut p = Plateau::new(PlateauSpec {
        warmup: 10,
        ..spec(2)
    });
    // steps 0..=9 ignored; step 10 sets best; 11, 12 bad -> fires at step 12.
    assert_eq!(fire_steps(&mut p, &flat(13)), vec![12]);
}

#[test]
fn relative_threshold_margin_uses_abs_best_for_negative_metrics() {
    // best = -10, Rel(0.1): margin 1, so -10.5 is not an improvement (needs < -11).
    // The wrong formula best*(1-t) = -9 would call -10.5 an improvement.
    let s = PlateauSpec {
        threshold: Threshold::Rel(0.1),
        ..spec(1)
    };
    let mut p = Plateau::new(s.clone());
    assert_eq!(fire_steps(&mut p, &[m(0, -10.0), m(1, -10.5)]), vec![1]);
    let mut p = Plateau::new(s);
    assert_eq!(
        fire_steps(&mut p, &[m(0, -10.0), m(1, -11.5)]),
        Vec::<usize>::new()
    );
}

#[test]
fn absolute_threshold_needs_the_full_delta() {
    let s = PlateauSpec {
        threshold: Threshold::Abs(0.1),
        ..spec(1)
    };
    let mut p = Plateau::new(s.clone());
    assert_eq!(fire_steps(&mut p, &[m(0, 1.0), m(1, 0.95)]), vec![1]);
    let mut p = Plateau::new(s);
    assert_eq!(
        fire_steps(&mut p, &[m(0, 1.0), m(1, 0.85)]),
        Vec::<usize>::new()
    );
}

#[test]
fn nan_burst_does_not_fire_never_becomes_best_and_is_reported() {
    let mut p = Plateau::new(spec(3));
    let mut stream = vec![m(0, 1.0)];
    for i in 1..=10 {
        stream.push(m(i, if i % 2 == 0 { f64::NAN } else { f64::INFINITY }));
    }
    assert_eq!(fire_steps(&mut p, &stream), Vec::<usize>::new());
    // 0.9 improves on 1.0 (NaN did not become best); then three bad values fire.
    let tail: Vec<Metrics> = (11..15)
        .map(|i| m(i, if i == 11 { 0.9 } else { 0.95 }))
        .collect();
    let d = tail
        .iter()
        .find_map(|x| p.observe(x))
        .expect("fires after the burst");
    assert_eq!(d.evidence["nonfinite_seen"], 10.0);
    assert_eq!(d.evidence["best"], 0.9);
}

#[test]
fn missing_val_loss_never_fires_and_is_counted() {
    let mut p = Plateau::new(PlateauSpec {
        monitor: Monitor::Val,
        ..spec(2)
    });
    let missing: Vec<Metrics> = (0..50)
        .map(|i| Metrics {
            val_loss: None,
            ..m(i, 1.0)
        })
        .collect();
    assert_eq!(fire_steps(&mut p, &missing), Vec::<usize>::new());
    let d = (50..53)
        .find_map(|i| p.observe(&m(i, 1.0)))
        .expect("fires on real values");
    assert_eq!(d.evidence["missing_seen"], 50.0);
}

fn noisy(seed: u64, slope: f64, n: usize) -> Vec<Metrics> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            m(
                i as u64,
                3.0 + slope * i as f64 + rng.gen_range(-0.05..0.05),
            )
        })
        .collect()
}

fn tested(patience: u32) -> PlateauSpec {
    PlateauSpec {
        test: Some(SlopeTest {
            window: 50,
            confidence: 0.95,
        }),
        ..spec(patience)
    }
}

#[test]
fn noisy_decreasing_loss_does_not_fire_under_the_t_test() {
    for seed in 0..5 {
        let stream = noisy(seed, -0.002, 1000);
        let mut without = Plateau::new(spec(10));
        assert!(
            !fire_steps(&mut without, &stream).is_empty(),
            "without the test noise fires (seed {seed})"
        );
        let mut with = Plateau::new(tested(10));
        assert_eq!(
            fire_steps(&mut with, &stream),
            Vec::<usize>::new(),
            "seed {seed}"
        );
    }
}

#[test]
fn flat_noisy_loss_fires_under_the_t_test_with_its_evidence() {
    let stream = noisy(7, 0.0, 400);
    let mut p = Plateau::new(tested(20));
    let first = stream
        .iter()
        .find_map(|x| p.observe(x))
        .expect("a flat loss fires");
    for key in ["slope", "t", "p_value", "window"] {
        assert!(first.evidence.contains_key(key), "{key}");
    }
    assert!(first.evidence["p_value"] >= 0.05);
    assert_eq!(first.evidence["window"], 50.0);
}

#[test]
fn state_saved_mid_stream_gives_the_same_decisions() {
    let s = PlateauSpec {
        cooldown: 5,
        ema: Some(0.3),
        ..tested(10)
    };
    let stream = noisy(3, 0.0, 300);
    assert_resume_equivalent(|| Box::new(Plateau::new(s.clone())), &stream, 137);
}
