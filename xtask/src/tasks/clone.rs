//! `cargo xtask db-clone`: prod-like data in the developer's own database,
//! without the personal data. The source is a named environment, a
//! connection URL, or a backup (a file, `latest`, `s3:latest`); the target
//! the development database (the compose service, or `POSTGRES_*`).
//!
//! Safety first: the target must be local (unless `--allow-remote-target`)
//! and never the source; masking rules are checked against the source's
//! tables before anything is written; the data streams source → masking →
//! target with no temporary file, into a scratch database swapped in only
//! when the load completed and its row counts match (the replaced database
//! is kept, as in `db-restore`).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, bail, format_err};
use serde_json::json;
use time::OffsetDateTime;
use time::macros::format_description;

use crate::config::{Connection, DatabaseUrl, Secret, Settings};
use crate::environments;
use crate::flags::{CommonArgs, DbClone};
use crate::mask::{Rewriter, Rules};
use crate::pg::{self, Client, DumpOptions};
use crate::store::LocalStore;
use crate::tasks::Context;
use crate::tasks::restore::{PsqlLoad, Scratch, consent, database_locale, derived_name};
use crate::tasks::verify::{self, Source};
use crate::ui;

pub const MASKING_FILE: &str = "xtask/masking.toml";

/// Where the data comes from.
enum From {
    Live(Connection, String),
    Backup(Source),
}

fn live_from_url(url: &str) -> anyhow::Result<Connection> {
    let u = DatabaseUrl::parse(url).map_err(|e| format_err!("--from: {e}"))?;
    Ok(Connection {
        host: u.host.unwrap_or_else(|| "localhost".into()),
        port: u.port.unwrap_or(5432),
        dbname: u
            .dbname
            .ok_or_else(|| format_err!("--from: the URL names no database"))?,
        user: u.user.unwrap_or_else(|| "postgres".into()),
        password: u.password,
        sslmode: u.sslmode,
        service: None,
    })
}

/// `backup_db`: whose backups `latest` means (POSTGRES_DB, before `--to`).
fn resolve_from(
    args: &DbClone,
    ctx: &Context,
    settings: &Settings,
    backup_db: &str,
) -> anyhow::Result<From> {
    let from = args.from.as_str();
    if from.starts_with("postgres://") || from.starts_with("postgresql://") {
        let conn = live_from_url(from)?;
        let label = format!("{}:{}/{}", conn.host, conn.port, conn.dbname);
        return Ok(From::Live(conn, label));
    }
    let store = LocalStore::new(&settings.backup_dir);
    let db = backup_db;
    if from == "latest" || from == "s3:latest" {
        let backups = crate::tasks::Backups::new(store.clone(), from == "s3:latest", ctx)?;
        let listing = backups.listing();
        let latest = listing.latest(db, None)?.ok_or_else(|| {
            format_err!(
                "--from {from}: there is no usable backup of database '{db}' in {} (another database: --dbname)",
                listing.location()
            )
        })?;
        return Ok(From::Backup(backups.source_of(&latest.set.name)));
    }
    if from.ends_with(".sql.gz") || std::path::Path::new(from).is_file() {
        return Ok(From::Backup(verify::resolve_file(&store, from)?));
    }
    let path = ctx.root.join(environments::FILE);
    let text = std::fs::read_to_string(&path).map_err(|_| {
        format_err!(
            "--from '{from}' is not a URL, a backup or `latest`, and there is no {} to name environments in",
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
        Some(var) => Some(Secret::new(ctx.sources.get(var).map(|(v, _)| v).ok_or_else(|| {
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
        },
        format!(
            "environment '{from}' ({}:{}/{})",
            env.host, env.port, env.dbname
        ),
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

/// The source's tables and columns, for checking the rules before writing.
fn source_schema(
    ctx: &Context,
    from: &From,
    exclude: &[String],
) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let mut schema: BTreeMap<String, Vec<String>> = BTreeMap::new();
    match from {
        From::Live(conn, _) => {
            let client = Client::find(&ctx.sh, None)?;
            let out = pg::script(
                &ctx.sh,
                &client,
                conn,
                "SELECT table_schema || '.' || table_name, column_name FROM information_schema.columns
                 WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, ordinal_position;",
                &[],
            )?;
            for line in out.lines() {
                if let Some((t, c)) = line.split_once('|') {
                    schema.entry(t.to_string()).or_default().push(c.to_string());
                }
            }
        }
        From::Backup(source) => {
            // One read of the dump for its COPY headers (every table with data has one).
            let rules = Rules::default();
            let mut rewriter = Rewriter::new(&rules, exclude);
            let mut gz = flate2::read::MultiGzDecoder::new(io::BufReader::new(source.open()?));
            let mut buf = vec![0; 1 << 20];
            let mut sink = Vec::new();
            loop {
                let n = gz.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                rewriter.feed(&buf[..n], &mut sink);
                sink.clear();
            }
            rewriter.finish(&mut sink);
            schema = rewriter.seen;
        }
    }
    Ok(schema)
}

pub fn run(args: DbClone, ctx: &Context) -> anyhow::Result<ExitCode> {
    ui::set_verbosity(args.quiet, args.verbose);
    let clock = Instant::now();
    let mut common = CommonArgs {
        connection: args.connection.clone(),
        ..CommonArgs::default()
    };
    let backup_db = Settings::resolve(&common, &ctx.sources, &ctx.root)?
        .connection
        .dbname;
    if let Some(to) = &args.to {
        common.connection.dbname = Some(to.clone());
    }
    let settings = Settings::resolve(&common, &ctx.sources, &ctx.root)?;

    // 1. The target: the developer's own database, never somewhere else by accident.
    let route = pg::route(&ctx.sh, &settings)?;
    let target_conn = route.conn.clone();
    if !target_conn.is_local() && !args.allow_remote_target {
        bail!(
            "the target {} is not on this machine: db-clone writes only to a local development database; pass --allow-remote-target if you mean it",
            target_conn.display_target()
        );
    }
    let target = target_conn.dbname.clone();

    // 2. The source, and that it is not the target.
    let from = resolve_from(&args, ctx, &settings, &backup_db)?;
    if let From::Live(src, _) = &from
        && same_server(src, &target_conn)
    {
        bail!(
            "the source and the target are the same database ({}): db-clone never writes to its source; pick another --to",
            target_conn.display_target()
        );
    }

    // 3. The masking rules, checked against the source before anything is written.
    let mask_path = args
        .mask
        .clone()
        .unwrap_or_else(|| ctx.root.join(MASKING_FILE));
    let rules = match std::fs::read_to_string(&mask_path) {
        Ok(text) => {
            Rules::parse_toml(&text).map_err(|e| format_err!("{}: {e}", mask_path.display()))?
        }
        Err(_) if args.mask.is_none() => Rules::default(),
        Err(e) => bail!("cannot read the masking rules {}: {e}", mask_path.display()),
    };
    if !rules.columns.is_empty() {
        let schema = source_schema(ctx, &from, &args.exclude_table_data)?;
        let missing = rules.missing(&schema);
        if !missing.is_empty() {
            bail!(
                "the masking rules in {} name {} the source does not have: fix the rules; nothing was written",
                mask_path.display(),
                missing.join(", ")
            );
        }
    }

    // 4. Connect to the target's server; consent to replace.
    let admin_route = pg::Route {
        conn: target_conn.maintenance(),
        ..route
    };
    let pg::Session {
        client,
        conn: admin,
        server: _,
    } = admin_route.connect(&ctx.sh, pg::Purpose::Load)?;
    let existing = database_locale(ctx, &client, &admin, &target)?;
    let exists = !existing.is_empty();
    let where_ = target_conn.server_label();
    let source_label = match &from {
        From::Live(_, label) => label.clone(),
        From::Backup(s) => s.file_name.clone(),
    };
    consent(
        exists,
        args.yes,
        &target,
        &where_,
        true,
        &source_label,
        false,
    )?;
    let stamp = OffsetDateTime::now_utc().format(format_description!(
        "[year][month][day]_[hour][minute][second]"
    ))?;
    let previous = exists.then(|| derived_name(&target, &format!("_pre_clone_{stamp}")));

    // 5. Stream into a scratch database, masking on the way.
    let scratch_name = derived_name(&target, &format!("_clone_{stamp}"));
    let scratch = Scratch::create(ctx, &client, &admin, &scratch_name, &existing)?;
    ui::info(format!("cloning {source_label} into {target} at {where_}"));
    let scratch_conn = Connection {
        dbname: scratch_name.clone(),
        ..target_conn.clone()
    };
    let loaded = load(ctx, &args, &from, &rules, &client, &scratch_conn)
        .context("the clone failed; the target database was not touched")?;

    // 6. Swap in.
    scratch.swap_in(ctx, &target, previous.as_deref())?;

    let secs = clock.elapsed().as_secs_f64();
    let rows: u64 = loaded.rows.values().sum();
    let masked = rules.masked_columns();
    if args.json {
        println!(
            "{}",
            json!({"status": "ok", "source": source_label, "target": target, "host": where_,
                "previous": previous, "tables": loaded.rows.len(), "rows": rows, "rows_per_table": loaded.rows,
                "masked_columns": masked, "excluded_tables": loaded.excluded,
                "schema_only": args.schema_only, "duration_seconds": (secs * 1000.0).round() / 1000.0})
        );
    } else if ui::verbosity() >= ui::Verbosity::Normal {
        println!(
            "cloned {source_label} into {target} at {where_}: {} tables, {rows} rows, {} masked columns, {} tables without data, in {secs:.1}s",
            loaded.rows.len(),
            masked.len(),
            loaded.excluded.len()
        );
        if let Some(prev) = &previous {
            println!(
                "the previous database is kept as {prev} (drop it with DROP DATABASE when done)"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

struct Loaded {
    rows: BTreeMap<String, u64>,
    excluded: Vec<String>,
}

/// The source's SQL, through the rewriter, into `psql` on the scratch
/// database; the server's `COPY n` tags must match the rows sent.
fn load(
    ctx: &Context,
    args: &DbClone,
    from: &From,
    rules: &Rules,
    client: &Client,
    scratch: &Connection,
) -> anyhow::Result<Loaded> {
    let PsqlLoad {
        child: mut psql,
        mut stdin,
        errors,
        tags,
    } = PsqlLoad::spawn(client, scratch)?;
    let mut rewriter = Rewriter::new(rules, &args.exclude_table_data);
    let mut out = Vec::with_capacity(1 << 20);
    let mut progress = ui::Progress::new("cloning");
    let mut total = 0u64;
    let mut pipe = |chunk: &[u8], rewriter: &mut Rewriter<'_>| -> io::Result<()> {
        out.clear();
        rewriter.feed(chunk, &mut out);
        total += chunk.len() as u64;
        progress.update(total);
        stdin.write_all(&out)
    };
    let streamed: anyhow::Result<()> = match from {
        From::Live(conn, _) => {
            let src_client = Client::find(&ctx.sh, None)?;
            let server = pg::server_version(&ctx.sh, &src_client, conn)?;
            let src_client = if src_client.version.major < server.major {
                Client::find(&ctx.sh, Some(server.major))?
            } else {
                src_client
            };
            pg::check_dump_compat(&src_client, &server)?;
            let opts = DumpOptions {
                schema_only: args.schema_only,
            };
            let reader = pg::dump_expression(&src_client, conn, &opts)
                .reader()
                .context("cannot start pg_dump")?;
            let mut buf = vec![0; 1 << 20];
            let mut result = Ok(());
            loop {
                match (&reader).read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if let Err(e) = pipe(&buf[..n], &mut rewriter) {
                            result = Err(anyhow::Error::new(e));
                            break;
                        }
                    }
                    Err(e) => {
                        result = Err(anyhow::Error::new(e).context("reading pg_dump"));
                        break;
                    }
                }
            }
            if result.is_err() {
                let _ = reader.kill();
            } else if let Some(output) = reader.try_wait()?
                && !output.status.success()
            {
                result =
                    Err(
                        pg::classify("pg_dump", &String::from_utf8_lossy(&output.stderr), conn)
                            .into(),
                    );
            }
            result
        }
        From::Backup(source) => {
            let sidecars = verify::sidecars(source)?;
            if args.schema_only {
                bail!(
                    "--schema-only applies to a live source; from a backup, leave data out with --exclude-table-data '*'"
                );
            }
            verify::check_streaming(source, &sidecars, |chunk| pipe(chunk, &mut rewriter))
                .map(drop)
                .map_err(|e| format_err!("{}: {e}", source.file_name))
        }
    };
    out.clear();
    rewriter.finish(&mut out);
    let tail = stdin.write_all(&out);
    progress.finish();
    drop(stdin);
    let status = psql.wait()?;
    let errors = errors.join().unwrap_or_default();
    let tags = tags.join().unwrap_or_default();
    streamed?;
    tail?;
    if !status.success() {
        let first = errors
            .lines()
            .map(str::trim)
            .find(|l| l.contains("ERROR"))
            .or_else(|| errors.lines().map(str::trim).find(|l| !l.is_empty()))
            .unwrap_or("psql failed")
            .to_string();
        bail!("loading into {} failed: {first}", scratch.dbname);
    }
    let sent: Vec<u64> = rewriter
        .rows
        .iter()
        .filter(|(t, _)| !rewriter.excluded_tables.contains(t))
        .map(|(_, n)| *n)
        .collect();
    let (mut a, mut b) = (sent.clone(), tags.clone());
    a.sort_unstable();
    b.sort_unstable();
    if a != b {
        bail!(
            "the server took {} rows, {} were sent: the clone is incomplete",
            tags.iter().sum::<u64>(),
            sent.iter().sum::<u64>()
        );
    }
    Ok(Loaded {
        rows: rewriter.rows.clone(),
        excluded: rewriter.excluded_tables.clone(),
    })
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
