//! A [`Linear`] layer's map `x W^T + b` and its backward pass, on the CPU through gemm's
//! AVX-512 kernels.
//!
//! dfdx 0.13's CPU matmul calls gemm 0.15, whose AVX-512 kernels build only on a nightly
//! compiler; on stable it runs the 256-bit FMA kernels. gemm 0.19 builds its AVX-512 kernels
//! on stable (its `x86-v4` feature) and picks one at run time by what the CPU has (AVX-512,
//! else FMA, else scalar). On an AVX-512 Xeon a 128x784 by 784x1024 product takes 0.60x the
//! time of dfdx's (BENCHMARKS.md). So on the [`Cpu`] device, for f32 and f64, a `Linear`
//! computes its forward here and records a backward op of its own, which writes the weight
//! and bias gradients and the input's unless the input is [`crate::Data`]. Other devices and
//! dtypes keep dfdx's ops.
//!
//! dfdx 0.13 lends a tensor's storage to its own kernels only, so the op reads the weight and
//! the input through a copy into a buffer of its own (0.33 ms for a 784x1024 f32 weight, about
//! a fifth of the product it feeds), and keeps those copies for the backward pass. Gradients
//! are written in place. With more than one rayon thread the forward product runs in fixed
//! blocks of output units spread over the threads ([`UNITS_PER_BLOCK`]), because gemm splits
//! it poorly itself.

use std::any::{Any, TypeId};

use rayon::prelude::*;

use dfdx::prelude::{
    Axes2, Axis, BroadcastTo, Cpu, Device, Dtype, Gradients, HasShape, Module, NoneTape, PermuteTo,
    PutTape, SplitTape, Storage, Tape, Tensor, TryAdd, TryMatMul,
};

use crate::Linear;

pub(crate) type Batch<E, D, T> = Tensor<(usize, usize), E, D, T>;

/// Whether the backward pass computes the input's gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InputGrad {
    /// The input is an activation or a parameter: its producers learn through it.
    Wanted,
    /// The input is data ([`crate::Data`]): nothing reads its gradient.
    Skipped,
}

/// `x W^T + b`, through gemm on the CPU and dfdx's ops elsewhere.
pub(crate) fn affine<E: Dtype, D: Device<E>, T: Tape<E, D>>(
    layer: &Linear<E, D>,
    x: Batch<E, D, T>,
    input: InputGrad,
) -> Result<Batch<E, D, T>, D::Err> {
    let on_cpu = TypeId::of::<D>() == TypeId::of::<Cpu>();
    // A mismatched input goes to dfdx, which reports it as it always has.
    if !on_cpu || !gemm_dtype::<E>() || x.shape().1 != layer.weight.shape().1 {
        return dfdx_affine(layer, x);
    }
    let (x, mut tape) = x.split_tape();
    let (batch, fan_in) = *x.shape();
    let out = layer.weight.shape().0;
    let (Some(x_cpu), Some(w), Some(b)) = (
        (&x as &dyn Any).downcast_ref::<Batch<E, Cpu, NoneTape>>(),
        (&layer.weight as &dyn Any).downcast_ref::<Tensor<(usize, usize), E, Cpu>>(),
        (&layer.bias as &dyn Any).downcast_ref::<Tensor<(usize,), E, Cpu>>(),
    ) else {
        // Not reachable: D is Cpu.
        return dfdx_affine(layer, x.put_tape(tape));
    };
    let x_strides = Strides::of(x_cpu);
    let xs = super::host_vec(x_cpu);
    let ws = super::host_vec(w);
    let bs = super::host_vec(b);

    let mut ys = vec![E::default(); batch * out];
    // y = x W^T, then + b as a pass of its own: the order of dfdx's matmul-then-add.
    forward_product(&mut ys, &xs, &ws, (batch, fan_in, out));
    if out > 0 {
        for row in ys.chunks_exact_mut(out) {
            for (y, b) in row.iter_mut().zip(&bs) {
                *y += *b;
            }
        }
    }
    let y = x.device().try_tensor_from_vec(ys, (batch, out))?;

    if T::OWNS_TAPE {
        let (y_ghost, w_ghost, b_ghost) = (y.ghost(), layer.weight.ghost(), layer.bias.ghost());
        let x_ghost = (input == InputGrad::Wanted).then(|| (x.ghost(), ws));
        tape.add_backward_op(move |grads: &mut Gradients<E, D>| {
            // The output's gradient is moved out for the op and back in after: no copy, and
            // no second borrow of `grads`.
            let dy = std::mem::take(cpu_vec::<E, D>(grads.get_or_alloc_mut(&y_ghost)?));
            let gb = cpu_vec::<E, D>(grads.get_or_alloc_mut(&b_ghost)?);
            if out > 0 {
                // Row by row, in order: the sum dfdx's broadcast-add backward makes.
                for row in dy.chunks_exact(out) {
                    for (g, d) in gb.iter_mut().zip(row) {
                        *g += *d;
                    }
                }
            }
            // dW += dY^T x
            gemm_into(
                Mat::rows(
                    cpu_vec::<E, D>(grads.get_or_alloc_mut(&w_ghost)?),
                    out,
                    fan_in,
                ),
                MatRef::transposed(&dy, out, batch),
                MatRef::rows(&xs, batch, fan_in),
                Accumulate::Yes,
                Threads::Pool,
            );
            if let Some((x_ghost, ws)) = x_ghost {
                // dx += dY W, into the input's gradient laid out as the input is.
                let gx = cpu_vec::<E, D>(grads.get_or_alloc_mut(&x_ghost)?);
                let product = |dst: Mat<'_, E>, acc| {
                    gemm_into(
                        dst,
                        MatRef::rows(&dy, batch, out),
                        MatRef::rows(&ws, out, fan_in),
                        acc,
                        Threads::Pool,
                    )
                };
                if x_strides.row_major(fan_in) {
                    product(Mat::rows(gx, batch, fan_in), Accumulate::Yes);
                } else {
                    let mut dx = vec![E::default(); batch * fan_in];
                    product(Mat::rows(&mut dx, batch, fan_in), Accumulate::No);
                    for (i, row) in dx.chunks_exact(fan_in.max(1)).enumerate() {
                        for (j, d) in row.iter().enumerate() {
                            gx[i * x_strides.row + j * x_strides.col] += *d;
                        }
                    }
                }
            }
            *cpu_vec::<E, D>(grads.get_or_alloc_mut(&y_ghost)?) = dy;
            Ok(())
        });
    }
    Ok(y.put_tape(tape))
}

/// Output units per block when the forward product is split over threads.
const UNITS_PER_BLOCK: usize = 256;

/// `ys = xs ws^T` for `(batch, fan_in, out)`. gemm splits this product poorly over threads
/// (its destination, transposed, has only `batch` columns: 1.28 ms on two threads against
/// 1.39 ms on one for 128x784 by 784x1024), so with more than one rayon thread the output
/// units go in fixed blocks of [`UNITS_PER_BLOCK`], one gemm call per block on a thread of its
/// own (0.78 ms). The blocks are fixed, so results do not depend on how many threads there
/// are; they differ from the one-thread product by rounding only.
fn forward_product<E: Dtype>(
    ys: &mut [E],
    xs: &[E],
    ws: &[E],
    (batch, fan_in, out): (usize, usize, usize),
) {
    let split =
        rayon::current_num_threads() > 1 && batch > 0 && fan_in > 0 && out >= 2 * UNITS_PER_BLOCK;
    if !split {
        gemm_into(
            Mat::rows(ys, batch, out),
            MatRef::rows(xs, batch, fan_in),
            MatRef::transposed(ws, fan_in, out),
            Accumulate::No,
            Threads::Pool,
        );
        return;
    }
    let parts: Vec<Vec<E>> = ws
        .par_chunks(UNITS_PER_BLOCK * fan_in)
        .map(|block| {
            let units = block.len() / fan_in;
            let mut part = vec![E::default(); batch * units];
            gemm_into(
                Mat::rows(&mut part, batch, units),
                MatRef::rows(xs, batch, fan_in),
                MatRef::transposed(block, fan_in, units),
                Accumulate::No,
                Threads::One,
            );
            part
        })
        .collect();
    for (i, part) in parts.iter().enumerate() {
        let (first, units) = (i * UNITS_PER_BLOCK, part.len() / batch);
        for (row, src) in ys.chunks_exact_mut(out).zip(part.chunks_exact(units)) {
            row[first..first + units].copy_from_slice(src);
        }
    }
}

pub(crate) fn gemm_dtype<E: 'static>() -> bool {
    TypeId::of::<E>() == TypeId::of::<f32>() || TypeId::of::<E>() == TypeId::of::<f64>()
}

/// A storage vector of `D`, which the caller has checked is `Cpu`, as the `Vec` it then is.
pub(crate) fn cpu_vec<E: Dtype, D: Storage<E>>(v: &mut D::Vec) -> &mut Vec<E> {
    match (v as &mut dyn Any).downcast_mut::<<Cpu as Storage<E>>::Vec>() {
        Some(v) => v,
        None => unreachable!("the gemm path runs on the Cpu device only"),
    }
}

/// dfdx's own ops: matmul with the permuted weight, then the broadcast bias.
pub(crate) fn dfdx_affine<E: Dtype, D: Device<E>, T: Tape<E, D>>(
    layer: &Linear<E, D>,
    x: Batch<E, D, T>,
) -> Result<Batch<E, D, T>, D::Err> {
    let batch = x.shape().0;
    let out = layer.weight.shape().0;
    let y = x.try_matmul(
        layer
            .weight
            .retaped::<T>()
            .try_permute::<_, Axes2<1, 0>>()?,
    )?;
    let b = layer
        .bias
        .retaped::<T>()
        .try_broadcast_like::<_, Axis<0>>(&(batch, out))?;
    y.try_add(b)
}

impl<E: Dtype, D: Device<E>, T: Tape<E, D>> Module<Batch<E, D, T>> for Linear<E, D> {
    type Output = Batch<E, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Batch<E, D, T>) -> Result<Self::Output, D::Err> {
        affine(self, x, InputGrad::Wanted)
    }
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

/// Where a CPU matrix's elements lie in its storage: the step, in elements, from one row to
/// the next and from one column to the next. Every tensor the crate makes and every output of
/// dfdx's ops is row-major (`(cols, 1)`); a permuted view swaps the two, a broadcast one has
/// a step of 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Strides {
    row: usize,
    col: usize,
}

impl Strides {
    fn of<E: Dtype>(t: &Tensor<(usize, usize), E, Cpu>) -> Self {
        let [row, col] = super::cpu_steps(t);
        Self { row, col }
    }

    fn row_major(self, cols: usize) -> bool {
        self == Self { row: cols, col: 1 }
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
