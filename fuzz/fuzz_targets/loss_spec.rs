//! Any text as a loss spec (a name or JSON object, a JSON file, a TOML file): parsed and built
//! through the registry, or refused with a typed error. A loss that builds is then run, forward
//! and backward, on small inputs of every target kind: config values the validation let
//! through must not panic there either.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use losskit_core::{
    Reduction, Registry,
    burn::tensor::Device,
    compute::compute_loss,
    input::{HostArray, HostValues},
    spec::{SpecFormat, parse_spec, parse_spec_text},
};

// The losses register through the CLI's crates.
use losskit_cli as _;

struct Inputs {
    device: Device,
    output: HostArray,
    targets: Vec<HostArray>,
}

fn inputs() -> &'static Inputs {
    static INPUTS: OnceLock<Inputs> = OnceLock::new();
    INPUTS.get_or_init(|| {
        let float = |shape: Vec<usize>, scale: f64| {
            let n: usize = shape.iter().product();
            HostArray {
                shape,
                values: HostValues::Float((0..n).map(|i| ((i * 7 % 11) as f64 / 11.0) * scale).collect()),
            }
        };
        Inputs {
            device: losskit_core::devices::parse_device("cpu").expect("a CPU backend"),
            output: float(vec![2, 3, 4], 1.0),
            targets: vec![
                HostArray {
                    shape: vec![2, 4],
                    values: HostValues::Int((0..8).map(|i| i % 3).collect()),
                },
                float(vec![2, 3, 4], 1.0),
            ],
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let parsed = match selector % 3 {
        // A name or an inline JSON object; never a path (no file access while fuzzing).
        0 if !text.trim().to_ascii_lowercase().ends_with(".json")
            && !text.trim().to_ascii_lowercase().ends_with(".toml") =>
        {
            parse_spec(text)
        }
        1 => parse_spec_text(text, SpecFormat::Json, "fuzz.json"),
        2 => parse_spec_text(text, SpecFormat::Toml, "fuzz.toml"),
        _ => return,
    };
    let Ok(config) = parsed else {
        return;
    };
    let Ok(loss) = Registry::global().expect("the registry builds").build(&config) else {
        return;
    };
    let inputs = inputs();
    for target in &inputs.targets {
        for reduction in [Reduction::Mean, Reduction::None] {
            let _ = compute_loss(loss.as_ref(), &inputs.output, target, &inputs.device, reduction, true);
        }
    }
});
