//! `Linear` on the CPU runs its own matmul (gemm with AVX-512 where the CPU has it) and its own
//! backward op. Its output and its weight, bias and input gradients agree with dfdx's matmul
//! path to rounding, over random shapes in f32 and f64, for inputs laid out any way dfdx makes
//! them, and gradients already in a buffer are added to.

mod common;

use common::{input, max_abs, max_abs_diff, rng};
use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::rand::Rng;
use dfdx_grow::{Data, Linear, Matrix, Params, Real};

/// What one forward + backward pass gives: the output, then the weight, bias and input
/// gradients (the input's empty when it was not asked for).
type Pass<E> = [Vec<E>; 4];

/// The layer's map through dfdx's own ops, the reference.
fn dfdx_pass<E: Real>(layer: &Linear<E, Cpu>, x: &Matrix<E, Cpu>, dy: &Matrix<E, Cpu>) -> Pass<E>
where
    Cpu: Device<E>,
{
    let grads = layer.try_alloc_grads().unwrap();
    let (batch, out) = (x.shape().0, layer.weight.shape().0);
    let y = x.clone().traced(grads).matmul(
        layer
            .weight
            .retaped::<OwnedTape<E, Cpu>>()
            .permute::<_, Axes2<1, 0>>(),
    ) + layer
        .bias
        .retaped::<OwnedTape<E, Cpu>>()
        .broadcast_like::<_, Axis<0>>(&(batch, out));
    let value = y.as_vec();
    let grads = (y * dy.clone()).sum().backward();
    [
        value,
        grads.get(&layer.weight).as_vec(),
        grads.get(&layer.bias).as_vec(),
        grads.get(x).as_vec(),
    ]
}

/// The same through the crate's `Linear`, with the input plain or as `Data`.
fn crate_pass<E: Real>(
    layer: &Linear<E, Cpu>,
    x: &Matrix<E, Cpu>,
    dy: &Matrix<E, Cpu>,
    data: bool,
) -> Pass<E>
where
    Cpu: Device<E>,
{
    let grads = layer.try_alloc_grads().unwrap();
    let traced = x.clone().traced(grads);
    let y = if data {
        layer.forward(Data(traced))
    } else {
        layer.forward(traced)
    };
    let value = elements(&y);
    let grads = (y * dy.clone()).sum().backward();
    let gx = if data {
        Vec::new()
    } else {
        elements(&grads.get(x))
    };
    [
        value,
        elements(&grads.get(&layer.weight)),
        elements(&grads.get(&layer.bias)),
        gx,
    ]
}

/// A tensor's elements; dfdx's `as_vec` cannot take an empty one.
fn elements<S: Shape, E: Real, T>(t: &Tensor<S, E, Cpu, T>) -> Vec<E>
where
    Cpu: Device<E>,
{
    if t.shape().num_elements() == 0 {
        Vec::new()
    } else {
        t.as_vec()
    }
}

/// `a` and `b` agree to `tol` relative to their size.
fn close<E: Real>(a: &[E], b: &[E], tol: f64, what: &str)
where
    Cpu: Device<E>,
{
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = max_abs(b).max(1.0);
    let diff = max_abs_diff(a, b);
    assert!(
        diff <= tol * scale,
        "{what}: differs by {diff} (scale {scale})"
    );
}

fn agrees_with_dfdx<E: Real>(cases: usize, seed: u64, tol: f64)
where
    Cpu: Device<E>,
{
    let dev = Cpu::default();
    let mut r = rng(seed);
    for case in 0..cases {
        // Widths past gemm's blocking on some cases, and the degenerate ones on others.
        let pick = |r: &mut dfdx_grow::rand::rngs::StdRng| match r.gen_range(0..8) {
            0 => 1,
            1 => r.gen_range(300..700),
            _ => r.gen_range(2..70),
        };
        let (batch, fan_in, out) = (pick(&mut r), pick(&mut r), pick(&mut r));
        let layer = Linear::<E, Cpu>::new(fan_in, out, &dev, &mut r).unwrap();
        let x = input::<E>(&dev, batch, fan_in, &mut r);
        let dy = input::<E>(&dev, batch, out, &mut r);
        let want = dfdx_pass(&layer, &x, &dy);
        let got = crate_pass(&layer, &x, &dy, false);
        let names = [
            "output",
            "weight gradient",
            "bias gradient",
            "input gradient",
        ];
        for ((g, w), name) in got.iter().zip(&want).zip(names) {
            close(
                g,
                w,
                tol,
                &format!("case {case} ({batch}x{fan_in} -> {out}): {name}"),
            );
        }
        // Data: the same output and parameter gradients, bit for bit, and no input gradient.
        let data = crate_pass(&layer, &x, &dy, true);
        for i in 0..3 {
            assert_eq!(data[i], got[i], "case {case}: Data changes {}", names[i]);
        }
    }
}

#[test]
fn output_and_gradients_agree_with_dfdx_matmul_f32() {
    agrees_with_dfdx::<f32>(30, 1, 1e-5);
}

#[test]
fn output_and_gradients_agree_with_dfdx_matmul_f64() {
    agrees_with_dfdx::<f64>(30, 2, 1e-12);
}

/// A permuted or broadcast input (a strided view of dfdx's) is read in its logical order:
/// the results equal those of the same values laid out row-major, bit for bit.
#[test]
fn strided_inputs_give_the_results_of_their_row_major_copies() {
    let dev = Cpu::default();
    let mut r = rng(3);
    let layer = Linear::<f64, Cpu>::new(6, 4, &dev, &mut r).unwrap();
    let dy = input::<f64>(&dev, 5, 4, &mut r);

    let xt = input::<f64>(&dev, 6, 5, &mut r);
    let permuted = xt.clone().permute::<_, Axes2<1, 0>>();
    let copy = dev.tensor_from_vec(permuted.as_vec(), (5, 6));
    // The output and the weight, bias and input gradients, the input's in its logical order.
    let run = |x: Matrix<f64, Cpu>| crate_pass(&layer, &x, &dy, false);
    assert_eq!(run(permuted), run(copy.clone()));

    let row: Tensor<(usize,), f64, Cpu> =
        dev.tensor_from_vec(vec![0.5, -1.0, 2.0, 0.0, 3.0, 1.5], (6,));
    let broadcast: Matrix<f64, Cpu> = row.clone().broadcast_like::<_, Axis<0>>(&(5, 6));
    let copy = dev.tensor_from_vec(broadcast.as_vec(), (5, 6));
    let (b, c) = (run(broadcast), run(copy));
    assert_eq!(b[..3], c[..3]);
    // The broadcast input's gradient is the copy's summed over the rows it repeats.
    let summed: Vec<f64> = (0..6)
        .map(|j| (0..5).map(|i| c[3][i * 6 + j]).sum())
        .collect();
    let got: Vec<f64> = b[3].iter().take(6).copied().collect();
    close(&got, &summed, 1e-12, "broadcast input gradient");
}

/// Gradients already in the buffers (a second use of the layer, or of its input) are added to.
#[test]
fn a_layer_used_twice_sums_its_gradients() {
    let dev = Cpu::default();
    let mut r = rng(4);
    let layer = Linear::<f64, Cpu>::new(7, 5, &dev, &mut r).unwrap();
    let x = input::<f64>(&dev, 9, 7, &mut r);
    let once =
        |x: Tensor<(usize, usize), f64, Cpu, OwnedTape<f64, Cpu>>| layer.forward(x).square().sum();

    let grads = layer.try_alloc_grads().unwrap();
    let g1 = once(x.clone().traced(grads)).backward();
    let grads = layer.try_alloc_grads().unwrap();
    // Two uses on one tape: y1 + y2 with the same input.
    let traced = x.clone().traced(grads);
    let twice = once(traced.with_empty_tape()) + once(traced);
    let g2 = twice.backward();
    for t in [
        g1.get(&layer.weight).as_vec(),
        g1.get(&layer.bias).as_vec(),
        g1.get(&x).as_vec(),
    ]
    .iter()
    .zip([
        g2.get(&layer.weight).as_vec(),
        g2.get(&layer.bias).as_vec(),
        g2.get(&x).as_vec(),
    ]) {
        let doubled: Vec<f64> = t.0.iter().map(|v| 2.0 * v).collect();
        close(&t.1, &doubled, 1e-12, "twice the gradient");
    }
}

/// Empty shapes (no rows, no outputs, no inputs) give empty or zero results, not a panic.
#[test]
fn empty_shapes_give_empty_or_zero_results() {
    let dev = Cpu::default();
    let mut r = rng(5);
    for (batch, fan_in, out) in [(0, 3, 2), (4, 3, 0), (0, 0, 0), (4, 0, 2)] {
        let layer = Linear::<f32, Cpu>::new(fan_in, out, &dev, &mut r).unwrap();
        let x: Matrix<f32, Cpu> = dev.zeros_like(&(batch, fan_in));
        assert_eq!(layer.forward(x.clone()).shape(), &(batch, out));
        let traced = layer.forward(x.clone().traced(layer.try_alloc_grads().unwrap()));
        assert_eq!(traced.shape(), &(batch, out));
    }
    // No inputs: the output is the bias, and only the bias learns.
    let layer = Linear::<f32, Cpu>::new(0, 2, &dev, &mut r).unwrap();
    let x: Matrix<f32, Cpu> = dev.zeros_like(&(4, 0));
    let dy: Matrix<f32, Cpu> = dev.ones_like(&(4, 2));
    let got = crate_pass(&layer, &x, &dy, false);
    let bias = layer.bias.as_vec();
    assert_eq!(
        got[0],
        [bias.clone(), bias.clone(), bias.clone(), bias].concat()
    );
    assert!(got[1].is_empty() && got[3].is_empty());
    assert_eq!(got[2], vec![4.0; 2]);
}

/// A wide layer's forward product is split over threads in fixed blocks of output units: the
/// output is the same, bit for bit, on 2, 3 and 4 threads, and the one-thread output to
/// rounding; so is the training step built on it.
#[test]
fn outputs_do_not_depend_on_the_thread_count_beyond_one() {
    let dev = Cpu::default();
    let mut r = rng(6);
    // 600 outputs: blocks of 256, 256 and 88.
    let layer = Linear::<f32, Cpu>::new(70, 600, &dev, &mut r).unwrap();
    let x = input::<f32>(&dev, 33, 70, &mut r);
    let dy = input::<f32>(&dev, 33, 600, &mut r);
    let on = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| crate_pass(&layer, &x, &dy, false))
    };
    let two = on(2);
    assert_eq!(on(3), two);
    assert_eq!(on(4), two);
    let one = on(1);
    for (a, b) in one.iter().zip(&two) {
        close(a, b, 1e-5, "one thread against two");
    }
    close(
        &two[0],
        &dfdx_pass(&layer, &x, &dy)[0],
        1e-5,
        "two threads against dfdx",
    );
}
