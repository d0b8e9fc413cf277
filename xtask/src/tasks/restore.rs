//! `cargo xtask db-restore`: all or nothing. The backup is checked before any
//! database is touched, loaded into a scratch database, checked again (row
//! counts against the dump), and only then swapped in by renaming; the
//! replaced database is kept as `{db}_pre_restore_{timestamp}`. A failure or
//! a signal at any step drops the scratch database and leaves the target as it was.

use std::io::{self, BufRead, IsTerminal};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, format_err};
use serde_json::json;
use time::OffsetDateTime;
use time::macros::format_description;

use crate::core::config::Connection;
use crate::core::dbprops::Skip;
use crate::core::dump::filter::TableFilter;
use crate::core::human;
use crate::core::meta::Content;
use crate::core::pitr::{self, ConfFor, Repository, StanzaInfo, Target};
use crate::core::plan::{self, Consent, Replace};
use crate::flags::DbRestore;
use crate::services::catalog::{self, Backups, Store};
use crate::services::fsutil::{LockError, RunLock};
use crate::services::interrupt;
use crate::services::load::{
    self, Checked, Input, LoadError, Scratch, Source, Transform, derived_name, free_derived_name,
};
use crate::services::pg::{self, PgVersion};
use crate::services::pitr::{DataLeftMixed, Pitr};
use crate::tasks::Context;
use crate::{Failure, ui};

pub(crate) fn run(args: DbRestore, ctx: &Context) -> anyhow::Result<ExitCode> {
    if args.to_time.is_some() || args.to_latest {
        return to_a_point(&args, ctx);
    }
    let settings = &ctx.settings;
    let backups = Backups::open(settings, args.remote)?;
    let store = backups.store();
    if args.list {
        return catalog::print_listing(store.as_ref(), args.json, None);
    }
    // The route first: with the compose service, the database name may come from it.
    let route = pg::route(settings)?;
    let skip = Skip {
        owner: args.roles.no_owner,
        acl: args.roles.no_acl,
    };
    // The keys of encrypted backups, read once (an identity file that is set must read).
    let access = load::Access::of(settings)?;
    if args.all {
        return restore_all(&args, &store, route, skip, &access);
    }
    let conn = route.conn.clone();
    let target = args
        .target_db
        .clone()
        .unwrap_or_else(|| conn.dbname.clone());
    plan::check_target(&target, &conn.maintenance().dbname).map_err(anyhow::Error::msg)?;

    // Which backup: from the backup directory, or streamed from the off-site copy.
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
    let session = route.maintenance().connect(pg::Purpose::Load)?;
    // Every check, and consent, before the globals or the database change.
    let globals = match args.with_globals {
        true => Some(globals_for(&store, &source)?),
        false => None,
    };
    let provided = match &globals {
        Some(g) => load_globals(&session, g, true, &access)?,
        None => Vec::new(),
    };
    let Some(prepared) = prepare(
        &args, &session, &conn, &source, &target, skip, &provided, &access,
    )?
    else {
        return Ok(ExitCode::SUCCESS);
    };
    if let Some(g) = &globals {
        load_globals(&session, g, false, &access)?;
    }
    restore_one(&session, prepared, &access)?.print(args.json);
    Ok(ExitCode::SUCCESS)
}

/// Every database of the newest complete `db-backup --all` run (globals
/// first with `--with-globals`), each all-or-nothing; a report per database.
fn restore_all(
    args: &DbRestore,
    store: &Arc<dyn Store>,
    route: pg::Route,
    skip: Skip,
    access: &load::Access,
) -> anyhow::Result<ExitCode> {
    let conn = route.conn.clone();
    let Some((run, sets)) = catalog::latest_run(store.as_ref(), args.source.as_deref())? else {
        anyhow::bail!(
            "there is no complete `db-backup --all` run in {}: make one with `cargo xtask db-backup --all`",
            store.location()
        );
    };
    ui::info(format!(
        "restoring the run of {} ({} databases)",
        run.id,
        run.databases.len()
    ));
    let session = route.maintenance().connect(pg::Purpose::Load)?;
    let globals = match args.with_globals {
        true => Some(
            sets.iter()
                .find(|l| {
                    l.meta
                        .as_ref()
                        .is_some_and(|m| m.content == Content::Globals)
                })
                .map(|l| Source::of(store.clone(), &l.set.name))
                .ok_or_else(|| format_err!("the run of {} has no globals backup", run.id))?,
        ),
        false => None,
    };
    let provided = match &globals {
        Some(g) => load_globals(&session, g, true, access)?,
        None => Vec::new(),
    };
    // Every database's checks and consent first: a refusal changes nothing.
    let mut plans = Vec::new();
    for db in &run.databases {
        if plan::check_target(db, &session.conn.dbname).is_err() {
            ui::info(format!(
                "{db}: skipped, the server's own database is never replaced (its backup restores elsewhere with `db-restore FILE --target-db NAME`)"
            ));
            continue;
        }
        let listed = sets
            .iter()
            .find(|l| {
                l.meta
                    .as_ref()
                    .is_some_and(|m| m.content == Content::Database && &m.database == db)
            })
            .expect("a complete run has every database");
        let source = Source::of(store.clone(), &listed.set.name);
        let conn = conn.with_db(db);
        let prepared = prepare(args, &session, &conn, &source, db, skip, &provided, access)
            .with_context(|| format!("database {db}"))?;
        plans.push((db, prepared));
    }
    if args.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(g) = &globals {
        load_globals(&session, g, false, access)?;
    }
    let mut results = Vec::new();
    let mut failed = Vec::new();
    for (db, prepared) in plans {
        let prepared = prepared.expect("not a dry run");
        match restore_one(&session, prepared, access) {
            Ok(r) => {
                if !args.json {
                    r.print(false);
                }
                results.push(r.json());
            }
            Err(e) => {
                ui::warn(format!("{db}: {e:#}"));
                results.push(json!({"status": "failed", "target": db, "error": format!("{e:#}")}));
                failed.push(db.clone());
            }
        }
    }
    if args.json {
        println!("{}", json!({"run": run.id, "databases": results}));
    }
    if !failed.is_empty() {
        return Err(format_err!(
            "{} of {} databases were not restored: {} (each of the others is restored whole)",
            failed.len(),
            run.databases.len(),
            failed.join(", ")
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// The newest globals backup of the server `source` came from.
fn globals_for(store: &Arc<dyn Store>, source: &Source) -> anyhow::Result<Source> {
    let server = source
        .store
        .read_meta(source.name.as_ref().ok_or_else(|| {
            format_err!("--with-globals needs a backup this tool made (its .meta names its server)")
        })?)
        .ok()
        .and_then(|m| m.source);
    let globals = catalog::latest_globals(store.as_ref(), server.as_ref())?.ok_or_else(|| {
        format_err!(
            "there is no globals backup in {}: make one with `cargo xtask db-backup --globals` (or --all)",
            store.location()
        )
    })?;
    Ok(Source::of(store.clone(), &globals.set.name))
}

/// Creates the roles and tablespaces a globals backup has and the server
/// lacks (with `dry_run`, only says which); returns the roles.
fn load_globals(
    session: &pg::Session,
    source: &Source,
    dry_run: bool,
    access: &load::Access,
) -> anyhow::Result<Vec<String>> {
    load::check_keys(source, access)?;
    let created = load::load_globals(&session.client, &session.conn, source, dry_run, access)?;
    let what: Vec<String> = created
        .roles
        .iter()
        .map(|r| format!("role {r}"))
        .chain(
            created
                .tablespaces
                .iter()
                .map(|t| format!("tablespace {t}")),
        )
        .collect();
    let verb = if dry_run { "would create" } else { "created" };
    if what.is_empty() {
        ui::info(format!(
            "{}: every role and tablespace exists already; none is changed",
            source.file_name
        ));
    } else {
        ui::info(format!(
            "{}: {verb} {} (existing roles are never changed)",
            source.file_name,
            what.join(", ")
        ));
    }
    Ok(created.roles)
}

/// What one restore did.
struct Restored {
    source: String,
    file: String,
    target: String,
    host: String,
    previous: Option<String>,
    tables: std::collections::BTreeMap<String, u64>,
    secs: f64,
}

impl Restored {
    fn json(&self) -> serde_json::Value {
        let rows: u64 = self.tables.values().sum();
        json!({"status": "ok", "source": self.source, "target": self.target, "host": self.host,
            "previous": self.previous, "tables": self.tables, "rows": rows,
            "duration_seconds": (self.secs * 1000.0).round() / 1000.0})
    }

    fn print(&self, json: bool) {
        if json {
            println!("{}", self.json());
        } else if ui::verbosity() >= ui::Verbosity::Normal {
            let rows: u64 = self.tables.values().sum();
            println!(
                "restored {} into {} at {}: {} tables, {rows} rows in {:.1}s",
                self.file,
                self.target,
                self.host,
                self.tables.len(),
                self.secs
            );
            if let Some(prev) = &self.previous {
                println!(
                    "the previous database is kept as {prev} (drop it with DROP DATABASE, or next time pass --drop-previous)"
                );
            }
        }
    }
}

/// A restore that passed its checks and has consent.
struct Prepared<'a> {
    args: &'a DbRestore,
    conn: Connection,
    source: Source,
    sidecars: load::Sidecars,
    target: String,
    existing: Option<crate::core::dbprops::DatabaseProps>,
    previous: Option<String>,
    stamp: String,
    skip: Skip,
}

/// Everything that can refuse a restore, before anything changes: the
/// backup's companions (the whole file with `--dry-run`), versions, the roles
/// it needs (`provided`: those the globals will create), consent. `None`
/// for a dry run, whose plan is printed.
#[allow(clippy::too_many_arguments)]
fn prepare<'a>(
    args: &'a DbRestore,
    session: &pg::Session,
    conn: &Connection,
    source: &Source,
    target: &str,
    skip: Skip,
    provided: &[String],
    access: &load::Access,
) -> anyhow::Result<Option<Prepared<'a>>> {
    let pg::Session {
        client,
        conn: admin,
        server,
    } = session;
    plan::check_target(target, &admin.dbname).map_err(anyhow::Error::msg)?;
    // The file's companions now. The file itself is read once: a dry run
    // reads it here; a restore while loading it into the scratch database,
    // which the checks must pass before the target is touched.
    let refusing = |e: &dyn std::fmt::Display| format_err!("refusing to restore: {e}");
    let sidecars = load::sidecars(source).map_err(|e| refusing(&format!("{e:#}")))?;
    // An encrypted backup the keys cannot open is refused before anything exists.
    load::check_keys(source, access).map_err(|e| refusing(&format!("{e:#}")))?;
    if sidecars
        .meta
        .as_ref()
        .is_some_and(|m| m.content == Content::Globals)
    {
        return Err(refusing(&format!(
            "{} holds a server's roles and tablespaces, not a database: load it with --with-globals",
            source.file_name
        )));
    }
    let full = if args.dry_run {
        ui::info(format!("checking {}", source.file_name));
        Some(load::check(source, &sidecars, Some(client), access).map_err(|e| refusing(&e))?)
    } else {
        None
    };

    // Whether the dump can load into this server: its version, its roles.
    let dump_version = full
        .as_ref()
        .and_then(Checked::pg_dump_version)
        .or_else(|| load::dump_version(source, &sidecars, access));
    pg::check_load_compat(dump_version.as_ref(), server).map_err(|e| refusing(&e))?;
    let mut missing = load::missing_roles(client, admin, sidecars.meta.as_ref(), skip)?;
    missing.retain(|r| !provided.contains(r));
    if !missing.is_empty() {
        return Err(refusing(&format!(
            "it needs roles {} does not have: {}; create them from the globals backup first (--with-globals), or load without roles (--no-owner --no-acl)",
            conn.server_label(),
            missing.join(", ")
        )));
    }
    let existing = pg::database_props(client, admin, server, target)?;
    let exists = existing.is_some();

    // Consent to replace.
    let where_ = conn.server_label();
    let consent = plan::consent(Replace {
        target,
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
    let previous = match exists {
        // A second restore in the same second must not collide with the first's.
        true => Some(free_derived_name(
            target,
            &format!("_pre_restore_{stamp}"),
            &client.list(admin, "SELECT datname FROM pg_database")?,
        )),
        false => None,
    };
    if let Some(checked) = &full {
        print_plan(
            source,
            checked,
            target,
            &where_,
            server,
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
        return Ok(None);
    }
    confirm(consent)?;
    Ok(Some(Prepared {
        args,
        conn: conn.clone(),
        source: source.clone(),
        sidecars,
        target: target.to_string(),
        existing,
        previous,
        stamp,
        skip,
    }))
}

/// One prepared restore, all or nothing.
fn restore_one(
    session: &pg::Session,
    p: Prepared<'_>,
    access: &load::Access,
) -> anyhow::Result<Restored> {
    let pg::Session {
        client,
        conn: admin,
        server,
    } = session;
    let Prepared {
        args,
        conn,
        source,
        sidecars,
        target,
        existing,
        previous,
        stamp,
        skip,
    } = p;
    let (conn, source, target) = (&conn, &source, target.as_str());

    // Load into a scratch database with the target's encoding and locale,
    // and check what loaded against what the dump holds.
    interrupt::watch()?;
    let clock = Instant::now();
    let scratch_name = derived_name(target, &format!("_restore_{stamp}"));
    load::drop_leftovers(client, admin);
    let backup_props = sidecars
        .meta
        .as_ref()
        .and_then(|m| m.database_props.as_ref());
    let locale = existing.as_ref().or(backup_props).map(|p| &p.locale);
    let scratch = Scratch::create(client, admin, server, &scratch_name, locale)?;
    ui::info(format!(
        "loading {} into the scratch database {scratch_name}",
        source.file_name
    ));
    let transform = match args.table.as_slice() {
        [] => Transform::Whole,
        tables => Transform::Tables(TableFilter::new(tables)),
    };
    let loaded = load::load(
        client,
        &scratch.conn(conn),
        Input::Backup(source, &sidecars),
        transform,
        skip,
        access,
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

    // Swap: block and close other connections to the target, then rename both in one transaction.
    let props = load::props_for(target, backup_props, existing.as_ref(), skip);
    scratch.swap_in(target, previous.as_deref(), &props)?;

    let mut kept = previous.clone();
    if let (Some(prev), true) = (&previous, args.drop_previous) {
        client
            .script(
                admin,
                "DROP DATABASE :\"prev\" WITH (FORCE);",
                &[("prev", prev)],
            )
            .with_context(|| {
                format!("restored, but the previous database {prev} could not be dropped")
            })?;
        kept = None;
    }
    Ok(Restored {
        source: source.display(),
        file: source.file_name.clone(),
        target: target.to_string(),
        host: conn.server_label(),
        previous: kept,
        tables: loaded.tables,
        secs: clock.elapsed().as_secs_f64(),
    })
}

/// `--to-time` / `--to-latest`: the compose service's whole server,
/// recovered with pgBackRest to a moment, all-or-nothing.
fn to_a_point(args: &DbRestore, ctx: &Context) -> anyhow::Result<ExitCode> {
    let engine = Pitr::connect(&ctx.settings)?;
    let service = engine.service().to_string();
    // One restore at a time, from before anything is read: a second would
    // remove the first's directory, or decide on the state the first replaces.
    std::fs::create_dir_all(&ctx.settings.backup_dir)
        .with_context(|| format!("creating {}", ctx.settings.backup_dir.display()))?;
    let holder = format!(
        "db-restore --to-time/--to-latest, pid {}",
        std::process::id()
    );
    let _lock = match RunLock::acquire(
        &ctx.settings.backup_dir,
        &format!("pitr-{}", engine.settings.stanza),
        &holder,
    ) {
        Ok(lock) => lock,
        Err(LockError::Held { holder }) => {
            return Err(format_err!(
                "another restore of stanza '{}' is running ({holder}): wait for it; nothing was changed",
                engine.settings.stanza
            ));
        }
        Err(LockError::Io(e)) => {
            return Err(anyhow::Error::new(e).context("taking the restore's lock in BACKUP_DIR"));
        }
    };
    let not_enabled = || {
        format_err!(
            "point-in-time recovery is not enabled for the compose service '{service}': run `cargo xtask db-pitr enable`, then `cargo xtask db-backup --physical`; nothing was changed"
        )
    };
    // The machine was lost with both volumes; the backups are in the
    // bucket. The configuration is written again from the settings (and
    // tried on the bucket first), so the restore can read them.
    let wrote_conf =
        matches!(engine.settings.repository, Repository::S3(_)) && !engine.has_conf()?;
    if wrote_conf {
        engine.require_repository_volume()?;
        ui::info(format!(
            "the service has no pgBackRest configuration: writing it for {} from the settings",
            engine.settings.repository.describe()
        ));
        engine.write_conf(None, ConfFor::Restore)?;
    }
    let result = engine
        .info()
        .and_then(|info| info.ok_or_else(not_enabled))
        .and_then(|info| recover(&engine, &info, args, &service));
    // A configuration written for this restore is not left behind by one
    // that did not happen ("nothing was changed" holds): the next attempt
    // writes it again from the settings. Kept when the data is left half
    // exchanged: put in place by hand, the restored server archives with it.
    if let Err(e) = &result
        && wrote_conf
        && e.downcast_ref::<DataLeftMixed>().is_none()
    {
        engine.remove_conf();
    }
    result
}

/// The restore to a point, once the stanza's information is read.
fn recover(
    engine: &Pitr,
    info: &StanzaInfo,
    args: &DbRestore,
    service: &str,
) -> anyhow::Result<ExitCode> {
    let spaces = engine.tablespaces()?;
    if !spaces.is_empty() {
        return Err(format_err!(
            "the server has tablespaces outside its data directory ({}): a restore beside the running server would write over them; nothing was changed",
            spaces.join(", ")
        ));
    }
    let target = match &args.to_time {
        Some(text) => engine.parse_time(text)?,
        None => Target::Latest,
    };
    pitr::check_covered(info, &target, engine.now()?)
        .map_err(|why| format_err!("{why}; nothing was changed"))?;
    // When the service's data was lost and it started afresh, the running
    // server is not the one backed up: the backed-up one replaces it, to
    // what the archive holds. Else the restore follows the running server's
    // timeline, from a backup on its history.
    let running = engine.system_identifier()?;
    let same_server = info.system_id.is_none_or(|id| id == running);
    // A server that started afresh has no timeline of the backups': the
    // archive's newest one is followed.
    let (timeline, history) = if same_server {
        engine.timeline(info)?
    } else {
        ui::warn(format!(
            "the running server (system identifier {running}) is not the one the physical backups are of ({}): it is replaced by the backed-up server",
            info.system_id.unwrap_or_default()
        ));
        let tli = info.newest_timeline().unwrap_or(1);
        (tli, engine.history(tli, info)?)
    };
    let set = pitr::choose_set(&info.backups, timeline, &history, &target)
        .map_err(|why| format_err!("{why}; nothing was changed"))?;
    confirm(pitr::consent(
        &target,
        service,
        args.yes,
        io::stdin().is_terminal(),
    ))?;
    interrupt::watch()?;
    // Everything committed until now goes to the archive first. A time the
    // archive already covers can do without (archiving off or failing); the
    // latest state cannot.
    let archived = if !same_server {
        None
    } else {
        match engine.archive_now() {
            Ok(a) => Some(a),
            Err(e) if matches!(target, Target::Latest) => return Err(e),
            Err(e) => {
                ui::warn(format!(
                    "{e:#}; restoring to the time from what the archive already holds"
                ));
                None
            }
        }
    };
    let stamp = OffsetDateTime::now_utc().format(format_description!(
        "[year][month][day]_[hour][minute][second]"
    ))?;
    // The restored copy, its WAL, and room to spare.
    let need = set.size + set.size / 10 + (512 << 20);
    let restored = engine.restore(
        &target,
        archived.as_ref(),
        (&set.label, timeline),
        need,
        &stamp,
    )?;
    if args.json {
        println!(
            "{}",
            json!({"service": service, "target": match &target { Target::Time { text, .. } => text.as_str(), Target::Latest => "latest" },
                "target_utc": match &target { Target::Time { utc, .. } => Some(utc.as_str()), Target::Latest => None },
                "from_backup": set.label, "timeline": timeline,
                "set_aside": restored.set_aside, "secs": restored.secs, "stanza": engine.settings.stanza})
        );
    }
    ui::info(format!(
        "restored the compose service '{service}' to {} in {:.1} s; the previous data is set aside in {} on its data volume (remove it with `{} exec {service} rm -rf {}` once you no longer need it)",
        target.describe(),
        restored.secs,
        restored.set_aside,
        engine.compose_name(),
        restored.set_aside
    ));
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
        "  checks    checksum {}, compressed stream ok, SQL structure ok",
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
