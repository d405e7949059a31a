//! The three models a comparison can train, behind one small trait, and how each is built at
//! a given width.

use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::health::Activity;
use dfdx_grow::rand::Rng;
use dfdx_grow::{Activation, Cnn, ConvSpec, Data, Growable, LossProbe, Mlp, Probe, ResMlp};

use crate::cli::ModelArg;
use crate::task::{EvalSet, M};

/// Logits on a tape.
pub type Traced = Tensor<(usize, usize), f32, Cpu, OwnedTape<f32, Cpu>>;

/// A model the training loop can drive: the crate's growth trait plus a forward pass with and
/// without a tape.
pub trait Net: Growable<f32, Cpu> + Send + 'static {
    /// The logits of a training batch, recorded on `grads`' tape.
    fn train_logits(&self, x: M, grads: Gradients<f32, Cpu>) -> Traced;
    /// The logits, no tape.
    fn logits(&self, x: M) -> M;
    /// Rows per evaluation chunk (memory: a CNN's convolutions hold every position).
    fn eval_chunk(&self) -> usize {
        2000
    }
}

impl Net for Mlp<f32, Cpu> {
    fn train_logits(&self, x: M, grads: Gradients<f32, Cpu>) -> Traced {
        // The first layer reads data: no input gradient to compute.
        self.forward(Data(x.traced(grads)))
    }
    fn logits(&self, x: M) -> M {
        self.forward(x)
    }
}

impl Net for Cnn<f32, Cpu> {
    fn train_logits(&self, x: M, grads: Gradients<f32, Cpu>) -> Traced {
        self.forward(Data(x.traced(grads)))
    }
    fn logits(&self, x: M) -> M {
        self.forward(x)
    }
    fn eval_chunk(&self) -> usize {
        500
    }
}

impl Net for ResMlp<f32, Cpu> {
    fn train_logits(&self, x: M, grads: Gradients<f32, Cpu>) -> Traced {
        // ResMlp has no `Data` path (its input layer is private): the input gradient is
        // computed and thrown away.
        self.forward(x.traced(grads))
    }
    fn logits(&self, x: M) -> M {
        self.forward(x)
    }
}

/// The input's layout: channels, height, width (1 x 1 x features for vectors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub classes: usize,
}

impl InputShape {
    pub fn features(&self) -> usize {
        self.channels * self.height * self.width
    }
}

/// The residual MLP's stream width.
pub const RESMLP_STREAM: usize = 64;
/// Its number of blocks (each block's hidden layer is a site).
pub const RESMLP_BLOCKS: usize = 2;

/// The CNN at `width`: a 3x3 convolution of `width` channels (stride 1), then one of
/// `2 width` channels (stride 2), then the linear head.
pub fn cnn_convs(width: usize) -> [ConvSpec; 2] {
    [
        ConvSpec {
            channels: width,
            kernel: 3,
            stride: 1,
            padding: 1,
        },
        ConvSpec {
            channels: 2 * width,
            kernel: 3,
            stride: 2,
            padding: 1,
        },
    ]
}

pub fn build_mlp(
    shape: InputShape,
    width: usize,
    cap: usize,
    rng: &mut impl Rng,
) -> Result<Mlp<f32, Cpu>, String> {
    Ok(Mlp::try_new(
        &[shape.features(), width, shape.classes],
        Activation::Relu,
        &Cpu::default(),
        rng,
    )
    .map_err(|e| e.to_string())?
    .with_max_width(cap))
}

pub fn build_resmlp(
    shape: InputShape,
    width: usize,
    cap: usize,
    rng: &mut impl Rng,
) -> Result<ResMlp<f32, Cpu>, String> {
    Ok(ResMlp::new(
        shape.features(),
        RESMLP_STREAM,
        &[width; RESMLP_BLOCKS],
        shape.classes,
        Activation::Relu,
        &Cpu::default(),
        rng,
    )
    .map_err(|e| e.to_string())?
    .with_max_width(cap))
}

pub fn build_cnn(
    shape: InputShape,
    width: usize,
    cap: usize,
    rng: &mut impl Rng,
) -> Result<Cnn<f32, Cpu>, String> {
    if shape.height < 2 || shape.width < 2 {
        return Err("--model cnn needs image data (digits or fashion-mnist)".into());
    }
    Ok(Cnn::new(
        (shape.channels, shape.height, shape.width),
        &cnn_convs(width),
        shape.classes,
        Activation::Relu,
        &Cpu::default(),
        rng,
    )
    .map_err(|e| e.to_string())?
    // The second convolution has twice the channels: the cap is the large model's.
    .with_max_width(2 * cap))
}

/// Describes a model kind at a width in words (for the log).
pub fn describe(kind: ModelArg, shape: InputShape, width: usize) -> String {
    match kind {
        ModelArg::Mlp => format!("{}-{width}-{}", shape.features(), shape.classes),
        ModelArg::Resmlp => format!(
            "{} -> stream {RESMLP_STREAM}, {RESMLP_BLOCKS} blocks of {width} -> {}",
            shape.features(),
            shape.classes
        ),
        ModelArg::Cnn => format!(
            "{}x{}x{} -> conv3x3 {width} -> conv3x3/2 {} -> {}",
            shape.channels,
            shape.height,
            shape.width,
            2 * width,
            shape.classes
        ),
    }
}

/// Mean cross-entropy (against the set's target distributions) and accuracy of `net` on all
/// of `set`.
pub fn evaluate<N: Net>(net: &N, set: &EvalSet) -> (f64, f64) {
    let dev = Cpu::default();
    let (mut loss, mut correct) = (0.0, 0usize);
    let n = set.len();
    let chunk = net.eval_chunk();
    let c = set.n_classes;
    let mut start = 0;
    while start < n {
        let end = (start + chunk).min(n);
        let (x, y) = set.matrices(&dev, start..end);
        let out = net.logits(x);
        let logits = out.as_vec();
        loss += dfdx_grow::Loss::CrossEntropy.value(out, &y) * (end - start) as f64;
        for (r, row) in logits.chunks(c).enumerate() {
            let argmax = (0..c)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap_or(0);
            correct += usize::from(argmax == usize::from(set.labels[start + r]));
        }
        start = end;
    }
    (loss / n.max(1) as f64, correct as f64 / n.max(1) as f64)
}

/// The activity of `site`'s units over all of `set`, measured chunk by chunk.
pub fn activity_on<N: Net>(net: &N, site: &str, set: &EvalSet) -> Option<Activity>
where
    Probe<f32, Cpu>: LossProbe<N>,
{
    let dev = Cpu::default();
    let chunk = net.eval_chunk();
    let mut all: Option<Activity> = None;
    let mut start = 0;
    while start < set.len() {
        let end = (start + chunk).min(set.len());
        let (x, _) = set.matrices(&dev, start..end);
        let probe = Probe {
            input: x,
            target: None,
        };
        let a = probe.activity(net, site)?;
        match &mut all {
            None => all = Some(a),
            Some(acc) => {
                if acc.width != a.width {
                    return None;
                }
                acc.examples += a.examples;
                acc.active.extend(a.active);
            }
        }
        start = end;
    }
    all
}
