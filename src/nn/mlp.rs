//! A multi-layer perceptron whose hidden layers can grow.

use dfdx::prelude::{Backward, Device, Dtype, HasShape, Module, Tape, Tensor, Trace};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::grow::site::{check_growth, grow_site, grow_site_probed, DEFAULT_MAX_WIDTH};
use crate::health::Activity;
use crate::informed::{HostMatrix, SiteStatistics};
use crate::nn::affine::Batch;
use crate::params::{scoped, scoped_mut, Matrix, ParamMut, ParamRef, Params};
use crate::{
    Activation, Expandable, ExpansionReport, GrowError, Growable, Init, Linear, Loss, LossProbe,
    Real, Site, SiteMut,
};

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

impl<E: Dtype, D: Device<E>> Probe<E, D> {
    /// Checks that the probe fits a model that reads `input_width` features and gives
    /// `outputs` values per example: a non-empty batch of that width, and a target (if any)
    /// of the output's shape. Every model's probe checks through here, so a probe that does
    /// not fit is NaN or an error everywhere, never a panic inside the loss.
    pub fn check(&self, input_width: usize, outputs: usize) -> Result<(), GrowError> {
        let (batch, width) = *self.input.shape();
        if batch == 0 || width != input_width {
            return Err(GrowError::BadInput {
                expected: input_width,
                found: (batch, width),
            });
        }
        match &self.target {
            Some((target, _)) if *target.shape() != (batch, outputs) => Err(GrowError::BadInput {
                expected: outputs,
                found: *target.shape(),
            }),
            _ => Ok(()),
        }
    }
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
                    what: format!("layers.{} inputs", i + 1),
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

    /// The pre-activations of hidden layer `hidden` on the batch `x`, example-major (batch x
    /// width): what the activation sees, from which [`crate::health`] tells dead units.
    pub fn pre_activations(&self, hidden: usize, x: &Matrix<E, D>) -> Result<Vec<E>, GrowError> {
        self.check_input(x)?;
        let h = self.hidden_input(hidden, x)?;
        Ok(self.layers[hidden].forward(h).as_vec())
    }

    /// The statistics of site `"hidden.{hidden}"` on the batch `x` with target `y` (see
    /// [`crate::informed`]): the producer's input `h`, the site's activations `a`, and the
    /// per-example gradient of `loss` at the consumer's output (the next layer's
    /// pre-activation, or the logits), all in f64; their cost is recorded
    /// ([`Mlp::statistics_flops`]).
    pub fn site_statistics(
        &self,
        hidden: usize,
        x: &Matrix<E, D>,
        y: &Matrix<E, D>,
        loss: Loss,
    ) -> Result<SiteStatistics, GrowError> {
        self.check_probe(&Probe {
            input: x.clone(),
            target: Some((y.clone(), loss)),
        })?;
        let n = x.shape().0;
        let h = self.hidden_input(hidden, x)?;
        let consumer = &self.layers[hidden + 1];
        let a = self
            .act
            .try_apply(self.layers[hidden].forward(h.clone()))
            .map_err(GrowError::device)?;
        // The consumer's output is the leaf of a fresh tape: the backward pass stops there.
        let out = consumer.forward(a.clone());
        let mut t = out.clone().leaky_traced();
        for layer in &self.layers[hidden + 2..] {
            t = layer.forward(self.act.try_apply(t).map_err(GrowError::device)?);
        }
        let grads = loss.apply(t, y.clone()).backward();
        let g = grads.get(&out).as_vec();
        // Per example: the loss is the batch mean, so each example's gradient is n times.
        let scale = E::from_usize(n).unwrap_or_else(E::one);
        let g: Vec<E> = g.into_iter().map(|v| v * scale).collect();
        let host = |rows, cols, v: &[E]| HostMatrix::from_values(rows, cols, v);
        SiteStatistics::new(
            host(n, h.shape().1, &h.as_vec())?,
            host(n, a.shape().1, &a.as_vec())?,
            vec![host(n, consumer.out_width(), &g)?],
            Some(self.act),
        )
        .map(|s| s.with_flops(self.statistics_flops(hidden, n)))
    }

    /// The FLOPs of [`Mlp::site_statistics`] on `rows` examples: one forward pass of the whole
    /// network, and the backward pass from the loss down to the consumer's output (both
    /// products of each later layer, as dfdx computes them, and the activations' derivatives).
    pub fn statistics_flops(&self, hidden: usize, rows: usize) -> f64 {
        let widths = self.widths();
        let r = rows as f64;
        let backward: f64 = widths
            .windows(2)
            .skip(hidden + 2)
            .map(|w| 4.0 * r * w[0] as f64 * w[1] as f64 + 2.0 * r * w[0] as f64)
            .sum();
        let loss = 3.0 * r * *widths.last().unwrap_or(&0) as f64;
        crate::flops::forward(&widths, rows) + backward + loss
    }

    /// The input of hidden layer `hidden`'s producer on `x`.
    fn hidden_input(&self, hidden: usize, x: &Matrix<E, D>) -> Result<Matrix<E, D>, GrowError> {
        if hidden >= self.hidden_layers() {
            return Err(GrowError::NoSuchLayer {
                index: hidden,
                hidden_layers: self.hidden_layers(),
            });
        }
        let mut h = x.clone();
        for layer in &self.layers[..hidden] {
            h = self
                .act
                .try_apply(layer.forward(h))
                .map_err(GrowError::device)?;
        }
        Ok(h)
    }

    /// The name of hidden layer `hidden`'s growth site: `"hidden.{hidden}"`.
    pub fn site_name(hidden: usize) -> String {
        format!("hidden.{hidden}")
    }

    /// Adds `k` units to hidden layer `hidden` (0-based), the site `"hidden.{hidden}"`: its
    /// producing layer gains `k` output rows and bias entries, the consuming layer `k` input
    /// columns.
    ///
    /// On error nothing changes.
    pub fn expand_hidden(
        &mut self,
        hidden: usize,
        k: usize,
        init: &Init,
        rng: &mut impl Rng,
    ) -> Result<ExpansionReport, GrowError> {
        self.check_growth(hidden, k, init)?;
        grow_site(self, &Self::site_name(hidden), k, init, rng)
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
        self.check_probe(probe)?;
        grow_site_probed(self, &Self::site_name(hidden), k, init, rng, probe)
    }

    /// Checks that `probe` fits the model: a non-empty batch of the input width, and a
    /// target of the output's shape.
    pub fn check_probe(&self, probe: &Probe<E, D>) -> Result<(), GrowError> {
        probe.check(
            self.layers[0].in_width(),
            self.layers[self.layers.len() - 1].out_width(),
        )
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
            .map(|wb| wb.iter().map(|(_, n)| n * n).sum::<f64>().sqrt())
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
        Ok(check_growth(self, &Self::site_name(hidden), k, init)?.width)
    }
}

/// What an [`Mlp`] is built from: its widths, activation and width cap (what a checkpoint
/// saves as the model's description).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpSpec {
    /// Input, hidden and output widths.
    pub widths: Vec<usize>,
    /// The activation after each hidden layer.
    pub activation: Activation,
    /// The cap on every hidden layer's width.
    pub max_width: usize,
}

impl MlpSpec {
    /// The network with these widths, its weights zero.
    pub fn build<E: Real, D: Device<E>>(&self, dev: &D) -> Result<Mlp<E, D>, GrowError> {
        let invalid = |reason: &str| GrowError::InvalidSizes {
            sizes: self.widths.clone(),
            reason: reason.into(),
        };
        if self.widths.len() < 2 || self.widths.contains(&0) {
            return Err(invalid("need at least two widths, each at least 1"));
        }
        let layers = self
            .widths
            .windows(2)
            .map(|w| {
                let n = w[0]
                    .checked_mul(w[1])
                    .ok_or_else(|| invalid("a layer's size overflows"))?;
                let weight = dev
                    .try_tensor_from_vec(vec![E::zero(); n], (w[1], w[0]))
                    .map_err(GrowError::device)?;
                let bias = dev
                    .try_tensor_from_vec(vec![E::zero(); w[1]], (w[1],))
                    .map_err(GrowError::device)?;
                Linear::from_parts(weight, bias)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Mlp::from_layers(layers, self.activation)?.with_max_width(self.max_width))
    }
}

impl<E: Real, D: Device<E>> Growable<E, D> for Mlp<E, D> {
    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(MlpSpec {
            widths: self.widths(),
            activation: self.act,
            max_width: self.max_width,
        })
        .unwrap_or(serde_json::Value::Null)
    }

    fn sites(&self) -> Vec<Site> {
        (0..self.hidden_layers())
            .map(|i| {
                Site::new(Self::site_name(i), &self.layers[i], &[&self.layers[i + 1]])
                    .with_params([format!("layers.{i}.weight"), format!("layers.{i}.bias")])
                    .with_max_width(self.max_width)
            })
            .collect()
    }

    fn site_mut(&mut self, name: &str) -> Option<SiteMut<'_, E>> {
        let i: usize = name.strip_prefix("hidden.")?.parse().ok()?;
        if i >= self.hidden_layers() || name != Self::site_name(i) {
            return None;
        }
        let (head, tail) = self.layers.split_at_mut(i + 1);
        Some(SiteMut {
            producer: &mut head[i],
            consumers: vec![&mut tail[0]],
        })
    }

    fn forward_flops(&self) -> f64 {
        crate::flops::forward(&self.widths(), 1)
    }

    fn train_flops(&self) -> f64 {
        crate::flops::train_step(&self.widths(), 1, 0.0)
    }
}

impl<E: Real, D: Device<E>> LossProbe<Mlp<E, D>> for Probe<E, D> {
    /// The probe's loss, or NaN when the probe has no target or does not fit the model.
    fn loss(&self, model: &Mlp<E, D>) -> f64 {
        match (&self.target, model.check_probe(self)) {
            (Some((target, loss)), Ok(())) => loss.value(model.forward(self.input.clone()), target),
            _ => f64::NAN,
        }
    }

    fn outputs(&self, model: &Mlp<E, D>) -> Option<Vec<f64>> {
        model.check_probe(self).ok()?;
        let out = model.forward(self.input.clone()).as_vec();
        Some(out.iter().map(|x| x.to_f64().unwrap_or(f64::NAN)).collect())
    }

    fn activity(&self, model: &Mlp<E, D>, site: &str) -> Option<Activity> {
        let i: usize = site.strip_prefix("hidden.")?.parse().ok()?;
        let pre = model.pre_activations(i, &self.input).ok()?;
        Activity::of_activation(&pre, model.layers()[i].out_width(), model.activation()).ok()
    }

    fn statistics(&self, model: &Mlp<E, D>, site: &str) -> Option<SiteStatistics> {
        let i: usize = site.strip_prefix("hidden.")?.parse().ok()?;
        let (target, loss) = self.target.as_ref()?;
        model.site_statistics(i, &self.input, target, *loss).ok()
    }
}

impl<E: Dtype, D: Device<E>> Params<E, D> for Mlp<E, D> {
    fn visit(&self, f: &mut dyn FnMut(&str, ParamRef<'_, E, D>)) {
        for (i, l) in self.layers.iter().enumerate() {
            l.visit(&mut scoped(&format!("layers.{i}"), f));
        }
    }

    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_, E, D>)) {
        for (i, l) in self.layers.iter_mut().enumerate() {
            l.visit_mut(&mut scoped_mut(&format!("layers.{i}"), f));
        }
    }
}

impl<E: Dtype, D: Device<E>, T: Tape<E, D>> Module<Tensor<(usize, usize), E, D, T>> for Mlp<E, D> {
    type Output = Tensor<(usize, usize), E, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Tensor<(usize, usize), E, D, T>) -> Result<Self::Output, D::Err> {
        let h = self.layers[0].try_forward(x)?;
        self.forward_after_first(h)
    }
}

impl<E: Dtype, D: Device<E>> Mlp<E, D> {
    /// The rest of the forward pass from the first layer's output `h`: the activation and the
    /// next layer, for every layer after the first (what the plain forward and the forward on
    /// `Data` share).
    pub(crate) fn forward_after_first<T: Tape<E, D>>(
        &self,
        mut h: Batch<E, D, T>,
    ) -> Result<Batch<E, D, T>, D::Err> {
        for layer in &self.layers[1..] {
            h = self.act.try_apply(h)?;
            h = layer.try_forward(h)?;
        }
        Ok(h)
    }
}
