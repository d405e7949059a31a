//! Files that are never half written and reads that never run away.
//!
//! [`write_atomic`] replaces a file so that, whatever happens (an error, a full disk, SIGKILL,
//! a crash of the machine), the path holds either the complete old content or the complete new
//! one: the bytes go to a temporary file with a name of their own in the same directory, which
//! is synced and then renamed over the target, and the directory is synced so that the rename
//! itself survives a crash.
//!
//! [`read_bounded`] reads a whole file after checking that it is a regular file (not a FIFO, a
//! device such as `/dev/zero`, or a directory) no larger than a bound, so that a wrong path
//! gives an error at once instead of a hang or an exhausted memory.
//!
//! ```
//! use dfdx_grow::fsio::{read_bounded, write_atomic, FileError};
//!
//! let path = std::env::temp_dir().join(format!("fsio_doc_{}.txt", std::process::id()));
//! write_atomic(&path, b"first")?;
//! write_atomic(&path, b"second")?;
//! assert_eq!(read_bounded(&path, 1024)?, b"second");
//! assert!(matches!(read_bounded(&path, 3), Err(FileError::TooLarge { .. })));
//! # std::fs::remove_file(&path).unwrap();
//! # Ok::<(), FileError>(())
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a file could not be written or read. Every variant names the path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The operating system refused an operation.
    #[error("{}: cannot {op}: {source}", path.display())]
    Io {
        /// The file (or, for `sync directory`, the directory).
        path: PathBuf,
        /// What was being done: `create temporary file`, `write`, `rename`, `open`, ...
        op: &'static str,
        /// The error the operating system gave.
        source: io::Error,
    },
    /// The path is something other than a regular file, so it is not read.
    #[error("{}: not a regular file (it is {kind}); refusing to read it", path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is: `a directory`, `a FIFO`, `a character device`, ...
        kind: &'static str,
    },
    /// The file is larger than the caller accepts.
    #[error("{}: {size} bytes or more, over the limit of {limit} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size as found (at least `limit + 1`).
        size: u64,
        /// The largest size accepted.
        limit: u64,
    },
    /// The path does not end in a file name (`/`, `..`, an empty path), so there is nothing to
    /// write to.
    #[error("{}: not a file path (no file name)", path.display())]
    NoFileName {
        /// The path.
        path: PathBuf,
    },
}

impl FileError {
    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            FileError::Io { path, .. }
            | FileError::NotRegular { path, .. }
            | FileError::TooLarge { path, .. }
            | FileError::NoFileName { path } => path,
        }
    }

    /// The error as an [`io::Error`] whose message leaves the path out, for callers whose own
    /// error type names the file already. The kind is kept (`NotFound`, `PermissionDenied`, ...);
    /// a non-regular file is `InvalidInput` (`IsADirectory` for a directory) and an oversized
    /// one `FileTooLarge`.
    pub fn into_io_error(self) -> io::Error {
        match self {
            FileError::Io { source, .. } => source,
            FileError::NotRegular { kind, .. } => io::Error::new(
                if kind == DIRECTORY {
                    io::ErrorKind::IsADirectory
                } else {
                    io::ErrorKind::InvalidInput
                },
                format!("not a regular file (it is {kind}); refusing to read it"),
            ),
            FileError::TooLarge { size, limit, .. } => io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("{size} bytes or more, over the limit of {limit} bytes"),
            ),
            FileError::NoFileName { .. } => io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a file path (no file name)",
            ),
        }
    }
}

const DIRECTORY: &str = "a directory";

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> FileError + 'a {
    move |source| FileError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// Names the temporary files of this process apart, together with the process id.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces the file at `path` with `bytes`, atomically. See [`write_atomic_with`].
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<(), FileError> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Replaces the file at `path` with what `write` writes, atomically: afterwards (and at every
/// moment, even if the process is killed or the machine crashes) `path` holds either its old
/// content (or nothing, if it did not exist) or the complete new content.
///
/// The content goes to `.{file name}.{process id}.{counter}.tmp` in the same directory, created
/// new (never an existing file), which is flushed, synced (`fsync`), renamed over `path`, and
/// the directory synced. Concurrent calls, from threads or processes, never share a temporary
/// file: each target ends with the complete content of one of the calls. If anything fails
/// (including `write` returning an error) the temporary file is removed and `path` is left
/// untouched. Only a process killed mid-write leaves its temporary file behind.
///
/// The new file has default permissions (not those of the file it replaces); a symbolic link at
/// `path` is replaced by the file, not followed.
pub fn write_atomic_with(
    path: impl AsRef<Path>,
    write: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> Result<(), FileError> {
    let path = path.as_ref();
    let name = path.file_name().ok_or_else(|| FileError::NoFileName {
        path: path.to_path_buf(),
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let (tmp, file) = create_temp(dir, &name.to_string_lossy())?;
    let result = fill_and_rename(file, &tmp, path, write);
    if result.is_err() {
        // Best effort: the error being returned is the one that matters.
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    sync_dir(dir)
}

/// Creates a fresh temporary file next to the target, retrying on a name already taken (left
/// by a killed process whose id has been reused).
fn create_temp(dir: &Path, name: &str) -> Result<(PathBuf, File), FileError> {
    let pid = std::process::id();
    let mut last_err = None;
    for _ in 0..64 {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{pid}.{n}.tmp"));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some((tmp, e)),
            Err(e) => return Err(io_err(&tmp, "create temporary file")(e)),
        }
    }
    let (tmp, e) = last_err.expect("the loop ran");
    Err(io_err(&tmp, "create temporary file")(e))
}

fn fill_and_rename(
    file: File,
    tmp: &Path,
    target: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> Result<(), FileError> {
    let mut w = BufWriter::new(file);
    write(&mut w).map_err(io_err(tmp, "write"))?;
    let file = w
        .into_inner()
        .map_err(|e| io_err(tmp, "write")(e.into_error()))?;
    file.sync_all().map_err(io_err(tmp, "sync"))?;
    drop(file);
    std::fs::rename(tmp, target).map_err(io_err(target, "rename the temporary file over"))
}

/// Makes a rename in `dir` durable. File systems that cannot sync a directory (they answer
/// `EINVAL`) are not an error: there is nothing more this process can do there.
fn sync_dir(dir: &Path) -> Result<(), FileError> {
    #[cfg(unix)]
    {
        let d = File::open(dir).map_err(io_err(dir, "open directory"))?;
        match d.sync_all() {
            Err(e) if e.kind() != io::ErrorKind::InvalidInput => {
                Err(io_err(dir, "sync directory")(e))
            }
            _ => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// What a non-regular file is, for [`FileError::NotRegular`].
fn kind_of(ft: std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        return DIRECTORY;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a FIFO";
        }
        if ft.is_char_device() {
            return "a character device";
        }
        if ft.is_block_device() {
            return "a block device";
        }
        if ft.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

/// Refuses a path that exists and is not a regular file (following symbolic links), for
/// callers that create the file when it is missing. `file`, if given, is checked instead of the
/// path: the file opened, so that a swap after the first check is caught.
pub(crate) fn refuse_non_regular(path: &Path, file: Option<&File>) -> Result<(), FileError> {
    let meta = match file {
        Some(f) => f.metadata(),
        None => std::fs::metadata(path),
    };
    match meta {
        Ok(m) if !m.file_type().is_file() => Err(FileError::NotRegular {
            path: path.to_path_buf(),
            kind: kind_of(m.file_type()),
        }),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound && file.is_none() => Ok(()),
        Err(e) => Err(io_err(path, "read")(e)),
    }
}

/// Opens `path` for reading if it is a regular file (symbolic links are followed), checking
/// the type before opening so that a FIFO is refused instead of blocking, and again after.
/// For readers that stream a file; [`read_bounded`] reads it whole.
pub fn open_regular(path: impl AsRef<Path>) -> Result<File, FileError> {
    let path = path.as_ref();
    let check = |ft: std::fs::FileType| {
        if ft.is_file() {
            Ok(())
        } else {
            Err(FileError::NotRegular {
                path: path.to_path_buf(),
                kind: kind_of(ft),
            })
        }
    };
    check(
        std::fs::metadata(path)
            .map_err(io_err(path, "read"))?
            .file_type(),
    )?;
    let file = File::open(path).map_err(io_err(path, "open"))?;
    // The path may have been replaced between the two calls.
    check(file.metadata().map_err(io_err(path, "read"))?.file_type())?;
    Ok(file)
}

/// Reads the whole regular file at `path`, refusing one of more than `max_bytes` bytes.
///
/// Non-regular files (directories, FIFOs, devices such as `/dev/zero`, sockets) give
/// [`FileError::NotRegular`] without being opened, so this never blocks on a FIFO. The size is
/// checked before reading and again while reading (at most `max_bytes + 1` bytes are read), so
/// a file that grows meanwhile is refused too, with [`FileError::TooLarge`].
pub fn read_bounded(path: impl AsRef<Path>, max_bytes: u64) -> Result<Vec<u8>, FileError> {
    let path = path.as_ref();
    let file = open_regular(path)?;
    let too_large = |size| FileError::TooLarge {
        path: path.to_path_buf(),
        size,
        limit: max_bytes,
    };
    let len = file.metadata().map_err(io_err(path, "read"))?.len();
    if len > max_bytes {
        return Err(too_large(len));
    }
    // `len` bytes fit in memory as far as the caller's bound goes; the `take` stops a file
    // that grows meanwhile.
    let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(io_err(path, "read"))?;
    if out.len() as u64 > max_bytes {
        return Err(too_large(out.len() as u64));
    }
    Ok(out)
}
