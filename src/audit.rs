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

use crate::health::HealthRecord;
use crate::init::Init;
use crate::policy::Growth;

pub(crate) mod num;
mod table;

pub use table::summary_table;

/// The model grew: units at a site, or (with `after` set) a new block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GrowthEvent {
    /// Optimizer step at which the growth happened.
    pub step: u64,
    /// Epochs completed at the growth.
    pub epoch: u64,
    /// The site that grew, or the name of the new block.
    pub site: String,
    /// Width before (0 for a new block).
    pub old_width: usize,
    /// Width after (the new block's hidden width).
    pub new_width: usize,
    /// Init of the new units.
    pub init: Init,
    /// For a new block: the block it was inserted after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
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
    /// Loss on the probe batch just before the growth, if measured.
    #[serde(with = "num::opt_float", default)]
    pub loss_before: Option<f64>,
    /// Loss on the same batch just after, if measured.
    #[serde(with = "num::opt_float", default)]
    pub loss_after: Option<f64>,
    /// Cumulative training FLOPs at the growth.
    #[serde(with = "num::float")]
    pub flops: f64,
}

/// Growths a policy wanted but its [`Limits`](crate::policy::Limits) refused. Identical
/// refusals in a row (same policy, same sites) are written once, with their count and the
/// first and last step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeclinedEvent {
    /// Step of the first refusal this record stands for.
    pub first_step: u64,
    /// Step of the last one.
    pub step: u64,
    /// Epochs completed at the last one.
    pub epoch: u64,
    /// Which policy wanted to grow.
    pub policy: String,
    /// Why the first was refused.
    pub why: String,
    /// The sites (or blocks) that were to grow.
    pub sites: Vec<String>,
    /// How many refusals this record stands for.
    pub count: u64,
}

/// A decision the controller could not carry out (the model refused it, or the probe loss
/// rose and it was undone); the model, the optimizer and the policy's counts are as before.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefusedEvent {
    /// Step of the decision.
    pub step: u64,
    /// Epochs completed.
    pub epoch: u64,
    /// Which policy decided.
    pub policy: String,
    /// The decision's reason.
    pub reason: String,
    /// Why it was not carried out.
    pub why: String,
    /// The growths it asked for.
    pub growths: Vec<Growth>,
    /// For a growth that was carried out and undone: the probe loss before.
    #[serde(with = "num::opt_float", default)]
    pub loss_before: Option<f64>,
    /// ... and after (the rise that undid it).
    #[serde(with = "num::opt_float", default)]
    pub loss_after: Option<f64>,
}

/// One line of the log; `kind` is `"growth"`, `"declined"`, `"refused"`, `"undone"` or
/// `"health"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuditRecord {
    /// A growth was carried out.
    Growth(GrowthEvent),
    /// Growths were refused by the policy's limits.
    Declined(DeclinedEvent),
    /// The model refused a decision.
    Refused(RefusedEvent),
    /// A decision was carried out, then undone because the probe loss rose.
    Undone(RefusedEvent),
    /// How a growth's new units are doing, some steps after it.
    Health(HealthRecord),
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
    sync: bool,
}

impl AuditLog {
    /// Open (creating if needed) `path` for appending (without `sync_data` after each record
    /// unless [`AuditLog::with_sync`] asks for it).
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
            sync: false,
        })
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

    /// Append several records with one write, so that either all of them are in the log or
    /// none is.
    pub fn append_all(&mut self, records: &[AuditRecord]) -> Result<(), AuditError> {
        for r in records {
            self.append(r)?;
        }
        Ok(())
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
