//! Learning-rate schedules that know about growth.
//!
//! A schedule is a warm-up to a peak, then a decay (cosine or linear) to a floor over a total
//! budget of steps or FLOPs; what happens at a growth is its own setting:
//!
//! | `on_growth` | after a growth at step `g` | as in |
//! |---|---|---|
//! | `Keep` | nothing changes | |
//! | `Rewarm(steps: n)` | the rate ramps from 0 back to the schedule's value over `n` steps | staged training |
//! | `RewindToPeak` | the rate jumps back to the peak and decays again over what is left of the budget | MSG |
//!
//! In RON (see `policies/teacher-student/` for files that use one):
//!
//! ```
//! use dfdx_grow::lr::{LrSchedule, LrScheduleSpec};
//!
//! let spec = LrScheduleSpec::from_ron(
//!     "(peak: 1e-3, warmup: 100, decay: Cosine(floor: 0.0), budget: Steps(1000), on_growth: Rewarm(steps: 50))",
//!     "inline",
//! ).unwrap();
//! let mut s = LrSchedule::new(spec).unwrap();
//! assert_eq!(s.lr(0, 0.0), 1e-5);            // warm-up: (0 + 1) / 100 of the peak
//! assert!((s.lr(99, 0.0) - 1e-3).abs() < 1e-15);
//! assert!(s.lr(550, 0.0) < 1e-3);            // decaying
//! s.on_growth(550, 0.0);
//! assert_eq!(s.lr(550, 0.0), 0.0);           // re-warming from 0
//! ```

use serde::{Deserialize, Serialize};

use crate::policy::PolicyError;

/// Over what the schedule runs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Budget {
    /// A number of optimizer steps.
    Steps(u64),
    /// A number of training FLOPs (grown runs spend fewer per step).
    Flops(f64),
}

/// The shape of the decay after the warm-up.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Decay {
    /// No decay: the peak until the end.
    Constant,
    /// Half a cosine from the peak down to `floor` x the peak.
    Cosine {
        /// The final rate as a fraction of the peak, in [0, 1].
        floor: f64,
    },
    /// A straight line from the peak down to `floor` x the peak.
    Linear {
        /// The final rate as a fraction of the peak, in [0, 1].
        floor: f64,
    },
}

impl Decay {
    /// The multiplier of the peak at progress `p` in [0, 1] through the decay.
    pub fn factor(&self, p: f64) -> f64 {
        let p = p.clamp(0.0, 1.0);
        match *self {
            Decay::Constant => 1.0,
            Decay::Cosine { floor } => {
                floor + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
            }
            Decay::Linear { floor } => 1.0 - (1.0 - floor) * p,
        }
    }
}

/// What a growth does to the schedule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum OnGrowth {
    /// Nothing (the default).
    #[default]
    Keep,
    /// Ramp linearly from 0 back to the schedule's value over `steps` steps.
    Rewarm {
        /// The length of the ramp.
        steps: u64,
    },
    /// Back to the peak, then decay again over what is left of the budget.
    RewindToPeak,
}

/// A schedule as a file writes it. See the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrScheduleSpec {
    /// The largest rate.
    pub peak: f64,
    /// Steps of linear warm-up from 0 to the peak. Default 0.
    #[serde(default)]
    pub warmup: u64,
    /// The decay after the warm-up. Default `Constant`.
    #[serde(default = "constant")]
    pub decay: Decay,
    /// What the decay runs over.
    pub budget: Budget,
    /// What a growth does. Default `Keep`.
    #[serde(default)]
    pub on_growth: OnGrowth,
}

fn constant() -> Decay {
    Decay::Constant
}

impl LrScheduleSpec {
    /// Parses and checks RON text; `origin` names it in errors.
    pub fn from_ron(s: &str, origin: &str) -> Result<Self, PolicyError> {
        let spec: LrScheduleSpec = crate::policy::settings_from_ron(s, origin)?;
        spec.validate(origin)?;
        Ok(spec)
    }

    /// Checks every value; errors name the field.
    pub fn validate(&self, origin: &str) -> Result<(), PolicyError> {
        let bad = |path: &str, reason: String| {
            Err(PolicyError::Invalid {
                origin: origin.to_string(),
                path: path.to_string(),
                reason,
            })
        };
        if !(self.peak.is_finite() && self.peak > 0.0) {
            return bad("peak", format!("must be finite and > 0, got {}", self.peak));
        }
        if let Decay::Cosine { floor } | Decay::Linear { floor } = self.decay {
            if !(0.0..=1.0).contains(&floor) {
                return bad("decay.floor", format!("must be in [0, 1], got {floor}"));
            }
        }
        match self.budget {
            Budget::Steps(0) => return bad("budget", "must be at least 1 step".into()),
            Budget::Flops(f) if !(f.is_finite() && f > 0.0) => {
                return bad("budget", format!("must be finite and > 0 FLOPs, got {f}"))
            }
            _ => {}
        }
        if let Budget::Steps(n) = self.budget {
            if self.warmup >= n {
                return bad(
                    "warmup",
                    format!(
                        "the warm-up ({} steps) must be shorter than the budget ({n} steps)",
                        self.warmup
                    ),
                );
            }
        }
        if let OnGrowth::Rewarm { steps: 0 } = self.on_growth {
            return bad("on_growth.steps", "a re-warm needs at least 1 step".into());
        }
        Ok(())
    }
}

/// The running schedule: the spec plus where the last growth happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    spec: LrScheduleSpec,
    /// The step and FLOPs of the last growth, if any.
    last_growth: Option<(u64, f64)>,
}

impl LrSchedule {
    /// A schedule with no growth yet, from a spec that [`LrScheduleSpec::validate`] accepts
    /// (a schedule that cannot give finite, non-negative rates is refused here, not ignored
    /// later).
    pub fn new(spec: LrScheduleSpec) -> Result<Self, PolicyError> {
        spec.validate("lr schedule")?;
        Ok(LrSchedule {
            spec,
            last_growth: None,
        })
    }

    /// Checks a schedule that was not built by [`LrSchedule::new`] (one read back from a saved
    /// state): its spec, and a finite last growth.
    pub fn validate(&self) -> Result<(), PolicyError> {
        self.spec.validate("lr schedule")?;
        match self.last_growth {
            Some((_, f)) if !(f.is_finite() && f >= 0.0) => Err(PolicyError::Invalid {
                origin: "lr schedule".into(),
                path: "last_growth".into(),
                reason: format!("FLOPs at the last growth must be finite and >= 0, got {f}"),
            }),
            _ => Ok(()),
        }
    }

    /// The configuration.
    pub fn spec(&self) -> &LrScheduleSpec {
        &self.spec
    }

    /// Progress through the budget at `step` with `flops` spent, in [0, 1].
    fn progress(&self, step: u64, flops: f64) -> f64 {
        match self.spec.budget {
            Budget::Steps(n) => step as f64 / n as f64,
            Budget::Flops(f) => flops / f,
        }
        .clamp(0.0, 1.0)
    }

    /// The rate for the update after `step` steps and `flops` FLOPs.
    pub fn lr(&self, step: u64, flops: f64) -> f64 {
        let s = &self.spec;
        let warm = if step < s.warmup {
            (step + 1) as f64 / s.warmup as f64
        } else {
            1.0
        };
        // The decay starts after the warm-up (over a FLOP budget, whose warm-up FLOPs are not
        // known in advance, it runs over the whole budget).
        let p_warm = match s.budget {
            Budget::Steps(_) => self.progress(s.warmup, 0.0),
            Budget::Flops(_) => 0.0,
        };
        let p = self.progress(step, flops);
        let decay_p = |from: f64| {
            if from >= 1.0 {
                // Nothing of the budget is left to decay over: the decay is complete.
                1.0
            } else if p <= from {
                0.0
            } else {
                (p - from) / (1.0 - from).max(f64::MIN_POSITIVE)
            }
        };
        let base = s.peak * warm * s.decay.factor(decay_p(p_warm));
        match (s.on_growth, self.last_growth) {
            (OnGrowth::Rewarm { steps }, Some((g, _))) if step >= g && step - g < steps => {
                base * (step - g) as f64 / steps as f64
            }
            (OnGrowth::RewindToPeak, Some((g, gf))) => {
                let from = self.progress(g, gf);
                s.peak * s.decay.factor(decay_p(from))
            }
            _ => base,
        }
    }

    /// Tells the schedule a growth happened at `step` with `flops` spent; returns a line for
    /// the audit log ([`LrSchedule::action`]).
    pub fn on_growth(&mut self, step: u64, flops: f64) -> String {
        self.last_growth = Some((step, flops));
        self.action()
    }

    /// What a growth does to the rate, as the audit log says it.
    pub fn action(&self) -> String {
        match self.spec.on_growth {
            OnGrowth::Keep => "lr: keep".into(),
            OnGrowth::Rewarm { steps } => format!("lr: re-warm over {steps} steps"),
            OnGrowth::RewindToPeak => format!("lr: back to the peak {}", self.spec.peak),
        }
    }
}
