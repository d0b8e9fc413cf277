//! The local backup directory: which backups it holds, and its metrics file.
//!
//! A backup exists only as a complete set: the dump, its `.sha256` and its
//! `.meta`. Anything else in the directory is left alone.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::archive;
use crate::metrics::{self, Metrics};
use crate::naming::{BackupName, META_SUFFIX, SHA256_SUFFIX};

/// One dump file the tool named, and which of its companions exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSet {
    pub name: BackupName,
    pub has_sha256: bool,
    pub has_meta: bool,
}

impl BackupSet {
    pub fn is_complete(&self) -> bool {
        self.has_sha256 && self.has_meta
    }
}

#[derive(Debug, Clone)]
pub struct LocalStore {
    pub dir: PathBuf,
}

impl LocalStore {
    pub fn new(dir: impl Into<PathBuf>) -> LocalStore {
        LocalStore { dir: dir.into() }
    }

    pub fn path(&self, file_name: &str) -> PathBuf {
        self.dir.join(file_name)
    }

    /// Every dump the tool named, oldest first. A missing directory holds none.
    pub fn sets(&self) -> io::Result<Vec<BackupSet>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut names = BTreeSet::new();
        for entry in entries {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str() {
                names.insert(name.to_string());
            }
        }
        let mut sets: Vec<BackupSet> = names
            .iter()
            .filter_map(|file| {
                let name = BackupName::parse(file)?;
                Some(BackupSet {
                    has_sha256: names.contains(&format!("{file}{SHA256_SUFFIX}")),
                    has_meta: names.contains(&format!("{file}{META_SUFFIX}")),
                    name,
                })
            })
            .collect();
        sets.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(sets)
    }

    /// Complete backups of one database, oldest first.
    pub fn complete_for(&self, database: &str) -> io::Result<Vec<BackupName>> {
        Ok(self
            .sets()?
            .into_iter()
            .filter(|s| s.is_complete() && s.name.database == database)
            .map(|s| s.name)
            .collect())
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
        assert_eq!(store.sets().unwrap().len(), 3);
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
