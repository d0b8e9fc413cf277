//! `cargo xtask db-backup`: pg_dump streamed through the codec into
//! `{database}_{type}_{timestamp}.sql.gz` + `.sha256` + `.meta` in the store
//! of record (the backup directory, or the bucket with `--remote-only`),
//! then metrics, an optional verification, the upload, retention and hooks.
//! A failure at any step publishes nothing and records the failure.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use serde_json::json;
use time::OffsetDateTime;

use crate::core::config::Settings;
use crate::core::meta::{self, BackupMeta, Verification};
use crate::core::metrics::{self, Outcome};
use crate::core::naming::{self, BackupName, BackupType, TypeChoice};
use crate::core::plan::Placement;
use crate::flags::DbBackup;
use crate::services::catalog::{self, LocalStore, PruneReport, Store};
use crate::services::codec;
use crate::services::fsutil::{self, LockError, RunLock};
use crate::services::hooks::{self, Event, Status};
use crate::services::pg::{self, DumpOptions, Purpose, Route};
use crate::services::publish::{self, Compression};
use crate::services::s3::S3Store;
use crate::tasks::Context;
use crate::{Failure, exit, ui};

pub(crate) fn run(args: DbBackup, ctx: &Context) -> anyhow::Result<ExitCode> {
    let settings = &ctx.settings;
    let placement = Placement::decide(
        settings.s3.is_some(),
        args.remote_only,
        settings.local,
        args.no_upload,
    )
    .map_err(anyhow::Error::msg)?;
    let local = LocalStore::of(settings);
    let remote = match (placement, &settings.s3) {
        (Placement::Local, _) | (_, None) => None,
        (_, Some(config)) => Some(S3Store::new(config.clone())?),
    };
    let primary: &dyn Store = match (&remote, placement.remote_primary()) {
        (Some(r), true) => {
            // Nothing is dumped when the bucket cannot take it.
            r.check()?;
            r
        }
        _ => &local,
    };
    // The route decides the database name when it comes from the compose service.
    let route = pg::route(settings);
    let db = route
        .as_ref()
        .map_or(&settings.connection.dbname, |r| &r.conn.dbname)
        .clone();
    let started_at = OffsetDateTime::now_utc();
    let kind = match args.kind {
        TypeChoice::Tier(kind) => kind,
        TypeChoice::Auto => {
            let stamps: Vec<_> = primary
                .inventory()
                .map(|i| i.sets)
                .unwrap_or_default()
                .into_iter()
                .filter(|s| s.is_complete() && s.name.database == db)
                .map(|s| s.name.timestamp)
                .collect();
            let kind = naming::auto_type(started_at, &stamps);
            ui::detail(format!("--type=auto chose {kind}"));
            kind
        }
    };
    // One run per database at a time: an overlapping cron run stops here.
    let _lock = lock(&local, &db)?;
    let result = route.and_then(|route| backup(&args, settings, route, primary, kind, started_at));
    let (event, outcome) = match result {
        Ok(done) => {
            let event = Event {
                file: Some(done.meta.file.clone()),
                path: Some(primary.display(&done.meta.file)),
                size_bytes: Some(done.meta.size_bytes),
                duration_seconds: Some(done.meta.duration_seconds),
                ..Event::new(Status::Success, &db, kind.as_str(), None)
            };
            let finished = finish(
                &args,
                settings,
                &local,
                primary,
                remote.as_ref(),
                placement,
                done,
            );
            (event, finished)
        }
        Err(err) => {
            local.record_metrics(|m| {
                let now = OffsetDateTime::now_utc();
                metrics::record_backup(m, &db, kind, now, &Outcome::Failure);
                if placement.remote_primary() {
                    metrics::record_upload(m, &db, kind, now, false);
                }
            });
            if args.json {
                let out = json!({"status": "failed", "database": db, "type": kind, "error": format!("{err:#}")});
                println!("{out}");
            }
            let event = Event::new(
                Status::Failure,
                &db,
                kind.as_str(),
                Some(format!("{err:#}")),
            );
            (event, Err(err))
        }
    };
    // A failed verification is a failed run for the hooks too.
    let event = match &outcome {
        Err(e) if event.status == Status::Success => Event {
            status: Status::Failure,
            error: Some(format!("{e:#}")),
            ..event
        },
        _ => event,
    };
    if !settings.hooks.is_empty() {
        for problem in hooks::run(&settings.hooks, &event) {
            ui::warn(format!("{problem}; the backup's own result stands"));
        }
    }
    outcome
}

/// The per-database run lock in the backup directory (created here, once).
fn lock(store: &LocalStore, db: &str) -> anyhow::Result<RunLock> {
    let dir = &store.dir;
    fsutil::create_private_dir(dir)
        .with_context(|| format!("cannot create the backup directory {}", dir.display()))?;
    if let Some(mode) = fsutil::open_to_others(dir) {
        ui::warn(format!(
            "the backup directory {} is open to other users (mode {mode:o}): backups hold the whole database; `chmod 700` it",
            dir.display()
        ));
    }
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

/// A published backup.
struct Done {
    meta: BackupMeta,
    name: BackupName,
}

fn backup(
    args: &DbBackup,
    settings: &Settings,
    route: Route,
    store: &dyn Store,
    kind: BackupType,
    started_at: OffsetDateTime,
) -> anyhow::Result<Done> {
    for path in fsutil::remove_stale_partials(&settings.backup_dir).unwrap_or_default() {
        ui::detail(format!(
            "removed the leftover of an interrupted run: {}",
            path.display()
        ));
    }
    // Preflight: reach the server, and check the client can dump it.
    let pg::Session {
        client,
        conn,
        server,
    } = route.connect(Purpose::Dump)?;
    client.check_dump_compat(&server)?;

    let clock = Instant::now();
    ui::info(format!("backing up {} ({kind})", conn.display_target()));
    let name = catalog::free_name(store, BackupName::new(&conn.dbname, kind, started_at))?;
    let mut file = store
        .create(&name.file_name())
        .with_context(|| format!("cannot write to {}", store.location()))?;
    let compression = Compression {
        level: settings.compression_level,
        threads: settings
            .compression_threads
            .unwrap_or_else(codec::default_workers),
    };
    let opts = DumpOptions {
        schema_only: args.schema_only,
    };
    let archived = publish::dump_into(
        &client,
        &conn,
        &opts,
        compression,
        &mut file,
        &store.location(),
    )?;
    let finished_at = OffsetDateTime::now_utc();
    let duration = clock.elapsed().as_secs_f64();
    // What pg_dump leaves out without --create, and where it came from.
    let database_props =
        pg::database_props(&client, &conn, &server, &conn.dbname).unwrap_or_else(|e| {
            ui::warn(format!(
                "the database's own properties were not recorded: {e:#}"
            ));
            None
        });
    let source = pg::source_identity(&client, &conn)
        .map_err(|e| ui::warn(format!("the server's identity was not recorded: {e:#}")))
        .ok();
    let meta = BackupMeta {
        format_version: meta::FORMAT_VERSION,
        database: conn.dbname.clone(),
        kind,
        file: name.file_name(),
        started_at,
        finished_at,
        duration_seconds: (duration * 1000.0).round() / 1000.0,
        size_bytes: archived.compressed_bytes,
        uncompressed_bytes: archived.scan.bytes,
        sha256: archived.sha256.clone(),
        format: "plain".into(),
        compression: meta::Compression {
            algorithm: "gzip".into(),
            level: compression.level,
        },
        schema_only: args.schema_only,
        pg_dump_version: client.version.text.clone(),
        server_version: server.text.clone(),
        via: client.via().into(),
        tables: archived.scan.tables.clone(),
        git_commit: pg::git_commit(&settings.root),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        verification: None,
        database_props,
        source,
    };
    catalog::commit_set(store, file, &name, &meta)?;
    Ok(Done { meta, name })
}

fn finish(
    args: &DbBackup,
    settings: &Settings,
    local: &LocalStore,
    store: &dyn Store,
    remote: Option<&S3Store>,
    placement: Placement,
    mut done: Done,
) -> anyhow::Result<ExitCode> {
    let shown = store.display(&done.name.file_name());
    let m = &done.meta;
    local.record_metrics(|metrics| {
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
        let read = store
            .open(&done.name.file_name())
            .map_err(|e| e.to_string())
            .and_then(|f| {
                codec::read_checked(f, Some(&done.meta.sha256), &mut (), |_| Ok(()))
                    .map_err(|e| e.to_string())
            });
        verify_error = read.err();
        let ok = verify_error.is_none();
        done.meta.verification = Some(Verification {
            verified_at: at,
            ok,
            restore_tested: false,
            error: verify_error.clone(),
        });
        store
            .put(&done.name.meta_name(), done.meta.to_json().as_bytes())
            .context("cannot record the verification in .meta")?;
        let (db, kind) = (&done.meta.database, done.meta.kind);
        local.record_metrics(|metrics| metrics::record_verify(metrics, db, kind, at, ok));
    }

    // The off-site copy of a local backup (a good one: a failed --verify is not uploaded).
    let upload: Option<Result<String, String>> = match (placement, remote) {
        (Placement::RemoteOnly, _) => Some(Ok(shown.clone())),
        (Placement::LocalThenUpload, Some(r)) if verify_error.is_none() => {
            ui::info(format!("uploading to {}", r.location()));
            Some(
                catalog::copy_set(local, r, &done.name)
                    .map(|()| r.display(&done.name.file_name()))
                    .map_err(|e| format!("{e:#}")),
            )
        }
        _ => None,
    };
    if let Some(result) = &upload {
        let (db, kind, ok) = (&done.meta.database, done.meta.kind, result.is_ok());
        local
            .record_metrics(|m| metrics::record_upload(m, db, kind, OffsetDateTime::now_utc(), ok));
    }
    let (uploaded_to, upload_error) = match upload {
        Some(Ok(to)) => (Some(to), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };

    let pruned: Option<PruneReport> = if args.no_prune {
        None
    } else {
        let now = settings.now_or(OffsetDateTime::now_utc());
        let report = catalog::prune(local, &settings.retention, now, false)
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
            crate::core::human::bytes(m.size_bytes),
            crate::core::human::bytes(m.uncompressed_bytes),
            m.tables.len(),
            rows,
            m.duration_seconds,
            match &m.verification {
                Some(v) if v.ok => ", verified",
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
    if let (Some(to), false, false) = (&uploaded_to, args.json, placement.remote_primary())
        && ui::verbosity() >= ui::Verbosity::Normal
    {
        println!("uploaded to {to}");
    }
    Ok(ExitCode::SUCCESS)
}
