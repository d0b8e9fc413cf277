//! The library behind `cargo xtask`. Layers, top to bottom (arrows only
//! point down; `tests/tidy.rs`-style checks in [`tidy`] keep them so):
//!
//! - [`flags`]: the command line, turned into [`core::config::Overrides`].
//! - [`tasks`]: one module per command; no task imports another.
//! - [`services`]: processes and PostgreSQL's tools, the compose service,
//!   the stores of backups, the codec, publishing, loading, hooks, files.
//! - [`core`]: pure: settings, names, metadata, retention, health,
//!   metrics, plans, and the dump reader with its consumers.
//! - [`ui`]: what goes to stderr; used by tasks and services.

#![warn(unreachable_pub)]

mod core;
mod flags;
mod services;
mod tasks;
#[cfg(test)]
mod tidy;
mod ui;

use std::process::ExitCode;

use clap::CommandFactory;

/// For the end-to-end tests: names of backup files, and the calendar.
pub mod testing {
    pub use crate::core::naming::{BackupName, BackupType};
    pub use crate::core::retention::months_before;
    pub use crate::tasks::demo::is_root;
}

/// Exit codes besides 0 (success), 1 (any other failure) and 2 (bad usage).
pub(crate) mod exit {
    /// The backup was written but failed its verification, or a verification failed.
    pub(crate) const VERIFY_FAILED: u8 = 3;
    /// Another run holds the lock of this database (db-backup).
    pub(crate) const LOCKED: u8 = 4;
    /// A backup is missing, too old, or the last run failed (db-status).
    pub(crate) const UNHEALTHY: u8 = 5;
    /// The local backup is complete but its upload to BACKUP_S3_BUCKET failed (db-backup).
    pub(crate) const UPLOAD_FAILED: u8 = 6;
    /// A verification could not be done (the server or the store was unreachable):
    /// nothing is known about the backup, and nothing was recorded.
    pub(crate) const NOT_VERIFIED: u8 = 7;
    /// Stopped by Ctrl-C (SIGINT).
    pub(crate) const INTERRUPTED: u8 = 130;
    /// Stopped by SIGTERM.
    pub(crate) const TERMINATED: u8 = 143;
}

/// An error with a specific exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

fn exit_code_for(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|e| e.downcast_ref::<Failure>())
        .map_or(1, |f| f.code)
}

/// The whole command line: parse, dispatch, and turn an error into one line
/// on stderr and an exit code.
pub fn main() -> ExitCode {
    use clap::Parser;
    let flags = flags::Xtask::parse();
    match run(flags) {
        Ok(code) => code,
        Err(err) => {
            ui::print_error(&err);
            ExitCode::from(exit_code_for(&err))
        }
    }
}

/// Runs one parsed command line.
fn run(flags: flags::Xtask) -> anyhow::Result<ExitCode> {
    let Some(command) = flags.command else {
        // `cargo xtask` alone lists the tasks, and that is not an error.
        flags::Xtask::command().print_help()?;
        return Ok(ExitCode::SUCCESS);
    };
    let (quiet, verbose) = command.verbosity();
    ui::set_verbosity(quiet, verbose);
    let ctx = tasks::Context::load(&command.overrides())?;
    match command {
        flags::Command::DbBackup(args) => tasks::backup::run(args, &ctx),
        flags::Command::DbPrune(args) => tasks::prune::run(args, &ctx),
        flags::Command::DbList(args) => tasks::list::run(args, &ctx),
        flags::Command::DbVerify(args) => tasks::verify::run(args, &ctx),
        flags::Command::DbRestore(args) => tasks::restore::run(args, &ctx),
        flags::Command::Demo(args) => tasks::demo::run(args, &ctx),
        flags::Command::DbStatus(args) => tasks::status::run(args, &ctx),
        flags::Command::DbClone(args) => tasks::clone::run(args, &ctx),
        flags::Command::DbUp(args) => tasks::dev::up(args, &ctx),
        flags::Command::DbDown(args) => tasks::dev::down(args, &ctx),
        flags::Command::DbPsql(args) => tasks::dev::psql(args, &ctx),
        flags::Command::DbPitr(args) => tasks::pitr::run(args, &ctx),
    }
}
