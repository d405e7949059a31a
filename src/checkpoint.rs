//! Saving and loading a (possibly grown) model with its widths, and optionally its optimizer
//! state, so that training resumes mid-schedule.

use std::path::Path;

use dfdx::prelude::Device;
use serde::{Deserialize, Serialize};

use crate::optim::ModelState;

use crate::{Activation, Linear, Mlp, Params, Real};

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a checkpoint of this format.
    #[error("{path}: not a dfdx-grow checkpoint: {reason}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// The current format version.
pub const FORMAT_VERSION: u32 = 1;

/// A model's widths, activation and weights (as f64, which holds f32 values exactly), plus
/// optional optimizer state. JSON on disk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Format version, [`FORMAT_VERSION`].
    pub version: u32,
    /// Input, hidden and output widths.
    pub widths: Vec<usize>,
    /// The activation after each hidden layer.
    pub activation: Activation,
    /// Every parameter tensor, in walk order (weight, bias, weight, bias, ...), row-major.
    pub tensors: Vec<Vec<f64>>,
    /// The optimizer's state, if saved (in f64).
    pub optimizer: Option<ModelState<f64>>,
    /// The optimizer's step count.
    pub optimizer_steps: u64,
}

impl Checkpoint {
    /// Captures `mlp` (and optionally an optimizer's state and step count).
    pub fn of<E: Real, D: Device<E>>(
        mlp: &Mlp<E, D>,
        optimizer: Option<(&ModelState<E>, u64)>,
    ) -> Self {
        let f = |x: &E| x.to_f64().unwrap_or(f64::NAN);
        let mut tensors = Vec::new();
        mlp.visit(&mut |p| {
            let mut v = vec![E::zero(); p.len()];
            p.copy_into(&mut v);
            tensors.push(v.iter().map(f).collect());
        });
        let state = optimizer.map(|(s, _)| s.map(f));
        Self {
            version: FORMAT_VERSION,
            widths: mlp.widths(),
            activation: mlp.activation(),
            tensors,
            optimizer: state,
            optimizer_steps: optimizer.map_or(0, |(_, n)| n),
        }
    }

    /// Writes the checkpoint to `path` (through a temporary file, so a crash never leaves a
    /// half-written checkpoint behind).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), CheckpointError> {
        let path = path.as_ref();
        let io = |source| CheckpointError::Io {
            path: path.display().to_string(),
            source,
        };
        let text = serde_json::to_string(self).map_err(|e| io(std::io::Error::other(e)))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Reads and checks a checkpoint: every shape is checked before anything is built.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| CheckpointError::Io {
            path: name.clone(),
            source,
        })?;
        let c: Checkpoint = serde_json::from_str(&text).map_err(|e| CheckpointError::Format {
            path: name.clone(),
            reason: e.to_string(),
        })?;
        c.check()
            .map_err(|reason| CheckpointError::Format { path: name, reason })?;
        Ok(c)
    }

    fn check(&self) -> Result<(), String> {
        if self.version != FORMAT_VERSION {
            return Err(format!(
                "version {} (this build reads {FORMAT_VERSION})",
                self.version
            ));
        }
        if self.widths.len() < 2 || self.widths.contains(&0) {
            return Err(format!("invalid widths {:?}", self.widths));
        }
        let expected: Vec<usize> = self
            .widths
            .windows(2)
            .flat_map(|w| [w[0].saturating_mul(w[1]), w[1]])
            .collect();
        let found: Vec<usize> = self.tensors.iter().map(Vec::len).collect();
        if expected != found {
            return Err(format!(
                "tensor sizes {found:?} do not match widths {:?}",
                self.widths
            ));
        }
        if let Some(s) = &self.optimizer {
            let dims: Vec<(usize, usize)> = self
                .widths
                .windows(2)
                .flat_map(|w| [(w[1], w[0]), (w[1], 1)])
                .collect();
            let state_dims: Vec<(usize, usize)> = s.tensors.iter().map(|t| t.dims).collect();
            let sizes_ok = s
                .tensors
                .iter()
                .all(|t| t.buffers.iter().all(|b| b.len() == t.dims.0 * t.dims.1));
            if state_dims != dims || !sizes_ok {
                return Err("optimizer state does not match the model".into());
            }
        }
        Ok(())
    }

    /// The saved optimizer state converted to `E`, with its step count.
    pub fn optimizer_state<E: Real>(&self) -> Option<(ModelState<E>, u64)> {
        self.optimizer.as_ref().map(|s| {
            (
                s.map(|x| E::from_f64(*x).unwrap_or_else(E::zero)),
                self.optimizer_steps,
            )
        })
    }

    /// Builds the model on `dev`.
    pub fn to_mlp<E: Real, D: Device<E>>(&self, dev: &D) -> Result<Mlp<E, D>, CheckpointError> {
        let fmt = |reason: String| CheckpointError::Format {
            path: String::new(),
            reason,
        };
        self.check().map_err(fmt)?;
        let cast = |v: &Vec<f64>| {
            v.iter()
                .map(|x| E::from_f64(*x).unwrap_or_else(E::zero))
                .collect::<Vec<E>>()
        };
        let mut layers = Vec::new();
        for (i, w) in self.widths.windows(2).enumerate() {
            let weight = dev
                .try_tensor_from_vec(cast(&self.tensors[2 * i]), (w[1], w[0]))
                .map_err(|e| fmt(format!("{e:?}")))?;
            let bias = dev
                .try_tensor_from_vec(cast(&self.tensors[2 * i + 1]), (w[1],))
                .map_err(|e| fmt(format!("{e:?}")))?;
            layers.push(Linear::from_parts(weight, bias).map_err(|e| fmt(e.to_string()))?);
        }
        Mlp::from_layers(layers, self.activation).map_err(|e| fmt(e.to_string()))
    }
}
