//! The one streaming pipeline: bytes in; SQL inspection, gzip and SHA-256 in
//! one pass; a temporary file that becomes a backup only by an atomic,
//! no-replace publish. And the reverse: re-reading a file to verify it.
//!
//! Memory is bounded by a fixed pool of buffers whatever the dump's size.
//! Reading (and inspecting) runs on the caller's thread, deflating on a pool
//! of threads, hashing and writing on one more, so pg_dump, the scan and
//! deflate overlap.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, mpsc};

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

use crate::sqlscan::{ScanReport, SqlScanner, StructureError};

/// The unit of reading, deflating and writing.
const CHUNK: usize = 1024 * 1024;
/// Prefix of the files a run writes before they are complete. Never a backup.
pub const PARTIAL_PREFIX: &str = ".xtask-partial-";
/// Prefix of the lock files that keep two runs on one database apart.
pub const LOCK_PREFIX: &str = ".xtask-lock-";

/// An exclusive lock held for a run, released when dropped, and by the
/// kernel when the process dies (`flock`): a killed run never leaves a lock
/// that blocks the next one. The holder removes the file when it is done; a
/// run that locked a file someone removed meanwhile retries on the new one.
#[derive(Debug)]
pub struct RunLock {
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
pub enum LockError {
    /// Another live process holds it; what it wrote about itself.
    Held {
        holder: String,
    },
    Io(io::Error),
}

impl RunLock {
    /// Takes `dir/.xtask-lock-{name}` without waiting; `holder` is written
    /// into it so that a refused run can say who holds it.
    pub fn acquire(dir: &Path, name: &str, holder: &str) -> Result<RunLock, LockError> {
        use std::os::unix::fs::MetadataExt;
        let path = dir.join(format!("{LOCK_PREFIX}{name}"));
        loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(LockError::Io)?;
            match file.try_lock() {
                Ok(()) => {
                    let ours = file.metadata().map_err(LockError::Io)?;
                    let same = fs::metadata(&path)
                        .is_ok_and(|now| (now.dev(), now.ino()) == (ours.dev(), ours.ino()));
                    if !same {
                        continue; // the previous holder removed it as we opened it
                    }
                    file.set_len(0).map_err(LockError::Io)?;
                    file.write_all(holder.as_bytes()).map_err(LockError::Io)?;
                    return Ok(RunLock { file, path });
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    let mut text = String::new();
                    let _ = file.read_to_string(&mut text);
                    return Err(LockError::Held {
                        holder: text.trim().to_string(),
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(LockError::Io(e)),
            }
        }
    }
}

/// What one pass over a dump produced.
#[derive(Debug, Clone)]
pub struct ArchiveOutcome {
    pub sha256: String,
    pub compressed_bytes: u64,
    pub scan: ScanReport,
}

/// A writer that hashes and counts what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads until `buf` is full or the source ends; returns the bytes read.
fn read_full(source: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// How many threads deflate by default: one per core, at most 8. The pass is
/// CPU-bound and deflate is its heaviest part.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
}

/// Streams `source` into `file` as gzip at `level`, hashing the compressed
/// bytes and scanning the SQL on the way; fsyncs the file at the end.
/// `on_progress` gets the uncompressed byte count after each chunk.
///
/// The stream is cut into 1 MiB chunks that `workers` threads deflate in
/// parallel, each into a gzip member of its own (as pigz does); a writer
/// thread puts the members back in order. Concatenated members are one valid
/// gzip file (RFC 1952) that every gzip reader decompresses whole. Memory is
/// bounded: at most `2 * workers + 2` chunks are in flight.
/// Where a compressed stream goes: a file (synced at the end) or an upload.
pub trait Destination: Write + Send {
    /// Every byte is written: make them durable.
    fn finish(&mut self) -> io::Result<()>;
}

impl Destination for File {
    fn finish(&mut self) -> io::Result<()> {
        self.sync_all()
    }
}

pub fn compress_into(
    mut source: impl Read,
    file: impl Destination,
    level: u32,
    workers: usize,
    mut on_progress: impl FnMut(u64),
) -> io::Result<ArchiveOutcome> {
    let workers = workers.max(1);
    let in_flight = 2 * workers + 2;
    let (work_tx, work_rx) = mpsc::sync_channel::<(u64, Vec<u8>)>(in_flight);
    let work_rx = Mutex::new(work_rx);
    // (sequence number, gzip member, the input buffer to recycle)
    let (done_tx, done_rx) = mpsc::sync_channel::<(u64, Vec<u8>, Vec<u8>)>(in_flight);
    let (free_tx, free_rx) = mpsc::sync_channel::<Vec<u8>>(in_flight);
    for _ in 0..in_flight {
        free_tx
            .send(Vec::with_capacity(CHUNK))
            .expect("the pool has room for every buffer");
    }
    std::thread::scope(|s| {
        for _ in 0..workers {
            let (work_rx, done_tx) = (&work_rx, done_tx.clone());
            s.spawn(move || -> io::Result<()> {
                loop {
                    let job = work_rx
                        .lock()
                        .map_err(|_| io::Error::other("a deflate thread panicked"))?
                        .recv();
                    let Ok((seq, input)) = job else { return Ok(()) };
                    let member = gzip_member(&input, level)?;
                    if done_tx.send((seq, member, input)).is_err() {
                        return Ok(()); // the writer stopped: its error is reported
                    }
                }
            });
        }
        drop(done_tx);
        let writer = s.spawn(move || -> io::Result<(String, u64)> {
            let mut sink = HashingWriter {
                inner: BufWriter::with_capacity(CHUNK, file),
                hasher: Sha256::new(),
                bytes: 0,
            };
            let mut pending = BTreeMap::new();
            let mut next = 0u64;
            for (seq, member, input) in done_rx {
                pending.insert(seq, member);
                let _ = free_tx.send(input);
                while let Some(member) = pending.remove(&next) {
                    sink.write_all(&member)?;
                    next += 1;
                }
            }
            if next == 0 {
                // An empty stream is still a gzip file: one empty member.
                sink.write_all(&gzip_member(&[], level)?)?;
            }
            if !pending.is_empty() {
                return Err(io::Error::other("a deflate thread stopped early"));
            }
            let (digest, bytes) = (sink.hasher.finalize(), sink.bytes);
            let mut file = sink.inner.into_inner().map_err(|e| e.into_error())?;
            file.finish()?;
            Ok((hex(&digest), bytes))
        });

        let mut scanner = SqlScanner::new();
        let mut total = 0u64;
        let mut seq = 0u64;
        let read_result: io::Result<()> = loop {
            let Ok(mut buf) = free_rx.recv() else {
                break Ok(()); // the writer stopped: its error is reported below
            };
            buf.resize(CHUNK, 0);
            let n = match read_full(&mut source, &mut buf) {
                Ok(n) => n,
                Err(e) => break Err(e),
            };
            if n == 0 {
                break Ok(());
            }
            buf.truncate(n);
            scanner.feed(&buf);
            total += n as u64;
            on_progress(total);
            if work_tx.send((seq, buf)).is_err() {
                break Ok(());
            }
            seq += 1;
        };
        drop(work_tx);
        let written = writer
            .join()
            .map_err(|_| io::Error::other("the writer thread panicked"))?;
        read_result?;
        let (sha256, compressed_bytes) = written?;
        Ok(ArchiveOutcome {
            sha256,
            compressed_bytes,
            scan: scanner.finish(),
        })
    })
}

/// One complete gzip member holding `input`.
fn gzip_member(input: &[u8], level: u32) -> io::Result<Vec<u8>> {
    let mut gz = GzEncoder::new(
        Vec::with_capacity(input.len() / 2 + 64),
        Compression::new(level),
    );
    gz.write_all(input)?;
    gz.finish()
}

/// Why a backup file failed verification.
#[derive(Debug)]
pub enum VerifyError {
    ChecksumMismatch {
        expected: String,
        actual: String,
    },
    Gzip(io::Error),
    Structure(StructureError),
    Io(io::Error),
    /// Whoever consumed the stream failed.
    Sink(io::Error),
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VerifyError::ChecksumMismatch { expected, actual } => write!(
                f,
                "checksum mismatch: the .sha256 file says {expected}, the file hashes to {actual}: the file is corrupt or was changed"
            ),
            VerifyError::Gzip(e) => write!(f, "the gzip stream is damaged ({e})"),
            VerifyError::Structure(e) => write!(f, "{e}"),
            VerifyError::Io(e) => write!(f, "cannot read the file ({e})"),
            VerifyError::Sink(e) => write!(f, "the stream's consumer failed ({e})"),
        }
    }
}

impl std::error::Error for VerifyError {}

/// What a verification read.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub sha256: String,
    pub compressed_bytes: u64,
    pub scan: ScanReport,
}

/// Re-reads a `.sql.gz` in one pass: SHA-256 of the file, the whole gzip
/// stream (every member, with its CRC), and the SQL structure.
pub fn verify_file(
    path: &Path,
    expected_sha256: Option<&str>,
) -> Result<VerifyReport, VerifyError> {
    let file = File::open(path).map_err(VerifyError::Io)?;
    verify_stream(file, expected_sha256, |_| Ok(()))
}

/// [`verify_file`], handing every decompressed chunk to `sink` on the way
/// (a restore feeds psql with it, so the file is read once). A `sink` error
/// stops the pass as [`VerifyError::Sink`].
pub fn verify_stream(
    file: impl Read,
    expected_sha256: Option<&str>,
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<VerifyReport, VerifyError> {
    let mut hashing = HashingReader {
        inner: io::BufReader::with_capacity(CHUNK, file),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mut scanner = SqlScanner::new();
    let mut gzip_error = None;
    {
        let mut gz = MultiGzDecoder::new(&mut hashing);
        let mut buf = vec![0; CHUNK];
        loop {
            match gz.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    scanner.feed(&buf[..n]);
                    sink(&buf[..n]).map_err(VerifyError::Sink)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    gzip_error = Some(e);
                    break;
                }
            }
        }
    }
    // The rest of the file (all of it after a damaged member) still belongs to
    // the checksum, which says "corrupt" more plainly than a deflate error.
    io::copy(&mut hashing, &mut io::sink()).map_err(VerifyError::Io)?;
    let sha256 = hex(&hashing.hasher.finalize());
    if let Some(expected) = expected_sha256
        && !expected.eq_ignore_ascii_case(&sha256)
    {
        return Err(VerifyError::ChecksumMismatch {
            expected: expected.to_string(),
            actual: sha256,
        });
    }
    if let Some(e) = gzip_error {
        return Err(VerifyError::Gzip(e));
    }
    let scan = scanner.finish();
    scan.check().map_err(VerifyError::Structure)?;
    Ok(VerifyReport {
        sha256,
        compressed_bytes: hashing.bytes,
        scan,
    })
}

/// A file being written in the backup directory under a name no reader
/// takes for a backup. Removed on drop unless published. An advisory lock
/// held for its whole life tells a later run whether its writer is alive.
pub struct PartialFile {
    path: PathBuf,
    lock: File,
    published: bool,
}

impl PartialFile {
    pub fn create(dir: &Path) -> io::Result<PartialFile> {
        // Unique per process and moment; `.tmp` so no glob for backups matches it.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = dir.join(format!(
            "{PARTIAL_PREFIX}{}-{nanos}.tmp",
            std::process::id()
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        file.lock()?;
        Ok(PartialFile {
            path,
            lock: file,
            published: false,
        })
    }

    /// A second handle for writing; the lock stays with `self`.
    pub fn writer(&self) -> io::Result<File> {
        self.lock.try_clone()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Gives the file its final name, failing with `AlreadyExists` rather than
    /// replacing anything (a hard link cannot overwrite), then drops the
    /// temporary name and makes both changes durable.
    pub fn publish(mut self, final_path: &Path) -> io::Result<()> {
        fs::hard_link(&self.path, final_path)?;
        self.published = true;
        fs::remove_file(&self.path)?;
        sync_dir(final_path.parent().unwrap_or(Path::new(".")))
    }
}

impl PartialFile {
    /// Renames the file over `path`, replacing what is there: for files that
    /// are rewritten as a whole, like `.meta` and the metrics.
    pub fn replace(mut self, path: &Path) -> io::Result<()> {
        fs::rename(&self.path, path)?;
        self.published = true;
        sync_dir(path.parent().unwrap_or(Path::new(".")))
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Removes partial files whose writer is gone (killed, crashed): their lock
/// is free. Returns what it removed.
pub fn remove_stale_partials(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(PARTIAL_PREFIX) {
            continue;
        }
        let path = entry.path();
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if file.try_lock().is_ok() {
            fs::remove_file(&path)?;
            removed.push(path);
        }
    }
    Ok(removed)
}

/// Writes a small file atomically: temporary name, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let partial = PartialFile::create(dir)?;
    {
        let mut f = partial.writer()?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    partial.replace(path)
}

/// The `pg_dump` version a dump's header names, from its first chunk.
pub fn peek_pg_dump_version(file: impl Read) -> Option<String> {
    let mut gz = MultiGzDecoder::new(file);
    let mut buf = vec![0; 64 * 1024];
    let n = read_full(&mut gz, &mut buf).ok()?;
    let mut scanner = SqlScanner::new();
    scanner.feed(&buf[..n]);
    scanner.finish().pg_dump_version
}

/// Creates a small file that must not exist yet (`AlreadyExists` otherwise):
/// the name is reserved by the creation itself.
pub fn write_new(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

/// Creates a directory (and its parents) with mode 0700.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const DUMP: &[u8] = b"--\n-- PostgreSQL database dump\n--\n\n-- Data for Name: t; Type: TABLE DATA\n\nCOPY public.t (a) FROM stdin;\n1\n2\n\\.\n\n--\n-- PostgreSQL database dump complete\n--\n\n";

    #[test]
    fn compress_then_verify_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = PartialFile::create(dir.path()).unwrap();
        // Large enough to cross many chunks and both threads.
        let mut data = DUMP[..DUMP.len() - 46].to_vec();
        for i in 0..200_000 {
            data.extend_from_slice(format!("{i}\n").as_bytes());
        }
        data.extend_from_slice(b"\\.\n\n--\n-- PostgreSQL database dump complete\n--\n\n");
        let mut seen = 0;
        let out = compress_into(&data[..], p.writer().unwrap(), 6, 3, |n| seen = n).unwrap();
        assert_eq!(seen, data.len() as u64);
        assert_eq!(out.scan.check(), Ok(()));
        assert_eq!(out.scan.tables["public.t"], 200_002);
        let final_path = dir.path().join("x.sql.gz");
        p.publish(&final_path).unwrap();
        assert_eq!(
            fs::metadata(&final_path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let report = verify_file(&final_path, Some(&out.sha256)).unwrap();
        assert_eq!(report.sha256, out.sha256);
        assert_eq!(report.compressed_bytes, out.compressed_bytes);
        assert_eq!(report.scan.bytes, data.len() as u64);
        // Only the final name is left.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.sql.gz")]);
    }

    #[test]
    fn output_is_the_same_whatever_the_thread_count() {
        let data: Vec<u8> = (0..3_500_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let mut digests = Vec::new();
        for workers in [1, 2, 5] {
            let p = PartialFile::create(dir.path()).unwrap();
            let out = compress_into(&data[..], p.writer().unwrap(), 6, workers, |_| {}).unwrap();
            let mut back = Vec::new();
            MultiGzDecoder::new(File::open(p.path()).unwrap())
                .read_to_end(&mut back)
                .unwrap();
            assert!(
                back == data,
                "{workers} workers: the members decode to the input"
            );
            digests.push(out.sha256);
        }
        assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
    }

    #[test]
    fn an_empty_stream_is_a_valid_gzip_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = PartialFile::create(dir.path()).unwrap();
        compress_into(&b""[..], p.writer().unwrap(), 6, 2, |_| {}).unwrap();
        let status = std::process::Command::new("gzip")
            .arg("-t")
            .arg(p.path())
            .status()
            .unwrap();
        assert!(status.success());
    }

    #[test]
    fn verification_catches_each_kind_of_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.sql.gz");
        let p = PartialFile::create(dir.path()).unwrap();
        let out = compress_into(DUMP, p.writer().unwrap(), 6, 2, |_| {}).unwrap();
        p.publish(&path).unwrap();
        assert!(matches!(
            verify_file(&path, Some(&"0".repeat(64))),
            Err(VerifyError::ChecksumMismatch { .. })
        ));

        let mut bytes = fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        assert!(
            matches!(verify_file(&path, None), Err(VerifyError::Gzip(_))),
            "a flipped byte breaks deflate or the CRC"
        );

        // A complete gzip stream of a truncated dump: the structure check catches it.
        let mut gz = GzEncoder::new(Vec::new(), Compression::new(6));
        gz.write_all(&DUMP[..DUMP.len() - 30]).unwrap();
        fs::write(&path, gz.finish().unwrap()).unwrap();
        assert!(matches!(
            verify_file(&path, None),
            Err(VerifyError::Structure(StructureError::NoTrailer))
        ));
        let _ = out;
    }

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
    }

    #[test]
    fn a_failing_source_fails_the_pass() {
        struct Broken(usize);
        impl Read for Broken {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("boom"));
                }
                self.0 -= 1;
                buf[0] = b'x';
                Ok(1)
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let p = PartialFile::create(dir.path()).unwrap();
        let err = compress_into(Broken(10), p.writer().unwrap(), 1, 2, |_| {}).unwrap_err();
        assert_eq!(err.to_string(), "boom");
    }
}
