pub use dfdx;

/// Data sets for examples and benchmarks: embedded UCI digits, Fashion-MNIST (IDX) and a
/// stratified split.
pub mod data;
