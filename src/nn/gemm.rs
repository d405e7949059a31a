//! The crate's one call into gemm: `dst (+)= lhs rhs` for row-major buffers read as they are
//! or transposed, with every length and stride checked first. Linear layers (`nn::affine`)
//! and convolutions (`nn::conv::fused`) run their products on the CPU through it.
//!
//! gemm 0.19, not dfdx 0.13's gemm 0.15: 0.19 builds its AVX-512 kernels on stable Rust (its
//! `x86-v4` feature), 0.15 only on nightly, and picks a kernel at run time by what the CPU has
//! (AVX-512, else FMA, else scalar).

use std::any::TypeId;

use dfdx::prelude::{Cpu, Dtype};

/// Whether gemm implements `E` (f32 and f64 among the crate's dtypes).
pub(crate) fn gemm_dtype<E: 'static>() -> bool {
    TypeId::of::<E>() == TypeId::of::<f32>() || TypeId::of::<E>() == TypeId::of::<f64>()
}

/// Whether a layer on device `D` with elements `E` runs its products here: the `Cpu` device
/// and a dtype gemm implements. Other devices and dtypes keep dfdx's ops.
pub(crate) fn runs_here<E: 'static, D: 'static>() -> bool {
    TypeId::of::<D>() == TypeId::of::<Cpu>() && gemm_dtype::<E>()
}

/// Where a gemm call runs: on rayon's pool (as dfdx's matmul does), or on the calling thread.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Threads {
    Pool,
    One,
}

/// Whether `dst` adds the product to what it holds or is overwritten by it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accumulate {
    Yes,
    No,
}

/// A row-major matrix to write.
pub(crate) struct Mat<'a, E> {
    data: &'a mut [E],
    rows: usize,
    cols: usize,
}

impl<'a, E> Mat<'a, E> {
    pub(crate) fn rows(data: &'a mut [E], rows: usize, cols: usize) -> Self {
        assert_eq!(data.len(), rows * cols, "a buffer of {rows}x{cols}");
        Self { data, rows, cols }
    }
}

/// A matrix to read: row-major data, read as itself or as its transpose.
pub(crate) struct MatRef<'a, E> {
    data: &'a [E],
    rows: usize,
    cols: usize,
    row_stride: isize,
    col_stride: isize,
}

impl<'a, E> MatRef<'a, E> {
    /// `data` holds a `rows` x `cols` matrix, row-major.
    pub(crate) fn rows(data: &'a [E], rows: usize, cols: usize) -> Self {
        assert_eq!(data.len(), rows * cols, "a buffer of {rows}x{cols}");
        Self {
            data,
            rows,
            cols,
            row_stride: cols as isize,
            col_stride: 1,
        }
    }

    /// `data` holds the transpose of a `rows` x `cols` matrix, row-major (a `cols` x `rows`
    /// buffer).
    pub(crate) fn transposed(data: &'a [E], rows: usize, cols: usize) -> Self {
        assert_eq!(data.len(), rows * cols, "a buffer of {cols}x{rows}");
        Self {
            data,
            rows,
            cols,
            row_stride: 1,
            col_stride: rows as isize,
        }
    }
}

/// `dst (+)= lhs rhs` through gemm, on rayon's pool (as many threads as dfdx's matmul uses)
/// or on the calling thread.
#[allow(unsafe_code)]
pub(crate) fn gemm_into<E: Dtype>(
    dst: Mat<'_, E>,
    lhs: MatRef<'_, E>,
    rhs: MatRef<'_, E>,
    acc: Accumulate,
    threads: Threads,
) {
    assert!(
        dst.rows == lhs.rows && lhs.cols == rhs.rows && rhs.cols == dst.cols,
        "gemm shapes {}x{} = {}x{} by {}x{}",
        dst.rows,
        dst.cols,
        lhs.rows,
        lhs.cols,
        rhs.rows,
        rhs.cols
    );
    assert!(gemm_dtype::<E>(), "gemm is called for f32 and f64 only");
    let (m, k, n) = (dst.rows, lhs.cols, dst.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // An empty sum: zero, or nothing to add.
        if acc == Accumulate::No {
            dst.data.fill(E::default());
        }
        return;
    }
    let read_dst = acc == Accumulate::Yes;
    // SAFETY: the asserts above fix every buffer's length to its matrix's rows x cols and
    // each stride pair to a row-major or transposed walk of it, so every index gemm forms
    // lies inside its buffer; `dst` is borrowed mutably and apart from `lhs` and `rhs`. E is
    // f32 or f64, both of which gemm implements.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            1,
            n as isize,
            read_dst,
            lhs.data.as_ptr(),
            lhs.col_stride,
            lhs.row_stride,
            rhs.data.as_ptr(),
            rhs.col_stride,
            rhs.row_stride,
            if read_dst { E::ONE } else { E::default() },
            E::ONE,
            false,
            false,
            false,
            match threads {
                Threads::Pool => gemm::Parallelism::Rayon(0),
                Threads::One => gemm::Parallelism::None,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `lhs rhs` by the textbook triple loop, for `rows` x `inner` by `inner` x `cols`
    /// operands given as element functions.
    fn naive(
        rows: usize,
        inner: usize,
        cols: usize,
        a: impl Fn(usize, usize) -> f64,
        b: impl Fn(usize, usize) -> f64,
    ) -> Vec<f64> {
        let mut out = vec![0.0; rows * cols];
        for i in 0..rows {
            for j in 0..cols {
                out[i * cols + j] = (0..inner).map(|k| a(i, k) * b(k, j)).sum();
            }
        }
        out
    }

    #[test]
    fn gemm_into_reads_plain_and_transposed_operands_and_accumulates() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
        let bt: Vec<f64> = (0..n * k).map(|i| (i as f64 * 0.91).cos()).collect(); // n x k
        let want = naive(m, k, n, |i, p| a[i * k + p], |p, j| bt[j * k + p]);
        let mut dst = vec![f64::NAN; m * n];
        gemm_into(
            Mat::rows(&mut dst, m, n),
            MatRef::rows(&a, m, k),
            MatRef::transposed(&bt, k, n),
            Accumulate::No,
            Threads::Pool,
        );
        for (g, w) in dst.iter().zip(&want) {
            assert!((g - w).abs() < 1e-12, "{g} vs {w}");
        }
        // Accumulating adds the same product again.
        gemm_into(
            Mat::rows(&mut dst, m, n),
            MatRef::rows(&a, m, k),
            MatRef::transposed(&bt, k, n),
            Accumulate::Yes,
            Threads::One,
        );
        for (g, w) in dst.iter().zip(&want) {
            assert!((g - 2.0 * w).abs() < 1e-12, "{g} vs {}", 2.0 * w);
        }
    }

    #[test]
    fn an_empty_inner_dimension_zeroes_or_keeps_the_destination() {
        let mut dst = vec![3.0f32; 6];
        let none: [f32; 0] = [];
        let (lhs, rhs) = (MatRef::rows(&none, 2, 0), MatRef::rows(&none, 0, 3));
        gemm_into(
            Mat::rows(&mut dst, 2, 3),
            lhs,
            rhs,
            Accumulate::Yes,
            Threads::Pool,
        );
        assert_eq!(dst, vec![3.0; 6]);
        let (lhs, rhs) = (MatRef::rows(&none, 2, 0), MatRef::rows(&none, 0, 3));
        gemm_into(
            Mat::rows(&mut dst, 2, 3),
            lhs,
            rhs,
            Accumulate::No,
            Threads::Pool,
        );
        assert_eq!(dst, vec![0.0; 6]);
    }

    #[test]
    #[should_panic(expected = "gemm shapes")]
    fn mismatched_shapes_are_refused_before_gemm_runs() {
        let (a, b) = (vec![0.0f32; 6], vec![0.0f32; 6]);
        let mut dst = vec![0.0f32; 4];
        gemm_into(
            Mat::rows(&mut dst, 2, 2),
            MatRef::rows(&a, 2, 3),
            MatRef::rows(&b, 2, 3),
            Accumulate::No,
            Threads::Pool,
        );
    }
}
