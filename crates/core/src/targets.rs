//! Target conversions with validation: class indices checked against the output's classes,
//! one-hot encodings, ignored positions.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::{
    error::InputError,
    input::{Target, to_i64_vec},
};

/// Class indices `[N, S]` checked to lie in `0..classes` (or equal `ignore_index`).
///
/// Returns the indices with ignored positions replaced by class 0, and the float mask `[N, S]`
/// of positions that count (1) or are ignored (0) when `ignore_index` is set.
pub fn checked_indices(
    indices: &Tensor<2, Int>,
    classes: usize,
    ignore_index: Option<i64>,
) -> Result<(Tensor<2, Int>, Option<Tensor<2>>), InputError> {
    // One read-back of the bounds on the hot path; the whole tensor only to name a bad index.
    let bounds = crate::fused::index_bounds(indices);
    let in_range = bounds[0] >= 0 && bounds[1] < classes as i64;
    if !in_range {
        let values = to_i64_vec(indices.clone());
        if let Some(&index) = values
            .iter()
            .find(|&&v| (v < 0 || v >= classes as i64) && Some(v) != ignore_index)
        {
            return Err(InputError::ClassIndexOutOfRange {
                index,
                classes,
                ignore_index,
            });
        }
    }
    match ignore_index {
        Some(ignored) if ignored < bounds[0] || ignored > bounds[1] => Ok((indices.clone(), None)),
        Some(ignored) => {
            let ignored_mask = indices.clone().equal_elem(ignored);
            let valid = ignored_mask.clone().bool_not().float();
            let cleaned = indices.clone().mask_fill(ignored_mask, 0);
            Ok((cleaned, Some(valid)))
        }
        None => Ok((indices.clone(), None)),
    }
}

/// One-hot encoding `[N, C, S]` of class indices `[N, S]` (which must be in range).
pub fn one_hot(indices: Tensor<2, Int>, classes: usize) -> Tensor<3> {
    if classes == 1 {
        // burn's one_hot refuses a single class; its only index, 0, encodes as all ones.
        let [n, s] = indices.dims();
        return indices.float().reshape([n, 1, s]).zeros_like() + 1.0;
    }
    indices.one_hot::<3>(classes).float().swap_dims(1, 2)
}

/// The target as a dense `[N, C, S]` tensor: one-hot for class indices (validated; ignored
/// positions are all-zero and reported in the mask), unchanged for dense targets.
pub fn dense_target(
    target: &Target,
    classes: usize,
    ignore_index: Option<i64>,
) -> Result<(Tensor<3>, Option<Tensor<2>>), InputError> {
    match target {
        Target::Dense(dense) => Ok((dense.clone(), None)),
        Target::Indices(indices) => {
            let (indices, valid) = checked_indices(indices, classes, ignore_index)?;
            let mut encoded = one_hot(indices, classes);
            if let Some(valid) = &valid {
                encoded = encoded * valid.clone().unsqueeze_dim::<3>(1);
            }
            Ok((encoded, valid))
        }
    }
}

/// A per-channel option (class weights, `pos_weight`, α) as a `[1, C, 1]` tensor, or an error
/// naming the loss and option when its length is not the output's C.
pub fn channel_vector(
    loss: &str,
    option: &str,
    values: &[f32],
    channels: usize,
    device: &Device,
) -> Result<Tensor<3>, InputError> {
    if values.len() != channels {
        return Err(InputError::Unsupported {
            loss: loss.into(),
            problem: format!(
                "has {} `{option}` values but the output has {channels} channels",
                values.len()
            ),
        });
    }
    Ok(
        Tensor::<1>::from_data(TensorData::new(values.to_vec(), [channels]), device)
            .reshape([1, channels, 1]),
    )
}
