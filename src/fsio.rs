//! Placeholder for atomic writes and bounded reads (replaced by the reliability branch).

use std::path::Path;

/// Why a file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// An I/O error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Reads at most `max` bytes.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, FileError> {
    let _ = max;
    std::fs::read(path).map_err(|source| FileError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Writes atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    std::fs::write(path, bytes).map_err(|source| FileError::Io {
        path: path.display().to_string(),
        source,
    })
}
