//! The library behind `cargo xtask`. Layers, top to bottom (arrows only point down):
//!
//! - [`flags`]: the command line; [`tasks`]: one module per command.
//! - Effects: [`pg`] (running PostgreSQL's client tools, on the host or in
//!   the compose service), [`archive`] (the streaming pipeline and atomic
//!   files), [`store`] (the local directory and, in [`s3`], the off-site copy,
//!   behind one trait), [`compose`] (asking compose), [`hooks`].
//! - Pure core: [`naming`], [`meta`], [`metrics`], [`retention`], [`health`], [`sqlscan`],
//!   [`mask`], [`environments`], [`config`].
//! - [`ui`]: what goes to stderr.

pub mod archive;
pub mod compose;
pub mod config;
pub mod environments;
pub mod flags;
pub mod health;
pub mod hooks;
pub mod mask;
pub mod meta;
pub mod metrics;
pub mod naming;
pub mod pg;
pub mod retention;
pub mod s3;
pub mod sqlscan;
pub mod store;
pub mod tablefilter;
pub mod tasks;
pub mod ui;

use std::process::ExitCode;

use clap::CommandFactory;

/// Exit codes besides 0 (success), 1 (any other failure) and 2 (bad usage).
pub mod exit {
    /// The backup was written but failed its verification.
    pub const VERIFY_FAILED: u8 = 3;
    /// Another run holds the lock of this database (db-backup).
    pub const LOCKED: u8 = 4;
    /// A backup is missing, too old, or the last run failed (db-status).
    pub const UNHEALTHY: u8 = 5;
    /// The local backup is complete but its upload to BACKUP_S3_BUCKET failed (db-backup).
    pub const UPLOAD_FAILED: u8 = 6;
}

/// An error with a specific exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

pub fn exit_code_for(err: &anyhow::Error) -> u8 {
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
pub fn run(flags: flags::Xtask) -> anyhow::Result<ExitCode> {
    let Some(command) = flags.command else {
        // `cargo xtask` alone lists the tasks, and that is not an error.
        flags::Xtask::command().print_help()?;
        return Ok(ExitCode::SUCCESS);
    };
    let ctx = tasks::Context::load()?;
    match command {
        flags::Command::DbBackup(args) => tasks::backup::run(args, &ctx),
        flags::Command::DbPrune(args) => tasks::prune::run(args, &ctx),
        flags::Command::DbList(args) => tasks::list::run(&args.dir, args.json, args.remote, &ctx),
        flags::Command::DbVerify(args) => tasks::verify::run(args, &ctx),
        flags::Command::DbRestore(args) => tasks::restore::run(args, &ctx),
        flags::Command::Demo(args) => tasks::demo::run(args, &ctx),
        flags::Command::DbStatus(args) => tasks::status::run(args, &ctx),
        flags::Command::DbClone(args) => tasks::clone::run(args, &ctx),
        flags::Command::DbUp(args) => tasks::dev::up(args, &ctx),
        flags::Command::DbDown(args) => tasks::dev::down(args, &ctx),
        flags::Command::DbPsql(args) => tasks::dev::psql(args, &ctx),
    }
}
