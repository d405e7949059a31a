//! Grow the hidden layers of a dfdx network in the middle of training.
//!
//! dfdx-grow brings runtime-sized linear layers ([`Linear`], [`Mlp`]) over dfdx tensors that
//! can gain hidden units without changing the network's function ([`Init::ZerosOut`]), into a
//! state gradient descent learns from, with optimizers whose state grows with the weights
//! ([`optim::Adam`], [`optim::Sgd`]).
#![forbid(unsafe_code)]
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
