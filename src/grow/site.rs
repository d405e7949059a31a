//! Growth sites: the named places where a model can gain units, and the trait a model
//! implements to expose them.

use dfdx::prelude::Device;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::informed::{bracket_search, plan_informed, SiteStatistics, LINE_SEARCH_EVALUATIONS};
use crate::{Expandable, ExpansionReport, GrowError, Init, NewUnits, Params, Real};

/// The default cap on a site's width (see [`Site::with_max_width`]).
pub const DEFAULT_MAX_WIDTH: usize = 1 << 20;

/// One place where hidden units can be added: the outputs of one producer layer, read by one
/// or more consumers.
///
/// Build it with [`Site::new`] from the layers themselves, so the counts are always the
/// layers' own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Site {
    /// A stable name, e.g. `"hidden.0"` or `"blocks.2.hidden"`.
    pub name: String,
    /// The number of units now.
    pub width: usize,
    /// The parameters one new unit adds: the producer's fan-in, its bias, and the fan-out in
    /// every consumer.
    pub params_per_unit: usize,
    /// Units are added in multiples of this (1 for neurons; a head's width for attention).
    pub unit_multiple: usize,
    /// The width the site may not pass.
    pub max_width: usize,
    /// The parameters whose gradients measure this site (the producer's weight and bias, by
    /// default none): their joint L2 norm is the site's gradient norm.
    pub params: Vec<String>,
}

impl Site {
    /// The site `name` made of `producer`'s outputs, read by `consumers`.
    pub fn new<E>(
        name: impl Into<String>,
        producer: &dyn Expandable<E>,
        consumers: &[&dyn Expandable<E>],
    ) -> Self {
        let fan_out: usize = consumers.iter().map(|c| c.unit_fan_out()).sum();
        Site {
            name: name.into(),
            width: producer.out_width(),
            params_per_unit: producer.unit_fan_in() + 1 + fan_out,
            unit_multiple: 1,
            max_width: DEFAULT_MAX_WIDTH,
            params: Vec::new(),
        }
    }

    /// Names the parameters whose gradient norm measures this site.
    pub fn with_params<S: Into<String>>(mut self, params: impl IntoIterator<Item = S>) -> Self {
        self.params = params.into_iter().map(Into::into).collect();
        self
    }

    /// Units must be added in multiples of `n` (at least 1).
    pub fn with_unit_multiple(mut self, n: usize) -> Self {
        self.unit_multiple = n.max(1);
        self
    }

    /// Caps the site's width at `cap`.
    pub fn with_max_width(mut self, cap: usize) -> Self {
        self.max_width = cap;
        self
    }

    /// The parameters `k` new units add (saturating).
    pub fn params_for(&self, k: usize) -> usize {
        k.saturating_mul(self.params_per_unit)
    }
}

/// The layers one growth of a site touches together (Torch-Pruning calls this a group).
pub struct SiteMut<'m, E> {
    /// The layer whose outputs are the site's units.
    pub producer: &'m mut dyn Expandable<E>,
    /// Every layer that reads them.
    pub consumers: Vec<&'m mut dyn Expandable<E>>,
}

impl<E> std::fmt::Debug for SiteMut<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteMut")
            .field("width", &self.producer.out_width())
            .field("consumers", &self.consumers.len())
            .finish()
    }
}

/// A model that can grow: it names its growth sites and lends out their layers.
///
/// The controller, the metrics, limits, checkpoints and FLOP accounting work for any model
/// that implements it. A model of your own with two heads reading one hidden layer:
///
/// ```
/// use dfdx_grow::dfdx::prelude::*;
/// use dfdx_grow::rand::{rngs::StdRng, SeedableRng};
/// use dfdx_grow::{grow_site, scoped, scoped_mut, Growable, Init, Linear, ParamMut, ParamRef, Params, Site, SiteMut};
///
/// #[derive(Clone)]
/// struct TwoHeads { trunk: Linear<f64, Cpu>, a: Linear<f64, Cpu>, b: Linear<f64, Cpu> }
///
/// impl Params<f64, Cpu> for TwoHeads {
///     fn visit(&self, f: &mut dyn FnMut(&str, ParamRef<'_, f64, Cpu>)) {
///         self.trunk.visit(&mut scoped("trunk", f));
///         self.a.visit(&mut scoped("a", f));
///         self.b.visit(&mut scoped("b", f));
///     }
///     fn visit_mut(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_, f64, Cpu>)) {
///         self.trunk.visit_mut(&mut scoped_mut("trunk", f));
///         self.a.visit_mut(&mut scoped_mut("a", f));
///         self.b.visit_mut(&mut scoped_mut("b", f));
///     }
/// }
///
/// impl Growable<f64, Cpu> for TwoHeads {
///     fn sites(&self) -> Vec<Site> {
///         vec![Site::new("trunk", &self.trunk, &[&self.a, &self.b])
///             .with_params(["trunk.weight", "trunk.bias"])]
///     }
///     fn site_mut(&mut self, name: &str) -> Option<SiteMut<'_, f64>> {
///         (name == "trunk").then(|| SiteMut {
///             producer: &mut self.trunk,
///             consumers: vec![&mut self.a, &mut self.b],
///         })
///     }
///     fn forward_flops(&self) -> f64 {
///         [&self.trunk, &self.a, &self.b].iter().map(|l| l.forward_flops()).sum()
///     }
/// }
///
/// let (dev, mut rng) = (Cpu::default(), StdRng::seed_from_u64(0));
/// let mut m = TwoHeads {
///     trunk: Linear::new(4, 8, &dev, &mut rng).unwrap(),
///     a: Linear::new(8, 2, &dev, &mut rng).unwrap(),
///     b: Linear::new(8, 3, &dev, &mut rng).unwrap(),
/// };
/// assert_eq!(m.sites()[0].params_per_unit, 4 + 1 + 2 + 3);
/// let report = grow_site(&mut m, "trunk", 8, &Init::ZerosOut, &mut rng).unwrap();
/// assert_eq!((report.site.as_str(), report.new_width), ("trunk", 16));
/// assert_eq!((m.a.weight.shape().1, m.b.weight.shape().1), (16, 16));
/// ```
pub trait Growable<E: Real, D: Device<E>>: Params<E, D> + Clone {
    /// Every growth site, in a fixed order (the order [`crate::policy::Target::Layer`]
    /// indexes).
    fn sites(&self) -> Vec<Site>;

    /// The layers of site `name`, or `None` when there is no such site.
    fn site_mut(&mut self, name: &str) -> Option<SiteMut<'_, E>>;

    /// The FLOPs of one forward pass of one example at the current widths (a multiply-add
    /// counts as two).
    fn forward_flops(&self) -> f64;

    /// The FLOPs of one training example: forward and backward. Default three forward passes
    /// (the backward of a product costs two: the gradients of the weights and of the input).
    fn train_flops(&self) -> f64 {
        3.0 * self.forward_flops()
    }

    /// A description of the model from which it can be rebuilt (saved in checkpoints, e.g.
    /// an [`crate::Mlp`]'s widths and activation). Default none.
    fn describe(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// The blocks whose order [`Growable::deepen`] changes, in order (empty when the model
    /// cannot grow in depth). Checkpoints use it to rebuild a deepened model.
    fn blocks(&self) -> Vec<String> {
        Vec::new()
    }

    /// Inserts a new block of `hidden` units after block `after` (or first, after
    /// [`FIRST_BLOCK`]) that adds exactly zero to the function (its output projection is
    /// zero), and returns the new block's name. New blocks' names must be made in an order
    /// that sorting by the number they end with reproduces (`blocks.7` after `blocks.6`), so
    /// that a checkpoint can rebuild them. Default: depth growth is not supported.
    fn deepen(
        &mut self,
        after: &str,
        hidden: usize,
        rng: &mut dyn RngCore,
    ) -> Result<String, GrowError> {
        let _ = (hidden, rng);
        Err(GrowError::Depth {
            after: after.to_string(),
            reason: "this model does not grow in depth".into(),
        })
    }
}

/// What [`Growable::deepen`] takes as `after` to insert a block before every other one.
pub const FIRST_BLOCK: &str = "input";

/// The names of a model's sites, for error messages.
pub(crate) fn site_names(sites: &[Site]) -> Vec<String> {
    sites.iter().map(|s| s.name.clone()).collect()
}

/// The error for a site `name` that `model` lacks, naming the sites it has (listed only when
/// the error is made, not on every lookup that succeeds).
pub(crate) fn no_such_site<E: Real, D: Device<E>, M: Growable<E, D>>(
    model: &M,
    name: &str,
) -> GrowError {
    GrowError::NoSuchSite {
        name: name.to_string(),
        sites: site_names(&model.sites()),
    }
}

/// Every check of [`grow_site`] that needs no sampling; returns the site.
pub fn check_growth<E: Real, D: Device<E>, M: Growable<E, D>>(
    model: &M,
    name: &str,
    k: usize,
    init: &Init,
) -> Result<Site, GrowError> {
    let sites = model.sites();
    let Some(site) = sites.iter().find(|s| s.name == name) else {
        return Err(GrowError::NoSuchSite {
            name: name.to_string(),
            sites: site_names(&sites),
        });
    };
    if k == 0 {
        return Err(GrowError::ZeroUnits);
    }
    if !k.is_multiple_of(site.unit_multiple) {
        return Err(GrowError::UnitMultiple {
            site: name.to_string(),
            k,
            multiple: site.unit_multiple,
        });
    }
    let cap_err = || GrowError::WidthCap {
        site: name.to_string(),
        width: site.width,
        k,
        cap: site.max_width,
    };
    let new_width = site.width.checked_add(k).ok_or_else(cap_err)?;
    if new_width > site.max_width {
        return Err(cap_err());
    }
    // The grown tensors must stay addressable.
    if new_width.checked_mul(site.params_per_unit).is_none()
        || model.num_params().checked_add(site.params_for(k)).is_none()
    {
        return Err(cap_err());
    }
    init.check(k)?;
    Ok(site.clone())
}

/// Adds `k` units to site `name` of `model`, initialised by `init`.
///
/// Atomic across the producer and every consumer: every check runs before anything changes,
/// and a failure part-way restores the model as it was. The report names the site.
pub fn grow_site<E: Real, D: Device<E>, M: Growable<E, D>>(
    model: &mut M,
    name: &str,
    k: usize,
    init: &Init,
    rng: &mut dyn RngCore,
) -> Result<ExpansionReport, GrowError> {
    let site = check_growth(model, name, k, init)?;
    let params_before = model.num_params();
    let backup = model.clone();
    if let Err(e) = grow_layers(model, &site, k, init, rng) {
        *model = backup;
        return Err(e);
    }
    Ok(ExpansionReport::new(
        site.name,
        site.width,
        k,
        (params_before, model.num_params()),
        init,
    ))
}

fn grow_layers<E: Real, D: Device<E>, M: Growable<E, D>>(
    model: &mut M,
    site: &Site,
    k: usize,
    init: &Init,
    rng: &mut dyn RngCore,
) -> Result<(), GrowError> {
    let units = plan_at(model, &site.name, |p, c| init.plan(p, c, k, rng))?;
    apply_units(model, &site.name, &units)
}

/// Calls `plan` on the producer and consumers of site `name`, after checking that every
/// consumer reads as many units as the producer makes.
fn plan_at<E: Real, D: Device<E>, M: Growable<E, D>, T>(
    model: &mut M,
    name: &str,
    plan: impl FnOnce(&dyn Expandable<E>, &[&dyn Expandable<E>]) -> Result<T, GrowError>,
) -> Result<T, GrowError> {
    let Some(s) = model.site_mut(name) else {
        return Err(no_such_site(model, name));
    };
    let width = s.producer.out_width();
    for c in &s.consumers {
        if c.in_width() != width {
            return Err(GrowError::ShapeMismatch {
                what: format!("a consumer of site {name:?}"),
                expected: width,
                found: c.in_width(),
            });
        }
    }
    let consumers: Vec<&dyn Expandable<E>> = s.consumers.iter().map(|c| &**c).collect();
    plan(&*s.producer, &consumers)
}

/// Appends `units` to site `name` (not atomic: the callers restore a backup on error).
fn apply_units<E: Real, D: Device<E>, M: Growable<E, D>>(
    model: &mut M,
    name: &str,
    units: &NewUnits<E>,
) -> Result<(), GrowError> {
    let Some(s) = model.site_mut(name) else {
        return Err(no_such_site(model, name));
    };
    if s.consumers.len() != units.fan_out.len() {
        return Err(GrowError::ShapeMismatch {
            what: format!("fan-outs planned for the consumers of site {name:?}"),
            expected: s.consumers.len(),
            found: units.fan_out.len(),
        });
    }
    s.producer.grow_outputs(&units.fan_in, &units.bias)?;
    for (c, fan_out) in s.consumers.into_iter().zip(&units.fan_out) {
        c.grow_inputs(fan_out, &units.rescale)?;
    }
    Ok(())
}

/// [`grow_site`] for every init, the gradient-informed ones ([`Init::GradMax`],
/// [`Init::Tiny`]) included: they read `stats`, the site's statistics on a batch (see
/// [`crate::informed`]; [`LossProbe::statistics`] computes them for the crate's models).
///
/// [`Init::Tiny`] without a fixed `gamma` needs `probe`: `gamma` is chosen on it by
/// [`crate::informed::bracket_search`] over powers of two (at most
/// [`LINE_SEARCH_EVALUATIONS`] probe evaluations, each on a copy of the model). With a probe the report has the loss before and after, as
/// [`grow_site_probed`]. The report says how many units are informed (the rest are
/// [`Init::ZerosOut`] units when the statistics' rank runs out), the `gamma` used, and the
/// FLOPs of choosing them: the statistics' own (as recorded in `stats`), the decompositions,
/// and the line search's evaluations (counted as forward passes over as many rows as the
/// statistics have). Atomic: on error the model is unchanged.
pub fn grow_site_informed<E: Real, D: Device<E>, M: Growable<E, D>>(
    model: &mut M,
    name: &str,
    k: usize,
    init: &Init,
    stats: &SiteStatistics,
    rng: &mut dyn RngCore,
    probe: Option<&dyn LossProbe<M>>,
) -> Result<ExpansionReport, GrowError> {
    if !init.needs_statistics() {
        return match probe {
            Some(p) => grow_site_probed(model, name, k, init, rng, p),
            None => grow_site(model, name, k, init, rng),
        };
    }
    let site = check_growth(model, name, k, init)?;
    let params_before = model.num_params();
    let planned = plan_at(model, name, |p, c| plan_informed(init, stats, p, c, k, rng))?;
    let (loss_before, out_before) = match probe {
        Some(p) => (Some(p.loss(model)), p.outputs(model)),
        None => (None, None),
    };
    let (units, gamma, evaluations) = match init {
        Init::Tiny { gamma: None, .. } if planned.informed > 0 => {
            let Some(p) = probe else {
                return Err(GrowError::InitMismatch {
                    init: init.name(),
                    reason: "gamma comes from a line search on a probe: pass a probe, or fix \
                             gamma"
                        .into(),
                });
            };
            let mut failure = None;
            let search = bracket_search(
                |gamma| {
                    let mut trial = model.clone();
                    match apply_units(&mut trial, name, &planned.scaled(gamma)) {
                        Ok(()) => p.loss(&trial),
                        Err(e) => {
                            failure = Some(e);
                            f64::NAN
                        }
                    }
                },
                LINE_SEARCH_EVALUATIONS,
            );
            if let Some(e) = failure {
                return Err(e);
            }
            let search = search?;
            let units = planned.scaled(search.gamma);
            (units, Some(search.gamma), search.evaluations)
        }
        Init::Tiny { gamma, .. } => (planned.units.clone(), *gamma, 0),
        _ => (planned.units.clone(), None, 0),
    };
    let backup = model.clone();
    if let Err(e) = apply_units(model, name, &units) {
        *model = backup;
        return Err(e);
    }
    let search_flops = evaluations as f64 * stats.rows() as f64 * model.forward_flops();
    let mut report = ExpansionReport {
        informed: Some(planned.informed),
        gamma,
        init_flops: Some(stats.flops() + planned.flops + search_flops),
        ..ExpansionReport::new(
            site.name,
            site.width,
            k,
            (params_before, model.num_params()),
            init,
        )
    };
    if let Some(p) = probe {
        measure(&mut report, p, model, loss_before, out_before);
    }
    Ok(report)
}

/// Something that measures a model on a fixed batch: the controller compares it before and
/// after a growth and undoes a growth that raised it.
///
/// Any closure `Fn(&M) -> f64` is one; [`crate::Probe`] is a ready-made one for models that
/// map a batch matrix to outputs.
pub trait LossProbe<M> {
    /// The loss of `model` on the probe batch.
    fn loss(&self, model: &M) -> f64;

    /// The model's outputs on the probe batch, flattened, when the probe can tell them (for
    /// the largest output change in the report).
    fn outputs(&self, model: &M) -> Option<Vec<f64>> {
        let _ = model;
        None
    }

    /// Which units of site `site` are active on which examples of the probe batch, when the
    /// probe can tell (for health reports).
    fn activity(&self, model: &M, site: &str) -> Option<crate::health::Activity> {
        let _ = (model, site);
        None
    }

    /// The statistics of site `site` on the probe batch, for the gradient-informed inits
    /// ([`Init::GradMax`], [`Init::Tiny`]), when the probe can compute them (it needs a
    /// target). Default none.
    fn statistics(&self, model: &M, site: &str) -> Option<SiteStatistics> {
        let _ = (model, site);
        None
    }
}

impl<M, F: Fn(&M) -> f64> LossProbe<M> for F {
    fn loss(&self, model: &M) -> f64 {
        self(model)
    }
}

/// [`grow_site`], measuring `probe` before and after: the loss, and the largest output change
/// when the probe reports outputs.
pub fn grow_site_probed<E: Real, D: Device<E>, M: Growable<E, D>>(
    model: &mut M,
    name: &str,
    k: usize,
    init: &Init,
    rng: &mut dyn RngCore,
    probe: &dyn LossProbe<M>,
) -> Result<ExpansionReport, GrowError> {
    check_growth(model, name, k, init)?;
    let (loss_before, out_before) = (probe.loss(model), probe.outputs(model));
    let mut report = grow_site(model, name, k, init, rng)?;
    measure(&mut report, probe, model, Some(loss_before), out_before);
    Ok(report)
}

/// Fills the report's probe measurements after a growth.
fn measure<M>(
    report: &mut ExpansionReport,
    probe: &dyn LossProbe<M>,
    model: &M,
    loss_before: Option<f64>,
    out_before: Option<Vec<f64>>,
) {
    report.loss_before = loss_before;
    report.loss_after = Some(probe.loss(model));
    if let (Some(b), Some(a)) = (out_before, probe.outputs(model)) {
        report.max_abs_output_change = Some(
            b.iter()
                .zip(&a)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, nan_max),
        );
        report.output_scale = Some(b.iter().map(|x| x.abs()).fold(0.0, nan_max));
    }
}

/// The larger of two values, NaN if either is: a NaN output change must not read as 0.
fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}
