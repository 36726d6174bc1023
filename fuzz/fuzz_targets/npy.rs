//! Any bytes as a `.npy` file: the reader returns an array or an error, never panics; an
//! array it returns is then evaluated as a loss's output and target, which must not panic
//! either.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use losskit_core::{Loss, Reduction, Registry, burn::tensor::Device, compute::compute_loss};

fn setup() -> &'static (Device, Vec<Box<dyn Loss>>) {
    static SETUP: OnceLock<(Device, Vec<Box<dyn Loss>>)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let registry = Registry::global().expect("the registry builds");
        let losses = ["cross_entropy", "mse", "dice"]
            .iter()
            .map(|name| registry.build_spec(name).expect("a built-in loss"))
            .collect();
        let device = losskit_core::devices::parse_device("cpu").expect("a CPU backend");
        (device, losses)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(array) = losskit_cli::npy::parse_npy(data) else {
        return;
    };
    let count: usize = array.shape.iter().product();
    assert_eq!(count, array.values.len(), "shape and values disagree");
    let (device, losses) = setup();
    for loss in losses {
        let _ = compute_loss(loss.as_ref(), &array, &array, device, Reduction::Mean, true);
    }
});
