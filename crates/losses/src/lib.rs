//! # losskit-losses
//!
//! losskit's built-in losses, one file each. Every loss registers itself with
//! [`losskit_core::register_loss!`]; nothing else lists them. Link this crate (e.g.
//! `extern crate losskit_losses;`) and they appear in [`losskit_core::Registry::global`].
#![warn(missing_docs)]

mod elementwise;
mod overlap;
mod shape;

// Classification.
mod binary_cross_entropy;
mod cross_entropy;
mod focal;
mod kl_div;
mod multi_margin;
mod quadratic;
mod topk_cross_entropy;
mod weighted_cross_entropy;

// Segmentation.
mod boundary;
mod dice;
mod dice_ce;
mod dice_cldice;
mod dice_focal;
mod focal_tversky;
mod generalized_dice;
mod hausdorff_dt;
mod jaccard;
mod lovasz;
mod soft_cldice;
mod tversky;
mod unified_focal;

// Composite.
mod scheduled;
mod weighted_sum;

// Regression.
mod huber;
mod log_cosh;
mod mae;
mod mse;
mod msle;
mod poisson_nll;
mod quantile;
mod smooth_l1;

pub use binary_cross_entropy::*;
pub use boundary::*;
pub use cross_entropy::*;
pub use dice::*;
pub use dice_ce::*;
pub use dice_cldice::*;
pub use dice_focal::*;
pub use focal::*;
pub use focal_tversky::*;
pub use generalized_dice::*;
pub use hausdorff_dt::*;
pub use huber::*;
pub use jaccard::*;
pub use kl_div::*;
pub use log_cosh::*;
pub use lovasz::*;
pub use mae::*;
pub use mse::*;
pub use msle::*;
pub use multi_margin::*;
pub use overlap::Activation;
pub use poisson_nll::*;
pub use quadratic::*;
pub use quantile::*;
pub use scheduled::*;
pub use smooth_l1::*;
pub use soft_cldice::SoftClDiceLoss;
pub use soft_cldice::SoftClDiceLossConfig;
pub use topk_cross_entropy::*;
pub use tversky::*;
pub use unified_focal::*;
pub use weighted_cross_entropy::*;
pub use weighted_sum::*;

#[cfg(test)]
pub(crate) mod testing;
