//! The conformance kit on this plugin's losses.

use asymmetric_loss::LOSS_NAMES;

#[test]
fn every_loss_of_this_plugin_passes_the_conformance_kit() {
    for name in LOSS_NAMES {
        losskit_core::conformance::check_registered(name)
            .expect("the loss is registered")
            .assert_passed();
    }
}
