//! The bytes of a dump on their way into a backup file and back: one pass
//! that inspects the SQL, compresses it (gzip in parallel members, zstd with
//! its worker threads, or not at all) and hashes what is written; and the
//! reverse, one pass that hashes the file, decompresses it (gzip members in
//! parallel; a custom archive through `pg_restore -f -`) and inspects the
//! SQL, handing it on.
//!
//! Memory is bounded by a fixed pool of buffers whatever the dump's size.
//! Reading (and inspecting) runs on the caller's thread, deflating on a pool
//! of threads, hashing and writing on one more, so pg_dump, the scan and
//! deflate overlap.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Read, Write};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};

use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};

use crate::core::dump::scan::ScanReport;
use crate::core::dump::{DumpError, Reader, Visitor};
use crate::core::format::{self, Codec};
use crate::services::crypto::{self, Identities, Recipients, Sealing};

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
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> HashingWriter<W> {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// The SHA-256 (hex) and count of the bytes that passed.
    pub(crate) fn finish(self) -> (String, u64) {
        (format!("{:x}", self.hasher.finalize()), self.bytes)
    }
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

/// The SHA-256 (hex) and length of everything `source` holds, read whole.
pub(crate) fn hash_all(source: impl Read) -> io::Result<(String, u64)> {
    let mut hashing = HashingWriter::new(io::sink());
    io::copy(
        &mut io::BufReader::with_capacity(CHUNK, source),
        &mut hashing,
    )?;
    Ok(hashing.finish())
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

/// Streams `source` into `file` as gzip at `level`, hashing the compressed
/// bytes and scanning the SQL on the way; fsyncs the file at the end.
/// `on_progress` gets the uncompressed byte count after each chunk.
///
/// The stream is cut into 1 MiB chunks that `workers` threads deflate in
/// parallel, each into a gzip member of its own (as pigz does); a writer
/// thread puts the members back in order. Concatenated members are one valid
/// gzip file (RFC 1952) that every gzip reader decompresses whole. Memory is
/// bounded: at most `2 * workers + 2` chunks are in flight.
///
/// With `seal`, the compressed stream is encrypted to those recipients
/// before it is hashed and written: nothing unencrypted reaches `file`.
pub(crate) fn compress_into(
    source: impl Read,
    file: &mut (dyn Write + Send),
    compression: format::Compression,
    seal: Option<&Recipients>,
    workers: usize,
    on_progress: impl FnMut(u64),
) -> io::Result<Archived> {
    match compression.codec {
        Codec::Gzip => gzip_into(source, file, compression.level, seal, workers, on_progress),
        Codec::Zstd | Codec::None => {
            stream_into(source, file, compression, seal, workers, on_progress)
        }
    }
}

type Sink<'f> = Sealing<HashingWriter<BufWriter<&'f mut (dyn Write + Send)>>>;

/// The end of every write: (encryption), hashing, buffering, the file.
fn sink<'f>(file: &'f mut (dyn Write + Send), seal: Option<&Recipients>) -> io::Result<Sink<'f>> {
    Sealing::new(
        HashingWriter::new(BufWriter::with_capacity(CHUNK, file)),
        seal,
    )
}

/// Ends the stream (the age stream's last chunk), flushes: the SHA-256 and
/// size of what the file holds.
fn finish_sink(sink: Sink<'_>) -> io::Result<(String, u64)> {
    let mut hashing = sink.finish()?;
    hashing.inner.flush()?;
    Ok(hashing.finish())
}

/// Streams a custom archive from `source` into `file` as it is (pg_dump
/// compressed it), hashing it; a copy goes through `pg_restore -f -` on the
/// way so the SQL inside is scanned (row counts, structure) as a plain
/// dump's is. `on_progress` gets the archive's byte count.
pub(crate) fn archive_into(
    mut source: impl Read,
    file: &mut (dyn Write + Send),
    seal: Option<&Recipients>,
    unarchive: Unarchive<'_>,
    mut on_progress: impl FnMut(u64),
) -> io::Result<Archived> {
    let mut child = unarchive()?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let errors = crate::services::process::drain(child.stderr.take().expect("piped"));
    let mut sink = sink(file, seal)?;
    let mut read = 0u64;
    let (written, scan) = std::thread::scope(|s| {
        let scanner = s.spawn(move || -> io::Result<ScanReport> {
            let mut reader = Reader::new();
            let mut buf = vec![0; CHUNK];
            loop {
                let n = read_full(&mut stdout, &mut buf)?;
                if n == 0 {
                    return Ok(reader.finish(&mut ()));
                }
                let _ = reader.feed(&buf[..n], &mut ());
            }
        });
        // pg_restore is fed from a thread of its own, a few chunks behind:
        // handed over here, each chunk held pg_dump up (its pipe full) for
        // as long as pg_restore took to take it, a fifth of the backup.
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(UNPACK_AHEAD);
        let feeding = s.spawn(move || {
            for chunk in rx {
                if stdin.write_all(&chunk).is_err() {
                    // A pg_restore that stopped is reported by its status below.
                    return;
                }
            }
        });
        let written = (|| -> io::Result<()> {
            loop {
                let mut buf = vec![0; CHUNK];
                let n = read_full(&mut source, &mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                buf.truncate(n);
                sink.write_all(&buf)?;
                // Refused once pg_restore stopped: its status says why.
                let _ = tx.send(buf);
                read += n as u64;
                on_progress(read);
            }
        })();
        if written.is_err() {
            let _ = child.kill();
        }
        drop(tx);
        let _ = feeding.join();
        let scan = scanner
            .join()
            .map_err(|_| io::Error::other("the scanning thread panicked"))
            .and_then(|r| r);
        (written, scan)
    });
    written?;
    let status = child.wait()?;
    if !status.success() {
        // InvalidData: the whole stream was read (pg_dump's own status may say more).
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "pg_restore could not read the archive pg_dump wrote: {}",
                pg_restore_error(&errors.join().unwrap_or_default())
            ),
        ));
    }
    let scan = scan?;
    let (sha256, compressed_bytes) = finish_sink(sink)?;
    Ok(Archived {
        sha256,
        compressed_bytes,
        scan,
    })
}

/// Chunks read ahead of `pg_restore -f -` while a custom archive is written.
const UNPACK_AHEAD: usize = 8;

/// The size of one zstd worker's job.
const ZSTD_JOB: u32 = 2 << 20;

/// zstd (its own worker threads compress while this thread reads and
/// scans) or no compression: one stream into the hashing writer.
fn stream_into(
    mut source: impl Read,
    file: &mut (dyn Write + Send),
    compression: format::Compression,
    seal: Option<&Recipients>,
    workers: usize,
    mut on_progress: impl FnMut(u64),
) -> io::Result<Archived> {
    let sink = sink(file, seal)?;
    let mut out: Box<dyn FinishWrite<_>> = match compression.codec {
        Codec::Zstd => {
            let mut z = zstd::stream::write::Encoder::new(sink, compression.level as i32)?;
            z.multithread(workers.max(1) as u32)?;
            // zstdmt's jobs default to 4 windows (2 MiB at level 1, 8 MiB at
            // level 3, more above), and it holds several in and out per
            // worker: 2 MiB jobs keep a backup under 64 MiB whatever the
            // level, at a ratio within 0.1 % (docs/benchmarks.md).
            if workers > 1 {
                z.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB))?;
            }
            // Each frame carries a checksum of its content (`zstd -t` checks it).
            z.include_checksum(true)?;
            Box::new(z)
        }
        _ => Box::new(Plain(sink)),
    };
    let mut scanner = Reader::new();
    let mut buf = vec![0; CHUNK];
    let mut total = 0u64;
    loop {
        let n = read_full(&mut source, &mut buf)?;
        if n == 0 {
            break;
        }
        // A problem is reported at the end: the dump is what pg_dump wrote.
        let _ = scanner.feed(&buf[..n], &mut ());
        out.write_all(&buf[..n])?;
        total += n as u64;
        on_progress(total);
    }
    let (sha256, compressed_bytes) = finish_sink(out.finish_write()?)?;
    Ok(Archived {
        sha256,
        compressed_bytes,
        scan: scanner.finish(&mut ()),
    })
}

/// A writer that ends its stream and hands back what it wrote into.
trait FinishWrite<W>: Write {
    fn finish_write(self: Box<Self>) -> io::Result<W>;
}

impl<W: Write> FinishWrite<W> for zstd::stream::write::Encoder<'_, W> {
    fn finish_write(self: Box<Self>) -> io::Result<W> {
        (*self).finish()
    }
}

/// The bytes as they are.
struct Plain<W>(W);

impl<W: Write> Write for Plain<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> FinishWrite<W> for Plain<W> {
    fn finish_write(self: Box<Self>) -> io::Result<W> {
        Ok(self.0)
    }
}

fn gzip_into(
    mut source: impl Read,
    file: &mut (dyn Write + Send),
    level: u32,
    seal: Option<&Recipients>,
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
        let deflaters: Vec<_> = (0..workers)
            .map(|_| {
                let (work_rx, done_tx) = (&work_rx, done_tx.clone());
                s.spawn(move || -> io::Result<()> {
                    let mut deflater = Deflater::new(level)?;
                    loop {
                        let job = work_rx
                            .lock()
                            .map_err(|_| io::Error::other("a deflate thread panicked"))?
                            .recv();
                        let Ok((seq, input)) = job else { return Ok(()) };
                        let member = deflater.member(&input)?;
                        if done_tx.send((seq, member, input)).is_err() {
                            return Ok(()); // the writer stopped: its error is reported
                        }
                    }
                })
            })
            .collect();
        drop(done_tx);
        // The hash, the bytes written, and how many members held data.
        let writer = s.spawn(move || -> io::Result<(String, u64, u64)> {
            let mut sink = sink(file, seal)?;
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
                sink.write_all(&Deflater::new(level)?.member(&[])?)?;
            }
            if !pending.is_empty() {
                return Err(io::Error::other("a deflate thread stopped early"));
            }
            let (sha256, bytes) = finish_sink(sink)?;
            Ok((sha256, bytes, next))
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
        // A deflate thread that failed sent nothing more: its error, not a
        // shorter file that looks complete.
        let mut deflated = Ok(());
        for d in deflaters {
            let r = d
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a deflate thread panicked")));
            deflated = deflated.and(r);
        }
        read_result?;
        let (sha256, compressed_bytes, members) = written?;
        deflated?;
        if members != seq {
            return Err(io::Error::other(format!(
                "{members} of {seq} gzip members were written"
            )));
        }
        Ok(Archived {
            sha256,
            compressed_bytes,
            scan: scanner.finish(&mut ()),
        })
    })
}

/// The extra field of each gzip member the tool writes: subfield `XT`
/// holding the member's own length (as BGZF does), so a reader can hand
/// whole members to threads without inflating to find where they end.
/// Every gzip reader skips an extra field it does not know (RFC 1952 2.3.1.1).
const SIZE_FIELD: [u8; 8] = [b'X', b'T', 4, 0, 0, 0, 0, 0];
/// Where the length sits in a member: after the fixed header (10), XLEN (2)
/// and the subfield's id and length (4).
const SIZE_AT: usize = 16;
const HEADER_LEN: usize = SIZE_AT + 4;
/// The largest member the tool writes, with room to spare.
const MEMBER_MAX: usize = CHUNK + CHUNK / 2;

/// Makes the gzip members of a backup: libdeflate's deflate, framed here.
/// libdeflate compresses a whole buffer at once, which is what a member
/// is, at twice zlib-rs's speed at level 6 for about 1 % more output
/// (docs/benchmarks.md, eighth run): on two cores the deflate is what a
/// gzip backup waits for.
struct Deflater {
    deflater: libdeflater::Compressor,
    level: u32,
    /// Room for the worst case, once per thread: a member holds only its bytes.
    scratch: Vec<u8>,
}

impl Deflater {
    fn new(level: u32) -> io::Result<Deflater> {
        let lvl = libdeflater::CompressionLvl::new(level as i32)
            .map_err(|_| io::Error::other(format!("gzip level {level} is out of range")))?;
        Ok(Deflater {
            deflater: libdeflater::Compressor::new(lvl),
            level,
            scratch: Vec::new(),
        })
    }

    /// One complete gzip member holding `input`, its length in its header.
    fn member(&mut self, input: &[u8]) -> io::Result<Vec<u8>> {
        let bound = self.deflater.deflate_compress_bound(input.len());
        if self.scratch.len() < bound {
            self.scratch.resize(bound, 0);
        }
        let n = self
            .deflater
            .deflate_compress(input, &mut self.scratch[..bound])
            .map_err(|e| io::Error::other(format!("deflate: {e:?}")))?;
        // XFL as gzip writes it: 2 for the best compression, 4 for the fastest.
        let xfl = match self.level {
            9.. => 2,
            0 | 1 => 4,
            _ => 0,
        };
        let mut member = Vec::with_capacity(HEADER_LEN + n + 8);
        // ID1 ID2 CM=deflate FLG=FEXTRA, MTIME 0, XFL, OS unknown; XLEN; the field.
        member.extend_from_slice(&[0x1f, 0x8b, 8, 4, 0, 0, 0, 0, xfl, 255]);
        member.extend_from_slice(&(SIZE_FIELD.len() as u16).to_le_bytes());
        member.extend_from_slice(&SIZE_FIELD);
        member.extend_from_slice(&self.scratch[..n]);
        member.extend_from_slice(&libdeflater::crc32(input).to_le_bytes());
        let size = u32::try_from(input.len()).map_err(|_| io::Error::other("chunk too large"))?;
        member.extend_from_slice(&size.to_le_bytes());
        let len = u32::try_from(member.len()).map_err(|_| io::Error::other("member too large"))?;
        // The header has no CRC of its own (FHCRC is not set): patching is safe.
        member[SIZE_AT..HEADER_LEN].copy_from_slice(&len.to_le_bytes());
        Ok(member)
    }
}

/// The length a member header of ours records, if `header` is one.
fn member_len(header: &[u8]) -> Option<usize> {
    let ours = header.len() >= HEADER_LEN
        && header[..3] == [0x1f, 0x8b, 8]
        && header[3] == 4 // FEXTRA only: no name, comment or header CRC
        && header[10..12] == [8, 0]
        && header[12..16] == SIZE_FIELD[..4];
    if !ours {
        return None;
    }
    let len = u32::from_le_bytes(header[SIZE_AT..HEADER_LEN].try_into().ok()?) as usize;
    // A member holds CHUNK bytes of SQL: deflate never makes that much more
    // than CHUNK. A length beyond is damage, read in turn (and refused there).
    (len > HEADER_LEN && len <= MEMBER_MAX).then_some(len)
}

/// Why reading a backup file failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    ChecksumMismatch {
        expected: String,
        actual: String,
    },
    /// The compressed stream or archive is damaged: what it is, and why.
    Damaged(&'static str, io::Error),
    Dump(DumpError),
    /// The file could not be read (a local I/O error, a remote copy's connection),
    /// or the program that unpacks it could not run.
    Io(io::Error),
    /// Whoever consumed the stream failed.
    Sink(io::Error),
    /// The file is encrypted and no key given can open it (not its fault).
    Key(String),
}

impl ReadError {
    /// Evidence about the file itself (as against the means of reading it or
    /// of consuming it): only this may mark a backup failed.
    pub(crate) fn is_about_the_file(&self) -> bool {
        matches!(
            self,
            ReadError::ChecksumMismatch { .. } | ReadError::Damaged(..) | ReadError::Dump(_)
        )
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::ChecksumMismatch { expected, actual } => write!(
                f,
                "checksum mismatch: the backup's recorded checksum is {expected}, the file hashes to {actual}: the file is corrupt or was changed"
            ),
            ReadError::Damaged(what, e) => write!(f, "the {what} is damaged ({e})"),
            ReadError::Dump(e) => write!(f, "{e}"),
            ReadError::Io(e) => write!(f, "cannot read the file ({e})"),
            ReadError::Sink(e) => write!(f, "the stream's consumer failed ({e})"),
            ReadError::Key(e) => f.write_str(e),
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
    /// The file is encrypted with age.
    pub(crate) encrypted: bool,
    /// The contents were read (false: an encrypted file read without an
    /// identity: only its checksum and age header were checked).
    pub(crate) contents_checked: bool,
}

/// What a file's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sniffed {
    Gzip,
    Zstd,
    /// pg_dump's custom archive (`PGDMP`).
    Custom,
    /// Anything else is read as SQL (the dump reader judges it).
    Sql,
}

impl Sniffed {
    pub(crate) fn of(head: &[u8]) -> Sniffed {
        if head.starts_with(&[0x1f, 0x8b]) {
            Sniffed::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Sniffed::Zstd
        } else if head.starts_with(b"PGDMP") {
            Sniffed::Custom
        } else {
            Sniffed::Sql
        }
    }

    fn what(self) -> &'static str {
        match self {
            Sniffed::Gzip => "gzip stream",
            Sniffed::Zstd => "zstd stream",
            Sniffed::Custom => "custom archive",
            Sniffed::Sql => "SQL file",
        }
    }
}

/// Starts the program that turns a custom archive on its stdin into SQL
/// on its stdout (`pg_restore -f -`), stdin, stdout and stderr piped.
pub(crate) type Unarchive<'a> = &'a dyn Fn() -> io::Result<Child>;

/// What a read needs besides the file: the keys of an encrypted one, the
/// program that unpacks a custom archive, and how many threads inflate.
#[derive(Clone, Copy)]
pub(crate) struct Opening<'a> {
    pub(crate) identities: Option<&'a Identities>,
    pub(crate) unarchive: Option<Unarchive<'a>>,
    pub(crate) workers: usize,
}

#[cfg(test)]
impl Opening<'_> {
    /// No keys, no pg_restore: plain dumps under any codec.
    pub(crate) fn plain(workers: usize) -> Opening<'static> {
        Opening {
            identities: None,
            unarchive: None,
            workers,
        }
    }
}

/// The dump reader and the consumer behind it, fed chunk by chunk.
struct Feeder<'v, V, F> {
    reader: Reader,
    visitor: &'v mut V,
    flush: F,
    /// A problem in the dump or its encoding: nothing after it is fed.
    stopped: Option<ReadError>,
}

impl<V: Visitor, F: FnMut(&mut V) -> io::Result<()>> Feeder<'_, V, F> {
    /// Feeds one chunk; false once the dump has a problem (recorded).
    fn feed(&mut self, chunk: &[u8]) -> Result<bool, ReadError> {
        if let Err(e) = self.reader.feed(chunk, self.visitor) {
            self.stopped = Some(ReadError::Dump(e));
            return Ok(false);
        }
        (self.flush)(self.visitor).map_err(ReadError::Sink)?;
        Ok(true)
    }
}

/// What the reading thread saw of the file itself: every byte of it hashed.
struct Tee {
    hasher: Sha256,
    bytes: u64,
    error: Option<io::Error>,
}

/// Reads the whole file, hashing it, and hands its chunks on while someone
/// takes them; the rest is still hashed (the checksum covers all of it)
/// unless `abandon` is set.
fn tee(
    mut file: impl Read,
    tx: mpsc::SyncSender<io::Result<Vec<u8>>>,
    abandon: &AtomicBool,
) -> Tee {
    let mut tee = Tee {
        hasher: Sha256::new(),
        bytes: 0,
        error: None,
    };
    let mut taken = true;
    while !abandon.load(Ordering::Relaxed) {
        if crate::services::interrupt::received().is_some() {
            // Stopped, not finished: never a checksum of part of the file.
            tee.error = Some(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
            break;
        }
        let mut buf = vec![0; CHUNK];
        match read_full(&mut file, &mut buf) {
            Ok(0) => break,
            Ok(n) => {
                buf.truncate(n);
                tee.hasher.update(&buf);
                tee.bytes += n as u64;
                taken = taken && tx.send(Ok(buf)).is_ok();
            }
            Err(e) => {
                let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                tee.error = Some(e);
                break;
            }
        }
    }
    tee
}

/// The reading thread's chunks as a stream.
struct Chunks {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => (self.chunk, self.at) = (chunk, 0),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0), // the file ended
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Reads a backup file in one pass: SHA-256 of the file (on a thread of
/// its own, every byte, whatever happens to the rest), an age layer when
/// the file is encrypted (each chunk authenticated), the whole compressed
/// stream (every gzip member with its CRC, zstd frames with their
/// checksums, or a custom archive through `pg_restore -f -`), and the dump
/// through the reader, whose lines go to `visitor`; `flush` runs after each
/// chunk (a restore sends what the visitor gathered to psql), and its error
/// stops the pass as [`ReadError::Sink`]. A problem in the dump stops the
/// visitor before the line that holds it. The bytes say what each layer is.
pub(crate) fn read_checked<V: Visitor>(
    file: impl Read + Send,
    expected_sha256: Option<&str>,
    opening: Opening<'_>,
    visitor: &mut V,
    flush: impl FnMut(&mut V) -> io::Result<()>,
) -> Result<ReadReport, ReadError> {
    let mut feeder = Feeder {
        reader: Reader::new(),
        visitor,
        flush,
        stopped: None,
    };
    let abandon = AtomicBool::new(false);
    let (tx, rx) = mpsc::sync_channel(4);
    let (tee, layers) = std::thread::scope(|s| {
        let reading = s.spawn(|| tee(file, tx, &abandon));
        let chunks = Chunks {
            rx,
            chunk: Vec::new(),
            at: 0,
        };
        let layers = decode_all(chunks, opening, &mut feeder);
        if matches!(layers, Err(ReadError::Sink(_))) {
            abandon.store(true, Ordering::Relaxed); // nobody wants the rest
        }
        let tee = reading
            .join()
            .map_err(|_| ReadError::Io(io::Error::other("the reading thread panicked")));
        (tee, layers)
    });
    let mut tee = tee?;
    // The file's own read error first: it explains whatever the layers saw.
    if let Some(e) = tee.error.take() {
        return Err(ReadError::Io(e));
    }
    if let Err(e @ ReadError::Sink(_)) = layers {
        return Err(e);
    }
    // A key that opens nothing may be a damaged header: the checksum
    // (over every byte, read to the end) says which.
    let sha256 = format!("{:x}", tee.hasher.finalize());
    if let Some(expected) = expected_sha256
        && !expected.eq_ignore_ascii_case(&sha256)
    {
        return Err(ReadError::ChecksumMismatch {
            expected: expected.to_string(),
            actual: sha256,
        });
    }
    let layers = layers?;
    if let Some(e) = feeder.stopped {
        return Err(e);
    }
    let scan = feeder.reader.finish(feeder.visitor);
    if layers.contents_checked {
        (feeder.flush)(feeder.visitor).map_err(ReadError::Sink)?;
        scan.check().map_err(ReadError::Dump)?;
    }
    Ok(ReadReport {
        sha256,
        compressed_bytes: tee.bytes,
        scan,
        encrypted: layers.encrypted,
        contents_checked: layers.contents_checked,
    })
}

/// The SQL of an archive `unarchive` reads (a directory backup: `pg_restore
/// -f - DIR`, `input` on its stdin: nothing, or the directory as a tar
/// stream for the compose service) through the dump reader
/// into `visitor`, `flush` after each chunk; damage pg_restore reports is
/// the archive's ([`ReadError::Damaged`]), as for a custom archive.
pub(crate) fn read_unarchived<V: Visitor>(
    input: impl Read + Send,
    unarchive: Unarchive<'_>,
    visitor: &mut V,
    flush: impl FnMut(&mut V) -> io::Result<()>,
) -> Result<ScanReport, ReadError> {
    let mut feeder = Feeder {
        reader: Reader::new(),
        visitor,
        flush,
        stopped: None,
    };
    unpack_archive(input, unarchive, &mut feeder)?;
    match feeder.stopped {
        Some(ReadError::Damaged(_, e)) => return Err(ReadError::Damaged("directory backup", e)),
        Some(e) => return Err(e),
        None => {}
    }
    let scan = feeder.reader.finish(feeder.visitor);
    (feeder.flush)(feeder.visitor).map_err(ReadError::Sink)?;
    scan.check().map_err(ReadError::Dump)?;
    Ok(scan)
}

/// What the layers of a file were.
struct Layers {
    encrypted: bool,
    contents_checked: bool,
}

/// The file's layers, outside in: age (when it is encrypted), then the codec.
/// Damage is recorded in the feeder (the checksum may explain it better);
/// errors are the consumer's, or a key that cannot open the file.
fn decode_all<V: Visitor, F: FnMut(&mut V) -> io::Result<()>>(
    chunks: Chunks,
    opening: Opening<'_>,
    feeder: &mut Feeder<'_, V, F>,
) -> Result<Layers, ReadError> {
    let (head, mut outer) = match peek(chunks, crypto::HEADER_PREFIX.len()) {
        Ok(p) => p,
        Err(e) => {
            feeder.stopped = Some(ReadError::Damaged("file", e));
            return Ok(Layers {
                encrypted: false,
                contents_checked: true,
            });
        }
    };
    if !crypto::is_age(&head) {
        decode_codec(outer, opening, feeder)?;
        return Ok(Layers {
            encrypted: false,
            contents_checked: true,
        });
    }
    let Some(identities) = opening.identities else {
        // Without a key: the header is all there is to check.
        if let Err(e) = crypto::check_header(&mut outer) {
            feeder.stopped = Some(ReadError::Damaged(
                "age header",
                io::Error::other(e.to_string()),
            ));
        }
        return Ok(Layers {
            encrypted: true,
            contents_checked: false,
        });
    };
    match crypto::open(outer, Some(identities)) {
        Ok(plain) => decode_codec(plain, opening, feeder)?,
        Err(crypto::OpenError::Header(e)) => {
            feeder.stopped = Some(ReadError::Damaged("age header", io::Error::other(e)));
        }
        Err(e) => return Err(ReadError::Key(e.to_string())),
    }
    Ok(Layers {
        encrypted: true,
        contents_checked: true,
    })
}

/// The codec layer: what the first bytes say.
fn decode_codec<R: Read + Send, V: Visitor, F: FnMut(&mut V) -> io::Result<()>>(
    input: R,
    opening: Opening<'_>,
    feeder: &mut Feeder<'_, V, F>,
) -> Result<(), ReadError> {
    let (head, input) = match peek(input, HEADER_LEN) {
        Ok(p) => p,
        Err(e) => {
            // The age layer's authentication, or the file's own read error
            // (which the reading thread reports first).
            feeder.stopped = Some(ReadError::Damaged("encrypted stream", e));
            return Ok(());
        }
    };
    let input = io::BufReader::with_capacity(CHUNK, input);
    match Sniffed::of(&head) {
        Sniffed::Gzip if member_len(&head).is_some() && opening.workers > 1 => {
            inflate_parallel(input, opening.workers, feeder)
        }
        Sniffed::Custom => {
            let unarchive = opening.unarchive.ok_or_else(|| {
                ReadError::Io(io::Error::other(
                    "it is a custom archive and reading one needs pg_restore",
                ))
            })?;
            unpack_archive(input, unarchive, feeder)
        }
        kind => decode_stream(input, kind, feeder),
    }
}

/// A stream whose first bytes were read, with them put back in front.
type Peeked<R> = io::Chain<io::Cursor<Vec<u8>>, R>;

/// The first `n` bytes of a stream (fewer only at its end), and the whole
/// stream again, those bytes first. However the source cuts its reads (a
/// download may hand over one byte first), the head is whole.
fn peek<R: Read>(mut input: R, n: usize) -> io::Result<(Vec<u8>, Peeked<R>)> {
    let mut head = vec![0; n];
    let got = read_full(&mut input, &mut head)?;
    head.truncate(got);
    Ok((head.clone(), io::Cursor::new(head).chain(input)))
}

/// One decoder on this thread: gzip members in turn, zstd frames, or SQL as it is.
fn decode_stream<R: Read, V: Visitor, F: FnMut(&mut V) -> io::Result<()>>(
    input: R,
    kind: Sniffed,
    feeder: &mut Feeder<'_, V, F>,
) -> Result<(), ReadError> {
    let mut decoder: Box<dyn Read> = match kind {
        Sniffed::Gzip => Box::new(MultiGzDecoder::new(input)),
        Sniffed::Zstd => match zstd::stream::read::Decoder::new(input) {
            Ok(d) => Box::new(d),
            Err(e) => {
                feeder.stopped = Some(ReadError::Damaged(kind.what(), e));
                return Ok(());
            }
        },
        _ => Box::new(input),
    };
    let mut buf = vec![0; CHUNK];
    loop {
        match decoder.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                if !feeder.feed(&buf[..n])? {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Damage in what the file holds (or the file's own read error,
            // which the reading thread reports first).
            Err(e) => {
                feeder.stopped = Some(ReadError::Damaged(kind.what(), e));
                return Ok(());
            }
        }
    }
}

/// The tool's gzip files: whole members (their length is in their header)
/// are inflated on `workers` threads and fed in order. A member without the
/// length (a file gzip or pigz made, concatenated) ends the parallel part:
/// the rest is inflated in turn.
fn inflate_parallel<R: Read + Send, V: Visitor, F: FnMut(&mut V) -> io::Result<()>>(
    mut input: R,
    workers: usize,
    feeder: &mut Feeder<'_, V, F>,
) -> Result<(), ReadError> {
    type Done = (u64, io::Result<Vec<u8>>);
    let in_flight = 2 * workers + 2;
    let (work_tx, work_rx) = mpsc::sync_channel::<(u64, Vec<u8>)>(in_flight);
    let work_rx = Mutex::new(work_rx);
    let (done_tx, done_rx) = mpsc::sync_channel::<Done>(in_flight);
    // Set when the consumer stops early: the producer dispatches no more.
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..workers {
            let (work_rx, done_tx) = (&work_rx, done_tx.clone());
            s.spawn(move || {
                loop {
                    let job = match work_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok((seq, member)) = job else { return };
                    if done_tx.send((seq, inflate_member(&member))).is_err() {
                        return;
                    }
                }
            });
        }
        let tail_tx = done_tx;
        let stop = &stop;
        s.spawn(move || {
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut header = vec![0; HEADER_LEN];
                let n = match read_full(&mut input, &mut header) {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tail_tx.send((seq, Err(e)));
                        break;
                    }
                };
                header.truncate(n);
                if n == 0 {
                    break;
                }
                let Some(len) = member_len(&header) else {
                    // Not one of ours: inflate the rest in turn, in order.
                    let mut gz = MultiGzDecoder::new(io::Cursor::new(header).chain(&mut input));
                    loop {
                        let mut buf = vec![0; CHUNK];
                        let r = read_full(&mut gz, &mut buf).map(|n| {
                            buf.truncate(n);
                            buf
                        });
                        let end = matches!(&r, Ok(b) if b.is_empty())
                            || r.is_err()
                            || stop.load(Ordering::Relaxed);
                        if tail_tx.send((seq, r)).is_err() || end {
                            break;
                        }
                        seq += 1;
                    }
                    break;
                };
                let mut member = header;
                member.reserve_exact(len - HEADER_LEN);
                // read_to_end, not a zero-filled buffer: filling every
                // member before reading over it cost an eighth of a restore.
                let rest = (len - HEADER_LEN) as u64;
                if let Err(e) = (&mut input).take(rest).read_to_end(&mut member) {
                    let _ = tail_tx.send((seq, Err(e)));
                    break;
                }
                if work_tx.send((seq, member)).is_err() {
                    break;
                }
                seq += 1;
            }
        });

        let mut pending = BTreeMap::new();
        let mut next = 0u64;
        let mut outcome = Ok(());
        'receive: for (seq, result) in &done_rx {
            pending.insert(seq, result);
            while let Some(result) = pending.remove(&next) {
                next += 1;
                let fed = match result {
                    Ok(sql) => feeder.feed(&sql),
                    Err(e) => {
                        feeder.stopped = Some(ReadError::Damaged(Sniffed::Gzip.what(), e));
                        Ok(false)
                    }
                };
                match fed {
                    Ok(true) => {}
                    Ok(false) => break 'receive,
                    Err(e) => {
                        outcome = Err(e);
                        break 'receive;
                    }
                }
            }
        }
        // Stop the producer, and let the pool finish what it holds (a
        // worker or the producer blocked on a full channel would never end).
        stop.store(true, Ordering::Relaxed);
        for _ in done_rx {}
        outcome
    })
}

/// One member of ours, whole: its SQL, or why it is damaged.
fn inflate_member(member: &[u8]) -> io::Result<Vec<u8>> {
    let mut gz = flate2::bufread::GzDecoder::new(member);
    let mut out = Vec::with_capacity(CHUNK + CHUNK / 4);
    // A member of ours holds CHUNK bytes: more is a tampered member, not
    // something to inflate into memory.
    (&mut gz).take(CHUNK as u64 + 1).read_to_end(&mut out)?;
    if out.len() > CHUNK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a member holds more than the tool ever puts in one",
        ));
    }
    if !gz.into_inner().is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bytes after a member's end within its recorded length",
        ));
    }
    Ok(out)
}

/// A custom archive through `pg_restore -f -`: the archive's bytes go to its
/// stdin from a thread, its SQL comes back to the feeder.
fn unpack_archive<R: Read + Send, V: Visitor, F: FnMut(&mut V) -> io::Result<()>>(
    mut input: R,
    unarchive: Unarchive<'_>,
    feeder: &mut Feeder<'_, V, F>,
) -> Result<(), ReadError> {
    let mut child = unarchive().map_err(ReadError::Io)?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let errors = crate::services::process::drain(child.stderr.take().expect("piped"));
    std::thread::scope(|s| {
        let pump = s.spawn(move || -> Option<io::Error> {
            let mut buf = vec![0; CHUNK];
            loop {
                match read_full(&mut input, &mut buf) {
                    Ok(0) => return None,
                    Ok(n) => {
                        if stdin.write_all(&buf[..n]).is_err() {
                            return None; // pg_restore stopped: its status says why
                        }
                    }
                    Err(e) => return Some(e),
                }
            }
        });
        let mut buf = vec![0; CHUNK];
        let mut outcome = Ok(());
        loop {
            match stdout.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => match feeder.feed(&buf[..n]) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    outcome = Err(ReadError::Io(e));
                    break;
                }
            }
        }
        if outcome.is_err() || feeder.stopped.is_some() {
            let _ = child.kill();
        }
        drop(stdout);
        let status = child.wait().map_err(ReadError::Io);
        let input_error = pump.join().unwrap_or(None);
        outcome?;
        if let Some(e) = input_error {
            // The layers beneath (age, or the file) failed: damage, or the
            // file's read error that the reading thread reports first.
            feeder
                .stopped
                .get_or_insert(ReadError::Damaged("encrypted stream", e));
            return Ok(());
        }
        let status = status?;
        if !status.success() && feeder.stopped.is_none() {
            let message = pg_restore_error(&errors.join().unwrap_or_default());
            // A pg_restore too old for the archive is the machine's problem.
            if message.contains("unsupported version") {
                return Err(ReadError::Io(io::Error::other(format!(
                    "{message}: use a pg_restore at least as new as the pg_dump that made it"
                ))));
            }
            // Only what pg_restore says about the archive's bytes is about
            // the file; a signal, a container that went away, is not.
            if !archive_damage(&message) {
                return Err(ReadError::Io(io::Error::other(format!(
                    "pg_restore stopped ({status}): {message}"
                ))));
            }
            feeder.stopped = Some(ReadError::Damaged(
                Sniffed::Custom.what(),
                io::Error::other(message),
            ));
        }
        Ok(())
    })
}

/// pg_restore's error, as one line: its first `error:` line (warnings come
/// before it), else its first line.
pub(crate) fn pg_restore_error(stderr: &[u8]) -> String {
    let stderr = String::from_utf8_lossy(stderr);
    let lines = || stderr.lines().map(str::trim);
    lines()
        .find(|l| l.starts_with("pg_restore: error:"))
        .or_else(|| lines().find(|l| !l.is_empty()))
        .unwrap_or("no message")
        .trim_start_matches("pg_restore: error: ")
        .to_string()
}

/// Whether pg_restore's message is about the archive's bytes.
fn archive_damage(message: &str) -> bool {
    [
        "input file",
        // A directory backup's table data that does not read back.
        "data file",
        "end of file",
        "did not find magic string",
        "corrupt",
        "unrecognized data block type",
        "could not uncompress",
        "could not decompress",
        "invalid",
        "bad dumpId",
        "unexpected",
    ]
    .iter()
    .any(|p| message.contains(p))
}

/// The `pg_dump` version a plain dump's header names, from its first
/// chunk (through its age layer when there are keys).
pub(crate) fn peek_pg_dump_version(
    file: impl Read,
    identities: Option<&Identities>,
) -> Option<String> {
    let (head, file) = peek(file, crypto::HEADER_PREFIX.len()).ok()?;
    let inner: Box<dyn Read> = if crypto::is_age(&head) {
        Box::new(crypto::open(file, identities).ok()?)
    } else {
        Box::new(file)
    };
    let (head, inner) = peek(inner, HEADER_LEN).ok()?;
    let mut decoder: Box<dyn Read> = match Sniffed::of(&head) {
        Sniffed::Gzip => Box::new(MultiGzDecoder::new(inner)),
        Sniffed::Zstd => Box::new(zstd::stream::read::Decoder::new(inner).ok()?),
        Sniffed::Custom => return None,
        Sniffed::Sql => Box::new(inner),
    };
    let mut buf = vec![0; 64 * 1024];
    let n = read_full(&mut decoder, &mut buf).ok()?;
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
        let archived = compress_into(data, &mut out, gzip(6), None, workers, |_| {}).unwrap();
        (out, archived)
    }

    fn gzip(level: u32) -> format::Compression {
        format::Compression {
            codec: Codec::Gzip,
            level,
        }
    }

    fn check(file: &[u8], sha: Option<&str>) -> Result<ReadReport, ReadError> {
        read_checked(file, sha, Opening::plain(2), &mut (), |_| Ok(()))
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
        let out = compress_into(&data[..], &mut file, gzip(6), None, 3, |n| seen = n).unwrap();
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
            matches!(check(&bytes, None), Err(ReadError::Damaged(..))),
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
        let err =
            read_checked(Broken(1), None, Opening::plain(2), &mut (), |_| Ok(())).unwrap_err();
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
        let err = compress_into(Broken(10), &mut out, gzip(1), None, 2, |_| {}).unwrap_err();
        assert_eq!(err.to_string(), "boom");
    }

    /// A dump of `rows` rows in one table, with its trailer.
    fn dump_of(rows: u32) -> Vec<u8> {
        let mut data = DUMP[..DUMP.len() - 46].to_vec();
        for i in 0..rows {
            data.extend_from_slice(format!("{i}\tsome text to compress {}\n", i % 97).as_bytes());
        }
        data.extend_from_slice(b"\\.\n\n--\n-- PostgreSQL database dump complete\n--\n\n");
        data
    }

    #[test]
    fn every_codec_round_trips_whatever_the_reader_threads() {
        let data = dump_of(300_000);
        for codec in [Codec::Gzip, Codec::Zstd, Codec::None] {
            let c = format::Compression { codec, level: 3 };
            let mut file = Vec::new();
            let out = compress_into(&data[..], &mut file, c, None, 2, |_| {}).unwrap();
            assert_eq!(out.scan.tables["public.t"], 300_002, "{codec}");
            for workers in [1, 2, 4] {
                let report = read_checked(
                    &file[..],
                    Some(&out.sha256),
                    Opening::plain(workers),
                    &mut (),
                    |_| Ok(()),
                )
                .unwrap();
                assert_eq!(report.scan.bytes, data.len() as u64, "{codec} {workers}");
                assert_eq!(report.compressed_bytes, file.len() as u64);
            }
        }
    }

    #[test]
    fn every_level_makes_members_zlib_reads_with_the_header_flate2_writes() {
        let data = dump_of(20_000);
        for level in 1..=9 {
            let member = Deflater::new(level).unwrap().member(&data).unwrap();
            let mut theirs = flate2::GzBuilder::new()
                .extra(SIZE_FIELD.to_vec())
                .write(Vec::new(), flate2::Compression::new(level));
            theirs.write_all(&data).unwrap();
            let theirs = theirs.finish().unwrap();
            assert_eq!(member[..SIZE_AT], theirs[..SIZE_AT], "level {level}");
            assert_eq!(member_len(&member[..HEADER_LEN]), Some(member.len()));
            assert_eq!(inflate_member(&member).unwrap(), data, "level {level}");
        }
        let empty = Deflater::new(6).unwrap().member(&[]).unwrap();
        assert!(inflate_member(&empty).unwrap().is_empty());
        // What deflate cannot shrink still fits the length a reader accepts.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..CHUNK)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for level in 1..=9 {
            let member = Deflater::new(level).unwrap().member(&noise).unwrap();
            assert_eq!(member_len(&member[..HEADER_LEN]), Some(member.len()));
            assert_eq!(inflate_member(&member).unwrap(), noise, "level {level}");
        }
    }

    #[test]
    fn a_deflate_thread_that_fails_fails_the_backup() {
        // A level libdeflate refuses: every deflate thread stops at once.
        let data = dump_of(50_000);
        for workers in [1, 2] {
            let mut out = Vec::new();
            let r = compress_into(&data[..], &mut out, gzip(13), None, workers, |_| {});
            let e = r.expect_err("a backup whose members were not made fails");
            assert!(e.to_string().contains("gzip level 13"), "{e}");
        }
    }

    #[test]
    fn members_record_their_length_and_gzip_reads_them() {
        let data = dump_of(200_000);
        let (file, _) = compress(&data, 2);
        let len = member_len(&file[..HEADER_LEN]).unwrap();
        assert!(len < file.len() && member_len(&file[len..len + HEADER_LEN]).is_some());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gz");
        std::fs::write(&path, &file).unwrap();
        let out = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success() && out.stdout == data);
    }

    #[test]
    fn parallel_reading_catches_damage_anywhere() {
        let data = dump_of(200_000);
        let (file, out) = compress(&data, 2);
        let second = member_len(&file[..HEADER_LEN]).unwrap();
        // A flipped byte inside the second member's deflate data.
        let mut bytes = file.clone();
        bytes[second + 100] ^= 0xff;
        let err =
            read_checked(&bytes[..], None, Opening::plain(2), &mut (), |_| Ok(())).unwrap_err();
        assert!(matches!(err, ReadError::Damaged(..)), "{err:?}");
        // With the checksum known, the mismatch is what is said.
        let err = read_checked(
            &bytes[..],
            Some(&out.sha256),
            Opening::plain(2),
            &mut (),
            |_| Ok(()),
        );
        assert!(matches!(err, Err(ReadError::ChecksumMismatch { .. })));
        // A file cut inside a member.
        let cut = &file[..second + 50];
        let err = read_checked(cut, None, Opening::plain(2), &mut (), |_| Ok(())).unwrap_err();
        assert!(matches!(err, ReadError::Damaged(..)), "{err:?}");
        // A length that lies (bytes after the member's end within it).
        let mut lying = file.clone();
        let len = u32::try_from(second + 8).unwrap();
        lying[SIZE_AT..HEADER_LEN].copy_from_slice(&len.to_le_bytes());
        let err =
            read_checked(&lying[..], None, Opening::plain(2), &mut (), |_| Ok(())).unwrap_err();
        assert!(err.is_about_the_file(), "{err:?}");
        // A flipped bit that makes a length of 4 GiB is no allocation: the
        // member is read in turn (its data is intact: the header has no CRC),
        // and the checksum says the file changed.
        let mut huge = file.clone();
        huge[SIZE_AT + 3] = 0xff;
        let report = read_checked(&huge[..], None, Opening::plain(2), &mut (), |_| Ok(())).unwrap();
        assert_eq!(report.scan.bytes, data.len() as u64);
        let err = read_checked(
            &huge[..],
            Some(&out.sha256),
            Opening::plain(2),
            &mut (),
            |_| Ok(()),
        );
        assert!(matches!(err, Err(ReadError::ChecksumMismatch { .. })));
    }

    #[test]
    fn a_foreign_gzip_member_after_ours_is_read_in_turn() {
        let data = dump_of(50_000);
        let (head, rest) = data.split_at(data.len() / 2);
        let (mut file, _) = compress(head, 2);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        gz.write_all(rest).unwrap();
        file.extend_from_slice(&gz.finish().unwrap());
        let report = read_checked(&file[..], None, Opening::plain(2), &mut (), |_| Ok(())).unwrap();
        assert_eq!(report.scan.bytes, data.len() as u64);
    }

    #[test]
    fn a_custom_archive_without_pg_restore_is_not_blamed_on_the_file() {
        let err = read_checked(
            &b"PGDMP\x01\x0e"[..],
            None,
            Opening::plain(2),
            &mut (),
            |_| Ok(()),
        )
        .unwrap_err();
        assert!(!err.is_about_the_file(), "{err}");
    }

    #[test]
    fn a_consumer_that_stops_ends_the_parallel_read() {
        // Many members in flight, a consumer that fails at the first chunk:
        // the pool and the producer must wind down (a hang here is the bug).
        let data = dump_of(2_000_000);
        let (file, _) = compress(&data, 2);
        for workers in [2, 4] {
            let mut calls = 0;
            let err = read_checked(&file[..], None, Opening::plain(workers), &mut (), |_| {
                calls += 1;
                Err(io::Error::other("psql went away"))
            })
            .unwrap_err();
            assert!(matches!(err, ReadError::Sink(_)), "{err:?}");
            assert_eq!(calls, 1);
        }
    }

    #[test]
    fn encrypted_files_read_with_the_key_and_a_damaged_header_is_a_checksum_mismatch() {
        use crate::core::config::{AgeConfig, Secret};
        let key = age::x25519::Identity::generate();
        let dir = tempfile::tempdir().unwrap();
        let id_file = dir.path().join("key.txt");
        let secret = age::secrecy::ExposeSecret::expose_secret(&key.to_string()).to_string();
        std::fs::write(&id_file, secret).unwrap();
        let config = AgeConfig {
            recipients: Some(Secret::new(key.to_public().to_string())),
            identity_file: Some(id_file),
            ..AgeConfig::default()
        };
        let recipients = crypto::recipients(&config).unwrap().unwrap();
        let identities = crypto::identities(&config).unwrap().unwrap();
        let data = dump_of(100_000);
        let mut file = Vec::new();
        let out =
            compress_into(&data[..], &mut file, gzip(6), Some(&recipients), 2, |_| {}).unwrap();
        assert!(crypto::is_age(&file));
        let keyed = Opening {
            identities: Some(&identities),
            ..Opening::plain(2)
        };
        let report =
            read_checked(&file[..], Some(&out.sha256), keyed, &mut (), |_| Ok(())).unwrap();
        assert!(report.encrypted && report.contents_checked);
        assert_eq!(report.scan.bytes, data.len() as u64);
        // Without the key: the header and the checksum only.
        let report = read_checked(
            &file[..],
            Some(&out.sha256),
            Opening::plain(2),
            &mut (),
            |_| Ok(()),
        )
        .unwrap();
        assert!(!report.contents_checked);
        // A flipped byte in the recipient stanza reads as "no matching key"
        // to age; the checksum says what it is.
        let mut damaged = file.clone();
        damaged[40] ^= 0x01;
        let err =
            read_checked(&damaged[..], Some(&out.sha256), keyed, &mut (), |_| Ok(())).unwrap_err();
        assert!(matches!(err, ReadError::ChecksumMismatch { .. }), "{err:?}");
        // A flipped byte in the payload: damage (or the checksum first).
        let mut damaged = file.clone();
        let at = damaged.len() / 2;
        damaged[at] ^= 0x01;
        let err = read_checked(&damaged[..], None, keyed, &mut (), |_| Ok(())).unwrap_err();
        assert!(err.is_about_the_file(), "{err:?}");
    }
}
