//! Ctrl-C and SIGTERM for the tasks that must clean up (a scratch database
//! to drop): once [`watch`] is called, the signals set a flag instead of
//! ending the process, the work checks it at every step and stops, the
//! cleanup runs, and the process exits 130 (SIGINT) or 143 (SIGTERM). The
//! handlers stay for the rest of the run: a second signal is caught as well.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{Failure, exit};

static SIGNAL: OnceLock<Arc<AtomicUsize>> = OnceLock::new();

/// From now on SIGINT and SIGTERM are noted, not fatal.
pub(crate) fn watch() -> std::io::Result<()> {
    if SIGNAL.get().is_some() {
        return Ok(());
    }
    let flag = Arc::new(AtomicUsize::new(0));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_usize(signal, Arc::clone(&flag), signal as usize)?;
    }
    let _ = SIGNAL.set(flag);
    Ok(())
}

/// The signal received, if any.
pub(crate) fn received() -> Option<i32> {
    SIGNAL
        .get()
        .map(|f| f.load(Ordering::SeqCst))
        .filter(|s| *s != 0)
        .map(|s| s as i32)
}

/// The error that ends an interrupted run: exit 130 or 143, and what was kept.
pub(crate) fn failure(kept: &str) -> Failure {
    let (code, what) = match received() {
        Some(signal_hook::consts::SIGTERM) => (exit::TERMINATED, "terminated"),
        _ => (exit::INTERRUPTED, "interrupted"),
    };
    Failure {
        code,
        message: format!("{what}: {kept}"),
    }
}

/// Stops the work here when a signal came.
pub(crate) fn check(kept: &str) -> Result<(), Failure> {
    match received() {
        Some(_) => Err(failure(kept)),
        None => Ok(()),
    }
}
