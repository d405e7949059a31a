//! One optimizer that owns the state, the host pass and the accessors; each optimizer only
//! provides its element kernel (burn's `SimpleOptimizer` + `OptimizerAdaptor` shape).

use dfdx::prelude::{Cpu, Device, Dtype, Gradients};
use serde::{Deserialize, Serialize};

use super::inplace::InPlace;
use super::state::{ModelState, TensorState};
use super::{check_hyper, Optimizer, Renewal, SavedState, SavedTensor};
use crate::ParamMut;
use crate::{GrowError, Params, Real};

/// The most state buffers a kernel may keep per element.
pub const MAX_BUFFERS: usize = 2;

/// What a kernel is told about one block of elements born at the same step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepContext {
    /// Updates these elements have had, this one included (1 at their first update).
    pub t: u64,
    /// Updates the optimizer has done, this one included.
    pub global_t: u64,
    /// The learning rate for these elements (the optimizer's, times any new-unit multiplier).
    pub lr: f64,
    /// The epsilon chosen for these elements when a growth added them
    /// ([`Kernel::new_cohort_eps`]); `None` for the kernel's own.
    pub eps: Option<f64>,
}

/// An optimizer's element-wise update rule.
///
/// The adaptor ([`GrowingOptimizer`]) keeps the state and hands the kernel contiguous runs of
/// elements that share a birth step; the kernel first turns the step's context into constants
/// ([`Kernel::constants`], once per block), then updates each run with them
/// ([`Kernel::update`]). Keeping `update` a plain function of values lets the compiler
/// vectorise its loop.
pub trait Kernel: Clone + std::fmt::Debug + Send + 'static {
    /// The name saved with the state (`"adam"`, `"sgd"`): state of one kernel cannot be
    /// loaded into another.
    const NAME: &'static str;

    /// How many state buffers the kernel keeps per element (at most [`MAX_BUFFERS`]).
    fn buffers(&self) -> usize;

    /// The learning rate.
    fn lr(&self) -> f64;

    /// Sets the learning rate (already checked).
    fn set_lr(&mut self, lr: f64);

    /// Checks the hyper-parameters.
    fn check(&self) -> Result<(), GrowError>;

    /// The constants of one block's update.
    fn constants<E: Real>(&self, ctx: &StepContext) -> [E; 8];

    /// Updates one run of elements: `state` holds [`Kernel::buffers`] slices of the run's
    /// length (the rest are empty).
    fn update<E: Real>(
        &self,
        k: &[E; 8],
        param: &mut [E],
        grad: &[E],
        state: [&mut [E]; MAX_BUFFERS],
    );

    /// The epsilon of entries a growth adds to a tensor whose state is `old` (before the
    /// growth) at update `now`, when the kernel gives new entries one of their own. Default
    /// none.
    fn new_cohort_eps<E: Real>(&self, old: &TensorState<E>, now: u64) -> Option<f64> {
        let _ = (old, now);
        None
    }

    /// Updates a whole tensor whose elements share one context in its own storage (dfdx's
    /// kernels on the CPU), computing exactly what [`Kernel::update`] computes; `None` when
    /// the kernel has no such route (the adaptor then updates host copies).
    fn update_in_place<E: Real, D: Device<E>>(
        &self,
        param: &mut ParamMut<'_, E, D>,
        grads: &mut Gradients<E, D>,
        state: &mut [Vec<E>],
        ctx: &StepContext,
        scratch: &mut InPlace<E>,
    ) -> Option<Result<(), GrowError>>
    where
        Cpu: Device<E>,
    {
        let _ = (param, grads, state, ctx, scratch);
        None
    }
}

/// A learning-rate multiplier for the weights of a growth cohort during its first `steps`
/// updates.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewUnitLr {
    /// The multiplier (> 0).
    pub scale: f64,
    /// For how many of the cohort's updates it applies.
    pub steps: u64,
}

/// An optimizer whose state follows its model through growth: the state of each named tensor
/// is padded when the tensor grows (old entries untouched, new entries zero, each growth
/// cohort with its own step count), and a tensor that appears (a new block) gets fresh state.
///
/// [`crate::optim::Adam`] and [`crate::optim::Sgd`] are this adaptor around their kernels.
#[derive(Debug)]
pub struct GrowingOptimizer<K, E: Dtype> {
    kernel: K,
    state: ModelState<E>,
    steps: u64,
    new_unit_lr: Option<NewUnitLr>,
    scratch: Scratch<E>,
    in_place: InPlace<E>,
}

impl<K: Clone, E: Dtype> Clone for GrowingOptimizer<K, E>
where
    Cpu: Device<E>,
{
    /// The configuration and the state; scratch space starts empty.
    fn clone(&self) -> Self {
        Self {
            kernel: self.kernel.clone(),
            state: self.state.clone(),
            steps: self.steps,
            new_unit_lr: self.new_unit_lr,
            scratch: Scratch::default(),
            in_place: InPlace::default(),
        }
    }
}

/// Scratch space for one host-side update pass.
#[derive(Clone, Debug, Default)]
struct Scratch<E> {
    param: Vec<E>,
    grad: Vec<E>,
}

impl<K: Kernel, E: Real> GrowingOptimizer<K, E>
where
    Cpu: Device<E>,
{
    /// An optimizer running `kernel`, whose hyper-parameters are checked.
    pub fn new(kernel: K) -> Result<Self, GrowError> {
        kernel.check()?;
        Ok(Self {
            kernel,
            state: ModelState::default(),
            steps: 0,
            new_unit_lr: None,
            scratch: Scratch::default(),
            in_place: InPlace::default(),
        })
    }

    /// Weights added by a growth train at `lr.scale` x the learning rate for their first
    /// `lr.steps` updates.
    pub fn with_new_unit_lr(mut self, lr: NewUnitLr) -> Result<Self, GrowError> {
        check_hyper(
            "new_unit_lr.scale",
            lr.scale,
            lr.scale > 0.0,
            "must be finite and > 0",
        )?;
        self.new_unit_lr = Some(lr);
        Ok(self)
    }

    /// The kernel's configuration.
    pub fn config(&self) -> &K {
        &self.kernel
    }

    /// The state of every tensor, in the model's walk order.
    pub fn state(&self) -> &ModelState<E> {
        &self.state
    }

    /// The state to save (what [`Optimizer::save_state`] returns, callable without naming
    /// the device).
    pub fn save_state(&self) -> SavedState {
        let f = |x: &E| x.to_f64().unwrap_or(f64::NAN);
        SavedState {
            kind: K::NAME.to_string(),
            steps: self.steps,
            lr: self.kernel.lr(),
            tensors: self
                .state
                .tensors
                .iter()
                .map(|t| SavedTensor::from(t.map(f)))
                .collect(),
        }
    }
}

/// The learning rate of elements born at `born`, at their `t`-th update.
fn lr_for(lr: f64, new_unit_lr: Option<NewUnitLr>, born: u64, t: u64) -> f64 {
    match new_unit_lr {
        Some(n) if born > 0 && t <= n.steps => lr * n.scale,
        _ => lr,
    }
}

impl<K: Kernel, E: Real, D: Device<E>> Optimizer<E, D> for GrowingOptimizer<K, E>
where
    Cpu: Device<E>,
{
    fn check_sync(&self, model: &dyn Params<E, D>) -> Result<(), GrowError> {
        self.state.plan_sync(&model.param_dims())
    }

    fn sync(&mut self, model: &dyn Params<E, D>) -> Result<(), GrowError> {
        let (kernel, now) = (&self.kernel, self.steps);
        self.state
            .sync(&model.param_dims(), kernel.buffers(), now, &|old| {
                kernel.new_cohort_eps(old, now)
            })
    }

    fn update(
        &mut self,
        model: &mut dyn Params<E, D>,
        grads: &mut Gradients<E, D>,
    ) -> Result<(), GrowError> {
        Optimizer::<E, D>::sync(self, model)?;
        self.steps += 1;
        let now = self.steps;
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut in_place = std::mem::take(&mut self.in_place);
        let mut tensors = std::mem::take(&mut self.state.tensors);
        let (kernel, new_unit_lr) = (&self.kernel, self.new_unit_lr);
        let lr_for = |born, t| lr_for(kernel.lr(), new_unit_lr, born, t);
        let mut result = Ok(());
        let mut i = 0;
        model.visit_mut(&mut |name, mut p| {
            if result.is_err() {
                return;
            }
            let Some(st) = tensors.get_mut(i).filter(|st| st.name == name) else {
                result = Err(GrowError::StateMismatch(format!(
                    "the model's walk changed during an update at tensor {name:?}"
                )));
                return;
            };
            i += 1;
            // A tensor whose elements all share one context goes to the kernel's in-place
            // route (no host copies); a tensor split by growth into blocks of different
            // contexts is updated block by block on host copies.
            if let Some(ctx) = uniform_context(kernel, st, now, &lr_for) {
                if let Some(r) =
                    kernel.update_in_place(&mut p, grads, &mut st.buffers, &ctx, &mut in_place)
                {
                    result = r;
                    return;
                }
            }
            let n = p.as_ref().len();
            scratch.param.resize(n, E::zero());
            p.as_ref().copy_into(&mut scratch.param);
            let grad = match p.as_ref().host_grad(grads, &mut scratch.grad) {
                Ok(g) => g,
                Err(e) => {
                    result = Err(e);
                    return;
                }
            };
            step_tensor(kernel, &lr_for, now, st, &mut scratch.param, grad);
            p.copy_from(&scratch.param);
        });
        self.state.tensors = tensors;
        self.scratch = scratch;
        self.in_place = in_place;
        result
    }

    fn steps(&self) -> u64 {
        self.steps
    }

    fn state_buffers(&self) -> usize {
        self.kernel.buffers()
    }

    fn lr(&self) -> f64 {
        self.kernel.lr()
    }

    fn set_lr(&mut self, lr: f64) -> Result<(), GrowError> {
        check_hyper("lr", lr, lr >= 0.0, "must be finite and >= 0")?;
        self.kernel.set_lr(lr);
        Ok(())
    }

    fn save_state(&self) -> SavedState {
        GrowingOptimizer::save_state(self)
    }

    fn load_state(
        &mut self,
        saved: &SavedState,
        model: &dyn Params<E, D>,
    ) -> Result<(), GrowError> {
        if saved.kind != K::NAME {
            return Err(GrowError::StateMismatch(format!(
                "the saved state is {:?} optimizer state, this optimizer is {:?}",
                saved.kind,
                K::NAME
            )));
        }
        check_hyper("lr", saved.lr, saved.lr >= 0.0, "must be finite and >= 0")?;
        let dims = model.param_dims();
        if saved.tensors.len() != dims.len() {
            return Err(GrowError::StateMismatch(format!(
                "the saved state has {} tensors, the model {}",
                saved.tensors.len(),
                dims.len()
            )));
        }
        let cast = |x: &f64| E::from_f64(*x).unwrap_or_else(E::nan);
        let mut tensors = Vec::with_capacity(dims.len());
        for (s, (name, d)) in saved.tensors.iter().zip(&dims) {
            let t: TensorState<f64> = s.clone().into();
            if t.name != *name || t.dims != *d {
                return Err(GrowError::StateMismatch(format!(
                    "saved state for tensor {:?} of {:?} where the model has {name:?} of {d:?}",
                    t.name, t.dims
                )));
            }
            t.validate(self.kernel.buffers(), saved.steps)?;
            tensors.push(t.map(cast));
        }
        self.state = ModelState { tensors };
        self.steps = saved.steps;
        self.kernel.set_lr(saved.lr);
        Ok(())
    }

    fn check_renew(&self, model: &dyn Params<E, D>, parts: &[Renewal]) -> Result<(), GrowError> {
        let dims = model.param_dims();
        self.state.plan_sync(&dims)?;
        for p in parts {
            let Some((_, (rows, cols))) = dims.iter().find(|(n, _)| *n == p.tensor) else {
                return Err(GrowError::StateMismatch(format!(
                    "fresh state asked for tensor {:?}, which the model does not have",
                    p.tensor
                )));
            };
            for (list, n, what) in [(&p.rows, *rows, "row"), (&p.cols, *cols, "column")] {
                if let Some(i) = list.iter().find(|&&i| i >= n) {
                    return Err(GrowError::StateMismatch(format!(
                        "fresh state asked for {what} {i} of tensor {:?}, which has {n}",
                        p.tensor
                    )));
                }
            }
        }
        Ok(())
    }

    fn renew(&mut self, model: &dyn Params<E, D>, parts: &[Renewal]) -> Result<(), GrowError> {
        Optimizer::<E, D>::check_renew(self, model, parts)?;
        let (kernel, now) = (&self.kernel, self.steps);
        // The epsilon a growth now would give, from the entries as they are (before `sync`
        // pads any tensor grown since the last update with zeros).
        let eps_of = |state: &ModelState<E>, name: &str| {
            let t = state.tensors.iter().find(|t| t.name == name)?;
            kernel.new_cohort_eps(t, now)
        };
        let eps: Vec<Option<f64>> = parts
            .iter()
            .map(|p| eps_of(&self.state, &p.tensor))
            .collect();
        Optimizer::<E, D>::sync(self, model)?;
        for (p, eps) in parts.iter().zip(eps) {
            if let Some(t) = self.state.tensors.iter_mut().find(|t| t.name == p.tensor) {
                t.renew(&p.rows, &p.cols, now, eps);
            }
        }
        Ok(())
    }
}

/// A context for the whole of `st` at update `now`, if its blocks' updates are one update:
/// blocks born at different steps still share it when the kernel's constants for them are
/// equal (SGD ignores the step count; Adam under a global step count sees one), so a grown
/// tensor keeps the in-place route whenever its kernel allows.
fn uniform_context<K: Kernel, E: Real>(
    kernel: &K,
    st: &TensorState<E>,
    now: u64,
    lr_for: &dyn Fn(u64, u64) -> f64,
) -> Option<StepContext> {
    let mut first: Option<(StepContext, [E; 8])> = None;
    let mut same = true;
    st.for_each_block(|born, eps, _| {
        let t = now - born;
        let c = StepContext {
            t,
            global_t: now,
            lr: lr_for(born, t),
            eps,
        };
        let k = kernel.constants::<E>(&c);
        match &first {
            None => first = Some((c, k)),
            Some((_, k0)) => same &= *k0 == k,
        }
    });
    first.filter(|_| same).map(|(c, _)| c)
}

/// One tensor's update: every block of elements born together gets its constants once.
fn step_tensor<K: Kernel, E: Real>(
    kernel: &K,
    lr_for: &dyn Fn(u64, u64) -> f64,
    now: u64,
    st: &mut TensorState<E>,
    param: &mut [E],
    grad: &[E],
) {
    let mut bufs = std::mem::take(&mut st.buffers);
    st.for_each_block(|born, eps, ranges| {
        let t = now - born;
        let ctx = StepContext {
            t,
            global_t: now,
            lr: lr_for(born, t),
            eps,
        };
        let k = kernel.constants::<E>(&ctx);
        for range in ranges {
            let mut state: [&mut [E]; MAX_BUFFERS] = [&mut [], &mut []];
            for (slot, buf) in state.iter_mut().zip(bufs.iter_mut()) {
                *slot = &mut buf[range.clone()];
            }
            kernel.update(&k, &mut param[range.clone()], &grad[range], state);
        }
    });
    st.buffers = bufs;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{AdamConfig, NewUnitSteps, SgdConfig};

    /// A 4 x 3 tensor's state from step 0, grown to 6 x 3 at step 5 and to 6 x 4 at step 7.
    fn grown(buffers: usize, eps: Option<f64>) -> TensorState<f32> {
        let mut st = TensorState::new("w", (4, 3), buffers, 0);
        st.resize((6, 3), 5, eps);
        st.resize((6, 4), 7, eps);
        st
    }

    #[test]
    fn a_grown_tensor_keeps_the_in_place_route_when_its_kernel_ignores_the_birth_step() {
        let lr = |_: u64, _: u64| 0.1;
        let sgd = SgdConfig::default();
        assert!(uniform_context(&sgd, &grown(1, None), 10, &lr).is_some());
        let global = AdamConfig {
            new_units: NewUnitSteps::Global,
            new_unit_eps: 0.0,
            ..Default::default()
        };
        assert!(uniform_context(&global, &grown(2, None), 10, &lr).is_some());
        // Per-cohort step counts (and their own epsilon) make the blocks different updates.
        let cohort = AdamConfig::default();
        assert!(uniform_context(&cohort, &grown(2, None), 10, &lr).is_none());
        assert!(uniform_context(&global, &grown(2, Some(0.5)), 10, &lr).is_none());
        // A learning rate that differs by cohort (a new-unit multiplier) does too.
        let by_birth = |born: u64, _: u64| if born == 0 { 0.1 } else { 0.01 };
        assert!(uniform_context(&sgd, &grown(1, None), 10, &by_birth).is_none());
    }

    #[test]
    fn a_tensor_grown_from_nothing_has_one_cohort_and_is_uniform() {
        let mut st = TensorState::<f32>::new("w", (0, 3), 2, 0);
        st.resize((4, 3), 5, Some(0.5));
        assert_eq!(st.rows.len(), 1);
        assert!(st.validate(2, 9).is_ok());
        let ctx = uniform_context(&AdamConfig::default(), &st, 9, &|_, _| 0.1).unwrap();
        assert_eq!((ctx.t, ctx.eps), (4, Some(0.5)));
    }
}
