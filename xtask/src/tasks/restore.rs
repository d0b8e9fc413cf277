//! `cargo xtask db-restore`: all or nothing. The backup is checked before any
//! database is touched, loaded into a scratch database, checked again (row
//! counts against the dump), and only then swapped in by renaming; the
//! replaced database is kept as `{db}_pre_restore_{timestamp}`. A failure or
//! a signal at any step drops the scratch database and leaves the target as it was.

use std::io::{self, BufRead, IsTerminal};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, format_err};
use serde_json::json;
use time::OffsetDateTime;
use time::macros::format_description;

use crate::core::dbprops::Skip;
use crate::core::dump::filter::TableFilter;
use crate::core::human;
use crate::core::plan::{self, Consent, Replace};
use crate::flags::DbRestore;
use crate::services::catalog::Backups;
use crate::services::interrupt;
use crate::services::load::{
    self, Checked, Input, LoadError, Scratch, Source, Transform, derived_name,
};
use crate::services::pg::{self, PgVersion};
use crate::tasks::Context;
use crate::{Failure, ui};

pub(crate) fn run(args: DbRestore, ctx: &Context) -> anyhow::Result<ExitCode> {
    let settings = &ctx.settings;
    let backups = Backups::open(settings, args.remote)?;
    let store = backups.store();
    if args.list {
        return crate::services::catalog::print_listing(store.as_ref(), args.json);
    }
    // The route first: with the compose service, the database name may come from it.
    let route = pg::route(settings)?;
    let conn = route.conn.clone();
    let target = args
        .target_db
        .clone()
        .unwrap_or_else(|| conn.dbname.clone());
    plan::check_target(&target, &conn.maintenance().dbname).map_err(anyhow::Error::msg)?;

    // 1. Which backup: from the backup directory, or streamed from the off-site copy.
    let source = if args.latest {
        let kind = args.kind;
        load::latest(&store, &conn.dbname, kind, args.source.as_deref())?.ok_or_else(|| {
            let tier = kind.map(|k| format!("{k} ")).unwrap_or_default();
            format_err!(
                "there is no usable {tier}backup of database '{}' in {}: make one with `cargo xtask db-backup`",
                conn.dbname,
                store.location()
            )
        })?
    } else {
        let file = args
            .file
            .as_deref()
            .ok_or_else(|| format_err!("say which backup to restore: a FILE or --latest"))?;
        Source::resolve(store.clone(), &backups.local, file)?
    };

    // 2. The file's companions now. The file itself is read once: a dry run
    // reads it here; a restore while loading it into the scratch database,
    // which the checks must pass before the target is touched.
    let refusing = |e: &dyn std::fmt::Display| format_err!("refusing to restore: {e}");
    let sidecars = load::sidecars(&source).map_err(|e| refusing(&format!("{e:#}")))?;
    let full = if args.dry_run {
        ui::info(format!("checking {}", source.file_name));
        Some(load::check(&source, &sidecars).map_err(|e| refusing(&e))?)
    } else {
        None
    };

    // 3. The server, and whether the dump can load into it.
    let pg::Session {
        client,
        conn: admin,
        server,
    } = route.maintenance().connect(pg::Purpose::Load)?;
    let dump_version = full
        .as_ref()
        .and_then(Checked::pg_dump_version)
        .or_else(|| load::dump_version(&source, &sidecars));
    pg::check_load_compat(dump_version.as_ref(), &server).map_err(|e| refusing(&e))?;
    let existing = pg::database_props(&client, &admin, &server, &target)?;
    let exists = existing.is_some();

    // 4. Consent to replace.
    let where_ = conn.server_label();
    let consent = plan::consent(Replace {
        target: &target,
        server: &where_,
        source: &source.file_name,
        exists,
        explicit_target: args.target_db.is_some(),
        yes: args.yes,
        local: conn.is_local(),
        interactive: io::stdin().is_terminal(),
    });
    let stamp = OffsetDateTime::now_utc().format(format_description!(
        // Lower case and digits: the names need no quoting in SQL (UTC).
        "[year][month][day]_[hour][minute][second]"
    ))?;
    let previous = exists.then(|| derived_name(&target, &format!("_pre_restore_{stamp}")));
    if let Some(checked) = &full {
        print_plan(
            &source,
            checked,
            &target,
            &where_,
            &server,
            previous.as_deref(),
            args.json,
        );
        // A preview needs no consent; the real run will.
        match consent {
            Consent::Proceed => {}
            Consent::Ask(_) => ui::info("the real run will ask before it replaces the database"),
            Consent::Refuse(why) => ui::info(format!("the real run needs consent: {why}")),
        }
        ui::info("dry run: every check passed; nothing was changed");
        return Ok(ExitCode::SUCCESS);
    }
    confirm(consent)?;

    // 5. Load into a scratch database with the target's encoding and locale,
    // 6. and check what loaded against what the dump holds.
    interrupt::watch()?;
    let clock = Instant::now();
    let scratch_name = derived_name(&target, &format!("_restore_{stamp}"));
    load::drop_leftovers(&client, &admin);
    let backup_props = sidecars
        .meta
        .as_ref()
        .and_then(|m| m.database_props.as_ref());
    let locale = existing.as_ref().or(backup_props).map(|p| &p.locale);
    let scratch = Scratch::create(&client, &admin, &server, &scratch_name, locale)?;
    ui::info(format!(
        "loading {} into the scratch database {scratch_name}",
        source.file_name
    ));
    let transform = match args.table.as_slice() {
        [] => Transform::Whole,
        tables => Transform::Tables(TableFilter::new(tables)),
    };
    let loaded = load::load(
        &client,
        &scratch.conn(&conn),
        Input::Backup(&source, &sidecars),
        transform,
    );
    let loaded = match loaded {
        Ok(l) => l,
        Err(LoadError::Interrupted(f)) => return Err(f.into()),
        Err(e @ LoadError::File(_)) => {
            return Err(format_err!("refusing to restore: {e}"));
        }
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context("the restore failed; the target database was not touched"));
        }
    };
    if let Transform::Tables(f) = &loaded.transform {
        let missing = f.missing();
        if !missing.is_empty() {
            anyhow::bail!(
                "this backup has no table {}: see the table list with `cargo xtask db-restore FILE --dry-run`",
                missing.join(", ")
            );
        }
        if f.dropped_foreign_keys > 0 {
            ui::warn(format!(
                "{} foreign keys of the selected tables were not restored: they reference tables outside the selection",
                f.dropped_foreign_keys
            ));
        }
    }
    interrupt::check("the scratch database is dropped and the target was not touched")?;

    // 7. Swap: block and close other connections to the target, then rename both in one transaction.
    let props = load::props_for(&target, backup_props, existing.as_ref(), Skip::default());
    scratch.swap_in(&target, previous.as_deref(), &props)?;

    let mut kept = previous.clone();
    if let (Some(prev), true) = (&previous, args.drop_previous) {
        client
            .script(
                &admin,
                "DROP DATABASE :\"prev\" WITH (FORCE);",
                &[("prev", prev)],
            )
            .with_context(|| {
                format!("restored, but the previous database {prev} could not be dropped")
            })?;
        kept = None;
    }
    let rows: u64 = loaded.tables.values().sum();
    let secs = clock.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            json!({"status": "ok", "source": source.display(), "target": target, "host": where_,
                "previous": kept, "tables": loaded.tables, "rows": rows, "duration_seconds": (secs * 1000.0).round() / 1000.0})
        );
    } else if ui::verbosity() >= ui::Verbosity::Normal {
        println!(
            "restored {} into {target} at {where_}: {} tables, {rows} rows in {secs:.1}s",
            source.file_name,
            loaded.tables.len()
        );
        if let Some(prev) = &kept {
            println!(
                "the previous database is kept as {prev} (drop it with DROP DATABASE, or next time pass --drop-previous)"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Goes ahead, asks on the terminal, or refuses.
fn confirm(consent: Consent) -> anyhow::Result<()> {
    match consent {
        Consent::Proceed => Ok(()),
        Consent::Refuse(why) => Err(format_err!("{why}")),
        Consent::Ask(question) => {
            eprint!("{question}");
            let mut answer = String::new();
            io::stdin().lock().read_line(&mut answer)?;
            if matches!(answer.trim(), "y" | "Y" | "yes") {
                Ok(())
            } else {
                Err(Failure {
                    code: 1,
                    message: "not confirmed: nothing was changed".into(),
                }
                .into())
            }
        }
    }
}

fn print_plan(
    source: &Source,
    checked: &Checked,
    target: &str,
    where_: &str,
    server: &PgVersion,
    previous: Option<&str>,
    json: bool,
) {
    let scan = checked.scan();
    let rows: u64 = scan.tables.values().sum();
    let created = checked.meta.as_ref().map(|m| {
        m.finished_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    });
    if json {
        println!(
            "{}",
            json!({"dry_run": true, "source": source.display(), "target": target, "host": where_,
                "size_bytes": checked.report.compressed_bytes, "uncompressed_bytes": scan.bytes,
                "created_at": created,
                "pg_dump_version": scan.pg_dump_version, "server_version": server.text, "replaces": previous.is_some(),
                "previous_kept_as": previous, "tables": scan.tables, "rows": rows, "checksum_recorded": checked.checksum_recorded})
        );
        return;
    }
    println!("plan:");
    println!(
        "  source    {} ({}, {} of SQL)",
        source.display(),
        human::bytes(checked.report.compressed_bytes),
        human::bytes(scan.bytes)
    );
    if let (Some(m), Some(at)) = (&checked.meta, created) {
        println!(
            "  created   {at} by pg_dump {} from server {}",
            m.pg_dump_version, m.server_version
        );
    }
    println!(
        "  checks    checksum {}, gzip stream ok, SQL structure ok",
        if checked.checksum_recorded {
            "ok"
        } else {
            "not recorded"
        }
    );
    println!(
        "  target    {target} at {where_} (PostgreSQL {})",
        server.text
    );
    match previous {
        Some(prev) => println!("  replaces  the existing {target}, kept as {prev}"),
        None => println!("  creates   {target}"),
    }
    println!("  data      {} tables, {rows} rows", scan.tables.len());
    for (table, n) in &scan.tables {
        println!("            {table}: {n}");
    }
}
