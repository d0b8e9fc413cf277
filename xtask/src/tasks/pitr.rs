//! `db-pitr enable | disable | status`: WAL archiving with pgBackRest for
//! the compose service. The physical backups and the restores to a time are
//! `db-backup --physical` and `db-restore --to-time`; all go through
//! [`crate::services::pitr`].

use std::process::ExitCode;

use anyhow::bail;
use serde_json::json;

use crate::core::human;
use crate::core::pitr::{self, CONF, Change, ConfFor};
use crate::flags::{DbPitr, PitrAction};
use crate::services::catalog::LocalStore;
use crate::services::pitr::Pitr;
use crate::tasks::Context;
use crate::ui;

pub(crate) fn run(args: DbPitr, ctx: &Context) -> anyhow::Result<ExitCode> {
    let engine = Pitr::connect(&ctx.settings)?;
    match args.action {
        PitrAction::Enable {
            dry_run,
            move_repository,
        } => enable(&engine, dry_run, move_repository),
        PitrAction::Disable { dry_run } => disable(&engine, dry_run),
        PitrAction::Status { json } => status(&engine, ctx, json),
    }
}

fn enable(engine: &Pitr, dry_run: bool, move_repository: bool) -> anyhow::Result<ExitCode> {
    engine.require_repository_volume()?;
    let changes = pitr::enable_changes(&engine.current_settings()?, &engine.settings);
    let stanza = &engine.settings.stanza;
    let now = engine.settings.repository.describe();
    println!(
        "{}stanza '{stanza}', repository {now}{}, configuration {CONF}",
        if dry_run { "would enable: " } else { "" },
        if engine.settings.cipher.is_some() {
            ", encrypted (aes-256-cbc)"
        } else {
            ""
        }
    );
    // A repository that moves leaves its backups behind, out of every
    // restore's reach: only when asked.
    let existing = engine.existing_conf()?;
    if let Some(was) = existing.as_deref().map(pitr::repository_in)
        && was != now
    {
        if !move_repository {
            bail!(
                "the repository would move from {was} to {now} (BACKUP_PITR_REPO, the store, the bucket or its prefix changed): restores would no longer reach the backups in {was}; set the settings back, or add --move-repository; nothing was changed"
            );
        }
        ui::warn(format!(
            "the repository {} from {was} to {now}: the backups in {was} stay there, no longer used or expired, and restores reach back only to the first backup in {now} (take one now: `cargo xtask db-backup --physical --full`)",
            if dry_run { "would move" } else { "moves" }
        ));
    }
    engine.check_lasting_keys(ConfFor::Enable)?;
    print_changes(&changes);
    if dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    engine.write_conf(existing.as_deref(), ConfFor::Enable)?;
    engine.apply(&changes)?;
    engine.create_and_check()?;
    ui::info(format!(
        "WAL archiving is on and checked end to end: at most {} s of changes can be lost (BACKUP_PITR_ARCHIVE_TIMEOUT); next: `cargo xtask db-backup --physical`",
        engine.settings.archive_timeout
    ));
    Ok(ExitCode::SUCCESS)
}

fn disable(engine: &Pitr, dry_run: bool) -> anyhow::Result<ExitCode> {
    let changes = pitr::disable_changes(&engine.current_settings()?);
    if dry_run {
        println!("would disable WAL archiving:");
    }
    print_changes(&changes);
    if dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    engine.apply(&changes)?;
    ui::info(format!(
        "WAL archiving is off; the repository and its backups are kept in {}",
        engine.repository_in_use()?
    ));
    Ok(ExitCode::SUCCESS)
}

fn print_changes(changes: &[Change]) {
    if changes.is_empty() {
        println!("  server settings: already as wanted");
        return;
    }
    for c in changes {
        println!(
            "  {}: {} -> {}",
            c.name,
            if c.from.is_empty() {
                "(unset)"
            } else {
                &c.from
            },
            c.to.as_deref().unwrap_or("(default)")
        );
    }
    if pitr::needs_restart(changes) {
        println!("  the service restarts (archive_mode takes effect at start)");
    }
}

fn status(engine: &Pitr, ctx: &Context, as_json: bool) -> anyhow::Result<ExitCode> {
    let Some(info) = engine.info()? else {
        bail!(
            "point-in-time recovery is not enabled for the compose service '{}': run `cargo xtask db-pitr enable`",
            engine.service()
        );
    };
    let (archiver, lag) = engine.measure_lag(&LocalStore::of(&ctx.settings))?;
    let repository = engine.repository_in_use()?;
    if as_json {
        let backups: Vec<_> = info
            .backups
            .iter()
            .map(|b| {
                json!({"label": b.label, "type": b.kind.as_str(), "started": pitr::utc(b.started),
                    "stopped": pitr::utc(b.stopped), "size_bytes": b.size, "repo_bytes": b.repo_size,
                    "wal_start": b.wal_start, "wal_stop": b.wal_stop, "prior": b.prior})
            })
            .collect();
        println!(
            "{}",
            json!({"stanza": engine.settings.stanza, "repository": repository, "status": info.message, "status_detail": info.describe(), "status_code": info.code,
                "cipher": info.cipher, "backups": backups, "wal_min": info.wal_min, "wal_max": info.wal_max,
                "archive_lag_seconds": lag, "waiting_segments": archiver.waiting,
                "last_archived_wal": archiver.last_archived_wal,
                "last_archived_at": archiver.last_archived_at.map(|t| pitr::utc(t as i64)),
                "last_failed_at": archiver.last_failed_at.map(|t| pitr::utc(t as i64)),
                "restorable_from": info.backups.first().map(|b| pitr::utc(b.stopped))})
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "stanza '{}' in {}: {} (cipher {})",
        engine.settings.stanza,
        repository,
        info.describe(),
        info.cipher
    );
    match (&info.wal_min, &info.wal_max) {
        (Some(min), Some(max)) => println!("  archived WAL  {min} .. {max}"),
        _ => println!("  archived WAL  none yet"),
    }
    println!(
        "  archive lag   {lag:.0} s, {} finished segments waiting (last archived {} at {})",
        archiver.waiting,
        archiver.last_archived_wal.as_deref().unwrap_or("-"),
        archiver
            .last_archived_at
            .map_or("-".into(), |t| pitr::utc(t as i64))
    );
    if let Some(first) = info.backups.first() {
        println!("  restorable    from {} to now", pitr::utc(first.stopped));
    }
    println!("  physical backups ({}):", info.backups.len());
    for b in info.backups.iter().rev() {
        println!(
            "    {:<34} {:<4} {}  {} (+{} in the repository)  WAL {}..{}",
            b.label,
            b.kind.as_str(),
            pitr::utc(b.stopped),
            human::bytes(b.size),
            human::bytes(b.repo_size),
            b.wal_start,
            b.wal_stop
        );
    }
    Ok(ExitCode::SUCCESS)
}
