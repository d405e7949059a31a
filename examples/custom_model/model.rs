//! A model of the user's own, for the `custom_model` example and the tests: a trunk of a layer
//! type of the user's own (`Scaled`, implementing `Expandable`) read by two heads.
#![allow(dead_code)]

use dfdx_grow::dfdx::prelude::*;
use dfdx_grow::rand::{rngs::StdRng, Rng};
use dfdx_grow::{
    scoped, scoped_mut, Expandable, GrowError, Growable, Linear, Matrix, ParamMut, ParamRef,
    Params, Real, Site, SiteMut, Vector,
};

/// A bias-free linear layer with a learnable gain per output: `y = (x W^T) * g`.
#[derive(Clone, Debug)]
pub struct Scaled<E: Dtype> {
    /// (out, in).
    pub weight: Matrix<E, Cpu>,
    /// One gain per output.
    pub gain: Vector<E, Cpu>,
}

impl<E: Real> Scaled<E>
where
    Cpu: Device<E>,
{
    /// `out` units over `inp` inputs, PyTorch-like init, gains 1.
    pub fn new(inp: usize, out: usize, rng: &mut StdRng) -> Self {
        let dev = Cpu::default();
        let b = 1.0 / (inp as f64).sqrt();
        let w = (0..inp * out)
            .map(|_| E::from_f64(rng.gen_range(-b..b)).unwrap())
            .collect();
        Scaled {
            weight: dev.tensor_from_vec(w, (out, inp)),
            gain: dev.tensor_from_vec(vec![E::one(); out], (out,)),
        }
    }
}

impl<E: Real> Expandable<E> for Scaled<E>
where
    Cpu: Device<E>,
{
    fn in_width(&self) -> usize {
        self.weight.shape().1
    }
    fn out_width(&self) -> usize {
        self.weight.shape().0
    }
    fn output_unit(&self, u: usize) -> Option<(Vec<E>, E)> {
        let inp = self.in_width();
        (u < self.out_width()).then(|| {
            (
                self.weight.as_vec()[u * inp..(u + 1) * inp].to_vec(),
                E::zero(),
            )
        })
    }
    fn input_column(&self, u: usize) -> Option<Vec<E>> {
        let (inp, w) = (self.in_width(), self.weight.as_vec());
        (u < inp).then(|| (0..self.out_width()).map(|r| w[r * inp + u]).collect())
    }
    fn grow_outputs(&mut self, fan_in: &[E], bias: &[E]) -> Result<(), GrowError> {
        let (out, inp, k) = (self.out_width(), self.in_width(), bias.len());
        if fan_in.len() != k * inp {
            return Err(GrowError::ShapeMismatch {
                what: "Scaled fan-in".into(),
                expected: k * inp,
                found: fan_in.len(),
            });
        }
        let mut w = self.weight.as_vec();
        w.extend_from_slice(fan_in);
        let mut g = self.gain.as_vec();
        g.extend(std::iter::repeat_n(E::one(), k)); // new units start at gain 1
        let dev = Cpu::default();
        self.weight = dev.tensor_from_vec(w, (out + k, inp));
        self.gain = dev.tensor_from_vec(g, (out + k,));
        Ok(())
    }
    fn grow_inputs(&mut self, fan_out: &[E], rescale: &[(usize, E)]) -> Result<(), GrowError> {
        let (out, inp) = (self.out_width(), self.in_width());
        if out == 0 || !fan_out.len().is_multiple_of(out) {
            return Err(GrowError::ShapeMismatch {
                what: "Scaled fan-out".into(),
                expected: out,
                found: fan_out.len(),
            });
        }
        let k = fan_out.len() / out;
        let mut old = self.weight.as_vec();
        for &(c, f) in rescale {
            for r in 0..out {
                old[r * inp + c] *= f;
            }
        }
        let mut w = Vec::with_capacity(out * (inp + k));
        for r in 0..out {
            w.extend_from_slice(&old[r * inp..(r + 1) * inp]);
            w.extend((0..k).map(|j| fan_out[j * out + r]));
        }
        self.weight = Cpu::default().tensor_from_vec(w, (out, inp + k));
        Ok(())
    }
}

impl<E: Real> Params<E, Cpu> for Scaled<E>
where
    Cpu: Device<E>,
{
    fn visit(&self, f: &mut dyn FnMut(&str, ParamRef<'_, E, Cpu>)) {
        f("weight", ParamRef::Matrix(&self.weight));
        f("gain", ParamRef::Vector(&self.gain));
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_, E, Cpu>)) {
        f("weight", ParamMut::Matrix(&mut self.weight));
        f("gain", ParamMut::Vector(&mut self.gain));
    }
}

impl<E: Real, T: Tape<E, Cpu>> Module<Tensor<(usize, usize), E, Cpu, T>> for Scaled<E>
where
    Cpu: Device<E>,
{
    type Output = Tensor<(usize, usize), E, Cpu, T>;
    type Error = <Cpu as HasErr>::Err;
    fn try_forward(
        &self,
        x: Tensor<(usize, usize), E, Cpu, T>,
    ) -> Result<Self::Output, Self::Error> {
        let (batch, out) = (x.shape().0, self.out_width());
        let y = x.matmul(self.weight.retaped::<T>().permute::<_, Axes2<1, 0>>());
        let g = self
            .gain
            .retaped::<T>()
            .broadcast_like::<_, Axis<0>>(&(batch, out));
        Ok(y * g)
    }
}

pub type Batch<E, T> = Tensor<(usize, usize), E, Cpu, T>;

/// A trunk of the user's own layer type, read by two heads.
#[derive(Clone, Debug)]
pub struct TwoHeads<E: Dtype>
where
    Cpu: Device<E>,
{
    /// The shared hidden layer.
    pub trunk: Scaled<E>,
    /// The first head.
    pub classes: Linear<E, Cpu>,
    /// The second head.
    pub score: Linear<E, Cpu>,
}

impl<E: Real> TwoHeads<E>
where
    Cpu: Device<E>,
{
    /// A trunk of `hidden` units over `inp` inputs, a head of `classes` outputs and one of
    /// `score` outputs.
    pub fn new(inp: usize, hidden: usize, classes: usize, score: usize, rng: &mut StdRng) -> Self {
        let dev = Cpu::default();
        TwoHeads {
            trunk: Scaled::new(inp, hidden, rng),
            classes: Linear::new(hidden, classes, &dev, rng).unwrap(),
            score: Linear::new(hidden, score, &dev, rng).unwrap(),
        }
    }

    /// Both heads' outputs side by side.
    pub fn forward<T: Tape<E, Cpu>>(&self, x: Batch<E, T>) -> (Batch<E, T>, Batch<E, T>) {
        let h = self.trunk.forward(x).relu();
        let c = self.classes.forward(h.with_empty_tape());
        (c, self.score.forward(h))
    }
}

impl<E: Real> Params<E, Cpu> for TwoHeads<E>
where
    Cpu: Device<E>,
{
    fn visit(&self, f: &mut dyn FnMut(&str, ParamRef<'_, E, Cpu>)) {
        self.trunk.visit(&mut scoped("trunk", f));
        self.classes.visit(&mut scoped("classes", f));
        self.score.visit(&mut scoped("score", f));
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_, E, Cpu>)) {
        self.trunk.visit_mut(&mut scoped_mut("trunk", f));
        self.classes.visit_mut(&mut scoped_mut("classes", f));
        self.score.visit_mut(&mut scoped_mut("score", f));
    }
}

impl<E: Real> Growable<E, Cpu> for TwoHeads<E>
where
    Cpu: Device<E>,
{
    fn sites(&self) -> Vec<Site> {
        vec![
            Site::new("trunk", &self.trunk, &[&self.classes, &self.score])
                .with_params(["trunk.weight", "trunk.gain"])
                .with_max_width(64),
        ]
    }
    fn site_mut(&mut self, name: &str) -> Option<SiteMut<'_, E>> {
        (name == "trunk").then(|| SiteMut {
            producer: &mut self.trunk,
            consumers: vec![&mut self.classes, &mut self.score],
        })
    }
    fn forward_flops(&self) -> f64 {
        let (i, h) = (self.trunk.in_width() as f64, self.trunk.out_width() as f64);
        2.0 * i * h + 2.0 * h + self.classes.forward_flops() + self.score.forward_flops()
    }
}
