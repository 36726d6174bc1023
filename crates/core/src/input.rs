//! What a loss consumes: the model output, the target, and how to reduce.
//!
//! Every output of shape `[N, C, ...]` (classification `[N, C]`, segmentation `[N, C, H, W]`,
//! volumes `[N, C, D, H, W]`, regression `[N, D]`) is seen by a loss in one canonical form,
//! `[N, C, S]` with `S` the product of the spatial sizes (1 without spatial dimensions). The
//! target is either class indices `[N, S]` or a dense float tensor `[N, C, S]`. Losses that need
//! the spatial layout read it from [`LossInput::shape`].

use std::{fmt, str::FromStr};

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::{error::InputError, loss::TrainingProgress};

/// How per-element loss values are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reduction {
    /// The mean (the loss's documented normalisation; PyTorch's `mean`).
    #[default]
    Mean,
    /// The sum over every element and sample.
    Sum,
    /// One value per sample, shape `[N]`: each sample's share of `sum`.
    None,
}

impl fmt::Display for Reduction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reduction::Mean => "mean",
            Reduction::Sum => "sum",
            Reduction::None => "none",
        })
    }
}

impl FromStr for Reduction {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "mean" => Ok(Reduction::Mean),
            "sum" => Ok(Reduction::Sum),
            "none" => Ok(Reduction::None),
            other => Err(format!(
                "unknown reduction `{other}`; expected mean, sum or none"
            )),
        }
    }
}

/// The target of a loss, in canonical layout.
#[derive(Debug, Clone)]
pub enum Target {
    /// Class indices, `[N, S]`.
    Indices(Tensor<2, Int>),
    /// A dense float target of the output's shape, `[N, C, S]`: one-hot, class probabilities,
    /// binary masks or regression values.
    Dense(Tensor<3>),
}

/// A model output and its target, checked to fit together.
#[derive(Debug, Clone)]
pub struct LossInput {
    output: Tensor<3>,
    target: Target,
    shape: Vec<usize>,
    auxiliary: Vec<(String, Tensor<3>)>,
    progress: Option<TrainingProgress>,
}

/// An array on the host, as read from a file: a shape and its values in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct HostArray {
    /// The array's shape.
    pub shape: Vec<usize>,
    /// The values.
    pub values: HostValues,
}

/// The values of a [`HostArray`].
#[derive(Debug, Clone, PartialEq)]
pub enum HostValues {
    /// Floating-point values (float32 data is widened without loss).
    Float(Vec<f64>),
    /// Integer values.
    Int(Vec<i64>),
}

impl HostValues {
    /// The number of values.
    pub fn len(&self) -> usize {
        match self {
            HostValues::Float(values) => values.len(),
            HostValues::Int(values) => values.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn check_output_shape(shape: &[usize]) -> Result<(), InputError> {
    if !(2..=5).contains(&shape.len()) || shape.contains(&0) {
        return Err(InputError::OutputRank {
            shape: shape.to_vec(),
        });
    }
    Ok(())
}

fn canonical(shape: &[usize]) -> [usize; 3] {
    [shape[0], shape[1], shape[2..].iter().product()]
}

fn index_shape(shape: &[usize]) -> Vec<usize> {
    let mut expected = vec![shape[0]];
    expected.extend_from_slice(&shape[2..]);
    expected
}

fn check_target_shape(output: &[usize], target: &[usize]) -> Result<bool, InputError> {
    if target == output {
        return Ok(false);
    }
    let indices = index_shape(output);
    // `[N, 1, ...]` class indices are accepted too, as MONAI does.
    let mut indices_with_channel = indices.clone();
    indices_with_channel.insert(1, 1);
    if target == indices.as_slice() || (output[1] != 1 && target == indices_with_channel.as_slice())
    {
        return Ok(true);
    }
    Err(InputError::ShapeMismatch {
        output: output.to_vec(),
        target: target.to_vec(),
        expected: format!(
            "class indices of shape {indices:?} or a dense target of shape {output:?}"
        ),
    })
}

impl LossInput {
    fn new(output: Tensor<3>, target: Target, shape: Vec<usize>) -> Self {
        Self {
            output,
            target,
            shape,
            auxiliary: Vec::new(),
            progress: None,
        }
    }

    /// An output `[N, C, ...]` with class-index targets `[N, ...]`.
    pub fn with_indices<const D: usize, const DT: usize>(
        output: Tensor<D>,
        target: Tensor<DT, Int>,
    ) -> Result<Self, InputError> {
        let shape = output.dims().to_vec();
        check_output_shape(&shape)?;
        let target_shape = target.dims().to_vec();
        if !check_target_shape(&shape, &target_shape)? {
            return Err(InputError::ShapeMismatch {
                output: shape.clone(),
                target: target_shape,
                expected: format!(
                    "class indices of shape {:?} (a target of the output's shape must be float)",
                    index_shape(&shape)
                ),
            });
        }
        let [n, c, s] = canonical(&shape);
        Ok(Self::new(
            output.reshape([n, c, s]),
            Target::Indices(target.reshape([n, s])),
            shape,
        ))
    }

    /// An output `[N, C, ...]` with a dense target of the same shape.
    pub fn with_dense<const D: usize>(
        output: Tensor<D>,
        target: Tensor<D>,
    ) -> Result<Self, InputError> {
        let shape = output.dims().to_vec();
        check_output_shape(&shape)?;
        let target_shape = target.dims().to_vec();
        if target_shape != shape {
            return Err(InputError::ShapeMismatch {
                output: shape.clone(),
                target: target_shape,
                expected: format!("a dense target of shape {shape:?}"),
            });
        }
        let [n, c, s] = canonical(&shape);
        Ok(Self::new(
            output.reshape([n, c, s]),
            Target::Dense(target.reshape([n, c, s])),
            shape,
        ))
    }

    /// An input in canonical layout: output `[N, C, S]`, target `[N, S]` indices or
    /// `[N, C, S]` dense, and the original output shape whose product matches.
    pub fn from_canonical(
        output: Tensor<3>,
        target: Target,
        shape: Vec<usize>,
    ) -> Result<Self, InputError> {
        check_output_shape(&shape)?;
        let expected = canonical(&shape);
        let fits = output.dims() == expected
            && match &target {
                Target::Indices(indices) => indices.dims() == [expected[0], expected[2]],
                Target::Dense(dense) => dense.dims() == expected,
            };
        if !fits {
            return Err(InputError::ShapeMismatch {
                output: output.dims().to_vec(),
                target: match &target {
                    Target::Indices(indices) => indices.dims().to_vec(),
                    Target::Dense(dense) => dense.dims().to_vec(),
                },
                expected: format!("canonical shapes for {shape:?}"),
            });
        }
        Ok(Self::new(output, target, shape))
    }

    /// Host arrays (e.g. read from `.npy` files) on `device`. Integer targets are class
    /// indices; float targets are dense. Non-finite values are rejected here, before any
    /// tensor is made.
    pub fn from_host(
        output: &HostArray,
        target: &HostArray,
        device: &Device,
    ) -> Result<Self, InputError> {
        let shape = output.shape.clone();
        check_output_shape(&shape)?;
        for (name, array) in [("output", output), ("target", target)] {
            let expected: usize = array.shape.iter().product();
            if array.values.len() != expected {
                return Err(InputError::Unsupported {
                    loss: "input".into(),
                    problem: format!(
                        "{name} has {} values but its shape {:?} needs {expected}",
                        array.values.len(),
                        array.shape
                    ),
                });
            }
        }
        let HostValues::Float(values) = &output.values else {
            return Err(InputError::Unsupported {
                loss: "input".into(),
                problem: "output must hold floating-point values (float32 or float64)".into(),
            });
        };
        check_finite("output", values)?;
        let [n, c, s] = canonical(&shape);
        let output_values: Vec<f32> = values.iter().map(|&v| v as f32).collect();
        check_finite_f32("output", &output_values)?;
        let output_tensor =
            Tensor::<3>::from_data(TensorData::new(output_values, [n, c, s]), device);
        let is_indices = check_target_shape(&shape, &target.shape)?;
        let target = match (&target.values, is_indices) {
            (HostValues::Int(values), true) => {
                // Devices may hold indices as int32: anything beyond it is out of range anyway.
                if let Some(&index) = values.iter().find(|v| i32::try_from(**v).is_err()) {
                    return Err(InputError::ClassIndexOutOfRange {
                        index,
                        classes: shape[1],
                        ignore_index: None,
                    });
                }
                Target::Indices(Tensor::<2, Int>::from_data(
                    TensorData::new(values.clone(), [n, s]),
                    device,
                ))
            }
            (HostValues::Float(values), false) => {
                check_finite("target", values)?;
                let values: Vec<f32> = values.iter().map(|&v| v as f32).collect();
                check_finite_f32("target", &values)?;
                Target::Dense(Tensor::<3>::from_data(
                    TensorData::new(values, [n, c, s]),
                    device,
                ))
            }
            (HostValues::Float(_), true) => {
                return Err(InputError::ShapeMismatch {
                    output: shape.clone(),
                    target: target.shape.clone(),
                    expected: "class indices as an integer array (a float target must have the output's shape)".into(),
                });
            }
            (HostValues::Int(_), false) => {
                return Err(InputError::ShapeMismatch {
                    output: shape.clone(),
                    target: target.shape.clone(),
                    expected: format!(
                        "a float array for a dense target, or integer class indices of shape {:?}",
                        index_shape(&shape)
                    ),
                });
            }
        };
        Ok(Self::new(output_tensor, target, shape))
    }

    /// The output in canonical layout `[N, C, S]`.
    pub fn output(&self) -> &Tensor<3> {
        &self.output
    }

    /// The target in canonical layout.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The output and target, consumed.
    pub fn into_parts(self) -> (Tensor<3>, Target) {
        (self.output, self.target)
    }

    /// The original output shape `[N, C, ...]`.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The spatial sizes (empty for classification and regression).
    pub fn spatial_shape(&self) -> &[usize] {
        &self.shape[2..]
    }

    /// N, the number of samples.
    pub fn batch_size(&self) -> usize {
        self.shape[0]
    }

    /// C, the number of classes or output features.
    pub fn channels(&self) -> usize {
        self.shape[1]
    }

    /// S, the number of spatial positions (1 without spatial dimensions).
    pub fn positions(&self) -> usize {
        self.shape[2..].iter().product()
    }

    /// The device the output lives on.
    pub fn device(&self) -> Device {
        self.output.device()
    }

    /// Replaces the output (e.g. to move it), keeping the target, shape, auxiliary inputs and
    /// progress.
    pub fn with_output(mut self, output: Tensor<3>) -> Self {
        self.output = output;
        self
    }

    /// Adds (or replaces) the auxiliary input `name` (see
    /// [`Loss::auxiliary_inputs`](crate::Loss::auxiliary_inputs)): a map of the output's shape,
    /// `[N, C, ...]` or canonical `[N, C, S]`.
    pub fn with_auxiliary<const D: usize>(
        mut self,
        name: &str,
        values: Tensor<D>,
    ) -> Result<Self, InputError> {
        let dims = values.dims().to_vec();
        let canonical_shape = canonical(&self.shape);
        if dims != self.shape && dims != canonical_shape {
            return Err(InputError::Unsupported {
                loss: "input".into(),
                problem: format!(
                    "the auxiliary input `{name}` has shape {dims:?}; expected the output's shape {:?}",
                    self.shape
                ),
            });
        }
        let values = values.reshape(canonical_shape);
        self.auxiliary.retain(|(kept, _)| kept != name);
        self.auxiliary.push((name.to_string(), values));
        Ok(self)
    }

    /// The auxiliary input `name`, `[N, C, S]`, if it was given.
    pub fn auxiliary(&self, name: &str) -> Option<&Tensor<3>> {
        self.auxiliary
            .iter()
            .find(|(kept, _)| kept == name)
            .map(|(_, values)| values)
    }

    /// The names of the auxiliary inputs given.
    pub fn auxiliary_names(&self) -> Vec<&str> {
        self.auxiliary
            .iter()
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// Sets how far training has come.
    pub fn with_progress(mut self, progress: TrainingProgress) -> Self {
        self.progress = Some(progress);
        self
    }

    /// How far training has come, if the caller said (see [`TrainingProgress`]).
    pub fn progress(&self) -> Option<TrainingProgress> {
        self.progress
    }
}

fn check_finite(tensor: &'static str, values: &[f64]) -> Result<(), InputError> {
    if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
        return Err(InputError::NonFinite {
            tensor,
            what: if bad.is_nan() { "NaN" } else { "infinity" },
        });
    }
    Ok(())
}

fn check_finite_f32(tensor: &'static str, values: &[f32]) -> Result<(), InputError> {
    if values.iter().any(|v| v.is_infinite()) {
        return Err(InputError::NonFinite {
            tensor,
            what: "a value beyond float32's range",
        });
    }
    Ok(())
}

/// Reads a float tensor back to the host as `f64` values.
pub fn to_f64_vec<const D: usize>(tensor: Tensor<D>) -> Vec<f64> {
    tensor
        .into_data()
        .try_into_vec_as::<f64>()
        .expect("a float tensor converts to f64")
}

/// Reads an int tensor back to the host as `i64` values.
pub fn to_i64_vec<const D: usize>(tensor: Tensor<D, Int>) -> Vec<i64> {
    tensor
        .into_data()
        .try_into_vec_as::<i64>()
        .expect("an int tensor converts to i64")
}
