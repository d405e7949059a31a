//! Drawing many uniform weights at once, near memory speed.
//!
//! A growth of 784-1024-10 by 1024 units draws 800k fan-in weights; drawn one `gen_range` at a
//! time they took half of the growth's time, and even `StdRng` filling whole buffers (ChaCha12
//! blocks) runs at about a third of memory speed. So the caller's generator only seeds four
//! XORWOW generators (Marsaglia's xorshift with a Weyl sequence added, the default generator
//! of NVIDIA's cuRAND), which run side by side in plain arrays that the compiler keeps in
//! vector registers; their interleaved output becomes the floats.

use std::any::TypeId;

use num_traits::NumCast;
use rand::Rng;

use crate::Real;

/// Generators run side by side: four 32-bit lanes fill one SSE2 register.
const LANES: usize = 4;

/// Four XORWOW generators, one per lane.
struct Xorwow {
    /// The xorshift state (x, y, z, w, v) and the Weyl counter d, lane by lane.
    s: [[u32; LANES]; 6],
}

impl Xorwow {
    /// Seeds every lane from 6 words of `rng` (24 words in all, whatever is drawn later).
    fn seeded(rng: &mut (impl Rng + ?Sized)) -> Self {
        let mut s = [[0u32; LANES]; 6];
        for part in &mut s {
            rng.fill(&mut part[..]);
        }
        for lane in 0..LANES {
            // An all-zero xorshift state stays zero: give such a lane a non-zero word.
            if s[..5].iter().all(|p| p[lane] == 0) {
                s[0][lane] = 1;
            }
        }
        Self { s }
    }

    /// The next word of every lane (Marsaglia 2003, "Xorshift RNGs", section 3.1).
    #[inline(always)]
    fn next(&mut self) -> [u32; LANES] {
        let [x, y, z, w, v, d] = &mut self.s;
        let mut out = [0u32; LANES];
        for l in 0..LANES {
            let t = x[l] ^ (x[l] >> 2);
            x[l] = y[l];
            y[l] = z[l];
            z[l] = w[l];
            w[l] = v[l];
            v[l] = (v[l] ^ (v[l] << 4)) ^ (t ^ (t << 1));
            d[l] = d[l].wrapping_add(362_437);
            out[l] = d[l].wrapping_add(v[l]);
        }
        out
    }
}

/// `j / 2^23 * bound` for the odd `j = 2 * (w >> 9) - (2^23 - 1)`, `|j| < 2^23`: `j` is exact
/// in f32, and the one rounding of the product cannot reach `bound`.
#[inline(always)]
fn grid32(w: u32, scale: f32) -> f32 {
    (((w >> 9) << 1) as i32 - ((1 << 23) - 1)) as f32 * scale
}

/// `j / 2^52 * bound` for the odd `j = 2 * (w >> 12) - (2^52 - 1)`, exact in f64.
#[inline(always)]
fn grid64(w: u64, scale: f64) -> f64 {
    (((w >> 12) << 1) as i64 - ((1 << 52) - 1)) as f64 * scale
}

/// `n` values uniform in `(-bound, bound)`.
///
/// The same generator state gives the same values, and `rng` always advances by 24 `u32`
/// words, however many values are drawn. The values are a grid of equally likely points
/// symmetric about 0: `j / 2^23 * bound` for the odd `j` in `-2^23..2^23` when `E` is `f32`
/// (one 32-bit word per value), `j / 2^52 * bound` otherwise (two words, computed in `f64` and
/// converted). Every value lies strictly inside `(-bound, bound)` and the mean is exactly 0.
///
/// ```
/// use dfdx_grow::rand::{rngs::StdRng, SeedableRng};
/// use dfdx_grow::sampling::uniform;
///
/// let w: Vec<f32> = uniform(1000, 0.5, &mut StdRng::seed_from_u64(0));
/// assert!(w.iter().all(|x| (-0.5..0.5).contains(x)));
/// assert_eq!(w, uniform::<f32>(1000, 0.5, &mut StdRng::seed_from_u64(0)));
/// ```
pub fn uniform<E: Real>(n: usize, bound: f64, rng: &mut (impl Rng + ?Sized)) -> Vec<E> {
    let mut out = vec![E::zero(); n];
    uniform_into(&mut out, bound, rng);
    out
}

/// Overwrites `dst` with values uniform in `(-bound, bound)`: what [`uniform`] returns for
/// `dst.len()` values and the same generator state, written in place (e.g. straight into the
/// rows a growth appends, with no intermediate vector).
pub fn uniform_into<E: Real>(dst: &mut [E], bound: f64, rng: &mut (impl Rng + ?Sized)) {
    let mut g = Xorwow::seeded(rng);
    if TypeId::of::<E>() == TypeId::of::<f32>() {
        // For E = f32 the conversion below is the identity.
        let scale = bound as f32 * (1.0 / (1u32 << 23) as f32);
        let put =
            |d: &mut E, w: u32| *d = <E as NumCast>::from(grid32(w, scale)).unwrap_or_else(E::zero);
        let mut blocks = dst.chunks_exact_mut(LANES);
        for block in &mut blocks {
            for (d, w) in block.iter_mut().zip(g.next()) {
                put(d, w);
            }
        }
        for (d, w) in blocks.into_remainder().iter_mut().zip(g.next()) {
            put(d, w);
        }
    } else {
        let scale = bound * (1.0 / (1u64 << 52) as f64);
        let put = |d: &mut E, hi: u32, lo: u32| {
            let w = ((hi as u64) << 32) | lo as u64;
            *d = E::from_f64(grid64(w, scale)).unwrap_or_else(E::zero);
        };
        let mut blocks = dst.chunks_exact_mut(LANES / 2);
        for block in &mut blocks {
            let w = g.next();
            put(&mut block[0], w[0], w[1]);
            put(&mut block[1], w[2], w[3]);
        }
        if let [d] = blocks.into_remainder() {
            let w = g.next();
            put(d, w[0], w[1]);
        }
    }
}
