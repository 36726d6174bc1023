//! Panics: bugs get one line, not a backtrace; and where a dependency panics on an outside
//! failure (burn's remote client on a dropped connection), the panic becomes an error.

use std::{
    panic::AssertUnwindSafe,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

static CAPTURING: AtomicBool = AtomicBool::new(false);
static CAPTURED: Mutex<Option<String>> = Mutex::new(None);

fn message(info: &std::panic::PanicHookInfo<'_>) -> String {
    let text = info
        .payload()
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| info.payload().downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    text.lines().next().unwrap_or_default().to_string()
}

/// Installs the hook: one line `losskit: internal error: …`, or, inside [`catch`], nothing
/// printed and the message kept for the error.
pub fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        let text = message(info);
        if CAPTURING.load(Ordering::SeqCst) {
            let mut captured = CAPTURED.lock().unwrap_or_else(|e| e.into_inner());
            captured.get_or_insert(text);
        } else {
            eprintln!("losskit: internal error: {text} (please report this bug)");
        }
    }));
}

/// Runs `work`; a panic in it (on any thread) comes back as `Err` with the first panic's
/// message.
pub fn catch<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    *CAPTURED.lock().unwrap_or_else(|e| e.into_inner()) = None;
    CAPTURING.store(true, Ordering::SeqCst);
    let result = std::panic::catch_unwind(AssertUnwindSafe(work));
    CAPTURING.store(false, Ordering::SeqCst);
    result.map_err(|_| {
        CAPTURED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_else(|| "unknown panic".into())
    })
}
