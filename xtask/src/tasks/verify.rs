//! `cargo xtask db-verify`: checksum, gzip stream and SQL structure of one,
//! the latest or all backups, each in one read. The same check guards every
//! restore (`check`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, format_err};
use serde_json::json;
use time::OffsetDateTime;

use crate::archive::{self, VerifyReport};
use crate::config::Settings;
use crate::flags::DbVerify;
use crate::meta::{BackupMeta, Verification, parse_sha256_line};
use crate::metrics;
use crate::naming::{BackupName, META_SUFFIX, SHA256_SUFFIX};
use crate::pg::{self, PgVersion};
use crate::s3::S3Store;
use crate::store::{LocalStore, Store};
use crate::tasks::Context;
use crate::tasks::restore::{Scratch, check_compat, derived_name};
use crate::{Failure, exit, ui};

/// A backup file to act on: where it is, and its name if the tool made it.
#[derive(Debug, Clone)]
pub struct Source {
    /// The file, or for a remote copy `s3://bucket/prefix/name` (for messages).
    pub path: PathBuf,
    pub file_name: String,
    pub name: Option<BackupName>,
    /// Set when the backup is read from the off-site copy.
    pub remote: Option<Arc<S3Store>>,
}

impl Source {
    fn sidecar(&self, suffix: &str) -> PathBuf {
        self.path
            .with_file_name(format!("{}{suffix}", self.file_name))
    }

    /// The dump as a stream: the file, or a download that is never stored.
    pub fn open(&self) -> std::io::Result<Box<dyn std::io::Read + Send>> {
        match &self.remote {
            Some(store) => Ok(store.open(&self.file_name)?),
            None => Ok(Box::new(std::fs::File::open(&self.path)?)),
        }
    }

    fn read_sidecar(&self, suffix: &str) -> std::io::Result<String> {
        let bytes = match &self.remote {
            Some(store) => store.get_bytes(&format!("{}{suffix}", self.file_name))?,
            None => std::fs::read(self.sidecar(suffix))?,
        };
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// A path, or a file name in the backup directory.
pub fn resolve_file(store: &LocalStore, arg: &str) -> anyhow::Result<Source> {
    let as_path = Path::new(arg);
    let path = if as_path.is_file() {
        as_path.to_path_buf()
    } else if store.path(arg).is_file() {
        store.path(arg)
    } else {
        bail!(
            "no backup '{arg}': it is neither a file nor a file name in {} (see `cargo xtask db-list`)",
            store.dir.display()
        );
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Source {
        name: BackupName::parse(&file_name),
        path,
        file_name,
        remote: None,
    })
}

pub fn source_of(store: &LocalStore, name: &BackupName) -> Source {
    Source {
        path: store.path(&name.file_name()),
        file_name: name.file_name(),
        name: Some(name.clone()),
        remote: None,
    }
}

/// A backup in the off-site copy.
pub fn remote_source_of(store: &Arc<S3Store>, name: &BackupName) -> Source {
    Source {
        path: PathBuf::from(format!("{}{}", store.location(), name.file_name())),
        file_name: name.file_name(),
        name: Some(name.clone()),
        remote: Some(Arc::clone(store)),
    }
}

/// A file name in the off-site copy.
pub fn resolve_remote(store: &Arc<S3Store>, arg: &str) -> anyhow::Result<Source> {
    let file_name = Path::new(arg)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some(name) = BackupName::parse(&file_name) else {
        bail!(
            "'{arg}' is not the name of a backup this tool made (see `cargo xtask db-list --remote`)"
        );
    };
    if !store.entries()?.iter().any(|e| e.name == file_name) {
        bail!(
            "no backup '{file_name}' in {} (see `cargo xtask db-list --remote`)",
            store.location()
        );
    }
    Ok(remote_source_of(store, &name))
}

/// What a check established.
#[derive(Debug, Clone)]
pub struct Checked {
    pub report: VerifyReport,
    pub meta: Option<BackupMeta>,
    /// The file had a `.sha256` and it matched; false for files made elsewhere.
    pub checksum_recorded: bool,
}

/// What the sidecars say, read and cross-checked without reading the dump.
#[derive(Debug, Clone)]
pub struct Sidecars {
    pub expected: Option<String>,
    pub meta: Option<BackupMeta>,
}

/// Every check short of loading: `.sha256` (when present), agreement with
/// `.meta` (when present), the whole gzip stream and the SQL structure.
pub fn check(source: &Source) -> anyhow::Result<Checked> {
    let sidecars = sidecars(source)?;
    check_streaming(source, &sidecars, |_| Ok(())).map_err(anyhow::Error::new)
}

/// Why a streaming check failed: the file, or its consumer.
#[derive(Debug)]
pub enum StreamError {
    File(anyhow::Error),
    Sink(std::io::Error),
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamError::File(e) => write!(f, "{e:#}"),
            StreamError::Sink(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StreamError {}

/// The checks of [`check`] in the same pass that hands the SQL to `sink`.
pub fn check_streaming(
    source: &Source,
    sidecars: &Sidecars,
    sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<Checked, StreamError> {
    let file = source
        .open()
        .map_err(|e| StreamError::File(format_err!("{}: cannot read it: {e}", source.file_name)))?;
    let report = match archive::verify_stream(file, sidecars.expected.as_deref(), sink) {
        Ok(r) => r,
        Err(archive::VerifyError::Sink(e)) => return Err(StreamError::Sink(e)),
        Err(e) => return Err(StreamError::File(format_err!("{}: {e}", source.file_name))),
    };
    let meta = sidecars.meta.clone();
    if let Some(meta) = &meta {
        if meta.size_bytes != report.compressed_bytes {
            return Err(StreamError::File(format_err!(
                "{}: .meta records {} bytes, the file has {}",
                source.file_name,
                meta.size_bytes,
                report.compressed_bytes
            )));
        }
        if meta.tables != report.scan.tables {
            return Err(StreamError::File(format_err!(
                "{}: the row counts in .meta disagree with the dump's data",
                source.file_name
            )));
        }
    }
    Ok(Checked {
        report,
        meta,
        checksum_recorded: sidecars.expected.is_some(),
    })
}

/// Reads `.sha256` and `.meta` and checks they agree with each other.
pub fn sidecars(source: &Source) -> anyhow::Result<Sidecars> {
    let sha_path = source.sidecar(SHA256_SUFFIX);
    let expected = match source.read_sidecar(SHA256_SUFFIX) {
        Ok(text) => {
            let (hex, named) = parse_sha256_line(&text).ok_or_else(|| {
                format_err!(
                    "{} is not a sha256sum line: the checksum file is damaged",
                    sha_path.display()
                )
            })?;
            if named != source.file_name {
                bail!(
                    "{} names '{named}', not {}: the checksum file belongs to another backup",
                    sha_path.display(),
                    source.file_name
                );
            }
            Some(hex)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            ui::warn(format!(
                "{} has no .sha256 (made elsewhere?): only its gzip stream and SQL structure can be checked",
                source.file_name
            ));
            None
        }
        Err(e) => return Err(format_err!("cannot read {}: {e}", sha_path.display())),
    };
    let meta_path = source.sidecar(META_SUFFIX);
    let meta = match source.read_sidecar(META_SUFFIX) {
        Ok(text) => Some(
            BackupMeta::from_json(&text)
                .map_err(|e| format_err!("{} is unreadable: {e}", meta_path.display()))?,
        ),
        Err(_) => None,
    };
    if let (Some(meta), Some(hex)) = (&meta, &expected)
        && !meta.sha256.eq_ignore_ascii_case(hex)
    {
        bail!(
            "{}: .meta and .sha256 record different checksums: one of them was changed",
            source.file_name
        );
    }
    Ok(Sidecars { expected, meta })
}

/// Loads the backup into a throwaway database on the configured server,
/// compares the row counts with the dump's, and drops it.
fn restore_test(
    ctx: &Context,
    settings: &Settings,
    source: &Source,
    checked: &Checked,
) -> anyhow::Result<()> {
    let mut route = pg::route(&ctx.sh, settings)?;
    let conn = route.conn.clone();
    route.conn = conn.maintenance();
    let pg::Session {
        client,
        conn: admin,
        server,
    } = route.connect(&ctx.sh, pg::Purpose::Load)?;
    let dump = checked
        .report
        .scan
        .pg_dump_version
        .as_deref()
        .and_then(PgVersion::parse);
    check_compat(dump.as_ref(), &server)?;
    let base = source
        .name
        .as_ref()
        .map_or("backup", |n| n.database.as_str());
    let stamp = OffsetDateTime::now_utc().unix_timestamp();
    let scratch = Scratch::create(
        ctx,
        &client,
        &admin,
        &derived_name(base, &format!("_verify_{stamp}")),
        "",
    )?;
    ui::info(format!(
        "restore test of {} in {}",
        source.file_name, scratch.name
    ));
    scratch
        .load_and_check(&conn, source, &sidecars(source)?, &[])
        .map(|_| ())
        .map_err(|e| format_err!("{}: restore test: {e:#}", source.file_name))
}

/// Records a verification in `.meta` (when the file has one) and the metrics.
pub fn record(
    store: &LocalStore,
    source: &Source,
    ok: bool,
    restore_tested: bool,
    error: Option<String>,
) {
    let meta_path = source.sidecar(META_SUFFIX);
    let at = OffsetDateTime::now_utc();
    if let Ok(text) = source.read_sidecar(META_SUFFIX)
        && let Ok(mut meta) = BackupMeta::from_json(&text)
    {
        meta.verification = Some(Verification {
            verified_at: at,
            ok,
            restore_tested,
            error,
        });
        let written = match &source.remote {
            Some(remote) => remote
                .put_bytes(
                    &format!("{}{META_SUFFIX}", source.file_name),
                    meta.to_json().as_bytes(),
                )
                .map_err(std::io::Error::from),
            None => archive::write_atomic(&meta_path, meta.to_json().as_bytes()),
        };
        if let Err(e) = written {
            ui::warn(format!(
                "could not record the verification in {}: {e}",
                meta_path.display()
            ));
        }
    }
    if let Some(name) = &source.name {
        store.record_metrics(|m| metrics::record_verify(m, &name.database, name.kind, at, ok));
    }
}

pub fn run(args: DbVerify, ctx: &Context) -> anyhow::Result<ExitCode> {
    ui::set_verbosity(args.common.dir.quiet, args.common.dir.verbose);
    let settings = Settings::resolve(&args.common, &ctx.sources, &ctx.root)?;
    let store = LocalStore::new(&settings.backup_dir);
    let backups = crate::tasks::Backups::new(store.clone(), args.remote, ctx)?;
    let listing = backups.listing();
    let sources: Vec<Source> = if let Some(file) = &args.file {
        vec![backups.resolve(file)?]
    } else if args.latest {
        let db = settings.connection.dbname.clone();
        let kind = args.kind.map(Into::into);
        let latest = listing.latest(&db, kind)?.ok_or_else(|| {
            format_err!(
                "no usable backup of database '{db}' in {} to verify",
                listing.location()
            )
        })?;
        vec![backups.source_of(&latest.set.name)]
    } else if args.all {
        listing
            .catalog()?
            .iter()
            .map(|l| backups.source_of(&l.set.name))
            .collect()
    } else {
        bail!("say which backup to verify: a FILE, --latest or --all");
    };
    if sources.is_empty() {
        ui::info(format!("no backups in {}", listing.location()));
    }

    let mut results = Vec::new();
    let mut failed = 0;
    for source in &sources {
        let outcome = check(source).and_then(|c| {
            if args.restore_test {
                restore_test(ctx, &settings, source, &c)?;
            }
            Ok(c)
        });
        match outcome {
            Ok(c) => {
                record(&store, source, true, args.restore_test, None);
                if !args.json {
                    let rows: u64 = c.report.scan.tables.values().sum();
                    let note = if c.checksum_recorded {
                        ""
                    } else {
                        " (no .sha256: structure only)"
                    };
                    ui::info(format!(
                        "ok      {}  {}, {} tables, {rows} rows{note}",
                        source.file_name,
                        ui::bytes(c.report.compressed_bytes),
                        c.report.scan.tables.len()
                    ));
                }
                results.push(
                    json!({"file": source.file_name, "ok": true, "sha256": c.report.sha256,
                    "checksum_recorded": c.checksum_recorded, "tables": c.report.scan.tables}),
                );
            }
            Err(e) => {
                failed += 1;
                let msg = format!("{e:#}");
                record(&store, source, false, args.restore_test, Some(msg.clone()));
                if !args.json {
                    eprintln!("FAILED  {msg}");
                }
                results.push(json!({"file": source.file_name, "ok": false, "error": msg}));
            }
        }
    }
    if args.json {
        println!("{}", json!({"verified": results, "failed": failed}));
    }
    if failed > 0 {
        return Err(Failure {
            code: exit::VERIFY_FAILED,
            message: format!("{failed} of {} backups failed verification", sources.len()),
        }
        .into());
    }
    Ok(ExitCode::SUCCESS)
}
