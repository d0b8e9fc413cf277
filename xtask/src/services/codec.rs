//! The bytes of a plain dump on their way into a backup file and back:
//! one pass that inspects the SQL, compresses it with gzip in parallel and
//! hashes what is written; and the reverse, one pass that hashes the file,
//! decompresses every gzip member and inspects the SQL, handing it on.
//!
//! Memory is bounded by a fixed pool of buffers whatever the dump's size.
//! Reading (and inspecting) runs on the caller's thread, deflating on a pool
//! of threads, hashing and writing on one more, so pg_dump, the scan and
//! deflate overlap.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Read, Write};
use std::sync::{Mutex, mpsc};

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

use crate::core::dump::scan::ScanReport;
use crate::core::dump::{DumpError, Reader, Visitor};

/// The unit of reading, deflating and writing.
const CHUNK: usize = 1024 * 1024;

/// What one pass over a dump produced.
#[derive(Debug, Clone)]
pub(crate) struct Archived {
    pub(crate) sha256: String,
    pub(crate) compressed_bytes: u64,
    pub(crate) scan: ScanReport,
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

/// A reader that hashes and counts what passes through it, and keeps the
/// error of its source (so a failed read is told from a damaged stream).
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    error: Option<io::Error>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                let shown = io::Error::new(e.kind(), e.to_string());
                self.error = Some(e);
                return Err(shown);
            }
        };
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
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
pub(crate) fn default_workers() -> usize {
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
pub(crate) fn compress_into(
    mut source: impl Read,
    file: &mut (dyn Write + Send),
    level: u32,
    workers: usize,
    mut on_progress: impl FnMut(u64),
) -> io::Result<Archived> {
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
            sink.inner.flush()?;
            Ok((format!("{digest:x}"), bytes))
        });

        let mut scanner = Reader::new();
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
            // A problem is reported at the end: the dump is what pg_dump wrote.
            let _ = scanner.feed(&buf, &mut ());
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
        Ok(Archived {
            sha256,
            compressed_bytes,
            scan: scanner.finish(&mut ()),
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

/// Why reading a backup file failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    ChecksumMismatch {
        expected: String,
        actual: String,
    },
    Gzip(io::Error),
    Dump(DumpError),
    /// The file could not be read (a local I/O error, a remote copy's connection).
    Io(io::Error),
    /// Whoever consumed the stream failed.
    Sink(io::Error),
}

impl ReadError {
    /// Evidence about the file itself (as against the means of reading it or
    /// of consuming it): only this may mark a backup failed.
    pub(crate) fn is_about_the_file(&self) -> bool {
        matches!(
            self,
            ReadError::ChecksumMismatch { .. } | ReadError::Gzip(_) | ReadError::Dump(_)
        )
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::ChecksumMismatch { expected, actual } => write!(
                f,
                "checksum mismatch: the .sha256 file says {expected}, the file hashes to {actual}: the file is corrupt or was changed"
            ),
            ReadError::Gzip(e) => write!(f, "the gzip stream is damaged ({e})"),
            ReadError::Dump(e) => write!(f, "{e}"),
            ReadError::Io(e) => write!(f, "cannot read the file ({e})"),
            ReadError::Sink(e) => write!(f, "the stream's consumer failed ({e})"),
        }
    }
}

impl std::error::Error for ReadError {}

/// What one read of a backup file established.
#[derive(Debug, Clone)]
pub(crate) struct ReadReport {
    pub(crate) sha256: String,
    pub(crate) compressed_bytes: u64,
    pub(crate) scan: ScanReport,
}

/// Reads a `.sql.gz` in one pass: SHA-256 of the file, the whole gzip
/// stream (every member, with its CRC), and the dump through the reader,
/// whose lines go to `visitor`; `flush` runs after each chunk (a restore
/// sends what the visitor gathered to psql), and its error stops the pass
/// as [`ReadError::Sink`]. A problem in the dump stops the visitor before
/// the line that holds it.
pub(crate) fn read_checked<V: Visitor>(
    file: impl Read,
    expected_sha256: Option<&str>,
    visitor: &mut V,
    mut flush: impl FnMut(&mut V) -> io::Result<()>,
) -> Result<ReadReport, ReadError> {
    let mut hashing = HashingReader {
        inner: io::BufReader::with_capacity(CHUNK, file),
        hasher: Sha256::new(),
        bytes: 0,
        error: None,
    };
    let mut reader = Reader::new();
    let mut stopped = None;
    {
        let mut gz = MultiGzDecoder::new(&mut hashing);
        let mut buf = vec![0; CHUNK];
        loop {
            match gz.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Err(e) = reader.feed(&buf[..n], visitor) {
                        stopped = Some(ReadError::Dump(e));
                        break;
                    }
                    flush(visitor).map_err(ReadError::Sink)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A read error of the file itself, or of the deflate stream.
                Err(e) if gz.get_ref().error.is_some() => {
                    let _ = e;
                    return Err(ReadError::Io(gz.get_mut().error.take().expect("checked")));
                }
                Err(e) => {
                    stopped = Some(ReadError::Gzip(e));
                    break;
                }
            }
        }
    }
    // The rest of the file (all of it after a damaged member) still belongs to
    // the checksum, which says "corrupt" more plainly than a deflate error.
    io::copy(&mut hashing, &mut io::sink()).map_err(ReadError::Io)?;
    if let Some(e) = hashing.error.take() {
        return Err(ReadError::Io(e));
    }
    let sha256 = format!("{:x}", hashing.hasher.finalize());
    if let Some(expected) = expected_sha256
        && !expected.eq_ignore_ascii_case(&sha256)
    {
        return Err(ReadError::ChecksumMismatch {
            expected: expected.to_string(),
            actual: sha256,
        });
    }
    if let Some(e) = stopped {
        return Err(e);
    }
    let scan = reader.finish(visitor);
    flush(visitor).map_err(ReadError::Sink)?;
    scan.check().map_err(ReadError::Dump)?;
    Ok(ReadReport {
        sha256,
        compressed_bytes: hashing.bytes,
        scan,
    })
}

/// The `pg_dump` version a dump's header names, from its first chunk.
pub(crate) fn peek_pg_dump_version(file: impl Read) -> Option<String> {
    let mut gz = MultiGzDecoder::new(file);
    let mut buf = vec![0; 64 * 1024];
    let n = read_full(&mut gz, &mut buf).ok()?;
    let mut reader = Reader::new();
    let _ = reader.feed(&buf[..n], &mut ());
    reader.report.pg_dump_version
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &[u8] = b"--\n-- PostgreSQL database dump\n--\n\n-- Data for Name: t; Type: TABLE DATA\n\nCOPY public.t (a) FROM stdin;\n1\n2\n\\.\n\n--\n-- PostgreSQL database dump complete\n--\n\n";

    fn compress(data: &[u8], workers: usize) -> (Vec<u8>, Archived) {
        let mut out = Vec::new();
        let archived = compress_into(data, &mut out, 6, workers, |_| {}).unwrap();
        (out, archived)
    }

    fn check(file: &[u8], sha: Option<&str>) -> Result<ReadReport, ReadError> {
        read_checked(file, sha, &mut (), |_| Ok(()))
    }

    #[test]
    fn compress_then_read_round_trip() {
        // Large enough to cross many chunks and both threads.
        let mut data = DUMP[..DUMP.len() - 46].to_vec();
        for i in 0..200_000 {
            data.extend_from_slice(format!("{i}\n").as_bytes());
        }
        data.extend_from_slice(b"\\.\n\n--\n-- PostgreSQL database dump complete\n--\n\n");
        let mut seen = 0;
        let mut file = Vec::new();
        let out = compress_into(&data[..], &mut file, 6, 3, |n| seen = n).unwrap();
        assert_eq!(seen, data.len() as u64);
        assert_eq!(out.scan.check(), Ok(()));
        assert_eq!(out.scan.tables["public.t"], 200_002);
        let report = check(&file, Some(&out.sha256)).unwrap();
        assert_eq!(report.sha256, out.sha256);
        assert_eq!(report.compressed_bytes, out.compressed_bytes);
        assert_eq!(report.scan.bytes, data.len() as u64);
    }

    #[test]
    fn output_is_the_same_whatever_the_thread_count() {
        let data: Vec<u8> = (0..3_500_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut digests = Vec::new();
        for workers in [1, 2, 5] {
            let (file, out) = compress(&data, workers);
            let mut back = Vec::new();
            MultiGzDecoder::new(&file[..])
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
        let (file, _) = compress(b"", 2);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.gz");
        std::fs::write(&path, file).unwrap();
        let status = std::process::Command::new("gzip")
            .arg("-t")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
    }

    #[test]
    fn reading_catches_each_kind_of_damage() {
        let (file, _) = compress(DUMP, 2);
        assert!(matches!(
            check(&file, Some(&"0".repeat(64))),
            Err(ReadError::ChecksumMismatch { .. })
        ));
        let mut bytes = file.clone();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        assert!(
            matches!(check(&bytes, None), Err(ReadError::Gzip(_))),
            "a flipped byte breaks deflate or the CRC"
        );
        // A complete gzip stream of a truncated dump: the structure check catches it.
        let (cut, _) = compress(&DUMP[..DUMP.len() - 30], 1);
        assert!(matches!(
            check(&cut, None),
            Err(ReadError::Dump(DumpError::NoTrailer))
        ));
        // A source that fails is not damage.
        struct Broken(usize);
        impl Read for Broken {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
                }
                self.0 -= 1;
                buf[0] = 0x1f;
                Ok(1)
            }
        }
        let err = read_checked(Broken(1), None, &mut (), |_| Ok(())).unwrap_err();
        assert!(matches!(err, ReadError::Io(_)), "{err:?}");
        assert!(!err.is_about_the_file());
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
        let mut out = Vec::new();
        let err = compress_into(Broken(10), &mut out, 1, 2, |_| {}).unwrap_err();
        assert_eq!(err.to_string(), "boom");
    }
}
