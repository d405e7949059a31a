//! When and where to grow: the policy side of the growth controller.
//!
//! A [`GrowthPolicy`] watches one [`Metrics`] per observation and answers `None` (do nothing)
//! or a [`Decision`]. Policies are pure Rust, deterministic given the same metric stream, and
//! their running state saves to JSON and restores.
//!
//! # How a controller drives a policy
//!
//! At every observation:
//! 1. `let d = policy.observe(&metrics);`
//! 2. for each record in `policy.take_declined()`: log it (growths refused by [`Limits`]);
//! 3. if `d` is `Some`, try to carry it out, then call **exactly one** of
//!    `policy.on_growth(&d)` (it was carried out) or `policy.on_refused(&d, why)` (it was not),
//!    before the next `observe`.
//!
//! Cooldowns and event counts only count decisions reported through `on_growth`.
//!
//! # A custom policy
//!
//! ```
//! use dfdx_grow::init::Init;
//! use dfdx_grow::policy::{Decision, Growth, GrowthPolicy, Metrics, PolicyError};
//!
//! /// Grows site `hidden.0` by 8 units whenever the training loss exceeds a bound, at most 3
//! /// times.
//! #[derive(Debug)]
//! struct LossAbove { bound: f64, grown: u32 }
//!
//! impl GrowthPolicy for LossAbove {
//!     fn observe(&mut self, m: &Metrics) -> Option<Decision> {
//!         (m.train_loss > self.bound && self.grown < 3).then(|| Decision {
//!             growths: vec![Growth::Width { site: "hidden.0".into(), k: 8, init: Init::ZerosOut }],
//!             policy: self.name(),
//!             reason: format!("train loss {} above {}", m.train_loss, self.bound),
//!             evidence: [("train_loss".to_string(), m.train_loss)].into(),
//!         })
//!     }
//!     fn on_growth(&mut self, _applied: &Decision) { self.grown += 1; }
//!     fn name(&self) -> String { "loss_above".into() }
//!     fn save_state(&self) -> serde_json::Value { serde_json::json!(self.grown) }
//!     fn load_state(&mut self, s: &serde_json::Value) -> Result<(), PolicyError> {
//!         self.grown = serde_json::from_value(s.clone()).map_err(|e| PolicyError::State {
//!             policy: self.name(), reason: e.to_string() })?;
//!         Ok(())
//!     }
//! }
//!
//! let mut p: Box<dyn GrowthPolicy> = Box::new(LossAbove { bound: 1.0, grown: 0 });
//! let m = Metrics { train_loss: 2.0, ..Metrics::default() };
//! let d = p.observe(&m).expect("loss is above the bound");
//! p.on_growth(&d);
//! assert_eq!(p.save_state(), serde_json::json!(1));
//! ```

mod check;
mod combinators;
mod config;
mod decision;
mod efficiency;
mod error;
mod gradnorm;
mod limits;
mod metrics;
mod plateau;
mod schedule;
mod slope;

pub use combinators::{AllOf, AnyOf, Sequence};
pub(crate) use config::settings_from_ron;
pub use config::{
    load_policy, load_spec, policy_from_str, PolicySpec, StageSpec, MAX_DEPTH, MAX_POLICY_BYTES,
};
pub use decision::{Decision, Declined, Growth, Size, Target};
pub use efficiency::{Efficiency, EfficiencySpec};
pub use error::PolicyError;
pub use gradnorm::{Cross, GradNorm, GradNormSpec, GradRule};
pub use limits::{Limits, LimitsSpec, StopRule};
pub use metrics::{Metrics, MetricsBuilder, SiteMetrics};
pub use plateau::{Monitor, Plateau, PlateauSpec, SlopeTest, Threshold};
pub use schedule::{At, Event, Grow, Schedule, ScheduleSpec};
pub use slope::{fit_line, slope_test, LineFit, SlopeResult};

/// Decides when and where the network grows. `None` from [`observe`](Self::observe) means
/// "do nothing".
pub trait GrowthPolicy: std::fmt::Debug + Send {
    /// Look at one observation and maybe decide to grow.
    fn observe(&mut self, m: &Metrics) -> Option<Decision>;

    /// The decision last returned by `observe` was carried out. Cooldowns start and event
    /// counts increase here.
    fn on_growth(&mut self, applied: &Decision) {
        let _ = applied;
    }

    /// The decision last returned by `observe` was not carried out, for reason `why`.
    fn on_refused(&mut self, refused: &Decision, why: &str) {
        let _ = (refused, why);
    }

    /// Growths refused by [`Limits`] since the last call, for the audit log.
    fn take_declined(&mut self) -> Vec<Declined> {
        Vec::new()
    }

    /// Short name, e.g. `plateau(val)`.
    fn name(&self) -> String;

    /// The running state (not the configuration) as JSON.
    fn save_state(&self) -> serde_json::Value;

    /// Restore a state produced by [`save_state`](Self::save_state) on a policy built from the
    /// same configuration.
    fn load_state(&mut self, s: &serde_json::Value) -> Result<(), PolicyError>;

    /// Checks that the policy fits the model the metrics describe: every site it names
    /// exists and every signal it needs is there ([`PolicyError::Model`] otherwise). The
    /// controller calls it at the first observation and whenever the sites change.
    fn check(&self, m: &Metrics) -> Result<(), PolicyError> {
        let _ = m;
        Ok(())
    }

    /// Where the policy came from (its file), for error messages. Default none.
    fn origin(&self) -> Option<&str> {
        None
    }
}

impl<P: GrowthPolicy + ?Sized> GrowthPolicy for Box<P> {
    fn observe(&mut self, m: &Metrics) -> Option<Decision> {
        (**self).observe(m)
    }
    fn on_growth(&mut self, applied: &Decision) {
        (**self).on_growth(applied)
    }
    fn on_refused(&mut self, refused: &Decision, why: &str) {
        (**self).on_refused(refused, why)
    }
    fn take_declined(&mut self) -> Vec<Declined> {
        (**self).take_declined()
    }
    fn name(&self) -> String {
        (**self).name()
    }
    fn save_state(&self) -> serde_json::Value {
        (**self).save_state()
    }
    fn load_state(&mut self, s: &serde_json::Value) -> Result<(), PolicyError> {
        (**self).load_state(s)
    }
    fn check(&self, m: &Metrics) -> Result<(), PolicyError> {
        (**self).check(m)
    }
    fn origin(&self) -> Option<&str> {
        (**self).origin()
    }
}

/// Restores `s` into `policy`, or leaves the policy exactly as it was on error.
pub fn load_state_atomically(
    policy: &mut dyn GrowthPolicy,
    s: &serde_json::Value,
) -> Result<(), PolicyError> {
    let backup = policy.save_state();
    policy.load_state(s).inspect_err(|_| {
        // The backup was produced by this very policy, so it loads.
        let _ = policy.load_state(&backup);
    })
}

/// `target` checked against the model, as a [`PolicyError::Model`] at `path`.
pub(crate) fn check_target(path: &str, target: &Target, m: &Metrics) -> Result<(), PolicyError> {
    target
        .check(m)
        .map_err(|reason| PolicyError::model(path, reason))
}

/// Serialise a policy's state; states hold only finite numbers, strings and integers.
pub(crate) fn to_state<T: serde::Serialize>(state: &T) -> serde_json::Value {
    serde_json::to_value(state).unwrap_or(serde_json::Value::Null)
}

/// Deserialise a policy's state, naming the policy on failure.
pub(crate) fn from_state<T: serde::de::DeserializeOwned>(
    policy: &str,
    s: &serde_json::Value,
) -> Result<T, PolicyError> {
    T::deserialize(s).map_err(|e| PolicyError::State {
        policy: policy.to_string(),
        reason: e.to_string(),
    })
}
