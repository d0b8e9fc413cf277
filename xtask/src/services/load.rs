//! Loading a dump into a database, all or nothing: the one path behind
//! `db-restore`, `db-verify --restore-test` and `db-clone`.
//!
//! - A [`Source`] is a backup in a store; its [`Sidecars`] are read and
//!   cross-checked before anything else.
//! - [`load`] streams a backup (checked in the same single read: checksum,
//!   gzip, structure, `.meta`) or a live `pg_dump` through the dump reader,
//!   an optional [`Transform`] (`--table`, masking), into `psql` on a
//!   [`Scratch`] database. psql runs restricted when it can (`\restrict` with
//!   a key of ours), so no command hidden in a dump runs; the reader refuses
//!   them besides. The rows the server took (psql's `COPY n` tags) must
//!   equal the rows sent, block by block, in order.
//! - [`Scratch::swap_in`] renames it over the target in one transaction.
//!
//! Errors say whether they are evidence about the backup ([`LoadError::is_about_the_file`]):
//! only that may mark a backup failed; a server that went away may not.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{self, BufRead, Read, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::format_err;

use time::OffsetDateTime;

use crate::core::config::Connection;
use crate::core::config::Settings;
use crate::core::dbprops::quote_literal;
use crate::core::dbprops::{DatabaseProps, Locale, Skip};
use crate::core::dump::filter::TableFilter;
use crate::core::dump::globals::GlobalsFilter;
use crate::core::dump::mask::Rewriter;
use crate::core::dump::scan::ScanReport;
use crate::core::dump::{Line, LineKind, Reader, Visitor};
use crate::core::dump::{TableName, parse_qualified, quote_ident};
use crate::core::format::Layout;
use crate::core::manifest::{Manifest, is_member_name};
use crate::core::meta::{BackupMeta, Content, parse_sha256_line};
use crate::core::naming::AGE_SUFFIX;
use crate::core::naming::{BackupName, BackupType, META_SUFFIX, SHA256_SUFFIX};
use crate::services::catalog::{self, LocalStore, Store};
use crate::services::codec::{self, Opening, ReadError, ReadReport, Unarchive};
use crate::services::crypto::{self, Identities};
use crate::services::fsutil;
use crate::services::interrupt;
use crate::services::pg::{Client, DumpOptions, PgError, PgVersion, Runner};
use crate::{Failure, ui};

/// A backup file to act on: in which store, and its name if the tool made it.
#[derive(Clone)]
pub(crate) struct Source {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) file_name: String,
    pub(crate) name: Option<BackupName>,
}

impl Source {
    pub(crate) fn of(store: Arc<dyn Store>, name: &BackupName) -> Source {
        Source {
            store,
            file_name: name.file_name(),
            name: Some(name.clone()),
        }
    }

    /// A path, or a file name in `store` (the local directory or the off-site copy).
    pub(crate) fn resolve(
        store: Arc<dyn Store>,
        local: &LocalStore,
        arg: &str,
    ) -> anyhow::Result<Source> {
        let as_path = std::path::Path::new(arg);
        let file_name = as_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let remote = store.location() != local.location();
        let directory = catalog::is_directory_backup(&file_name);
        if !remote && (as_path.is_file() || directory && as_path.is_dir()) {
            let dir = as_path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            return Ok(Source {
                store: Arc::new(LocalStore::new(dir)),
                name: BackupName::parse(&file_name),
                file_name,
            });
        }
        if store
            .entries()?
            .iter()
            .any(|e| e.name == file_name && (e.is_file || directory && e.is_dir))
        {
            return Ok(Source {
                name: BackupName::parse(&file_name),
                store,
                file_name,
            });
        }
        if remote {
            anyhow::bail!(
                "no backup '{file_name}' in {} (see `cargo xtask db-list --remote`)",
                store.location()
            );
        }
        anyhow::bail!(
            "no backup '{arg}': it is neither a file nor a file name in {} (see `cargo xtask db-list`)",
            store.location()
        )
    }

    /// Whether it is a custom archive, as its name (or else its first bytes) says.
    pub(crate) fn is_archive(&self) -> bool {
        let name = self
            .file_name
            .strip_suffix(AGE_SUFFIX)
            .unwrap_or(&self.file_name);
        match Layout::split(name) {
            Some((_, layout)) => layout == Layout::Custom,
            None => self
                .head()
                .is_some_and(|h| codec::Sniffed::of(&h) == codec::Sniffed::Custom),
        }
    }

    /// Whether reading it takes pg_restore: a custom archive or a directory backup.
    pub(crate) fn needs_pg_restore(&self) -> bool {
        self.is_directory() || self.is_archive()
    }

    /// Whether it is a directory backup (pg_dump's directory format), as its name says.
    pub(crate) fn is_directory(&self) -> bool {
        catalog::is_directory_backup(&self.file_name)
    }

    /// Whether it is encrypted with age, as its first bytes say (a name
    /// can lose its `.age`; the bytes cannot). Unreadable: as its name says.
    pub(crate) fn is_encrypted(&self) -> bool {
        self.head()
            .map_or(self.file_name.ends_with(AGE_SUFFIX), |h| crypto::is_age(&h))
    }

    /// The file's first bytes.
    fn head(&self) -> Option<Vec<u8>> {
        let mut head = Vec::new();
        let wanted = crypto::HEADER_PREFIX.len() as u64;
        self.open().ok()?.take(wanted).read_to_end(&mut head).ok()?;
        Some(head)
    }

    /// Where it is, for messages.
    pub(crate) fn display(&self) -> String {
        self.store.display(&self.file_name)
    }

    /// The dump as a stream: a file, or a download that is never stored.
    pub(crate) fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        self.store.open(&self.file_name)
    }

    fn read_sidecar(&self, suffix: &str) -> io::Result<String> {
        let bytes = self.store.read(&format!("{}{suffix}", self.file_name))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Rewrites `.meta` (when there is one), e.g. to record a verification.
    pub(crate) fn update_meta(&self, change: impl FnOnce(&mut BackupMeta)) -> anyhow::Result<()> {
        let Ok(text) = self.read_sidecar(META_SUFFIX) else {
            return Ok(());
        };
        let mut meta = BackupMeta::from_json(&text)?;
        change(&mut meta);
        self.store.put(
            &format!("{}{META_SUFFIX}", self.file_name),
            meta.to_json().as_bytes(),
        )?;
        Ok(())
    }
}

/// What reading backups needs besides the files: the keys of encrypted
/// ones (BACKUP_AGE_IDENTITY_FILE) and how many threads read.
#[derive(Debug)]
pub(crate) struct Access {
    pub(crate) identities: Option<Identities>,
    pub(crate) jobs: usize,
}

impl Access {
    /// From the settings; an identity file that is set must read.
    pub(crate) fn of(settings: &Settings) -> anyhow::Result<Access> {
        Ok(Access {
            identities: crypto::identities(&settings.age)?,
            jobs: settings.jobs,
        })
    }

    fn opening<'a>(&'a self, unarchive: Option<Unarchive<'a>>) -> Opening<'a> {
        Opening {
            identities: self.identities.as_ref(),
            unarchive,
            workers: self.jobs,
        }
    }
}

/// Refuses an encrypted backup that the keys cannot open, reading only its
/// header (before anything is created or touched).
pub(crate) fn check_keys(source: &Source, access: &Access) -> anyhow::Result<()> {
    if !source.is_encrypted() {
        return Ok(());
    }
    let file = source
        .open()
        .map_err(|e| format_err!("{}: cannot read it: {e}", source.file_name))?;
    crypto::open(file, access.identities.as_ref())
        .map(drop)
        .map_err(|e| format_err!("{}: {e}", source.file_name))
}

/// `--latest`: the newest usable backup of `database` (of `kind`, of the
/// server `server` names); the newer ones passed over are named, with why.
pub(crate) fn latest(
    store: &Arc<dyn Store>,
    database: &str,
    kind: Option<BackupType>,
    server: Option<&str>,
) -> anyhow::Result<Option<Source>> {
    let Some(pick) = catalog::pick_latest(store.as_ref(), database, kind, server)? else {
        return Ok(None);
    };
    for (file, why) in &pick.skipped {
        ui::warn(format!("skipping {file}: {why}"));
    }
    Ok(Some(Source::of(store.clone(), &pick.chosen.set.name)))
}

/// What the sidecars say, read and cross-checked without reading the dump.
#[derive(Debug, Clone)]
pub(crate) struct Sidecars {
    /// The digest `.sha256` names (a directory backup's: its manifest's digest).
    pub(crate) expected: Option<String>,
    pub(crate) meta: Option<BackupMeta>,
    /// A directory backup's files and their digests, from its `.sha256`.
    pub(crate) manifest: Option<Manifest>,
}

/// Reads `.sha256` and `.meta` and checks they agree with each other.
pub(crate) fn sidecars(source: &Source) -> anyhow::Result<Sidecars> {
    let sha_name = format!("{}{SHA256_SUFFIX}", source.file_name);
    let mut manifest = None;
    let expected = match source.read_sidecar(SHA256_SUFFIX) {
        Ok(text) if source.is_directory() => {
            let (m, digest) = Manifest::read(&text, &source.file_name)
                .map_err(|e| format_err!("{e}: the manifest is damaged"))?;
            manifest = Some(m);
            Some(digest)
        }
        Ok(text) => {
            let (hex, named) = parse_sha256_line(&text).ok_or_else(|| {
                format_err!("{sha_name} is not a sha256sum line: the checksum file is damaged")
            })?;
            if named != source.file_name {
                anyhow::bail!(
                    "{sha_name} names '{named}', not {}: the checksum file belongs to another backup",
                    source.file_name
                );
            }
            Some(hex)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(format_err!("cannot read {sha_name}: {e}")),
    };
    let meta = match source.read_sidecar(META_SUFFIX) {
        Ok(text) => Some(
            BackupMeta::from_json(&text)
                .map_err(|e| format_err!("{}{META_SUFFIX} is unreadable: {e}", source.file_name))?,
        ),
        Err(_) => None,
    };
    if let (Some(meta), Some(hex)) = (&meta, &expected)
        && !meta.sha256.eq_ignore_ascii_case(hex)
    {
        anyhow::bail!(
            "{}: .meta and .sha256 record different checksums: one of them was changed",
            source.file_name
        );
    }
    // A lost `.sha256` does not excuse the file: `.meta` records the same
    // digest (a directory's is its manifest's, which went with the manifest).
    let expected = match (expected, &meta) {
        (None, Some(meta)) if !source.is_directory() => {
            ui::warn(format!(
                "{} has no .sha256: its checksum is checked against the one its .meta records",
                source.file_name
            ));
            Some(meta.sha256.clone())
        }
        (None, _) => {
            ui::warn(format!(
                "{} has no .sha256 (made elsewhere?): only its compressed stream and SQL structure can be checked",
                source.file_name
            ));
            None
        }
        (expected, _) => expected,
    };
    Ok(Sidecars {
        expected,
        meta,
        manifest,
    })
}

/// What a check of a backup established.
#[derive(Debug, Clone)]
pub(crate) struct Checked {
    pub(crate) report: ReadReport,
    pub(crate) meta: Option<BackupMeta>,
    /// The file's checksum was recorded (`.sha256`, or `.meta` when that is
    /// gone) and it matched; false for files made elsewhere.
    pub(crate) checksum_recorded: bool,
}

impl Checked {
    pub(crate) fn scan(&self) -> &ScanReport {
        &self.report.scan
    }

    /// The pg_dump that made it, from the dump or its `.meta`.
    pub(crate) fn pg_dump_version(&self) -> Option<PgVersion> {
        self.report
            .scan
            .pg_dump_version
            .as_deref()
            .or(self.meta.as_ref().map(|m| m.pg_dump_version.as_str()))
            .and_then(PgVersion::parse)
    }
}

/// Every check short of loading: `.sha256` (when present), agreement with
/// `.meta` (when present), the whole gzip stream and the dump's structure.
/// `client` unpacks a custom archive (`pg_restore`); without one the
/// host's newest is found when the file is one.
pub(crate) fn check(
    source: &Source,
    sidecars: &Sidecars,
    client: Option<&Client>,
    access: &Access,
) -> Result<Checked, LoadError> {
    read_backup(source, sidecars, client, access, &mut (), |_| Ok(()))
}

/// The contents, read: an encrypted file read without a key is not "read"
/// (its header and checksum were all that could be checked).
fn with_contents(
    checked: Result<Checked, LoadError>,
    source: &Source,
) -> Result<Checked, LoadError> {
    match checked {
        Ok(c) if !c.report.contents_checked => Err(LoadError::Environment(format_err!(
            "{}: {}",
            source.file_name,
            crypto::OpenError::NoIdentity
        ))),
        other => other,
    }
}

/// One read of a backup's dump into `visitor` (its lines, whatever the
/// format), `flush` after each chunk; the sidecars are not consulted.
pub(crate) fn visit<V: Visitor>(
    source: &Source,
    client: Option<&Client>,
    access: &Access,
    visitor: &mut V,
    flush: impl FnMut(&mut V) -> io::Result<()>,
) -> Result<(), LoadError> {
    let unchecked = Sidecars {
        expected: None,
        meta: None,
        manifest: None,
    };
    let read = read_backup(source, &unchecked, client, access, visitor, flush);
    with_contents(read, source).map(drop)
}

/// The pg_dump version of a backup without reading all of it: `.meta`, else its header.
pub(crate) fn dump_version(
    source: &Source,
    sidecars: &Sidecars,
    access: &Access,
) -> Option<PgVersion> {
    sidecars
        .meta
        .as_ref()
        .map(|m| m.pg_dump_version.clone())
        .or_else(|| {
            let file = source.open().ok()?;
            codec::peek_pg_dump_version(file, access.identities.as_ref())
        })
        .and_then(|v| PgVersion::parse(&v))
}

fn read_backup<V: Visitor>(
    source: &Source,
    sidecars: &Sidecars,
    client: Option<&Client>,
    access: &Access,
    visitor: &mut V,
    flush: impl FnMut(&mut V) -> io::Result<()>,
) -> Result<Checked, LoadError> {
    if source.is_directory() {
        let dir = LocalDir::of(source)?;
        return read_directory(&dir, &source.file_name, sidecars, client, visitor, flush);
    }
    let file = source.open().map_err(|e| {
        LoadError::Environment(format_err!("{}: cannot read it: {e}", source.file_name))
    })?;
    let found;
    let client = match client {
        Some(c) => Some(c),
        None if source.is_archive() => {
            found = Client::find(None)?;
            Some(&found)
        }
        None => None,
    };
    let mut newer = None;
    let client = client.map(|c| archive_tools(c, sidecars.meta.as_ref(), &mut newer));
    let unarchive = client.map(Client::unarchiver);
    let opening = access.opening(unarchive.as_ref().map(|u| u as Unarchive<'_>));
    let report =
        match codec::read_checked(file, sidecars.expected.as_deref(), opening, visitor, flush) {
            Ok(r) => r,
            Err(ReadError::Sink(e)) => return Err(LoadError::Sink(e)),
            Err(e) if e.is_about_the_file() => {
                return Err(LoadError::File(format_err!("{}: {e}", source.file_name)));
            }
            Err(e) => {
                return Err(LoadError::Environment(format_err!(
                    "{}: {e}",
                    source.file_name
                )));
            }
        };
    check_size(
        sidecars,
        &source.file_name,
        report.compressed_bytes,
        "the file has",
    )?;
    if let Some(meta) = &sidecars.meta
        && report.contents_checked
        && meta.tables != report.scan.tables
    {
        return Err(LoadError::File(format_err!(
            "{}: the row counts in .meta disagree with the dump's data",
            source.file_name
        )));
    }
    Ok(Checked {
        report,
        meta: sidecars.meta.clone(),
        checksum_recorded: sidecars.expected.is_some(),
    })
}

/// A directory backup as a directory on this machine, where pg_restore
/// can read it: where it is, or a download of it from another store into
/// a temporary directory that goes on every path (dropped).
struct LocalDir {
    path: std::path::PathBuf,
    _download: Option<tempfile::TempDir>,
}

impl LocalDir {
    fn of(source: &Source) -> Result<LocalDir, LoadError> {
        LocalDir::in_store(source.store.as_ref(), &source.file_name)
    }

    fn in_store(store: &dyn Store, name: &str) -> Result<LocalDir, LoadError> {
        if let Some(path) = store.local_path(name) {
            return Ok(LocalDir {
                path,
                _download: None,
            });
        }
        let shown = store.display(name);
        let env = |e: io::Error| LoadError::Environment(format_err!("{shown}: {e}"));
        ui::info(format!("downloading {shown} to read it"));
        let tmp = tempfile::Builder::new()
            .prefix(".xtask-download-")
            .tempdir()
            .map_err(|e| {
                LoadError::Environment(format_err!("cannot create a temporary directory: {e}"))
            })?;
        for member in store.members(name).map_err(env)? {
            if !is_member_name(&member.name) {
                return Err(LoadError::File(format_err!(
                    "{shown}/{} is not a file pg_dump writes into a directory backup",
                    member.name
                )));
            }
            interrupt::check("nothing was changed").map_err(LoadError::Interrupted)?;
            let mut from = store
                .open(&format!("{name}/{}", member.name))
                .map_err(env)?;
            let mut to = std::fs::File::create(tmp.path().join(&member.name)).map_err(env)?;
            io::copy(&mut from, &mut to).map_err(env)?;
        }
        Ok(LocalDir {
            path: tmp.path().to_path_buf(),
            _download: Some(tmp),
        })
    }
}

/// pg_restore for a directory backup: `client`'s when it is at least as
/// new as the pg_dump that wrote it, else this machine's newest that is.
fn directory_tools(
    client: Option<&Client>,
    meta: Option<&BackupMeta>,
) -> Result<Client, LoadError> {
    let wanted = meta
        .and_then(|m| PgVersion::parse(&m.pg_dump_version))
        .map(|v| v.major);
    match client {
        Some(c) if wanted.is_none_or(|w| c.version.major >= w) => Ok(c.clone()),
        _ => Ok(Client::find(wanted).map_err(|_| {
            LoadError::Environment(format_err!(
                "reading a directory backup needs pg_restore{} on this machine: install the PostgreSQL client",
                wanted.map(|w| format!(" {w} or newer")).unwrap_or_default()
            ))
        })?),
    }
}

/// `db-backup --verify` of the directory backup it just wrote into `store`
/// (with its sidecars `meta` and the manifest there): every check `db-verify` makes.
pub(crate) fn verify_new_directory(
    store: &dyn Store,
    name: &BackupName,
    meta: &BackupMeta,
    client: &Client,
) -> Result<Checked, LoadError> {
    let file_name = name.file_name();
    let (manifest, digest) =
        catalog::read_manifest(store, &file_name).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => LoadError::File(format_err!("{e}")),
            _ => LoadError::Environment(format_err!("cannot read {}: {e}", name.sha256_name())),
        })?;
    let sidecars = Sidecars {
        expected: Some(digest),
        meta: Some(meta.clone()),
        manifest: Some(manifest),
    };
    let dir = LocalDir::in_store(store, &file_name)?;
    read_directory(&dir, &file_name, &sidecars, Some(client), &mut (), |_| {
        Ok(())
    })
}

/// A directory backup's files against its manifest (none missing, none
/// added, every digest) and their total size against `.meta`; their bytes.
fn check_directory_files(
    dir: &LocalDir,
    name: &str,
    sidecars: &Sidecars,
) -> Result<u64, LoadError> {
    let (found, bytes) = fsutil::hash_directory(&dir.path).map_err(|e| match e.kind() {
        io::ErrorKind::InvalidData => LoadError::File(format_err!("{e}")),
        _ => LoadError::Environment(format_err!("{name}: cannot read it: {e}")),
    })?;
    if let Some(manifest) = &sidecars.manifest
        && let Some(why) = manifest.disagreement(&found)
    {
        return Err(LoadError::File(format_err!("{why}")));
    }
    if sidecars.manifest.is_none() {
        ui::warn(format!(
            "{name} has no .sha256 (made elsewhere?): only pg_restore's read of it checks it"
        ));
    }
    check_size(sidecars, name, bytes, "its files have")?;
    Ok(bytes)
}

/// Every check of a directory backup, and one read of its SQL into
/// `visitor`: each file against the manifest (none missing, none added,
/// every digest), the total size against `.meta`, then the archive through
/// `pg_restore -f -` and the dump reader, and the row counts against `.meta`.
fn read_directory<V: Visitor>(
    dir: &LocalDir,
    name: &str,
    sidecars: &Sidecars,
    client: Option<&Client>,
    visitor: &mut V,
    flush: impl FnMut(&mut V) -> io::Result<()>,
) -> Result<Checked, LoadError> {
    let bytes = check_directory_files(dir, name, sidecars)?;
    let tools = directory_tools(client, sidecars.meta.as_ref())?;
    let unarchive = tools.dir_unarchiver(&dir.path);
    let input = tools
        .dir_input(&dir.path)
        .map_err(|e| LoadError::Environment(format_err!("{name}: cannot read it: {e}")))?;
    let scan = match codec::read_unarchived(input, &unarchive, visitor, flush) {
        Ok(scan) => scan,
        Err(ReadError::Sink(e)) => return Err(LoadError::Sink(e)),
        Err(e) if e.is_about_the_file() => {
            return Err(LoadError::File(format_err!("{name}: {e}")));
        }
        Err(e) => return Err(LoadError::Environment(format_err!("{name}: {e}"))),
    };
    if let Some(meta) = &sidecars.meta
        && meta.tables != scan.tables
    {
        return Err(LoadError::File(format_err!(
            "{name}: the row counts in .meta disagree with the dump's data"
        )));
    }
    Ok(Checked {
        report: ReadReport {
            sha256: sidecars.expected.clone().unwrap_or_default(),
            compressed_bytes: bytes,
            scan,
            encrypted: false,
            contents_checked: true,
        },
        meta: sidecars.meta.clone(),
        checksum_recorded: sidecars.expected.is_some(),
    })
}

/// Where the SQL to load comes from.
pub(crate) enum Input<'a> {
    /// A backup, checked as it is read.
    Backup(&'a Source, &'a Sidecars),
    /// A live database through pg_dump.
    Live {
        client: &'a Client,
        conn: &'a Connection,
        opts: DumpOptions,
    },
}

/// What happens to the SQL on its way: nothing, a table selection,
/// masking, or the globals a server lacks.
pub(crate) enum Transform<'a> {
    Whole,
    Tables(TableFilter),
    Mask(Box<Rewriter<'a>>),
    Globals(GlobalsFilter),
}

/// The visitor of a load: psql's commands and the database-level entries of
/// a `--create` dump never pass, nor owners and privileges the load leaves
/// out; the rest goes through the transform into `out`.
struct LoadSink<'a> {
    transform: Transform<'a>,
    skip: Skip,
    out: Vec<u8>,
    /// Rows per data block passed on, for the untransformed stream.
    copies: Vec<u64>,
    rows: u64,
}

impl Visitor for LoadSink<'_> {
    fn piece(&mut self, line: &Line<'_>, bytes: &[u8]) {
        if *line.kind == LineKind::Meta
            || line.entry.is_some_and(|e| e.is_database_level())
            || (self.skip.acl
                && line
                    .entry
                    .is_some_and(|e| matches!(e.kind.as_str(), "ACL" | "DEFAULT ACL")))
            || (self.skip.owner && line.top && line.first && line.last && sets_an_owner(bytes))
        {
            return;
        }
        match &mut self.transform {
            Transform::Whole => {
                match line.kind {
                    LineKind::CopyRow if line.first => self.rows += 1,
                    LineKind::CopyEnd => {
                        self.copies.push(self.rows);
                        self.rows = 0;
                    }
                    _ => {}
                }
                self.out.extend_from_slice(bytes);
            }
            Transform::Tables(f) => {
                f.piece(line, bytes);
                self.out.append(&mut f.out);
            }
            Transform::Mask(m) => {
                m.piece(line, bytes);
                self.out.append(&mut m.out);
            }
            Transform::Globals(g) => {
                g.piece(line, bytes);
                self.out.append(&mut g.out);
            }
        }
    }

    fn end(&mut self) {
        if let Transform::Tables(f) = &mut self.transform {
            f.end();
            self.out.append(&mut f.out);
        }
    }
}

/// `ALTER ... OWNER TO ...;` and `SET SESSION AUTHORIZATION`, as pg_dump writes them (one line).
fn sets_an_owner(line: &[u8]) -> bool {
    let w = crate::core::dump::words(line);
    let kw = |i: usize| w.get(i).and_then(crate::core::dump::Word::keyword);
    match kw(0).as_deref() {
        Some("ALTER") => crate::core::dump::altered_owner(line).is_some(),
        Some("SET") => {
            kw(1).as_deref() == Some("SESSION") && kw(2).as_deref() == Some("AUTHORIZATION")
        }
        _ => false,
    }
}

/// Roles the dump and its database's properties name that the server lacks
/// (what `skip` leaves out does not count).
pub(crate) fn missing_roles(
    client: &Client,
    admin: &Connection,
    meta: Option<&BackupMeta>,
    skip: Skip,
) -> anyhow::Result<Vec<String>> {
    let Some(meta) = meta else {
        return Ok(Vec::new());
    };
    let mut needed: Vec<&str> = Vec::new();
    if !skip.owner {
        needed.extend(meta.roles.owners.iter().map(String::as_str));
    }
    if !skip.acl {
        needed.extend(meta.roles.grantees.iter().map(String::as_str));
    }
    if let Some(props) = &meta.database_props {
        needed.extend(props.roles(skip));
    }
    if needed.is_empty() {
        return Ok(Vec::new());
    }
    let existing = client.roles(admin)?;
    let mut missing: Vec<String> = needed
        .into_iter()
        .filter(|r| !existing.contains(*r))
        .map(String::from)
        .collect();
    missing.sort();
    missing.dedup();
    Ok(missing)
}

/// What a globals backup creates on a server.
#[derive(Debug, Default)]
pub(crate) struct GlobalsCreated {
    pub(crate) roles: Vec<String>,
    pub(crate) tablespaces: Vec<String>,
}

/// Loads a globals backup into the server: the roles and tablespaces it
/// lacks are created, existing ones never changed. With `dry_run` the file
/// is only read. Returns what was (or would be) created.
pub(crate) fn load_globals(
    client: &Client,
    admin: &Connection,
    source: &Source,
    dry_run: bool,
    access: &Access,
) -> anyhow::Result<GlobalsCreated> {
    let sidecars = sidecars(source)?;
    if sidecars
        .meta
        .as_ref()
        .is_some_and(|m| m.content != Content::Globals)
    {
        anyhow::bail!(
            "{} is a database's backup, not a globals backup",
            source.file_name
        );
    }
    let tablespaces = client.list(admin, "SELECT spcname FROM pg_tablespace")?;
    let mut filter = GlobalsFilter::new(client.roles(admin)?, tablespaces.into_iter().collect());
    let filter = if dry_run {
        let read = read_backup(source, &sidecars, Some(client), access, &mut filter, |f| {
            f.out.clear();
            Ok(())
        });
        with_contents(read, source).map_err(|e| format_err!("{e}"))?;
        filter
    } else {
        ui::info(format!(
            "creating what {} has and the server lacks",
            source.file_name
        ));
        let loaded = load(
            client,
            admin,
            Input::Backup(source, &sidecars),
            Transform::Globals(filter),
            Skip::default(),
            access,
        )
        .map_err(|e| format_err!("{}: {e}", source.file_name))?;
        let Transform::Globals(g) = loaded.transform else {
            unreachable!("the globals' transform")
        };
        g
    };
    if filter.odd > 0 {
        ui::warn(format!(
            "{}: {} lines are not in the form pg_dumpall writes (one statement a line) and were not run",
            source.file_name, filter.odd
        ));
    }
    Ok(GlobalsCreated {
        roles: filter.created_roles,
        tablespaces: filter.created_tablespaces,
    })
}

/// A load that passed every check.
pub(crate) struct Loaded<'a> {
    /// Rows per table that went into the database.
    pub(crate) tables: BTreeMap<String, u64>,
    pub(crate) transform: Transform<'a>,
}

/// Why a load failed.
#[derive(Debug)]
pub(crate) enum LoadError {
    /// The backup failed a check: evidence about the file.
    File(anyhow::Error),
    /// The dump's SQL stopped at an error; `environment` when the error is
    /// the server's (a missing role, no permission, disk full), not the dump's.
    Sql {
        message: String,
        environment: bool,
    },
    /// The means of loading failed (a server gone, a tool missing, the network).
    Environment(anyhow::Error),
    /// psql stopped taking the stream.
    Sink(io::Error),
    Interrupted(Failure),
}

impl LoadError {
    /// Evidence about the backup: only this may mark it failed.
    pub(crate) fn is_about_the_file(&self) -> bool {
        matches!(
            self,
            LoadError::File(_)
                | LoadError::Sql {
                    environment: false,
                    ..
                }
        )
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::File(e) | LoadError::Environment(e) => {
                write!(f, "{e:#}")
            }
            LoadError::Sql { message, .. } => {
                write!(f, "loading the dump stopped at an error: {message}")
            }
            LoadError::Sink(e) => write!(f, "streaming the dump into psql failed: {e}"),
            LoadError::Interrupted(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Interrupted(f) => Some(f),
            _ => None,
        }
    }
}

impl From<PgError> for LoadError {
    fn from(e: PgError) -> LoadError {
        LoadError::Environment(e.into())
    }
}

/// Streams `input` through `transform` into `psql` on `target` (a scratch
/// database), checking everything on the way; see the module's docs.
///
/// A whole custom or directory archive loads with `pg_restore --jobs`
/// instead (tables and indexes in parallel; the tools on this machine,
/// which read the file by path): its checksum beside the load, the rows the
/// server then holds against `.meta`, and a whole read of the archive
/// whenever those cannot settle it (see [`load_archive`]).
pub(crate) fn load<'a>(
    client: &Client,
    target: &Connection,
    input: Input<'_>,
    transform: Transform<'a>,
    skip: Skip,
    access: &Access,
) -> Result<Loaded<'a>, LoadError> {
    // pg_restore --jobs reads a file: never a decrypted copy on disk.
    if let (Input::Backup(source, sidecars), Transform::Whole) = (&input, &transform)
        && source.needs_pg_restore()
        && !source.is_encrypted()
        && matches!(client.runner, Runner::Host { .. })
    {
        let tables = load_archive(client, target, source, sidecars, skip, access.jobs)?;
        return Ok(Loaded { tables, transform });
    }
    let mut psql = PsqlLoad::spawn(client, target)?;
    let mut sink = LoadSink {
        transform,
        skip,
        out: Vec::with_capacity(1 << 20),
        copies: Vec::new(),
        rows: 0,
    };
    let mut progress = ui::Progress::new("loading");
    let mut total = 0u64;
    let streamed = {
        let mut flush = |s: &mut LoadSink<'_>| -> io::Result<()> {
            interrupt::io_check()?;
            total += s.out.len() as u64;
            progress.update(total);
            psql.write(&s.out)?;
            s.out.clear();
            Ok(())
        };
        match input {
            Input::Backup(source, sidecars) => {
                let read = read_backup(
                    source,
                    sidecars,
                    Some(client),
                    access,
                    &mut sink,
                    &mut flush,
                );
                with_contents(read, source).map(|c| c.report.scan)
            }
            Input::Live { client, conn, opts } => {
                dump_live(client, conn, &opts, &mut sink, &mut flush)
            }
        }
    };
    progress.finish();
    let scan = match streamed {
        Ok(found) => found,
        Err(e) => {
            // Whatever psql has not run yet must not run: stop it before its input ends.
            psql.kill();
            return Err(match interrupt::received() {
                Some(_) => LoadError::Interrupted(interrupt::failure(
                    "the scratch database is dropped and the target was not touched",
                )),
                None => match e {
                    LoadError::Sink(_) => psql.failure().unwrap_or(e),
                    e => e,
                },
            });
        }
    };
    let tags = psql.finish()?;
    let (copies, tables) = match sink.transform {
        Transform::Whole => (sink.copies, scan.tables),
        Transform::Tables(ref f) => (f.copies.clone(), f.rows.clone()),
        Transform::Mask(ref m) => (
            m.copies.clone(),
            m.rows
                .iter()
                .filter(|(t, _)| !m.excluded_tables.contains(*t))
                .map(|(t, n)| (t.clone(), *n))
                .collect(),
        ),
        Transform::Globals(_) => (Vec::new(), Default::default()),
    };
    if tags != copies {
        return Err(LoadError::File(format_err!(
            "the server took {} COPY blocks with {} rows, the dump has {} with {}",
            tags.len(),
            tags.iter().sum::<u64>(),
            copies.len(),
            copies.iter().sum::<u64>()
        )));
    }
    Ok(Loaded {
        tables,
        transform: sink.transform,
    })
}

/// The tools that read an archive: `client`, or on the host a newer
/// installed version when the archive's pg_dump is newer than it (Debian
/// keeps several side by side; a pg_restore cannot read a newer archive).
fn archive_tools<'a>(
    client: &'a Client,
    meta: Option<&BackupMeta>,
    newer: &'a mut Option<Client>,
) -> &'a Client {
    let wanted = meta.and_then(|m| PgVersion::parse(&m.pg_dump_version));
    match wanted {
        Some(v)
            if v.major > client.version.major && matches!(client.runner, Runner::Host { .. }) =>
        {
            *newer = Client::find(Some(v.major)).ok();
            newer.as_ref().unwrap_or(client)
        }
        _ => client,
    }
}

/// A whole custom archive into `target` with `pg_restore --jobs`; see [`load`].
fn load_archive(
    client: &Client,
    target: &Connection,
    source: &Source,
    sidecars: &Sidecars,
    skip: Skip,
    jobs: usize,
) -> Result<BTreeMap<String, u64>, LoadError> {
    // pg_restore --jobs reads the file by path and seeks in it: a copy in
    // another store is downloaded first, to a temporary file that goes on
    // every path (dropped).
    let mut newer = None;
    let client = archive_tools(client, sidecars.meta.as_ref(), &mut newer);
    let mut download = None;
    let mut directory = None;
    let (local, path) = match source.store.local_path(&source.file_name) {
        _ if source.is_directory() => {
            let dir = directory.insert(LocalDir::of(source)?);
            (source.clone(), dir.path.clone())
        }
        Some(p) => (source.clone(), p),
        None => {
            ui::info(format!(
                "downloading {} for pg_restore --jobs",
                source.display()
            ));
            let mut tmp = tempfile::Builder::new()
                .prefix(".xtask-download-")
                .tempfile()
                .map_err(|e| {
                    LoadError::Environment(format_err!("cannot create a temporary file: {e}"))
                })?;
            let mut from = source.open().map_err(|e| {
                LoadError::Environment(format_err!("{}: cannot read it: {e}", source.file_name))
            })?;
            io::copy(&mut from, tmp.as_file_mut()).map_err(|e| {
                LoadError::Environment(format_err!("downloading {}: {e}", source.file_name))
            })?;
            let path = download.insert(tmp).path().to_path_buf();
            let dir = path
                .parent()
                .unwrap_or(std::path::Path::new("/"))
                .to_path_buf();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let copy = Source {
                store: Arc::new(LocalStore::new(dir)),
                file_name: name.unwrap_or_default(),
                name: source.name.clone(),
            };
            (copy, path)
        }
    };
    let mut args: Vec<OsString> = vec![
        "--no-password".into(),
        "--exit-on-error".into(),
        format!("--jobs={}", jobs.max(1)).into(),
        format!("--dbname={}", target.dbname).into(),
    ];
    if skip.owner {
        args.push("--no-owner".into());
    }
    if skip.acl {
        args.push("--no-privileges".into());
    }
    args.push(path.into_os_string());
    let directory = directory.as_ref();
    // The whole read of the archive: every check of a plain load (checksum,
    // size, the SQL's structure, row counts against .meta). Not encrypted
    // (that never takes this road): no keys; one thread, the other cores load.
    let read_whole = || {
        let plain = Access {
            identities: None,
            jobs: 1,
        };
        let flush = |_: &mut ()| interrupt::io_check();
        match directory {
            Some(dir) => read_directory(
                dir,
                &local.file_name,
                sidecars,
                Some(client),
                &mut (),
                flush,
            ),
            None => read_backup(&local, sidecars, Some(client), &plain, &mut (), flush),
        }
    };
    let interrupted = || {
        LoadError::Interrupted(interrupt::failure(
            "the scratch database is dropped and the target was not touched",
        ))
    };
    let Some(meta) = &sidecars.meta else {
        // No .meta (a file made elsewhere): the whole read beside the load;
        // the load is swapped in only when both pass.
        return std::thread::scope(|s| {
            let check = s.spawn(read_whole);
            let loaded = run_pg_restore(client, target, &args);
            let checked = check
                .join()
                .map_err(|_| LoadError::Environment(format_err!("the checking thread panicked")))?;
            if interrupt::received().is_some() {
                return Err(interrupted());
            }
            // Evidence about the file first: it explains a failed load too.
            let checked = match checked {
                Err(e @ LoadError::File(_)) => return Err(e),
                other => other,
            };
            loaded?;
            let archive = checked?.report.scan.tables;
            let (rows, uncounted) = counted_rows(client, target, archive.keys());
            if let Some(why) = uncounted {
                ui::info(format!(
                    "the server did not count every restored table ({why})"
                ));
            }
            refuse_lost_rows(&rows, &archive, jobs)?;
            Ok(archive)
        });
    };
    // With .meta: the files' checksums and size beside the load, then the
    // rows the server holds against .meta's counts. pg_restore's load is the
    // read of the data, so it is not decompressed a second time (on two
    // cores that second read cost a fifth of the restore). Whenever they
    // disagree, or the load fails, the archive is read whole as before: it
    // tells damage from the server's trouble, and is the judge of the rows.
    let checked = std::thread::scope(|s| {
        let check = s.spawn(|| match directory {
            Some(dir) => check_directory_files(dir, &local.file_name, sidecars).map(drop),
            None => check_archive_file(&local, sidecars),
        });
        let loaded = run_pg_restore(client, target, &args);
        let checked = check
            .join()
            .map_err(|_| LoadError::Environment(format_err!("the checking thread panicked")));
        (loaded, checked)
    });
    if interrupt::received().is_some() {
        return Err(interrupted());
    }
    let (loaded, checked) = checked;
    checked??;
    let judged = || match read_whole() {
        _ if interrupt::received().is_some() => Err(interrupted()),
        read => read.map(|c| c.report.scan.tables),
    };
    if let Err(e) = loaded {
        // Evidence about the file explains a failed load; else it is pg_restore's.
        return match judged() {
            Err(e @ (LoadError::File(_) | LoadError::Interrupted(_))) => Err(e),
            _ => Err(e),
        };
    }
    // The server's own tally of the rows COPY inserted first (no scan of
    // what was just written: a count(*) of every table read the whole
    // database again); a count where that tally differs or is not kept.
    // The tally counts inserts, not the rows left: it is taken only from a
    // pg_restore that never truncates a table another of its jobs loaded
    // (one job truncates nothing).
    if (jobs <= 1 || client.parallel_restore_keeps_loaded_rows())
        && let Ok(rows) = restored_rows(client, target, meta.tables.keys(), Tally::Inserted)
        && rows == meta.tables
    {
        ui::detail("the rows the server inserted match .meta's counts");
        return Ok(rows);
    }
    ui::detail(
        "counting the restored rows (the server's tally of inserted rows differs or is not taken)",
    );
    let (tables, uncounted) = counted_rows(client, target, meta.tables.keys());
    match uncounted {
        None if tables == meta.tables => return Ok(tables),
        None => {}
        Some(why) => ui::info(format!(
            "the server did not count every restored table ({why}): reading {} to check them",
            source.display()
        )),
    }
    // Not necessarily damage: an extension's configuration table holds the
    // rows CREATE EXTENSION put there besides the dump's. The whole read
    // decides whether the archive is whole; rows the server lacks in a
    // table it counted were lost by the load, whatever the archive holds.
    let archive = judged()?;
    refuse_lost_rows(&tables, &archive, jobs)?;
    Ok(archive)
}

/// `count(*)` of `tables` in `target`: all in one statement, or where that
/// fails (a table the server will not count: a policy, privileges, a
/// foreign table), each on its own, keeping those it counts; with why some
/// were not.
fn counted_rows<'t>(
    client: &Client,
    target: &Connection,
    tables: impl Iterator<Item = &'t String> + Clone,
) -> (BTreeMap<String, u64>, Option<String>) {
    match restored_rows(client, target, tables.clone(), Tally::Counted) {
        Ok(rows) => (rows, None),
        Err(why) => {
            let rows = tables
                .filter_map(|t| {
                    restored_rows(client, target, std::iter::once(t), Tally::Counted).ok()
                })
                .flatten()
                .collect();
            (rows, Some(why))
        }
    }
}

/// An error naming each table the server counted that holds fewer rows
/// than the backup has (`restored` the server's counts, `backup` the
/// archive's): a load that lost rows is never swapped in. More rows are not
/// a loss: an extension's configuration table starts with its own. `jobs`
/// the load's: the advice.
fn refuse_lost_rows(
    restored: &BTreeMap<String, u64>,
    backup: &BTreeMap<String, u64>,
    jobs: usize,
) -> Result<(), LoadError> {
    const NAMED: usize = 5;
    let lost: Vec<String> = backup
        .iter()
        .filter_map(|(table, &want)| {
            let have = *restored.get(table)?;
            (have < want).then(|| format!("{table} {have} of {want}"))
        })
        .collect();
    if lost.is_empty() {
        return Ok(());
    }
    let more = match lost.len().saturating_sub(NAMED) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    let advice = match jobs {
        0 | 1 => "see the server's log for what removed them",
        // pg_restore releases before May 2023 could (see Client::parallel_restore_keeps_loaded_rows).
        _ => "try again with --jobs 1",
    };
    Err(LoadError::Environment(format_err!(
        "pg_restore left fewer rows than the backup holds ({}{more}): {advice}",
        lost[..lost.len().min(NAMED)].join(", ")
    )))
}

/// A custom archive's checksum against `.sha256` and its size against
/// `.meta`, read once without unpacking it.
fn check_archive_file(local: &Source, sidecars: &Sidecars) -> Result<(), LoadError> {
    let name = &local.file_name;
    let file = local
        .open()
        .map_err(|e| LoadError::Environment(format_err!("{name}: cannot read it: {e}")))?;
    let (actual, bytes) = codec::hash_all(file)
        .map_err(|e| LoadError::Environment(format_err!("{name}: cannot read it: {e}")))?;
    if let Some(expected) = &sidecars.expected
        && !expected.eq_ignore_ascii_case(&actual)
    {
        let e = ReadError::ChecksumMismatch {
            expected: expected.clone(),
            actual,
        };
        return Err(LoadError::File(format_err!("{name}: {e}")));
    }
    check_size(sidecars, name, bytes, "the file has")
}

/// The bytes read against `.meta`'s size; `has` names what was read.
fn check_size(sidecars: &Sidecars, name: &str, bytes: u64, has: &str) -> Result<(), LoadError> {
    match &sidecars.meta {
        Some(meta) if meta.size_bytes != bytes => Err(LoadError::File(format_err!(
            "{name}: .meta records {} bytes, {has} {bytes}",
            meta.size_bytes
        ))),
        _ => Ok(()),
    }
}

/// How [`restored_rows`] learns a table's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tally {
    /// The server's statistics of the rows inserted into the new database
    /// (`pg_stat_get_tuples_inserted`), once pg_restore's sessions have
    /// left it: what its COPYs inserted, as psql's `COPY n` tags are for a
    /// plain load. Kept in shared memory from PostgreSQL 15; older servers'
    /// statistics may lag or be lost, and `track_counts = off` keeps none:
    /// a tally that differs is never trusted, the rows are counted.
    Inserted,
    /// `count(*)` of every table.
    Counted,
}

/// The rows `target` holds in each of `tables` (named as `.meta` names
/// them, as pg_dump's COPY lines spell them), counted by the server with
/// row security off, so a policy that would hide rows is an error rather
/// than a smaller count; a table that is not there holds none. `Err` says
/// why they could not be counted.
fn restored_rows<'t>(
    client: &Client,
    target: &Connection,
    tables: impl Iterator<Item = &'t String>,
    tally: Tally,
) -> Result<BTreeMap<String, u64>, String> {
    let tables: Vec<(&String, TableName)> = tables
        .map(|t| match parse_qualified(t.as_bytes()) {
            Some((name, used)) if used == t.len() => Ok((t, name)),
            _ => Err(format!("{t} is not a table name")),
        })
        .collect::<Result<_, _>>()?;
    if tables.is_empty() {
        return Ok(BTreeMap::new());
    }
    let names: Vec<&TableName> = tables.iter().map(|(_, n)| n).collect();
    let kinds = client
        .query(target, &relkinds_sql(&names))
        .map_err(|e| e.to_string())?;
    let kinds: Vec<&str> = kinds.lines().collect();
    if kinds.len() != names.len() {
        return Err("the server named fewer tables than were asked".into());
    }
    // A table the load did not create holds none of its rows.
    let mut rows: BTreeMap<String, u64> = tables.iter().map(|(k, _)| ((*k).clone(), 0)).collect();
    let mut present = Vec::new();
    for ((key, name), kind) in tables.iter().zip(&kinds) {
        match *kind {
            "r" => present.push((*key, (name, true))),
            "p" => present.push((*key, (name, false))),
            "-" => {}
            _ => return Err(format!("{name} is not a table here")),
        }
    }
    if present.is_empty() {
        return Ok(rows);
    }
    let counted: Vec<(&TableName, bool)> = present.iter().map(|(_, c)| *c).collect();
    let counts = client
        .query(
            target,
            &match tally {
                Tally::Inserted => inserted_rows_sql(&counted),
                Tally::Counted => row_counts_sql(&counted),
            },
        )
        .map_err(|e| e.to_string())?;
    let counts: Vec<u64> = counts
        .lines()
        .map(|l| l.parse().map_err(|_| format!("unexpected count '{l}'")))
        .collect::<Result<_, _>>()?;
    if counts.len() != present.len() {
        return Err("the server counted fewer tables than were asked".into());
    }
    for ((key, _), n) in present.into_iter().zip(counts) {
        rows.insert(key.clone(), n);
    }
    Ok(rows)
}

/// Each table's kind (`r` a table, `p` a partitioned one), a line each in
/// order; `-` where there is none.
fn relkinds_sql(tables: &[&TableName]) -> String {
    let rows: Vec<String> = tables
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                "({i}, {}, {})",
                quote_literal(&t.schema),
                quote_literal(&t.name)
            )
        })
        .collect();
    format!(
        "SET standard_conforming_strings = on;\n\
         SELECT coalesce(c.relkind::text, '-') FROM (VALUES {}) AS v(i, s, t) \
         LEFT JOIN pg_namespace n ON n.nspname = v.s \
         LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = v.t ORDER BY v.i;\n",
        rows.join(", ")
    )
}

/// Each table's rows, a line each in order: a table's own (`ONLY`: an
/// inheritance parent's children are counted as themselves), a partitioned
/// table's through its partitions (pg_dump loads through the root only when
/// told to, and then names the root). Row security off: an error, never a
/// count that a policy filtered.
fn row_counts_sql(tables: &[(&TableName, bool)]) -> String {
    let parts: Vec<String> = tables
        .iter()
        .enumerate()
        .map(|(i, (t, only))| {
            let only = if *only { "ONLY " } else { "" };
            format!("SELECT {i} AS i, count(*) AS n FROM {only}{}", t.sql())
        })
        .collect();
    format!(
        "SET row_security = off;\nSELECT n FROM ({}) AS counts ORDER BY i;\n",
        parts.join(" UNION ALL ")
    )
}

/// Each table's rows inserted, a line each in order, as the statistics
/// have them once no other client is in the database (at most three
/// seconds' wait; each statement reads them afresh): a table's own, a
/// partitioned table's summed over its leaf partitions, where a load
/// through the root put them.
fn inserted_rows_sql(tables: &[(&TableName, bool)]) -> String {
    let parts: Vec<String> = tables
        .iter()
        .enumerate()
        .map(|(i, (t, only))| {
            let rel = quote_literal(&t.sql());
            let n = if *only {
                format!("pg_stat_get_tuples_inserted({rel}::regclass)")
            } else {
                format!(
                    "(SELECT coalesce(sum(pg_stat_get_tuples_inserted(relid)), 0)::bigint \
                     FROM pg_partition_tree({rel}::regclass) WHERE isleaf)"
                )
            };
            format!("SELECT {i} AS i, {n} AS n")
        })
        .collect();
    format!(
        "SET standard_conforming_strings = on;\n\
         DO $$ BEGIN FOR i IN 1..300 LOOP \
         PERFORM pg_stat_clear_snapshot(); \
         EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
         AND backend_type = 'client backend'); \
         PERFORM pg_sleep(0.01); END LOOP; END $$;\n\
         SELECT n FROM ({}) AS inserted ORDER BY i;\n",
        parts.join(" UNION ALL ")
    )
}

/// `pg_restore` with `args` to its end (a signal stops it). Its failure is
/// the server's or the machine's: the file's own checks run beside it.
fn run_pg_restore(
    client: &Client,
    target: &Connection,
    args: &[OsString],
) -> Result<(), LoadError> {
    let mut child = client
        .command("pg_restore", args, target)
        .spawn(Stdio::null(), Stdio::null())
        .map_err(|e| LoadError::from(client.spawn_error("pg_restore", e)))?;
    let errors = crate::services::process::drain(child.stderr.take().expect("piped"));
    let status = loop {
        if interrupt::received().is_some() {
            stop_pg_restore(&mut child);
            return Ok(()); // the caller reports the interruption
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(LoadError::Environment(e.into())),
        }
    };
    let stderr = errors.join().unwrap_or_default();
    if !status.success() {
        return Err(LoadError::Environment(format_err!(
            "pg_restore stopped ({status}): {}",
            codec::pg_restore_error(&stderr)
        )));
    }
    let stderr = String::from_utf8_lossy(&stderr);
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        ui::warn(format!("pg_restore: {line}"));
    }
    Ok(())
}

/// Stops a running pg_restore: SIGTERM first, on which a `--jobs` leader
/// cancels its workers' statements and stops them (a SIGKILL would leave
/// them loading, since only the leader's process gets the signal when it
/// was sent to this process alone); SIGKILL when it has not ended within
/// five seconds, because what stops a run must not hang it.
fn stop_pg_restore(child: &mut Child) {
    interrupt::terminate(child.id());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A live database's dump through the reader; pg_dump's own failure is the error.
fn dump_live<V: Visitor>(
    client: &Client,
    conn: &Connection,
    opts: &DumpOptions,
    visitor: &mut V,
    flush: &mut impl FnMut(&mut V) -> io::Result<()>,
) -> Result<ScanReport, LoadError> {
    let mut pg_dump = client.dump(conn, opts)?;
    let mut reader = Reader::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = match pg_dump.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(LoadError::Environment(format_err!("reading pg_dump: {e}"))),
        };
        if let Err(e) = reader.feed(&buf[..n], visitor) {
            return Err(LoadError::Environment(format_err!(
                "the dump pg_dump produced is not one this tool can load: {e}"
            )));
        }
        flush(visitor).map_err(LoadError::Sink)?;
    }
    let scan = reader.finish(visitor);
    flush(visitor).map_err(LoadError::Sink)?;
    let (status, stderr) = pg_dump
        .finish()
        .map_err(|e| LoadError::Environment(e.into()))?;
    if !status.success() {
        return Err(crate::services::pg::classify("pg_dump", &stderr, conn).into());
    }
    scan.check().map_err(|e| {
        LoadError::Environment(format_err!("the dump pg_dump produced is incomplete: {e}"))
    })?;
    Ok(scan)
}

/// `psql` running the script fed to its stdin against a database, stopping
/// at the first error. Its stderr and the `COPY n` tags of its stdout (the
/// server's own row counts) are drained on their own threads: psql's
/// output can never block the load.
struct PsqlLoad {
    child: Child,
    stdin: Option<ChildStdin>,
    errors: Option<JoinHandle<Vec<u8>>>,
    tags: Option<JoinHandle<Vec<u64>>>,
}

impl PsqlLoad {
    fn spawn(client: &Client, conn: &Connection) -> Result<PsqlLoad, LoadError> {
        // Not quiet: the command tags on stdout are what the server took.
        let args = [
            "-X",
            "-w",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            "VERBOSITY=verbose",
        ]
        .map(OsString::from);
        let mut child = client
            .command("psql", &args, conn)
            .spawn(Stdio::piped(), Stdio::piped())
            .map_err(|e| LoadError::from(client.spawn_error("psql", e)))?;
        let errors = crate::services::process::drain(child.stderr.take().expect("piped"));
        let stdout = child.stdout.take().expect("piped");
        let tags = std::thread::spawn(move || copy_tags(io::BufReader::new(stdout)));
        let mut load = PsqlLoad {
            stdin: child.stdin.take(),
            child,
            errors: Some(errors),
            tags: Some(tags),
        };
        if client.has_restrict() {
            // From here on psql itself refuses every command a dump may hide.
            load.write(format!("\\restrict {}\n", restrict_key()).as_bytes())
                .map_err(LoadError::Sink)?;
        }
        Ok(load)
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.stdin {
            Some(stdin) => stdin.write_all(bytes),
            None => Err(io::Error::other("psql's input is closed")),
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stdin = None;
    }

    fn stderr(&mut self) -> String {
        let bytes = self
            .errors
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// psql's own error, when it stopped by itself.
    fn failure(&mut self) -> Option<LoadError> {
        let status = self.child.wait().ok()?;
        (!status.success()).then(|| sql_error(&self.stderr()))
    }

    /// Ends the input and waits for psql (a signal stops it): the tags.
    fn finish(mut self) -> Result<Vec<u64>, LoadError> {
        self.stdin = None;
        let status = loop {
            if interrupt::received().is_some() {
                self.kill();
                return Err(LoadError::Interrupted(interrupt::failure(
                    "the scratch database is dropped and the target was not touched",
                )));
            }
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(LoadError::Environment(e.into())),
            }
        };
        if !status.success() {
            return Err(sql_error(&self.stderr()));
        }
        Ok(self
            .tags
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default())
    }
}

impl Drop for PsqlLoad {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// A key for `\restrict`: letters and digits, not guessable by the dump.
fn restrict_key() -> String {
    let mut bytes = [0u8; 24];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        // Still unpredictable to the file's author: the clock and the process.
        let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
        bytes.copy_from_slice(
            &sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(seed))[..24],
        );
    }
    bytes
        .iter()
        .map(|b| {
            char::from(
                b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                    [usize::from(*b) % 62],
            )
        })
        .collect()
}

/// psql's first error, as one line, and whose it is: the server's state
/// (SQLSTATE classes 08, 42501, 42704 for roles, 53, 57, 58, XX) or the dump's.
fn sql_error(stderr: &str) -> LoadError {
    let line = stderr
        .lines()
        .map(str::trim)
        .find(|l| l.contains("ERROR:") || l.contains("FATAL:"))
        .or_else(|| stderr.lines().map(str::trim).find(|l| !l.is_empty()))
        .unwrap_or("psql failed");
    // `psql:<stdin>:12: ERROR:  42704: role "ghost" does not exist`
    let detail = line
        .find("ERROR:")
        .or_else(|| line.find("FATAL:"))
        .map_or(line, |i| &line[i..]);
    let (level, rest) = detail.split_once(':').unwrap_or(("", detail));
    let rest = rest.trim();
    let (code, message) = match rest.split_once(": ") {
        Some((code, msg)) if code.len() == 5 && code.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            (Some(code), msg)
        }
        _ => (None, rest),
    };
    let environment = level == "FATAL"
        || code.is_none_or(|c| {
            matches!(&c[..2], "08" | "53" | "57" | "58" | "XX")
                || c == "42501"
                || (c == "42704" && message.starts_with("role "))
        });
    let hint = if code == Some("42704") && message.starts_with("role ") {
        " (create the roles first with --with-globals, or load without them: --no-owner --no-acl)"
    } else {
        ""
    };
    let message = if level.is_empty() {
        format!("{message}{hint}")
    } else {
        format!("{level}:  {message}{hint}")
    };
    LoadError::Sql {
        message: message.trim_start_matches("psql:").to_string(),
        environment,
    }
}

/// The row counts of psql's `COPY n` command tags, in order.
fn copy_tags(out: impl BufRead) -> Vec<u64> {
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

/// PostgreSQL truncates identifiers to 63 bytes: names we make must fit.
const MAX_IDENT: usize = 63;

/// `{base}{suffix}`, with `base` cut (at a character boundary) so the whole fits.
pub(crate) fn derived_name(base: &str, suffix: &str) -> String {
    let mut cut = MAX_IDENT.saturating_sub(suffix.len()).min(base.len());
    while !base.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", &base[..cut])
}

/// [`derived_name`], or with `_2`, `_3`, ... after `suffix` when `taken`
/// has that name already (two restores in the same second).
pub(crate) fn free_derived_name(base: &str, suffix: &str, taken: &[String]) -> String {
    (1..)
        .map(|n| match n {
            1 => derived_name(base, suffix),
            n => derived_name(base, &format!("{suffix}_{n}")),
        })
        .find(|name| !taken.contains(name))
        .expect("a free name among unboundedly many")
}

/// What marks a database as one of this tool's scratch databases (its comment).
const SCRATCH_MARK: &str = "xtask scratch: ";

/// A database a dump is loaded into before anything else changes. Dropped
/// (with any connections) when it goes out of scope, unless swapped in. Its
/// comment marks it as ours (`xtask scratch: pid N on HOST since T`), so a
/// later run drops it if this process dies before it can.
pub(crate) struct Scratch<'a> {
    client: &'a Client,
    admin: &'a Connection,
    pub(crate) name: String,
    armed: bool,
}

impl<'a> Scratch<'a> {
    /// Creates the database with `locale` (of the database it replaces, or of
    /// the backup's; `None`: the server's defaults).
    pub(crate) fn create(
        client: &'a Client,
        admin: &'a Connection,
        server: &PgVersion,
        name: &str,
        locale: Option<&Locale>,
    ) -> anyhow::Result<Scratch<'a>> {
        let mut create = format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(name));
        if let Some(locale) = locale {
            let (options, missing) = locale.create_options(server.major);
            create.push_str(&options);
            if let Some(what) = missing {
                ui::warn(format!(
                    "PostgreSQL {server} cannot give the restored database {what}: it gets the server's default"
                ));
            }
        }
        let mark = format!(
            "{SCRATCH_MARK}pid {} on {} since {}",
            std::process::id(),
            hostname(),
            OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        );
        client
            .script(
                admin,
                &format!(
                    "{create};\nCOMMENT ON DATABASE {} IS :'mark';",
                    quote_ident(name)
                ),
                &[("mark", &mark)],
            )
            .map_err(|e| format_err!("cannot create the scratch database: {e}"))?;
        Ok(Scratch {
            client,
            admin,
            name: name.to_string(),
            armed: true,
        })
    }

    /// The scratch database, to load into.
    pub(crate) fn conn(&self, like: &Connection) -> Connection {
        like.with_db(&self.name)
    }

    /// Renames the loaded scratch database to `target` (an existing target
    /// becomes `previous`) and gives it `props` (statements naming `target`),
    /// in one transaction after the target's other connections are closed.
    /// On failure nothing changed, and the target takes connections again.
    pub(crate) fn swap_in(
        mut self,
        target: &str,
        previous: Option<&str>,
        props: &[String],
    ) -> anyhow::Result<()> {
        let (client, admin) = (self.client, self.admin);
        let reopen = |db: &str| {
            client.script(
                admin,
                "ALTER DATABASE :\"db\" ALLOW_CONNECTIONS true;",
                &[("db", db)],
            )
        };
        if previous.is_some() {
            let blocked = client.script(
                admin,
                "ALTER DATABASE :\"target\" ALLOW_CONNECTIONS false;
                 SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity WHERE datname = :'target' AND pid <> pg_backend_pid();",
                &[("target", target)],
            );
            if let Err(e) = blocked {
                let _ = reopen(target);
                return Err(anyhow::Error::new(e)
                    .context("the swap failed; the target database was not changed"));
            }
        }
        let mut swap = String::from("BEGIN;\n");
        if let Some(prev) = previous {
            swap.push_str(&format!(
                "ALTER DATABASE {} RENAME TO {};\n",
                quote_ident(target),
                quote_ident(prev)
            ));
        }
        swap.push_str(&format!(
            "ALTER DATABASE {} RENAME TO {};\n",
            quote_ident(&self.name),
            quote_ident(target)
        ));
        if props.is_empty() {
            // No properties recorded: at least not our mark.
            swap.push_str(&format!(
                "COMMENT ON DATABASE {} IS NULL;\n",
                quote_ident(target)
            ));
        }
        for statement in props {
            swap.push_str(statement);
            swap.push('\n');
        }
        swap.push_str("COMMIT;\n");
        let swapped = client.script(admin, &swap, &[]);
        if let Err(e) = swapped {
            // Did it commit before the error reached us (a lost connection)?
            let names = client
                .script(
                    admin,
                    "SELECT datname FROM pg_database WHERE datname = :'scratch';",
                    &[("scratch", &self.name)],
                )
                .unwrap_or_else(|_| self.name.clone());
            if names.is_empty() {
                self.armed = false;
                ui::warn(format!("the swap committed, but its reply was lost ({e})"));
            } else {
                if previous.is_some() {
                    let _ = reopen(target);
                }
                return Err(anyhow::Error::new(e)
                    .context("the swap failed; the target database was not changed"));
            }
        }
        self.armed = false;
        if let Some(prev) = previous
            && let Err(e) = reopen(prev)
        {
            ui::warn(format!(
                "restored; the previous database {prev} still refuses connections ({e}): ALTER DATABASE ... ALLOW_CONNECTIONS true"
            ));
        }
        Ok(())
    }
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        if self.armed {
            match drop_database(self.client, self.admin, &self.name) {
                Ok(()) => ui::detail(format!("dropped the scratch database {}", self.name)),
                Err(e) => ui::warn(format!(
                    "could not drop the scratch database {}: {e}",
                    self.name
                )),
            }
        }
    }
}

fn drop_database(client: &Client, admin: &Connection, name: &str) -> Result<(), PgError> {
    client
        .script(
            admin,
            "DROP DATABASE IF EXISTS :\"db\" WITH (FORCE);",
            &[("db", name)],
        )
        .map(drop)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Scratch databases this tool left (their process is gone): (name, mark).
pub(crate) fn leftovers(
    client: &Client,
    admin: &Connection,
) -> Result<Vec<(String, String)>, PgError> {
    let out = client.script(
        admin,
        "SELECT d.datname || E'\\t' || shobj_description(d.oid, 'pg_database') FROM pg_database d
         WHERE starts_with(shobj_description(d.oid, 'pg_database'), :'mark') ORDER BY 1;",
        &[("mark", SCRATCH_MARK)],
    )?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, mark)| !alive(mark))
        .map(|(n, m)| (n.to_string(), m.to_string()))
        .collect())
}

/// Whether the run a mark names may still be going: another machine's, or
/// a live process on this one.
fn alive(mark: &str) -> bool {
    let rest = mark.strip_prefix(SCRATCH_MARK).unwrap_or("");
    let mut words = rest.split(' ');
    let (Some("pid"), Some(pid), Some("on"), Some(host)) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return true;
    };
    host != hostname() || std::path::Path::new("/proc").join(pid).exists()
}

/// Drops the scratch databases a killed run of this tool left; says which.
pub(crate) fn drop_leftovers(client: &Client, admin: &Connection) {
    for (name, mark) in leftovers(client, admin).unwrap_or_default() {
        match drop_database(client, admin, &name) {
            Ok(()) => ui::info(format!("dropped {name}, left by a run that died ({mark})")),
            Err(e) => ui::warn(format!(
                "could not drop {name}, left by a run that died: {e}"
            )),
        }
    }
}

/// The statements that give `target` its properties: the backup's, else
/// those of the database it replaces (a restore never reopens a locked-down
/// database to everyone).
pub(crate) fn props_for(
    target: &str,
    backup: Option<&DatabaseProps>,
    existing: Option<&DatabaseProps>,
    skip: Skip,
) -> Vec<String> {
    backup
        .or(existing)
        .map(|p| p.sql(target, skip))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_restore_in_the_same_second_keeps_its_own_previous_name() {
        let taken = vec![
            "app_pre_restore_20261124_020000".to_string(),
            "app_pre_restore_20261124_020000_2".to_string(),
        ];
        assert_eq!(
            free_derived_name("app", "_pre_restore_20261124_020000", &[]),
            "app_pre_restore_20261124_020000"
        );
        assert_eq!(
            free_derived_name("app", "_pre_restore_20261124_020000", &taken[..1]),
            "app_pre_restore_20261124_020000_2"
        );
        assert_eq!(
            free_derived_name("app", "_pre_restore_20261124_020000", &taken),
            "app_pre_restore_20261124_020000_3"
        );
        let long = "é".repeat(40);
        let taken = vec![derived_name(&long, "_pre_restore_20261124_020000")];
        let n = free_derived_name(&long, "_pre_restore_20261124_020000", &taken);
        assert!(
            n.len() <= 63 && n.ends_with("_pre_restore_20261124_020000_2"),
            "{n}"
        );
    }

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
    fn copy_tags_are_read_in_order() {
        let out = b"SET\nCREATE TABLE\nCOPY 3\n set_config \n------------\n \n(1 row)\n\nCOPY 0\nALTER TABLE\nCOPY 12\n";
        assert_eq!(copy_tags(&out[..]), vec![3, 0, 12]);
    }

    #[test]
    fn sql_errors_say_whose_they_are() {
        let e = |stderr: &str| match sql_error(stderr) {
            LoadError::Sql {
                message,
                environment,
            } => (message, environment),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            e("psql:<stdin>:40: ERROR:  42704: role \"ghost\" does not exist\nLOCATION:  x"),
            ("ERROR:  role \"ghost\" does not exist (create the roles first with --with-globals, or load without them: --no-owner --no-acl)".to_string(), true)
        );
        assert!(!e("psql:<stdin>:9: ERROR:  42601: syntax error at or near \"x\"").1);
        assert!(
            e("psql:<stdin>:9: ERROR:  53100: could not extend file: No space left on device").1
        );
        assert!(e("psql: error: connection to server on socket failed: FATAL:  the database system is shutting down").1);
        assert!(e("server closed the connection unexpectedly").1);
    }

    #[test]
    fn restrict_keys_are_fresh_and_plain() {
        let (a, b) = (restrict_key(), restrict_key());
        assert_ne!(a, b);
        assert!(a.len() == 24 && a.bytes().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn a_load_with_fewer_rows_than_the_backup_is_refused_more_is_not() {
        let rows = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
            pairs.iter().map(|(t, n)| (t.to_string(), *n)).collect()
        };
        let backup = rows(&[("public.t", 20_000), ("public.config", 2), ("s.\"x y\"", 7)]);
        // An extension's configuration table holds its own rows besides the dump's.
        let more = rows(&[("public.t", 20_000), ("public.config", 5), ("s.\"x y\"", 7)]);
        assert!(refuse_lost_rows(&more, &backup, 2).is_ok());
        // A table the server could not count is judged by the archive alone.
        let fewer = rows(&[("public.t", 19_995), ("public.config", 5)]);
        let err = refuse_lost_rows(&fewer, &backup, 2).unwrap_err();
        assert!(!err.is_about_the_file(), "the backup is whole: {err}");
        assert_eq!(
            err.to_string(),
            "pg_restore left fewer rows than the backup holds (public.t 19995 of 20000): \
             try again with --jobs 1"
        );
        let none = rows(&[("public.t", 0), ("public.config", 0), ("s.\"x y\"", 0)]);
        assert_eq!(
            refuse_lost_rows(&none, &backup, 1).unwrap_err().to_string(),
            "pg_restore left fewer rows than the backup holds (public.config 0 of 2, \
             public.t 0 of 20000, s.\"x y\" 0 of 7): see the server's log for what removed them"
        );
        let many: BTreeMap<String, u64> = (0..8).map(|i| (format!("public.t{i}"), 1)).collect();
        let err = refuse_lost_rows(&BTreeMap::new(), &many, 2);
        assert!(err.is_ok(), "nothing counted, nothing known lost");
        let counted: BTreeMap<String, u64> = many.keys().map(|t| (t.clone(), 0)).collect();
        let err = refuse_lost_rows(&counted, &many, 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("public.t4 0 of 1 and 3 more)"), "{err}");
    }

    #[test]
    fn restored_rows_are_counted_by_quoted_names_never_spliced_text() {
        let plain = TableName::new("public", "film");
        let odd = TableName::new("my \"schema\"", "o'rder; DROP TABLE x");
        assert_eq!(
            relkinds_sql(&[&plain, &odd]),
            "SET standard_conforming_strings = on;\n\
             SELECT coalesce(c.relkind::text, '-') FROM (VALUES (0, 'public', 'film'), \
             (1, 'my \"schema\"', 'o''rder; DROP TABLE x')) AS v(i, s, t) \
             LEFT JOIN pg_namespace n ON n.nspname = v.s \
             LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = v.t ORDER BY v.i;\n"
        );
        // A table's own rows (ONLY: not its inheritance children's); a
        // partitioned table's through its partitions.
        assert_eq!(
            row_counts_sql(&[(&plain, true), (&odd, false)]),
            "SET row_security = off;\n\
             SELECT n FROM (SELECT 0 AS i, count(*) AS n FROM ONLY \"public\".\"film\" \
             UNION ALL SELECT 1 AS i, count(*) AS n FROM \"my \"\"schema\"\"\".\"o'rder; DROP TABLE x\") \
             AS counts ORDER BY i;\n"
        );
        // The statistics of the same tables, the names as literals.
        let sql = inserted_rows_sql(&[(&plain, true), (&odd, false)]);
        assert!(
            sql.ends_with(
                "SELECT n FROM (SELECT 0 AS i, pg_stat_get_tuples_inserted('\"public\".\"film\"'::regclass) AS n \
                 UNION ALL SELECT 1 AS i, (SELECT coalesce(sum(pg_stat_get_tuples_inserted(relid)), 0)::bigint \
                 FROM pg_partition_tree('\"my \"\"schema\"\"\".\"o''rder; DROP TABLE x\"'::regclass) WHERE isleaf) AS n) \
                 AS inserted ORDER BY i;\n"
            ),
            "{sql}"
        );
    }
}
