//! A small convolutional network whose convolutions can gain channels.

use dfdx::prelude::{Cpu, Device, Dtype, HasShape, Module, ReshapeTo, Tape, Tensor};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::grow::site::DEFAULT_MAX_WIDTH;
use crate::health::Activity;
use crate::nn::conv::{out_len, Conv2d, FlatLinear, Images};
use crate::params::{scoped, scoped_mut, Matrix, ParamMut, ParamRef, Params};
use crate::{
    Activation, Data, Expandable, GrowError, Growable, LossProbe, Probe, Real, Site, SiteMut,
};

/// One convolution of a [`Cnn`]: output channels, square kernel, stride, zero padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvSpec {
    /// Output channels.
    pub channels: usize,
    /// Kernel side.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on each side.
    pub padding: usize,
}

/// What a [`Cnn`] is built from (what a checkpoint saves as its description).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CnnSpec {
    /// Input channels, height, width.
    pub input: (usize, usize, usize),
    /// The convolutions, first to last (their current channels).
    pub convs: Vec<ConvSpec>,
    /// Outputs of the linear head.
    pub classes: usize,
    /// The activation after each convolution.
    pub activation: Activation,
    /// The cap on every convolution's channels.
    pub max_width: usize,
}

/// `conv -> act -> conv -> act -> ... -> flatten -> linear`: each convolution's output
/// channels are a growth site (`convs.{i}`), read by the next convolution or, for the last,
/// by the linear head, where every new channel adds `h x w` input columns.
///
/// It takes its input as a batch of flattened images, `(batch, c*h*w)` channel-major (as
/// data sets hand them out and [`crate::Probe`] holds them), and reshapes it.
///
/// ```
/// use dfdx_grow::dfdx::prelude::*;
/// use dfdx_grow::rand::{rngs::StdRng, SeedableRng};
/// use dfdx_grow::{grow_site, Activation, Cnn, ConvSpec, Growable, Init};
///
/// let (dev, mut rng) = (Cpu::default(), StdRng::seed_from_u64(0));
/// let conv = |channels, stride| ConvSpec { channels, kernel: 3, stride, padding: 1 };
/// let mut cnn = Cnn::<f64, Cpu>::new((1, 8, 8), &[conv(4, 1), conv(8, 2)], 10, Activation::Relu, &dev, &mut rng).unwrap();
/// let x: Tensor<(usize, usize), f64, Cpu> = dev.sample_normal_like(&(2, 64));
/// let before = cnn.forward(x.clone()).as_vec();
/// grow_site(&mut cnn, "convs.1", 4, &Init::ZerosOut, &mut rng).unwrap();
/// let after = cnn.forward(x).as_vec();
/// assert!(before.iter().zip(&after).all(|(b, a)| (b - a).abs() <= 1e-12));
/// assert_eq!(cnn.sites()[1].params_per_unit, 4 * 9 + 1 + 10 * 4 * 4);
/// ```
#[derive(Clone, Debug)]
pub struct Cnn<E: Dtype, D: Device<E>> {
    input: (usize, usize, usize),
    convs: Vec<Conv2d<E, D>>,
    head: FlatLinear<E, D>,
    act: Activation,
    max_width: usize,
    /// The spatial size after each convolution.
    maps: Vec<(usize, usize)>,
}

impl<E: Real, D: Device<E>> Cnn<E, D> {
    /// A network on images of `input` = (channels, height, width), with these convolutions
    /// and a linear head of `classes` outputs, each layer initialised as PyTorch's defaults.
    pub fn new(
        input: (usize, usize, usize),
        convs: &[ConvSpec],
        classes: usize,
        act: Activation,
        dev: &D,
        rng: &mut impl Rng,
    ) -> Result<Self, GrowError> {
        let maps = Self::maps(input, convs)?;
        let mut layers = Vec::with_capacity(convs.len());
        let mut c = input.0;
        for s in convs {
            layers.push(Conv2d::new(
                c, s.channels, s.kernel, s.stride, s.padding, dev, rng,
            )?);
            c = s.channels;
        }
        let head = FlatLinear::new(c, maps[maps.len() - 1], classes, dev, rng)?;
        Ok(Self {
            input,
            convs: layers,
            head,
            act,
            max_width: DEFAULT_MAX_WIDTH,
            maps,
        })
    }

    /// The spatial size after each convolution, or an error for a geometry that does not fit.
    fn maps(
        input: (usize, usize, usize),
        convs: &[ConvSpec],
    ) -> Result<Vec<(usize, usize)>, GrowError> {
        let invalid = |reason: String| GrowError::InvalidSizes {
            sizes: vec![input.0, input.1, input.2],
            reason,
        };
        if convs.is_empty() || input.0 == 0 || input.1 == 0 || input.2 == 0 {
            return Err(invalid(
                "need at least one convolution and a non-empty input".into(),
            ));
        }
        let (mut h, mut w) = (input.1, input.2);
        let mut maps = Vec::new();
        for (i, s) in convs.iter().enumerate() {
            if s.channels == 0 || s.kernel == 0 || s.stride == 0 {
                return Err(invalid(format!(
                    "convolution {i}: channels, kernel and stride must be at least 1"
                )));
            }
            let out = |n: usize| out_len(n, s.kernel, s.stride, s.padding);
            let (Some(oh), Some(ow)) = (out(h), out(w)) else {
                return Err(invalid(format!(
                    "convolution {i}: a {0}x{0} kernel does not fit a {h}x{w} map",
                    s.kernel
                )));
            };
            (h, w) = (oh, ow);
            maps.push((h, w));
        }
        Ok(maps)
    }

    /// Caps every convolution's channels at `cap`.
    pub fn with_max_width(mut self, cap: usize) -> Self {
        self.max_width = cap;
        self
    }

    /// The convolutions, first to last.
    pub fn convs(&self) -> &[Conv2d<E, D>] {
        &self.convs
    }

    /// The linear head.
    pub fn head(&self) -> &FlatLinear<E, D> {
        &self.head
    }

    /// The description a checkpoint saves.
    pub fn spec(&self) -> CnnSpec {
        CnnSpec {
            input: self.input,
            convs: self
                .convs
                .iter()
                .map(|c| ConvSpec {
                    channels: c.out_channels(),
                    kernel: c.kernel().0,
                    stride: c.stride(),
                    padding: c.padding(),
                })
                .collect(),
            classes: self.head.out_width(),
            activation: self.act,
            max_width: self.max_width,
        }
    }

    /// Checks that `x` is a non-empty batch of flattened images of the model's input.
    pub fn check_input<T>(&self, x: &Tensor<(usize, usize), E, D, T>) -> Result<(), GrowError> {
        let (batch, width) = *x.shape();
        let expected = self.input.0 * self.input.1 * self.input.2;
        if batch == 0 || width != expected {
            return Err(GrowError::BadInput {
                expected,
                found: (batch, width),
            });
        }
        Ok(())
    }

    fn images<T: Tape<E, D>>(
        &self,
        x: Tensor<(usize, usize), E, D, T>,
    ) -> Result<Images<E, D, T>, D::Err> {
        let b = x.shape().0;
        let (c, h, w) = self.input;
        x.try_reshape_like(&(b, c, h, w))
    }

    fn rest<T: Tape<E, D>>(
        &self,
        mut h: Images<E, D, T>,
        from: usize,
    ) -> Result<Flat<E, D, T>, D::Err> {
        for conv in &self.convs[from..] {
            h = self.act.try_apply(conv.try_forward(h)?)?;
        }
        self.head.try_forward(h)
    }

    /// The pre-activations of convolution `i`'s channels on the flattened batch `x`, one row
    /// per (image, position): each channel's value at every position of every image.
    pub fn pre_activations(
        &self,
        i: usize,
        x: &Matrix<E, D>,
    ) -> Result<(Vec<E>, usize), GrowError> {
        self.check_input(x)?;
        let conv = self.convs.get(i).ok_or_else(|| GrowError::NoSuchSite {
            name: format!("convs.{i}"),
            sites: (0..self.convs.len())
                .map(|j| format!("convs.{j}"))
                .collect(),
        })?;
        let mut h = self.images(x.clone()).map_err(GrowError::device)?;
        for c in &self.convs[..i] {
            h = self
                .act
                .try_apply(c.forward(h))
                .map_err(GrowError::device)?;
        }
        let z = conv.forward(h);
        let (b, ch, oh, ow) = *z.shape();
        // (batch, channel, position) -> (batch * position, channel).
        let v = z.as_vec();
        let mut out = Vec::with_capacity(v.len());
        for img in 0..b {
            for p in 0..oh * ow {
                out.extend((0..ch).map(|c| v[(img * ch + c) * oh * ow + p]));
            }
        }
        Ok((out, ch))
    }
}

/// A batch of flattened images, (batch, c*h*w).
type Flat<E, D, T> = Tensor<(usize, usize), E, D, T>;

impl<E: Real, D: Device<E>> Growable<E, D> for Cnn<E, D> {
    fn sites(&self) -> Vec<Site> {
        (0..self.convs.len())
            .map(|i| {
                let consumer: &dyn Expandable<E> = match self.convs.get(i + 1) {
                    Some(c) => c,
                    None => &self.head,
                };
                Site::new(format!("convs.{i}"), &self.convs[i], &[consumer])
                    .with_params([format!("convs.{i}.weight"), format!("convs.{i}.bias")])
                    .with_max_width(self.max_width)
            })
            .collect()
    }

    fn site_mut(&mut self, name: &str) -> Option<SiteMut<'_, E>> {
        let i: usize = name.strip_prefix("convs.")?.parse().ok()?;
        if i >= self.convs.len() || name != format!("convs.{i}") {
            return None;
        }
        let (head, tail) = self.convs.split_at_mut(i + 1);
        let consumer: &mut dyn Expandable<E> = match tail.first_mut() {
            Some(c) => c,
            None => &mut self.head,
        };
        Some(SiteMut {
            producer: &mut head[i],
            consumers: vec![consumer],
        })
    }

    fn forward_flops(&self) -> f64 {
        let (mut h, mut w) = (self.input.1, self.input.2);
        let mut total = 0.0;
        for (conv, &(oh, ow)) in self.convs.iter().zip(&self.maps) {
            total += conv.forward_flops(h, w).unwrap_or(0.0);
            // The activation.
            total += (conv.out_channels() * oh * ow) as f64;
            (h, w) = (oh, ow);
        }
        total + self.head.forward_flops()
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(self.spec()).unwrap_or(serde_json::Value::Null)
    }
}

impl<E: Dtype, D: Device<E>> Params<E, D> for Cnn<E, D> {
    fn visit(&self, f: &mut dyn FnMut(&str, ParamRef<'_, E, D>)) {
        for (i, c) in self.convs.iter().enumerate() {
            c.visit(&mut scoped(&format!("convs.{i}"), f));
        }
        self.head.visit(&mut scoped("head", f));
    }

    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_, E, D>)) {
        for (i, c) in self.convs.iter_mut().enumerate() {
            c.visit_mut(&mut scoped_mut(&format!("convs.{i}"), f));
        }
        self.head.visit_mut(&mut scoped_mut("head", f));
    }
}

impl<E: Real, D: Device<E>, T: Tape<E, D>> Module<Flat<E, D, T>> for Cnn<E, D> {
    type Output = Flat<E, D, T>;
    type Error = D::Err;

    /// Panics where [`Cnn::check_input`] fails (as dfdx's own layers panic on shapes).
    fn try_forward(&self, x: Flat<E, D, T>) -> Result<Self::Output, D::Err> {
        if let Err(e) = self.check_input(&x) {
            panic!("Cnn::forward: {e}");
        }
        let x = self.images(x)?;
        self.rest(x, 0)
    }
}

/// The first convolution on data skips the input's gradient (see [`Data`]).
impl<E: Real, D: Device<E>, T: Tape<E, D> + 'static> Module<Data<Flat<E, D, T>>> for Cnn<E, D>
where
    Cpu: Device<E>,
{
    type Output = Flat<E, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Data<Flat<E, D, T>>) -> Result<Self::Output, D::Err> {
        if let Err(e) = self.check_input(&x.0) {
            panic!("Cnn::forward: {e}");
        }
        let x = self.images(x.0)?;
        let h = self.act.try_apply(self.convs[0].try_forward(Data(x))?)?;
        self.rest(h, 1)
    }
}

impl<E: Real, D: Device<E>> LossProbe<Cnn<E, D>> for Probe<E, D> {
    /// The probe's loss, or NaN when the probe has no target or does not fit the model.
    fn loss(&self, model: &Cnn<E, D>) -> f64 {
        let (c, h, w) = model.input;
        let fits = self.check(c * h * w, model.head.out_width()).is_ok();
        match &self.target {
            Some((target, loss)) if fits => loss.value(model.forward(self.input.clone()), target),
            _ => f64::NAN,
        }
    }

    fn outputs(&self, model: &Cnn<E, D>) -> Option<Vec<f64>> {
        model.check_input(&self.input).ok()?;
        let out = model.forward(self.input.clone()).as_vec();
        Some(out.iter().map(|x| x.to_f64().unwrap_or(f64::NAN)).collect())
    }

    /// A channel is active on an example at a position where its pre-activation is.
    fn activity(&self, model: &Cnn<E, D>, site: &str) -> Option<Activity> {
        let i: usize = site.strip_prefix("convs.")?.parse().ok()?;
        let (pre, ch) = model.pre_activations(i, &self.input).ok()?;
        Activity::of_activation(&pre, ch, model.act).ok()
    }
}
