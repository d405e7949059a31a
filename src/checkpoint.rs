//! Saving and loading a (possibly grown) model with its optimizer and controller state, so
//! that training resumes mid-schedule exactly as if it had never stopped.
//!
//! A checkpoint holds the model's site widths and block order, every parameter tensor by
//! name (values bit for bit, NaN included), and optionally the optimizer's and the
//! controller's state. On disk it is one header line (format, version, payload length and
//! CRC-32) and a JSON payload, written atomically: a crash leaves the old file or the new
//! one, never a mix, and a truncated or altered file is refused before anything is built.
//!
//! Restoring into a model rebuilds its structure first (inserting missing blocks, growing
//! sites to the saved widths) and checks every tensor's name and size before writing any
//! value; on error the model is as it was.

use std::path::Path;

use dfdx::prelude::Device;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::controller::ControllerState;
use crate::fsio::{read_bounded, write_atomic};
use crate::optim::{Optimizer, SavedState};
use crate::{grow_site, GrowError, Growable, Init, Mlp, Params, Real};

/// Why a checkpoint could not be written, read or restored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Reading or writing the file failed.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        reason: String,
    },
    /// The file is not a checkpoint of this format, or it was truncated or altered.
    #[error("{path}: not a valid dfdx-grow checkpoint: {reason}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The checkpoint does not fit the model (or optimizer) it is restored into; nothing was
    /// changed.
    #[error("checkpoint does not fit the model: {0}")]
    Mismatch(String),
    /// The checkpoint was not written because it would not load back (its parts do not fit
    /// together); the file at `path` is as it was.
    #[error("{path}: not saved, the checkpoint would not load back: {reason}")]
    NotSaved {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// The current format version.
pub const FORMAT_VERSION: u32 = 2;

/// The largest checkpoint file [`Checkpoint::load`] reads: 16 GiB.
pub const MAX_CHECKPOINT_BYTES: u64 = 16 << 30;

const MAGIC: &str = "dfdx-grow checkpoint";

/// One parameter tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedParam {
    /// The tensor's name in the model's parameter walk.
    pub name: String,
    /// `(rows, columns)` (a vector of n entries is `(n, 1)`).
    pub dims: (usize, usize),
    /// The values, row-major, as f64 (lossless for f32 and f64, NaN included).
    #[serde(with = "crate::codec::f64_vec")]
    pub values: Vec<f64>,
}

/// A model's structure and weights, plus optional optimizer and controller state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Every growth site and its width.
    pub sites: Vec<(String, usize)>,
    /// The block order of a model that grows in depth (empty otherwise).
    pub blocks: Vec<String>,
    /// The model's own description ([`Growable::describe`]), e.g. an `Mlp`'s widths,
    /// activation and width cap.
    pub model: serde_json::Value,
    /// Every parameter tensor, in walk order.
    pub tensors: Vec<SavedParam>,
    /// The optimizer's state, if saved.
    pub optimizer: Option<SavedState>,
    /// The controller's state, if saved.
    pub controller: Option<ControllerState>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    version: u32,
    bytes: u64,
    crc32: u32,
}

impl Checkpoint {
    /// Captures `model`'s structure and weights.
    pub fn of<E: Real, D: Device<E>, M: Growable<E, D>>(model: &M) -> Self {
        let f = |x: &E| x.to_f64().unwrap_or(f64::NAN);
        let mut tensors = Vec::new();
        model.visit(&mut |name, p| {
            let mut v = vec![E::zero(); p.len()];
            p.copy_into(&mut v);
            tensors.push(SavedParam {
                name: name.to_string(),
                dims: p.dims(),
                values: v.iter().map(f).collect(),
            });
        });
        Self {
            sites: model
                .sites()
                .into_iter()
                .map(|s| (s.name, s.width))
                .collect(),
            blocks: model.blocks(),
            model: model.describe(),
            tensors,
            optimizer: None,
            controller: None,
        }
    }

    /// Adds the optimizer's state (take it with `opt.save_state()`).
    pub fn with_optimizer(mut self, state: SavedState) -> Self {
        self.optimizer = Some(state);
        self
    }

    /// Adds the controller's state (take it with [`crate::GrowthController::state`]).
    pub fn with_controller(mut self, state: ControllerState) -> Self {
        self.controller = Some(state);
        self
    }

    /// Writes the checkpoint to `path` atomically (a unique temporary file in the same
    /// directory, synced, then renamed over the target). The bytes are first read back as
    /// [`Checkpoint::load`] would: a checkpoint that would not load (a tensor named twice,
    /// optimizer state of another model) is refused with [`CheckpointError::NotSaved`] and
    /// the file at `path` is left as it was.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), CheckpointError> {
        let path = path.as_ref();
        let io = |reason: String| CheckpointError::Io {
            path: path.display().to_string(),
            reason,
        };
        let payload = serde_json::to_vec(self).map_err(|e| io(e.to_string()))?;
        let header = Header {
            format: MAGIC.into(),
            version: FORMAT_VERSION,
            bytes: payload.len() as u64,
            crc32: crc32fast::hash(&payload),
        };
        let mut bytes = serde_json::to_vec(&header).map_err(|e| io(e.to_string()))?;
        bytes.push(b'\n');
        bytes.extend_from_slice(&payload);
        // Never replace a good file with one that cannot be read back.
        Self::from_bytes(&bytes).map_err(|reason| CheckpointError::NotSaved {
            path: path.display().to_string(),
            reason,
        })?;
        write_atomic(path, &bytes).map_err(|e| io(e.to_string()))
    }

    /// Reads a checkpoint and checks it whole (length, checksum, every tensor's size, the
    /// optimizer state's ranges) before returning it.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let bytes = read_bounded(path, MAX_CHECKPOINT_BYTES).map_err(|e| CheckpointError::Io {
            path: name.clone(),
            reason: e.to_string(),
        })?;
        Self::from_bytes(&bytes).map_err(|reason| CheckpointError::Format { path: name, reason })
    }

    /// Parses and checks the bytes of a checkpoint file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let nl = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("no header line")?;
        let header: Header =
            serde_json::from_slice(&bytes[..nl]).map_err(|e| format!("header: {e}"))?;
        if header.format != MAGIC {
            return Err(format!("header names format {:?}", header.format));
        }
        if header.version != FORMAT_VERSION {
            return Err(format!(
                "version {} (this build reads {FORMAT_VERSION})",
                header.version
            ));
        }
        let payload = &bytes[nl + 1..];
        if payload.len() as u64 != header.bytes {
            return Err(format!(
                "payload of {} bytes where the header says {} (truncated?)",
                payload.len(),
                header.bytes
            ));
        }
        let crc = crc32fast::hash(payload);
        if crc != header.crc32 {
            return Err(format!(
                "checksum {crc:08x} where the header says {:08x} (altered?)",
                header.crc32
            ));
        }
        let c: Checkpoint = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
        c.check()?;
        Ok(c)
    }

    /// The number of parameter values saved.
    fn saved_values(&self) -> usize {
        self.tensors
            .iter()
            .fold(0usize, |n, t| n.saturating_add(t.values.len()))
    }

    /// Checks that the parts fit together.
    fn check(&self) -> Result<(), String> {
        let mut names = std::collections::BTreeSet::new();
        for t in &self.tensors {
            if !names.insert(t.name.as_str()) {
                return Err(format!("tensor {:?} appears twice", t.name));
            }
            if t.dims.0.checked_mul(t.dims.1) != Some(t.values.len()) {
                return Err(format!(
                    "tensor {:?} has {} values for dims {:?}",
                    t.name,
                    t.values.len(),
                    t.dims
                ));
            }
        }
        if let Some(opt) = &self.optimizer {
            if opt.tensors.len() != self.tensors.len() {
                return Err(format!(
                    "optimizer state for {} tensors, the model has {}",
                    opt.tensors.len(),
                    self.tensors.len()
                ));
            }
            for (s, t) in opt.tensors.iter().zip(&self.tensors) {
                if s.name != t.name || s.dims != t.dims {
                    return Err(format!(
                        "optimizer state for {:?} of {:?} where the model has {:?} of {:?}",
                        s.name, s.dims, t.name, t.dims
                    ));
                }
                let st: crate::optim::TensorState<f64> = s.clone().into();
                // The buffer count is the optimizer's; it is checked again on restore.
                st.validate(st.buffers.len(), opt.steps)
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// Restores the weights into `model`, a model built as the saved one was at its start:
    /// missing blocks are inserted, sites grown to the saved widths, then every tensor is
    /// checked by name and size before any value is written. On error `model` is unchanged,
    /// and the error names the first tensor or site that differs.
    pub fn restore<E: Real, D: Device<E>, M: Growable<E, D>>(
        &self,
        model: &mut M,
    ) -> Result<(), CheckpointError> {
        let backup = model.clone();
        self.restore_into(model).inspect_err(|_| *model = backup)
    }

    fn restore_into<E: Real, D: Device<E>, M: Growable<E, D>>(
        &self,
        model: &mut M,
    ) -> Result<(), CheckpointError> {
        let mismatch = CheckpointError::Mismatch;
        let grow = |e: GrowError| mismatch(e.to_string());
        // The values are overwritten below, so new units and blocks need no randomness.
        let mut rng = StdRng::seed_from_u64(0);
        let present = model.blocks();
        let mut missing: Vec<(usize, &String)> = self
            .blocks
            .iter()
            .enumerate()
            .filter(|(_, b)| !present.contains(b))
            .collect();
        // In the order they were made (their names count up), each after the nearest block
        // already there: that rebuilds the saved order.
        missing.sort_by_key(|(_, b)| block_number(b));
        for (i, block) in missing {
            let now = model.blocks();
            let after = self.blocks[..i]
                .iter()
                .rev()
                .find(|b| now.contains(b))
                .map_or(crate::grow::site::FIRST_BLOCK, String::as_str);
            let made = model.deepen(after, 1, &mut rng).map_err(grow)?;
            if made != *block {
                return Err(mismatch(format!(
                    "inserting after {after:?} made block {made:?}, the checkpoint has {block:?}"
                )));
            }
        }
        // Every site is checked, and the growth's size bounded by the saved tensors, before
        // any site grows: a checkpoint that lies about its widths is refused without
        // allocating what it claims.
        // Growth only adds: every tensor the model has must be saved, no larger than saved.
        for (name, d) in model.param_dims() {
            let reason = match self.tensors.iter().find(|t| t.name == name) {
                None => format!("the model's {name:?} of {d:?} is not in the checkpoint"),
                Some(t) if d.0 > t.dims.0 || d.1 > t.dims.1 => format!(
                    "the model has {name:?} of {d:?}, larger than the checkpoint's {:?}",
                    t.dims
                ),
                Some(_) => continue,
            };
            return Err(mismatch(format!("the first differing tensor: {reason}")));
        }
        let sites = model.sites();
        let mut need = Some(model.num_params());
        let mut grown = Vec::new();
        for (name, width) in &self.sites {
            let site = sites.iter().find(|s| s.name == *name).ok_or_else(|| {
                mismatch(format!(
                    "the checkpoint has site {name:?}; the model's sites are {:?}",
                    crate::grow::site::site_names(&sites)
                ))
            })?;
            if site.width > *width {
                return Err(mismatch(format!(
                    "site {name:?} is {} wide in the model, {width} in the checkpoint",
                    site.width
                )));
            }
            if site.width < *width {
                grown.push(format!("{name} {} -> {width}", site.width));
            }
            // A lower bound: a unit's fan-out only grows as the other sites grow.
            need = need.and_then(|n| n.checked_add(site.params_for(width - site.width)));
        }
        let have = self.saved_values();
        match need {
            Some(n) if n <= have => {}
            _ => {
                return Err(mismatch(format!(
                    "the checkpoint's site widths ({}) need at least {} parameters, its \
                     tensors hold {have}",
                    grown.join(", "),
                    need.map_or("more than usize::MAX".into(), |n| n.to_string())
                )))
            }
        }
        for (name, width) in &self.sites {
            let now = model
                .sites()
                .iter()
                .find(|s| s.name == *name)
                .map_or(*width, |s| s.width);
            if now < *width {
                grow_site(model, name, width - now, &Init::ZerosBoth, &mut rng).map_err(grow)?;
            }
        }
        let dims = model.param_dims();
        if dims.len() != self.tensors.len() {
            let extra = dims
                .iter()
                .map(|(n, _)| n)
                .find(|n| !self.tensors.iter().any(|t| t.name == **n));
            return Err(mismatch(format!(
                "the model has {} tensors, the checkpoint {}{}",
                dims.len(),
                self.tensors.len(),
                extra.map_or(String::new(), |n| format!(
                    " (the model's {n:?} is not saved)"
                ))
            )));
        }
        for ((name, d), t) in dims.iter().zip(&self.tensors) {
            if *name != t.name || *d != t.dims {
                return Err(mismatch(format!(
                    "the first differing tensor: the model has {name:?} of {d:?}, the checkpoint {:?} of {:?}",
                    t.name, t.dims
                )));
            }
        }
        // The model's own description (an Mlp's activation and width cap) must match too: a
        // resumed run with another cap would grow where the saved one was refused.
        let described = model.describe();
        if !self.model.is_null() && !described.is_null() && described != self.model {
            return Err(mismatch(format!(
                "the model is described as {described}, the checkpoint as {}",
                self.model
            )));
        }
        let cast = |x: &f64| E::from_f64(*x).unwrap_or_else(E::nan);
        let mut i = 0;
        model.visit_mut(&mut |_, mut p| {
            let v: Vec<E> = self.tensors[i].values.iter().map(cast).collect();
            p.copy_from(&v);
            i += 1;
        });
        Ok(())
    }

    /// Restores the saved optimizer state into `opt`, checked against `model` (which must
    /// already hold the checkpoint's structure: restore the model first). On error `opt` is
    /// unchanged.
    pub fn restore_optimizer<E: Real, D: Device<E>>(
        &self,
        opt: &mut dyn Optimizer<E, D>,
        model: &dyn Params<E, D>,
    ) -> Result<(), CheckpointError> {
        let saved = self.optimizer.as_ref().ok_or_else(|| {
            CheckpointError::Mismatch("the checkpoint has no optimizer state".into())
        })?;
        opt.load_state(saved, model)
            .map_err(|e| CheckpointError::Mismatch(e.to_string()))
    }

    /// Builds the saved [`Mlp`] on `dev` (its widths, activation, width cap and weights).
    pub fn to_mlp<E: Real, D: Device<E>>(&self, dev: &D) -> Result<Mlp<E, D>, CheckpointError> {
        let spec: crate::nn::mlp::MlpSpec = serde_json::from_value(self.model.clone())
            .map_err(|e| CheckpointError::Mismatch(format!("not an Mlp checkpoint: {e}")))?;
        // The description must account for exactly the saved values before anything of its
        // size is allocated.
        let described = spec.widths.windows(2).try_fold(0usize, |n, w| {
            w[0].checked_mul(w[1])?.checked_add(w[1])?.checked_add(n)
        });
        if described != Some(self.saved_values()) {
            return Err(CheckpointError::Mismatch(format!(
                "the Mlp described (widths {:?}) does not have the {} parameters saved",
                spec.widths,
                self.saved_values()
            )));
        }
        let mut mlp = spec
            .build(dev)
            .map_err(|e| CheckpointError::Mismatch(e.to_string()))?;
        self.restore(&mut mlp)?;
        Ok(mlp)
    }
}

/// The number a block's name ends with (`blocks.7` is 7), for the order blocks were made in.
fn block_number(name: &str) -> (u64, String) {
    let digits: String = name
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    (digits.parse().unwrap_or(u64::MAX), name.to_string())
}
