//! The RON form of a policy: parse, validate, build, write back.
//!
//! Files are read with RON's `unwrap_variant_newtypes` and `implicit_some` extensions on, so
//! `Plateau(monitor: Val, ..)` needs no double parentheses and `max_width: 256` means
//! `Some(256)`. See the commented files in `policies/` for the format.

use std::path::Path;

use ron::extensions::Extensions;
use serde::{Deserialize, Serialize};

use super::check::Checker;
use super::{AllOf, AnyOf, Decision, Declined, GradNorm, GradNormSpec, GrowthPolicy, Limits};
use super::{Efficiency, EfficiencySpec, LimitsSpec, Metrics, Plateau, StopRule};
use super::{PlateauSpec, PolicyError, Schedule, ScheduleSpec, Sequence, Target};

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
    /// An [`Efficiency`] policy.
    Efficiency(EfficiencySpec),
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
        /// See [`LimitsSpec::stop`].
        #[serde(default)]
        stop: Option<StopRule>,
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

/// `s` with every `Some((` .. `))` turned into `Some(` .. `)`, outside strings and comments.
fn unwrap_some_structs(s: &str) -> String {
    let c: Vec<char> = s.chars().collect();
    let mut drop = vec![false; c.len()];
    // Whether the parenthesis opened at each depth is one to drop when it closes.
    let mut stack: Vec<bool> = Vec::new();
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '"' => {
                i += 1;
                while i < c.len() && c[i] != '"' {
                    i += if c[i] == '\\' { 2 } else { 1 };
                }
            }
            '/' if c.get(i + 1) == Some(&'/') => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            }
            '/' if c.get(i + 1) == Some(&'*') => {
                while i + 1 < c.len() && !(c[i] == '*' && c[i + 1] == '/') {
                    i += 1;
                }
                i += 1;
            }
            '(' => {
                let prev: String = c[..i]
                    .iter()
                    .rev()
                    .skip_while(|c| c.is_whitespace())
                    .take(5)
                    .collect();
                let after_some = prev == "(emoS"
                    && !c[..i]
                        .iter()
                        .rev()
                        .skip_while(|c| c.is_whitespace())
                        .nth(5)
                        .is_some_and(|p| p.is_alphanumeric() || *p == '_');
                drop[i] = after_some;
                stack.push(after_some);
            }
            ')' => drop[i] = stack.pop().unwrap_or(false),
            _ => {}
        }
        i += 1;
    }
    c.iter()
        .zip(&drop)
        .filter(|(_, d)| !**d)
        .map(|(c, _)| *c)
        .collect()
}

/// Standard RON, without extensions: every option `None` or `Some(..)`, newtype variants in
/// double parentheses.
fn standard_ron_options() -> ron::Options {
    ron::Options::default().with_recursion_limit(RON_RECURSION_LIMIT)
}

/// The RON options every file of the crate is read with.
fn ron_options() -> ron::Options {
    ron::Options::default()
        .with_default_extension(Extensions::UNWRAP_VARIANT_NEWTYPES)
        .with_default_extension(Extensions::IMPLICIT_SOME)
        .with_recursion_limit(RON_RECURSION_LIMIT)
}

/// Reads a settings value (not a policy: no alternative spellings) from RON text with the
/// crate's options; a syntax error names `origin`, line and column.
pub(crate) fn settings_from_ron<T: serde::de::DeserializeOwned>(
    s: &str,
    origin: &str,
) -> Result<T, PolicyError> {
    ron_options().from_str(s).map_err(|e| PolicyError::Syntax {
        origin: origin.to_string(),
        line: e.span.start.line,
        col: e.span.start.col,
        message: e.code.to_string(),
        near: String::new(),
    })
}

impl PolicySpec {
    /// Parse and validate RON text; `origin` names it in errors (usually the file path).
    pub fn from_ron(s: &str, origin: &str) -> Result<Self, PolicyError> {
        // Both spellings of an option are accepted: `max_width: 256` (implicit) and standard
        // RON's `Some(256)`. The file's own form is read first; with variants unwrapped, RON
        // reads `Some((window: 5, ..))` as `Some(window: 5, ..)`, so a file that fails is read
        // again with that one paren level removed, then as fully standard RON (newtype
        // variants in double parentheses). The first error is the one reported.
        let parsed = ron_options().from_str(s).or_else(|e| {
            ron_options()
                .from_str(&unwrap_some_structs(s))
                .or_else(|_| standard_ron_options().from_str(s))
                .map_err(|_| e)
        });
        let spec: PolicySpec = parsed.map_err(|e: ron::error::SpannedError| {
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
        spec.check(origin)?;
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
        self.check("<spec>")
    }

    /// Like [`validate`](Self::validate), and also reject sites the model that `m` describes
    /// does not have and signals its metrics lack (see [`GrowthPolicy::check`]).
    pub fn validate_for(&self, m: &Metrics) -> Result<(), PolicyError> {
        self.validate()?;
        self.build().check(m)?;
        self.check_named_sites(m)
    }

    /// Rejects a site named by `Site(..)` (or a rule's `site`) that the model lacks, unless
    /// the spec grows in depth (then the site may be a block still to come, and the controller
    /// checks it when a decision names it).
    fn check_named_sites(&self, m: &Metrics) -> Result<(), PolicyError> {
        if self.grows_in_depth() {
            return Ok(());
        }
        let mut named = Vec::new();
        self.named_sites("", &mut named);
        match named.into_iter().find(|(_, name)| m.site(name).is_none()) {
            Some((path, name)) => Err(PolicyError::model(
                path.trim_start_matches('.'),
                format!(
                    "names site {name:?}, which the model does not have; its sites are {:?}",
                    m.site_names()
                ),
            )),
            None => Ok(()),
        }
    }

    /// Whether any part of the spec inserts blocks.
    fn grows_in_depth(&self) -> bool {
        match self {
            PolicySpec::Schedule(s) => s
                .events
                .iter()
                .any(|e| matches!(e.grow, super::Grow::Depth { .. })),
            PolicySpec::Plateau(_) | PolicySpec::GradNorm(_) | PolicySpec::Efficiency(_) => false,
            PolicySpec::AnyOf(v) | PolicySpec::AllOf(v) => v.iter().any(Self::grows_in_depth),
            PolicySpec::Sequence(v) => v.iter().any(|s| s.policy.grows_in_depth()),
            PolicySpec::Limits { policy, .. } => policy.grows_in_depth(),
        }
    }

    /// Every site named explicitly, with the field path that names it (the paths
    /// [`GrowthPolicy::check`] uses).
    fn named_sites(&self, at: &str, out: &mut Vec<(String, String)>) {
        let site = |t: &Target| match t {
            Target::Site(name) => Some(name.clone()),
            _ => None,
        };
        match self {
            PolicySpec::Schedule(s) => {
                for (i, e) in s.events.iter().enumerate() {
                    if let Some(name) = e.target.as_ref().and_then(site) {
                        out.push((format!("{at}.Schedule.events[{i}].target"), name));
                    }
                }
            }
            PolicySpec::Plateau(s) => {
                if let Some(name) = site(&s.target) {
                    out.push((format!("{at}.Plateau.target"), name));
                }
            }
            PolicySpec::Efficiency(s) => {
                if let Some(name) = site(&s.target) {
                    out.push((format!("{at}.Efficiency.target"), name));
                }
            }
            PolicySpec::GradNorm(s) => {
                for (i, r) in s.rules.iter().enumerate() {
                    if let Some(name) = &r.site {
                        out.push((format!("{at}.GradNorm.rules[{i}]"), name.clone()));
                    }
                }
            }
            PolicySpec::AnyOf(v) | PolicySpec::AllOf(v) => {
                let tag = if matches!(self, PolicySpec::AnyOf(_)) {
                    "AnyOf"
                } else {
                    "AllOf"
                };
                for (i, p) in v.iter().enumerate() {
                    p.named_sites(&format!("{at}.{tag}[{i}]"), out);
                }
            }
            PolicySpec::Sequence(v) => {
                for (i, st) in v.iter().enumerate() {
                    st.policy
                        .named_sites(&format!("{at}.Sequence[{i}].policy"), out);
                }
            }
            PolicySpec::Limits { policy, .. } => {
                policy.named_sites(&format!("{at}.Limits.policy"), out)
            }
        }
    }

    fn check(&self, origin: &str) -> Result<(), PolicyError> {
        Checker::new()
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
            PolicySpec::Efficiency(s) => Box::new(Efficiency::new(s.clone())),
            PolicySpec::Schedule(s) => Box::new(Schedule::new(s.clone())),
            PolicySpec::AnyOf(v) => Box::new(AnyOf::new(v.iter().map(Self::build).collect())),
            PolicySpec::AllOf(v) => Box::new(AllOf::new(v.iter().map(Self::build).collect())),
            PolicySpec::Sequence(v) => Box::new(Sequence::new(
                v.iter().map(|s| (s.policy.build(), s.times)).collect(),
            )),
            PolicySpec::Limits {
                max_width,
                max_params,
                max_events,
                max_flops,
                stop,
                policy,
            } => Box::new(Limits::new(
                LimitsSpec {
                    max_width: *max_width,
                    max_params: *max_params,
                    max_events: *max_events,
                    max_flops: *max_flops,
                    stop: stop.clone(),
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

/// The largest policy file [`load_spec`] reads (policy files are a few KiB).
pub const MAX_POLICY_BYTES: u64 = 1 << 20;

/// Read, parse and validate a policy spec file (at most [`MAX_POLICY_BYTES`]; a FIFO, a
/// device or a directory is refused without reading).
pub fn load_spec(path: impl AsRef<Path>) -> Result<PolicySpec, PolicyError> {
    let path = path.as_ref();
    let origin = path.display().to_string();
    let bytes = crate::fsio::read_bounded(path, MAX_POLICY_BYTES).map_err(|e| PolicyError::Io {
        origin: origin.clone(),
        source: e.into_io_error(),
    })?;
    PolicySpec::from_bytes(&bytes, &origin)
}

/// Read, parse and validate a policy file and build the policy; the policy's errors against a
/// model ([`GrowthPolicy::check`]) name the file.
pub fn load_policy(path: impl AsRef<Path>) -> Result<Box<dyn GrowthPolicy>, PolicyError> {
    let path = path.as_ref();
    Ok(FromOrigin::boxed(
        path.display().to_string(),
        load_spec(path)?,
    ))
}

/// Parse and validate RON text and build the policy; `origin` names the text in errors.
pub fn policy_from_str(s: &str, origin: &str) -> Result<Box<dyn GrowthPolicy>, PolicyError> {
    Ok(FromOrigin::boxed(
        origin.to_string(),
        PolicySpec::from_ron(s, origin)?,
    ))
}

/// A policy read from a file or a string: itself, with errors that name where it came from,
/// and its spec, whose named sites are checked against the model.
#[derive(Debug)]
struct FromOrigin {
    origin: String,
    spec: PolicySpec,
    inner: Box<dyn GrowthPolicy>,
}

impl FromOrigin {
    fn boxed(origin: String, spec: PolicySpec) -> Box<dyn GrowthPolicy> {
        Box::new(FromOrigin {
            origin,
            inner: spec.build(),
            spec,
        })
    }
}

impl GrowthPolicy for FromOrigin {
    fn observe(&mut self, m: &Metrics) -> Option<Decision> {
        self.inner.observe(m)
    }
    fn on_growth(&mut self, applied: &Decision) {
        self.inner.on_growth(applied)
    }
    fn on_refused(&mut self, refused: &Decision, why: &str) {
        self.inner.on_refused(refused, why)
    }
    fn take_declined(&mut self) -> Vec<Declined> {
        self.inner.take_declined()
    }
    fn name(&self) -> String {
        self.inner.name()
    }
    fn save_state(&self) -> serde_json::Value {
        self.inner.save_state()
    }
    fn load_state(&mut self, s: &serde_json::Value) -> Result<(), PolicyError> {
        self.inner.load_state(s)
    }
    fn check(&self, m: &Metrics) -> Result<(), PolicyError> {
        self.inner
            .check(m)
            .and_then(|()| self.spec.check_named_sites(m))
            .map_err(|e| e.from_origin(&self.origin))
    }
    fn origin(&self) -> Option<&str> {
        Some(&self.origin)
    }
}
