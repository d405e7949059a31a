pub use dfdx;

pub mod data;
