//! `cargo xtask db-clone`: prod-like data in the developer's own database,
//! without the personal data. The source is a named environment, a
//! connection URL, or a backup (a file, `latest`, `s3:latest`); the target
//! the development database (the compose service, or `POSTGRES_*`).
//!
//! Safety first: the target must be local (unless `--allow-remote-target`)
//! and never the source; from anything but a database on this machine the
//! clone needs masking rules (or an explicit `--no-mask`), and the rules are
//! checked against the source's tables before anything is written. The data
//! streams source → masking → target with no temporary file, through the
//! same load as `db-restore`, into a scratch database swapped in only when
//! every check passed. The replaced database is kept as
//! `{db}_pre_clone_{timestamp}`; older ones of the same database go.

use std::collections::BTreeMap;
use std::io::{self, IsTerminal};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, bail, format_err};
use serde_json::json;
use time::OffsetDateTime;
use time::macros::format_description;

use crate::core::config::{Connection, Secret, Settings};
use crate::core::dbprops::Skip;
use crate::core::dump::TableName;
use crate::core::dump::mask::{Rewriter, Rules};
use crate::core::environments;
use crate::core::meta::Content;
use crate::core::plan::{self, Consent, Replace};
use crate::core::subset::{self, Subset};
use crate::flags::DbClone;
use crate::services::catalog::Backups;
use crate::services::interrupt;
use crate::services::load::{self, Input, LoadError, Scratch, Source, Transform, derived_name};
use crate::services::pg::{self, Client, DumpOptions, Route};
use crate::services::snapshot::Snapshot;
use crate::tasks::Context;
use crate::{Failure, ui};

const MASKING_FILE: &str = "xtask/masking.toml";

/// Where the data comes from.
enum From {
    /// A database, its label, and whether it is this machine's own (a URL to
    /// a local server; never a named environment).
    Live(Connection, String, bool),
    Backup(Source),
}

impl From {
    fn label(&self) -> String {
        match self {
            From::Live(_, label, _) => label.clone(),
            From::Backup(s) => s.file_name.clone(),
        }
    }
}

fn resolve_from(args: &DbClone, settings: &Settings) -> anyhow::Result<From> {
    let from = args.from.as_str();
    let lower = from.to_ascii_lowercase();
    if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        let conn = Connection::from_url(from).map_err(|e| format_err!("--from: {e}"))?;
        let label = format!("{}:{}/{}", conn.host, conn.port, conn.dbname);
        let local = conn.is_local();
        return Ok(From::Live(conn, label, local));
    }
    // `latest` means the backups of POSTGRES_DB (or --dbname), not of --to.
    let db = &settings.connection.dbname;
    if from == "latest" || from == "s3:latest" {
        let backups = Backups::open(settings, from == "s3:latest")?;
        let store = backups.store();
        let latest = load::latest(&store, db, None, args.source.as_deref())?;
        return Ok(From::Backup(latest.ok_or_else(|| {
            format_err!(
                "--from {from}: there is no usable backup of database '{db}' in {} (another database: --dbname)",
                store.location()
            )
        })?));
    }
    if crate::core::format::Layout::split(from.trim_end_matches('/')).is_some()
        || std::path::Path::new(from).is_file()
    {
        let backups = Backups::open(settings, false)?;
        return Ok(From::Backup(Source::resolve(
            backups.store(),
            &backups.local,
            from,
        )?));
    }
    let text = std::fs::read_to_string(settings.root.join(environments::FILE)).map_err(|_| {
        format_err!(
            "--from is not a URL, a backup or `latest`, and there is no {} to name environments in",
            environments::FILE
        )
    })?;
    let envs =
        environments::parse(&text).map_err(|e| format_err!("{}: {e}", environments::FILE))?;
    let env = envs.get(from).ok_or_else(|| {
        format_err!(
            "no environment '{from}' in {} (it has: {})",
            environments::FILE,
            envs.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })?;
    let password = match &env.password_env {
        Some(var) => Some(Secret::new(settings.sources.get(var).map(|(v, _)| v).ok_or_else(|| {
            format_err!("environment '{from}' takes its password from {var}, which is not set: set it (or use ~/.pgpass and drop password_env)")
        })?)),
        None => None,
    };
    Ok(From::Live(
        Connection {
            host: env.host.clone(),
            port: env.port,
            dbname: env.dbname.clone(),
            user: env.user.clone(),
            password,
            sslmode: env.sslmode.clone(),
            service: None,
            connect_timeout: 10,
        },
        format!(
            "environment '{from}' ({}:{}/{})",
            env.host, env.port, env.dbname
        ),
        false,
    ))
}

/// Both local names of this machine count as one host.
fn same_server(a: &Connection, b: &Connection) -> bool {
    let host = |c: &Connection| {
        if c.is_local() && c.service.is_none() {
            "local".to_string()
        } else {
            c.host.clone()
        }
    };
    b.service.is_none() && host(a) == host(b) && a.port == b.port && a.dbname == b.dbname
}

/// The masking rules and their key. Fail closed: no rules from anything but
/// a database on this machine is refused unless `--no-mask` says so; a
/// rules file that cannot be read or parsed is an error, never "no rules".
fn masking(
    args: &DbClone,
    settings: &Settings,
    from: &From,
) -> anyhow::Result<(Rules, Option<Secret>)> {
    if args.no_mask {
        return Ok((Rules::default(), None));
    }
    let path = args
        .mask
        .clone()
        .unwrap_or_else(|| settings.root.join(MASKING_FILE));
    let rules = match std::fs::read_to_string(&path) {
        Ok(text) => Rules::parse_toml(&text).map_err(|e| format_err!("{}: {e}", path.display()))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound && args.mask.is_none() => {
            let local = matches!(from, From::Live(_, _, true));
            if !local {
                bail!(
                    "cloning from {} needs masking rules, and there is no {MASKING_FILE}: create it (see xtask/masking.toml.example), or pass --no-mask to copy every column as it is",
                    from.label()
                );
            }
            Rules::default()
        }
        Err(e) => bail!("cannot read the masking rules {}: {e}", path.display()),
    };
    let salt = if rules.needs_salt() {
        Some(salt(settings)?)
    } else {
        None
    };
    Ok((rules, salt))
}

/// BACKUP_MASK_SALT, or the first line of the file BACKUP_MASK_SALT_FILE names.
fn salt(settings: &Settings) -> anyhow::Result<Secret> {
    if let Some(salt) = &settings.mask_salt {
        return Ok(salt.clone());
    }
    let Some(file) = &settings.mask_salt_file else {
        bail!(
            "the masking rules make fakes, which need a secret key: set BACKUP_MASK_SALT (or BACKUP_MASK_SALT_FILE, a file outside the repository)"
        );
    };
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("BACKUP_MASK_SALT_FILE: cannot read {}", file.display()))?;
    let salt = text.lines().next().unwrap_or("").trim();
    if salt.is_empty() {
        bail!("BACKUP_MASK_SALT_FILE: {} is empty", file.display());
    }
    Ok(Secret::new(salt))
}

/// The source's tables and columns, for checking the rules before writing.
fn source_schema(
    from: &From,
    live: Option<&pg::Session>,
    client: Option<&pg::Client>,
    access: &load::Access,
) -> anyhow::Result<BTreeMap<TableName, Vec<String>>> {
    let mut schema: BTreeMap<TableName, Vec<String>> = BTreeMap::new();
    match (from, live) {
        (From::Live(..), Some(session)) => {
            let out = session.client.script(
                &session.conn,
                "SELECT table_schema, table_name, column_name FROM information_schema.columns
                 WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2, ordinal_position;",
                &[],
            )?;
            for line in out.lines() {
                let parts: Vec<&str> = line.splitn(3, '|').collect();
                if let [s, t, c] = parts.as_slice() {
                    schema
                        .entry(TableName::new(s, t))
                        .or_default()
                        .push(c.to_string());
                }
            }
        }
        (From::Backup(source), _) => {
            // One read of the dump for its data blocks' headers (every table has one).
            let rules = Rules::default();
            let mut seen = Rewriter::new(&rules, &[], None);
            load::visit(source, client, access, &mut seen, |s| {
                s.out.clear();
                Ok(())
            })
            .map_err(|e| format_err!("{e}"))?;
            schema = seen.schema();
        }
        (From::Live(..), None) => unreachable!("a live source has a session"),
    }
    Ok(schema)
}

pub(crate) fn run(args: DbClone, ctx: &Context) -> anyhow::Result<ExitCode> {
    let settings = &ctx.settings;
    let clock = Instant::now();

    // 1. The target: the developer's own database, never somewhere else by accident.
    let route = pg::route(settings)?;
    let mut target_conn = route.conn.clone();
    if let Some(to) = &args.to {
        target_conn.dbname = to.clone();
    }
    if !target_conn.is_local() && !args.allow_remote_target {
        bail!(
            "the target {} is not on this machine: db-clone writes only to a local development database; pass --allow-remote-target if you mean it",
            target_conn.display_target()
        );
    }
    let target = target_conn.dbname.clone();
    plan::check_target(&target, &target_conn.maintenance().dbname).map_err(anyhow::Error::msg)?;

    // 2. The source, and that it is not the target.
    let from = resolve_from(&args, settings)?;
    // The keys of an encrypted backup (an identity file that is set must
    // read), and a backup they cannot open refused before anything else.
    let access = load::Access::of(settings)?;
    if let From::Backup(source) = &from {
        load::check_keys(source, &access)?;
    }
    if let From::Live(src, ..) = &from
        && same_server(src, &target_conn)
    {
        bail!(
            "the source and the target are the same database ({}): db-clone never writes to its source; pick another --to",
            target_conn.display_target()
        );
    }
    if args.schema_only && matches!(from, From::Backup(_)) {
        bail!(
            "--schema-only applies to a live source; from a backup, leave data out with --exclude-table-data '*'"
        );
    }

    let skip = Skip {
        owner: args.roles.no_owner,
        acl: args.roles.no_acl,
    };
    // 3. The masking rules, checked against the source before anything is written.
    let (rules, salt) = masking(&args, settings, &from)?;
    let slice = subset_rules(&args, &rules)?;
    if args.dry_run && slice.is_empty() {
        bail!(
            "--dry-run shows what a subset keeps: add --subset or --subset-fraction (or a [subset] section in the masking rules)"
        );
    }
    if args.schema_only && !slice.is_empty() {
        bail!(
            "--schema-only copies no rows, and the masking rules' [subset] slices them: pass --no-subset with --schema-only"
        );
    }
    let live = match &from {
        From::Live(conn, ..) => Some(
            Route {
                client: Client::find(None)?,
                conn: conn.clone(),
            }
            .connect(pg::Purpose::Dump)?,
        ),
        From::Backup(_) => None,
    };
    if let Some(session) = &live {
        session.client.check_dump_compat(&session.server)?;
    }
    // A dry run of a live slice: decided, shown, nothing else.
    if args.dry_run
        && let Some(session) = &live
    {
        let (_, decided) = decide(&session.client, &session.conn, &slice, &from.label(), true)?;
        return dry_run(&args, &from.label(), &decided);
    }
    if !rules.columns.is_empty() {
        let schema = source_schema(&from, live.as_ref(), Some(&route.client), &access)?;
        let missing = rules.missing(&schema);
        if !missing.is_empty() {
            bail!(
                "the masking rules name {} the source does not have: fix the rules; nothing was written",
                missing.join(", ")
            );
        }
    }

    // 4. Connect to the target's server: can the dump load there; consent to replace.
    let pg::Session {
        client,
        conn: admin,
        server,
    } = Route {
        conn: target_conn.maintenance(),
        ..route
    }
    .connect(pg::Purpose::Load)?;
    let sidecars = match &from {
        From::Backup(source) => Some(load::sidecars(source)?),
        From::Live(..) => None,
    };
    let dump_version = match (&from, &live, &sidecars) {
        (From::Backup(source), _, Some(sidecars)) => load::dump_version(source, sidecars, &access),
        (_, Some(session), _) => Some(session.client.version.clone()),
        _ => None,
    };
    pg::check_load_compat(dump_version.as_ref(), &server)?;
    let meta = sidecars.as_ref().and_then(|s| s.meta.as_ref());
    if meta.is_some_and(|m| m.content == Content::Globals) {
        bail!(
            "{source_label} holds a server's roles and tablespaces, not a database: restore them with `db-restore --with-globals`",
            source_label = from.label()
        );
    }
    let missing = load::missing_roles(&client, &admin, meta, skip)?;
    if !missing.is_empty() {
        bail!(
            "refusing to clone: the backup needs roles {} does not have: {}; load without them (--no-owner --no-acl), or create them with `db-restore --with-globals`",
            target_conn.server_label(),
            missing.join(", ")
        );
    }
    let existing = pg::database_props(&client, &admin, &server, &target)?;
    let exists = existing.is_some();
    let where_ = target_conn.server_label();
    let source_label = from.label();
    let consent = if args.dry_run {
        Consent::Proceed
    } else {
        plan::consent(Replace {
            target: &target,
            server: &where_,
            source: &source_label,
            exists,
            explicit_target: false,
            yes: args.yes,
            local: true,
            interactive: io::stdin().is_terminal(),
        })
    };
    match consent {
        Consent::Proceed => {}
        Consent::Refuse(why) => bail!("{why}"),
        Consent::Ask(question) => {
            eprint!("{question}");
            let mut answer = String::new();
            io::BufRead::read_line(&mut io::stdin().lock(), &mut answer)?;
            if !matches!(answer.trim(), "y" | "Y" | "yes") {
                return Err(Failure {
                    code: 1,
                    message: "not confirmed: nothing was changed".into(),
                }
                .into());
            }
        }
    }
    let stamp = OffsetDateTime::now_utc().format(format_description!(
        "[year][month][day]_[hour][minute][second]"
    ))?;
    let previous = exists.then(|| derived_name(&target, &format!("_pre_clone_{stamp}")));

    // 5. Stream into a scratch database, masking on the way.
    interrupt::watch()?;
    let scratch_name = derived_name(&target, &format!("_clone_{stamp}"));
    load::drop_leftovers(&client, &admin);
    let backup_props = sidecars
        .as_ref()
        .and_then(|s| s.meta.as_ref())
        .and_then(|m| m.database_props.as_ref());
    let locale = existing.as_ref().or(backup_props).map(|p| &p.locale);
    // A slice of a live source: decided at one exported snapshot, which the
    // dump below reads at too (after consent: the snapshot holds back the
    // source's vacuum while it is open).
    let live_slice = match &live {
        Some(session) if !slice.is_empty() => Some(decide(
            &session.client,
            &session.conn,
            &slice,
            &source_label,
            false,
        )?),
        _ => None,
    };
    // A slice of a backup: the backup is loaded, masked, into a staging
    // database on this server (dropped on every path), and sliced from there
    // as from a live source. Conditions see the masked values.
    let mut staging = None;
    let staged_slice = match (&from, &sidecars) {
        (From::Backup(source), Some(sidecars)) if !slice.is_empty() => {
            let name = derived_name(&target, &format!("_subset_{stamp}"));
            let db = Scratch::create(&client, &admin, &server, &name, locale)?;
            let conn = db.conn(&target_conn);
            ui::info(format!(
                "loading {source_label}, masked, into the staging database {name} to slice it"
            ));
            let rewriter = Rewriter::new(&rules, &args.exclude_table_data, salt.as_ref());
            match load::load(
                &client,
                &conn,
                Input::Backup(source, sidecars),
                Transform::Mask(Box::new(rewriter)),
                skip,
                &access,
            ) {
                Ok(_) => {}
                Err(LoadError::Interrupted(f)) => return Err(f.into()),
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context("the clone failed; the target database was not touched"));
                }
            }
            staging = Some((db, conn));
            let (_, conn) = staging.as_ref().expect("just set");
            Some(decide(&client, conn, &slice, &source_label, args.dry_run)?)
        }
        _ => None,
    };
    if let (true, Some((_, decided))) = (args.dry_run, &staged_slice) {
        return dry_run(&args, &source_label, decided);
    }
    let sliced = live_slice.as_ref().or(staged_slice.as_ref());
    let scratch = Scratch::create(&client, &admin, &server, &scratch_name, locale)?;
    ui::info(format!("cloning {source_label} into {target} at {where_}"));
    let input = match (&from, &live, &sidecars, &staging, sliced) {
        (From::Backup(_), _, _, Some((_, conn)), Some((snapshot, _))) => Input::Live {
            client: &client,
            conn,
            opts: DumpOptions {
                snapshot: Some(snapshot.id.clone()),
                ..DumpOptions::default()
            },
        },
        (From::Backup(source), _, Some(sidecars), _, _) => Input::Backup(source, sidecars),
        (From::Live(..), Some(session), _, _, _) => Input::Live {
            client: &session.client,
            conn: &session.conn,
            opts: DumpOptions {
                schema_only: args.schema_only,
                snapshot: sliced.map(|(snapshot, _)| snapshot.id.clone()),
                ..DumpOptions::default()
            },
        },
        _ => unreachable!("a backup has sidecars, a live source a session"),
    };
    // Rows of a staging database are masked already.
    let unmasked = Rules::default();
    let rewriter = match &staging {
        Some(_) => Rewriter::new(&unmasked, &args.exclude_table_data, None),
        None => Rewriter::new(&rules, &args.exclude_table_data, salt.as_ref()),
    }
    .with_subset(sliced.map(|(_, decided)| decided));
    let loaded = match load::load(
        &client,
        &scratch.conn(&target_conn),
        input,
        Transform::Mask(Box::new(rewriter)),
        skip,
        &access,
    ) {
        Ok(l) => l,
        Err(LoadError::Interrupted(f)) => return Err(f.into()),
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context("the clone failed; the target database was not touched"));
        }
    };
    let Transform::Mask(rewriter) = loaded.transform else {
        unreachable!("the clone's transform is the rewriter")
    };
    interrupt::check("the scratch database is dropped and the target was not touched")?;
    if let Some(e) = &rewriter.subset_error {
        bail!(
            "the subset could not decide for every table ({e}); the target database was not touched"
        );
    }
    // The snapshot is needed no more; the staging database goes now.
    drop(staging);

    // 6. Swap in; of the copies of earlier clones, only this one stays.
    let props = load::props_for(&target, backup_props, existing.as_ref(), skip);
    scratch.swap_in(&target, previous.as_deref(), &props)?;
    let dropped = drop_older_copies(&client, &admin, &target, previous.as_deref());

    let secs = clock.elapsed().as_secs_f64();
    let rows: u64 = loaded.tables.values().sum();
    let masked = rules.masked_columns();
    let excluded: Vec<&String> = rewriter.excluded_tables.iter().collect();
    if args.json {
        println!(
            "{}",
            json!({"status": "ok", "source": source_label, "target": target, "host": where_,
                "previous": previous, "dropped_older_copies": dropped, "tables": rewriter.rows.len(), "rows": rows, "rows_per_table": rewriter.rows,
                "masked_columns": masked, "masked_in": rewriter.masked, "excluded_tables": excluded,
                "schema_only": args.schema_only, "subset": sliced.map(|(_, d)| d.report(Some(&rewriter.subset_counts))),
                "duration_seconds": (secs * 1000.0).round() / 1000.0})
        );
    } else if ui::verbosity() >= ui::Verbosity::Normal {
        println!(
            "cloned {source_label} into {target} at {where_}: {} tables, {rows} rows, {} masked columns, {} tables without data, in {secs:.1}s",
            rewriter.rows.len(),
            masked.len(),
            excluded.len()
        );
        if let Some((_, decided)) = sliced {
            print!("{}", decided.report(Some(&rewriter.subset_counts)).render());
        }
        if let Some(prev) = &previous {
            println!(
                "the previous database is kept as {prev} (drop it with DROP DATABASE when done){}",
                if dropped.is_empty() {
                    String::new()
                } else {
                    format!("; older copies dropped: {}", dropped.join(", "))
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The slice: the rules file's `[subset]`, with `--subset` and
/// `--subset-fraction` replacing it table by table; none with `--no-subset`.
fn subset_rules(args: &DbClone, rules: &Rules) -> anyhow::Result<subset::Rules> {
    if args.no_subset {
        return Ok(subset::Rules::default());
    }
    let mut cli = subset::Rules::default();
    for spec in &args.subset {
        cli.add_condition(spec).map_err(anyhow::Error::msg)?;
    }
    for spec in &args.subset_fraction {
        cli.add_fraction(spec).map_err(anyhow::Error::msg)?;
    }
    Ok(rules.subset.clone().overridden_by(cli))
}

/// Reads the source at one exported snapshot and decides the slice. The
/// snapshot stays open (for pg_dump) as long as it is kept.
fn decide<'c>(
    client: &'c Client,
    conn: &Connection,
    rules: &subset::Rules,
    label: &str,
    exact: bool,
) -> anyhow::Result<(Snapshot<'c>, Subset)> {
    let clock = Instant::now();
    let mut snapshot = Snapshot::export(client, conn)
        .map_err(|e| format_err!("cannot take a snapshot of {label}: {e}"))?;
    let catalog = snapshot.catalog()?;
    let plan = subset::plan(&catalog, rules)
        .map_err(|e| format_err!("{e}: fix the subset; nothing was written"))?;
    let decided = Subset::compute(catalog, plan, rules, &mut snapshot, exact).map_err(|e| {
        match e.downcast::<crate::Failure>() {
            Ok(interrupted) => interrupted.into(),
            Err(e) => format_err!("{e:#}; fix the subset: nothing was written"),
        }
    })?;
    ui::detail(format!(
        "decided the subset in {:.1}s ({} table reads)",
        clock.elapsed().as_secs_f64(),
        decided.reads
    ));
    Ok((snapshot, decided))
}

fn dry_run(args: &DbClone, label: &str, decided: &Subset) -> anyhow::Result<ExitCode> {
    let report = decided.report(None);
    if args.json {
        println!(
            "{}",
            json!({"status": "dry-run", "source": label, "subset": report})
        );
    } else {
        print!("{}", report.render());
        println!("dry run: nothing was written to the target");
    }
    Ok(ExitCode::SUCCESS)
}

/// Drops `{target}_pre_clone_{stamp}` databases other than `keep`: copies of
/// real data should not pile up on a laptop. Only names of exactly that form.
fn drop_older_copies(
    client: &Client,
    admin: &Connection,
    target: &str,
    keep: Option<&str>,
) -> Vec<String> {
    let Some(keep) = keep else {
        return Vec::new();
    };
    let prefix = derived_name(target, "_pre_clone_20000101_000000");
    let prefix = &prefix[..prefix.len() - "20000101_000000".len()];
    let Ok(names) = client.script(
        admin,
        "SELECT datname FROM pg_database WHERE starts_with(datname, :'prefix') ORDER BY 1;",
        &[("prefix", prefix)],
    ) else {
        return Vec::new();
    };
    let mut dropped = Vec::new();
    for name in names.lines().filter(|n| *n != keep) {
        let stamp = &name[prefix.len()..];
        let ours = stamp.len() == 15
            && stamp.bytes().enumerate().all(|(i, b)| {
                if i == 8 {
                    b == b'_'
                } else {
                    b.is_ascii_digit()
                }
            });
        if !ours {
            continue;
        }
        match client.script(
            admin,
            "DROP DATABASE :\"db\" WITH (FORCE);",
            &[("db", name)],
        ) {
            Ok(_) => dropped.push(name.to_string()),
            Err(e) => ui::warn(format!("could not drop the older copy {name}: {e}")),
        }
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(host: &str, port: u16, db: &str) -> Connection {
        Connection {
            host: host.into(),
            port,
            dbname: db.into(),
            ..Connection::local_default()
        }
    }

    #[test]
    fn same_database_is_recognised_across_local_names() {
        assert!(same_server(
            &at("localhost", 5432, "app"),
            &at("127.0.0.1", 5432, "app")
        ));
        assert!(!same_server(
            &at("localhost", 5432, "app"),
            &at("127.0.0.1", 5433, "app")
        ));
        assert!(!same_server(
            &at("prod.internal", 5432, "app"),
            &at("localhost", 5432, "app")
        ));
        assert!(!same_server(
            &at("localhost", 5432, "prod"),
            &at("localhost", 5432, "app")
        ));
    }
}
