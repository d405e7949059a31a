//! The crate's error type for growth and optimizer operations.

use thiserror::Error;

/// Why a growth or an optimizer step was refused.
///
/// Every refusal leaves the model and the optimizer state exactly as they were.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum GrowError {
    /// The model has no hidden layer with this index.
    #[error("hidden layer {index} does not exist: the model has {hidden_layers} hidden layer(s), indices 0..{hidden_layers}")]
    NoSuchLayer {
        /// The index asked for.
        index: usize,
        /// How many hidden layers the model has.
        hidden_layers: usize,
    },
    /// Growing by zero units was asked for.
    #[error("cannot grow by k = 0 units: k must be at least 1")]
    ZeroUnits,
    /// The new width would pass the model's cap (or overflow `usize`).
    #[error(
        "growing hidden layer {layer} from {width} by {k} units would pass the width cap of {cap}"
    )]
    WidthCap {
        /// The hidden layer.
        layer: usize,
        /// Its current width.
        width: usize,
        /// The units asked for.
        k: usize,
        /// The cap in force.
        cap: usize,
    },
    /// The initialisation cannot be used as asked.
    #[error("init {init} cannot be used here: {reason}")]
    InitMismatch {
        /// The init's name.
        init: &'static str,
        /// Why not.
        reason: String,
    },
    /// Layer widths that do not chain (a layer's input width differs from the previous output).
    #[error("layer {layer} expects {expected} inputs but receives {found}")]
    ShapeMismatch {
        /// The layer index (0-based, over the linear layers).
        layer: usize,
        /// The width the layer expects.
        expected: usize,
        /// The width it would receive.
        found: usize,
    },
    /// A model description (a list of widths) that cannot be built.
    #[error("invalid model sizes {sizes:?}: {reason}")]
    InvalidSizes {
        /// The sizes given.
        sizes: Vec<usize>,
        /// Why they are rejected.
        reason: String,
    },
    /// The optimizer's state does not describe this model's parameters.
    #[error("optimizer state does not fit the model: {0}")]
    StateMismatch(String),
    /// A hyper-parameter that cannot be used (NaN, negative, out of range).
    #[error("invalid hyper-parameter {name} = {value}: {reason}")]
    InvalidHyper {
        /// The parameter's name.
        name: &'static str,
        /// Its value.
        value: f64,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// Input of the wrong width or a batch of zero rows.
    #[error("input has shape {found:?} but the model takes (batch >= 1, {expected})")]
    BadInput {
        /// The input width the model takes.
        expected: usize,
        /// The shape given.
        found: (usize, usize),
    },
    /// An error reported by the dfdx device (allocation failure and the like).
    #[error("device error: {0}")]
    Device(String),
}

impl GrowError {
    pub(crate) fn device(e: impl std::fmt::Debug) -> Self {
        GrowError::Device(format!("{e:?}"))
    }
}
