//! Where backups are kept, behind one small trait: the local directory
//! ([`LocalStore`]) and the off-site copy (`S3Store`). Everything else
//! (which sets are complete, the newest usable one, what retention deletes,
//! copying a set from one store to another) is written once on top of it.
//!
//! A backup exists only as a complete set: the dump, its `.sha256` and its
//! `.meta`. Anything else in a store is left alone.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::json;
use time::OffsetDateTime;

use crate::core::config::Settings;
use crate::core::format::Layout;
use crate::core::manifest::Manifest;
use crate::core::meta::{self, BackupMeta, Content, Run, SourceId, parse_sha256_line};
use crate::core::metrics::{self, Metrics};
use crate::core::naming::{BackupName, BackupType, META_SUFFIX, SHA256_SUFFIX};
use crate::core::retention::{self, Candidate, Decision, Policy, Reason};
use crate::services::codec::HashingWriter;
use crate::services::fsutil::{self, LOCK_PREFIX, PARTIAL_PREFIX, PartialDir, PartialFile};
use crate::services::s3::S3Store;

/// The files of one backup name the tool recognises, and which exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BackupSet {
    pub(crate) name: BackupName,
    pub(crate) has_dump: bool,
    pub(crate) has_sha256: bool,
    pub(crate) has_meta: bool,
}

impl BackupSet {
    pub(crate) fn is_complete(&self) -> bool {
        self.has_dump && self.has_sha256 && self.has_meta
    }

    /// The names of the files of this set that exist, dump first.
    pub(crate) fn files(&self) -> Vec<String> {
        [
            (self.has_dump, self.name.file_name()),
            (self.has_sha256, self.name.sha256_name()),
            (self.has_meta, self.name.meta_name()),
        ]
        .into_iter()
        .filter_map(|(has, f)| has.then_some(f))
        .collect()
    }
}

/// Everything in a store, sorted into the tool's sets and the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Inventory {
    /// Oldest first.
    pub(crate) sets: Vec<BackupSet>,
    /// Files the tool did not name (never touched), except its own
    /// `metrics/` directory, temporary `.xtask-partial-*` files and `.xtask-lock-*` files.
    pub(crate) foreign: Vec<String>,
    /// Sizes of the sets' files.
    pub(crate) sizes: BTreeMap<String, u64>,
}

/// A set with a dump, and what its `.meta` and `.sha256` say.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    pub(crate) set: BackupSet,
    pub(crate) meta: Option<BackupMeta>,
    /// The digest the `.sha256` file names.
    pub(crate) sha256_file: Option<String>,
    pub(crate) size: u64,
}

/// Whether the recorded checksums are there and agree (not a re-read of the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ChecksumState {
    Recorded,
    Missing,
    Disagrees,
}

impl Listed {
    pub(crate) fn created_at(&self) -> OffsetDateTime {
        self.meta
            .as_ref()
            .map_or(self.set.name.timestamp, |m| m.finished_at)
    }

    pub(crate) fn checksum_state(&self) -> ChecksumState {
        match (&self.sha256_file, &self.meta) {
            (None, _) | (_, None) => ChecksumState::Missing,
            (Some(file), Some(meta))
                if file.eq_ignore_ascii_case(&meta.sha256) && meta.size_bytes == self.size =>
            {
                ChecksumState::Recorded
            }
            _ => ChecksumState::Disagrees,
        }
    }

    /// `Some(true)` verified, `Some(false)` verification failed, `None` never verified.
    pub(crate) fn verified(&self) -> Option<bool> {
        self.meta
            .as_ref()
            .and_then(|m| m.verification.as_ref())
            .map(|v| v.ok)
    }

    /// What restore takes and retention protects: complete, sidecars that
    /// agree with each other and with the file's size, not failed.
    pub(crate) fn usable(&self) -> bool {
        self.unusable_because().is_none()
    }

    /// Why restore would not take it.
    pub(crate) fn unusable_because(&self) -> Option<&'static str> {
        if !self.set.is_complete() {
            Some("its set is incomplete (a .sha256 or .meta is missing)")
        } else if self.checksum_state() != ChecksumState::Recorded {
            Some("its .sha256, .meta and size do not agree (the file or a sidecar was changed)")
        } else if self.verified() == Some(false) {
            Some("its last verification failed")
        } else {
            None
        }
    }

    fn source(&self) -> Option<&SourceId> {
        self.meta.as_ref().and_then(|m| m.source.as_ref())
    }
}

/// The newest complete `db-backup --all` run (of the server `source` names,
/// if given): its sets, usable, a globals set and one per database it listed.
pub(crate) fn latest_run(
    store: &dyn Store,
    source: Option<&str>,
) -> anyhow::Result<Option<(Run, Vec<Listed>)>> {
    let mut runs: BTreeMap<String, (Run, Vec<Listed>)> = BTreeMap::new();
    for l in store.catalog()?.into_iter().filter(Listed::usable) {
        let Some(run) = l.meta.as_ref().and_then(|m| m.run.clone()) else {
            continue;
        };
        if source.is_some_and(|s| {
            l.source()
                .is_none_or(|id| id.system_identifier != s && id.host != s)
        }) {
            continue;
        }
        runs.entry(run.id.clone())
            .or_insert_with(|| (run, Vec::new()))
            .1
            .push(l);
    }
    let complete = |(run, sets): &(Run, Vec<Listed>)| {
        let has =
            |f: &dyn Fn(&BackupMeta) -> bool| sets.iter().any(|l| l.meta.as_ref().is_some_and(f));
        has(&|m| m.content == Content::Globals)
            && run
                .databases
                .iter()
                .all(|db| has(&|m| m.content == Content::Database && &m.database == db))
    };
    for candidate in runs.into_values().rev() {
        if complete(&candidate) {
            return Ok(Some(candidate));
        }
        let (run, sets) = &candidate;
        let mut missing: Vec<&str> = run
            .databases
            .iter()
            .filter(|db| {
                !sets.iter().any(|l| {
                    l.meta
                        .as_ref()
                        .is_some_and(|m| m.content == Content::Database && &m.database == *db)
                })
            })
            .map(String::as_str)
            .collect();
        if !sets.iter().any(|l| {
            l.meta
                .as_ref()
                .is_some_and(|m| m.content == Content::Globals)
        }) {
            missing.insert(0, "the globals");
        }
        crate::ui::warn(format!(
            "passing over the run of {}: it has no usable backup of {}",
            run.id,
            missing.join(", ")
        ));
    }
    Ok(None)
}

/// The newest usable globals backup, of the server `source` if given (else any).
pub(crate) fn latest_globals(
    store: &dyn Store,
    source: Option<&SourceId>,
) -> anyhow::Result<Option<Listed>> {
    let mut globals: Vec<Listed> = store
        .catalog()?
        .into_iter()
        .filter(|l| {
            l.usable()
                && l.meta
                    .as_ref()
                    .is_some_and(|m| m.content == Content::Globals)
        })
        .filter(|l| {
            source.is_none_or(|s| {
                l.source()
                    .is_none_or(|id| id.system_identifier == s.system_identifier)
            })
        })
        .collect();
    globals.sort_by(|a, b| (a.created_at(), &a.set.name).cmp(&(b.created_at(), &b.set.name)));
    Ok(globals.pop())
}

/// The newest usable backup, and the newer ones passed over with the reason.
pub(crate) struct Latest {
    pub(crate) chosen: Listed,
    pub(crate) skipped: Vec<(String, &'static str)>,
}

/// What `--latest` takes from `store`: the newest usable backup of
/// `database` (of `kind`; of the server `source` names, by its identifier
/// or host). Backups of several servers in one store are never mixed up:
/// without `source` that is a refusal that lists them.
pub(crate) fn pick_latest(
    store: &dyn Store,
    database: &str,
    kind: Option<BackupType>,
    source: Option<&str>,
) -> anyhow::Result<Option<Latest>> {
    let mut candidates: Vec<Listed> = store
        .catalog()?
        .into_iter()
        .filter(|l| l.set.name.database == database && kind.is_none_or(|k| l.set.name.kind == k))
        .filter(|l| {
            source.is_none_or(|s| {
                l.source()
                    .is_some_and(|id| id.system_identifier == s || id.host == s)
            })
        })
        .collect();
    candidates.sort_by(|a, b| (b.created_at(), &b.set.name).cmp(&(a.created_at(), &a.set.name)));
    if source.is_none() {
        let mut servers: Vec<&SourceId> = candidates
            .iter()
            .filter(|l| l.usable())
            .filter_map(Listed::source)
            .collect();
        servers.sort();
        servers.dedup_by(|a, b| a.system_identifier == b.system_identifier);
        if servers.len() > 1 {
            anyhow::bail!(
                "the backups of database '{database}' in {} come from {} servers ({}): say which with --source",
                store.location(),
                servers.len(),
                servers
                    .iter()
                    .map(|s| format!("{} at {}", s.system_identifier, s.host))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let mut skipped = Vec::new();
    for l in candidates {
        match l.unusable_because() {
            None => return Ok(Some(Latest { chosen: l, skipped })),
            Some(why) => skipped.push((l.set.name.file_name(), why)),
        }
    }
    Ok(None)
}

/// One name in a store, with its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) size: u64,
    /// False for directories (and anything else that is not a plain file).
    pub(crate) is_file: bool,
    /// A directory (a directory backup's files are in it; its size is theirs).
    pub(crate) is_dir: bool,
}

impl Entry {
    /// A plain file (or object) of `size` bytes.
    pub(crate) fn file(name: String, size: u64) -> Entry {
        Entry {
            name,
            size,
            is_file: true,
            is_dir: false,
        }
    }
}

/// The files of the directory backup `dir` in `store`, when every one of
/// them is in its manifest: the tool wrote them all. Anything else in it (a
/// file the manifest does not list, a subdirectory, no readable manifest)
/// and nothing in it may be deleted.
pub(crate) fn listed_members(store: &dyn Store, dir: &str) -> io::Result<Vec<Entry>> {
    let refuse = |why: String| {
        io::Error::other(format!(
            "{}: {why}: nothing in it was deleted",
            store.display(dir)
        ))
    };
    let (manifest, _) = read_manifest(store, dir)
        .map_err(|e| refuse(format!("its manifest cannot be read ({e})")))?;
    let members = store.members(dir)?;
    if let Some(foreign) = members
        .iter()
        .find(|m| !m.is_file || !manifest.files.contains_key(&m.name))
    {
        return Err(refuse(format!(
            "{} is not in its manifest (not a file this tool wrote)",
            foreign.name
        )));
    }
    Ok(members)
}

/// The manifest (`.sha256`) of the directory backup `dir` in `store`, and
/// its digest; one that does not parse is `InvalidData`.
pub(crate) fn read_manifest(store: &dyn Store, dir: &str) -> io::Result<(Manifest, String)> {
    let text = store.read(&format!("{dir}{SHA256_SUFFIX}"))?;
    Manifest::read(&String::from_utf8_lossy(&text), dir)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Whether `name` is a directory backup's (`….dir`), whose dump is a
/// directory of files in a local store and the objects under `name/` in S3.
pub(crate) fn is_directory_backup(name: &str) -> bool {
    Layout::split(name).is_some_and(|(_, l)| l == Layout::Directory)
}

/// A file being written into a store: nothing is visible under its name
/// until [`NewFile::commit`], and nothing is left if it is dropped before.
pub(crate) trait NewFile: Write + Send {
    /// Every byte is written: make them durable and publish the file.
    /// `sha256` is what the bytes hash to (a store that cannot check its
    /// copy otherwise re-reads it).
    fn commit(self: Box<Self>, sha256: &str) -> io::Result<()>;
}

/// Where backups are kept: the local directory or the off-site copy.
pub(crate) trait Store: Send + Sync {
    /// For messages: the directory, or `s3://bucket/prefix/`.
    fn location(&self) -> String;
    /// What is directly in the store. A missing store holds nothing.
    fn entries(&self) -> io::Result<Vec<Entry>>;
    /// A small file, whole (`NotFound` when it is not there).
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    /// A file as a stream.
    fn open(&self, name: &str) -> io::Result<Box<dyn Read + Send>>;
    /// Removes a file (a directory backup's directory: the files in it,
    /// then it); one already gone is not an error.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// The files directly in a directory backup's directory.
    fn members(&self, dir: &str) -> io::Result<Vec<Entry>>;
    /// Writes a small file whole, replacing it.
    fn put(&self, name: &str, bytes: &[u8]) -> io::Result<()>;
    /// Writes a small file that must not exist yet (`AlreadyExists`), where
    /// the store can tell; it reserves a backup's name.
    fn put_new(&self, name: &str, bytes: &[u8]) -> io::Result<()>;
    /// Starts writing the file `name`.
    fn create(&self, name: &str) -> io::Result<Box<dyn NewFile + '_>>;

    /// The file's path on this machine, where the store is a directory here.
    fn local_path(&self, _name: &str) -> Option<PathBuf> {
        None
    }

    /// A file's path for messages.
    fn display(&self, name: &str) -> String {
        format!("{}/{name}", self.location().trim_end_matches('/'))
    }

    /// Everything in the store, sorted into the tool's sets and the rest.
    fn inventory(&self) -> io::Result<Inventory> {
        let mut sets: BTreeMap<String, BackupSet> = BTreeMap::new();
        let mut foreign = Vec::new();
        let mut sizes = BTreeMap::new();
        for entry in self.entries()? {
            let file = entry.name;
            if file == "metrics"
                || file.starts_with(PARTIAL_PREFIX)
                || file.starts_with(LOCK_PREFIX)
            {
                continue;
            }
            let (dump, part) = if let Some(d) = file.strip_suffix(SHA256_SUFFIX) {
                (d, 1)
            } else if let Some(d) = file.strip_suffix(META_SUFFIX) {
                (d, 2)
            } else {
                (file.as_str(), 0)
            };
            // A directory backup's dump is a directory; everything else is a file.
            let Some(name) = BackupName::parse(dump).filter(|n| {
                if part == 0 && n.layout == Layout::Directory {
                    entry.is_dir
                } else {
                    entry.is_file
                }
            }) else {
                foreign.push(file);
                continue;
            };
            let set = sets.entry(dump.to_string()).or_insert(BackupSet {
                name,
                has_dump: false,
                has_sha256: false,
                has_meta: false,
            });
            match part {
                0 => set.has_dump = true,
                1 => set.has_sha256 = true,
                _ => set.has_meta = true,
            }
            sizes.insert(file, entry.size);
        }
        let mut sets: Vec<BackupSet> = sets.into_values().collect();
        sets.sort_by(|a, b| a.name.cmp(&b.name));
        foreign.sort();
        Ok(Inventory {
            sets,
            foreign,
            sizes,
        })
    }

    /// A set's `.meta`, if it is there and reads.
    fn read_meta(&self, name: &BackupName) -> anyhow::Result<BackupMeta> {
        let bytes = self.read(&name.meta_name())?;
        BackupMeta::from_json(&String::from_utf8_lossy(&bytes))
            .map_err(|e| anyhow::format_err!("{}: {e}", name.meta_name()))
    }

    /// Every set with a dump, with what its sidecars say, oldest first.
    fn catalog(&self) -> io::Result<Vec<Listed>> {
        let inventory = self.inventory()?;
        let mut out = Vec::new();
        for set in inventory.sets.into_iter().filter(|s| s.has_dump) {
            let meta = set
                .has_meta
                .then(|| self.read_meta(&set.name).ok())
                .flatten();
            // A directory backup's `.sha256` is its manifest: `.meta` records the manifest's digest.
            let sha256_file = match set.name.layout {
                _ if !set.has_sha256 => None,
                Layout::Directory => self
                    .read(&set.name.sha256_name())
                    .ok()
                    .and_then(|t| {
                        Manifest::read(&String::from_utf8_lossy(&t), &set.name.file_name()).ok()
                    })
                    .map(|(_, digest)| digest),
                _ => self
                    .read(&set.name.sha256_name())
                    .ok()
                    .and_then(|t| parse_sha256_line(&String::from_utf8_lossy(&t)))
                    .map(|(hex, _)| hex),
            };
            let size = inventory
                .sizes
                .get(&set.name.file_name())
                .copied()
                .unwrap_or(0);
            out.push(Listed {
                set,
                meta,
                sha256_file,
                size,
            });
        }
        Ok(out)
    }

    /// The newest usable backup of `database` (of `kind` if given), decided
    /// by `.meta`'s `finished_at`.
    fn latest(&self, database: &str, kind: Option<BackupType>) -> io::Result<Option<Listed>> {
        Ok(self
            .catalog()?
            .into_iter()
            .filter(|l| {
                l.set.name.database == database && kind.is_none_or(|k| l.set.name.kind == k)
            })
            .filter(Listed::usable)
            .max_by(|a, b| (a.created_at(), &a.set.name).cmp(&(b.created_at(), &b.set.name))))
    }

    /// Whether a file of the set `name` would take, or of a set in its
    /// place in time in another layout, is there already.
    fn taken(&self, name: &BackupName) -> io::Result<bool> {
        Ok(self.entries()?.iter().any(|e| {
            let dump = e
                .name
                .strip_suffix(SHA256_SUFFIX)
                .or_else(|| e.name.strip_suffix(META_SUFFIX))
                .unwrap_or(&e.name);
            BackupName::parse(dump).is_some_and(|n| n.same_slot(name))
        }))
    }
}

/// The first name from `name` on (`-2`, `-3`, ...) that `store` does not have.
pub(crate) fn free_name(store: &dyn Store, mut name: BackupName) -> io::Result<BackupName> {
    while store.taken(&name)? {
        name = name.clone().with_seq(name.seq + 1);
    }
    Ok(name)
}

/// Publishes a set: the name is reserved with `.sha256` (exclusively where
/// the store can), `.meta` follows, and the dump comes last, so once the dump
/// is visible its set is complete. On failure the sidecars go again.
pub(crate) fn commit_set(
    store: &dyn Store,
    file: Box<dyn NewFile + '_>,
    name: &BackupName,
    meta: &BackupMeta,
) -> anyhow::Result<()> {
    let line = meta::sha256_line(&meta.sha256, &name.file_name());
    store
        .put_new(&name.sha256_name(), line.as_bytes())
        .with_context(|| format!("cannot write {}", store.display(&name.sha256_name())))?;
    let result = store
        .put(&name.meta_name(), meta.to_json().as_bytes())
        .with_context(|| format!("cannot write {}", store.display(&name.meta_name())))
        .and_then(|()| {
            file.commit(&meta.sha256)
                .with_context(|| format!("cannot publish {}", store.display(&name.file_name())))
        });
    if result.is_err() {
        let _ = store.remove(&name.sha256_name());
        let _ = store.remove(&name.meta_name());
    }
    result
}

/// Publishes a directory backup's set from the directory pg_dump wrote
/// (`partial`), whose files `manifest` lists. Into a local store as one
/// rename after its sidecars (as [`commit_set`]: once the directory is
/// visible its set is complete); into S3 each file uploaded and checked,
/// then the sidecars, and on failure everything sent goes again.
pub(crate) fn commit_dir_set(
    store: &dyn Store,
    partial: PartialDir,
    manifest: &Manifest,
    name: &BackupName,
    meta: &BackupMeta,
) -> anyhow::Result<()> {
    let text = manifest.render();
    let dir = name.file_name();
    let Some(path) = store.local_path(&dir) else {
        let contents = LocalStore::new(partial.contents());
        return upload_dir_set(&contents, "", store, manifest, name, meta);
    };
    store
        .put_new(&name.sha256_name(), text.as_bytes())
        .with_context(|| format!("cannot write {}", store.display(&name.sha256_name())))?;
    let result = store
        .put(&name.meta_name(), meta.to_json().as_bytes())
        .with_context(|| format!("cannot write {}", store.display(&name.meta_name())))
        .and_then(|()| {
            partial
                .publish(&path)
                .with_context(|| format!("cannot publish {}", store.display(&dir)))
        });
    if result.is_err() {
        let _ = store.remove(&name.sha256_name());
        let _ = store.remove(&name.meta_name());
    }
    result
}

/// Every file `manifest` lists, from `from` (under `from_dir`, `""` when
/// `from` is the directory itself) into `to` under `name.dir/`, each
/// checked against its digest there; then the sidecars. Nothing is left
/// behind on failure.
fn upload_dir_set(
    from: &dyn Store,
    from_dir: &str,
    to: &dyn Store,
    manifest: &Manifest,
    name: &BackupName,
    meta: &BackupMeta,
) -> anyhow::Result<()> {
    let dir = name.file_name();
    let mut sent: Vec<String> = Vec::new();
    let mut reserved = false;
    let result = (|| -> anyhow::Result<()> {
        for (file, hex) in &manifest.files {
            let source = if from_dir.is_empty() {
                file.clone()
            } else {
                format!("{from_dir}/{file}")
            };
            let member = format!("{dir}/{file}");
            let mut out = to
                .create(&member)
                .with_context(|| format!("cannot write to {}", to.location()))?;
            // The bytes sent must be the ones the manifest names: a file
            // changed since its backup is not copied (dropped, the upload is aborted).
            let mut hashed = HashingWriter::new(&mut out);
            io::copy(
                &mut from
                    .open(&source)
                    .with_context(|| format!("cannot read {}", from.display(&source)))?,
                &mut hashed,
            )
            .with_context(|| format!("cannot copy {member} to {}", to.location()))?;
            let (actual, _) = hashed.finish();
            if !actual.eq_ignore_ascii_case(hex) {
                anyhow::bail!(
                    "{}: it hashes to {actual}, its manifest says {hex}: it changed since the backup; nothing was copied",
                    from.display(&source)
                );
            }
            sent.push(member.clone());
            out.commit(hex)
                .with_context(|| format!("cannot publish {}", to.display(&member)))?;
        }
        to.put_new(&name.sha256_name(), manifest.render().as_bytes())
            .with_context(|| format!("cannot write {}", to.display(&name.sha256_name())))?;
        reserved = true;
        to.put(&name.meta_name(), meta.to_json().as_bytes())
            .with_context(|| format!("cannot write {}", to.display(&name.meta_name())))
    })();
    if result.is_err() {
        // Only what this run wrote goes.
        for member in &sent {
            let _ = to.remove(member);
        }
        if reserved {
            let _ = to.remove(&name.sha256_name());
            let _ = to.remove(&name.meta_name());
        }
    }
    result
}

/// Copies a complete set from one store to another (the off-site copy of a
/// local backup), the dump streamed; nothing is overwritten.
pub(crate) fn copy_set(from: &dyn Store, to: &dyn Store, name: &BackupName) -> anyhow::Result<()> {
    if to.taken(name)? {
        anyhow::bail!(
            "{} already exists in {}: it was copied before (nothing was overwritten)",
            name.file_name(),
            to.location()
        );
    }
    let meta = from.read_meta(name)?;
    if name.layout == Layout::Directory {
        let (manifest, _) = read_manifest(from, &name.file_name())?;
        return upload_dir_set(from, &name.file_name(), to, &manifest, name, &meta);
    }
    let mut file = to.create(&name.file_name())?;
    io::copy(&mut from.open(&name.file_name())?, &mut file)?;
    commit_set(to, file, name, &meta)
}

/// The local backup directory, and where its metrics go.
#[derive(Debug, Clone)]
pub(crate) struct LocalStore {
    pub(crate) dir: PathBuf,
    metrics: PathBuf,
}

impl LocalStore {
    pub(crate) fn new(dir: impl Into<PathBuf>) -> LocalStore {
        let dir = dir.into();
        LocalStore {
            metrics: dir.join("metrics"),
            dir,
        }
    }

    /// The backup directory of the settings, with their metrics directory.
    pub(crate) fn of(settings: &Settings) -> LocalStore {
        LocalStore {
            dir: settings.backup_dir.clone(),
            metrics: settings.metrics_dir.clone(),
        }
    }

    pub(crate) fn path(&self, file_name: &str) -> PathBuf {
        self.dir.join(file_name)
    }

    pub(crate) fn metrics_dir(&self) -> PathBuf {
        self.metrics.clone()
    }

    /// [`LocalStore::update_metrics`] where metrics are best effort: a failure is a warning.
    pub(crate) fn record_metrics(&self, change: impl FnOnce(&mut Metrics)) {
        if let Err(e) = self.update_metrics(change) {
            crate::ui::warn(format!("could not write the metrics: {e}"));
        }
    }

    /// Read-modify-write of the metrics file under an exclusive lock, so
    /// concurrent runs for other databases do not lose each other's series.
    pub(crate) fn update_metrics(&self, change: impl FnOnce(&mut Metrics)) -> io::Result<PathBuf> {
        // node_exporter reads the file as another user: the directory is open
        // to read (the backups' directory need only be passable, 0711).
        let dir = self.metrics_dir();
        fs::DirBuilder::new().recursive(true).create(&dir)?;
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o755));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(dir.join(".lock"))?;
        lock.lock()?;
        let path = dir.join(metrics::FILE_NAME);
        let mut m = match fs::read_to_string(&path) {
            Ok(text) => Metrics::parse(&text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Metrics::default(),
            Err(e) => return Err(e),
        };
        change(&mut m);
        fsutil::write_atomic(&path, m.render().as_bytes())?;
        // node_exporter reads the file as another user: metrics hold no secrets.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
        Ok(path)
    }
}

impl Store for LocalStore {
    fn local_path(&self, name: &str) -> Option<PathBuf> {
        Some(self.path(name))
    }

    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    fn entries(&self) -> io::Result<Vec<Entry>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry?;
            let meta = entry.metadata().ok();
            // A name that is not UTF-8 never parses as a backup: it is listed as foreign.
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            // A `.dir` that cannot be read is listed as foreign, not an error for everything.
            let members = (is_dir && is_directory_backup(&name))
                .then(|| self.members(&name).ok())
                .flatten();
            let size = match &members {
                Some(m) => m.iter().map(|e| e.size).sum(),
                None => meta.as_ref().map_or(0, |m| m.len()),
            };
            out.push(Entry {
                name,
                size,
                is_file: entry.file_type().is_ok_and(|t| t.is_file()),
                is_dir: members.is_some(),
            });
        }
        Ok(out)
    }

    fn members(&self, dir: &str) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.path(dir))? {
            let entry = entry?;
            let kind = entry.file_type()?;
            out.push(Entry {
                name: entry.file_name().to_string_lossy().into_owned(),
                size: if kind.is_file() {
                    entry.metadata()?.len()
                } else {
                    0
                },
                is_file: kind.is_file(),
                is_dir: kind.is_dir(),
            });
        }
        Ok(out)
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        fs::read(self.path(name))
    }

    fn open(&self, name: &str) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(fs::File::open(self.path(name))?))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let path = self.path(name);
        if is_directory_backup(name) && fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            let members = listed_members(self, name)?;
            for member in &members {
                match fs::remove_file(path.join(&member.name)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            return match fs::remove_dir(&path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                other => other,
            };
        }
        match fs::remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn put(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        fsutil::write_atomic(&self.path(name), bytes)
    }

    fn put_new(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        fsutil::write_new(&self.path(name), bytes)
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn NewFile + '_>> {
        let partial = PartialFile::create(&self.dir)?;
        Ok(Box::new(LocalFile {
            writer: partial.writer()?,
            partial,
            path: self.path(name),
        }))
    }

    fn display(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

/// A local file being written: a partial file, linked to its name at commit.
struct LocalFile {
    writer: fs::File,
    partial: PartialFile,
    path: PathBuf,
}

impl Write for LocalFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

impl NewFile for LocalFile {
    fn commit(self: Box<Self>, _sha256: &str) -> io::Result<()> {
        self.writer.sync_all()?;
        self.partial.publish(&self.path)
    }
}

/// The backups a task reads: the backup directory, or with `--remote` the off-site copy.
pub(crate) struct Backups {
    pub(crate) local: LocalStore,
    remote: Option<std::sync::Arc<S3Store>>,
}

impl Backups {
    pub(crate) fn open(settings: &Settings, remote: bool) -> anyhow::Result<Backups> {
        Ok(Backups {
            local: LocalStore::of(settings),
            remote: if remote {
                Some(std::sync::Arc::new(S3Store::connect(settings, "--remote")?))
            } else {
                None
            },
        })
    }

    /// Where listing, `latest` and the catalog come from.
    pub(crate) fn store(&self) -> std::sync::Arc<dyn Store> {
        match &self.remote {
            Some(r) => r.clone(),
            None => std::sync::Arc::new(self.local.clone()),
        }
    }

    pub(crate) fn is_remote(&self) -> bool {
        self.remote.is_some()
    }
}

/// One backup's line in a retention report.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct PruneRow {
    pub(crate) file: String,
    pub(crate) database: String,
    #[serde(rename = "type")]
    pub(crate) kind: String,
    #[serde(with = "time::serde::rfc3339")]
    pub(crate) finished_at: OffsetDateTime,
    pub(crate) age_seconds: i64,
    pub(crate) size_bytes: u64,
    pub(crate) delete: bool,
    pub(crate) reason: Reason,
    pub(crate) reason_text: String,
    /// Its `.meta` records a failed verification: it never counts for the rails.
    pub(crate) verification_failed: bool,
    /// The set's files that exist (what a delete removes, all together).
    pub(crate) files: Vec<String>,
}

/// What retention decided (and, unless a dry run, did) in one store.
#[derive(Debug, Clone, Default)]
pub(crate) struct PruneReport {
    pub(crate) rows: Vec<PruneRow>,
    pub(crate) foreign: Vec<String>,
    pub(crate) dry_run: bool,
}

impl PruneReport {
    pub(crate) fn deleted(&self) -> usize {
        self.rows.iter().filter(|r| r.delete).count()
    }

    /// Bytes the deletions free (or would free, in a dry run).
    pub(crate) fn freed_bytes(&self) -> u64 {
        self.rows
            .iter()
            .filter(|r| r.delete)
            .map(|r| r.size_bytes)
            .sum()
    }
}

/// Decides, and unless `dry_run`, deletes. Deleting removes the dump first,
/// so a set stops being a backup before its sidecars go.
pub(crate) fn prune(
    store: &dyn Store,
    policy: &Policy,
    now: OffsetDateTime,
    dry_run: bool,
) -> anyhow::Result<PruneReport> {
    let inventory = store
        .inventory()
        .with_context(|| format!("cannot read the backups in {}", store.location()))?;
    let listed: BTreeMap<String, Listed> = store
        .catalog()?
        .into_iter()
        .map(|l| (l.set.name.file_name(), l))
        .collect();
    let mut candidates = Vec::new();
    for set in &inventory.sets {
        let l = listed.get(&set.name.file_name());
        let meta = l.and_then(|l| l.meta.as_ref());
        candidates.push(Candidate {
            name: set.name.clone(),
            finished_at: meta.map_or(set.name.timestamp, |m| m.finished_at),
            complete: set.is_complete() && meta.is_some(),
            has_dump: set.has_dump,
            failed: meta
                .and_then(|m| m.verification.as_ref())
                .is_some_and(|v| !v.ok),
            usable: l.is_some_and(Listed::usable),
            source: meta
                .and_then(|m| m.source.as_ref())
                .map(|s| s.system_identifier.clone()),
        });
    }
    let decisions = retention::decide(&candidates, policy, now);
    let mut report = PruneReport {
        foreign: inventory.foreign.clone(),
        dry_run,
        ..PruneReport::default()
    };
    for ((set, decision), candidate) in inventory.sets.iter().zip(&decisions).zip(&candidates) {
        let Decision {
            delete,
            reason,
            age,
            ..
        } = decision;
        let files = set.files();
        if *delete && !dry_run {
            for f in &files {
                // Already gone (a concurrent prune) is as good as deleted.
                store
                    .remove(f)
                    .with_context(|| format!("cannot delete {f} from {}", store.location()))?;
            }
        }
        report.rows.push(PruneRow {
            file: set.name.file_name(),
            database: set.name.database.clone(),
            kind: set.name.kind.to_string(),
            finished_at: candidate.finished_at,
            age_seconds: age.whole_seconds(),
            size_bytes: files.iter().filter_map(|f| inventory.sizes.get(f)).sum(),
            delete: *delete,
            reason_text: if candidate.failed {
                format!("{reason} (its verification failed)")
            } else {
                reason.to_string()
            },
            verification_failed: candidate.failed,
            reason: reason.clone(),
            files,
        });
    }
    Ok(report)
}

/// `db-list` and `db-restore --list`: the backups of a store, newest first.
/// `physical`: the physical backups beside them, as JSON and as text.
pub(crate) fn print_listing(
    store: &dyn Store,
    json: bool,
    physical: Option<(serde_json::Value, String)>,
) -> anyhow::Result<std::process::ExitCode> {
    let mut listed = store.catalog()?;
    listed.sort_by(|a, b| (b.created_at(), &b.set.name).cmp(&(a.created_at(), &a.set.name)));
    let now = OffsetDateTime::now_utc();
    if json {
        let mut value = listing_json(&listed, now);
        if let Some((physical, _)) = physical {
            value["physical"] = physical;
        }
        println!("{value}");
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if listed.is_empty() {
        crate::ui::info(format!("no backups in {}", store.location()));
    } else {
        print!("{}", render_listing(&listed, now));
    }
    if let Some((_, text)) = physical {
        print!("{text}");
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn verified_text(l: &Listed) -> String {
    match l.meta.as_ref().and_then(|m| m.verification.as_ref()) {
        Some(v) if v.ok => format!("yes {}", v.verified_at.date()),
        Some(_) => "FAILED".to_string(),
        None => "no".to_string(),
    }
}

fn checksum_text(l: &Listed) -> &'static str {
    match l.checksum_state() {
        ChecksumState::Recorded => "recorded",
        ChecksumState::Missing => "MISSING",
        ChecksumState::Disagrees => "DISAGREES",
    }
}

/// The table, newest first as given.
pub(crate) fn render_listing(listed: &[Listed], now: OffsetDateTime) -> String {
    let width = listed
        .iter()
        .map(|l| l.set.name.file_name().len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$}  {:<7}  {:<20}  {:>8}  {:>9}  {:<14}  CHECKSUM",
        "BACKUP", "TYPE", "CREATED (UTC)", "AGE", "SIZE", "VERIFIED"
    );
    for l in listed {
        let created = l.created_at();
        let _ = writeln!(
            out,
            "{:<width$}  {:<7}  {:<20}  {:>8}  {:>9}  {:<14}  {}",
            l.set.name.file_name(),
            l.set.name.kind,
            format!(
                "{} {:02}:{:02}:{:02}",
                created.date(),
                created.hour(),
                created.minute(),
                created.second()
            ),
            crate::core::human::age(now - created),
            crate::core::human::bytes(l.size),
            verified_text(l),
            checksum_text(l),
        );
    }
    out
}

pub(crate) fn listing_json(listed: &[Listed], now: OffsetDateTime) -> serde_json::Value {
    let rows: Vec<_> = listed
        .iter()
        .map(|l| {
            json!({
                "file": l.set.name.file_name(),
                "database": l.set.name.database,
                "type": l.set.name.kind,
                "created_at": l.created_at().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                "age_seconds": (now - l.created_at()).whole_seconds(),
                "size_bytes": l.size,
                "complete": l.set.is_complete(),
                "checksum": l.checksum_state(),
                "verified": l.verified(),
                "usable": l.usable(),
                "sha256": l.meta.as_ref().map(|m| &m.sha256),
                "tables": l.meta.as_ref().map(|m| m.tables.len()),
                "source": l.source(),
            })
        })
        .collect();
    json!({ "backups": rows })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::meta::{Verification, example};
    use time::macros::datetime;

    #[test]
    fn only_complete_sets_count() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let a = BackupName::new("my_app", BackupType::Daily, datetime!(2026-11-01 00:00 UTC));
        let b = BackupName::new(
            "my_app",
            BackupType::Weekly,
            datetime!(2026-11-02 00:00 UTC),
        );
        let c = BackupName::new("other", BackupType::Daily, datetime!(2026-11-03 00:00 UTC));
        for f in [
            a.file_name(),
            a.sha256_name(),
            a.meta_name(),
            b.file_name(),
            b.sha256_name(),
            c.file_name(),
            c.sha256_name(),
            c.meta_name(),
        ] {
            fs::write(dir.path().join(f), b"x").unwrap();
        }
        fs::write(dir.path().join("README"), b"foreign").unwrap();
        fs::write(
            dir.path().join(c.sha256_name().replace("other", "orphan")),
            b"x",
        )
        .unwrap();
        let inv = store.inventory().unwrap();
        assert_eq!(inv.sets.len(), 4);
        assert_eq!(inv.foreign, vec!["README".to_string()]);
        let orphan = inv
            .sets
            .iter()
            .find(|s| s.name.database == "orphan")
            .unwrap();
        assert_eq!(
            (orphan.has_dump, orphan.has_sha256, orphan.is_complete()),
            (false, true, false)
        );
        assert_eq!(orphan.files(), vec![orphan.name.sha256_name()]);
        assert!(store.taken(&b).unwrap());
        assert_eq!(free_name(&store, b.clone()).unwrap(), b.clone().with_seq(2));
    }

    #[test]
    fn a_set_is_published_dump_last_and_never_over_another() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let name = BackupName::new("app", BackupType::Daily, datetime!(2026-11-01 00:00 UTC));
        let mut meta = crate::core::meta::example();
        meta.file = name.file_name();
        let mut f = store.create(&name.file_name()).unwrap();
        f.write_all(b"dump").unwrap();
        commit_set(&store, f, &name, &meta).unwrap();
        assert_eq!(fs::read(store.path(&name.file_name())).unwrap(), b"dump");
        let listed = store.catalog().unwrap();
        assert_eq!(listed.len(), 1);
        // The same name again: refused, and the first set untouched.
        let f = store.create(&name.file_name()).unwrap();
        assert!(commit_set(&store, f, &name, &meta).is_err());
        assert_eq!(fs::read(store.path(&name.file_name())).unwrap(), b"dump");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            3,
            "no partial file is left"
        );
    }

    #[test]
    fn a_directory_backup_is_a_set_with_its_manifest_and_goes_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let name = BackupName::new("app", BackupType::Daily, datetime!(2026-11-01 00:00 UTC))
            .with_layout(Layout::Directory);
        let partial = PartialDir::create(dir.path()).unwrap();
        fs::create_dir(partial.contents()).unwrap();
        fs::write(partial.contents().join("toc.dat"), b"toc").unwrap();
        fs::write(partial.contents().join("3456.dat.gz"), b"rows").unwrap();
        let (files, bytes) = fsutil::hash_directory(&partial.contents()).unwrap();
        let manifest = Manifest {
            dir: name.file_name(),
            files,
        };
        let mut meta = crate::core::meta::example();
        meta.file = name.file_name();
        meta.sha256 = Manifest::digest_of(&manifest.render());
        meta.size_bytes = bytes;
        commit_dir_set(&store, partial, &manifest, &name, &meta).unwrap();
        let listed = store.catalog().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].size, 7);
        assert_eq!(listed[0].checksum_state(), ChecksumState::Recorded);
        assert!(listed[0].usable());
        // A manifest changed after the fact disagrees with .meta.
        let sha = store.path(&name.sha256_name());
        let text = fs::read_to_string(&sha).unwrap();
        fs::write(&sha, text.replacen(&text[..2], "ff", 1)).unwrap();
        assert_eq!(
            store.catalog().unwrap()[0].checksum_state(),
            ChecksumState::Disagrees
        );
        // Something the tool did not write inside: nothing in it is deleted.
        fs::create_dir(store.path(&name.file_name()).join("notes")).unwrap();
        assert!(store.remove(&name.file_name()).is_err());
        assert!(store.path(&name.file_name()).join("toc.dat").exists());
        fs::remove_dir(store.path(&name.file_name()).join("notes")).unwrap();
        fs::write(store.path(&name.file_name()).join("notes.txt"), b"mine").unwrap();
        let err = store.remove(&name.file_name()).unwrap_err().to_string();
        assert!(err.contains("notes.txt is not in its manifest"), "{err}");
        assert!(store.path(&name.file_name()).join("toc.dat").exists());
        fs::remove_file(store.path(&name.file_name()).join("notes.txt")).unwrap();
        store.remove(&name.file_name()).unwrap();
        assert!(!store.path(&name.file_name()).exists());
        // A file named like a directory backup is not one.
        fs::write(store.path(&name.file_name()), b"x").unwrap();
        assert!(store.catalog().unwrap().is_empty());
    }

    #[test]
    fn metrics_file_is_merged() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        store
            .update_metrics(|m| m.set("backup_last_status", &[("database", "a")], 1))
            .unwrap();
        let path = store
            .update_metrics(|m| m.set("backup_last_status", &[("database", "b")], 0))
            .unwrap();
        let text = fs::read_to_string(path).unwrap();
        assert!(
            text.contains("{database=\"a\"} 1") && text.contains("{database=\"b\"} 0"),
            "{text}"
        );
    }

    fn listed(
        db: &str,
        kind: BackupType,
        at: OffsetDateTime,
        verified: Option<bool>,
        sha_ok: bool,
    ) -> Listed {
        let name = BackupName::new(db, kind, at);
        let mut meta = example();
        meta.file = name.file_name();
        meta.finished_at = at;
        meta.verification = verified.map(|ok| Verification {
            verified_at: at,
            ok,
            restore_tested: false,
            error: None,
        });
        Listed {
            set: BackupSet {
                name,
                has_dump: true,
                has_sha256: true,
                has_meta: true,
            },
            sha256_file: Some(if sha_ok {
                meta.sha256.clone()
            } else {
                "0".repeat(64)
            }),
            size: meta.size_bytes,
            meta: Some(meta),
        }
    }

    #[test]
    fn list_table_and_json() {
        let now = datetime!(2026-11-24 12:00 UTC);
        let rows = vec![
            listed(
                "app",
                BackupType::Daily,
                datetime!(2026-11-24 02:00 UTC),
                Some(true),
                true,
            ),
            listed(
                "app",
                BackupType::Weekly,
                datetime!(2026-11-23 02:00 UTC),
                None,
                false,
            ),
            listed(
                "my_app",
                BackupType::Monthly,
                datetime!(2026-11-01 02:00 UTC),
                Some(false),
                true,
            ),
        ];
        insta::assert_snapshot!(render_listing(&rows, now));
        insta::assert_json_snapshot!(listing_json(&rows, now));
    }
}
