//! The RON form of a policy: parse, validate, build, write back.
//!
//! Files are read with RON's `unwrap_variant_newtypes` and `implicit_some` extensions on, so
//! `Plateau(monitor: Val, ..)` needs no double parentheses and `max_width: 256` means
//! `Some(256)`. See the commented files in `policies/` for the format.

use std::path::Path;

use ron::extensions::Extensions;
use serde::{Deserialize, Serialize};

use super::check::Checker;
use super::{AllOf, AnyOf, GradNorm, GradNormSpec, GrowthPolicy, Limits, LimitsSpec, Plateau};
use super::{PlateauSpec, PolicyError, Schedule, ScheduleSpec, Sequence};

/// Deepest nesting of combinators and [`PolicySpec::Limits`] accepted.
pub const MAX_DEPTH: usize = 32;

/// RON's own nesting limit while parsing (each `AnyOf([..])` level uses 4), so that hostile
/// input is refused before it can exhaust the stack; set to twice [`MAX_DEPTH`] policy levels
/// so that moderately deep specs reach the clearer semantic check.
const RON_RECURSION_LIMIT: usize = 8 * MAX_DEPTH;

/// A policy as written in a RON file. Build the running policy with [`PolicySpec::build`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum PolicySpec {
    /// A [`Plateau`] policy.
    Plateau(PlateauSpec),
    /// A [`GradNorm`] policy.
    GradNorm(GradNormSpec),
    /// A [`Schedule`] policy.
    Schedule(ScheduleSpec),
    /// [`AnyOf`] these policies.
    AnyOf(Vec<PolicySpec>),
    /// [`AllOf`] these policies.
    AllOf(Vec<PolicySpec>),
    /// A [`Sequence`] of stages.
    Sequence(Vec<StageSpec>),
    /// `policy` under [`Limits`]; every cap is optional.
    Limits {
        /// See [`LimitsSpec::max_width`].
        #[serde(default)]
        max_width: Option<usize>,
        /// See [`LimitsSpec::max_params`].
        #[serde(default)]
        max_params: Option<usize>,
        /// See [`LimitsSpec::max_events`].
        #[serde(default)]
        max_events: Option<u32>,
        /// See [`LimitsSpec::max_flops`].
        #[serde(default)]
        max_flops: Option<f64>,
        /// The limited policy.
        policy: Box<PolicySpec>,
    },
}

/// One stage of a [`PolicySpec::Sequence`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// The stage's policy.
    pub policy: PolicySpec,
    /// Applied growths after which the next stage starts (at least 1).
    pub times: u32,
}

fn options() -> ron::Options {
    ron::Options::default()
        .with_default_extension(Extensions::UNWRAP_VARIANT_NEWTYPES)
        .with_default_extension(Extensions::IMPLICIT_SOME)
        .with_recursion_limit(RON_RECURSION_LIMIT)
}

impl PolicySpec {
    /// Parse and validate RON text; `origin` names it in errors (usually the file path).
    pub fn from_ron(s: &str, origin: &str) -> Result<Self, PolicyError> {
        let spec: PolicySpec = options().from_str(s).map_err(|e| {
            let line = e.span.start.line;
            // Up to 80 characters of the offending line around the error column.
            let skip = e.span.start.col.saturating_sub(41);
            let near = s
                .lines()
                .nth(line.saturating_sub(1))
                .map(|l| l.chars().skip(skip).take(80).collect::<String>())
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .map(|l| format!(" (near `{l}`)"))
                .unwrap_or_default();
            PolicyError::Syntax {
                origin: origin.to_string(),
                line,
                col: e.span.start.col,
                message: match e.code {
                    ron::Error::ExceededRecursionLimit => format!(
                        "nested too deeply (RON recursion limit {RON_RECURSION_LIMIT}; policies \
                         may nest at most {MAX_DEPTH} levels)"
                    ),
                    code => code.to_string(),
                },
                near,
            }
        })?;
        spec.check(origin, None)?;
        Ok(spec)
    }

    /// Parse and validate bytes (which must be UTF-8).
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self, PolicyError> {
        let s = std::str::from_utf8(bytes).map_err(|e| PolicyError::NotUtf8 {
            origin: origin.to_string(),
            offset: e.valid_up_to(),
        })?;
        Self::from_ron(s, origin)
    }

    /// Check every value; errors name the field path.
    pub fn validate(&self) -> Result<(), PolicyError> {
        self.check("<spec>", None)
    }

    /// Like [`validate`](Self::validate), and also reject layer indices a model with
    /// `n_hidden` hidden layers does not have.
    pub fn validate_for(&self, n_hidden: usize) -> Result<(), PolicyError> {
        self.check("<spec>", Some(n_hidden))
    }

    fn check(&self, origin: &str, n_hidden: Option<usize>) -> Result<(), PolicyError> {
        Checker::new(n_hidden)
            .spec(self, "", 1)
            .map_err(|(path, reason)| PolicyError::Invalid {
                origin: origin.to_string(),
                path,
                reason,
            })
    }

    /// The running policy, with fresh state. Call [`validate`](Self::validate) first (the
    /// loading functions do).
    pub fn build(&self) -> Box<dyn GrowthPolicy> {
        match self {
            PolicySpec::Plateau(s) => Box::new(Plateau::new(s.clone())),
            PolicySpec::GradNorm(s) => Box::new(GradNorm::new(s.clone())),
            PolicySpec::Schedule(s) => Box::new(Schedule::new(s.clone())),
            PolicySpec::AnyOf(v) => Box::new(AnyOf(v.iter().map(Self::build).collect())),
            PolicySpec::AllOf(v) => Box::new(AllOf::new(v.iter().map(Self::build).collect())),
            PolicySpec::Sequence(v) => Box::new(Sequence::new(
                v.iter().map(|s| (s.policy.build(), s.times)).collect(),
            )),
            PolicySpec::Limits {
                max_width,
                max_params,
                max_events,
                max_flops,
                policy,
            } => Box::new(Limits::new(
                LimitsSpec {
                    max_width: *max_width,
                    max_params: *max_params,
                    max_events: *max_events,
                    max_flops: *max_flops,
                },
                policy.build(),
            )),
        }
    }

    /// Pretty RON that [`from_ron`](Self::from_ron) reads back to an equal spec.
    pub fn to_ron(&self) -> Result<String, PolicyError> {
        let pretty = ron::ser::PrettyConfig::new()
            .extensions(Extensions::UNWRAP_VARIANT_NEWTYPES | Extensions::IMPLICIT_SOME);
        ron::Options::default()
            .to_string_pretty(self, pretty)
            .map_err(|e| PolicyError::Write(e.to_string()))
    }
}

/// The largest policy file read, in bytes (policy files are a few KiB).
const MAX_POLICY_FILE_BYTES: u64 = 1 << 20;

/// Read, parse and validate a policy spec file. A path that is not a regular file (a FIFO, a
/// device, a directory) or a file over 1 MiB is refused before reading.
pub fn load_spec(path: impl AsRef<Path>) -> Result<PolicySpec, PolicyError> {
    let path = path.as_ref();
    let origin = path.display().to_string();
    let bytes =
        crate::fsio::read_bounded(path, MAX_POLICY_FILE_BYTES).map_err(|e| PolicyError::Io {
            origin: origin.clone(),
            source: e.into_io_error(),
        })?;
    PolicySpec::from_bytes(&bytes, &origin)
}

/// Read, parse and validate a policy file and build the policy.
pub fn load_policy(path: impl AsRef<Path>) -> Result<Box<dyn GrowthPolicy>, PolicyError> {
    Ok(load_spec(path)?.build())
}

/// Parse and validate RON text and build the policy; `origin` names the text in errors.
pub fn policy_from_str(s: &str, origin: &str) -> Result<Box<dyn GrowthPolicy>, PolicyError> {
    Ok(PolicySpec::from_ron(s, origin)?.build())
}
