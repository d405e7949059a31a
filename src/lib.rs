//! Grow the hidden layers of a network in the middle of training.
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

pub use dfdx;

pub mod audit;
pub mod init;
pub mod policy;
