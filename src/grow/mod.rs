//! How a model grows: the [`Expandable`] layer, the model's named growth [`Site`]s
//! ([`Growable`]), how new units start ([`init`], [`informed`]), and how to tell whether they
//! live ([`health`]).

pub(crate) mod expandable;
pub mod health;
pub mod informed;
pub mod init;
pub(crate) mod perturb;
pub(crate) mod report;
pub mod sampling;
pub(crate) mod site;
pub(crate) mod unit_map;

pub use expandable::{grow_between, Expandable};
pub use init::{Init, NewUnits};
pub use perturb::{shrink_perturb, PerturbScope, ShrinkPerturb};
pub use report::ExpansionReport;
pub use site::{
    check_growth, grow_site, grow_site_informed, grow_site_probed, Growable, LossProbe, Site,
    SiteMut, DEFAULT_MAX_WIDTH, FIRST_BLOCK,
};
