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

/// From now on a second SIGINT or SIGTERM ends the process at once (exit
/// 130 or 143), for runs whose cleanup may wait on the network: whoever
/// presses Ctrl-C twice is never kept waiting. Only where being cut short
/// loses nothing (a backup's partial file is swept by the next run).
pub(crate) fn second_signal_ends_run() -> std::io::Result<()> {
    let seen = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for (signal, code) in [
        (signal_hook::consts::SIGINT, i32::from(exit::INTERRUPTED)),
        (signal_hook::consts::SIGTERM, i32::from(exit::TERMINATED)),
    ] {
        // Registered before the flag it reads: the first signal only sets it.
        signal_hook::flag::register_conditional_shutdown(signal, code, Arc::clone(&seen))?;
        signal_hook::flag::register(signal, Arc::clone(&seen))?;
    }
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

/// `e`, or when a signal came, the interruption's failure (`e` was most
/// likely how the signal showed: a tool that got the Ctrl-C too stopped).
pub(crate) fn or_failure(e: anyhow::Error, kept: &str) -> anyhow::Error {
    let already = e
        .downcast_ref::<Failure>()
        .is_some_and(|f| f.code == exit::INTERRUPTED || f.code == exit::TERMINATED);
    match received() {
        Some(_) if !already => failure(kept).into(),
        _ => e,
    }
}

/// Stops the work here when a signal came.
pub(crate) fn check(kept: &str) -> Result<(), Failure> {
    match received() {
        Some(_) => Err(failure(kept)),
        None => Ok(()),
    }
}

/// [`check`] for a stream's consumer: a signal ends the stream as an I/O error.
pub(crate) fn io_check() -> std::io::Result<()> {
    match received() {
        Some(_) => Err(std::io::Error::other("interrupted")),
        None => Ok(()),
    }
}

/// Until it is dropped, a signal this process notes is acted on for one
/// child (see [`on_signal`]): a child that blocks (pg_dump waiting on a
/// lock, or writing a directory of files and nothing on the pipe) would
/// otherwise keep the run from ever reading the flag. Drop it before the
/// child is reaped, so its pid is never one the system has given to
/// another process.
pub(crate) struct OnSignal {
    done: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Runs `stop` once, on a thread of its own, when a signal is noted before
/// the returned [`OnSignal`] is dropped (which waits for `stop` to end).
/// Nothing when signals are not watched.
pub(crate) fn on_signal(stop: impl FnOnce() + Send + 'static) -> OnSignal {
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let thread = SIGNAL.get().map(|_| {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            loop {
                // The signal before the end: a child that died of the same
                // Ctrl-C ends its stream, and the guard is dropped before
                // this thread has looked. The child is not reaped until the
                // drop has waited for `stop`.
                let ending = done.load(Ordering::SeqCst);
                if received().is_some() {
                    stop();
                    return;
                }
                if ending {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        })
    });
    OnSignal { done, thread }
}

/// SIGTERM, not SIGKILL, to a child not yet reaped: pg_dump --jobs stops
/// its workers on it.
pub(crate) fn terminate(pid: u32) {
    // SAFETY: kill(2) with a pid this process spawned and has not reaped.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
}

impl Drop for OnSignal {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
