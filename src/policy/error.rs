//! Everything that can go wrong when loading, validating or restoring a policy.

/// An error from loading, validating or restoring a policy. Every variant names where the
/// problem is: the file (or other origin) and a line:column or a field path.
#[derive(Debug, thiserror::Error)]
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
    /// The spec could not be written as RON.
    #[error("cannot write policy spec as RON: {0}")]
    Write(String),
}
