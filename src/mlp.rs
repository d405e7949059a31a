//! A multi-layer perceptron whose hidden layers can grow.

use dfdx::prelude::{Device, Dtype, HasShape, Module, Tape, Tensor};
use rand::Rng;

use crate::params::{Matrix, ParamMut, ParamRef, Params};
use crate::{
    grow_between, Activation, Expandable, ExpansionReport, GrowError, Init, Linear, Loss, Real,
};

/// The default cap on a hidden layer's width (see [`Mlp::with_max_width`]).
pub const DEFAULT_MAX_WIDTH: usize = 1 << 20;

/// A stack of [`Linear`] layers with one activation after each hidden layer, whose hidden
/// widths can grow in the middle of training.
///
/// ```
/// use dfdx_grow::dfdx::prelude::*;
/// use dfdx_grow::rand::{rngs::StdRng, SeedableRng};
/// use dfdx_grow::{Activation, Init, Mlp};
///
/// let dev = Cpu::default();
/// let mut rng = StdRng::seed_from_u64(0);
/// let mut mlp = Mlp::<f64, Cpu>::new(&[64, 32, 10], Activation::Relu, &dev, &mut rng);
/// let x: Tensor<(usize, usize), f64, Cpu> = dev.sample_normal_like(&(8, 64));
/// let before = mlp.forward(x.clone()).as_vec();
///
/// let report = mlp.expand_hidden(0, 16, &Init::ZerosOut, &mut rng).unwrap();
/// assert_eq!(mlp.widths(), vec![64, 48, 10]);
/// assert_eq!(report.params_after - report.params_before, 16 * 64 + 16 + 10 * 16);
/// let after = mlp.forward(x).as_vec();
/// // The function is unchanged (up to the rounding of a reordered sum).
/// assert!(before.iter().zip(&after).all(|(b, a)| (b - a).abs() <= 1e-12));
/// ```
#[derive(Clone, Debug)]
pub struct Mlp<E: Dtype, D: Device<E>> {
    layers: Vec<Linear<E, D>>,
    act: Activation,
    max_width: usize,
}

/// A probe batch: the input on which an expansion's effect is measured, and optionally a
/// target and loss to compare the loss before and after.
#[derive(Clone, Debug)]
pub struct Probe<E: Dtype, D: Device<E>> {
    /// The input batch.
    pub input: Matrix<E, D>,
    /// The target and the loss to evaluate, if any.
    pub target: Option<(Matrix<E, D>, Loss)>,
}

impl<E: Real, D: Device<E>> Mlp<E, D> {
    /// A network of widths `sizes` (input, hidden..., output), each layer initialised as
    /// [`Linear::new`].
    ///
    /// # Panics
    /// If `sizes` has fewer than two entries or a zero width; [`Mlp::try_new`] returns the
    /// error instead.
    pub fn new(sizes: &[usize], act: Activation, dev: &D, rng: &mut impl Rng) -> Self {
        match Self::try_new(sizes, act, dev, rng) {
            Ok(mlp) => mlp,
            Err(e) => panic!("{e}"),
        }
    }

    /// As [`Mlp::new`], with invalid sizes reported as an error.
    pub fn try_new(
        sizes: &[usize],
        act: Activation,
        dev: &D,
        rng: &mut impl Rng,
    ) -> Result<Self, GrowError> {
        let invalid = |reason: &str| GrowError::InvalidSizes {
            sizes: sizes.to_vec(),
            reason: reason.into(),
        };
        if sizes.len() < 2 {
            return Err(invalid("need at least an input and an output width"));
        }
        if sizes.contains(&0) {
            return Err(invalid("every width must be at least 1"));
        }
        let layers = sizes
            .windows(2)
            .map(|w| Linear::new(w[0], w[1], dev, rng))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_layers(layers, act)
    }

    /// A network from existing layers, which must chain (each layer's inputs = the previous
    /// layer's outputs).
    pub fn from_layers(layers: Vec<Linear<E, D>>, act: Activation) -> Result<Self, GrowError> {
        if layers.is_empty() {
            return Err(GrowError::InvalidSizes {
                sizes: vec![],
                reason: "an Mlp needs at least one layer".into(),
            });
        }
        for (i, pair) in layers.windows(2).enumerate() {
            if pair[0].out_width() != pair[1].in_width() {
                return Err(GrowError::ShapeMismatch {
                    layer: i + 1,
                    expected: pair[1].in_width(),
                    found: pair[0].out_width(),
                });
            }
        }
        Ok(Self {
            layers,
            act,
            max_width: DEFAULT_MAX_WIDTH,
        })
    }

    /// Caps every hidden layer's width at `cap`: growth past it is refused with
    /// [`GrowError::WidthCap`].
    pub fn with_max_width(mut self, cap: usize) -> Self {
        self.max_width = cap;
        self
    }

    /// The width cap in force (default [`DEFAULT_MAX_WIDTH`]).
    pub fn max_width(&self) -> usize {
        self.max_width
    }

    /// The widths: input, every hidden layer, output.
    pub fn widths(&self) -> Vec<usize> {
        std::iter::once(self.layers[0].in_width())
            .chain(self.layers.iter().map(|l| l.out_width()))
            .collect()
    }

    /// The number of hidden layers.
    pub fn hidden_layers(&self) -> usize {
        self.layers.len() - 1
    }

    /// The linear layers, first to last.
    pub fn layers(&self) -> &[Linear<E, D>] {
        &self.layers
    }

    /// The activation after each hidden layer.
    pub fn activation(&self) -> Activation {
        self.act
    }

    /// Checks that `x` is a non-empty batch of the model's input width (the forward pass
    /// itself, like dfdx's, panics on a wrong width).
    pub fn check_input<T>(&self, x: &Tensor<(usize, usize), E, D, T>) -> Result<(), GrowError> {
        let (batch, width) = *x.shape();
        let expected = self.layers[0].in_width();
        if batch == 0 || width != expected {
            return Err(GrowError::BadInput {
                expected,
                found: (batch, width),
            });
        }
        Ok(())
    }

    /// Adds `k` units to hidden layer `hidden` (0-based): its producing layer gains `k`
    /// output rows and bias entries, the consuming layer `k` input columns.
    ///
    /// On error nothing changes.
    pub fn expand_hidden(
        &mut self,
        hidden: usize,
        k: usize,
        init: &Init,
        rng: &mut impl Rng,
    ) -> Result<ExpansionReport, GrowError> {
        let old_width = self.check_growth(hidden, k, init)?;
        let params_before = self.num_params();
        let (head, tail) = self.layers.split_at_mut(hidden + 1);
        grow_between(&mut head[hidden], &mut tail[0], k, init, rng)?;
        Ok(ExpansionReport {
            layer: hidden,
            old_width,
            new_width: old_width + k,
            params_before,
            params_after: self.num_params(),
            init: init.clone(),
            exact: init.is_exact(),
            max_abs_output_change: None,
            output_scale: None,
            loss_before: None,
            loss_after: None,
        })
    }

    /// As [`Mlp::expand_hidden`], measuring on `probe` the largest output change and, when
    /// the probe has a target, the loss before and after.
    pub fn expand_hidden_probed(
        &mut self,
        hidden: usize,
        k: usize,
        init: &Init,
        rng: &mut impl Rng,
        probe: &Probe<E, D>,
    ) -> Result<ExpansionReport, GrowError> {
        self.check_growth(hidden, k, init)?;
        self.check_input(&probe.input)?;
        if let Some((target, _)) = &probe.target {
            let expected = (probe.input.shape().0, *self.widths().last().unwrap_or(&0));
            if *target.shape() != expected {
                return Err(GrowError::BadInput {
                    expected: expected.1,
                    found: *target.shape(),
                });
            }
        }
        let before = self.forward(probe.input.clone());
        let mut report = self.expand_hidden(hidden, k, init, rng)?;
        let after = self.forward(probe.input.clone());
        let (b, a) = (before.as_vec(), after.as_vec());
        let f = |x: E| x.to_f64().unwrap_or(f64::NAN);
        report.max_abs_output_change = Some(
            b.iter()
                .zip(&a)
                .map(|(x, y)| (f(*x) - f(*y)).abs())
                .fold(0.0, f64::max),
        );
        report.output_scale = Some(b.iter().map(|x| f(*x).abs()).fold(0.0, f64::max));
        if let Some((target, loss)) = &probe.target {
            report.loss_before = Some(loss.value(before, target));
            report.loss_after = Some(loss.value(after, target));
        }
        Ok(report)
    }

    /// The L2 norm of the gradient of each hidden layer's producing weights and bias (the
    /// signal [`crate::policy::GradNorm`] watches); a missing gradient counts as zero.
    pub fn hidden_grad_norms(
        &self,
        grads: &mut dfdx::prelude::Gradients<E, D>,
    ) -> Result<Vec<f64>, GrowError> {
        let per_tensor = self.grad_norms(grads)?;
        Ok(per_tensor
            .chunks(2)
            .take(self.hidden_layers())
            .map(|wb| wb.iter().map(|n| n * n).sum::<f64>().sqrt())
            .collect())
    }

    /// Every check of [`Mlp::expand_hidden`] that needs no sampling; returns the old width.
    pub fn check_growth(&self, hidden: usize, k: usize, init: &Init) -> Result<usize, GrowError> {
        if hidden >= self.hidden_layers() {
            return Err(GrowError::NoSuchLayer {
                index: hidden,
                hidden_layers: self.hidden_layers(),
            });
        }
        if k == 0 {
            return Err(GrowError::ZeroUnits);
        }
        let width = self.layers[hidden].out_width();
        let cap_err = GrowError::WidthCap {
            layer: hidden,
            width,
            k,
            cap: self.max_width,
        };
        let new_width = width.checked_add(k).ok_or(cap_err.clone())?;
        if new_width > self.max_width {
            return Err(cap_err);
        }
        // The grown tensors must be addressable: reject sizes whose element count overflows.
        let (inp, out) = (
            self.layers[hidden].in_width(),
            self.layers[hidden + 1].out_width(),
        );
        if new_width.checked_mul(inp.max(out)).is_none() {
            return Err(GrowError::WidthCap {
                layer: hidden,
                width,
                k,
                cap: usize::MAX / inp.max(out).max(1),
            });
        }
        init.check(k)?;
        Ok(width)
    }
}

impl<E: Dtype, D: Device<E>> Params<E, D> for Mlp<E, D> {
    fn visit(&self, f: &mut dyn FnMut(ParamRef<'_, E, D>)) {
        for l in &self.layers {
            l.visit(f);
        }
    }

    fn visit_mut(&mut self, f: &mut dyn FnMut(ParamMut<'_, E, D>)) {
        for l in &mut self.layers {
            l.visit_mut(f);
        }
    }
}

impl<E: Dtype, D: Device<E>, T: Tape<E, D>> Module<Tensor<(usize, usize), E, D, T>> for Mlp<E, D> {
    type Output = Tensor<(usize, usize), E, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Tensor<(usize, usize), E, D, T>) -> Result<Self::Output, D::Err> {
        let last = self.layers.len() - 1;
        let mut h = x;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.try_forward(h)?;
            if i < last {
                h = self.act.try_apply(h)?;
            }
        }
        Ok(h)
    }
}
