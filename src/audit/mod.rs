//! An append-only JSON Lines log of growth events.
//!
//! Each record is one JSON object on one line. An append ([`AuditLog::append_all`]) is one
//! `write` of whole lines, so a process killed between appends loses nothing it reported; if
//! the write fails, the file is cut back to its previous length, so the log is unchanged. A
//! process killed *during* a write can leave a torn last line: [`AuditLog::open`] cuts it away
//! before appending and says so ([`AuditLog::repaired`]), so the log always reads back.
//! Non-finite numbers are written as the strings `"NaN"`, `"inf"`, `"-inf"`.
//!
//! One process writes a log at a time: the cut-back after a failed write assumes that nobody
//! else appended meanwhile.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::health::HealthRecord;
use crate::init::Init;
use crate::policy::Growth;

mod log;
pub(crate) mod num;
mod table;

pub(crate) use log::last_record;
pub use log::{AuditError, AuditLog, BadLine, LenientRead, Repair, MAX_LINE_BYTES};
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
    /// Init of the new units; for a new block, [`Init::ZerosOutFresh`]: what
    /// [`crate::Growable::deepen`] promises (a first layer drawn like a fresh layer, its bias
    /// too for [`crate::ResMlp`], and an output projection of zero).
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
    /// What the learning-rate schedule did at the growth, when the controller runs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<String>,
    /// For a gradient-informed init: how many of the new units its statistics informed (the
    /// rest start as `ZerosOut`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub informed: Option<usize>,
    /// For a gradient-informed init: the FLOPs of its statistics, decompositions and line
    /// search, to count with the training's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_flops: Option<f64>,
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
///
/// A refusal identical to the one written before it (same policy, growths and `why`: a
/// policy that keeps asking past a width cap) is not written again; the repeats in a row
/// are written as one record once something else is written or the controller flushes, with
/// their `count` and `first_step` (its other fields are the first repeat's, `step` and
/// `epoch` the last's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefusedEvent {
    /// Step of the decision (of the last one, for a summary of repeats).
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
    /// How many refusals the record stands for (more than 1 only for a summary of repeats).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub count: u64,
    /// For a summary of repeats: the step of the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_step: Option<u64>,
}

fn one() -> u64 {
    1
}

fn is_one(n: &u64) -> bool {
    *n == 1
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
