//! Any bytes as a checkpoint file: decoded or refused with an error, never a panic or an
//! allocation the file's size does not justify.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(checkpoint) = losskit_optim::Checkpoint::decode(data, "fuzz input") {
        assert!(checkpoint.model.len() + checkpoint.optimizer.len() <= data.len());
        // What decodes must encode to the same sections.
        let again = checkpoint.encode().expect("a decoded checkpoint encodes");
        let round = losskit_optim::Checkpoint::decode(&again, "re-encoded").expect("decodes");
        assert_eq!(round.model, checkpoint.model);
        assert_eq!(round.optimizer, checkpoint.optimizer);
    }
});
