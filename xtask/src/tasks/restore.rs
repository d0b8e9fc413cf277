//! `cargo xtask db-restore`: all or nothing. The backup is checked before any
//! database is touched, loaded into a scratch database, checked again (row
//! counts against the dump), and only then swapped in by renaming; the
//! replaced database is kept as `{db}_pre_restore_{timestamp}`. A failure or
//! Ctrl-C at any step drops the scratch database and leaves the target as it was.

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context as _, bail, format_err};
use serde_json::json;
use time::OffsetDateTime;
use time::macros::format_description;

use crate::archive;
use crate::config::{Connection, Settings};
use crate::flags::DbRestore;
use crate::pg::{self, Client, PgVersion};
use crate::sqlscan::SqlScanner;
use crate::store::LocalStore;
use crate::tablefilter::TableFilter;
use crate::tasks::Context;
use crate::tasks::verify::{self, Checked, Sidecars, Source, StreamError};
use crate::{Failure, ui};

/// PostgreSQL truncates identifiers to 63 bytes: names we make must fit.
const MAX_IDENT: usize = 63;

/// `{base}{suffix}`, with `base` cut (at a character boundary) so the whole fits.
pub fn derived_name(base: &str, suffix: &str) -> String {
    let mut cut = MAX_IDENT.saturating_sub(suffix.len()).min(base.len());
    while !base.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", &base[..cut])
}

/// Whether the dump (made by pg_dump `dump`) loads into `server`: a newer
/// pg_dump writes settings an older server rejects (`transaction_timeout`).
pub fn check_compat(dump: Option<&PgVersion>, server: &PgVersion) -> anyhow::Result<()> {
    match dump {
        Some(d) if d.major > server.major => bail!(
            "this dump was made by pg_dump {d} and cannot load into PostgreSQL {server} (a newer pg_dump writes settings an older server rejects): restore into a PostgreSQL {} server or newer",
            d.major
        ),
        _ => Ok(()),
    }
}

/// A database a dump is loaded into before anything else changes. Dropped
/// (with any connections) when it goes out of scope, unless swapped in.
pub struct Scratch<'a> {
    sh: &'a xshell::Shell,
    client: &'a Client,
    admin: &'a Connection,
    pub name: String,
    armed: bool,
}

impl<'a> Scratch<'a> {
    /// Creates the database; `like` is `encoding|collate|ctype` of the
    /// database it will replace (empty: the server's defaults).
    pub fn create(
        ctx: &'a Context,
        client: &'a Client,
        admin: &'a Connection,
        name: &str,
        like: &str,
    ) -> anyhow::Result<Scratch<'a>> {
        let mut create = String::from("CREATE DATABASE :\"db\" TEMPLATE template0");
        let mut vars: Vec<(&str, &str)> = vec![("db", name)];
        let parts: Vec<&str> = like.split('|').collect();
        if let [enc, collate, ctype] = parts.as_slice() {
            create.push_str(" ENCODING :'enc' LC_COLLATE :'collate' LC_CTYPE :'ctype'");
            vars.extend([("enc", *enc), ("collate", *collate), ("ctype", *ctype)]);
        }
        create.push(';');
        pg::script(&ctx.sh, client, admin, &create, &vars)
            .context("cannot create the scratch database")?;
        Ok(Scratch {
            sh: &ctx.sh,
            client,
            admin,
            name: name.to_string(),
            armed: true,
        })
    }

    /// Streams the dump in, checking it (checksum, gzip, structure, `.meta`)
    /// in the same single read, and the rows the server took (psql's `COPY n`
    /// tags) against the rows of each COPY block.
    /// With `tables`, only those tables (and what they depend on) are loaded.
    pub fn load_and_check(
        &self,
        conn: &Connection,
        source: &Source,
        sidecars: &Sidecars,
        tables: &[String],
    ) -> anyhow::Result<Loaded> {
        let scratch_conn = Connection {
            dbname: self.name.clone(),
            ..conn.clone()
        };
        load(source, sidecars, self.client, &scratch_conn, tables)
    }
}

impl Scratch<'_> {
    /// Swaps the loaded scratch database in as `target` (see [`swap_in`]); it is no longer dropped.
    pub fn swap_in(
        mut self,
        ctx: &Context,
        target: &str,
        previous: Option<&str>,
    ) -> anyhow::Result<()> {
        swap_in(ctx, self.client, self.admin, &self.name, target, previous)?;
        self.armed = false;
        Ok(())
    }
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        if self.armed {
            let dropped = pg::script(
                self.sh,
                self.client,
                self.admin,
                "DROP DATABASE IF EXISTS :\"db\" WITH (FORCE);",
                &[("db", &self.name)],
            );
            match dropped {
                Ok(_) => ui::detail(format!("dropped the scratch database {}", self.name)),
                Err(e) => ui::warn(format!(
                    "could not drop the scratch database {}: {e}",
                    self.name
                )),
            }
        }
    }
}

pub fn run(args: DbRestore, ctx: &Context) -> anyhow::Result<ExitCode> {
    ui::set_verbosity(args.common.dir.quiet, args.common.dir.verbose);
    if args.list {
        return crate::tasks::list::run(&args.common.dir, args.json, args.remote, ctx);
    }
    let settings = Settings::resolve(&args.common, &ctx.sources, &ctx.root)?;
    let store = LocalStore::new(&settings.backup_dir);
    // The route first: with the compose service, the database name may come from it.
    let route = pg::route(&ctx.sh, &settings)?;
    let conn = &route.conn.clone();
    let target = args
        .target_db
        .clone()
        .unwrap_or_else(|| conn.dbname.clone());

    // 1. Which backup: from the backup directory, or streamed from the off-site copy.
    let backups = crate::tasks::Backups::new(store.clone(), args.remote, ctx)?;
    let listing = backups.listing();
    let source = if args.latest {
        let kind = args.kind.map(Into::into);
        let latest = listing.latest(&conn.dbname, kind)?.ok_or_else(|| {
            let tier = kind.map(|k| format!("{k} ")).unwrap_or_default();
            format_err!(
                "there is no usable {tier}backup of database '{}' in {}: make one with `cargo xtask db-backup`",
                conn.dbname,
                listing.location()
            )
        })?;
        backups.source_of(&latest.set.name)
    } else {
        let file = args
            .file
            .as_deref()
            .ok_or_else(|| format_err!("say which backup to restore: a FILE or --latest"))?;
        backups.resolve(file)?
    };

    // 2. The file's companions now. The file itself is read once: a dry run
    // reads it here; a restore while loading it into the scratch database,
    // which the checks must pass before the target is touched.
    let refusing = |e: anyhow::Error| format_err!("refusing to restore: {e:#}");
    let sidecars = verify::sidecars(&source).map_err(refusing)?;
    let full = if args.dry_run {
        ui::info(format!("checking {}", source.file_name));
        Some(verify::check(&source).map_err(refusing)?)
    } else {
        None
    };

    // 3. The server, and whether the dump can load into it.
    let pg::Session {
        client,
        conn: admin,
        server,
    } = pg::Route {
        conn: conn.maintenance(),
        ..route
    }
    .connect(&ctx.sh, pg::Purpose::Load)?;
    let dump_version = full
        .as_ref()
        .and_then(|c| c.report.scan.pg_dump_version.clone())
        .or(sidecars.meta.as_ref().map(|m| m.pg_dump_version.clone()))
        .or_else(|| source.open().ok().and_then(archive::peek_pg_dump_version))
        .and_then(|v| PgVersion::parse(&v));
    check_compat(dump_version.as_ref(), &server)
        .map_err(|e| format_err!("refusing to restore: {e}"))?;
    let existing = database_locale(ctx, &client, &admin, &target)?;
    let exists = !existing.is_empty();

    // 4. Consent to replace.
    let where_ = conn.server_label();
    let consent = if exists && !args.yes && args.target_db.is_some() {
        Err(format_err!(
            "database '{target}' already exists at {where_}: --target-db replaces only with --yes"
        ))
    } else {
        consent(
            exists,
            args.yes,
            &target,
            &where_,
            conn.is_local(),
            &source.file_name,
            args.dry_run,
        )
    };
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
        consent?;
        ui::info("dry run: every check passed; nothing was changed");
        return Ok(ExitCode::SUCCESS);
    }
    consent?;

    // 5. Load into a scratch database with the target's encoding and locale,
    // 6. and check what loaded against what the dump holds.
    let clock = Instant::now();
    let scratch_name = derived_name(&target, &format!("_restore_{stamp}"));
    let scratch = Scratch::create(ctx, &client, &admin, &scratch_name, &existing)?;
    ui::info(format!(
        "loading {} into the scratch database {scratch_name}",
        source.file_name
    ));
    let loaded = scratch
        .load_and_check(conn, &source, &sidecars, &args.table)
        .context("the restore failed; the target database was not touched")?;

    // 7. Swap: block and close other connections to the target, then rename both in one transaction.
    scratch.swap_in(ctx, &target, previous.as_deref())?;

    let mut kept = previous.clone();
    if let (Some(prev), true) = (&previous, args.drop_previous) {
        pg::script(
            &ctx.sh,
            &client,
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
            json!({"status": "ok", "source": source.path.display().to_string(), "target": target, "host": where_,
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

/// `encoding|collate|ctype` of database `name`, empty when there is none:
/// what a scratch database replacing it is created with.
pub fn database_locale(
    ctx: &Context,
    client: &Client,
    admin: &Connection,
    name: &str,
) -> anyhow::Result<String> {
    Ok(pg::script(
        &ctx.sh,
        client,
        admin,
        "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database WHERE datname = :'db';",
        &[("db", name)],
    )?)
}

/// Renames `scratch` to `target`; an existing target becomes `previous`,
/// in one transaction after its other connections are closed. On failure
/// nothing changed.
pub fn swap_in(
    ctx: &Context,
    client: &Client,
    admin: &Connection,
    scratch_name: &str,
    target: &str,
    previous: Option<&str>,
) -> anyhow::Result<()> {
    let swap = match previous {
        Some(prev) => pg::script(
            &ctx.sh,
            client,
            admin,
            "ALTER DATABASE :\"target\" ALLOW_CONNECTIONS false;
             SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity WHERE datname = :'target' AND pid <> pg_backend_pid();
             BEGIN;
             ALTER DATABASE :\"target\" RENAME TO :\"prev\";
             ALTER DATABASE :\"scratch\" RENAME TO :\"target\";
             COMMIT;
             ALTER DATABASE :\"prev\" ALLOW_CONNECTIONS true;",
            &[("target", target), ("prev", prev), ("scratch", scratch_name)],
        ),
        None => pg::script(
            &ctx.sh,
            client,
            admin,
            "ALTER DATABASE :\"scratch\" RENAME TO :\"target\";",
            &[("scratch", scratch_name), ("target", target)],
        ),
    };
    if let Err(e) = swap {
        if previous.is_some() {
            // The rename is one transaction: the target kept its name; let it accept connections again.
            let _ = pg::script(
                &ctx.sh,
                client,
                admin,
                "ALTER DATABASE :\"target\" ALLOW_CONNECTIONS true;",
                &[("target", target)],
            );
        }
        return Err(
            anyhow::Error::new(e).context("the swap failed; the target database was not changed")
        );
    }
    Ok(())
}

/// Replacing a database needs consent: a `y` on a terminal, or `--yes`; a
/// host other than this machine always needs `--yes`.
pub fn consent(
    exists: bool,
    yes: bool,
    target: &str,
    where_: &str,
    local: bool,
    file: &str,
    dry_run: bool,
) -> anyhow::Result<()> {
    if !exists || yes {
        return Ok(());
    }
    if !local {
        bail!(
            "restoring would replace database '{target}' on {where_}, which is not this machine: pass --yes to confirm"
        );
    }
    if dry_run || !io::stdin().is_terminal() {
        bail!(
            "restoring would replace database '{target}' at {where_}: pass --yes to confirm (there is no terminal to ask)"
        );
    }
    eprint!(
        "Replace database '{target}' at {where_} with {file}? The current one is kept as a copy. [y/N] "
    );
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

fn print_plan(
    source: &Source,
    checked: &Checked,
    target: &str,
    where_: &str,
    server: &PgVersion,
    previous: Option<&str>,
    json: bool,
) {
    let scan = &checked.report.scan;
    let rows: u64 = scan.tables.values().sum();
    if json {
        println!(
            "{}",
            json!({"dry_run": true, "source": source.path.display().to_string(), "target": target, "host": where_,
                "size_bytes": checked.report.compressed_bytes, "uncompressed_bytes": scan.bytes,
                "created_at": checked.meta.as_ref().map(|m| m.finished_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()),
                "pg_dump_version": scan.pg_dump_version, "server_version": server.text, "replaces": previous.is_some(),
                "previous_kept_as": previous, "tables": scan.tables, "rows": rows, "checksum_recorded": checked.checksum_recorded})
        );
        return;
    }
    println!("plan:");
    println!(
        "  source    {} ({}, {} of SQL)",
        source.path.display(),
        ui::bytes(checked.report.compressed_bytes),
        ui::bytes(scan.bytes)
    );
    if let Some(m) = &checked.meta {
        let at = m
            .finished_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
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

/// Streams the dump into `psql` on the scratch database: decompression and
/// the checks in this process overlap the load in psql and the server.
/// Ctrl-C stops it.
/// A load that passed every check.
pub struct Loaded {
    pub checked: Checked,
    /// Rows per table that went into the database (all of the dump's, or the `--table` selection).
    pub tables: std::collections::BTreeMap<String, u64>,
}

fn load(
    source: &Source,
    sidecars: &Sidecars,
    client: &Client,
    conn: &Connection,
    tables: &[String],
) -> anyhow::Result<Loaded> {
    let interrupted = Arc::new(AtomicBool::new(false));
    let mut ids = Vec::new();
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        ids.push(signal_hook::flag::register(
            signal,
            Arc::clone(&interrupted),
        )?);
    }
    let result = load_inner(source, sidecars, client, conn, tables, &interrupted);
    for id in ids {
        signal_hook::low_level::unregister(id);
    }
    if interrupted.load(Ordering::SeqCst) {
        return Err(Failure {
            code: 130,
            message: "interrupted: the scratch database is dropped and the target was not touched"
                .into(),
        }
        .into());
    }
    result
}

fn load_inner(
    source: &Source,
    sidecars: &Sidecars,
    client: &Client,
    conn: &Connection,
    tables: &[String],
    interrupted: &AtomicBool,
) -> anyhow::Result<Loaded> {
    let PsqlLoad {
        mut child,
        stdin,
        errors,
        tags,
    } = PsqlLoad::spawn(client, conn)?;
    let mut stdin = stdin;
    let mut progress = ui::Progress::new("restoring");
    let mut total = 0u64;
    // `--table`: only the selection goes to psql, and a second scanner counts what went.
    let mut filter = None;
    if !tables.is_empty() {
        let mut f = TableFilter::new(tables);
        let file = source.open()?;
        f.prepare(io::BufReader::new(flate2::read::MultiGzDecoder::new(
            io::BufReader::new(file),
        )))
        .map_err(|e| format_err!("refusing to restore: {}: {e}", source.file_name))?;
        filter = Some(f);
    }
    let mut sent = SqlScanner::new();
    let mut selected = Vec::new();
    let mut streamed = verify::check_streaming(source, sidecars, |chunk| {
        if interrupted.load(Ordering::SeqCst) {
            return Err(io::Error::other("interrupted"));
        }
        let bytes = match filter.as_mut() {
            Some(f) => {
                selected.clear();
                f.feed(chunk, &mut selected);
                &selected[..]
            }
            None => chunk,
        };
        if filter.is_some() {
            sent.feed(bytes);
        }
        stdin.write_all(bytes)?;
        total += chunk.len() as u64;
        progress.update(total);
        Ok(())
    });
    if let (Ok(_), Some(f)) = (&streamed, filter.as_mut()) {
        selected.clear();
        f.finish(&mut selected);
        sent.feed(&selected);
        if let Err(e) = stdin.write_all(&selected) {
            streamed = Err(StreamError::Sink(e));
        }
    }
    progress.finish();
    drop(stdin);
    let sent = sent.finish();
    if let (Ok(_), Some(f)) = (&streamed, &filter) {
        let missing = f.missing();
        if !missing.is_empty() {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
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
    if streamed.is_err() {
        // Whatever psql has not run yet must not run: the file failed a check,
        // or we were interrupted. (A psql that failed by itself is gone already.)
        let _ = child.kill();
    }
    let status = child.wait()?;
    let stderr = errors.join().unwrap_or_default();
    let loaded = tags.join().unwrap_or_default();
    let psql_error = || {
        let first = stderr
            .lines()
            .find(|l| l.contains("ERROR") || l.contains("FATAL"))
            .or(stderr.lines().next())
            .unwrap_or("");
        let detail = first.trim().trim_start_matches("psql:").trim();
        format_err!(
            "loading the dump stopped at an error: {}",
            if detail.is_empty() {
                "psql failed"
            } else {
                detail
            }
        )
    };
    match streamed {
        Err(StreamError::File(e)) => Err(format_err!("refusing to restore: {e:#}")),
        Err(StreamError::Sink(e)) if !status.success() && !interrupted.load(Ordering::SeqCst) => {
            let _ = e;
            Err(psql_error())
        }
        Err(StreamError::Sink(e)) => Err(format_err!("streaming the dump into psql failed: {e}")),
        Ok(_) if !status.success() => Err(psql_error()),
        Ok(checked) => {
            // Without --table, what went to psql is the whole dump, already scanned once.
            let (copies, tables) = match filter {
                Some(_) => (sent.copies, sent.tables),
                None => (
                    checked.report.scan.copies.clone(),
                    checked.report.scan.tables.clone(),
                ),
            };
            if loaded != copies {
                bail!(
                    "the server took {} COPY blocks with {} rows, the dump has {} with {}",
                    loaded.len(),
                    loaded.iter().sum::<u64>(),
                    copies.len(),
                    copies.iter().sum::<u64>()
                );
            }
            Ok(Loaded { checked, tables })
        }
    }
}

/// The row counts of psql's `COPY n` command tags, in order.
/// `psql` running the script fed to `stdin` against `conn`, stopping at the
/// first error. Its stderr and the `COPY n` tags of its stdout (the server's
/// own row counts) are drained on their own threads: psql's output can
/// never block the load.
pub struct PsqlLoad {
    pub child: std::process::Child,
    pub stdin: std::process::ChildStdin,
    pub errors: std::thread::JoinHandle<String>,
    pub tags: std::thread::JoinHandle<Vec<u64>>,
}

impl PsqlLoad {
    pub fn spawn(client: &Client, conn: &Connection) -> anyhow::Result<PsqlLoad> {
        // Not quiet: the command tags on stdout are what the server took.
        let args = ["-X", "-w", "-v", "ON_ERROR_STOP=1"].map(std::ffi::OsString::from);
        let mut child = client
            .command("psql", &args, conn)
            .std()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|_| pg::PgError::ToolMissing {
                tool: "psql".into(),
            })?;
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let errors = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let stdout = child.stdout.take().expect("stdout is piped");
        let tags = std::thread::spawn(move || copy_tags(io::BufReader::new(stdout)));
        let stdin = child.stdin.take().expect("stdin is piped");
        Ok(PsqlLoad {
            child,
            stdin,
            errors,
            tags,
        })
    }
}

pub fn copy_tags(out: impl BufRead) -> Vec<u64> {
    out.split(b'\n')
        .map_while(Result::ok)
        .filter_map(|line| {
            std::str::from_utf8(&line)
                .ok()?
                .strip_prefix("COPY ")?
                .trim()
                .parse()
                .ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_fit_in_63_bytes() {
        assert_eq!(
            derived_name("app", "_restore_20261124T020000Z"),
            "app_restore_20261124T020000Z"
        );
        let long = "ä".repeat(40); // 80 bytes
        let n = derived_name(&long, "_pre_restore_20261124_020000");
        assert!(
            n.len() <= 63 && n.ends_with("_pre_restore_20261124_020000"),
            "{n}"
        );
    }

    #[test]
    fn compat_refuses_a_newer_pg_dump() {
        let v = |s| PgVersion::parse(s).unwrap();
        assert!(check_compat(Some(&v("15.8")), &v("17.2")).is_ok());
        assert!(check_compat(None, &v("15.2")).is_ok());
        let err = check_compat(Some(&v("17.6")), &v("15.18"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "this dump was made by pg_dump 17.6 and cannot load into PostgreSQL 15.18 (a newer pg_dump writes settings an older server rejects): restore into a PostgreSQL 17 server or newer"
        );
    }

    #[test]
    fn copy_tags_are_read_in_order() {
        let out = b"SET\nCREATE TABLE\nCOPY 3\n set_config \n------------\n \n(1 row)\n\nCOPY 0\nALTER TABLE\nCOPY 12\n";
        assert_eq!(copy_tags(&out[..]), vec![3, 0, 12]);
    }

    #[test]
    fn local_hosts() {
        let at = |host: &str| Connection {
            host: host.into(),
            ..Connection::local_default()
        };
        for h in [
            "localhost",
            "127.0.0.1",
            "::1",
            "/var/run/postgresql",
            "127.0.1.1",
        ] {
            assert!(at(h).is_local(), "{h}");
        }
        for h in ["db.example.com", "10.0.0.5", "prod"] {
            assert!(!at(h).is_local(), "{h}");
        }
        let service = Connection {
            service: Some("db".into()),
            ..at("prod")
        };
        assert!(service.is_local());
    }
}
