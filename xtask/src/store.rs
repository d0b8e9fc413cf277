//! The local backup directory: which backups it holds, and its metrics file.
//!
//! A backup exists only as a complete set: the dump, its `.sha256` and its
//! `.meta`. Anything else in the directory is left alone.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::archive;
use crate::meta::{BackupMeta, parse_sha256_line};
use crate::metrics::{self, Metrics};
use crate::naming::{BackupName, BackupType, META_SUFFIX, SHA256_SUFFIX};
use time::OffsetDateTime;

/// The files of one backup name the tool recognises, and which exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSet {
    pub name: BackupName,
    pub has_dump: bool,
    pub has_sha256: bool,
    pub has_meta: bool,
}

impl BackupSet {
    pub fn is_complete(&self) -> bool {
        self.has_dump && self.has_sha256 && self.has_meta
    }

    /// The names of the files of this set that exist, dump first.
    pub fn files(&self) -> Vec<String> {
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

/// Everything in the backup directory, sorted into the tool's sets and the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Oldest first.
    pub sets: Vec<BackupSet>,
    /// Files the tool did not name (never touched), except its own
    /// `metrics/` directory, temporary `.xtask-partial-*` files and `.xtask-lock-*` files.
    pub foreign: Vec<String>,
    /// Sizes of the sets' files.
    pub sizes: BTreeMap<String, u64>,
}

/// A set with a dump, and what its `.meta` and `.sha256` say.
#[derive(Debug, Clone)]
pub struct Listed {
    pub set: BackupSet,
    pub meta: Option<BackupMeta>,
    /// The digest the `.sha256` file names.
    pub sha256_file: Option<String>,
    pub size: u64,
}

/// Whether the recorded checksums are there and agree (not a re-read of the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChecksumState {
    Recorded,
    Missing,
    Disagrees,
}

impl Listed {
    pub fn created_at(&self) -> OffsetDateTime {
        self.meta
            .as_ref()
            .map_or(self.set.name.timestamp, |m| m.finished_at)
    }

    pub fn checksum_state(&self) -> ChecksumState {
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
    pub fn verified(&self) -> Option<bool> {
        self.meta
            .as_ref()
            .and_then(|m| m.verification.as_ref())
            .map(|v| v.ok)
    }

    pub fn usable(&self) -> bool {
        self.set.is_complete()
            && self.checksum_state() == ChecksumState::Recorded
            && self.verified() != Some(false)
    }
}

/// One name in a store, with its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub size: u64,
    /// False for directories (and anything else that is not a plain file).
    pub is_file: bool,
}

/// Where backups are kept: the local directory or the off-site copy. Small
/// on purpose: list, read, stream, remove; everything else (which sets are
/// complete, the newest usable, what retention deletes) is built on it once.
pub trait Store {
    /// For messages: the directory, or `s3://bucket/prefix`.
    fn location(&self) -> String;
    /// What is directly in the store. A missing store holds nothing.
    fn entries(&self) -> io::Result<Vec<Entry>>;
    /// A small file, whole (`NotFound` when it is not there).
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    /// A file as a stream.
    fn open(&self, name: &str) -> io::Result<Box<dyn io::Read + Send>>;
    /// Removes a file; one already gone is not an error.
    fn remove(&self, name: &str) -> io::Result<()>;

    /// Everything in the store, sorted into the tool's sets and the rest.
    fn inventory(&self) -> io::Result<Inventory> {
        let mut sets: BTreeMap<String, BackupSet> = BTreeMap::new();
        let mut foreign = Vec::new();
        let mut sizes = BTreeMap::new();
        for entry in self.entries()? {
            let file = entry.name;
            if file == "metrics"
                || file.starts_with(archive::PARTIAL_PREFIX)
                || file.starts_with(archive::LOCK_PREFIX)
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
            let Some(name) = BackupName::parse(dump).filter(|_| entry.is_file) else {
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

    /// Every set the tool named, oldest first.
    fn sets(&self) -> io::Result<Vec<BackupSet>> {
        Ok(self.inventory()?.sets)
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
            let meta = if set.has_meta {
                self.read_meta(&set.name).ok()
            } else {
                None
            };
            let sha256_file = if set.has_sha256 {
                self.read(&set.name.sha256_name())
                    .ok()
                    .and_then(|t| parse_sha256_line(&String::from_utf8_lossy(&t)))
                    .map(|(hex, _)| hex)
            } else {
                None
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

    /// The newest usable backup of `database` (of `kind` if given): a complete
    /// set whose `.meta` reads, whose checksum files agree and whose
    /// verification, if any, passed. Decided by `.meta`'s `finished_at`.
    fn latest(&self, database: &str, kind: Option<BackupType>) -> io::Result<Option<Listed>> {
        Ok(self
            .catalog()?
            .into_iter()
            .filter(|l| {
                l.set.name.database == database && kind.is_none_or(|k| l.set.name.kind == k)
            })
            .filter(|l| l.usable())
            .max_by(|a, b| (a.created_at(), &a.set.name).cmp(&(b.created_at(), &b.set.name))))
    }

    /// Complete backups of one database, oldest first.
    fn complete_for(&self, database: &str) -> io::Result<Vec<BackupName>> {
        Ok(self
            .sets()?
            .into_iter()
            .filter(|s| s.is_complete() && s.name.database == database)
            .map(|s| s.name)
            .collect())
    }
}

#[derive(Debug, Clone)]
pub struct LocalStore {
    pub dir: PathBuf,
}

impl Store for LocalStore {
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
            out.push(Entry {
                // A name that is not UTF-8 never parses as a backup: it is listed as foreign.
                name: entry.file_name().to_string_lossy().into_owned(),
                size: meta.as_ref().map_or(0, |m| m.len()),
                is_file: entry.file_type().is_ok_and(|t| t.is_file()),
            });
        }
        Ok(out)
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        fs::read(self.path(name))
    }

    fn open(&self, name: &str) -> io::Result<Box<dyn io::Read + Send>> {
        Ok(Box::new(fs::File::open(self.path(name))?))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        match fs::remove_file(self.path(name)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

impl LocalStore {
    pub fn new(dir: impl Into<PathBuf>) -> LocalStore {
        LocalStore { dir: dir.into() }
    }

    pub fn path(&self, file_name: &str) -> PathBuf {
        self.dir.join(file_name)
    }

    /// Whether any file of the set `name` would take is there already.
    pub fn name_taken(&self, name: &BackupName) -> bool {
        [name.file_name(), name.sha256_name(), name.meta_name()]
            .iter()
            .any(|f| self.path(f).symlink_metadata().is_ok())
    }

    pub fn metrics_dir(&self) -> PathBuf {
        self.dir.join("metrics")
    }

    /// [`LocalStore::update_metrics`] where metrics are best effort: a failure is a warning.
    pub fn record_metrics(&self, change: impl FnOnce(&mut Metrics)) {
        if let Err(e) = self.update_metrics(change) {
            crate::ui::warn(format!("could not write the metrics: {e}"));
        }
    }

    /// Read-modify-write of the metrics file under an exclusive lock, so
    /// concurrent runs for other databases do not lose each other's series.
    pub fn update_metrics(&self, change: impl FnOnce(&mut Metrics)) -> io::Result<PathBuf> {
        let dir = self.metrics_dir();
        archive::create_private_dir(&dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join(".lock"))?;
        lock.lock()?;
        let path = dir.join(metrics::FILE_NAME);
        let mut m = match fs::read_to_string(&path) {
            Ok(text) => Metrics::parse(&text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Metrics::default(),
            Err(e) => return Err(e),
        };
        change(&mut m);
        archive::write_atomic(&path, m.render().as_bytes())?;
        // node_exporter reads the file as another user: metrics hold no secrets.
        set_mode(&path, 0o644)?;
        Ok(path)
    }
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::naming::BackupType;
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
        assert_eq!(store.complete_for("my_app").unwrap(), vec![a.clone()]);
        assert!(store.name_taken(&b));
        assert!(!store.name_taken(&b.clone().with_seq(2)));
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
}
