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
mod controller;
pub mod data;
mod data_matmul;
mod error;
mod expandable;
pub mod flops;
pub mod init;
mod linear;
mod loss;
mod mlp;
pub mod optim;
mod params;
pub mod policy;
mod report;
pub mod sampling;

pub use activation::Activation;
pub use controller::{ControllerError, ControllerState, GrowthController};
pub use data_matmul::Data;
pub use error::GrowError;
pub use expandable::{grow_between, Expandable};
pub use init::{Init, NewUnits};
pub use linear::Linear;
pub use loss::Loss;
pub use mlp::{Mlp, Probe, DEFAULT_MAX_WIDTH};
pub use params::{Matrix, ParamMut, ParamRef, Params, Vector};
pub use report::ExpansionReport;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The element types the crate computes in: dfdx dtypes with floating-point operations
/// (`f32` and `f64`).
pub trait Real: dfdx::prelude::Dtype + num_traits::Float {}
impl<T: dfdx::prelude::Dtype + num_traits::Float> Real for T {}
