//! Everything that can go wrong when loading, validating or restoring a policy.

/// An error from loading, validating or restoring a policy. Every variant names where the
/// problem is: the file (or other origin) and a line:column or a field path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The file could not be read.
    #[error("{origin}: cannot read: {source}")]
    Io {
        /// The file.
        origin: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not UTF-8 text.
    #[error("{origin}: not UTF-8 text (invalid byte at offset {offset})")]
    NotUtf8 {
        /// The file.
        origin: String,
        /// Byte offset of the first invalid byte.
        offset: usize,
    },
    /// RON syntax or type error, with its position.
    #[error("{origin}:{line}:{col}: {message}{near}")]
    Syntax {
        /// The file.
        origin: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// What RON (or serde) said.
        message: String,
        /// The offending source line, as ` (near `...`)`, or empty.
        near: String,
    },
    /// A value that parses but makes no sense.
    #[error("{origin}: {path}: {reason}")]
    Invalid {
        /// The file.
        origin: String,
        /// Field path, e.g. `AnyOf[1].Plateau.threshold`.
        path: String,
        /// Why the value is rejected.
        reason: String,
    },
    /// A saved policy state that does not fit this policy.
    #[error("policy state for {policy}: {reason}")]
    State {
        /// Which policy.
        policy: String,
        /// What did not fit.
        reason: String,
    },
    /// The policy does not fit the model it watches (a site it names is missing, a signal it
    /// needs is not in the metrics). Raised at the first observation, before anything grows.
    #[error("{origin}: {path}: {reason}")]
    Model {
        /// The file the policy came from, or `<policy>` for one built in code.
        origin: String,
        /// Field path of the offending setting.
        path: String,
        /// What is missing, with what the model has.
        reason: String,
    },
    /// The spec could not be written as RON.
    #[error("cannot write policy spec as RON: {0}")]
    Write(String),
}

impl PolicyError {
    /// A [`PolicyError::Model`] at `path` for a policy built in code.
    pub fn model(path: impl Into<String>, reason: impl Into<String>) -> Self {
        PolicyError::Model {
            origin: "<policy>".into(),
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// The same error with its field path under `prefix` (how combinators name a child).
    pub fn under(self, prefix: &str) -> Self {
        match self {
            PolicyError::Model {
                origin,
                path,
                reason,
            } => PolicyError::Model {
                origin,
                path: format!("{prefix}.{path}"),
                reason,
            },
            other => other,
        }
    }

    /// The same error naming `origin` (the policy file) instead of `<policy>`.
    pub fn from_origin(self, file: &str) -> Self {
        match self {
            PolicyError::Model { path, reason, .. } => PolicyError::Model {
                origin: file.to_string(),
                path,
                reason,
            },
            other => other,
        }
    }
}
