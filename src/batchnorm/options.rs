//! What a module is built with: the flavor (which input ranks it takes), PyTorch's options
//! with their defaults, and the `BatchNorm1d/2d/3d` constructors.

use super::BatchNorm;
use crate::device::Context;
use crate::error::{Error, Result};

/// Which PyTorch module a [`BatchNorm`] mirrors; it fixes the accepted input ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// `nn.BatchNorm1d`: (N, C) or (N, C, L).
    OneD,
    /// `nn.BatchNorm2d`: (N, C, H, W).
    TwoD,
    /// `nn.BatchNorm3d`: (N, C, D, H, W).
    ThreeD,
}

impl Flavor {
    /// "BatchNorm1d", "BatchNorm2d" or "BatchNorm3d".
    pub fn name(self) -> &'static str {
        match self {
            Flavor::OneD => "BatchNorm1d",
            Flavor::TwoD => "BatchNorm2d",
            Flavor::ThreeD => "BatchNorm3d",
        }
    }

    /// The flavor whose inputs have `rank` dimensions: 2 and 3 are 1d, 4 is 2d, 5 is 3d.
    pub fn for_rank(rank: usize) -> Option<Flavor> {
        match rank {
            2 | 3 => Some(Flavor::OneD),
            4 => Some(Flavor::TwoD),
            5 => Some(Flavor::ThreeD),
            _ => None,
        }
    }

    pub(crate) fn check_rank(self, rank: usize) -> Result<()> {
        let (ok, expected) = match self {
            Flavor::OneD => (rank == 2 || rank == 3, "2D or 3D"),
            Flavor::TwoD => (rank == 4, "4D"),
            Flavor::ThreeD => (rank == 5, "5D"),
        };
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidRank {
                module: self.name(),
                expected,
                got: rank,
            })
        }
    }
}

/// Constructor options, with PyTorch's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormOptions {
    /// Added to the variance before the square root. Default `1e-5`.
    pub eps: f64,
    /// Running-stat factor; `None` means a cumulative average (factor `1/num_batches_tracked`).
    /// Default `Some(0.1)`.
    pub momentum: Option<f64>,
    /// Learnable `weight` (init 1) and `bias` (init 0). Default `true`.
    pub affine: bool,
    /// Keep `running_mean` (init 0), `running_var` (init 1) and `num_batches_tracked`; without
    /// them, eval mode also normalizes with batch statistics. Default `true`.
    pub track_running_stats: bool,
}

impl Default for BatchNormOptions {
    fn default() -> Self {
        BatchNormOptions {
            eps: 1e-5,
            momentum: Some(0.1),
            affine: true,
            track_running_stats: true,
        }
    }
}

macro_rules! flavor {
    ($(#[$doc:meta])* $ty:ident, $flavor:expr) => {
        $(#[$doc])*
        ///
        /// A constructor: it builds a [`BatchNorm`] of this flavor.
        #[derive(Clone, Copy, Debug)]
        pub struct $ty;

        impl $ty {
            /// `num_features` channels with PyTorch's default options.
            // A constructor type by design: `BatchNorm1d::new(&ctx, 3)?` reads like PyTorch and
            // gives the one module type, so there is no newtype to unwrap.
            #[allow(clippy::new_ret_no_self)]
            pub fn new(ctx: &Context, num_features: usize) -> Result<BatchNorm> {
                Self::with_options(ctx, num_features, BatchNormOptions::default())
            }

            /// `num_features` channels with the given options.
            pub fn with_options(
                ctx: &Context,
                num_features: usize,
                options: BatchNormOptions,
            ) -> Result<BatchNorm> {
                BatchNorm::new(ctx, $flavor, num_features, options)
            }
        }
    };
}

flavor!(
    /// `nn.BatchNorm1d`: takes (N, C) or (N, C, L) input.
    BatchNorm1d,
    Flavor::OneD
);
flavor!(
    /// `nn.BatchNorm2d`: takes (N, C, H, W) input.
    BatchNorm2d,
    Flavor::TwoD
);
flavor!(
    /// `nn.BatchNorm3d`: takes (N, C, D, H, W) input.
    BatchNorm3d,
    Flavor::ThreeD
);
