//! Policies built from policies: [`AnyOf`], [`AllOf`], [`Sequence`].
//!
//! A combinator names the branch that fired in [`Decision::policy`], as `any_of[i]/<child>`,
//! `all_of[<c0>,<c1>..]` or `sequence[i]/<child>`, and routes `on_growth` / `on_refused` back
//! to the child (or children) whose decision it was.

use serde_json::{json, Value};

use super::{from_state, Decision, Declined, GrowthPolicy, Metrics, PolicyError};

/// Split `tag[i]/rest` into `(i, rest)`.
fn route<'a>(policy: &'a str, tag: &str) -> Option<(usize, &'a str)> {
    let rest = policy.strip_prefix(tag)?.strip_prefix('[')?;
    let (i, rest) = rest.split_once("]/")?;
    Some((i.parse().ok()?, rest))
}

fn relabel(d: &Decision, policy: &str) -> Decision {
    Decision {
        policy: policy.to_string(),
        ..d.clone()
    }
}

fn save_all(children: &[Box<dyn GrowthPolicy>]) -> Vec<Value> {
    children.iter().map(|c| c.save_state()).collect()
}

fn load_all(
    name: &str,
    children: &mut [Box<dyn GrowthPolicy>],
    s: &Value,
) -> Result<(), PolicyError> {
    let states: Vec<Value> = from_state(name, &s["children"])?;
    if states.len() != children.len() {
        return Err(PolicyError::State {
            policy: name.to_string(),
            reason: format!(
                "{} child states for {} children",
                states.len(),
                children.len()
            ),
        });
    }
    children
        .iter_mut()
        .zip(&states)
        .try_for_each(|(c, s)| c.load_state(s))
}

fn names(children: &[Box<dyn GrowthPolicy>]) -> String {
    let v: Vec<String> = children.iter().map(|c| c.name()).collect();
    v.join(",")
}

/// Fires with the first child (in order) that fires. Every child observes every step, so their
/// state stays current; decisions of later children that fired at the same step are dropped
/// (they have already reset their own counters, as if refused).
#[derive(Debug)]
pub struct AnyOf(pub Vec<Box<dyn GrowthPolicy>>);

impl GrowthPolicy for AnyOf {
    fn observe(&mut self, m: &Metrics) -> Option<Decision> {
        let mut first = None;
        for (i, c) in self.0.iter_mut().enumerate() {
            if let Some(d) = c.observe(m) {
                first.get_or_insert((i, d));
            }
        }
        let (i, d) = first?;
        Some(relabel(&d, &format!("any_of[{i}]/{}", d.policy)))
    }

    fn on_growth(&mut self, applied: &Decision) {
        if let Some((i, rest)) = route(&applied.policy, "any_of") {
            if let Some(c) = self.0.get_mut(i) {
                c.on_growth(&relabel(applied, rest));
            }
        }
    }

    fn on_refused(&mut self, refused: &Decision, why: &str) {
        if let Some((i, rest)) = route(&refused.policy, "any_of") {
            if let Some(c) = self.0.get_mut(i) {
                c.on_refused(&relabel(refused, rest), why);
            }
        }
    }

    fn take_declined(&mut self) -> Vec<Declined> {
        self.0.iter_mut().flat_map(|c| c.take_declined()).collect()
    }

    fn name(&self) -> String {
        format!("any_of[{}]", names(&self.0))
    }

    fn save_state(&self) -> Value {
        json!({ "children": save_all(&self.0) })
    }

    fn load_state(&mut self, s: &Value) -> Result<(), PolicyError> {
        load_all("any_of", &mut self.0, s)
    }
}

/// Fires only when every child fires at the same observation; the growths are merged (the
/// largest `k` per layer wins, with the first child's init). Every child observes every step.
#[derive(Debug)]
pub struct AllOf {
    children: Vec<Box<dyn GrowthPolicy>>,
    pending: Vec<Decision>,
}

impl AllOf {
    /// All of `children`.
    pub fn new(children: Vec<Box<dyn GrowthPolicy>>) -> Self {
        AllOf {
            children,
            pending: Vec::new(),
        }
    }
}

impl GrowthPolicy for AllOf {
    fn observe(&mut self, m: &Metrics) -> Option<Decision> {
        let all: Vec<Option<Decision>> = self.children.iter_mut().map(|c| c.observe(m)).collect();
        self.pending.clear();
        if all.is_empty() || all.iter().any(Option::is_none) {
            return None;
        }
        self.pending = all.into_iter().flatten().collect();
        let mut merged = Decision {
            growths: Vec::new(),
            policy: format!(
                "all_of[{}]",
                self.pending
                    .iter()
                    .map(|d| d.policy.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            reason: self
                .pending
                .iter()
                .map(|d| d.reason.as_str())
                .collect::<Vec<_>>()
                .join("; "),
            evidence: Default::default(),
        };
        for (i, d) in self.pending.iter().enumerate() {
            for g in &d.growths {
                match merged.growths.iter_mut().find(|h| h.layer == g.layer) {
                    Some(h) => h.k = h.k.max(g.k),
                    None => merged.growths.push(g.clone()),
                }
            }
            for (k, v) in &d.evidence {
                merged.evidence.insert(format!("all_of[{i}].{k}"), *v);
            }
        }
        Some(merged)
    }

    fn on_growth(&mut self, _applied: &Decision) {
        for (c, d) in self
            .children
            .iter_mut()
            .zip(std::mem::take(&mut self.pending))
        {
            c.on_growth(&d);
        }
    }

    fn on_refused(&mut self, _refused: &Decision, why: &str) {
        for (c, d) in self
            .children
            .iter_mut()
            .zip(std::mem::take(&mut self.pending))
        {
            c.on_refused(&d, why);
        }
    }

    fn take_declined(&mut self) -> Vec<Declined> {
        self.children
            .iter_mut()
            .flat_map(|c| c.take_declined())
            .collect()
    }

    fn name(&self) -> String {
        format!("all_of[{}]", names(&self.children))
    }

    fn save_state(&self) -> Value {
        json!({ "children": save_all(&self.children), "pending": self.pending })
    }

    fn load_state(&mut self, s: &Value) -> Result<(), PolicyError> {
        load_all("all_of", &mut self.children, s)?;
        self.pending = from_state("all_of", &s["pending"])?;
        Ok(())
    }
}

/// Runs one stage at a time: only the current stage observes, and it stays current until
/// `times` of its decisions have been carried out (`on_growth`), then the next stage starts
/// (with fresh state). After the last stage is done the sequence never fires again.
#[derive(Debug)]
pub struct Sequence {
    /// `(policy, times)` pairs.
    pub stages: Vec<(Box<dyn GrowthPolicy>, u32)>,
    current: usize,
    done_in_stage: u32,
}

impl Sequence {
    /// A sequence starting at its first stage.
    pub fn new(stages: Vec<(Box<dyn GrowthPolicy>, u32)>) -> Self {
        Sequence {
            stages,
            current: 0,
            done_in_stage: 0,
        }
    }

    fn forward(&mut self, d: &Decision, f: impl FnOnce(&mut dyn GrowthPolicy, &Decision)) -> bool {
        match route(&d.policy, "sequence") {
            Some((i, rest)) if i == self.current && i < self.stages.len() => {
                f(self.stages[i].0.as_mut(), &relabel(d, rest));
                true
            }
            _ => false,
        }
    }
}

impl GrowthPolicy for Sequence {
    fn observe(&mut self, m: &Metrics) -> Option<Decision> {
        let i = self.current;
        let d = self.stages.get_mut(i)?.0.observe(m)?;
        Some(relabel(&d, &format!("sequence[{i}]/{}", d.policy)))
    }

    fn on_growth(&mut self, applied: &Decision) {
        if self.forward(applied, |c, d| c.on_growth(d)) {
            self.done_in_stage += 1;
            if self.done_in_stage >= self.stages[self.current].1 {
                self.current += 1;
                self.done_in_stage = 0;
            }
        }
    }

    fn on_refused(&mut self, refused: &Decision, why: &str) {
        self.forward(refused, |c, d| c.on_refused(d, why));
    }

    fn take_declined(&mut self) -> Vec<Declined> {
        self.stages
            .iter_mut()
            .flat_map(|(c, _)| c.take_declined())
            .collect()
    }

    fn name(&self) -> String {
        let v: Vec<String> = self
            .stages
            .iter()
            .map(|(c, n)| format!("{}x{n}", c.name()))
            .collect();
        format!("sequence[{}]", v.join(","))
    }

    fn save_state(&self) -> Value {
        let children: Vec<Value> = self.stages.iter().map(|(c, _)| c.save_state()).collect();
        json!({ "children": children, "current": self.current, "done_in_stage": self.done_in_stage })
    }

    fn load_state(&mut self, s: &Value) -> Result<(), PolicyError> {
        let states: Vec<Value> = from_state("sequence", &s["children"])?;
        if states.len() != self.stages.len() {
            return Err(PolicyError::State {
                policy: "sequence".into(),
                reason: format!(
                    "{} stage states for {} stages",
                    states.len(),
                    self.stages.len()
                ),
            });
        }
        for ((c, _), st) in self.stages.iter_mut().zip(&states) {
            c.load_state(st)?;
        }
        self.current = from_state("sequence", &s["current"])?;
        self.done_in_stage = from_state("sequence", &s["done_in_stage"])?;
        Ok(())
    }
}
