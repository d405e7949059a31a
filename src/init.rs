//! How the weights of newly added units are initialised.

use serde::{Deserialize, Serialize};

/// How new units are initialised when a hidden layer grows.
///
/// "Fan-in" is the new rows of the producing layer (and their bias), "fan-out" the new columns of
/// the consuming layer.
///
/// | init | fan-in | fan-out | exact | learnable |
/// |---|---|---|---|---|
/// | [`Init::ZerosOut`] (default) | fresh random | 0 | yes | yes |
/// | [`Init::MirrorPairs`] | random, same for each pair | `+v` / `-v` | yes (needs even k) | yes, from step one |
/// | [`Init::CopyHalveNoise`] | copy of a random unit | half of it, plus noise | no | yes |
/// | [`Init::ZerosBoth`] | 0 | 0 | yes | no: gradients stay zero |
/// | [`Init::ConstantFanIn`] | constant | 0 | yes | no: units stay identical |
/// | [`Init::CopyHalve`] | copy of a random unit | half of it | yes | no: pair stays collapsed |
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum Init {
    /// New fan-in sampled like a fresh layer, new bias zero, new fan-out zero.
    #[default]
    ZerosOut,
    /// New fan-in, bias and fan-out all zero. Rejected: the new weights never get a gradient.
    ZerosBoth,
    /// New fan-in set to one constant, bias and fan-out zero. Rejected: all new units are
    /// identical and stay identical.
    ConstantFanIn {
        /// The value every new fan-in weight gets.
        value: f64,
    },
    /// Net2Net without noise: copy a random existing unit and halve the fan-out of both copies.
    /// Rejected: the pair gets identical gradients and stays collapsed.
    CopyHalve,
    /// Net2Net with noise: like [`Init::CopyHalve`], then Gaussian noise of standard deviation
    /// `std` is added to the copy's fan-in. Not function-preserving.
    CopyHalveNoise {
        /// Standard deviation of the noise added to the copied fan-in.
        std: f64,
    },
    /// Units come in pairs with the same random fan-in and opposite random fan-out `+v`, `-v`.
    /// Exact, and every new weight gets a non-zero gradient at the first step. Needs an even k.
    MirrorPairs,
}
