//! The log file: appends of whole lines in one write, the repair of a torn end on open, and
//! reading back with line numbers.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{AuditRecord, GrowthEvent};

/// Errors of the audit log, naming the file (and line when reading).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// Opening, writing or reading failed.
    #[error("{path}: {source}")]
    Io {
        /// The log file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line is not a valid record.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The log file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        message: String,
    },
    /// An append failed. The file was cut back to its length before the append, so the log
    /// holds none of the records passed, unless `rollback_error` says that cutting back failed
    /// too (then the log may end with a torn line, which the next [`AuditLog::open`] removes).
    #[error("{path}: cannot append: {source}{}", rollback_note(rollback_error))]
    Append {
        /// The log file.
        path: String,
        /// Why the write (or sync) failed.
        source: std::io::Error,
        /// Why cutting the file back failed, if it did.
        rollback_error: Option<String>,
    },
    /// The path is not a regular file (a FIFO, a device, a directory) or cannot be examined.
    #[error(transparent)]
    File(#[from] crate::fsio::FileError),
}

fn rollback_note(e: &Option<String>) -> String {
    match e {
        Some(e) => format!(" (and cutting the file back failed: {e}; it may end with a torn line)"),
        None => " (the log is unchanged)".into(),
    }
}

/// What [`AuditLog::open`] cut from the end of a log: the remains of a write interrupted by a
/// crash. Its `Display` is a one-line warning.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Repair {
    /// The log file.
    pub path: PathBuf,
    /// Bytes cut from the end.
    pub removed_bytes: u64,
    /// Length of the log after the cut.
    pub kept_bytes: u64,
    /// What was wrong: a last line without its newline, a last line that is not JSON, or both.
    pub why: &'static str,
    /// The start of what was cut (up to 80 characters, invalid UTF-8 replaced).
    pub removed_start: String,
}

impl fmt::Display for Repair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: cut {} bytes from the end ({}), starting `{}`; the log now ends at byte {}",
            self.path.display(),
            self.removed_bytes,
            self.why,
            self.removed_start,
            self.kept_bytes
        )
    }
}

/// A line [`AuditLog::read_lenient`] skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BadLine {
    /// 1-based line number.
    pub line: usize,
    /// Why it does not parse.
    pub message: String,
    /// The start of the line (up to 80 characters, invalid UTF-8 replaced).
    pub text_start: String,
}

/// What [`AuditLog::read_lenient`] found: the records that parse, and the lines that do not.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct LenientRead {
    /// Every record that parses, in file order.
    pub records: Vec<AuditRecord>,
    /// Every non-blank line that does not, in file order.
    pub bad_lines: Vec<BadLine>,
}

/// The append-only log. See the module docs.
#[derive(Debug)]
pub struct AuditLog {
    file: File,
    path: PathBuf,
    sync: bool,
    repaired: Option<Repair>,
}

impl AuditLog {
    /// Open (creating if needed) `path` for appending.
    ///
    /// If the log ends with a torn line (the remains of a write interrupted by a crash: a last
    /// line without its newline, or a last line that is not JSON at all), that line is cut
    /// away first, so that new records do not land on it; [`repaired`](Self::repaired) then
    /// says what was cut. A last line that is JSON but not a record of this version is kept
    /// (for [`read`](Self::read) to report). A path that is not a regular file is refused.
    /// No `sync_data` after each record unless [`AuditLog::with_sync`] asks for it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, AuditError> {
        let path = path.as_ref().to_path_buf();
        // Checked before opening: opening a FIFO for writing blocks until a reader comes.
        crate::fsio::refuse_non_regular(&path, None)?;
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|source| io_err(&path, source))?;
        crate::fsio::refuse_non_regular(&path, Some(&file))?;
        let repaired = repair_tail(&mut file, &path).map_err(|source| io_err(&path, source))?;
        Ok(AuditLog {
            file,
            path,
            sync: false,
            repaired,
        })
    }

    /// What [`open`](Self::open) cut from the end of the log, if anything: show it to the user
    /// as a warning.
    pub fn repaired(&self) -> Option<&Repair> {
        self.repaired.as_ref()
    }

    /// Also `sync_data` after every record.
    pub fn with_sync(mut self, sync: bool) -> Self {
        self.sync = sync;
        self
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one record as one line (and sync if asked). See
    /// [`append_all`](Self::append_all).
    pub fn append(&mut self, record: &AuditRecord) -> Result<(), AuditError> {
        self.append_all(std::slice::from_ref(record))
    }

    /// Append `records`, one line each, with a single `write` (then `sync_data` if asked):
    /// either all of them are in the log afterwards, or (on `Err`) none, because a failed or
    /// short write is cut back to the file's previous length. Nothing is written for an empty
    /// slice. Use it to log everything one observation decided together.
    ///
    /// A process killed during the write may leave only some of the lines, the last one torn;
    /// [`open`](Self::open) cuts the torn one away.
    pub fn append_all(&mut self, records: &[AuditRecord]) -> Result<(), AuditError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for r in records {
            serde_json::to_writer(&mut buf, r)
                .map_err(|e| io_err(&self.path, std::io::Error::other(e)))?;
            buf.push(b'\n');
        }
        let before = self
            .file
            .metadata()
            .map_err(|source| io_err(&self.path, source))?
            .len();
        append_or_roll_back(&mut self.file, &buf, before, self.sync).map_err(
            |(source, rollback_error)| AuditError::Append {
                path: self.path.display().to_string(),
                source,
                rollback_error: rollback_error.map(|e| e.to_string()),
            },
        )
    }

    /// Append a growth record.
    pub fn growth(&mut self, event: GrowthEvent) -> Result<(), AuditError> {
        self.append(&AuditRecord::Growth(event))
    }

    /// Read every record of a log. The first line that does not parse is an error naming its
    /// number; blank lines are skipped. A log whose writer was killed may end with a torn line
    /// until it is next [`open`](Self::open)ed; [`read_lenient`](Self::read_lenient) reads
    /// past it.
    pub fn read(path: impl AsRef<Path>) -> Result<Vec<AuditRecord>, AuditError> {
        let path = path.as_ref();
        let mut records = Vec::new();
        for_each_line(path, |line, text| {
            let parse_err = |message| AuditError::Parse {
                path: path.display().to_string(),
                line,
                message,
            };
            let text = text.map_err(|_| parse_err(too_long()))?;
            let r = serde_json::from_slice(text).map_err(|e| parse_err(e.to_string()))?;
            records.push(r);
            Ok(())
        })?;
        Ok(records)
    }

    /// Read every record that parses, and list the (non-blank) lines that do not, with their
    /// numbers, instead of stopping at the first. Only I/O is an error.
    pub fn read_lenient(path: impl AsRef<Path>) -> Result<LenientRead, AuditError> {
        let path = path.as_ref();
        let mut out = LenientRead {
            records: Vec::new(),
            bad_lines: Vec::new(),
        };
        for_each_line(path, |line, text| {
            let parsed = match text {
                Ok(text) => serde_json::from_slice(text).map_err(|e| (e.to_string(), text)),
                Err(start) => Err((too_long(), start)),
            };
            match parsed {
                Ok(r) => out.records.push(r),
                Err((message, text)) => out.bad_lines.push(BadLine {
                    line,
                    message,
                    text_start: start_of(text),
                }),
            }
            Ok(())
        })?;
        Ok(out)
    }
}

/// The last line of the log at `path`, if it is a record (streaming: only one line is kept).
pub(crate) fn last_record(path: &Path) -> Result<Option<AuditRecord>, AuditError> {
    let mut last = None;
    for_each_line(path, |_, text| {
        last = text.ok().and_then(|t| serde_json::from_slice(t).ok());
        Ok(())
    })?;
    Ok(last)
}

/// The longest line [`AuditLog::read`] and [`AuditLog::read_lenient`] accept (records are a
/// few hundred bytes; this bounds the memory a damaged or foreign file can take).
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// Calls `f(line number, line)` for each non-blank line of the regular file `path` (without
/// its newline), streaming; a line longer than [`MAX_LINE_BYTES`] is passed as `Err` with its
/// start, and the rest of it is skipped unread into memory.
fn for_each_line(
    path: &Path,
    mut f: impl FnMut(usize, Result<&[u8], &[u8]>) -> Result<(), AuditError>,
) -> Result<(), AuditError> {
    let mut reader = BufReader::new(crate::fsio::open_regular(path)?);
    let mut buf = Vec::new();
    let io = |source| io_err(path, source);
    for line in 1.. {
        buf.clear();
        let n = Read::take(&mut reader, MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(io)?;
        if n == 0 {
            break;
        }
        if buf.len() > MAX_LINE_BYTES && buf.last() != Some(&b'\n') {
            skip_line(&mut reader).map_err(io)?;
            f(line, Err(&buf))?;
            continue;
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        f(line, Ok(&buf))?;
    }
    Ok(())
}

/// Consumes the rest of the current line, newline included, without keeping it.
fn skip_line(reader: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(());
        }
        match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => {
                reader.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = chunk.len();
                reader.consume(n);
            }
        }
    }
}

fn too_long() -> String {
    format!("line longer than {MAX_LINE_BYTES} bytes")
}

/// Up to 80 characters of `bytes`, trimmed, invalid UTF-8 replaced.
fn start_of(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(320)];
    String::from_utf8_lossy(head)
        .trim()
        .chars()
        .take(80)
        .collect()
}

/// Writes `buf` with one `write` at the end of `file` (opened for appending, `before` bytes
/// long), syncing if asked; on failure (or a short write) cuts the file back to `before`.
/// The error is the write's, with the cut-back's if that failed too.
fn append_or_roll_back(
    file: &mut File,
    buf: &[u8],
    before: u64,
    sync: bool,
) -> Result<(), (std::io::Error, Option<std::io::Error>)> {
    let written = match file.write(buf) {
        Ok(n) if n == buf.len() => Ok(()),
        Ok(n) => Err(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            format!("short write: {n} of {} bytes", buf.len()),
        )),
        Err(e) => Err(e),
    };
    let result = written.and_then(|()| if sync { file.sync_data() } else { Ok(()) });
    match result {
        Ok(()) => Ok(()),
        Err(e) => Err((e, file.set_len(before).err())),
    }
}

/// The position of the last `byte` in `file[..end]`, reading backwards in blocks.
fn rfind_byte(file: &mut File, end: u64, byte: u8) -> std::io::Result<Option<u64>> {
    const BLOCK: u64 = 64 * 1024;
    let mut buf = vec![0u8; BLOCK as usize];
    let mut hi = end;
    while hi > 0 {
        let lo = hi.saturating_sub(BLOCK);
        let chunk = &mut buf[..(hi - lo) as usize];
        file.seek(SeekFrom::Start(lo))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == byte) {
            return Ok(Some(lo + i as u64));
        }
        hi = lo;
    }
    Ok(None)
}

/// Whether `file[start..end]` is one JSON value (surrounding whitespace allowed).
fn is_json(file: &mut File, start: u64, end: u64) -> std::io::Result<bool> {
    file.seek(SeekFrom::Start(start))?;
    let reader = BufReader::new(Read::take(&mut *file, end - start));
    Ok(serde_json::from_reader::<_, serde::de::IgnoredAny>(reader).is_ok())
}

/// Cuts a torn last line from the log; see [`AuditLog::open`].
fn repair_tail(file: &mut File, path: &Path) -> std::io::Result<Option<Repair>> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    // Everything after the last newline is a line whose write did not finish.
    let mut keep = rfind_byte(file, len, b'\n')?.map_or(0, |p| p + 1);
    let torn = keep < len;
    // A complete last line that is not JSON (say, zeros left by a crash of the machine) is
    // the remains of a write too. One that is JSON is kept, whatever it holds.
    let mut not_json = false;
    if keep > 0 {
        let start = rfind_byte(file, keep - 1, b'\n')?.map_or(0, |p| p + 1);
        let blank = {
            let n = (keep - 1 - start).min(4096);
            let mut head = vec![0u8; n as usize];
            file.seek(SeekFrom::Start(start))?;
            file.read_exact(&mut head)?;
            n == keep - 1 - start && head.iter().all(u8::is_ascii_whitespace)
        };
        if !blank && !is_json(file, start, keep - 1)? {
            keep = start;
            not_json = true;
        }
    }
    if keep == len {
        return Ok(None);
    }
    let mut head = vec![0u8; (len - keep).min(320) as usize];
    file.seek(SeekFrom::Start(keep))?;
    file.read_exact(&mut head)?;
    file.set_len(keep)?;
    file.sync_data()?;
    Ok(Some(Repair {
        path: path.to_path_buf(),
        removed_bytes: len - keep,
        kept_bytes: keep,
        why: match (torn, not_json) {
            (true, true) => {
                "a last line without its newline, and before it a line that is not JSON"
            }
            (true, false) => "a last line without its newline",
            _ => "a last line that is not JSON",
        },
        removed_start: start_of(&head),
    }))
}

fn io_err(path: &Path, source: std::io::Error) -> AuditError {
    AuditError::Io {
        path: path.display().to_string(),
        source,
    }
}
