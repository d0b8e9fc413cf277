//! `cargo xtask db-list`: the backups in `BACKUP_DIR` (or with `--remote`
//! the off-site copy), newest first, with what their sidecars say.

use std::process::ExitCode;

use crate::flags::DbList;
use crate::services::catalog::{self, Backups};
use crate::tasks::Context;

pub(crate) fn run(args: DbList, ctx: &Context) -> anyhow::Result<ExitCode> {
    let backups = Backups::open(&ctx.settings, args.remote)?;
    catalog::print_listing(backups.store().as_ref(), args.json)
}
