//! Where a site's units live in the model's named tensors: which entries of which tensor are
//! a unit's fan-in, bias and fan-out. Found through the layers' own unit accessors, so it
//! holds for any layout (a linear layer's rows, a flattened channel's group of columns). The
//! health report's per-cohort gradient norms and the fresh optimizer state of re-initialised
//! units both need it.

use dfdx::prelude::{Device, Gradients};

use crate::optim::Renewal;
use crate::{GrowError, Growable, Real};

/// Which part of a unit an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    FanIn,
    Bias,
    FanOut,
}

/// The entries of one tensor that belong to the site's units.
#[derive(Clone, Debug)]
pub(crate) struct MappedTensor {
    pub(crate) name: String,
    pub(crate) dims: (usize, usize),
    /// `(flat index, unit, part)`.
    pub(crate) entries: Vec<(usize, usize, Part)>,
}

/// A site's units in the model's tensors (only tensors holding some are listed).
#[derive(Clone, Debug)]
pub(crate) struct UnitMap {
    pub(crate) width: usize,
    pub(crate) tensors: Vec<MappedTensor>,
}

/// Maps the units of site `site`: on a copy of `model` with every parameter zero, each unit's
/// fan-in, bias and fan-out are written with codes of their own (`u + 1`, `width + u + 1`,
/// `-(u + 1)`) through `replace_outputs` and `replace_inputs`, then read back by name. Needs
/// layers that can overwrite units.
pub(crate) fn unit_map<E: Real, D: Device<E>, M: Growable<E, D>>(
    model: &M,
    site: &str,
) -> Result<UnitMap, GrowError> {
    let mut m = model.clone();
    m.visit_mut(&mut |_, mut p| {
        let n = p.as_ref().len();
        p.copy_from(&vec![E::zero(); n]);
    });
    let s = m
        .site_mut(site)
        .ok_or_else(|| crate::grow::site::no_such_site(model, site))?;
    let width = s.producer.out_width();
    // Every code up to 2 * width + 1 must be an exact integer in E (f32: up to 2^23 here).
    let top = width.saturating_mul(2).saturating_add(1) as f64;
    if top > 1.0 / E::epsilon().to_f64().unwrap_or(1.0) {
        return Err(GrowError::ShapeMismatch {
            what: format!("units of site {site:?} that this element type can number exactly"),
            expected: (0.5 / E::epsilon().to_f64().unwrap_or(1.0)) as usize,
            found: width,
        });
    }
    if width > 0 {
        let code = |x: usize, sign: f64| E::from_f64(sign * x as f64).unwrap_or_else(E::zero);
        let units: Vec<usize> = (0..width).collect();
        let fan_in: Vec<E> = units
            .iter()
            .flat_map(|&u| std::iter::repeat_n(code(u + 1, 1.0), s.producer.unit_fan_in()))
            .collect();
        let bias: Vec<E> = units.iter().map(|&u| code(width + u + 1, 1.0)).collect();
        s.producer.replace_outputs(&units, &fan_in, &bias)?;
        for c in s.consumers {
            let fan_out: Vec<E> = units
                .iter()
                .flat_map(|&u| std::iter::repeat_n(code(u + 1, -1.0), c.unit_fan_out()))
                .collect();
            c.replace_inputs(&units, &fan_out)?;
        }
    }
    let mut tensors = Vec::new();
    m.visit(&mut |name, p| {
        let mut v = vec![E::zero(); p.len()];
        p.copy_into(&mut v);
        let entries: Vec<(usize, usize, Part)> = v
            .iter()
            .enumerate()
            .filter_map(|(i, x)| {
                let x = x.to_f64()?.round();
                let part = match x {
                    x if x < 0.0 => (-x as usize - 1, Part::FanOut),
                    x if x > width as f64 => (x as usize - width - 1, Part::Bias),
                    x if x > 0.0 => (x as usize - 1, Part::FanIn),
                    _ => return None,
                };
                Some((i, part.0, part.1))
            })
            .collect();
        if !entries.is_empty() {
            tensors.push(MappedTensor {
                name: name.to_string(),
                dims: p.dims(),
                entries,
            });
        }
    });
    Ok(UnitMap { width, tensors })
}

impl UnitMap {
    /// The L2 norm of every unit's fan-in gradient (its bias excluded, as for the weight
    /// norms) and of its fan-out gradient over every consumer, from `grads` of `model` (the
    /// model the map was made from). A tensor missing from `grads` counts as zero.
    pub(crate) fn grad_norms<E: Real, D: Device<E>, M: Growable<E, D>>(
        &self,
        model: &M,
        grads: &mut Gradients<E, D>,
    ) -> Result<(Vec<f64>, Vec<f64>), GrowError> {
        let (mut fan_in, mut fan_out) = (vec![0.0; self.width], vec![0.0; self.width]);
        let (mut scratch, mut result) = (Vec::new(), Ok(()));
        model.visit(&mut |name, p| {
            let Some(t) = self.tensors.iter().find(|t| t.name == name) else {
                return;
            };
            if result.is_err() {
                return;
            }
            if p.dims() != t.dims {
                result = Err(GrowError::ShapeMismatch {
                    what: format!("tensor {name:?}, since its units were mapped"),
                    expected: t.dims.0 * t.dims.1,
                    found: p.len(),
                });
                return;
            }
            match p.host_grad(grads, &mut scratch) {
                Ok(g) => {
                    for &(i, u, part) in &t.entries {
                        let x = g.get(i).and_then(|x| x.to_f64()).unwrap_or(f64::NAN);
                        match part {
                            Part::FanIn => fan_in[u] += x * x,
                            Part::FanOut => fan_out[u] += x * x,
                            Part::Bias => {}
                        }
                    }
                }
                Err(e) => result = Err(e),
            }
        });
        result?;
        let roots = |v: Vec<f64>| v.into_iter().map(f64::sqrt).collect();
        Ok((roots(fan_in), roots(fan_out)))
    }

    /// The rows and columns of every tensor that hold units `units` (fan-in, bias and
    /// fan-out), for [`crate::optim::Optimizer::renew`]; an error when some tensor's entries
    /// of those units are not whole rows and columns (the optimizer's state keeps births by
    /// row and column).
    pub(crate) fn renewals(&self, units: &[usize]) -> Result<Vec<Renewal>, String> {
        let mut chosen = vec![false; self.width];
        for &u in units.iter().filter(|&&u| u < self.width) {
            chosen[u] = true;
        }
        let mut out = Vec::new();
        for t in &self.tensors {
            let (rows, cols) = t.dims;
            let mut marked = vec![false; rows * cols];
            let (mut per_row, mut per_col) = (vec![0usize; rows], vec![0usize; cols]);
            for &(i, u, _) in &t.entries {
                if chosen[u] && !marked[i] {
                    marked[i] = true;
                    per_row[i / cols] += 1;
                    per_col[i % cols] += 1;
                }
            }
            let full_rows: Vec<usize> = (0..rows).filter(|&r| per_row[r] == cols).collect();
            let full_cols: Vec<usize> = (0..cols).filter(|&c| per_col[c] == rows).collect();
            let covered = marked
                .iter()
                .enumerate()
                .all(|(i, &m)| !m || per_row[i / cols] == cols || per_col[i % cols] == rows);
            if !covered {
                return Err(format!(
                    "the units' entries of tensor {:?} are not whole rows and columns",
                    t.name
                ));
            }
            if !full_rows.is_empty() || !full_cols.is_empty() {
                out.push(Renewal {
                    tensor: t.name.clone(),
                    rows: full_rows,
                    cols: full_cols,
                });
            }
        }
        Ok(out)
    }
}
