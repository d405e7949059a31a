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

mod activation;
pub mod audit;
pub mod checkpoint;
mod codec;
mod controller;
mod conv;
mod data_matmul;
mod error;
mod expandable;
pub mod flops;
pub mod fsio;
pub mod health;
pub mod informed;
pub mod init;
mod linear;
mod loss;
pub mod lr;
mod mlp;
pub mod optim;
mod params;
mod perturb;
pub mod policy;
mod report;
mod resmlp;
pub mod sampling;
mod site;

pub use activation::Activation;
pub use controller::{
    ControllerError, ControllerState, GrowthController, HealthAction, HealthCheck, Outcome,
    DEFAULT_MAX_GROWTH_BYTES,
};
pub use conv::{flatten, Conv2d, FlatLinear, Images};
pub use data_matmul::Data;
pub use error::GrowError;
pub use expandable::{grow_between, Expandable};
pub use informed::{HostMatrix, SiteStatistics};
pub use init::{Init, NewUnits};
pub use linear::Linear;
pub use loss::Loss;
pub use mlp::{Mlp, MlpSpec, Probe};
pub use params::{scoped, scoped_mut, Matrix, ParamMut, ParamRef, Params, Vector};
pub use perturb::{shrink_perturb, PerturbScope, ShrinkPerturb};
pub use report::ExpansionReport;
pub use resmlp::{Block, ResMlp, ResMlpSpec};
pub use site::{
    check_growth, grow_site, grow_site_informed, grow_site_probed, Growable, LossProbe, Site,
    SiteMut, DEFAULT_MAX_WIDTH, FIRST_BLOCK,
};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The element types the crate computes in: dfdx dtypes with floating-point operations
/// (`f32` and `f64`).
pub trait Real: dfdx::prelude::Dtype + num_traits::Float {}
impl<T: dfdx::prelude::Dtype + num_traits::Float> Real for T {}
