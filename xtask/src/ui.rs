//! What the user sees on stderr: messages by verbosity, progress, errors.
//! Data (`--json`, listings) goes to stdout and is written by the tasks.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Verbosity {
    Quiet = 0,
    Normal = 1,
    Verbose = 2,
}

static VERBOSITY: AtomicU8 = AtomicU8::new(Verbosity::Normal as u8);

pub(crate) fn set_verbosity(quiet: bool, verbose: bool) {
    let v = if quiet {
        Verbosity::Quiet
    } else if verbose {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };
    VERBOSITY.store(v as u8, Ordering::Relaxed);
}

pub(crate) fn verbosity() -> Verbosity {
    match VERBOSITY.load(Ordering::Relaxed) {
        0 => Verbosity::Quiet,
        1 => Verbosity::Normal,
        _ => Verbosity::Verbose,
    }
}

/// A progress or status line, hidden by `-q`.
pub(crate) fn info(msg: impl AsRef<str>) {
    if verbosity() >= Verbosity::Normal {
        eprintln!("{}", msg.as_ref());
    }
}

/// Detail shown with `-v`.
pub(crate) fn detail(msg: impl AsRef<str>) {
    if verbosity() >= Verbosity::Verbose {
        eprintln!("  {}", msg.as_ref());
    }
}

/// A warning: shown unless `-q`.
pub(crate) fn warn(msg: impl AsRef<str>) {
    if verbosity() >= Verbosity::Normal {
        eprintln!("warning: {}", msg.as_ref());
    }
}

/// One line: `error: what went wrong: why`, the context chain joined by `: `.
pub(crate) fn print_error(err: &anyhow::Error) {
    eprintln!("error: {err:#}");
}

/// Bytes, rate and elapsed time on one self-overwriting stderr line, only
/// when stderr is a terminal and not `-q`.
pub(crate) struct Progress {
    enabled: bool,
    label: &'static str,
    started: Instant,
    last: Instant,
}

impl Progress {
    const EVERY: Duration = Duration::from_millis(250);

    pub(crate) fn new(label: &'static str) -> Progress {
        let enabled = std::io::stderr().is_terminal() && verbosity() >= Verbosity::Normal;
        let now = Instant::now();
        Progress {
            enabled,
            label,
            started: now,
            last: now,
        }
    }

    pub(crate) fn update(&mut self, total: u64) {
        if !self.enabled || self.last.elapsed() < Self::EVERY {
            return;
        }
        self.last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            (total as f64 / secs) as u64
        } else {
            0
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K{} {}  {}/s  {:.0}s",
            self.label,
            crate::core::human::bytes(total),
            crate::core::human::bytes(rate),
            secs
        );
        let _ = err.flush();
    }

    pub(crate) fn finish(&self) {
        if self.enabled {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}
