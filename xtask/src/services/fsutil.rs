//! Files in the backup directory: the per-database run lock, partial files
//! that become backups only by an atomic, no-replace publish, and small
//! files written atomically. Lock and partial files are never opened
//! through a symlink: in a shared directory someone else's link must not
//! make us truncate or write its target.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::core::manifest::is_member_name;
use crate::services::codec;

/// Prefix of the files a run writes before they are complete. Never a backup.
pub(crate) const PARTIAL_PREFIX: &str = ".xtask-partial-";
/// Prefix of the lock files that keep two runs on one database apart.
pub(crate) const LOCK_PREFIX: &str = ".xtask-lock-";

/// An exclusive lock held for a run, released when dropped, and by the
/// kernel when the process dies (`flock`): a killed run never leaves a lock
/// that blocks the next one. The holder removes the file when it is done; a
/// run that locked a file someone removed meanwhile retries on the new one.
#[derive(Debug)]
pub(crate) struct RunLock {
    file: File,
    path: PathBuf,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Removed while still locked: whoever opened the old file sees it is gone and retries.
        let _ = fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

#[derive(Debug)]
pub(crate) enum LockError {
    /// Another live process holds it; what it wrote about itself.
    Held {
        holder: String,
    },
    Io(io::Error),
}

impl RunLock {
    /// Takes `dir/.xtask-lock-{name}` without waiting; `holder` is written
    /// into it so that a refused run can say who holds it.
    pub(crate) fn acquire(dir: &Path, name: &str, holder: &str) -> Result<RunLock, LockError> {
        let path = dir.join(format!("{LOCK_PREFIX}{name}"));
        loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|e| LockError::Io(no_symlink(e, &path)))?;
            match file.try_lock() {
                Ok(()) => {
                    let ours = file.metadata().map_err(LockError::Io)?;
                    let same = fs::symlink_metadata(&path)
                        .is_ok_and(|now| (now.dev(), now.ino()) == (ours.dev(), ours.ino()));
                    if !same {
                        continue; // the previous holder removed it as we opened it
                    }
                    file.set_len(0).map_err(LockError::Io)?;
                    file.write_all(holder.as_bytes()).map_err(LockError::Io)?;
                    return Ok(RunLock { file, path });
                }
                Err(fs::TryLockError::WouldBlock) => {
                    let mut text = String::new();
                    let _ = file.read_to_string(&mut text);
                    return Err(LockError::Held {
                        holder: text.trim().to_string(),
                    });
                }
                Err(fs::TryLockError::Error(e)) => return Err(LockError::Io(e)),
            }
        }
    }
}

/// `ELOOP` from `O_NOFOLLOW` says what it is.
fn no_symlink(e: io::Error, path: &Path) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        io::Error::other(format!(
            "{} is a symbolic link, not a file of this tool's: remove it",
            path.display()
        ))
    } else {
        e
    }
}

/// A file being written in `dir` under a name no reader takes for a backup
/// (mode 0600, created exclusively, so never through a symlink). Removed on
/// drop unless published. An advisory lock held for its whole life tells a
/// later run whether its writer is alive.
pub(crate) struct PartialFile {
    file: NamedTempFile,
}

impl PartialFile {
    pub(crate) fn create(dir: &Path) -> io::Result<PartialFile> {
        let file = tempfile::Builder::new()
            .prefix(&format!("{PARTIAL_PREFIX}{}-", std::process::id()))
            .suffix(".tmp")
            .permissions(fs::Permissions::from_mode(0o600))
            .tempfile_in(dir)?;
        file.as_file().lock()?;
        Ok(PartialFile { file })
    }

    /// A second handle for writing; the lock stays with `self`.
    pub(crate) fn writer(&self) -> io::Result<File> {
        self.file.as_file().try_clone()
    }

    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        self.file.path()
    }

    /// Gives the file its final name, failing with `AlreadyExists` rather than
    /// replacing anything, then makes the change durable.
    pub(crate) fn publish(self, final_path: &Path) -> io::Result<()> {
        self.file
            .persist_noclobber(final_path)
            .map_err(|e| e.error)?;
        sync_dir(final_path)
    }

    /// Renames the file over `path`, replacing what is there: for files that
    /// are rewritten as a whole, like `.meta` and the metrics.
    pub(crate) fn replace(self, path: &Path) -> io::Result<()> {
        self.file.persist(path).map_err(|e| e.error)?;
        sync_dir(path)
    }
}

/// Removes partial files whose writer is gone (killed, crashed): their lock
/// is free. Returns what it removed.
pub(crate) fn remove_stale_partials(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with(PARTIAL_PREFIX)
        {
            continue;
        }
        let path = entry.path();
        // A partial directory (never followed if it is a link): its lock file says.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let Ok(lock) = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path.join(PARTIAL_LOCK))
            else {
                continue;
            };
            if lock.try_lock().is_ok() {
                fs::remove_dir_all(&path)?;
                removed.push(path);
            }
            continue;
        }
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let Ok(file) = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        else {
            continue;
        };
        if file.try_lock().is_ok() {
            fs::remove_file(&path)?;
            removed.push(path);
        }
    }
    Ok(removed)
}

/// A directory being filled in `parent` (pg_dump's directory format writes
/// into [`PartialDir::contents`]) under a name no reader takes for a
/// backup; removed with everything in it on drop unless published. A lock
/// file inside, held for its whole life, tells a later run whether its
/// writer is alive.
pub(crate) struct PartialDir {
    dir: tempfile::TempDir,
    _lock: File,
}

impl PartialDir {
    pub(crate) fn create(parent: &Path) -> io::Result<PartialDir> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PARTIAL_PREFIX}{}-", std::process::id()))
            .suffix(".d")
            .tempdir_in(parent)?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))?;
        let lock = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.path().join(PARTIAL_LOCK))?;
        lock.lock()?;
        Ok(PartialDir { dir, _lock: lock })
    }

    /// Where the contents go; it does not exist until the writer makes it
    /// (pg_dump wants a directory that is missing or empty).
    pub(crate) fn contents(&self) -> PathBuf {
        self.dir.path().join("contents")
    }

    /// Gives the contents their final name, never over anything already
    /// there (`AlreadyExists`), after every file in them and the directory
    /// itself are on disk; then makes the rename durable.
    pub(crate) fn publish(self, final_path: &Path) -> io::Result<()> {
        let contents = self.contents();
        for entry in fs::read_dir(&contents)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                let file = File::open(entry.path())?;
                file.set_permissions(fs::Permissions::from_mode(0o600))?;
                file.sync_all()?;
            }
        }
        File::open(&contents)?.sync_all()?;
        rename_noreplace(&contents, final_path)?;
        sync_dir(final_path)
    }
}

/// The lock file inside a [`PartialDir`].
const PARTIAL_LOCK: &str = ".lock";

/// `rename(2)` that fails with `AlreadyExists` instead of replacing `to`
/// (an empty directory would be replaced silently by a plain rename).
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
    };
    let (c_from, c_to) = (c(from)?, c(to)?);
    // SAFETY: both are valid NUL-terminated paths; AT_FDCWD resolves them
    // as relative to the working directory, as `fs::rename` does.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c_from.as_ptr(),
            libc::AT_FDCWD,
            c_to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) {
        return Err(e);
    }
    // A filesystem without RENAME_NOREPLACE (NFS, CIFS): take the name
    // with an exclusive mkdir, then rename over that empty directory of ours.
    fs::create_dir(to)?;
    fs::rename(from, to).inspect_err(|_| {
        let _ = fs::remove_dir(to);
    })
}

/// The SHA-256 of every file in `dir` (a directory backup's), by name, and
/// their total size. Anything but a plain file under a plain name is refused
/// (`InvalidData`): it is not what pg_dump writes.
pub(crate) fn hash_directory(dir: &Path) -> io::Result<(BTreeMap<String, String>, u64)> {
    let mut files = BTreeMap::new();
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type()?.is_file() || !is_member_name(&name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}/{name} is not a file pg_dump writes into a directory backup",
                    dir.display()
                ),
            ));
        }
        let (hex, bytes) = codec::hash_all(fs::File::open(entry.path())?)?;
        total += bytes;
        files.insert(name, hex);
    }
    Ok((files, total))
}

/// Writes a small file atomically: temporary name, fsync, rename, fsync the directory.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let partial = PartialFile::create(path.parent().unwrap_or(Path::new(".")))?;
    {
        let mut f = partial.writer()?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    partial.replace(path)
}

/// Creates a small file that must not exist yet (`AlreadyExists` otherwise):
/// the name is reserved by the creation itself.
pub(crate) fn write_new(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

/// Creates a directory (and its parents) with mode 0700; says so when an
/// existing one is open to other users.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    Ok(())
}

/// The mode of `dir` when other users may list or write it (`None`: 0700,
/// or 0711, passable for node_exporter to reach the metrics).
pub(crate) fn open_to_others(dir: &Path) -> Option<u32> {
    let mode = fs::metadata(dir).ok()?.permissions().mode() & 0o777;
    (mode & 0o066 != 0).then_some(mode)
}

fn sync_dir(file_in_it: &Path) -> io::Result<()> {
    File::open(file_in_it.parent().unwrap_or(Path::new(".")))?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("taken");
        fs::write(&target, b"precious").unwrap();
        let p = PartialFile::create(dir.path()).unwrap();
        let err = p.publish(&target).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&target).unwrap(), b"precious");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "the partial file was removed on drop"
        );
    }

    #[test]
    fn a_run_lock_excludes_a_second_run_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path(), "app", "pid 1 since then").unwrap();
        match RunLock::acquire(dir.path(), "app", "pid 2") {
            Err(LockError::Held { holder }) => assert_eq!(holder, "pid 1 since then"),
            other => panic!("{other:?}"),
        }
        assert!(RunLock::acquire(dir.path(), "other", "pid 2").is_ok());
        drop(first);
        assert!(
            !dir.path().join(".xtask-lock-app").exists(),
            "released and removed"
        );
        assert!(RunLock::acquire(dir.path(), "app", "pid 3").is_ok());
    }

    #[test]
    fn a_symlinked_lock_file_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(".xtask-lock-app")).unwrap();
        match RunLock::acquire(dir.path(), "app", "pid 1") {
            Err(LockError::Io(e)) => assert!(e.to_string().contains("symbolic link"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn stale_partials_are_removed_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let live = PartialFile::create(dir.path()).unwrap();
        let stale = dir.path().join(format!("{PARTIAL_PREFIX}999999-1-dead"));
        fs::write(&stale, b"half a dump").unwrap();
        fs::write(dir.path().join("notes.txt"), b"not ours").unwrap();
        let removed = remove_stale_partials(dir.path()).unwrap();
        assert_eq!(removed, vec![stale]);
        assert!(live.path().exists());
        assert!(dir.path().join("notes.txt").exists());
        let mode = fs::metadata(live.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn partial_directories_publish_once_and_stale_ones_go() {
        let dir = tempfile::tempdir().unwrap();
        let live = PartialDir::create(dir.path()).unwrap();
        fs::create_dir(live.contents()).unwrap();
        fs::write(live.contents().join("toc.dat"), b"toc").unwrap();
        // A stale one (its writer gone: nobody holds its lock) goes; the live one stays.
        let stale = PartialDir::create(dir.path()).unwrap();
        let stale_path = stale.dir.path().to_path_buf();
        std::mem::forget(stale.dir);
        drop(stale._lock);
        let removed = remove_stale_partials(dir.path()).unwrap();
        assert_eq!(removed, vec![stale_path.clone()]);
        assert!(!stale_path.exists());
        assert!(live.contents().join("toc.dat").exists());
        // Published under its name, never over an existing directory, even an empty one.
        let taken = dir.path().join("a.dir");
        fs::create_dir(&taken).unwrap();
        let again = PartialDir::create(dir.path()).unwrap();
        fs::create_dir(again.contents()).unwrap();
        let err = again.publish(&taken).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        let target = dir.path().join("b.dir");
        live.publish(&target).unwrap();
        assert_eq!(fs::read(target.join("toc.dat")).unwrap(), b"toc");
        let mode = fs::metadata(target.join("toc.dat"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left.len(), 2, "no partial directory is left: {left:?}");
    }

    #[test]
    fn open_directories_are_noticed() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(open_to_others(dir.path()), None);
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711)).unwrap();
        assert_eq!(open_to_others(dir.path()), None, "passable is fine");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(open_to_others(dir.path()), Some(0o755));
    }
}
