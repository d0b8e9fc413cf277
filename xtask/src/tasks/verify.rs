//! `cargo xtask db-verify`: checksum, compressed stream and dump structure of one,
//! the latest or all backups, each in one read; with `--restore-test`, a
//! load into a throwaway database through the same path as `db-restore`.
//!
//! Only evidence about the file marks a backup failed in its `.meta`. A
//! check that could not be done (the server or the store unreachable, no
//! right to create a database) says so, exits 7, and records nothing.

use std::process::ExitCode;

use anyhow::{bail, format_err};
use serde_json::json;
use time::OffsetDateTime;

use crate::core::config::Settings;
use crate::core::dbprops::Skip;
use crate::core::meta::{Content, Verification};
use crate::core::metrics::{self, Check};
use crate::flags::DbVerify;
use crate::services::catalog::{Backups, LocalStore};
use crate::services::interrupt;
use crate::services::load::{
    self, Checked, Input, LoadError, Scratch, Source, Transform, derived_name,
};
use crate::services::pg;
use crate::tasks::Context;
use crate::{Failure, exit, ui};

pub(crate) fn run(args: DbVerify, ctx: &Context) -> anyhow::Result<ExitCode> {
    let settings = &ctx.settings;
    let backups = Backups::open(settings, args.remote)?;
    let store = backups.store();
    let sources: Vec<Source> = if let Some(file) = &args.file {
        vec![Source::resolve(store.clone(), &backups.local, file)?]
    } else if args.latest {
        let db = &settings.connection.dbname;
        let latest = load::latest(&store, db, args.kind, args.source.as_deref())?;
        vec![latest.ok_or_else(|| {
            format_err!(
                "no usable backup of database '{db}' in {} to verify",
                store.location()
            )
        })?]
    } else if args.all {
        store
            .catalog()?
            .iter()
            .map(|l| Source::of(store.clone(), &l.set.name))
            .collect()
    } else {
        bail!("say which backup to verify: a FILE, --latest or --all");
    };
    if sources.is_empty() {
        ui::info(format!("no backups in {}", store.location()));
    }
    if args.restore_test {
        interrupt::watch()?;
    }
    let skip = Skip {
        owner: args.roles.no_owner,
        acl: args.roles.no_acl,
    };

    let access = load::Access::of(settings)?;
    let mut results = Vec::new();
    let (mut failed, mut unverified) = (0, 0);
    for source in &sources {
        let outcome = load::sidecars(source)
            .map_err(LoadError::File)
            .and_then(|sidecars| {
                // A custom archive is read through pg_restore: the route's.
                let client = match source.needs_pg_restore() {
                    true => Some(pg::route(settings).map_err(LoadError::Environment)?.client),
                    false => None,
                };
                let checked = load::check(source, &sidecars, client.as_ref(), &access)?;
                let globals = sidecars
                    .meta
                    .as_ref()
                    .is_some_and(|m| m.content == Content::Globals);
                if args.restore_test && globals {
                    // Loading roles would change the server itself.
                    ui::info(format!(
                        "{}: a globals backup is checked, not loaded into the server",
                        source.file_name
                    ));
                } else if args.restore_test {
                    restore_test(settings, source, &sidecars, &checked, skip, &access)?;
                }
                Ok((checked, args.restore_test && !globals))
            });
        match outcome {
            Ok((c, _)) if !c.report.contents_checked => {
                // Encrypted, and no key here: what could be checked was.
                let why = "checksum and age header ok; the contents were not checked (no BACKUP_AGE_IDENTITY_FILE: nothing was recorded)";
                if !args.json {
                    ui::info(format!(
                        "ok      {}  {}, {why}",
                        source.file_name,
                        crate::core::human::bytes(c.report.compressed_bytes),
                    ));
                }
                results.push(
                    json!({"file": source.file_name, "ok": true, "sha256": c.report.sha256,
                    "checksum_recorded": c.checksum_recorded, "contents_checked": false}),
                );
            }
            Ok((c, restore_tested)) => {
                record(&backups.local, source, true, restore_tested, None);
                if !args.json {
                    let rows: u64 = c.scan().tables.values().sum();
                    let note = if c.checksum_recorded {
                        ""
                    } else {
                        " (no .sha256: structure only)"
                    };
                    ui::info(format!(
                        "ok      {}  {}, {} tables, {rows} rows{note}",
                        source.file_name,
                        crate::core::human::bytes(c.report.compressed_bytes),
                        c.scan().tables.len()
                    ));
                }
                results.push(
                    json!({"file": source.file_name, "ok": true, "sha256": c.report.sha256,
                    "checksum_recorded": c.checksum_recorded, "encrypted": c.report.encrypted,
                    "tables": c.scan().tables}),
                );
            }
            Err(LoadError::Interrupted(f)) => return Err(f.into()),
            Err(e) if e.is_about_the_file() => {
                failed += 1;
                let msg = about(source, &e);
                record(
                    &backups.local,
                    source,
                    false,
                    args.restore_test,
                    Some(msg.clone()),
                );
                if !args.json {
                    eprintln!("FAILED  {msg}");
                }
                results.push(json!({"file": source.file_name, "ok": false, "error": msg}));
            }
            Err(e) => {
                unverified += 1;
                let msg = about(source, &e);
                if !args.json {
                    eprintln!("NOT VERIFIED  {msg} (nothing was recorded)");
                }
                results.push(json!({"file": source.file_name, "ok": null, "error": msg}));
            }
        }
    }
    if args.json {
        println!(
            "{}",
            json!({"verified": results, "failed": failed, "not_verified": unverified})
        );
    }
    if failed > 0 {
        return Err(Failure {
            code: exit::VERIFY_FAILED,
            message: format!("{failed} of {} backups failed verification", sources.len()),
        }
        .into());
    }
    if unverified > 0 {
        return Err(Failure {
            code: exit::NOT_VERIFIED,
            message: format!(
                "{unverified} of {} backups could not be verified (see above); their records were left as they were",
                sources.len()
            ),
        }
        .into());
    }
    Ok(ExitCode::SUCCESS)
}

/// An error's line, led by the file's name.
fn about(source: &Source, e: &LoadError) -> String {
    let text = e.to_string();
    if text.starts_with(&source.file_name) {
        text
    } else {
        format!("{}: {text}", source.file_name)
    }
}

/// Loads the backup into a throwaway database on the configured server
/// (the same load as a restore), and drops it.
fn restore_test(
    settings: &Settings,
    source: &Source,
    sidecars: &load::Sidecars,
    checked: &Checked,
    skip: Skip,
    access: &load::Access,
) -> Result<(), LoadError> {
    // Without a key that opens it, there is nothing to load: say so first.
    load::check_keys(source, access).map_err(LoadError::Environment)?;
    let route = pg::route(settings).map_err(LoadError::Environment)?;
    let conn = route.conn.clone();
    let pg::Session {
        client,
        conn: admin,
        server,
    } = route
        .maintenance()
        .connect(pg::Purpose::Load)
        .map_err(LoadError::Environment)?;
    pg::check_load_compat(checked.pg_dump_version().as_ref(), &server)
        .map_err(LoadError::Environment)?;
    let missing = load::missing_roles(&client, &admin, sidecars.meta.as_ref(), skip)
        .map_err(LoadError::Environment)?;
    if !missing.is_empty() {
        return Err(LoadError::Environment(format_err!(
            "the restore test needs roles {} does not have: {}; test without them (--no-owner --no-acl)",
            conn.server_label(),
            missing.join(", ")
        )));
    }
    let base = source
        .name
        .as_ref()
        .map_or("backup", |n| n.database.as_str());
    let stamp = OffsetDateTime::now_utc().unix_timestamp();
    load::drop_leftovers(&client, &admin);
    let scratch = Scratch::create(
        &client,
        &admin,
        &server,
        &derived_name(base, &format!("_verify_{stamp}")),
        None,
    )
    .map_err(LoadError::Environment)?;
    ui::info(format!(
        "restore test of {} in {}",
        source.file_name, scratch.name
    ));
    load::load(
        &client,
        &scratch.conn(&conn),
        Input::Backup(source, sidecars),
        Transform::Whole,
        skip,
        access,
    )
    .map(drop)
    .map_err(|e| match e {
        LoadError::Sql {
            message,
            environment,
        } => LoadError::Sql {
            message: format!("restore test: {message}"),
            environment,
        },
        e => e,
    })
}

/// Records a verification in `.meta` (when the file has one) and the metrics.
fn record(
    local: &LocalStore,
    source: &Source,
    ok: bool,
    restore_tested: bool,
    error: Option<String>,
) {
    let at = OffsetDateTime::now_utc();
    let written = source.update_meta(|meta| {
        meta.verification = Some(Verification {
            verified_at: at,
            ok,
            restore_tested,
            error,
        });
    });
    if let Err(e) = written {
        ui::warn(format!(
            "could not record the verification in {}.meta: {e:#}",
            source.display()
        ));
    }
    if let Some(name) = &source.name {
        local.record_metrics(|m| {
            metrics::record_check(m, Check::Verify, &name.database, name.kind, at, ok)
        });
    }
}
