//! Policies built from policies: [`AnyOf`], [`AllOf`], [`Sequence`].
//!
//! A combinator names the branch that fired in [`Decision::policy`], as `any_of[i]/<child>`,
//! `all_of[<c0>,<c1>..]` or `sequence[i]/<child>`, remembers which child (or children) it was,
//! and routes `on_growth` / `on_refused` back to it with the decision as carried out.

use serde_json::{json, Value};

use super::{from_state, Decision, Declined, Growth, GrowthPolicy, Metrics, PolicyError};

fn save_all<'a>(children: impl Iterator<Item = &'a dyn GrowthPolicy>) -> Vec<Value> {
    children.map(|c| c.save_state()).collect()
}

/// Loads every child's state, or none: a child that refuses its state leaves all of them as
/// they were.
fn load_all<'a>(
    name: &str,
    children: impl Iterator<Item = &'a mut Box<dyn GrowthPolicy>>,
    s: &Value,
) -> Result<(), PolicyError> {
    let mut children: Vec<&mut Box<dyn GrowthPolicy>> = children.collect();
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
    let backup: Vec<Value> = children.iter().map(|c| c.save_state()).collect();
    for (i, st) in states.iter().enumerate() {
        if let Err(e) = children[i].load_state(st) {
            for (c, b) in children.iter_mut().zip(&backup).take(i + 1) {
                let _ = c.load_state(b);
            }
            return Err(e);
        }
    }
    Ok(())
}

fn names<'a>(children: impl Iterator<Item = &'a dyn GrowthPolicy>) -> String {
    children.map(|c| c.name()).collect::<Vec<_>>().join(",")
}

/// The decision as carried out, under the label the child gave it.
fn as_child(applied: &Decision, label: &str) -> Decision {
    Decision {
        policy: label.to_string(),
        ..applied.clone()
    }
}

fn check_all<'a>(
    tag: &str,
    children: impl Iterator<Item = &'a dyn GrowthPolicy>,
    m: &Metrics,
) -> Result<(), PolicyError> {
    children
        .enumerate()
        .try_for_each(|(i, c)| c.check(m).map_err(|e| e.under(&format!("{tag}[{i}]"))))
}

/// Fires with the first child (in order) that fires. Every child observes every step, so their
/// state stays current; decisions of later children that fired at the same step are dropped
/// (they have already reset their own counters, as if refused).
#[derive(Debug)]
pub struct AnyOf {
    children: Vec<Box<dyn GrowthPolicy>>,
    /// The child that fired at the last observation, and its own label.
    fired: Option<(usize, String)>,
}

impl AnyOf {
    /// Any of `children`.
    pub fn new(children: Vec<Box<dyn GrowthPolicy>>) -> Self {
        AnyOf {
            children,
            fired: None,
        }
    }
}

impl GrowthPolicy for AnyOf {
    fn observe(&mut self, m: &Metrics) -> Option<Decision> {
        let mut first = None;
        for (i, c) in self.children.iter_mut().enumerate() {
            if let Some(d) = c.observe(m) {
                first.get_or_insert((i, d));
            }
        }
        let (i, d) = first?;
        self.fired = Some((i, d.policy.clone()));
        Some(Decision {
            policy: format!("any_of[{i}]/{}", d.policy),
            ..d
        })
    }

    fn on_growth(&mut self, applied: &Decision) {
        if let Some((i, label)) = self.fired.take() {
            self.children[i].on_growth(&as_child(applied, &label));
        }
    }

    fn on_refused(&mut self, refused: &Decision, why: &str) {
        if let Some((i, label)) = self.fired.take() {
            self.children[i].on_refused(&as_child(refused, &label), why);
        }
    }

    fn take_declined(&mut self) -> Vec<Declined> {
        self.children
            .iter_mut()
            .flat_map(|c| c.take_declined())
            .collect()
    }

    fn name(&self) -> String {
        format!("any_of[{}]", names(self.children.iter().map(|c| &**c)))
    }

    fn save_state(&self) -> Value {
        json!({ "children": save_all(self.children.iter().map(|c| &**c)) })
    }

    fn load_state(&mut self, s: &Value) -> Result<(), PolicyError> {
        load_all("any_of", self.children.iter_mut(), s)
    }

    fn check(&self, m: &Metrics) -> Result<(), PolicyError> {
        check_all("AnyOf", self.children.iter().map(|c| &**c), m)
    }
}

/// Fires only when every child fires at the same observation; the growths are merged (the
/// largest `k` per site wins, with the first child's init). Every child observes every step.
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
        let join = |f: &dyn Fn(&Decision) -> &str, sep| {
            self.pending.iter().map(f).collect::<Vec<_>>().join(sep)
        };
        let mut merged = Decision {
            growths: Vec::new(),
            policy: format!("all_of[{}]", join(&|d| d.policy.as_str(), ",")),
            reason: join(&|d| d.reason.as_str(), "; "),
            evidence: Default::default(),
        };
        for (i, d) in self.pending.iter().enumerate() {
            for g in &d.growths {
                let same = merged.growths.iter_mut().find(|h| match (&**h, g) {
                    (Growth::Width { site: a, .. }, Growth::Width { site: b, .. }) => a == b,
                    _ => *h == g,
                });
                match (same, g) {
                    (Some(Growth::Width { k, .. }), Growth::Width { k: k2, .. }) => {
                        *k = (*k).max(*k2)
                    }
                    (Some(_), _) => {}
                    (None, _) => merged.growths.push(g.clone()),
                }
            }
            for (k, v) in &d.evidence {
                merged.evidence.insert(format!("all_of[{i}].{k}"), *v);
            }
        }
        Some(merged)
    }

    fn on_growth(&mut self, _applied: &Decision) {
        let pending = std::mem::take(&mut self.pending);
        for (c, d) in self.children.iter_mut().zip(pending) {
            c.on_growth(&d);
        }
    }

    fn on_refused(&mut self, _refused: &Decision, why: &str) {
        let pending = std::mem::take(&mut self.pending);
        for (c, d) in self.children.iter_mut().zip(pending) {
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
        format!("all_of[{}]", names(self.children.iter().map(|c| &**c)))
    }

    fn save_state(&self) -> Value {
        json!({ "children": save_all(self.children.iter().map(|c| &**c)) })
    }

    fn load_state(&mut self, s: &Value) -> Result<(), PolicyError> {
        load_all("all_of", self.children.iter_mut(), s)?;
        self.pending.clear();
        Ok(())
    }

    fn check(&self, m: &Metrics) -> Result<(), PolicyError> {
        check_all("AllOf", self.children.iter().map(|c| &**c), m)
    }
}

/// Runs one stage at a time: only the current stage observes, and it stays current until
/// `times` of its decisions have been carried out (`on_growth`), then the next stage starts
/// (with fresh state). After the last stage is done the sequence never fires again.
#[derive(Debug)]
pub struct Sequence {
    stages: Vec<(Box<dyn GrowthPolicy>, u32)>,
    current: usize,
    done_in_stage: u32,
    /// The current stage's own label for its last decision.
    fired: Option<String>,
}

impl Sequence {
    /// A sequence starting at its first stage; `stages` are `(policy, times)` pairs.
    pub fn new(stages: Vec<(Box<dyn GrowthPolicy>, u32)>) -> Self {
        Sequence {
            stages,
            current: 0,
            done_in_stage: 0,
            fired: None,
        }
    }

    /// The index of the stage in force (`stages` when all are done).
    pub fn current(&self) -> usize {
        self.current
    }
}

impl GrowthPolicy for Sequence {
    fn observe(&mut self, m: &Metrics) -> Option<Decision> {
        let i = self.current;
        let d = self.stages.get_mut(i)?.0.observe(m)?;
        self.fired = Some(d.policy.clone());
        Some(Decision {
            policy: format!("sequence[{i}]/{}", d.policy),
            ..d
        })
    }

    fn on_growth(&mut self, applied: &Decision) {
        let Some(label) = self.fired.take() else {
            return;
        };
        let (stage, times) = &mut self.stages[self.current];
        stage.on_growth(&as_child(applied, &label));
        self.done_in_stage += 1;
        if self.done_in_stage >= *times {
            self.current += 1;
            self.done_in_stage = 0;
        }
    }

    fn on_refused(&mut self, refused: &Decision, why: &str) {
        if let Some(label) = self.fired.take() {
            self.stages[self.current]
                .0
                .on_refused(&as_child(refused, &label), why);
        }
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
        let children = save_all(self.stages.iter().map(|(c, _)| &**c));
        json!({ "children": children, "current": self.current, "done_in_stage": self.done_in_stage })
    }

    fn load_state(&mut self, s: &Value) -> Result<(), PolicyError> {
        let current: usize = from_state("sequence", &s["current"])?;
        let done: u32 = from_state("sequence", &s["done_in_stage"])?;
        let bad = |reason: String| PolicyError::State {
            policy: "sequence".into(),
            reason,
        };
        if current > self.stages.len() {
            return Err(bad(format!(
                "stage {current} of a sequence of {} stages",
                self.stages.len()
            )));
        }
        if let Some((_, times)) = self.stages.get(current).filter(|(_, t)| done >= *t) {
            return Err(bad(format!("{done} growths done in a stage of {times}")));
        }
        load_all("sequence", self.stages.iter_mut().map(|(c, _)| c), s)?;
        self.current = current;
        self.done_in_stage = done;
        self.fired = None;
        Ok(())
    }

    fn check(&self, m: &Metrics) -> Result<(), PolicyError> {
        self.stages.iter().enumerate().try_for_each(|(i, (c, _))| {
            c.check(m)
                .map_err(|e| e.under(&format!("Sequence[{i}].policy")))
        })
    }
}
