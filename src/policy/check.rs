//! Semantic checks of a [`PolicySpec`]; every error names the field path.

use super::schedule::{Event, Grow};
use super::{Cross, EfficiencySpec, GradNormSpec, PlateauSpec, PolicySpec, Size, Target};
use super::{Threshold, MAX_DEPTH};
use crate::init::Init;

type Check = Result<(), (String, String)>;

fn fail(path: &str, reason: impl Into<String>) -> Check {
    Err((path.trim_start_matches('.').to_string(), reason.into()))
}

fn non_negative(path: &str, v: f64) -> Check {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        fail(path, format!("must be a finite number >= 0, got {v}"))
    }
}

fn unit_interval(path: &str, v: f64, closed_top: bool) -> Check {
    let ok = v.is_finite() && v > 0.0 && (v < 1.0 || (closed_top && v == 1.0));
    let range = if closed_top { "(0, 1]" } else { "(0, 1)" };
    if ok {
        Ok(())
    } else {
        fail(path, format!("must be in {range}, got {v}"))
    }
}

/// Walks a spec, remembering the fixed sizes seen (for limits that contradict them).
pub(crate) struct Checker {
    fixed: Vec<(String, usize)>,
}

impl Checker {
    pub(crate) fn new() -> Self {
        Checker { fixed: Vec::new() }
    }

    fn target(&self, path: &str, t: &Target) -> Check {
        match t {
            Target::Site(name) if name.is_empty() => fail(path, "a site name cannot be empty"),
            _ => Ok(()),
        }
    }

    fn event(&mut self, p: &str, e: &Event) -> Check {
        match (&e.grow, &e.target, &e.size) {
            (Grow::Width, Some(target), Some(size)) => {
                self.target(&format!("{p}.target"), target)?;
                self.init(&format!("{p}.init"), &e.init)?;
                self.size(&format!("{p}.size"), size, &e.init)
            }
            (Grow::Width, None, _) => fail(&format!("{p}.target"), "a width growth needs a target"),
            (Grow::Width, _, None) => fail(&format!("{p}.size"), "a width growth needs a size"),
            (Grow::Depth { .. }, Some(_), _) | (Grow::Depth { .. }, _, Some(_)) => fail(
                &format!("{p}.grow"),
                "a Depth growth takes no target or size (it names its block with `after`)",
            ),
            (Grow::Depth { after, hidden }, None, None) => {
                if after.is_empty() {
                    return fail(&format!("{p}.grow.after"), "must name a block");
                }
                if *hidden == 0 {
                    return fail(&format!("{p}.grow.hidden"), "must be at least 1");
                }
                Ok(())
            }
        }
    }

    fn size(&mut self, path: &str, s: &Size, init: &Init) -> Check {
        match *s {
            Size::Fixed(0) => fail(path, "k must be at least 1"),
            Size::Fixed(k) if *init == Init::MirrorPairs && k % 2 == 1 => {
                fail(path, format!("MirrorPairs needs an even k, got {k}"))
            }
            Size::Fixed(k) => {
                self.fixed
                    .push((path.trim_start_matches('.').to_string(), k));
                Ok(())
            }
            Size::Fraction(f) if f.is_finite() && f > 0.0 && f <= 10.0 => Ok(()),
            Size::Fraction(f) => fail(path, format!("fraction must be in (0, 10], got {f}")),
        }
    }

    fn init(&self, path: &str, init: &Init) -> Check {
        match *init {
            Init::CopyHalveNoise { std } => non_negative(&format!("{path}.std"), std),
            Init::ConstantFanIn { value } if !value.is_finite() => {
                fail(&format!("{path}.value"), "must be finite")
            }
            Init::GradMax { .. } | Init::Tiny { .. } => match init.check(2) {
                Ok(()) => Ok(()),
                Err(e) => fail(path, e.to_string()),
            },
            _ => Ok(()),
        }
    }

    fn plateau(&mut self, p: &str, s: &PlateauSpec) -> Check {
        if s.patience == 0 {
            return fail(&format!("{p}.patience"), "must be at least 1");
        }
        match s.threshold {
            Threshold::Rel(v) => non_negative(&format!("{p}.threshold.Rel"), v)?,
            Threshold::Abs(v) => non_negative(&format!("{p}.threshold.Abs"), v)?,
        }
        if let Some(a) = s.ema {
            unit_interval(&format!("{p}.ema"), a, true)?;
        }
        if let Some(t) = &s.test {
            if t.window < 3 {
                return fail(
                    &format!("{p}.test.window"),
                    format!("must be >= 3, got {}", t.window),
                );
            }
            unit_interval(&format!("{p}.test.confidence"), t.confidence, false)?;
        }
        self.target(&format!("{p}.target"), &s.target)?;
        self.init(&format!("{p}.init"), &s.init)?;
        self.size(&format!("{p}.size"), &s.size, &s.init)
    }

    fn gradnorm(&mut self, p: &str, s: &GradNormSpec) -> Check {
        if s.rules.is_empty() {
            return fail(&format!("{p}.rules"), "needs at least one rule");
        }
        if s.sustain == 0 {
            return fail(&format!("{p}.sustain"), "must be at least 1");
        }
        for (i, r) in s.rules.iter().enumerate() {
            let rp = format!("{p}.rules[{i}]");
            match (&r.layer, &r.site) {
                (None, None) => return fail(&rp, "name the site: `layer: 0` or `site: \"name\"`"),
                (Some(_), Some(_)) => return fail(&rp, "give `layer` or `site`, not both"),
                (None, Some(name)) => {
                    self.target(&format!("{rp}.site"), &Target::Site(name.clone()))?
                }
                (Some(_), None) => {}
            }
            match r.cross {
                Cross::Above(x) | Cross::Below(x) => non_negative(&format!("{rp}.cross"), x)?,
                Cross::AboveMean { factor, alpha } | Cross::BelowMean { factor, alpha } => {
                    if !(factor.is_finite() && factor > 0.0) {
                        return fail(
                            &format!("{rp}.cross.factor"),
                            format!("must be > 0, got {factor}"),
                        );
                    }
                    unit_interval(&format!("{rp}.cross.alpha"), alpha, true)?;
                }
            }
        }
        self.init(&format!("{p}.init"), &s.init)?;
        self.size(&format!("{p}.size"), &s.size, &s.init)
    }

    fn efficiency(&mut self, p: &str, s: &EfficiencySpec) -> Check {
        if s.window < 3 {
            return fail(
                &format!("{p}.window"),
                format!("must be >= 3, got {}", s.window),
            );
        }
        if !s.threshold.is_finite() {
            return fail(
                &format!("{p}.threshold"),
                format!("must be finite, got {}", s.threshold),
            );
        }
        if let Some(c) = s.confidence {
            unit_interval(&format!("{p}.confidence"), c, false)?;
        }
        self.target(&format!("{p}.target"), &s.target)?;
        self.init(&format!("{p}.init"), &s.init)?;
        self.size(&format!("{p}.size"), &s.size, &s.init)
    }

    /// Check `spec` found at `path`, `depth` levels deep.
    pub(crate) fn spec(&mut self, spec: &PolicySpec, path: &str, depth: usize) -> Check {
        if depth > MAX_DEPTH {
            return fail(path, format!("nested deeper than {MAX_DEPTH} levels"));
        }
        match spec {
            PolicySpec::Plateau(s) => self.plateau(&format!("{path}.Plateau"), s),
            PolicySpec::GradNorm(s) => self.gradnorm(&format!("{path}.GradNorm"), s),
            PolicySpec::Efficiency(s) => self.efficiency(&format!("{path}.Efficiency"), s),
            PolicySpec::Schedule(s) => {
                let p = format!("{path}.Schedule.events");
                if s.events.is_empty() {
                    return fail(&p, "needs at least one event");
                }
                for (i, e) in s.events.iter().enumerate() {
                    self.event(&format!("{p}[{i}]"), e)?;
                }
                Ok(())
            }
            PolicySpec::AnyOf(v) | PolicySpec::AllOf(v) => {
                let tag = if matches!(spec, PolicySpec::AnyOf(_)) {
                    "AnyOf"
                } else {
                    "AllOf"
                };
                if v.is_empty() {
                    return fail(&format!("{path}.{tag}"), "needs at least one policy");
                }
                v.iter()
                    .enumerate()
                    .try_for_each(|(i, s)| self.spec(s, &format!("{path}.{tag}[{i}]"), depth + 1))
            }
            PolicySpec::Sequence(v) => {
                if v.is_empty() {
                    return fail(&format!("{path}.Sequence"), "needs at least one stage");
                }
                for (i, st) in v.iter().enumerate() {
                    let p = format!("{path}.Sequence[{i}]");
                    if st.times == 0 {
                        return fail(&format!("{p}.times"), "must be at least 1");
                    }
                    self.spec(&st.policy, &format!("{p}.policy"), depth + 1)?;
                }
                Ok(())
            }
            PolicySpec::Limits {
                max_width,
                max_params,
                max_events,
                max_flops,
                stop,
                policy,
            } => {
                let p = format!("{path}.Limits");
                if let Some(s) = stop {
                    if !(s.min_gain.is_finite() && s.min_gain >= 0.0) {
                        return fail(
                            &format!("{p}.stop.min_gain"),
                            format!("must be finite and >= 0, got {}", s.min_gain),
                        );
                    }
                    if !(s.per_flops.is_finite() && s.per_flops > 0.0) {
                        return fail(
                            &format!("{p}.stop.per_flops"),
                            format!("must be finite and > 0, got {}", s.per_flops),
                        );
                    }
                }
                if *max_width == Some(0) {
                    return fail(&format!("{p}.max_width"), "0 leaves no room to grow");
                }
                if *max_params == Some(0) {
                    return fail(&format!("{p}.max_params"), "0 leaves no room to grow");
                }
                if *max_events == Some(0) {
                    return fail(
                        &format!("{p}.max_events"),
                        "0 means the policy can never grow",
                    );
                }
                if let Some(f) = *max_flops {
                    if !(f.is_finite() && f > 0.0) {
                        return fail(
                            &format!("{p}.max_flops"),
                            format!("must be finite and > 0, got {f}"),
                        );
                    }
                }
                let before = self.fixed.len();
                self.spec(policy, &format!("{p}.policy"), depth + 1)?;
                if let Some(mw) = *max_width {
                    if let Some((fp, k)) = self.fixed[before..].iter().find(|(_, k)| *k > mw) {
                        let reason = format!("{mw} is smaller than the fixed size {k} at {fp}");
                        return fail(&format!("{p}.max_width"), reason);
                    }
                }
                Ok(())
            }
        }
    }
}
