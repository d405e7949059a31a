//! GradNorm: directions, layer selection, sustain, running mean, cooldown, save/restore.

mod common;

use common::{assert_resume_equivalent, fire_steps, m, site};
use dfdx_grow::init::Init;
use dfdx_grow::policy::{
    Cross, Decision, GradNorm, GradNormSpec, GradRule, GrowthPolicy, Metrics, Size,
};

/// A 64-8-16-32-10 model whose hidden layers have gradient norms `norms`.
fn three(norms: [f64; 3], step: u64) -> Metrics {
    Metrics {
        sites: vec![
            site(0, 8, 64, 16, Some(norms[0])),
            site(1, 16, 8, 32, Some(norms[1])),
            site(2, 32, 16, 10, Some(norms[2])),
        ],
        ..m(step, 1.0)
    }
}

/// The sites a decision grows, in order.
fn sites(d: &Decision) -> Vec<&str> {
    d.growths.iter().map(|g| g.place()).collect()
}

fn spec(cross: Cross, sustain: u32) -> GradNormSpec {
    GradNormSpec {
        rules: (0..3)
            .map(|layer| GradRule {
                layer: Some(layer),
                site: None,
                cross: cross.clone(),
            })
            .collect(),
        sustain,
        cooldown: 0,
        size: Size::Fraction(0.5),
        init: Init::ZerosOut,
    }
}

#[test]
fn absolute_above_selects_only_the_layer_that_crosses() {
    let mut p = GradNorm::new(spec(Cross::Above(5.0), 3));
    let stream: Vec<Metrics> = (0..3).map(|i| three([1.0, 10.0, 4.9], i)).collect();
    let fired = common::run(&mut p, &stream);
    assert_eq!(fired.len(), 1);
    let (i, d) = &fired[0];
    assert_eq!(*i, 2);
    assert_eq!(d.growths.len(), 1);
    assert_eq!(sites(d), ["hidden.1"]);
    assert_eq!(d.growths[0].units(), 8);
    assert_eq!(d.evidence["hidden.1.grad_norm"], 10.0);
    assert_eq!(d.evidence["hidden.1.threshold"], 5.0);
}

#[test]
fn below_direction_selects_small_norms() {
    let mut p = GradNorm::new(spec(Cross::Below(0.5), 1));
    let d = p
        .observe(&three([0.1, 1.0, 0.2], 0))
        .expect("two layers below");
    assert_eq!(sites(&d), ["hidden.0", "hidden.2"]);
}

#[test]
fn sustain_needs_consecutive_crossings() {
    let mut p = GradNorm::new(spec(Cross::Above(5.0), 3));
    let pattern = [9.0, 9.0, 1.0, 9.0, 9.0, 9.0];
    let stream: Vec<Metrics> = pattern
        .iter()
        .enumerate()
        .map(|(i, &g)| three([g, 0.0, 0.0], i as u64))
        .collect();
    assert_eq!(fire_steps(&mut p, &stream), vec![5]);
}

#[test]
fn nan_norm_breaks_the_streak() {
    let mut p = GradNorm::new(spec(Cross::Above(5.0), 2));
    let pattern = [9.0, f64::NAN, 9.0, 9.0];
    let stream: Vec<Metrics> = pattern
        .iter()
        .enumerate()
        .map(|(i, &g)| three([g, 0.0, 0.0], i as u64))
        .collect();
    assert_eq!(fire_steps(&mut p, &stream), vec![3]);
}

#[test]
fn relative_threshold_fires_on_a_spike_above_the_running_mean_only() {
    let mut p = GradNorm::new(spec(
        Cross::AboveMean {
            factor: 2.0,
            alpha: 0.1,
        },
        1,
    ));
    let mut stream: Vec<Metrics> = (0..20).map(|i| three([1.0, 1.0, 1.0], i)).collect();
    stream.push(three([1.0, 3.0, 1.9], 20));
    let fired = common::run(&mut p, &stream);
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].0, 20);
    assert_eq!(sites(&fired[0].1), ["hidden.1"]);
    assert!((fired[0].1.evidence["hidden.1.threshold"] - 2.0).abs() < 1e-12);
}

#[test]
fn first_observation_never_crosses_a_relative_threshold() {
    let mut p = GradNorm::new(spec(
        Cross::BelowMean {
            factor: 10.0,
            alpha: 0.5,
        },
        1,
    ));
    assert!(p.observe(&three([1.0, 1.0, 1.0], 0)).is_none());
    assert!(p.observe(&three([1.0, 1.0, 1.0], 1)).is_some());
}

#[test]
fn cooldown_skips_exactly_n_observations_after_an_applied_growth() {
    let mut p = GradNorm::new(GradNormSpec {
        cooldown: 2,
        ..spec(Cross::Above(5.0), 1)
    });
    let stream: Vec<Metrics> = (0..6).map(|i| three([9.0, 0.0, 0.0], i)).collect();
    assert_eq!(fire_steps(&mut p, &stream), vec![0, 3]);
}

#[test]
fn state_saved_mid_stream_gives_the_same_decisions() {
    let s = GradNormSpec {
        cooldown: 3,
        ..spec(
            Cross::AboveMean {
                factor: 2.0,
                alpha: 0.2,
            },
            2,
        )
    };
    let stream: Vec<Metrics> = (0..200)
        .map(|i| {
            let g = if i % 20 < 2 { 5.0 } else { 1.0 };
            three([g, 2.0 * g, 1.0], i)
        })
        .collect();
    assert_resume_equivalent(|| Box::new(GradNorm::new(s.clone())), &stream, 77);
}
