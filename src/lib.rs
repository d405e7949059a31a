//! Grow a dfdx network in the middle of training: add units to its layers (or blocks to its
//! depth) without changing what it computes, into a state gradient descent learns from, when
//! a policy written in a RON file decides, with every growth in an audit log.
//!
//! # The loop
//!
//! A training loop holds a [`GrowthController`]. After each step it describes the model with
//! [`policy::Metrics`]; the controller shows them to its [`policy::GrowthPolicy`] and, when the
//! policy decides, grows the model, pads the optimizer's state, checks the loss on a probe
//! batch (a growth that raises it is undone) and records what happened:
//!
//! ```
//! use dfdx_grow::dfdx::prelude::*;
//! use dfdx_grow::optim::{Adam, AdamConfig, Optimizer};
//! use dfdx_grow::policy::{policy_from_str, Metrics};
//! use dfdx_grow::rand::{rngs::StdRng, SeedableRng};
//! use dfdx_grow::{Activation, Data, GrowthController, Loss, Mlp, Outcome, Params, Probe};
//!
//! let dev = Cpu::default();
//! let mut rng = StdRng::seed_from_u64(0);
//! let mut mlp = Mlp::<f32, Cpu>::new(&[4, 8, 3], Activation::Relu, &dev, &mut rng);
//! let mut opt = Adam::<f32>::new(AdamConfig::default()).unwrap();
//! // Usually `load_policy("policies/plateau.ron")`.
//! let policy = policy_from_str(
//!     "Schedule(events: [(at: Step(50), target: Site(\"hidden.0\"), size: Fraction(1.0))])",
//!     "inline",
//! ).unwrap();
//! let mut ctl = GrowthController::new(policy, 42);
//!
//! let x: Tensor<(usize, usize), f32, Cpu> = dev.sample_normal_like(&(32, 4));
//! let y: Tensor<(usize, usize), f32, Cpu> = dev.tensor_from_vec(
//!     (0..32 * 3).map(|i| if i % 3 == (i / 3) % 3 { 1.0 } else { 0.0 }).collect(), (32, 3));
//! let probe = Probe { input: x.clone(), target: Some((y.clone(), Loss::CrossEntropy)) };
//!
//! for step in 1..=100 {
//!     let grads = mlp.try_alloc_grads().unwrap();
//!     // `Data`: the first layer's input is data, so its gradient is not computed.
//!     let loss = cross_entropy_with_logits_loss(mlp.forward(Data(x.clone().traced(grads))), y.clone());
//!     let train_loss = loss.as_vec()[0] as f64;
//!     let mut grads = loss.backward();
//!     opt.update(&mut mlp, &mut grads).unwrap(); // the state follows the model through growth
//!
//!     let m = Metrics::of(&mlp).step(step).train_loss(train_loss).grads(&mut grads).build().unwrap();
//!     match ctl.observe(&m, &mut mlp, &mut opt, Some(&probe)).unwrap() {
//!         Outcome::Grown(events) => println!("step {step}: {:?}", events[0].site),
//!         Outcome::Refused(r) | Outcome::Undone(r) => println!("step {step}: {}", r.why),
//!         Outcome::Idle => {}
//!     }
//! }
//! assert_eq!(mlp.widths(), vec![4, 16, 3]);
//! ```
//!
//! # Where to go next
//!
//! - Any model grows, not only [`Mlp`]: implement [`Growable`] (name the model's growth
//!   [`Site`]s, lend out their layers) with layers that implement [`Expandable`]; [`ResMlp`]
//!   (which also grows in depth) and [`Cnn`] are built that way, and so is the two-headed
//!   model of `examples/custom_model/`.
//! - How new units start: [`Init`] (and [`informed`] for GradMax and TINY); whether they then
//!   live: [`health`].
//! - Optimizers whose state grows with the weights: [`optim`]; learning-rate schedules that
//!   know about growth: [`lr`].
//! - When and where to grow: [`policy`]; saving and resuming a grown run: [`checkpoint`]; the
//!   log: [`audit`].
// One `unsafe` block in the crate, allowed where it stands: the call into gemm for a linear
// layer's and a convolution's products on the CPU (`nn::gemm`), whose pointers and strides it
// checks first.
#![deny(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub use dfdx;
pub use rand;

pub mod audit;
pub mod checkpoint;
mod codec;
mod controller;
mod error;
pub mod flops;
pub mod fsio;
pub mod grow;
pub mod lr;
pub mod nn;
pub mod optim;
mod params;
pub mod policy;

pub use controller::{
    ControllerError, ControllerState, GrowthController, HealthAction, HealthCheck, Outcome,
    DEFAULT_MAX_GROWTH_BYTES,
};
pub use error::GrowError;
pub use grow::informed::{HostMatrix, SiteStatistics};
pub use grow::{
    check_growth, grow_between, grow_site, grow_site_informed, grow_site_probed, health, informed,
    init, sampling, shrink_perturb, Expandable, ExpansionReport, Growable, Init, LossProbe,
    NewUnits, PerturbScope, ShrinkPerturb, Site, SiteMut, DEFAULT_MAX_WIDTH, FIRST_BLOCK,
};
pub use nn::{
    flatten, Activation, Block, Cnn, CnnSpec, Conv2d, ConvSpec, Data, FlatLinear, Images, Linear,
    Loss, Mlp, MlpSpec, Probe, ResMlp, ResMlpSpec,
};
pub use params::{scoped, scoped_mut, Matrix, ParamMut, ParamRef, Params, Vector};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The element types the crate computes in: dfdx dtypes with floating-point operations
/// (`f32` and `f64`).
pub trait Real: dfdx::prelude::Dtype + num_traits::Float {}
impl<T: dfdx::prelude::Dtype + num_traits::Float> Real for T {}
