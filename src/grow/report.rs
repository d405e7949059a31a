//! What one expansion did, with the evidence that it preserved the function.

use serde::{Deserialize, Serialize};

use crate::Init;

/// The record of one expansion of a growth site.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExpansionReport {
    /// The site that grew.
    pub site: String,
    /// Its width before.
    pub old_width: usize,
    /// Its width after.
    pub new_width: usize,
    /// Trainable scalars before.
    pub params_before: usize,
    /// Trainable scalars after.
    pub params_after: usize,
    /// The init used.
    pub init: Init,
    /// Whether the init is function-preserving (see [`Init::is_exact`]).
    pub exact: bool,
    /// On the probe batch, when one was given: the largest absolute change of any output.
    pub max_abs_output_change: Option<f64>,
    /// The largest absolute output before the growth (the scale the change is relative to).
    pub output_scale: Option<f64>,
    /// The probe loss before the growth, when a probe with a target was given.
    pub loss_before: Option<f64>,
    /// The probe loss after the growth.
    pub loss_after: Option<f64>,
    /// For a gradient-informed init: how many of the new units came from the statistics (the
    /// rest are [`Init::ZerosOut`] units).
    #[serde(default)]
    pub informed: Option<usize>,
    /// For [`Init::Tiny`]: the `gamma` the new units were scaled by.
    #[serde(default)]
    pub gamma: Option<f64>,
    /// For a gradient-informed init: the FLOPs spent choosing the units (the statistics, the
    /// decompositions and the line search's probe evaluations).
    #[serde(default)]
    pub init_flops: Option<f64>,
}

impl ExpansionReport {
    /// The report of `site` grown from `old_width` by `k` units with `init`, the model going
    /// from `params_before` to `params_after` parameters; nothing measured yet.
    pub fn new(
        site: String,
        old_width: usize,
        k: usize,
        (params_before, params_after): (usize, usize),
        init: &Init,
    ) -> Self {
        ExpansionReport {
            site,
            old_width,
            new_width: old_width + k,
            params_before,
            params_after,
            init: init.clone(),
            exact: init.is_exact(),
            max_abs_output_change: None,
            output_scale: None,
            loss_before: None,
            loss_after: None,
            informed: None,
            gamma: None,
            init_flops: None,
        }
    }
}
