//! A model's initial weights drawn from the run's own seeded generator.
//!
//! burn 0.22 initialises a parameter lazily, at its first use, from the backend's process-wide
//! generator (`Device::seed`). A run that seeds that generator and builds its model is then
//! only reproducible when nothing else in the process draws in between: two runs in two
//! threads, parallel tests or a library user's own code make the weights depend on timing.
//! burn has no API to initialise a module from a caller's generator, so [`seeded_init`] visits
//! the freshly built module (a [`ModuleMapper`]) and replaces each parameter of the layers it
//! knows with values drawn from [`Rng`], using the initialiser that layer declares by default
//! in burn-nn (the same as PyTorch's defaults). The replaced parameters are never drawn by
//! burn at all.

use std::sync::Mutex;

use burn::{
    module::{Module, ModuleMapper, Param},
    tensor::{Device, Tensor, TensorData},
};
use losskit_core::Rng;

/// Held while parameters without a known rule are drawn from their device's generator.
static DEVICE_GENERATOR: Mutex<()> = Mutex::new(());

/// What a parameter is set to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rule {
    /// `U(-1/√fan_in, 1/√fan_in)`: burn-nn's default `KaimingUniform { gain: 1/√3 }` for the
    /// weights and biases of linear and convolution layers (PyTorch's default too).
    Uniform { fan_in: usize },
    /// `N(0, std²)`: burn-nn's default for embeddings.
    Normal { std: f64 },
    /// A constant (norm layers' scale and shift): burn's initialiser draws nothing.
    Constant,
    /// A layer without a rule here: burn's own initialiser, drawn under a lock from the
    /// device's generator seeded with the run's seed.
    Unknown,
}

/// The rule for the parameter `field` of the layer `layer` (burn's struct name), of `shape`;
/// `layer_fan_in` is the fan-in of the layer's weight when it was visited first.
fn rule(layer: &str, field: &str, shape: &[usize], layer_fan_in: Option<usize>) -> Rule {
    let receptive = || shape.iter().skip(2).product::<usize>();
    match (layer, field) {
        // Weight `[d_input, d_output]` (burn's default row layout).
        ("Linear", "weight") if shape.len() == 2 => Rule::Uniform { fan_in: shape[0] },
        // Weight `[out, in / groups, k...]` (convolutions) or `[in, out / groups, k...]`
        // (transposed convolutions): burn-nn takes `shape[1] × kernel` as the fan-in of both.
        (
            "Conv1d" | "Conv2d" | "Conv3d" | "ConvTranspose1d" | "ConvTranspose2d"
            | "ConvTranspose3d" | "DeformConv2d",
            "weight",
        ) if shape.len() >= 3 => Rule::Uniform {
            fan_in: shape[1] * receptive(),
        },
        (
            "Linear" | "Conv1d" | "Conv2d" | "Conv3d" | "ConvTranspose1d" | "ConvTranspose2d"
            | "ConvTranspose3d" | "DeformConv2d",
            "bias",
        ) => layer_fan_in.map_or(Rule::Unknown, |fan_in| Rule::Uniform { fan_in }),
        ("Embedding", "weight") => Rule::Normal { std: 1.0 },
        (
            "BatchNorm" | "LayerNorm" | "GroupNorm" | "InstanceNorm" | "RmsNorm",
            "gamma" | "beta",
        ) => Rule::Constant,
        _ => Rule::Unknown,
    }
}

/// Draws the parameters of the layers it knows from a generator, in visiting order.
struct SeededInit {
    rng: Rng,
    /// `(field, owning struct)` of each module entered and not yet left.
    path: Vec<(String, String)>,
    /// The fan-in of the current layer's weight, for its bias.
    layer_fan_in: Option<usize>,
    /// The devices of parameters left to burn's initialiser.
    unknown_devices: Vec<Device>,
}

impl ModuleMapper for SeededInit {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path
            .push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (field, owner) = self.path.last().cloned().unwrap_or_default();
        let layer = owner.strip_prefix("Struct:").unwrap_or(&owner);
        let shape = param.lazy_shape().dims::<D>().to_vec();
        let rule = rule(layer, &field, &shape, self.layer_fan_in);
        if field == "weight" {
            self.layer_fan_in = match rule {
                Rule::Uniform { fan_in } => Some(fan_in),
                _ => None,
            };
        }
        let count: usize = shape.iter().product();
        let values: Vec<f32> = match rule {
            Rule::Uniform { fan_in } => {
                let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
                (0..count)
                    .map(|_| self.rng.range(-bound, bound) as f32)
                    .collect()
            }
            Rule::Normal { std } => (0..count)
                .map(|_| (self.rng.normal() * std) as f32)
                .collect(),
            Rule::Constant => return param,
            Rule::Unknown => {
                let device = param.lazy_device();
                if !self.unknown_devices.contains(&device) {
                    self.unknown_devices.push(device);
                }
                return param;
            }
        };
        let device = param.lazy_device();
        let id = param.id;
        let tensor = Tensor::<D>::from_data(TensorData::new(values, shape), &device);
        // As a checkpoint load does: the parameter's device and gradient setting are kept, and
        // its lazy initialiser is dropped without running.
        param.transform_for_load(tensor, id)
    }
}

/// Materialises every parameter (runs the lazy initialisers that are left).
struct Materialise;

impl ModuleMapper for Materialise {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.map(|tensor| tensor)
    }
}

/// `model` with its initial weights drawn from the run's seed instead of the backends'
/// process-wide generators, so that two runs with one seed start from the same weights
/// whatever else the process draws, in any thread.
///
/// Linear, convolution and transposed-convolution layers (weight and bias) and embeddings get
/// burn-nn's default initialisers drawn from `Rng::stream(seed, "init")`; norm layers keep
/// their constants. A parameter of any other layer keeps burn's initialiser, drawn at once
/// from its device's generator seeded with `seed` while a process-wide lock is held: such a
/// model is reproducible as long as no code outside losskit draws from that generator at the
/// same time. A custom layer wanting another initialiser draws its weights in its own `init`
/// (then it is an "other layer" here) or its task re-draws them after this function.
pub fn seeded_init<M: Module>(model: M, seed: u64) -> M {
    let mut mapper = SeededInit {
        rng: Rng::stream(seed, "init"),
        path: Vec::new(),
        layer_fan_in: None,
        unknown_devices: Vec::new(),
    };
    let model = model.map(&mut mapper);
    if mapper.unknown_devices.is_empty() {
        return model;
    }
    let _drawing = DEVICE_GENERATOR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for device in &mapper.unknown_devices {
        device.seed(seed);
    }
    model.map(&mut Materialise)
}

#[cfg(test)]
mod tests {
    use burn::{
        module::Module,
        nn::{
            BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d,
            conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig},
        },
        tensor::{Device, Distribution, Tensor},
    };
    use losskit_core::{devices::parse_device, input::to_f64_vec};

    use super::seeded_init;

    #[derive(Module, Debug)]
    struct Net {
        conv: Conv2d,
        norm: BatchNorm,
        up: ConvTranspose2d,
        head: Linear,
    }

    fn net(device: &Device) -> Net {
        Net {
            conv: Conv2dConfig::new([3, 8], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device),
            norm: BatchNormConfig::new(8).init(device),
            up: ConvTranspose2dConfig::new([8, 4], [2, 2]).init(device),
            head: LinearConfig::new(16, 5).init(device),
        }
    }

    fn device() -> Device {
        parse_device("cpu").expect("a CPU backend").autodiff()
    }

    fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f64> {
        let n = tensor.shape().num_elements();
        to_f64_vec(tensor.reshape([n]))
    }

    fn all(net: &Net) -> Vec<Vec<f64>> {
        vec![
            values(net.conv.weight.val()),
            values(net.conv.bias.as_ref().unwrap().val()),
            values(net.norm.gamma.val()),
            values(net.up.weight.val()),
            values(net.up.bias.as_ref().unwrap().val()),
            values(net.head.weight.val()),
            values(net.head.bias.as_ref().unwrap().val()),
        ]
    }

    #[test]
    fn one_seed_gives_one_model_whatever_the_device_generator_does() {
        let device = device();
        device.seed(1);
        let first = all(&seeded_init(net(&device), 11));
        // Another seed and draws on the process-wide generator in between change nothing.
        device.seed(999);
        let _ = Tensor::<1>::random([1000], Distribution::Default, &device);
        let again = all(&seeded_init(net(&device), 11));
        assert_eq!(first, again);
        let other = all(&seeded_init(net(&device), 12));
        assert_ne!(first[0], other[0]);
    }

    #[test]
    fn draws_follow_burns_default_initialisers() {
        let model = seeded_init(net(&device()), 5);
        let params = all(&model);
        // (values, fan-in): conv 3·3·3, transposed conv 4·2·2 (burn-nn: shape[1] × kernel),
        // linear 16; biases share their layer's bound.
        for (index, fan_in) in [
            (0, 27.0),
            (1, 27.0),
            (3, 16.0),
            (4, 16.0),
            (5, 16.0),
            (6, 16.0),
        ] {
            let bound = 1.0 / f64::sqrt(fan_in);
            let values = &params[index];
            assert!(values.iter().all(|v| v.abs() <= bound), "param {index}");
            let spread = values.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
            assert!(spread > 0.5 * bound, "param {index}: {spread} vs {bound}");
        }
        assert!(
            params[2].iter().all(|v| *v == 1.0),
            "batch norm's scale stays 1"
        );
        assert!(model.conv.weight.val().is_require_grad());
        assert!(model.head.bias.as_ref().unwrap().val().is_require_grad());
    }

    #[test]
    fn concurrent_initialisations_agree() {
        let runs: Vec<Vec<Vec<f64>>> = std::thread::scope(|scope| {
            let noise = scope.spawn(|| {
                let device = device();
                for seed in 0..200 {
                    device.seed(seed);
                    let _ = Tensor::<1>::random([256], Distribution::Default, &device);
                }
            });
            let handles: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| all(&seeded_init(net(&device()), 21))))
                .collect();
            let runs = handles.into_iter().map(|h| h.join().unwrap()).collect();
            noise.join().unwrap();
            runs
        });
        for run in &runs[1..] {
            assert_eq!(run, &runs[0]);
        }
    }
}
