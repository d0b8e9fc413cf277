//! `cargo xtask db-list`: the backups in `BACKUP_DIR` (or with `--remote`
//! the off-site copy), newest first, with what their sidecars say; and the
//! compose service's physical backups (pgBackRest) when it has them.

use std::process::ExitCode;

use crate::core::config::Via;
use crate::flags::DbList;
use crate::services::catalog::{self, Backups};
use crate::services::pitr::Pitr;
use crate::tasks::Context;
use crate::ui;

pub(crate) fn run(args: DbList, ctx: &Context) -> anyhow::Result<ExitCode> {
    let backups = Backups::open(&ctx.settings, args.remote)?;
    // Best effort: without a running compose service with PITR, only the logical ones.
    let physical = (!args.remote && ctx.settings.via != Via::Host)
        .then(|| Pitr::connect(&ctx.settings).and_then(|engine| engine.listing()))
        .and_then(|found| {
            found.unwrap_or_else(|e| {
                ui::detail(format!("physical backups not listed: {e:#}"));
                None
            })
        });
    catalog::print_listing(backups.store().as_ref(), args.json, physical)
}
