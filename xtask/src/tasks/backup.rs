//! `cargo xtask db-backup`: pg_dump streamed through the archive pipeline
//! into `{database}_{type}_{timestamp}.sql.gz` + `.sha256` + `.meta`, then
//! metrics. A failure at any step publishes nothing and records the failure.

use std::io;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, bail, format_err};
use serde_json::json;
use time::OffsetDateTime;

use crate::archive::{self, PartialFile};
use crate::archive::{LockError, RunLock};
use crate::config::{Settings, number_setting};
use crate::flags::{DbBackup, TypeArg};
use crate::hooks::{Event, Hooks};
use crate::meta::{self, BackupMeta, Compression, Verification};
use crate::metrics::{self, Outcome};
use crate::naming::{self, BackupName, BackupType};
use crate::pg::{self, DumpOptions, PgError, Purpose, Route, Session};
use crate::retention::Policy;
use crate::s3::{S3Settings, S3Store};
use crate::store::{LocalStore, Store};
use crate::tasks::{Context, prune};
use crate::{Failure, exit, ui};

pub const DEFAULT_LEVEL: u32 = 6;

pub fn run(args: DbBackup, ctx: &Context) -> anyhow::Result<ExitCode> {
    ui::set_verbosity(args.common.dir.quiet, args.common.dir.verbose);
    let settings = Settings::resolve(&args.common, &ctx.sources, &ctx.root)?;
    let level = number_setting(
        &ctx.sources,
        "BACKUP_COMPRESSION_LEVEL",
        args.compression_level,
        DEFAULT_LEVEL,
        "a number from 1 to 9",
        |l| (1..=9).contains(l),
    )?;
    // Checked before the backup, so a typo in a retention setting fails loudly
    // instead of after the work (or never, with --no-prune).
    let policy = prune::policy(&ctx.sources)?;
    let threads = number_setting(
        &ctx.sources,
        "BACKUP_COMPRESSION_THREADS",
        None,
        archive::default_workers(),
        "a number of threads from 1 to 64",
        |t| (1..=64).contains(t),
    )?;
    for (name, origin) in &settings.origins {
        ui::detail(format!("{name}: from {origin}"));
    }
    let store = LocalStore::new(&settings.backup_dir);
    // The route decides the database name when it comes from the compose service.
    let route = pg::route(&ctx.sh, &settings);
    let db = route
        .as_ref()
        .map_or(&settings.connection.dbname, |r| &r.conn.dbname)
        .clone();
    let started_at = OffsetDateTime::now_utc();

    let kind = match args.kind {
        TypeArg::Daily => BackupType::Daily,
        TypeArg::Weekly => BackupType::Weekly,
        TypeArg::Monthly => BackupType::Monthly,
        TypeArg::Auto => {
            let existing = store.complete_for(&db).unwrap_or_default();
            let stamps: Vec<_> = existing.iter().map(|n| n.timestamp).collect();
            let kind = naming::auto_type(started_at, &stamps);
            ui::detail(format!("--type=auto chose {kind}"));
            kind
        }
    };

    let plan = Plan {
        kind,
        level,
        threads,
        started_at,
    };
    let hooks = Hooks::from_sources(&ctx.sources)?;
    // The off-site copy: checked before the backup, so a typo fails loudly.
    let s3 = S3Settings::from_sources(&ctx.sources)?;
    let local_off = matches!(
        ctx.sources.get("BACKUP_LOCAL").map(|(v, _)| v).as_deref(),
        Some("false" | "0" | "no")
    );
    let remote_only = (args.remote_only || local_off) && !args.no_upload;
    let remote = match (s3, remote_only, args.no_upload) {
        (None, true, _) => bail!(
            "--remote-only (or BACKUP_LOCAL=false) needs BACKUP_S3_BUCKET: set the bucket, or drop --remote-only"
        ),
        (Some(_), _, true) | (None, false, _) => None,
        (Some(settings), _, false) => Some(S3Store::new(settings)?),
    };
    if remote_only {
        // Nothing is dumped when the bucket cannot take it.
        remote.as_ref().expect("checked above").check()?;
    }
    // One run per database at a time: an overlapping cron run stops here.
    let _lock = lock(&store, &db)?;
    let result = route.and_then(|route| {
        let target = remote.as_ref().filter(|_| remote_only);
        backup(&args, ctx, route, &store, target, &plan)
    });
    let (event, outcome) = match result {
        Ok(done) => {
            let path = match (&remote, done.remote_only) {
                (Some(r), true) => format!("{}{}", r.location(), done.meta.file),
                _ => store.path(&done.meta.file).display().to_string(),
            };
            let event = Event {
                file: Some(done.meta.file.clone()),
                path: Some(path),
                size_bytes: Some(done.meta.size_bytes),
                duration_seconds: Some(done.meta.duration_seconds),
                ..event("success", &db, kind, None)
            };
            (
                event,
                finish(&args, ctx, &store, remote.as_ref(), &policy, done),
            )
        }
        Err(err) => {
            store.record_metrics(|m| {
                let now = OffsetDateTime::now_utc();
                metrics::record_backup(m, &db, kind, now, &Outcome::Failure);
                if remote_only {
                    metrics::record_upload(m, &db, kind, now, false);
                }
            });
            if args.json {
                let out = json!({"status": "failed", "database": db, "type": kind, "error": format!("{err:#}")});
                println!("{out}");
            }
            (
                event("failure", &db, kind, Some(format!("{err:#}"))),
                Err(err),
            )
        }
    };
    // A failed verification is a failed run for the hooks too.
    let event = match &outcome {
        Err(e) if event.status == "success" => Event {
            status: "failure",
            error: Some(format!("{e:#}")),
            ..event
        },
        _ => event,
    };
    if !hooks.is_empty() {
        for problem in hooks.run(&event) {
            ui::warn(format!("{problem}; the backup's own result stands"));
        }
    }
    outcome
}

fn event(status: &'static str, db: &str, kind: BackupType, error: Option<String>) -> Event {
    Event {
        status,
        database: db.to_string(),
        kind: kind.to_string(),
        file: None,
        path: None,
        size_bytes: None,
        duration_seconds: None,
        error,
        host: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default(),
        at: OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
    }
}

/// The per-database run lock in the backup directory.
fn lock(store: &LocalStore, db: &str) -> anyhow::Result<RunLock> {
    let dir = &store.dir;
    archive::create_private_dir(dir)
        .with_context(|| format!("cannot create the backup directory {}", dir.display()))?;
    let now = OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let holder = format!("pid {} since {now}", std::process::id());
    match RunLock::acquire(dir, &naming::encode_component(db), &holder) {
        Ok(lock) => Ok(lock),
        Err(LockError::Held { holder }) => Err(Failure {
            code: exit::LOCKED,
            message: format!(
                "another backup of database '{db}' is running ({holder}): this run stops; the lock goes when that run ends or dies"
            ),
        }
        .into()),
        Err(LockError::Io(e)) => Err(anyhow::Error::new(e)
            .context(format!("cannot write to the backup directory {}", dir.display()))),
    }
}

/// What this run will do, decided before anything is touched.
struct Plan {
    kind: BackupType,
    level: u32,
    threads: usize,
    started_at: OffsetDateTime,
}

/// A published backup.
struct Done {
    meta: BackupMeta,
    name: BackupName,
    /// Published only in the bucket (`--remote-only`).
    remote_only: bool,
}

fn backup(
    args: &DbBackup,
    ctx: &Context,
    route: Route,
    store: &LocalStore,
    remote: Option<&S3Store>,
    plan: &Plan,
) -> anyhow::Result<Done> {
    let &Plan {
        kind,
        level,
        started_at,
        ..
    } = plan;
    // The directory exists: the run lock was taken in it.
    let dir = &store.dir;
    for path in archive::remove_stale_partials(dir).unwrap_or_default() {
        ui::detail(format!(
            "removed the leftover of an interrupted run: {}",
            path.display()
        ));
    }

    // Preflight: reach the server, and check the client can dump it.
    let Session {
        client,
        conn,
        server,
    } = route.connect(&ctx.sh, Purpose::Dump)?;
    let conn = &conn;
    pg::check_dump_compat(&client, &server)?;

    let clock = Instant::now();
    ui::info(format!("backing up {} ({kind})", conn.display_target()));
    let opts = DumpOptions {
        schema_only: args.schema_only,
    };
    // Local: a partial file published under its name once complete. Remote
    // only: a multipart upload that no listing sees until it completes, and
    // that is aborted if anything fails before.
    let (archived, target) = match remote {
        None => {
            let partial = PartialFile::create(dir).with_context(|| {
                format!("cannot write to the backup directory {}", dir.display())
            })?;
            let where_ = dir.display().to_string();
            let archived = dump_into(&client, conn, &opts, plan, partial.writer()?, &where_)?;
            (archived, Target::Local(partial))
        }
        Some(remote) => {
            let name = remote_free_name(remote, &conn.dbname, kind, started_at)?;
            let mut upload = remote.upload(&name.file_name())?;
            let archived = dump_into(&client, conn, &opts, plan, &mut upload, &remote.location())?;
            (archived, Target::Remote(Box::new(upload), name))
        }
    };
    let finished_at = OffsetDateTime::now_utc();
    let duration = clock.elapsed().as_secs_f64();

    let mut meta = BackupMeta {
        format_version: meta::FORMAT_VERSION,
        database: conn.dbname.clone(),
        kind,
        file: String::new(),
        started_at,
        finished_at,
        duration_seconds: (duration * 1000.0).round() / 1000.0,
        size_bytes: archived.compressed_bytes,
        uncompressed_bytes: archived.scan.bytes,
        sha256: archived.sha256.clone(),
        format: "plain".into(),
        compression: Compression {
            algorithm: "gzip".into(),
            level,
        },
        schema_only: args.schema_only,
        pg_dump_version: client.version.text.clone(),
        server_version: server.text.clone(),
        via: client.via().into(),
        tables: archived.scan.tables.clone(),
        git_commit: pg::git_commit(&ctx.sh, &ctx.root),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        verification: None,
    };
    let name = match target {
        Target::Local(partial) => publish(store, partial, &mut meta, started_at)?,
        Target::Remote(upload, name) => {
            let remote = remote.expect("a remote target has a store");
            publish_remote(remote, *upload, &name, &mut meta)?;
            name
        }
    };
    Ok(Done {
        meta,
        name,
        remote_only: remote.is_some(),
    })
}

enum Target<'a> {
    Local(PartialFile),
    Remote(Box<crate::s3::Upload<'a>>, BackupName),
}

/// pg_dump streamed through the archive pipeline into `dest`; checks its
/// exit status and the dump's structure. `where_` names `dest` in errors.
fn dump_into(
    client: &pg::Client,
    conn: &crate::config::Connection,
    opts: &DumpOptions,
    plan: &Plan,
    dest: impl archive::Destination,
    where_: &str,
) -> anyhow::Result<archive::ArchiveOutcome> {
    let reader = pg::dump_expression(client, conn, opts)
        .reader()
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                anyhow::Error::new(PgError::ToolMissing {
                    tool: "pg_dump".into(),
                })
            } else {
                anyhow::Error::new(e).context("cannot start pg_dump")
            }
        })?;
    let mut progress = ui::Progress::new("dumping");
    let archived = archive::compress_into(&reader, dest, plan.level, plan.threads, |n| {
        progress.update(n)
    });
    progress.finish();
    let archived = match archived {
        Ok(a) => a,
        Err(e) => {
            let _ = reader.kill();
            return Err(anyhow::Error::new(e).context(format!(
                "writing the backup into {where_} failed; nothing was published"
            )));
        }
    };
    // At EOF the reader has waited for pg_dump: its status and stderr are here.
    let output = reader
        .try_wait()?
        .ok_or_else(|| format_err!("pg_dump did not exit after closing its output"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        if stderr.trim().is_empty() {
            return Err(format_err!(
                "pg_dump stopped before the dump was complete ({}); nothing was published",
                output.status
            ));
        }
        return Err(pg::classify("pg_dump", &stderr, conn).into());
    }
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        ui::warn(format!("pg_dump: {line}"));
    }
    archived.scan.check().map_err(|e| {
        format_err!("the dump pg_dump produced is incomplete: {e}; nothing was published")
    })?;
    Ok(archived)
}

/// A name no object in the bucket has yet.
fn remote_free_name(
    remote: &S3Store,
    db: &str,
    kind: BackupType,
    at: OffsetDateTime,
) -> anyhow::Result<BackupName> {
    let taken: std::collections::BTreeSet<String> =
        remote.list()?.into_iter().map(|(n, _)| n).collect();
    let mut name = BackupName::new(db, kind, at);
    while [name.file_name(), name.sha256_name(), name.meta_name()]
        .iter()
        .any(|f| taken.contains(f))
    {
        name = name.clone().with_seq(name.seq + 1);
    }
    Ok(name)
}

/// Completes the upload and checks the object is the bytes sent (its ETag,
/// or a re-read against the SHA-256), then writes `.sha256` and `.meta`:
/// only a complete, checked object gets them.
fn publish_remote(
    remote: &S3Store,
    upload: crate::s3::Upload<'_>,
    name: &BackupName,
    meta: &mut BackupMeta,
) -> anyhow::Result<()> {
    let file = name.file_name();
    if !upload.complete()? {
        let reread = archive::verify_stream(remote.open(&file)?, Some(&meta.sha256), |_| Ok(()));
        if let Err(e) = reread {
            let _ = remote.delete(&file);
            bail!(
                "{file}: the uploaded object does not read back as the backup ({e}); it was removed"
            );
        }
    }
    meta.file = file.clone();
    remote.put_bytes(
        &name.sha256_name(),
        meta::sha256_line(&meta.sha256, &file).as_bytes(),
    )?;
    remote.put_bytes(&name.meta_name(), meta.to_json().as_bytes())?;
    Ok(())
}

/// Uploads a published local set: the dump streamed in parts, checked, then
/// `.sha256` and `.meta`. The local set is never touched.
fn upload_set(remote: &S3Store, local: &LocalStore, name: &BackupName) -> anyhow::Result<()> {
    let taken: std::collections::BTreeSet<String> =
        remote.list()?.into_iter().map(|(n, _)| n).collect();
    if taken.contains(&name.meta_name()) {
        bail!(
            "{} already exists in {}: it was uploaded before (nothing was overwritten)",
            name.file_name(),
            remote.location()
        );
    }
    let mut meta = local.read_meta(name)?;
    let mut upload = remote.upload(&name.file_name())?;
    let mut file = std::fs::File::open(local.path(&name.file_name()))?;
    io::copy(&mut file, &mut upload)?;
    publish_remote(remote, upload, name, &mut meta)
}

/// Reserves a free name (the `.sha256` file is created exclusively, so two
/// runs in the same second cannot take the same one), writes `.meta`, and
/// publishes the dump last: once the dump is visible, its set is complete.
fn publish(
    store: &LocalStore,
    partial: PartialFile,
    meta: &mut BackupMeta,
    at: OffsetDateTime,
) -> anyhow::Result<BackupName> {
    let mut name = BackupName::new(&meta.database, meta.kind, at);
    loop {
        if !store.name_taken(&name) {
            let line = meta::sha256_line(&meta.sha256, &name.file_name());
            match archive::write_new(&store.path(&name.sha256_name()), line.as_bytes()) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).context("cannot write the .sha256 file"),
            }
        }
        name = name.clone().with_seq(name.seq + 1);
    }
    meta.file = name.file_name();
    let result = archive::write_atomic(&store.path(&name.meta_name()), meta.to_json().as_bytes())
        .context("cannot write the .meta file")
        .and_then(|()| {
            partial
                .publish(&store.path(&name.file_name()))
                .context("cannot publish the dump")
        });
    if let Err(e) = result {
        let _ = std::fs::remove_file(store.path(&name.sha256_name()));
        let _ = std::fs::remove_file(store.path(&name.meta_name()));
        return Err(e);
    }
    Ok(name)
}

fn finish(
    args: &DbBackup,
    ctx: &Context,
    store: &LocalStore,
    remote: Option<&S3Store>,
    policy: &Policy,
    mut done: Done,
) -> anyhow::Result<ExitCode> {
    let shown = match (remote, done.remote_only) {
        (Some(r), true) => format!("{}{}", r.location(), done.name.file_name()),
        _ => store.path(&done.name.file_name()).display().to_string(),
    };
    let path = store.path(&done.name.file_name());
    let m = &done.meta;
    store.record_metrics(|metrics| {
        metrics::record_backup(
            metrics,
            &m.database,
            m.kind,
            m.finished_at,
            &Outcome::Success {
                size_bytes: m.size_bytes,
                uncompressed_bytes: m.uncompressed_bytes,
                duration_seconds: m.duration_seconds,
            },
        )
    });

    let mut verify_error = None;
    if args.verify {
        let at = OffsetDateTime::now_utc();
        let result = match (remote, done.remote_only) {
            (Some(r), true) => r
                .open(&done.name.file_name())
                .map_err(|e| archive::VerifyError::Io(e.into()))
                .and_then(|f| archive::verify_stream(f, Some(&done.meta.sha256), |_| Ok(()))),
            _ => archive::verify_file(&path, Some(&done.meta.sha256)),
        };
        let ok = result.is_ok();
        if let Err(e) = &result {
            verify_error = Some(e.to_string());
        }
        done.meta.verification = Some(Verification {
            verified_at: at,
            ok,
            restore_tested: false,
            error: verify_error.clone(),
        });
        match (remote, done.remote_only) {
            (Some(r), true) => r
                .put_bytes(&done.name.meta_name(), done.meta.to_json().as_bytes())
                .context("cannot record the verification in .meta")?,
            _ => archive::write_atomic(
                &store.path(&done.name.meta_name()),
                done.meta.to_json().as_bytes(),
            )
            .context("cannot record the verification in .meta")?,
        }
        let (db, kind) = (&done.meta.database, done.meta.kind);
        store.record_metrics(|metrics| metrics::record_verify(metrics, db, kind, at, ok));
    }

    // The off-site copy of a local backup (a good one: a failed --verify is not uploaded).
    let upload: Option<Result<String, String>> = match remote {
        Some(_) if done.remote_only => Some(Ok(shown.clone())),
        Some(r) if verify_error.is_none() => {
            ui::info(format!("uploading to {}", r.location()));
            Some(
                upload_set(r, store, &done.name)
                    .map(|()| format!("{}{}", r.location(), done.name.file_name()))
                    .map_err(|e| format!("{e:#}")),
            )
        }
        _ => None,
    };
    if let Some(result) = &upload {
        let (db, kind, ok) = (&done.meta.database, done.meta.kind, result.is_ok());
        store
            .record_metrics(|m| metrics::record_upload(m, db, kind, OffsetDateTime::now_utc(), ok));
    }
    let (uploaded_to, upload_error) = match upload {
        Some(Ok(to)) => (Some(to), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };

    let pruned = if args.no_prune {
        None
    } else {
        let now = prune::now(&ctx.sources)?;
        let report = prune::prune(store, policy, now, false)
            .context("the backup is written, but pruning old backups failed")?;
        for row in report.rows.iter().filter(|r| r.delete) {
            ui::info(format!("pruned {} ({})", row.file, row.reason_text));
        }
        Some(report)
    };

    let m = &done.meta;
    if args.json {
        let status = if verify_error.is_some() {
            "verify_failed"
        } else if upload_error.is_some() {
            "upload_failed"
        } else {
            "ok"
        };
        let out = json!({
            "status": status,
            "path": shown,
            "uploaded": uploaded_to,
            "upload_error": upload_error,
            "meta": m,
            "pruned": pruned.as_ref().map(|r| r.rows.iter().filter(|row| row.delete).map(|row| &row.file).collect::<Vec<_>>()),
        });
        println!("{out}");
    } else if ui::verbosity() >= ui::Verbosity::Normal {
        let rows: u64 = m.tables.values().sum();
        println!(
            "{}  {} ({} of SQL, {} tables, {} rows) in {:.1}s{}",
            shown,
            ui::bytes(m.size_bytes),
            ui::bytes(m.uncompressed_bytes),
            m.tables.len(),
            rows,
            m.duration_seconds,
            match (&m.verification, args.verify) {
                (Some(v), _) if v.ok => ", verified",
                _ => "",
            }
        );
    }
    if let Some(e) = verify_error {
        return Err(Failure {
            code: exit::VERIFY_FAILED,
            message: format!("{} failed verification: {e}", m.file),
        }
        .into());
    }
    if let Some(e) = upload_error {
        return Err(Failure {
            code: exit::UPLOAD_FAILED,
            message: format!("the local backup is complete, but its upload failed: {e}"),
        }
        .into());
    }
    if let (Some(to), false, false) = (&uploaded_to, args.json, done.remote_only)
        && ui::verbosity() >= ui::Verbosity::Normal
    {
        println!("uploaded to {to}");
    }
    Ok(ExitCode::SUCCESS)
}
