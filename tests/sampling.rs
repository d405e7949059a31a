//! `sampling::uniform`, the bulk sampler behind layer initialisation and growth: seeded runs
//! repeat, values stay strictly inside the bound, and the distribution is uniform.

use dfdx_grow::rand::{rngs::StdRng, RngCore, SeedableRng};
use dfdx_grow::sampling::uniform;
use dfdx_grow::Real;

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn f(x: impl Real) -> f64 {
    x.to_f64().unwrap()
}

/// Same seed, same values; another seed, other values; lengths around the chunk size.
fn repeats_with_the_seed<E: Real>() {
    for n in [0, 1, 7, 2047, 2048, 2049, 10_000] {
        let a: Vec<E> = uniform(n, 0.3, &mut rng(1));
        let b: Vec<E> = uniform(n, 0.3, &mut rng(1));
        let c: Vec<E> = uniform(n, 0.3, &mut rng(2));
        assert_eq!(a.len(), n);
        assert!(a == b, "n = {n}");
        if n > 1 {
            assert!(a != c, "n = {n}");
        }
    }
}

#[test]
fn seeded_draws_repeat_f32() {
    repeats_with_the_seed::<f32>();
}

#[test]
fn seeded_draws_repeat_f64() {
    repeats_with_the_seed::<f64>();
}

/// However many values are drawn, the caller's generator advances by the 24 words that seed
/// the sampler.
#[test]
fn the_generator_advances_by_24_words() {
    for n in [0, 1, 5, 4096, 100_003] {
        let mut r = rng(3);
        let _: Vec<f32> = uniform(n, 1.0, &mut r);
        let _: Vec<f64> = uniform(n, 1.0, &mut r);
        let mut expect = rng(3);
        for _ in 0..48 {
            expect.next_u32();
        }
        assert_eq!(r.next_u64(), expect.next_u64(), "n = {n}");
    }
}

/// XORWOW for one lane, written out from Marsaglia's paper, independently of the crate.
struct Lane([u32; 6]);

impl Lane {
    fn next(&mut self) -> u32 {
        let [x, y, z, w, v, d] = &mut self.0;
        let t = *x ^ (*x >> 2);
        (*x, *y, *z, *w) = (*y, *z, *w, *v);
        *v = (*v ^ (*v << 4)) ^ (t ^ (t << 1));
        *d = d.wrapping_add(362_437);
        d.wrapping_add(*v)
    }
}

/// The four lanes seeded from the generator's first 24 words (word i of the seed is lane
/// i % 4's variable i / 4), their outputs interleaved.
fn reference_words(seed: u64, n: usize) -> Vec<u32> {
    let mut r = rng(seed);
    let words: Vec<u32> = (0..24).map(|_| r.next_u32()).collect();
    let mut lanes: Vec<Lane> = (0..4)
        .map(|l| Lane(std::array::from_fn(|var| words[var * 4 + l])))
        .collect();
    let mut out = Vec::new();
    while out.len() < n {
        for lane in &mut lanes {
            out.push(lane.next());
        }
    }
    out.truncate(n);
    out
}

/// Each f32 is its word's point of the documented grid.
#[test]
fn f32_values_are_the_documented_grid_points() {
    let bound = 0.7f64;
    let got: Vec<f32> = uniform(1003, bound, &mut rng(4));
    for (i, (g, w)) in got.iter().zip(reference_words(4, 1003)).enumerate() {
        // The odd j = 2 * (w >> 9) - (2^23 - 1), times bound / 2^23.
        let j = 2 * i64::from(w >> 9) - ((1 << 23) - 1);
        let want = (j as f64 * (bound as f32 as f64) / f64::from(1u32 << 23)) as f32;
        assert_eq!(*g, want, "value {i}");
    }
}

/// Each f64 is the grid point of two consecutive words (high, low).
#[test]
fn f64_values_are_the_documented_grid_points() {
    let bound = 0.7f64;
    let got: Vec<f64> = uniform(501, bound, &mut rng(5));
    let words = reference_words(5, 1004);
    for (i, g) in got.iter().enumerate() {
        let w = (u64::from(words[2 * i]) << 32) | u64::from(words[2 * i + 1]);
        let j = 2 * (w >> 12) as i64 - ((1 << 52) - 1);
        assert_eq!(*g, j as f64 * (bound / (1u64 << 52) as f64), "value {i}");
    }
}

/// Neighbouring values (lag 1 crosses lanes, lag 4 stays in one) are uncorrelated.
#[test]
fn neighbours_are_uncorrelated() {
    let n = 400_000;
    let v: Vec<f64> = uniform::<f32>(n, 1.0, &mut rng(6))
        .into_iter()
        .map(f)
        .collect();
    for lag in [1, 2, 3, 4, 5, 8] {
        let c: f64 = v.iter().zip(&v[lag..]).map(|(a, b)| a * b).sum::<f64>()
            / (n - lag) as f64
            / (1.0 / 3.0);
        // The correlation of independent draws has sd 1/sqrt(n) ~ 0.0016.
        assert!(c.abs() < 0.008, "lag {lag}: correlation {c}");
    }
}

/// Every value is strictly inside (-bound, bound), including at the grid's extreme points,
/// for bounds of many magnitudes.
fn inside_the_bound<E: Real>() {
    for (i, bound) in [1e-6, 0.0123, 1.0 / 784f64.sqrt(), 1.0, 3.7, 1e5]
        .into_iter()
        .enumerate()
    {
        let v: Vec<E> = uniform(50_000, bound, &mut rng(10 + i as u64));
        let b = f(E::from_f64(bound).unwrap());
        assert!(v.iter().all(|x| f(*x).abs() < b), "bound {bound}");
        // Values come near both ends.
        let max = v.iter().map(|x| f(*x)).fold(f64::MIN, f64::max);
        let min = v.iter().map(|x| f(*x)).fold(f64::MAX, f64::min);
        assert!(max > 0.999 * b && min < -0.999 * b, "bound {bound}");
    }
}

#[test]
fn values_stay_inside_the_bound_f32() {
    inside_the_bound::<f32>();
}

#[test]
fn values_stay_inside_the_bound_f64() {
    inside_the_bound::<f64>();
}

/// Mean, variance (bound^2 / 3) and a 20-bin histogram match the uniform distribution.
fn is_uniform<E: Real>(seed: u64) {
    let n = 200_000;
    let bound = 0.25;
    let v: Vec<f64> = uniform::<E>(n, bound, &mut rng(seed))
        .into_iter()
        .map(f)
        .collect();
    let mean = v.iter().sum::<f64>() / n as f64;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
    let sd_mean = (bound * bound / 3.0 / n as f64).sqrt();
    assert!(mean.abs() < 5.0 * sd_mean, "mean {mean}");
    assert!(
        (var / (bound * bound / 3.0) - 1.0).abs() < 0.02,
        "variance {var}"
    );
    let bins = 20;
    let mut counts = vec![0usize; bins];
    for x in &v {
        counts[((x + bound) / (2.0 * bound) * bins as f64) as usize] += 1;
    }
    let expected = n as f64 / bins as f64;
    let chi2: f64 = counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum();
    // 19 degrees of freedom: P(chi2 > 43.8) = 0.001.
    assert!(chi2 < 43.8, "chi2 {chi2}, counts {counts:?}");
}

#[test]
fn draws_are_uniform_f32() {
    for seed in 0..3 {
        is_uniform::<f32>(seed);
    }
}

#[test]
fn draws_are_uniform_f64() {
    for seed in 0..3 {
        is_uniform::<f64>(seed);
    }
}

/// Writing in place gives what `uniform` returns, and touches nothing outside the slice.
#[test]
fn uniform_into_writes_what_uniform_returns() {
    let want: Vec<f32> = uniform(5000, 0.1, &mut rng(20));
    let mut buf = vec![9.0f32; 5002];
    dfdx_grow::sampling::uniform_into(&mut buf[1..5001], 0.1, &mut rng(20));
    assert_eq!(&buf[1..5001], &want[..]);
    assert_eq!((buf[0], buf[5001]), (9.0, 9.0));
    let want: Vec<f64> = uniform(5000, 0.1, &mut rng(21));
    let mut buf = vec![0.0f64; 5000];
    dfdx_grow::sampling::uniform_into(&mut buf, 0.1, &mut rng(21));
    assert_eq!(buf, want);
}
