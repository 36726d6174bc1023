//! Signals that must not cost the user their work.
//!
//! - Ctrl-C (SIGINT) or SIGTERM during training ends the run between two steps: the last
//!   checkpoint is kept and `--resume` continues from it. A second signal exits at once (the
//!   checkpoint is still whole: it is only ever replaced by a rename).
//! - SIGXFSZ (a file-size limit reached, as under `ulimit -f`) would kill the process without a
//!   word; ignored, the write fails with an error that names the file instead.

use std::sync::{Arc, OnceLock, atomic::AtomicBool};

use signal_hook::consts::signal::{SIGINT, SIGTERM, SIGXFSZ};

/// The exit status of a run ended by a signal, as shells report Ctrl-C.
pub const INTERRUPTED_EXIT: u8 = 130;

/// Makes writes past a file-size limit fail with an error instead of killing the process.
pub fn report_file_size_limits() {
    // A handler that only sets an unused flag replaces the default action (terminate).
    let _ = signal_hook::flag::register(SIGXFSZ, Arc::new(AtomicBool::new(false)));
}

/// The flag that SIGINT and SIGTERM raise, registered on first use. `None` where handlers
/// cannot be installed: the signals then end the process as usual.
pub fn stop_flag() -> Option<Arc<AtomicBool>> {
    static FLAG: OnceLock<Option<Arc<AtomicBool>>> = OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        for signal in [SIGINT, SIGTERM] {
            // The first handler exits only when the flag is already up: the second signal.
            signal_hook::flag::register_conditional_shutdown(
                signal,
                i32::from(INTERRUPTED_EXIT),
                flag.clone(),
            )
            .ok()?;
            signal_hook::flag::register(signal, flag.clone()).ok()?;
        }
        Some(flag)
    })
    .clone()
}

/// A run ended by a signal; `main` exits with [`INTERRUPTED_EXIT`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Interrupted(pub String);
