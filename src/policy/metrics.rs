//! What the training loop reports to a policy at every observation.

use dfdx::prelude::{Device, Gradients};
use serde::{Deserialize, Serialize};

use crate::{GrowError, Growable, Real, Site};

/// One growth site as a policy sees it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SiteMetrics {
    /// The site's name.
    pub name: String,
    /// Its width now.
    pub width: usize,
    /// Parameters one new unit adds.
    pub params_per_unit: usize,
    /// Units are added in multiples of this.
    pub unit_multiple: usize,
    /// The width it may not pass.
    pub max_width: usize,
    /// The L2 norm of the gradient of the site's parameters, when gradients were given.
    pub grad_norm: Option<f64>,
}

impl From<&Site> for SiteMetrics {
    fn from(s: &Site) -> Self {
        SiteMetrics {
            name: s.name.clone(),
            width: s.width,
            params_per_unit: s.params_per_unit,
            unit_multiple: s.unit_multiple,
            max_width: s.max_width,
            grad_norm: None,
        }
    }
}

/// One observation of the training run, handed to
/// [`GrowthPolicy::observe`](super::GrowthPolicy::observe).
///
/// Build it from the model with [`Metrics::of`]:
///
/// ```
/// use dfdx_grow::dfdx::prelude::*;
/// use dfdx_grow::policy::Metrics;
/// use dfdx_grow::rand::{rngs::StdRng, SeedableRng};
/// use dfdx_grow::{Activation, Mlp, Params};
///
/// let dev = Cpu::default();
/// let mlp = Mlp::<f32, Cpu>::new(&[4, 8, 2], Activation::Relu, &dev, &mut StdRng::seed_from_u64(0));
/// let mut grads = mlp.try_alloc_grads().unwrap();
/// let m = Metrics::of(&mlp).step(10).train_loss(0.7).grads(&mut grads).build().unwrap();
/// assert_eq!((m.sites[0].name.as_str(), m.sites[0].width), ("hidden.0", 8));
/// assert_eq!(m.sites[0].params_per_unit, 4 + 1 + 2);
/// assert_eq!(m.sites[0].grad_norm, Some(0.0));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Optimizer steps taken so far.
    pub step: u64,
    /// Epochs completed so far (0 during the first epoch).
    pub epoch: u64,
    /// Training loss (for example the mean over the last batch or a running mean).
    pub train_loss: f64,
    /// Validation loss, when it was measured at this step.
    pub val_loss: Option<f64>,
    /// Every growth site of the model, in the model's order.
    pub sites: Vec<SiteMetrics>,
    /// Current number of trainable parameters.
    pub params: usize,
    /// Cumulative training FLOPs so far.
    pub flops: f64,
}

impl Metrics {
    /// Starts the metrics of `model` now: its sites and parameter count.
    pub fn of<'m, E: Real, D: Device<E>, M: Growable<E, D>>(
        model: &'m M,
    ) -> MetricsBuilder<'m, E, D, M> {
        let sites = model.sites();
        MetricsBuilder {
            model,
            metrics: Metrics {
                sites: sites.iter().map(SiteMetrics::from).collect(),
                params: model.num_params(),
                ..Metrics::default()
            },
            sites,
            grads: Ok(None),
            _types: std::marker::PhantomData,
        }
    }

    /// The site named `name`.
    pub fn site(&self, name: &str) -> Option<&SiteMetrics> {
        self.sites.iter().find(|s| s.name == name)
    }

    /// The sites' names.
    pub fn site_names(&self) -> Vec<String> {
        self.sites.iter().map(|s| s.name.clone()).collect()
    }

    /// Whether any site carries a gradient norm.
    pub fn has_grad_norms(&self) -> bool {
        self.sites.iter().any(|s| s.grad_norm.is_some())
    }
}

/// Builds [`Metrics`] for a model; see [`Metrics::of`].
#[derive(Debug)]
pub struct MetricsBuilder<'m, E: Real, D: Device<E>, M> {
    model: &'m M,
    metrics: Metrics,
    sites: Vec<Site>,
    grads: Result<Option<Vec<(String, f64)>>, GrowError>,
    _types: std::marker::PhantomData<(E, D)>,
}

impl<'m, E: Real, D: Device<E>, M: Growable<E, D>> MetricsBuilder<'m, E, D, M> {
    /// Optimizer steps taken so far.
    pub fn step(mut self, step: u64) -> Self {
        self.metrics.step = step;
        self
    }

    /// Epochs completed so far.
    pub fn epoch(mut self, epoch: u64) -> Self {
        self.metrics.epoch = epoch;
        self
    }

    /// The training loss.
    pub fn train_loss(mut self, loss: f64) -> Self {
        self.metrics.train_loss = loss;
        self
    }

    /// The validation loss, when it was measured at this step.
    pub fn val_loss(mut self, loss: Option<f64>) -> Self {
        self.metrics.val_loss = loss;
        self
    }

    /// Cumulative training FLOPs.
    pub fn flops(mut self, flops: f64) -> Self {
        self.metrics.flops = flops;
        self
    }

    /// Reads every site's gradient norm from `grads` (the gradients of the last step). Only
    /// the tensors that some site names are read.
    pub fn grads(mut self, grads: &mut Gradients<E, D>) -> Self {
        let sites = &self.sites;
        let wanted = |name: &str| sites.iter().any(|s| s.params.iter().any(|p| p == name));
        self.grads = self.model.grad_norms_where(grads, &wanted).map(Some);
        self
    }

    /// The metrics, or the error of reading the gradients. A site that names no parameter
    /// has no gradient norm (`None`, which gradient-norm policies refuse) rather than a norm
    /// of zero; a site naming a tensor the model's walk lacks is an error naming both.
    pub fn build(self) -> Result<Metrics, GrowError> {
        let mut m = self.metrics;
        if let Some(norms) = self.grads? {
            for (sm, site) in m.sites.iter_mut().zip(&self.sites) {
                if let Some(p) = site
                    .params
                    .iter()
                    .find(|p| !norms.iter().any(|(n, _)| n == *p))
                {
                    let mut params = Vec::new();
                    self.model.visit(&mut |n, _| params.push(n.to_string()));
                    return Err(GrowError::UnknownParam {
                        site: site.name.clone(),
                        param: p.clone(),
                        params,
                    });
                }
                sm.grad_norm = (!site.params.is_empty()).then(|| {
                    norms
                        .iter()
                        .filter(|(n, _)| site.params.contains(n))
                        .map(|(_, g)| g * g)
                        .sum::<f64>()
                        .sqrt()
                });
            }
        }
        Ok(m)
    }
}
