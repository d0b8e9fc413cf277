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
use crate::core::format::{Format, Layout};
use crate::core::human;
use crate::core::manifest::Manifest;
use crate::core::meta::{self, BackupMeta, Content, Encryption, Roles, Run, Verification};
use crate::core::metrics::{self, Check, Outcome};
use crate::core::naming::{self, BackupName, BackupType, TypeChoice};
use crate::core::pitr::BackupKind;
use crate::core::plan::Placement;
use crate::flags::DbBackup;
use crate::services::catalog::{self, LocalStore, NewFile, PruneReport, Store};
use crate::services::codec::{self, Opening};
use crate::services::crypto::{self, Recipients};
use crate::services::fsutil::{self, LockError, PartialDir, RunLock};
use crate::services::hooks::{self, Event, Status};
use crate::services::interrupt;
use crate::services::load;
use crate::services::pg::{self, DumpOptions, Purpose, Route};
use crate::services::pitr::Pitr;
use crate::services::publish::{self, Compression};
use crate::services::s3::S3Store;
use crate::tasks::Context;
use crate::{Failure, exit, ui};

/// Where this run's backups go: the store of record, and the copy's.
struct Stores {
    placement: Placement,
    local: LocalStore,
    remote: Option<S3Store>,
    /// Every file is encrypted to these (BACKUP_AGE_RECIPIENTS*), when set.
    seal: Option<Recipients>,
}

impl Stores {
    fn primary(&self) -> &dyn Store {
        match (&self.remote, self.placement.remote_primary()) {
            (Some(r), true) => r,
            _ => &self.local,
        }
    }
}

/// What one backup set holds.
#[derive(Debug, Clone)]
enum What {
    /// This database (`None`: the one the settings, or the compose service, name).
    Database(Option<String>),
    /// The server's globals.
    Globals,
}

pub(crate) fn run(args: DbBackup, ctx: &Context) -> anyhow::Result<ExitCode> {
    if args.physical {
        return physical(&args, ctx);
    }
    // Ctrl-C and SIGTERM are noted: pg_dump is stopped, nothing of the
    // dump is published, the failure is recorded and the hooks are told,
    // then the run exits 130 or 143. A second one ends it at once.
    interrupt::watch()?;
    interrupt::second_signal_ends_run()?;
    let settings = &ctx.settings;
    let placement = Placement::decide(
        settings.s3.is_some(),
        args.remote_only,
        settings.local,
        args.no_upload,
    )
    .map_err(anyhow::Error::msg)?;
    // Encryption fails closed: bad recipients stop the run before anything is dumped.
    let seal = crypto::recipients(&settings.age)?;
    if settings.format == Format::Directory && !args.physical {
        refuse_directory(seal.as_ref())?;
    }
    let stores = Stores {
        seal,
        placement,
        local: LocalStore::of(settings),
        remote: match (placement, &settings.s3) {
            (Placement::Local, _) | (_, None) => None,
            (_, Some(config)) => Some(S3Store::new(config.clone())?),
        },
    };
    if let (Some(r), true) = (&stores.remote, placement.remote_primary()) {
        // Nothing is dumped when the bucket cannot take it.
        r.check()?;
    }
    let route = pg::route(settings);
    if args.all {
        return all(&args, settings, &stores, route?);
    }
    let what = if args.globals {
        What::Globals
    } else {
        What::Database(None)
    };
    let report = one(&args, settings, &stores, route, &what, None);
    if args.json {
        println!("{}", report.json);
    }
    report.outcome
}

/// `--all`: the globals, then every connectable database, a set each; one
/// table at the end, and a failure for the run when any set failed.
fn all(
    args: &DbBackup,
    settings: &Settings,
    stores: &Stores,
    route: Route,
) -> anyhow::Result<ExitCode> {
    // A signal here (the psql it reached stopped too): nothing was started,
    // and the exit says which signal.
    let preflight = || -> anyhow::Result<Vec<String>> {
        let session = route.clone().maintenance().connect(Purpose::Dump)?;
        // Once for the run, not once per database.
        session.client.check_dump_compat(&session.server)?;
        Ok(session.client.list(
            &session.conn,
            "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1",
        )?)
    };
    let mut databases =
        preflight().map_err(|e| interrupt::or_failure(e, "no database was backed up"))?;
    databases.retain(|d| {
        (settings.databases.is_empty() || settings.databases.contains(d))
            && !settings.exclude_databases.contains(d)
    });
    for wanted in settings.databases.iter().filter(|d| !databases.contains(d)) {
        ui::warn(format!(
            "BACKUP_DATABASES names '{wanted}', which the server does not have (or does not let anyone connect to)"
        ));
    }
    let now = OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let run = Run {
        id: format!("{now}/{}", std::process::id()),
        databases: databases.clone(),
    };
    let mut reports = Vec::new();
    let sets: Vec<What> = std::iter::once(What::Globals)
        .chain(databases.iter().map(|d| What::Database(Some(d.clone()))))
        .collect();
    for what in &sets {
        if interrupt::received().is_some() {
            break; // the sets not started are named below
        }
        reports.push((
            what.clone(),
            one(args, settings, stores, Ok(route.clone()), what, Some(&run)),
        ));
    }
    let failed: Vec<String> = reports
        .iter()
        .filter(|(_, r)| r.outcome.is_err())
        .map(|(w, _)| label(w))
        .collect();
    if args.json {
        let sets: Vec<_> = reports.iter().map(|(_, r)| r.json.clone()).collect();
        println!("{}", json!({"run": run.id, "sets": sets, "failed": failed}));
    } else if ui::verbosity() >= ui::Verbosity::Normal {
        println!("{:<24}  {:<8}  FILE OR ERROR", "DATABASE", "RESULT");
        for (what, r) in &reports {
            let (result, detail) = match &r.outcome {
                Ok(_) => (
                    "ok",
                    r.json["meta"]["file"].as_str().unwrap_or("").to_string(),
                ),
                Err(e) => ("FAILED", format!("{e:#}")),
            };
            println!("{:<24}  {result:<8}  {detail}", label(what));
        }
    }
    if interrupt::received().is_some() {
        let names = |published: bool| -> Vec<String> {
            reports
                .iter()
                .filter(|(_, r)| r.published == published)
                .map(|(w, _)| label(w))
                .collect()
        };
        let not_started: Vec<String> = sets[reports.len()..].iter().map(label).collect();
        let list = |names: &[String]| match names {
            [] => "none".to_string(),
            _ => names.join(", "),
        };
        return Err(interrupt::failure(&format!(
            "published: {}; not published: {}; not started: {}",
            list(&names(true)),
            list(&names(false)),
            list(&not_started)
        ))
        .into());
    }
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        let others = if failed.len() < reports.len() {
            " (the others are published)"
        } else {
            ""
        };
        // The sets' own exit code when they agree (all locked, all uploads
        // failed, ...), so monitoring tells those apart; else a failure.
        let codes: Vec<u8> = reports
            .iter()
            .filter_map(|(_, r)| r.outcome.as_ref().err())
            .map(|e| e.downcast_ref::<Failure>().map_or(1, |f| f.code))
            .collect();
        let code = if codes.iter().all(|c| *c == codes[0]) {
            codes[0]
        } else {
            1
        };
        Err(Failure {
            code,
            message: format!(
                "{} of {} backup sets failed: {}{others}",
                failed.len(),
                reports.len(),
                failed.join(", ")
            ),
        }
        .into())
    }
}

fn label(what: &What) -> String {
    match what {
        What::Database(d) => d.clone().unwrap_or_default(),
        What::Globals => "(globals)".into(),
    }
}

/// One set's result: its JSON, and the exit it means.
struct SetReport {
    json: serde_json::Value,
    outcome: anyhow::Result<ExitCode>,
    /// The set was published (its outcome may still be an error: a failed
    /// upload or verification, or a signal after publishing).
    published: bool,
}

/// The globals' set name: `{cluster}_globals`, the cluster BACKUP_CLUSTER
/// or where the server was reached (`localhost-5432`, the compose service).
fn globals_name(settings: &Settings, route: &Route) -> String {
    let cluster = settings
        .cluster
        .clone()
        .unwrap_or_else(|| match &route.conn.service {
            Some(svc) => svc.clone(),
            None => format!("{}-{}", route.conn.host, route.conn.port),
        });
    let cluster: String = cluster
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{cluster}_globals")
}

/// One backup set, start to end: lock, dump, publish, metrics, verify,
/// upload, prune, hooks. Text goes out as it happens; the JSON is returned.
fn one(
    args: &DbBackup,
    settings: &Settings,
    stores: &Stores,
    route: anyhow::Result<Route>,
    what: &What,
    run: Option<&Run>,
) -> SetReport {
    let primary = stores.primary();
    // The route decides the database name when it comes from the compose service.
    let db = match (what, &route) {
        (What::Database(Some(db)), _) => db.clone(),
        (What::Globals, Ok(r)) => globals_name(settings, r),
        (_, Ok(r)) => r.conn.dbname.clone(),
        (_, Err(_)) => settings.connection.dbname.clone(),
    };
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
    let local = &stores.local;
    let result = route
        .and_then(|route| {
            // One run per database at a time: an overlapping cron run stops here.
            let lock = lock(local, &db)?;
            let route = match what {
                What::Database(Some(d)) => Route {
                    conn: route.conn.with_db(d),
                    ..route
                },
                _ => route,
            };
            backup(
                args,
                settings,
                route,
                primary,
                stores.seal.as_ref(),
                what,
                &db,
                kind,
                started_at,
                run,
            )
            .map(|done| (done, lock))
        })
        // Stopped by a signal: whatever failed on the way (pg_dump ended by
        // it, a stream cut short) is that, and nothing was published.
        .map_err(|e| match interrupt::received() {
            Some(_) => interrupt::failure("nothing was published").into(),
            None => e,
        });
    let published = result.is_ok();
    let (event, outcome, json) = match result {
        Ok((done, _lock)) => {
            let event = Event {
                file: Some(done.meta.file.clone()),
                path: Some(primary.display(&done.meta.file)),
                size_bytes: Some(done.meta.size_bytes),
                duration_seconds: Some(done.meta.duration_seconds),
                ..Event::new(Status::Success, &db, kind.as_str(), None)
            };
            let (outcome, json) = finish(args, settings, stores, done);
            (event, outcome, json)
        }
        Err(err) => {
            local.record_metrics(|m| {
                let now = OffsetDateTime::now_utc();
                metrics::record_backup(m, &db, kind, now, &Outcome::Failure);
                if stores.placement.remote_primary() {
                    metrics::record_check(m, Check::Upload, &db, kind, now, false);
                }
            });
            let json = json!({"status": "failed", "database": db, "type": kind, "error": format!("{err:#}")});
            let event = Event::new(
                Status::Failure,
                &db,
                kind.as_str(),
                Some(format!("{err:#}")),
            );
            (event, Err(err), json)
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
    SetReport {
        json,
        outcome,
        published,
    }
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
    /// The tools that made it (and read a custom archive back for --verify).
    client: pg::Client,
}

#[allow(clippy::too_many_arguments)]
fn backup(
    args: &DbBackup,
    settings: &Settings,
    route: Route,
    store: &dyn Store,
    seal: Option<&Recipients>,
    what: &What,
    set: &str,
    kind: BackupType,
    started_at: OffsetDateTime,
    run: Option<&Run>,
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
    if settings.format != Format::Plain && matches!(what, What::Database(_)) {
        client.archive_compression(settings.compression)?;
    }

    let clock = Instant::now();
    let globals = match what {
        What::Globals => {
            ui::info(format!(
                "backing up the globals of {} ({kind})",
                conn.server_label()
            ));
            let passwords = settings.globals_passwords
                && {
                    let superuser = client.is_superuser(&conn)?;
                    if !superuser {
                        ui::warn(format!(
                            "role passwords are left out of the globals backup: user '{}' is not a superuser (BACKUP_GLOBALS_PASSWORDS asks for them)",
                            conn.user
                        ));
                    }
                    superuser
                };
            if !passwords {
                ui::detail(
                    "role passwords are not in the globals backup (BACKUP_GLOBALS_PASSWORDS=true puts them in)",
                );
            }
            Some(passwords)
        }
        What::Database(_) => {
            ui::info(format!("backing up {} ({kind})", conn.display_target()));
            None
        }
    };
    // pg_dumpall writes only SQL: the globals are a plain dump whatever the format.
    let format = match what {
        What::Globals => Format::Plain,
        What::Database(_) => settings.format,
    };
    let layout = Layout::of(format, settings.compression);
    let name = catalog::free_name(
        store,
        BackupName::new(set, kind, started_at)
            .with_layout(layout)
            .with_encryption(seal.is_some()),
    )?;
    if globals == Some(true) && seal.is_none() {
        ui::warn(
            "the globals backup holds role passwords and is not encrypted: set BACKUP_AGE_RECIPIENTS (see docs/operations/encryption.md), or keep this store private",
        );
    }
    let compression = Compression {
        compression: settings.compression,
        threads: settings.jobs,
        seal,
    };
    let mut opts = DumpOptions {
        schema_only: args.schema_only,
        globals,
        archive: (format != Format::Plain).then_some(settings.compression),
        ..DumpOptions::default()
    };
    let (written, archived) = if format == Format::Directory {
        // pg_dump writes the files beside their final place (one rename
        // publishes them; for a remote store they are uploaded from there),
        // where the next run sweeps them if this one is killed.
        let scratch = settings.backup_dir.clone();
        fsutil::create_private_dir(&scratch)?;
        let partial = PartialDir::create(&scratch)
            .with_context(|| format!("cannot write to {}", scratch.display()))?;
        opts.directory = Some((partial.contents(), settings.jobs));
        let dumped = publish::dump_directory(&client, &conn, &opts, &partial, &name.file_name())?;
        let archived = codec::Archived {
            sha256: Manifest::digest_of(&dumped.manifest.render()),
            compressed_bytes: dumped.bytes,
            scan: dumped.scan,
        };
        (Written::Directory(partial, dumped.manifest), archived)
    } else {
        let mut file = store
            .create(&name.file_name())
            .with_context(|| format!("cannot write to {}", store.location()))?;
        let archived = publish::dump_into(
            &client,
            &conn,
            &opts,
            compression,
            &mut file,
            &store.location(),
        )?;
        (Written::File(file), archived)
    };
    let finished_at = OffsetDateTime::now_utc();
    let duration = clock.elapsed().as_secs_f64();
    // What pg_dump leaves out without --create, and where it came from.
    let database_props = match what {
        What::Globals => None,
        What::Database(_) => pg::database_props(&client, &conn, &server, &conn.dbname)
            .unwrap_or_else(|e| {
                ui::warn(format!(
                    "the database's own properties were not recorded: {e:#}"
                ));
                None
            }),
    };
    let source = pg::source_identity(&client, &conn)
        .map_err(|e| ui::warn(format!("the server's identity was not recorded: {e:#}")))
        .ok();
    let meta = BackupMeta {
        format_version: meta::FORMAT_VERSION,
        database: set.to_string(),
        kind,
        file: name.file_name(),
        started_at,
        finished_at,
        duration_seconds: (duration * 1000.0).round() / 1000.0,
        size_bytes: archived.compressed_bytes,
        uncompressed_bytes: archived.scan.bytes,
        sha256: archived.sha256.clone(),
        format: format.as_str().into(),
        compression: meta::Compression {
            algorithm: settings.compression.codec.as_str().into(),
            level: settings.compression.level,
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
        content: if globals.is_some() {
            Content::Globals
        } else {
            Content::Database
        },
        sensitive: globals == Some(true),
        roles: Roles {
            owners: archived.scan.owners.iter().cloned().collect(),
            grantees: archived.scan.grantees.iter().cloned().collect(),
        },
        run: run.cloned(),
        encryption: seal.map(|r| Encryption {
            scheme: "age".into(),
            recipients: r.ids.clone(),
        }),
    };
    // A signal since pg_dump ended may have cut the props' queries short:
    // nothing is published with less than it should record.
    interrupt::check("nothing was published")?;
    match written {
        Written::File(file) => catalog::commit_set(store, file, &name, &meta)?,
        Written::Directory(partial, manifest) => {
            catalog::commit_dir_set(store, partial, &manifest, &name, &meta)?;
        }
    }
    Ok(Done { meta, name, client })
}

/// A dump written and not yet published: a store's new file, or the
/// directory pg_dump wrote with its manifest.
enum Written<'s> {
    File(Box<dyn NewFile + 's>),
    Directory(PartialDir, Manifest),
}

/// The directory format is not encrypted (its files are read by path, one
/// by one): asked for both, nothing is written.
fn refuse_directory(seal: Option<&Recipients>) -> anyhow::Result<()> {
    if seal.is_some() {
        anyhow::bail!(
            "the directory format cannot be encrypted (BACKUP_AGE_RECIPIENTS or BACKUP_AGE_RECIPIENTS_FILE is set): use --format custom, which is encrypted whole and restores with pg_restore --jobs too"
        );
    }
    Ok(())
}

fn finish(
    args: &DbBackup,
    settings: &Settings,
    stores: &Stores,
    mut done: Done,
) -> (anyhow::Result<ExitCode>, serde_json::Value) {
    let (local, store, remote, placement) = (
        &stores.local,
        stores.primary(),
        stores.remote.as_ref(),
        stores.placement,
    );
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

    // A signal from here on: the backup is published and kept; what is left
    // of the run (verify, upload, prune) is skipped and named.
    let stopped = || interrupt::received().is_some();
    let mut skipped = Vec::new();
    let mut verify_error = None;
    let mut not_verified = None;
    if args.verify && stopped() {
        skipped.push("--verify");
    } else if args.verify {
        let at = OffsetDateTime::now_utc();
        // (about the file?, what): only evidence about the file fails it.
        let read = if done.name.layout == Layout::Directory {
            load::verify_new_directory(store, &done.name, &done.meta, &done.client)
                .map(|c| c.report)
                .map_err(|e| (e.is_about_the_file(), e.to_string()))
        } else {
            store
                .open(&done.name.file_name())
                .map_err(|e| (false, e.to_string()))
                .and_then(|f| {
                    let unarchive = done.client.unarchiver();
                    let identities =
                        crypto::identities(&settings.age).map_err(|e| (false, format!("{e:#}")))?;
                    let opening = Opening {
                        identities: identities.as_ref(),
                        unarchive: Some(&unarchive),
                        workers: settings.jobs,
                    };
                    codec::read_checked(f, Some(&done.meta.sha256), opening, &mut (), |_| {
                        interrupt::io_check()
                    })
                    .map_err(|e| (e.is_about_the_file(), e.to_string()))
                })
        };
        if read.as_ref().is_ok_and(|r| !r.contents_checked) {
            // Encrypted, and no key on this machine (as it should be on a server).
            ui::info(
                "--verify: checksum and age header ok; the contents were not checked (no BACKUP_AGE_IDENTITY_FILE here: db-verify with the key checks them)",
            );
        } else if read.is_err() && stopped() {
            skipped.push("--verify");
        } else if let Err((false, why)) = &read {
            // Nothing learned about the file: nothing recorded, it is still uploaded.
            not_verified = Some(why.clone());
        } else {
            verify_error = read.err().map(|(_, why)| why);
            let ok = verify_error.is_none();
            done.meta.verification = Some(Verification {
                verified_at: at,
                ok,
                restore_tested: false,
                error: verify_error.clone(),
            });
            if let Err(e) = store.put(&done.name.meta_name(), done.meta.to_json().as_bytes()) {
                ui::warn(format!("could not record the verification in .meta: {e}"));
            }
            let (db, kind) = (&done.meta.database, done.meta.kind);
            local.record_metrics(|metrics| {
                metrics::record_check(metrics, Check::Verify, db, kind, at, ok)
            });
        }
    }

    // The off-site copy of a local backup (a good one: a failed --verify is not uploaded).
    let upload: Option<Result<String, String>> = match (placement, remote) {
        (Placement::RemoteOnly, _) => Some(Ok(shown.clone())),
        (Placement::LocalThenUpload, Some(_)) if verify_error.is_none() && stopped() => {
            skipped.push("the upload");
            None
        }
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
    if upload.as_ref().is_some_and(|r| r.is_err()) && stopped() {
        // Cut short by the signal, most likely: named with what was not done.
        skipped.push("the upload");
    }
    // A skipped upload is a missing off-site copy, as a failed one is.
    let upload_ok = match &upload {
        Some(result) => Some(result.is_ok()),
        None => skipped.contains(&"the upload").then_some(false),
    };
    if let Some(ok) = upload_ok {
        let (db, kind) = (&done.meta.database, done.meta.kind);
        local.record_metrics(|m| {
            metrics::record_check(m, Check::Upload, db, kind, OffsetDateTime::now_utc(), ok)
        });
    }
    let (uploaded_to, upload_error) = match upload {
        Some(Ok(to)) => (Some(to), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };

    if !args.no_prune && stopped() {
        skipped.push("pruning");
    }
    let pruned: Option<anyhow::Result<PruneReport>> = (!args.no_prune && !stopped()).then(|| {
        let now = settings.now_or(OffsetDateTime::now_utc());
        let report = catalog::prune(local, &settings.retention, now, false)
            .context("the backup is written, but pruning old backups failed")?;
        for row in report.rows.iter().filter(|r| r.delete) {
            ui::info(format!("pruned {} ({})", row.file, row.reason_text));
        }
        Ok(report)
    });
    let (pruned, prune_error) = match pruned {
        Some(Ok(r)) => (Some(r), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };

    let m = &done.meta;
    let status = if verify_error.is_some() {
        "verify_failed"
    } else if stopped() {
        "interrupted"
    } else if upload_error.is_some() {
        "upload_failed"
    } else {
        "ok"
    };
    let json = json!({
        "status": status,
        "path": shown,
        "uploaded": uploaded_to,
        "upload_error": upload_error,
        "meta": m,
        "pruned": pruned.as_ref().map(|r| r.rows.iter().filter(|row| row.delete).map(|row| &row.file).collect::<Vec<_>>()),
        "not_done": skipped,
    });
    if !args.json && ui::verbosity() >= ui::Verbosity::Normal {
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
        let failure = Failure {
            code: exit::VERIFY_FAILED,
            message: format!("{} failed verification: {e}", m.file),
        };
        return (Err(failure.into()), json);
    }
    if stopped() {
        let not_done = match skipped.as_slice() {
            [] => String::new(),
            s => format!("; not done: {}", s.join(", ")),
        };
        let kept = format!("{} is published and kept{not_done}", m.file);
        return (Err(interrupt::failure(&kept).into()), json);
    }
    if let Some(e) = upload_error {
        let failure = Failure {
            code: exit::UPLOAD_FAILED,
            message: format!("the local backup is complete, but its upload failed: {e}"),
        };
        return (Err(failure.into()), json);
    }
    if let Some(why) = not_verified {
        let failure = Failure {
            code: exit::NOT_VERIFIED,
            message: format!(
                "{} is complete, but --verify could not be done ({why}); nothing was recorded about it",
                m.file
            ),
        };
        return (Err(failure.into()), json);
    }
    if let Some(e) = prune_error {
        return (Err(e), json);
    }
    if let (Some(to), false, false) = (&uploaded_to, args.json, placement.remote_primary())
        && ui::verbosity() >= ui::Verbosity::Normal
    {
        println!("uploaded to {to}");
    }
    (Ok(ExitCode::SUCCESS), json)
}

/// `--physical`: a pgBackRest backup of the compose service's whole server.
fn physical(args: &DbBackup, ctx: &Context) -> anyhow::Result<ExitCode> {
    let engine = Pitr::connect(&ctx.settings)?;
    let stanza = engine.settings.stanza.clone();
    // Not enabled is a usage mistake, not a failed backup: no metric.
    let Some(info) = engine.info()? else {
        anyhow::bail!(
            "point-in-time recovery is not enabled for the compose service '{}': run `cargo xtask db-pitr enable` first",
            engine.service()
        );
    };
    let kind = if args.full {
        Some(BackupKind::Full)
    } else if args.diff {
        Some(BackupKind::Diff)
    } else if args.incr {
        Some(BackupKind::Incr)
    } else {
        None
    };
    let store = LocalStore::of(&ctx.settings);
    // pgBackRest runs in the service; a signal here would end only this
    // process and leave the backup running there with its lock held. It is
    // noted, and acted on when the backup has ended.
    interrupt::watch()?;
    let clock = Instant::now();
    let done = match engine.backup(&info.backups, kind) {
        Ok(done) => done,
        Err(e) => {
            store.record_metrics(|m| {
                metrics::record_physical(m, &stanza, OffsetDateTime::now_utc(), None)
            });
            return Err(e);
        }
    };
    let secs = clock.elapsed().as_secs_f64();
    store.record_metrics(|m| {
        metrics::record_physical(
            m,
            &stanza,
            OffsetDateTime::now_utc(),
            Some((done.kind.as_str(), done.repo_size, done.size, secs)),
        )
    });
    if args.json {
        println!(
            "{}",
            json!({"stanza": stanza, "label": done.label, "type": done.kind.as_str(), "size_bytes": done.size,
                "repo_bytes": done.repo_size, "wal_start": done.wal_start, "wal_stop": done.wal_stop,
                "prior": done.prior, "secs": secs})
        );
    }
    ui::info(format!(
        "physical backup {} ({}) of the compose service '{}' in {secs:.1} s: {} of data, {} added to the repository; WAL {}..{}",
        done.label,
        done.kind.as_str(),
        engine.service(),
        human::bytes(done.size),
        human::bytes(done.repo_size),
        done.wal_start,
        done.wal_stop
    ));
    interrupt::check("the physical backup had already finished and is kept")?;
    Ok(ExitCode::SUCCESS)
}
