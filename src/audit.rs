//! An append-only JSON Lines log of growth events.
//!
//! Each record is one JSON object on one line, written with a single `write_all` of the whole
//! line and flushed at once (optionally `sync_data`), so a process killed between events loses
//! nothing it reported. Non-finite numbers are written as the strings `"NaN"`, `"inf"`, `"-inf"`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::init::Init;
use crate::policy::Declined;

mod num;
mod table;

pub use table::summary_table;

/// One hidden layer grew.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GrowthEvent {
    /// Optimizer step at which the growth happened.
    pub step: u64,
    /// Epoch at which the growth happened.
    pub epoch: u64,
    /// Hidden layer index.
    pub layer: usize,
    /// Width before.
    pub old_width: usize,
    /// Width after.
    pub new_width: usize,
    /// Init of the new units.
    pub init: Init,
    /// Which policy (branch) decided, as in [`Decision::policy`](crate::policy::Decision::policy).
    pub policy: String,
    /// The decision's reason.
    pub reason: String,
    /// The decision's evidence.
    #[serde(with = "num::float_map")]
    pub evidence: BTreeMap<String, f64>,
    /// Parameters before.
    pub params_before: usize,
    /// Parameters after.
    pub params_after: usize,
    /// Loss on a fixed batch just before the growth, if measured.
    #[serde(with = "num::opt_float", default)]
    pub loss_before: Option<f64>,
    /// Loss on the same batch just after, if measured.
    #[serde(with = "num::opt_float", default)]
    pub loss_after: Option<f64>,
    /// Cumulative training FLOPs at the growth.
    #[serde(with = "num::float")]
    pub flops: f64,
}

/// A decision (or part of one) refused by limits or by the controller.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeclinedEvent {
    /// Step of the refusal.
    pub step: u64,
    /// Epoch of the refusal.
    pub epoch: u64,
    /// Which policy wanted to grow.
    pub policy: String,
    /// Why it was refused.
    pub why: String,
    /// The layers that were to grow.
    pub layers: Vec<usize>,
    /// Refusals this record stands for (the ones skipped by `every_nth`, plus itself).
    pub count: u64,
}

/// One line of the log; `kind` is `"growth"` or `"declined"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuditRecord {
    /// A growth was carried out.
    Growth(GrowthEvent),
    /// A growth was refused.
    Declined(DeclinedEvent),
}

/// Errors of the audit log, naming the file (and line when reading).
#[derive(Debug, thiserror::Error)]
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
}

/// The append-only log. See the module docs.
#[derive(Debug)]
pub struct AuditLog {
    file: File,
    path: PathBuf,
    declined_every: u64,
    declined_pending: u64,
    sync: bool,
}

impl AuditLog {
    /// Open (creating if needed) `path` for appending.
    /// # Default: every declined record written, no `sync_data`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, AuditError> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| io_err(&path, source))?;
        Ok(AuditLog {
            file,
            path,
            declined_every: 1,
            declined_pending: 0,
            sync: false,
        })
    }

    /// Write only every `n`-th declined record (each carries the count it stands for); 0 writes
    /// none.
    pub fn with_declined_every(mut self, n: u64) -> Self {
        self.declined_every = n;
        self
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

    /// Append one record as one line, flushed (and synced if asked).
    pub fn append(&mut self, record: &AuditRecord) -> Result<(), AuditError> {
        let mut line = serde_json::to_string(record)
            .map_err(|e| io_err(&self.path, std::io::Error::other(e)))?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .and_then(|()| {
                if self.sync {
                    self.file.sync_data()
                } else {
                    Ok(())
                }
            })
            .map_err(|source| io_err(&self.path, source))
    }

    /// Append a growth record.
    pub fn growth(&mut self, event: GrowthEvent) -> Result<(), AuditError> {
        self.append(&AuditRecord::Growth(event))
    }

    /// Count a refusal and write it if it is the `every_nth` one; returns whether it was written.
    pub fn declined(&mut self, d: &Declined) -> Result<bool, AuditError> {
        self.declined_pending += 1;
        if self.declined_every == 0 || self.declined_pending < self.declined_every {
            return Ok(false);
        }
        let count = std::mem::take(&mut self.declined_pending);
        self.append(&AuditRecord::Declined(DeclinedEvent {
            step: d.step,
            epoch: d.epoch,
            policy: d.policy.clone(),
            why: d.why.clone(),
            layers: d.growths.iter().map(|g| g.layer).collect(),
            count,
        }))?;
        Ok(true)
    }

    /// Read every record of a log. A line that does not parse is an error naming its number.
    pub fn read(path: impl AsRef<Path>) -> Result<Vec<AuditRecord>, AuditError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| io_err(path, source))?;
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| AuditError::Parse {
                    path: path.display().to_string(),
                    line: i + 1,
                    message: e.to_string(),
                })
            })
            .collect()
    }
}

fn io_err(path: &Path, source: std::io::Error) -> AuditError {
    AuditError::Io {
        path: path.display().to_string(),
        source,
    }
}
