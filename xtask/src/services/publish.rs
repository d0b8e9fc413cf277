//! A new backup: `pg_dump` streamed through the codec into a store's new
//! file, its exit status and the dump's structure checked, then published
//! as a complete set (see [`catalog::commit_set`]). Nothing is visible
//! under the backup's name until everything passed.

use std::io::Write;

use anyhow::{Context as _, format_err};

use crate::core::config::Connection;
use crate::core::dump::scan::ScanReport;
use crate::core::format;
use crate::core::manifest::Manifest;
use crate::services::codec::{self, Archived};
use crate::services::crypto::Recipients;
use crate::services::fsutil::{self, PartialDir};
use crate::services::interrupt;
use crate::services::pg::{self, Client, DumpOptions, Runner};
use crate::ui;

/// How the dump is written: plain SQL under a codec with `threads`
/// workers, or pg_dump's custom archive (`opts.archive`); encrypted to
/// `seal` when given.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Compression<'a> {
    pub(crate) compression: format::Compression,
    pub(crate) threads: usize,
    pub(crate) seal: Option<&'a Recipients>,
}

/// pg_dump streamed through the pipeline into `dest`; checks its exit
/// status and the dump's structure. `where_` names `dest` in errors.
pub(crate) fn dump_into(
    client: &Client,
    conn: &Connection,
    opts: &DumpOptions,
    compression: Compression<'_>,
    dest: &mut (dyn Write + Send),
    where_: &str,
) -> anyhow::Result<Archived> {
    let mut reader = client.dump(conn, opts)?;
    let mut progress = ui::Progress::new("dumping");
    let archived = match opts.archive {
        None => codec::compress_into(
            &mut reader,
            dest,
            compression.compression,
            compression.seal,
            compression.threads,
            |n| progress.update(n),
        ),
        Some(_) => codec::archive_into(
            &mut reader,
            dest,
            compression.seal,
            &client.unarchiver(),
            |n| progress.update(n),
        ),
    };
    progress.finish();
    let archived = match archived {
        Ok(a) => a,
        // The archive ended early: pg_dump's own failure says why, if it failed.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData && opts.archive.is_some() => {
            let (status, stderr) = reader.finish()?;
            if !status.success() && !stderr.trim().is_empty() {
                return Err(pg::classify("pg_dump", &stderr, conn).into());
            }
            return Err(anyhow::Error::new(e).context("nothing was published"));
        }
        Err(e) => {
            reader.kill();
            return Err(anyhow::Error::new(e).context(format!(
                "writing the backup into {where_} failed; nothing was published"
            )));
        }
    };
    // At EOF pg_dump has closed its output: its status and stderr are here.
    let (status, stderr) = reader.finish()?;
    finished(status, &stderr, conn)?;
    archived.scan.check().map_err(|e| {
        format_err!("the dump pg_dump produced is incomplete: {e}; nothing was published")
    })?;
    Ok(archived)
}

/// What [`dump_directory`] produced: the files' manifest, their total size,
/// and what the archive's SQL holds.
pub(crate) struct DirectoryDump {
    pub(crate) manifest: Manifest,
    pub(crate) bytes: u64,
    pub(crate) scan: ScanReport,
}

/// pg_dump's directory format into `partial` (`opts.directory` names its
/// contents) to the end; then every file it wrote hashed into the manifest
/// of `dir_name`, and the archive's SQL read through `pg_restore -f -` and
/// the dump reader (row counts, structure), as a custom archive's is.
pub(crate) fn dump_directory(
    client: &Client,
    conn: &Connection,
    opts: &DumpOptions,
    partial: &PartialDir,
    dir_name: &str,
) -> anyhow::Result<DirectoryDump> {
    let path = partial.contents();
    let mut pg_dump = client.dump(conn, opts)?;
    ui::detail(format!(
        "pg_dump is writing the directory with {} jobs",
        opts.directory.as_ref().map_or(1, |(_, jobs)| *jobs)
    ));
    let unpacked = match client.runner {
        // Nothing comes on stdout: it ends when pg_dump does.
        Runner::Host { .. } => std::io::copy(&mut pg_dump, &mut std::io::sink()).map(drop),
        // The service's directory as a tar stream, unpacked here (GNU tar
        // writes nothing outside `path`; anything but plain files is refused below).
        Runner::Compose(_) => untar_into(&mut pg_dump, &path),
    };
    if let Err(e) = unpacked {
        // Nobody reads the stream any more: stop it rather than wait on it.
        pg_dump.kill();
        return Err(anyhow::Error::new(e).context(format!(
            "unpacking the directory pg_dump wrote in the service into {} failed; nothing was published",
            path.display()
        )));
    }
    let (status, stderr) = pg_dump.finish()?;
    finished(status, &stderr, conn)?;
    let (files, bytes) =
        fsutil::hash_directory(&path).context("reading the directory pg_dump wrote")?;
    let manifest = Manifest {
        dir: dir_name.to_string(),
        files,
    };
    if !manifest.files.contains_key("toc.dat") {
        anyhow::bail!("pg_dump wrote no toc.dat; nothing was published");
    }
    let unarchive = client.dir_unarchiver(&path);
    let input = client.dir_input(&path)?;
    let scan = codec::read_unarchived(input, &unarchive, &mut (), |_| interrupt::io_check())
        .map_err(|e| {
            format_err!("the dump pg_dump produced does not read back: {e}; nothing was published")
        })?;
    Ok(DirectoryDump {
        manifest,
        bytes,
        scan,
    })
}

/// A tar stream of a directory's files into `dir` (made, 0700) with this
/// machine's `tar`: owners and modes are not taken from the stream.
fn untar_into(stream: &mut impl std::io::Read, dir: &std::path::Path) -> std::io::Result<()> {
    fsutil::create_private_dir(dir)?;
    let mut tar = crate::services::process::ToolCommand::new("tar")
        .args([
            std::ffi::OsString::from("-xf"),
            "-".into(),
            "-C".into(),
            dir.into(),
            "--no-same-owner".into(),
            "--no-same-permissions".into(),
        ])
        .spawn(std::process::Stdio::piped(), std::process::Stdio::null())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let errors = crate::services::process::drain(tar.stderr.take().expect("piped"));
    let mut stdin = tar.stdin.take().expect("piped");
    let copied = std::io::copy(stream, &mut stdin);
    drop(stdin);
    let status = tar.wait()?;
    copied?;
    if !status.success() {
        return Err(std::io::Error::other(format!(
            "tar: {}",
            String::from_utf8_lossy(&errors.join().unwrap_or_default()).trim()
        )));
    }
    Ok(())
}

/// pg_dump's end: its failure (classified) is the error; its warnings are shown.
fn finished(
    status: std::process::ExitStatus,
    stderr: &str,
    conn: &Connection,
) -> anyhow::Result<()> {
    if !status.success() {
        if stderr.trim().is_empty() {
            return Err(format_err!(
                "pg_dump stopped before the dump was complete ({status}); nothing was published"
            ));
        }
        return Err(pg::classify("pg_dump", stderr, conn).into());
    }
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        ui::warn(format!("pg_dump: {line}"));
    }
    Ok(())
}
