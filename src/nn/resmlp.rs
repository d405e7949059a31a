//! A residual MLP whose blocks can widen and whose depth can grow.

use dfdx::prelude::{
    Backward, Cpu, Device, Dtype, HasShape, Module, Tape, Tensor, Trace, TryAdd, WithEmptyTape,
};
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use crate::grow::site::DEFAULT_MAX_WIDTH;
use crate::health::Activity;
use crate::informed::{HostMatrix, SiteStatistics};
use crate::params::{scoped, scoped_mut, Matrix, ParamMut, ParamRef, Params};
use crate::{
    Activation, Expandable, GrowError, Growable, Linear, Loss, LossProbe, Probe, Real, Site,
};
use crate::{Data, SiteMut};

/// One residual block, `x + fc2(act(fc1(x)))`, named `blocks.{id}`.
#[derive(Clone, Debug)]
pub struct Block<E: Dtype, D: Device<E>> {
    /// Stable number: blocks keep their name when others are inserted before them.
    pub id: u64,
    /// Stream -> hidden.
    pub fc1: Linear<E, D>,
    /// Hidden -> stream.
    pub fc2: Linear<E, D>,
}

impl<E: Dtype, D: Device<E>> Block<E, D> {
    /// The block's name, `blocks.{id}`.
    pub fn name(&self) -> String {
        format!("blocks.{}", self.id)
    }

    /// Its growth site's name, `blocks.{id}.hidden`.
    pub fn site_name(&self) -> String {
        format!("blocks.{}.hidden", self.id)
    }
}

/// A residual MLP: `input` maps the data to a stream of `width` features, each block adds
/// `fc2(act(fc1(x)))` to the stream, `head` maps the stream to the outputs.
///
/// Each block's hidden layer is a growth site (`blocks.{id}.hidden`), and
/// [`Growable::deepen`] inserts a new block whose `fc2` is zero, so it adds exactly zero:
///
/// ```
/// use dfdx_grow::dfdx::prelude::*;
/// use dfdx_grow::rand::{rngs::StdRng, SeedableRng};
/// use dfdx_grow::{grow_site, Activation, Growable, Init, ResMlp};
///
/// let (dev, mut rng) = (Cpu::default(), StdRng::seed_from_u64(0));
/// let mut net = ResMlp::<f64, Cpu>::new(8, 16, &[32, 32], 3, Activation::Relu, &dev, &mut rng).unwrap();
/// let x: Tensor<(usize, usize), f64, Cpu> = dev.sample_normal_like(&(4, 8));
/// let before = net.forward(x.clone()).as_vec();
///
/// grow_site(&mut net, "blocks.1.hidden", 16, &Init::ZerosOut, &mut rng).unwrap();
/// let new = net.deepen("blocks.0", 24, &mut rng).unwrap();
/// assert_eq!(new, "blocks.2");
/// assert_eq!(net.blocks(), ["blocks.0", "blocks.2", "blocks.1"]);
/// let after = net.forward(x).as_vec();
/// assert!(before.iter().zip(&after).all(|(b, a)| (b - a).abs() <= 1e-12));
/// ```
#[derive(Clone, Debug)]
pub struct ResMlp<E: Dtype, D: Device<E>> {
    input: Linear<E, D>,
    blocks: Vec<Block<E, D>>,
    head: Linear<E, D>,
    act: Activation,
    max_width: usize,
    next_id: u64,
}

/// What a [`ResMlp`] is built from (what a checkpoint saves as its description).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResMlpSpec {
    /// Input features.
    pub input: usize,
    /// The stream's width.
    pub width: usize,
    /// Every block's id and hidden width, in order.
    pub blocks: Vec<(u64, usize)>,
    /// Outputs.
    pub output: usize,
    /// The activation inside each block.
    pub activation: Activation,
    /// The cap on every block's hidden width.
    pub max_width: usize,
    /// The id the next inserted block gets.
    pub next_id: u64,
}

impl ResMlpSpec {
    /// The network this describes, its weights zero.
    pub fn build<E: Real, D: Device<E>>(&self, dev: &D) -> Result<ResMlp<E, D>, GrowError> {
        let zeros = |inp: usize, out: usize| -> Result<Linear<E, D>, GrowError> {
            let n = inp
                .checked_mul(out)
                .ok_or_else(|| GrowError::InvalidSizes {
                    sizes: vec![inp, out],
                    reason: "a layer's size overflows".into(),
                })?;
            Linear::from_parts(
                dev.try_tensor_from_vec(vec![E::zero(); n], (out, inp))
                    .map_err(GrowError::device)?,
                dev.try_tensor_from_vec(vec![E::zero(); out], (out,))
                    .map_err(GrowError::device)?,
            )
        };
        check_sizes(
            self.input,
            self.width,
            self.output,
            self.blocks.iter().map(|b| b.1),
        )?;
        let mut ids = std::collections::BTreeSet::new();
        let mut blocks = Vec::new();
        for &(id, hidden) in &self.blocks {
            if !ids.insert(id) || id >= self.next_id {
                return Err(GrowError::InvalidSizes {
                    sizes: vec![],
                    reason: format!(
                        "block id {id} repeats or is not below next_id {}",
                        self.next_id
                    ),
                });
            }
            blocks.push(Block {
                id,
                fc1: zeros(self.width, hidden)?,
                fc2: zeros(hidden, self.width)?,
            });
        }
        Ok(ResMlp {
            input: zeros(self.input, self.width)?,
            blocks,
            head: zeros(self.width, self.output)?,
            act: self.activation,
            max_width: self.max_width,
            next_id: self.next_id,
        })
    }
}

fn check_sizes(
    input: usize,
    width: usize,
    output: usize,
    hidden: impl Iterator<Item = usize>,
) -> Result<(), GrowError> {
    let mut sizes = vec![input, width, output];
    sizes.extend(hidden);
    if sizes.contains(&0) {
        return Err(GrowError::InvalidSizes {
            sizes,
            reason: "every width must be at least 1".into(),
        });
    }
    Ok(())
}

impl<E: Real, D: Device<E>> ResMlp<E, D> {
    /// A network of `input` features, a stream of `width`, one block per entry of `hidden`
    /// (its hidden width), and `output` outputs; every layer initialised as [`Linear::new`].
    pub fn new(
        input: usize,
        width: usize,
        hidden: &[usize],
        output: usize,
        act: Activation,
        dev: &D,
        rng: &mut impl Rng,
    ) -> Result<Self, GrowError> {
        check_sizes(input, width, output, hidden.iter().copied())?;
        let input_layer = Linear::new(input, width, dev, rng)?;
        let blocks = hidden
            .iter()
            .enumerate()
            .map(|(i, &h)| {
                Ok(Block {
                    id: i as u64,
                    fc1: Linear::new(width, h, dev, rng)?,
                    fc2: Linear::new(h, width, dev, rng)?,
                })
            })
            .collect::<Result<Vec<_>, GrowError>>()?;
        Ok(Self {
            input: input_layer,
            blocks,
            head: Linear::new(width, output, dev, rng)?,
            act,
            max_width: DEFAULT_MAX_WIDTH,
            next_id: hidden.len() as u64,
        })
    }

    /// Caps every block's hidden width at `cap`.
    pub fn with_max_width(mut self, cap: usize) -> Self {
        self.max_width = cap;
        self
    }

    /// The blocks, in order.
    pub fn block_list(&self) -> &[Block<E, D>] {
        &self.blocks
    }

    /// The stream's width.
    pub fn width(&self) -> usize {
        self.input.out_width()
    }

    /// The description a checkpoint saves.
    pub fn spec(&self) -> ResMlpSpec {
        ResMlpSpec {
            input: self.input.in_width(),
            width: self.width(),
            blocks: self
                .blocks
                .iter()
                .map(|b| (b.id, b.fc1.out_width()))
                .collect(),
            output: self.head.out_width(),
            activation: self.act,
            max_width: self.max_width,
            next_id: self.next_id,
        }
    }

    /// The pre-activations of block `name`'s hidden units on the batch `x`, example-major.
    pub fn pre_activations(&self, block: &str, x: &Matrix<E, D>) -> Result<Vec<E>, GrowError> {
        let (batch, width) = *x.shape();
        if batch == 0 || width != self.input.in_width() {
            return Err(GrowError::BadInput {
                expected: self.input.in_width(),
                found: (batch, width),
            });
        }
        let mut h = self.input.forward(x.clone());
        for b in &self.blocks {
            let z = b.fc1.forward(h.clone());
            if b.name() == block {
                return Ok(z.as_vec());
            }
            h = h + b
                .fc2
                .forward(self.act.try_apply(z).map_err(GrowError::device)?);
        }
        Err(GrowError::NoSuchSite {
            name: block.to_string(),
            sites: self.blocks.iter().map(Block::name).collect(),
        })
    }

    /// The statistics of site `"blocks.{id}.hidden"` on the batch `x` with target `y` (see
    /// [`crate::informed`]): the block's input (the stream), its hidden activations, and the
    /// per-example gradient of `loss` at the block's output (`fc2`'s output, which the stream
    /// adds), in f64, their cost recorded (one forward pass and the backward pass from the
    /// loss down to the block).
    pub fn site_statistics(
        &self,
        site: &str,
        x: &Matrix<E, D>,
        y: &Matrix<E, D>,
        loss: Loss,
    ) -> Result<SiteStatistics, GrowError> {
        let probe = Probe {
            input: x.clone(),
            target: Some((y.clone(), loss)),
        };
        let (n, inp) = *x.shape();
        if !fits(self, &probe) {
            return Err(GrowError::BadInput {
                expected: self.input.in_width(),
                found: (n, inp),
            });
        }
        let no_site = || GrowError::NoSuchSite {
            name: site.to_string(),
            sites: self.blocks.iter().map(Block::site_name).collect(),
        };
        let pos = self
            .blocks
            .iter()
            .position(|b| b.site_name() == site)
            .ok_or_else(no_site)?;
        let mut stream = self.input.forward(x.clone());
        for b in &self.blocks[..pos] {
            let z = b.fc1.forward(stream.clone());
            stream = stream
                + b.fc2
                    .forward(self.act.try_apply(z).map_err(GrowError::device)?);
        }
        let block = &self.blocks[pos];
        let a = self
            .act
            .try_apply(block.fc1.forward(stream.clone()))
            .map_err(GrowError::device)?;
        // The gradient at the block's output equals the gradient at the stream after it (a
        // sum), so the stream after the block is the leaf of a fresh tape.
        let after = stream.clone() + block.fc2.forward(a.clone());
        let mut t = after.clone().leaky_traced();
        for b in &self.blocks[pos + 1..] {
            let z = b.fc1.forward(t.with_empty_tape());
            let branch = b
                .fc2
                .forward(self.act.try_apply(z).map_err(GrowError::device)?);
            t = t + branch;
        }
        let grads = loss.apply(self.head.forward(t), y.clone()).backward();
        let scale = E::from_usize(n).unwrap_or_else(E::one);
        let g: Vec<E> = grads
            .get(&after)
            .as_vec()
            .into_iter()
            .map(|v| v * scale)
            .collect();
        let w = self.width();
        let later: f64 = self.blocks[pos + 1..]
            .iter()
            .map(|b| 2.0 * (b.fc1.forward_flops() + b.fc2.forward_flops()))
            .sum::<f64>()
            + 2.0 * self.head.forward_flops();
        let flops = n as f64 * (self.forward_flops() + later);
        SiteStatistics::new(
            HostMatrix::from_values(n, w, &stream.as_vec())?,
            HostMatrix::from_values(n, block.fc1.out_width(), &a.as_vec())?,
            vec![HostMatrix::from_values(n, w, &g)?],
            Some(self.act),
        )
        .map(|s| s.with_flops(flops))
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.blocks.iter().position(|b| b.name() == name)
    }
}

impl<E: Real, D: Device<E>> Growable<E, D> for ResMlp<E, D> {
    fn sites(&self) -> Vec<Site> {
        self.blocks
            .iter()
            .map(|b| {
                let name = b.name();
                Site::new(b.site_name(), &b.fc1, &[&b.fc2])
                    .with_params([format!("{name}.fc1.weight"), format!("{name}.fc1.bias")])
                    .with_max_width(self.max_width)
            })
            .collect()
    }

    fn site_mut(&mut self, name: &str) -> Option<SiteMut<'_, E>> {
        let b = self.blocks.iter_mut().find(|b| b.site_name() == name)?;
        Some(SiteMut {
            producer: &mut b.fc1,
            consumers: vec![&mut b.fc2],
        })
    }

    fn forward_flops(&self) -> f64 {
        let w = self.width() as f64;
        let blocks: f64 = self
            .blocks
            .iter()
            .map(|b| {
                // Both products and biases, the activation, the residual sum.
                b.fc1.forward_flops() + b.fc2.forward_flops() + b.fc1.out_width() as f64 + w
            })
            .sum();
        self.input.forward_flops() + blocks + self.head.forward_flops()
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(self.spec()).unwrap_or(serde_json::Value::Null)
    }

    fn blocks(&self) -> Vec<String> {
        self.blocks.iter().map(Block::name).collect()
    }

    /// Inserts a block of `hidden` units after block `after` (or first, after `"input"`): its
    /// `fc1` is drawn like a fresh layer, its `fc2` is zero, so it adds exactly zero, and
    /// `fc2`'s gradient (the stream's error times the block's activations) is non-zero at
    /// once. The new block is `blocks.{n}`, `n` one past every id used so far.
    fn deepen(
        &mut self,
        after: &str,
        hidden: usize,
        rng: &mut dyn RngCore,
    ) -> Result<String, GrowError> {
        let depth_err = |reason: String| GrowError::Depth {
            after: after.to_string(),
            reason,
        };
        let at = match after {
            crate::FIRST_BLOCK => 0,
            _ => self.position(after).map(|i| i + 1).ok_or_else(|| {
                depth_err(format!(
                    "no such block; the blocks are {:?} (or \"input\" for first)",
                    Growable::<E, D>::blocks(self)
                ))
            })?,
        };
        if hidden == 0 || hidden > self.max_width {
            return Err(depth_err(format!(
                "a block's hidden width must be in 1..={}, got {hidden}",
                self.max_width
            )));
        }
        let dev = self.input.weight.device().clone();
        let width = self.width();
        let fc1 = Linear::new(width, hidden, &dev, &mut { rng })?;
        let n = hidden
            .checked_mul(width)
            .ok_or_else(|| depth_err("too large".into()))?;
        let fc2 = Linear::from_parts(
            dev.try_tensor_from_vec(vec![E::zero(); n], (width, hidden))
                .map_err(GrowError::device)?,
            dev.try_tensor_from_vec(vec![E::zero(); width], (width,))
                .map_err(GrowError::device)?,
        )?;
        let block = Block {
            id: self.next_id,
            fc1,
            fc2,
        };
        let name = block.name();
        self.blocks.insert(at, block);
        self.next_id += 1;
        Ok(name)
    }
}

impl<E: Dtype, D: Device<E>> Params<E, D> for ResMlp<E, D> {
    fn visit(&self, f: &mut dyn FnMut(&str, ParamRef<'_, E, D>)) {
        self.input.visit(&mut scoped("input", f));
        for b in &self.blocks {
            let name = b.name();
            b.fc1.visit(&mut scoped(&format!("{name}.fc1"), f));
            b.fc2.visit(&mut scoped(&format!("{name}.fc2"), f));
        }
        self.head.visit(&mut scoped("head", f));
    }

    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_, E, D>)) {
        self.input.visit_mut(&mut scoped_mut("input", f));
        for b in &mut self.blocks {
            let name = b.name();
            b.fc1.visit_mut(&mut scoped_mut(&format!("{name}.fc1"), f));
            b.fc2.visit_mut(&mut scoped_mut(&format!("{name}.fc2"), f));
        }
        self.head.visit_mut(&mut scoped_mut("head", f));
    }
}

/// A batch on the stream (or the input, or the output): (batch, features).
type Stream<E, D, T> = Tensor<(usize, usize), E, D, T>;

impl<E: Dtype, D: Device<E>> ResMlp<E, D> {
    /// The blocks and the head, from the stream `h`.
    fn blocks_and_head<T: Tape<E, D>>(
        &self,
        mut h: Stream<E, D, T>,
    ) -> Result<Stream<E, D, T>, D::Err> {
        for b in &self.blocks {
            // The branch reads the stream on an empty tape; the sum joins both tapes, so the
            // gradient reaches the stream through both paths (as dfdx's `Residual`).
            let z = b.fc1.try_forward(h.with_empty_tape())?;
            let y = b.fc2.try_forward(self.act.try_apply(z)?)?;
            h = h.try_add(y)?;
        }
        self.head.try_forward(h)
    }
}

impl<E: Dtype, D: Device<E>, T: Tape<E, D>> Module<Tensor<(usize, usize), E, D, T>>
    for ResMlp<E, D>
{
    type Output = Tensor<(usize, usize), E, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Tensor<(usize, usize), E, D, T>) -> Result<Self::Output, D::Err> {
        let h = self.input.try_forward(x)?;
        self.blocks_and_head(h)
    }
}

/// The input layer on data skips the input's gradient (see [`Data`]).
impl<E: Real, D: Device<E>, T: Tape<E, D> + 'static> Module<Data<Tensor<(usize, usize), E, D, T>>>
    for ResMlp<E, D>
where
    Cpu: Device<E>,
{
    type Output = Tensor<(usize, usize), E, D, T>;
    type Error = D::Err;

    fn try_forward(
        &self,
        x: Data<Tensor<(usize, usize), E, D, T>>,
    ) -> Result<Self::Output, D::Err> {
        let h = self.input.try_forward(x)?;
        self.blocks_and_head(h)
    }
}

impl<E: Real, D: Device<E>> LossProbe<ResMlp<E, D>> for Probe<E, D> {
    /// The probe's loss, or NaN when the probe has no target or does not fit the model.
    fn loss(&self, model: &ResMlp<E, D>) -> f64 {
        match (&self.target, fits(model, self)) {
            (Some((target, loss)), true) => loss.value(model.forward(self.input.clone()), target),
            _ => f64::NAN,
        }
    }

    fn outputs(&self, model: &ResMlp<E, D>) -> Option<Vec<f64>> {
        fits(model, self).then_some(())?;
        let out = model.forward(self.input.clone()).as_vec();
        Some(out.iter().map(|x| x.to_f64().unwrap_or(f64::NAN)).collect())
    }

    fn activity(&self, model: &ResMlp<E, D>, site: &str) -> Option<Activity> {
        let block = site.strip_suffix(".hidden")?;
        let pre = model.pre_activations(block, &self.input).ok()?;
        let width = model.blocks[model.position(block)?].fc1.out_width();
        Activity::of_activation(&pre, width, model.act).ok()
    }

    fn statistics(&self, model: &ResMlp<E, D>, site: &str) -> Option<SiteStatistics> {
        let (target, loss) = self.target.as_ref()?;
        model.site_statistics(site, &self.input, target, *loss).ok()
    }
}

fn fits<E: Real, D: Device<E>>(model: &ResMlp<E, D>, p: &Probe<E, D>) -> bool {
    p.check(model.input.in_width(), model.head.out_width())
        .is_ok()
}
