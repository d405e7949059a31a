//! The crate's error type for growth and optimizer operations.

use thiserror::Error;

/// Why a growth or an optimizer step was refused.
///
/// Every refused growth leaves the model and the optimizer state exactly as they were. An
/// optimizer update checks the model's parameter names against its state before it writes
/// anything; only a model whose mutable walk names other tensors than its read walk (a
/// broken [`crate::Params`] implementation) can fail part-way through an update.
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
    #[error("growing site {site:?} from {width} by {k} units would pass the width cap of {cap}")]
    WidthCap {
        /// The site.
        site: String,
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
    /// Sizes that do not fit together (a layer's inputs differ from what it receives, a
    /// buffer of the wrong length, a column past the width).
    #[error("{what}: expected {expected}, found {found}")]
    ShapeMismatch {
        /// What does not fit: a layer, a site, a buffer.
        what: String,
        /// The size expected.
        expected: usize,
        /// The size found.
        found: usize,
    },
    /// The model has no growth site of this name.
    #[error("the model has no growth site {name:?}; its sites are {sites:?}")]
    NoSuchSite {
        /// The name asked for.
        name: String,
        /// The sites the model has.
        sites: Vec<String>,
    },
    /// A site names a parameter the model does not have (a typo in its `params`).
    #[error("site {site:?} names parameter {param:?}, which the model's parameter walk does not have; its parameters are {params:?}")]
    UnknownParam {
        /// The site.
        site: String,
        /// The name it gave.
        param: String,
        /// The names the walk has.
        params: Vec<String>,
    },
    /// Two tensors of the model's parameter walk share a name, or one has none: optimizer
    /// state, checkpoints and the audit log key by names, so each needs its own.
    #[error("parameter name {name:?} is empty or used twice: every tensor needs its own name")]
    ParamName {
        /// The name.
        name: String,
    },
    /// The layer does not support an operation a caller asked of it (a layer of the user's
    /// own that implements only what growth needs).
    #[error("this layer does not support {operation}")]
    Unsupported {
        /// What was asked, e.g. "overwriting existing output units".
        operation: &'static str,
    },
    /// The site grows in groups of units and `k` is not a multiple of the group.
    #[error("site {site:?} grows in multiples of {multiple} units, but k = {k}")]
    UnitMultiple {
        /// The site.
        site: String,
        /// The units asked for.
        k: usize,
        /// The group size.
        multiple: usize,
    },
    /// The growth would allocate more memory than allowed.
    #[error("growing {site:?} by {k} units needs about {bytes} bytes of new parameters and optimizer state, over the limit of {limit} bytes")]
    TooLarge {
        /// The site.
        site: String,
        /// The units asked for.
        k: usize,
        /// The estimated bytes.
        bytes: u128,
        /// The limit in force.
        limit: u128,
    },
    /// The model cannot grow in depth (or not after this block).
    #[error("cannot insert a block after {after:?}: {reason}")]
    Depth {
        /// The block after which one was asked for.
        after: String,
        /// Why not.
        reason: String,
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
    /// Site statistics that cannot be used (non-finite entries, no example) or a
    /// decomposition of them that failed.
    #[error("site statistics: {0}")]
    Statistics(String),
    /// An error reported by the dfdx device (allocation failure and the like).
    #[error("device error: {0}")]
    Device(String),
}

impl GrowError {
    pub(crate) fn device(e: impl std::fmt::Debug) -> Self {
        GrowError::Device(format!("{e:?}"))
    }
}
