//! Point-in-time recovery on pgBackRest, the pure part: the settings and the
//! pgBackRest configuration they become, the server settings `db-pitr`
//! changes, what `pgbackrest info --output=json` says, whether a target time
//! is covered, and how far the WAL archive lags.
//!
//! pgBackRest runs inside the compose service (its image carries the Debian
//! package); its configuration and repository live on the service's second
//! volume, mounted at [`REPO`], so they survive a recreated container.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::core::config::{S3Config, Secret, Sources};
use crate::core::plan::Consent;

/// The repository's mount point in the service (the Debian package's default).
pub(crate) const REPO: &str = "/var/lib/pgbackrest";
/// Our pgBackRest configuration, on the repository's volume.
pub(crate) const CONF: &str = "/var/lib/pgbackrest/pgbackrest.conf";
/// Under the data directory: restores in progress and data set aside by a
/// restore. Excluded from physical backups.
pub(crate) const WORK_DIR: &str = ".xtask-pitr";
pub(crate) const DEFAULT_RETENTION_FULL: u32 = 2;
pub(crate) const DEFAULT_ARCHIVE_TIMEOUT: u32 = 60;

/// What `db-pitr` and the physical commands are configured with.
#[derive(Debug, Clone)]
pub(crate) struct PitrSettings {
    /// pgBackRest's stanza: BACKUP_PITR_STANZA, else the database's name.
    pub(crate) stanza: String,
    /// Whether BACKUP_PITR_STANZA named it (else the server's archive_command may).
    pub(crate) stanza_given: bool,
    /// Full backups kept, with the WAL they need (BACKUP_PITR_RETENTION_FULL);
    /// `None` when unset: the configuration's (written at enable) stands.
    pub(crate) retention_full: Option<u32>,
    /// Seconds before a partly filled WAL segment is archived anyway: the
    /// bound on data lost (BACKUP_PITR_ARCHIVE_TIMEOUT).
    pub(crate) archive_timeout: u32,
    /// The repository's cipher pass (BACKUP_PITR_CIPHER_PASS, or the file
    /// BACKUP_PITR_CIPHER_PASS_FILE names): aes-256-cbc when set.
    pub(crate) cipher: Option<Secret>,
    /// Where the backups and the archived WAL go (BACKUP_PITR_REPO).
    pub(crate) repository: Repository,
}

/// pgBackRest's repository: the service's own volume, or a bucket.
#[derive(Debug, Clone)]
pub(crate) enum Repository {
    /// The `db-pitr` volume at [`REPO`] (the default).
    Volume,
    /// The `BACKUP_S3_*` bucket, under its own prefix (BACKUP_PITR_REPO=s3).
    S3(S3Repository),
}

impl Repository {
    /// Where it is, for messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Repository::Volume => format!("{REPO} (the db-pitr volume)"),
            Repository::S3(r) => r.location(),
        }
    }
}

/// An S3 repository as pgBackRest is told of it. pgBackRest runs in the
/// service, so the store's address is the one the container reaches, and
/// it speaks only HTTPS.
#[derive(Debug, Clone)]
pub(crate) struct S3Repository {
    pub(crate) bucket: String,
    /// The repository's path in the bucket: `/` + BACKUP_S3_PREFIX +
    /// `pgbackrest`, beside the logical backups, never among them (their
    /// listing stops at the prefix's first `/`).
    pub(crate) path: String,
    pub(crate) host: String,
    pub(crate) port: Option<u16>,
    pub(crate) region: String,
    pub(crate) path_style: bool,
    /// A CA certificate (PEM) the store's certificate is checked against,
    /// from BACKUP_PITR_S3_CA_FILE; copied onto the repository's volume.
    pub(crate) ca_pem: Option<String>,
    pub(crate) access_key: String,
    pub(crate) secret_key: Secret,
    /// The keys came with a session token: they expire, and archive-push
    /// would fail with them hours later. Refused when the configuration is
    /// written (reading one written before needs no keys).
    pub(crate) temporary_keys: bool,
}

impl S3Repository {
    /// `s3://bucket/path at host[:port]`, for messages; the store is part
    /// of it (the same bucket name elsewhere is another repository).
    pub(crate) fn location(&self) -> String {
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        format!("s3://{}{} at {}{port}", self.bucket, self.path, self.host)
    }

    /// Where the CA certificate is put in the service: named by its
    /// content, so writing a new one never breaks the configuration in use.
    pub(crate) fn ca_path(&self) -> Option<String> {
        use sha2::Digest as _;
        self.ca_pem.as_ref().map(|pem| {
            let digest = format!("{:x}", sha2::Sha256::digest(pem.as_bytes()));
            format!("{REPO}/s3-ca-{}.pem", &digest[..12])
        })
    }
}

/// The S3 keys, as the store service resolves them (from the environment
/// or a profile of the shared credentials file).
pub(crate) type S3Keys<'a> =
    &'a dyn Fn(&S3Config) -> anyhow::Result<(String, Secret, Option<Secret>)>;

impl PitrSettings {
    pub(crate) fn resolve(
        sources: &Sources,
        dbname: &str,
        s3: Option<&S3Config>,
        keys: S3Keys<'_>,
    ) -> anyhow::Result<PitrSettings> {
        let (stanza, stanza_given) = match sources.get("BACKUP_PITR_STANZA") {
            Some((s, _)) => (s, true),
            None => (stanza_for(dbname), false),
        };
        if stanza.is_empty()
            || !stanza
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            bail!("BACKUP_PITR_STANZA '{stanza}' is not valid: use letters, digits, '_' and '-'");
        }
        let number = |key: &str, default: u32, range: std::ops::RangeInclusive<u32>| match sources
            .get(key)
        {
            None => Ok(default),
            Some((v, _)) => match v.trim().parse::<u32>() {
                Ok(n) if range.contains(&n) => Ok(n),
                _ => Err(anyhow::format_err!(
                    "{key} '{v}' is not valid: use a whole number from {} to {}",
                    range.start(),
                    range.end()
                )),
            },
        };
        let retention_full = match sources.get("BACKUP_PITR_RETENTION_FULL") {
            Some(_) => Some(number(
                "BACKUP_PITR_RETENTION_FULL",
                DEFAULT_RETENTION_FULL,
                1..=9999,
            )?),
            None => None,
        };
        let archive_timeout = number(
            "BACKUP_PITR_ARCHIVE_TIMEOUT",
            DEFAULT_ARCHIVE_TIMEOUT,
            1..=86_400,
        )?;
        let cipher = match (
            sources.get("BACKUP_PITR_CIPHER_PASS"),
            sources.get("BACKUP_PITR_CIPHER_PASS_FILE"),
        ) {
            (Some(_), Some(_)) => bail!(
                "both BACKUP_PITR_CIPHER_PASS and BACKUP_PITR_CIPHER_PASS_FILE are set: keep one"
            ),
            (Some((pass, _)), None) => Some(Secret::new(pass)),
            (None, Some((path, _))) => {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading BACKUP_PITR_CIPHER_PASS_FILE {path}"))?;
                Some(Secret::new(text.trim_end_matches(['\n', '\r'])))
            }
            (None, None) => None,
        };
        if let Some(pass) = &cipher
            && (pass.expose().is_empty() || pass.expose().contains(['\n', '\r']))
        {
            bail!(
                "the pgBackRest cipher pass is empty or spans lines: use one line of at least one character"
            );
        }
        let repository = match sources.get("BACKUP_PITR_REPO") {
            None => Repository::Volume,
            Some((v, _)) => match v.trim() {
                "" | "volume" => Repository::Volume,
                "s3" => Repository::S3(s3_repository(sources, s3, keys)?),
                other => bail!("BACKUP_PITR_REPO '{other}' is not valid: use volume or s3"),
            },
        };
        Ok(PitrSettings {
            stanza,
            stanza_given,
            retention_full,
            archive_timeout,
            cipher,
            repository,
        })
    }
}

/// BACKUP_PITR_REPO=s3: the bucket of BACKUP_S3_*, reached from the service.
fn s3_repository(
    sources: &Sources,
    s3: Option<&S3Config>,
    keys: S3Keys<'_>,
) -> anyhow::Result<S3Repository> {
    let Some(s3) = s3 else {
        bail!(
            "BACKUP_PITR_REPO=s3 needs the bucket: set BACKUP_S3_BUCKET (and its endpoint and keys), or unset BACKUP_PITR_REPO for the service's volume"
        );
    };
    let (endpoint, key) = match sources.get("BACKUP_PITR_S3_ENDPOINT") {
        Some((e, _)) => (e, "BACKUP_PITR_S3_ENDPOINT"),
        None => (s3.endpoint.clone(), "BACKUP_S3_ENDPOINT"),
    };
    let url = url::Url::parse(&endpoint).map_err(|e| {
        anyhow::format_err!("{key} is not a URL ({e}): set it to the store's https:// address")
    })?;
    // Before any message repeats the address: user info may be a secret.
    if !url.username().is_empty() || url.password().is_some() {
        bail!(
            "{key} has user info in it: give the store's address only, and the keys in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        );
    }
    if url.scheme() != "https" {
        bail!(
            "pgBackRest reaches S3 only over HTTPS, and {key} is '{endpoint}': put TLS in front of the store and set BACKUP_PITR_S3_ENDPOINT to its https:// address"
        );
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_string(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        // pgBackRest's endpoint setting takes no brackets, and without them
        // a colon would read as a port.
        Some(url::Host::Ipv6(_)) => bail!(
            "{key} '{endpoint}' is an IPv6 address, which pgBackRest's endpoint setting cannot take: use a host name"
        ),
        None => bail!("{key} '{endpoint}' names no host: set it to the store's https:// address"),
    };
    let container_itself = host.eq_ignore_ascii_case("localhost")
        || host.to_ascii_lowercase().ends_with(".localhost")
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified());
    if container_itself {
        bail!(
            "{key} '{endpoint}' is the service container itself for pgBackRest, which runs there: set BACKUP_PITR_S3_ENDPOINT to an address the container reaches, e.g. https://host.docker.internal:{}",
            url.port_or_known_default().unwrap_or(443)
        );
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        bail!(
            "{key} '{endpoint}' has more than a scheme, host and port: pgBackRest takes the store's address only"
        );
    }
    let ca_pem = match sources.get("BACKUP_PITR_S3_CA_FILE") {
        None => None,
        Some((path, _)) => Some(ca_file(&path)?),
    };
    let (access_key, secret_key, session_token) = keys(s3)?;
    let path = format!("/{}pgbackrest", s3.prefix);
    if path.contains("//") {
        bail!(
            "BACKUP_S3_PREFIX '{}' has an empty part ('//'): pgBackRest's repository path takes none; remove the doubled '/'",
            s3.prefix
        );
    }
    // One line each in pgbackrest.conf: a line break would add settings,
    // and pgBackRest trims what surrounds a value.
    let plain = |v: &str| !v.contains(['\n', '\r']) && v.trim() == v && !v.is_empty();
    if !(plain(&s3.bucket)
        && plain(&s3.region)
        && plain(&path)
        && plain(&access_key)
        && plain(secret_key.expose()))
    {
        bail!(
            "an S3 setting or key (bucket, region, prefix, access key, secret key) is empty, spans lines or has spaces around it: pgBackRest's configuration takes one plain line each"
        );
    }
    Ok(S3Repository {
        bucket: s3.bucket.clone(),
        path,
        host,
        port: url.port(),
        region: s3.region.clone(),
        path_style: s3.path_style,
        ca_pem,
        access_key,
        secret_key,
        temporary_keys: session_token.is_some(),
    })
}

/// BACKUP_PITR_S3_CA_FILE: a small regular file of PEM certificates.
fn ca_file(path: &str) -> anyhow::Result<String> {
    const MAX: u64 = 1 << 20;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("reading BACKUP_PITR_S3_CA_FILE {path}"))?;
    if !meta.is_file() || meta.len() > MAX {
        bail!(
            "BACKUP_PITR_S3_CA_FILE {path} is not a certificate file (a regular file under 1 MiB): point it at the PEM of the CA that signed the store's certificate"
        );
    }
    let bytes =
        std::fs::read(path).with_context(|| format!("reading BACKUP_PITR_S3_CA_FILE {path}"))?;
    match String::from_utf8(bytes) {
        Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => Ok(pem),
        _ => bail!(
            "BACKUP_PITR_S3_CA_FILE {path} holds no PEM certificate: point it at the CA that signed the store's certificate (a DER file converts with `openssl x509 -inform der -in ca.der -out ca.pem`)"
        ),
    }
}

/// A stanza name from a database name: what pgBackRest accepts, kept readable.
pub(crate) fn stanza_for(dbname: &str) -> String {
    let s: String = dbname
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "main".into() } else { s }
}

/// The server pgBackRest backs up, as the service runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Server {
    /// The data directory (the container's PGDATA).
    pub(crate) pg_path: String,
    /// A superuser reachable on the local socket without a password.
    pub(crate) user: String,
}

/// The whole pgbackrest.conf. The cipher pass is in it (the file is 0600,
/// owned by postgres): archive-push runs from the server, which has no
/// other way to receive a secret.
/// Why a configuration is written: `enable`, or a restore that found none
/// (the machine was lost; the repository is in a bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConfFor {
    Enable,
    Restore,
}

pub(crate) fn render_conf(
    s: &PitrSettings,
    server: &Server,
    existing: Option<&str>,
    purpose: ConfFor,
) -> String {
    let mut out = String::new();
    out.push_str("# Written by `cargo xtask db-pitr enable`; rewritten on every enable.\n");
    out.push_str("[global]\n");
    match &s.repository {
        Repository::Volume => {
            let _ = writeln!(out, "repo1-path={REPO}");
        }
        Repository::S3(r) => {
            out.push_str("repo1-type=s3\n");
            let _ = writeln!(out, "repo1-path={}", r.path);
            let _ = writeln!(out, "repo1-s3-bucket={}", r.bucket);
            let _ = writeln!(out, "repo1-s3-endpoint={}", r.host);
            let _ = writeln!(out, "repo1-s3-region={}", r.region);
            if r.path_style {
                out.push_str("repo1-s3-uri-style=path\n");
            }
            if let Some(port) = r.port {
                let _ = writeln!(out, "repo1-storage-port={port}");
            }
            if let Some(ca) = r.ca_path() {
                let _ = writeln!(out, "repo1-storage-ca-file={ca}");
            }
            // The keys are here for the same reason as the cipher pass.
            let _ = writeln!(out, "repo1-s3-key={}", r.access_key);
            let _ = writeln!(out, "repo1-s3-key-secret={}", r.secret_key.expose());
        }
    }
    // BACKUP_PITR_RETENTION_FULL, else what the configuration said: a
    // later enable without the variable must not expire backups. Written
    // for a restore, without either: the retention the bucket had is not
    // known, so nothing expires until an enable sets it.
    let retention = s
        .retention_full
        .or_else(|| existing.and_then(retention_in))
        .or((purpose == ConfFor::Enable).then_some(DEFAULT_RETENTION_FULL));
    match retention {
        Some(n) => {
            let _ = writeln!(out, "repo1-retention-full={n}");
        }
        None => out.push_str(
            "# repo1-retention-full unset: nothing expires until `cargo xtask db-pitr enable`\n",
        ),
    }
    if let Some(pass) = &s.cipher {
        out.push_str("repo1-cipher-type=aes-256-cbc\n");
        let _ = writeln!(out, "repo1-cipher-pass={}", pass.expose());
    }
    // Checksummed, compressed and parallel: pgBackRest's own strengths.
    out.push_str("compress-type=zst\n");
    out.push_str("process-max=2\n");
    // A backup starts with an immediate checkpoint instead of waiting for the next one.
    out.push_str("start-fast=y\n");
    // Warnings and errors on stderr (the xtask reports them; archive-push's
    // go to the server's log); the container's log directory would be lost
    // with the container anyway.
    out.push_str("log-level-console=off\n");
    out.push_str("log-level-stderr=warn\n");
    out.push_str("log-level-file=off\n");
    out.push_str("lock-path=/tmp/pgbackrest\n");
    let _ = writeln!(out, "\n[{}]", s.stanza);
    let _ = writeln!(out, "pg1-path={}", server.pg_path);
    out.push_str("pg1-socket-path=/var/run/postgresql\n");
    let _ = writeln!(out, "pg1-user={}", server.user);
    out.push_str("pg1-database=postgres\n");
    // Data a restore set aside lives under the data directory: never in a backup.
    let _ = writeln!(out, "exclude={WORK_DIR}/");
    out
}

/// The stanza in a server's archive_command, when it is ours.
pub(crate) fn stanza_in(archive_command: &str) -> Option<String> {
    let rest = archive_command.strip_prefix(&format!("pgbackrest --config={CONF} --stanza="))?;
    let stanza = rest.strip_suffix(" archive-push %p")?;
    (!stanza.is_empty() && !stanza.contains(' ')).then(|| stanza.to_string())
}

/// Where a configuration file puts the repository, as
/// [`Repository::describe`] says it.
pub(crate) fn repository_in(conf: &str) -> String {
    let setting = |key: &str| {
        conf.lines()
            .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
            .map(str::trim)
            .unwrap_or_default()
    };
    if setting("repo1-type") == "s3" {
        let port = match setting("repo1-storage-port") {
            "" => String::new(),
            p => format!(":{p}"),
        };
        format!(
            "s3://{}{} at {}{port}",
            setting("repo1-s3-bucket"),
            setting("repo1-path"),
            setting("repo1-s3-endpoint")
        )
    } else {
        format!("{} (the db-pitr volume)", setting("repo1-path"))
    }
}

/// The CA certificate a configuration file names.
pub(crate) fn ca_file_in(conf: &str) -> Option<String> {
    conf.lines()
        .find_map(|l| l.trim().strip_prefix("repo1-storage-ca-file="))
        .map(|v| v.trim().to_string())
}

/// `repo1-retention-full` in a configuration file.
fn retention_in(conf: &str) -> Option<u32> {
    conf.lines()
        .find_map(|l| l.trim().strip_prefix("repo1-retention-full="))
        .and_then(|v| v.trim().parse().ok())
}

/// What the server runs to push each WAL segment.
pub(crate) fn archive_command(stanza: &str) -> String {
    format!("pgbackrest --config={CONF} --stanza={stanza} archive-push %p")
}

/// One server setting `db-pitr` changes: `to: None` resets it to the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) name: &'static str,
    pub(crate) from: String,
    pub(crate) to: Option<String>,
}

/// The settings `enable` wants, each compared with the server's (`current`:
/// name → value as `SHOW` gives it). Only real changes are listed.
pub(crate) fn enable_changes(current: &BTreeMap<String, String>, s: &PitrSettings) -> Vec<Change> {
    let wanted = [
        ("archive_mode", "on".to_string()),
        ("archive_command", archive_command(&s.stanza)),
        ("archive_timeout", s.archive_timeout.to_string()),
        // `minimal` cannot be archived; replica is the default since 10.
        ("wal_level", "replica".to_string()),
    ];
    wanted
        .into_iter()
        .filter_map(|(name, to)| {
            let from = current.get(name).cloned().unwrap_or_default();
            let same = match name {
                "archive_timeout" => seconds(&from) == Some(s.archive_timeout),
                "wal_level" => from == "replica" || from == "logical",
                _ => from == to,
            };
            (!same).then_some(Change {
                name,
                from,
                to: Some(to),
            })
        })
        .collect()
}

/// The settings `disable` resets, where they differ from the defaults.
pub(crate) fn disable_changes(current: &BTreeMap<String, String>) -> Vec<Change> {
    ["archive_mode", "archive_command", "archive_timeout"]
        .into_iter()
        .filter_map(|name| {
            let from = current.get(name).cloned().unwrap_or_default();
            let default = matches!(
                (name, from.as_str()),
                ("archive_mode", "off") | ("archive_command", "" | "(disabled)")
            ) || (name == "archive_timeout" && seconds(&from) == Some(0));
            (!default).then_some(Change {
                name,
                from,
                to: None,
            })
        })
        .collect()
}

/// Whether the changes need a server restart (postmaster-context settings).
pub(crate) fn needs_restart(changes: &[Change]) -> bool {
    changes
        .iter()
        .any(|c| matches!(c.name, "archive_mode" | "wal_level"))
}

/// `60`, `60s`, `1min`, `1h`: SHOW's forms of a duration, in seconds.
fn seconds(text: &str) -> Option<u32> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u32 = n.parse().ok()?;
    match unit.trim() {
        "" | "s" => Some(n),
        "min" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        "ms" => Some(n / 1000),
        _ => None,
    }
}

/// pgBackRest's backup types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BackupKind {
    Full,
    Diff,
    Incr,
}

impl BackupKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BackupKind::Full => "full",
            BackupKind::Diff => "diff",
            BackupKind::Incr => "incr",
        }
    }
    fn parse(s: &str) -> Option<BackupKind> {
        match s {
            "full" => Some(BackupKind::Full),
            "diff" => Some(BackupKind::Diff),
            "incr" => Some(BackupKind::Incr),
            _ => None,
        }
    }
}

/// One physical backup in the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Physical {
    pub(crate) label: String,
    pub(crate) kind: BackupKind,
    /// Unix seconds.
    pub(crate) started: i64,
    pub(crate) stopped: i64,
    /// The cluster's size, and what this backup added to the repository.
    pub(crate) size: u64,
    pub(crate) repo_size: u64,
    pub(crate) wal_start: String,
    pub(crate) wal_stop: String,
    /// The backup this one builds on (diff and incr).
    pub(crate) prior: Option<String>,
    /// The timeline it was taken on, and where its WAL ends.
    pub(crate) timeline: u32,
    pub(crate) lsn_stop: u64,
}

/// What `pgbackrest info --output=json` says about one stanza.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StanzaInfo {
    /// 0 ok; 1 missing stanza path; 2 no valid backups; others: trouble.
    pub(crate) code: i64,
    pub(crate) message: String,
    /// Oldest first.
    pub(crate) backups: Vec<Physical>,
    pub(crate) wal_min: Option<String>,
    pub(crate) wal_max: Option<String>,
    pub(crate) cipher: String,
    /// The system identifier of the server the stanza backs up now.
    pub(crate) system_id: Option<u64>,
    /// What the repository itself says when the stanza's code is not 0
    /// (a wrong cipher pass: "other", and here why).
    pub(crate) repo_message: String,
    /// The archive's directory of the current database system (`17-1`).
    pub(crate) archive_id: Option<String>,
}

impl StanzaInfo {
    /// The stanza's state in words: the repository's own message when the
    /// stanza's is only "other".
    pub(crate) fn describe(&self) -> String {
        if self.code == 0 || self.repo_message.is_empty() || self.repo_message == self.message {
            self.message.clone()
        } else {
            format!("{}: {}", self.message, self.repo_message)
        }
    }

    /// The timeline of the newest archived WAL.
    pub(crate) fn newest_timeline(&self) -> Option<u32> {
        self.wal_max
            .as_deref()
            .and_then(|w| w.get(..8))
            .and_then(|t| u32::from_str_radix(t, 16).ok())
    }
}

/// Parses the info of `stanza` from the JSON array pgBackRest prints.
pub(crate) fn parse_info(json: &str, stanza: &str) -> anyhow::Result<StanzaInfo> {
    // An error message in pgBackRest's JSON can carry a raw line break
    // (invalid in a JSON string); between tokens a space means the same.
    let clean = json.replace(|c: char| c.is_control(), " ");
    let all: Value = serde_json::from_str(&clean).context("pgbackrest info printed no JSON")?;
    let entry = all
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == stanza))
        .with_context(|| format!("pgbackrest info does not show the stanza '{stanza}'"))?;
    let text = |v: &Value| v.as_str().map(String::from);
    let mut backups = Vec::new();
    for b in entry["backup"].as_array().into_iter().flatten() {
        if b["error"].as_bool() == Some(true) {
            // A backup with page checksum errors is still listed; it is not trusted here.
            continue;
        }
        let Some(kind) = b["type"].as_str().and_then(BackupKind::parse) else {
            continue;
        };
        backups.push(Physical {
            label: text(&b["label"]).unwrap_or_default(),
            kind,
            started: b["timestamp"]["start"].as_i64().unwrap_or(0),
            stopped: b["timestamp"]["stop"].as_i64().unwrap_or(0),
            size: b["info"]["size"].as_u64().unwrap_or(0),
            repo_size: b["info"]["repository"]["delta"].as_u64().unwrap_or(0),
            wal_start: text(&b["archive"]["start"]).unwrap_or_default(),
            wal_stop: text(&b["archive"]["stop"]).unwrap_or_default(),
            prior: text(&b["prior"]),
            timeline: b["archive"]["start"]
                .as_str()
                .and_then(|w| w.get(..8))
                .and_then(|t| u32::from_str_radix(t, 16).ok())
                .unwrap_or(0),
            lsn_stop: b["lsn"]["stop"].as_str().and_then(parse_lsn).unwrap_or(0),
        });
    }
    backups.sort_by_key(|b| b.stopped);
    // The archive of the current database system (the last one listed).
    let archive = entry["archive"].as_array().and_then(|a| a.last());
    Ok(StanzaInfo {
        code: entry["status"]["code"].as_i64().unwrap_or(99),
        message: text(&entry["status"]["message"]).unwrap_or_default(),
        backups,
        wal_min: archive.and_then(|a| text(&a["min"])),
        wal_max: archive.and_then(|a| text(&a["max"])),
        cipher: text(&entry["cipher"]).unwrap_or_default(),
        archive_id: archive.and_then(|a| text(&a["id"])),
        repo_message: entry["repo"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["status"]["message"].as_str())
            .collect::<Vec<_>>()
            .join("; "),
        system_id: entry["db"]
            .as_array()
            .and_then(|d| d.last())
            .and_then(|d| d["system-id"].as_u64()),
    })
}

/// Where a restore goes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Target {
    /// As the user wrote it; the server's reading of it, in UTC
    /// (`2026-11-27 10:15:00.000000+00`, what pgBackRest and recovery get);
    /// and in Unix seconds.
    Time {
        text: String,
        utc: String,
        epoch: f64,
    },
    /// The end of the archived WAL.
    Latest,
}

impl Target {
    pub(crate) fn describe(&self) -> String {
        match self {
            Target::Time { text, .. } => format!("the time {text}"),
            Target::Latest => "the latest archived state".into(),
        }
    }
}

/// Why a target cannot be restored; nothing was touched.
pub(crate) fn check_covered(info: &StanzaInfo, target: &Target, now: f64) -> Result<(), String> {
    let Some(oldest) = info.backups.first() else {
        return Err(
            "there is no physical backup to restore from: take one with `cargo xtask db-backup --physical`"
                .into(),
        );
    };
    if let Target::Time { text, epoch, .. } = target {
        // pgBackRest's stop time is rounded down to the second.
        if *epoch < (oldest.stopped + 1) as f64 {
            return Err(format!(
                "{text} is before the end of the oldest physical backup ({}): the earliest time that can be restored is {}",
                oldest.label,
                utc(oldest.stopped + 1)
            ));
        }
        if *epoch > now {
            return Err(format!(
                "{text} is in the future (now is {}): give a past time, or use --to-latest",
                utc(now as i64)
            ));
        }
    }
    Ok(())
}

/// `0/3000050` as a number.
pub(crate) fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// A timeline history file's switch points: (parent timeline, where it ended).
pub(crate) fn parse_history(text: &str) -> Vec<(u32, u64)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let tli = f.next()?.parse().ok()?;
            let lsn = parse_lsn(f.next()?)?;
            Some((tli, lsn))
        })
        .collect()
}

/// The backup a restore starts from: the newest one on the history of the
/// timeline the server runs now (on it, or on an ancestor before the
/// switch), that ended by the target. pgBackRest would pick by time alone,
/// and a backup of an abandoned timeline cannot reach this one.
pub(crate) fn choose_set<'a>(
    backups: &'a [Physical],
    timeline: u32,
    history: &[(u32, u64)],
    target: &Target,
) -> Result<&'a Physical, String> {
    // A history lists every ancestor with where it was left; a later
    // branch can leave an ancestor's line earlier than that ancestor's own
    // switch (a restore to a time before an earlier restore's branch), so a
    // backup counts only if it ended before every switch from its timeline on.
    let on_history = |b: &Physical| {
        b.timeline == timeline
            || history
                .iter()
                .position(|(tli, _)| *tli == b.timeline)
                .is_some_and(|at| {
                    history[at..]
                        .iter()
                        .all(|(_, switch)| b.lsn_stop <= *switch)
                })
    };
    backups
        .iter()
        .filter(|b| on_history(b))
        .filter(|b| match target {
            Target::Time { epoch, .. } => (b.stopped + 1) as f64 <= *epoch,
            Target::Latest => true,
        })
        .max_by_key(|b| b.stopped)
        .ok_or_else(|| {
            format!(
                "no physical backup on the history of the server's timeline {timeline} ended before {}: take one with `cargo xtask db-backup --physical`",
                target.describe()
            )
        })
}

/// The type `db-backup --physical` takes when none is given: full when
/// there is none, or the newest full is a week old (so retention can expire
/// old ones and a chain of incrementals stays short); else incremental.
pub(crate) fn default_kind(backups: &[Physical], now: f64) -> BackupKind {
    match backups
        .iter()
        .filter(|b| b.kind == BackupKind::Full)
        .map(|b| b.stopped)
        .max()
    {
        Some(full) if now - (full as f64) < 7.0 * 86_400.0 => BackupKind::Incr,
        _ => BackupKind::Full,
    }
}

/// Whether a restore of the whole server may go ahead: it replaces every
/// database of the service, so it is asked for, or `--yes` says so.
pub(crate) fn consent(target: &Target, service: &str, yes: bool, interactive: bool) -> Consent {
    if yes {
        Consent::Proceed
    } else if interactive {
        Consent::Ask(format!(
            "replace every database of the compose service '{service}' with its state at {}? The current data is set aside, not deleted. [y/N] ",
            target.describe()
        ))
    } else {
        Consent::Refuse(format!(
            "restoring the compose service '{service}' to {} replaces every database in it: add --yes (the current data is set aside, not deleted)",
            target.describe()
        ))
    }
}

/// What `db-status` finds wrong with point-in-time recovery, one line
/// each: an unhealthy stanza, no physical backup or an old one, an archive
/// that lags (the RPO right now) more than `max_lag` seconds.
pub(crate) fn problems(
    stanza: &str,
    info: &StanzaInfo,
    lag: f64,
    now: f64,
    max_age: f64,
    max_lag: f64,
) -> Vec<String> {
    let mut out = Vec::new();
    if info.code != 0 && info.code != 2 {
        out.push(format!(
            "pgBackRest stanza '{stanza}': {} (see `cargo xtask db-pitr status`)",
            info.describe()
        ));
    }
    match info.backups.last() {
        None => out.push(format!(
            "stanza '{stanza}' has no physical backup: run `cargo xtask db-backup --physical`"
        )),
        Some(b) if now - b.stopped as f64 > max_age => out.push(format!(
            "the newest physical backup of stanza '{stanza}' ({}) is older than {}",
            b.label,
            age_text(max_age)
        )),
        Some(_) => {}
    }
    if lag > max_lag {
        out.push(format!(
            "WAL archiving of stanza '{stanza}' is {} behind: changes since then would be lost with the server (see `docker compose logs` for archive-push errors)",
            age_text(lag)
        ));
    }
    out
}

/// The highest acceptable archive lag: five archive timeouts, at least five minutes.
pub(crate) fn max_lag(s: &PitrSettings) -> f64 {
    f64::from(s.archive_timeout.saturating_mul(5).max(300))
}

fn age_text(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}

/// `2026-11-27 10:15:00+00` for Unix seconds.
pub(crate) fn utc(epoch: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(epoch)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second]+00"
            ))
            .ok()
        })
        .unwrap_or_else(|| epoch.to_string())
}

/// The archiver as the server reports it (`pg_stat_archiver`, and the
/// finished segments that wait in `pg_wal/archive_status`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Archiver {
    pub(crate) last_archived_wal: Option<String>,
    pub(crate) last_archived_at: Option<f64>,
    pub(crate) last_failed_at: Option<f64>,
    /// When the oldest finished segment still waiting was finished.
    pub(crate) oldest_waiting_at: Option<f64>,
    /// How many finished segments wait.
    pub(crate) waiting: u64,
    pub(crate) now: f64,
}

/// Seconds the oldest finished WAL segment has waited to be archived: the
/// RPO right now, beyond the open segment (which archive_timeout bounds).
/// Zero when nothing finished waits, whether pushes fail or are slow.
pub(crate) fn archive_lag(a: &Archiver) -> f64 {
    a.oldest_waiting_at.map_or(0.0, |t| (a.now - t).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> PitrSettings {
        PitrSettings {
            stanza: "app".into(),
            stanza_given: false,
            retention_full: None,
            archive_timeout: 60,
            cipher: None,
            repository: Repository::Volume,
        }
    }

    fn server() -> Server {
        Server {
            pg_path: "/var/lib/postgresql/data".into(),
            user: "app".into(),
        }
    }

    fn sources(pairs: &[(&str, &str)]) -> Sources {
        Sources {
            env: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            dotenv: BTreeMap::new(),
        }
    }

    fn resolve(sources: &Sources, dbname: &str) -> anyhow::Result<PitrSettings> {
        PitrSettings::resolve(sources, dbname, None, &|_| unreachable!("no bucket"))
    }

    fn bucket(endpoint: &str) -> S3Config {
        S3Config {
            bucket: "team-backups".into(),
            prefix: "team/app/".into(),
            endpoint: endpoint.into(),
            region: "eu-west-1".into(),
            path_style: true,
            part_size: 5 << 20,
            credentials: crate::core::config::S3Credentials::Profile {
                name: "default".into(),
                file: None,
            },
        }
    }

    fn s3_settings(pairs: &[(&str, &str)], endpoint: &str) -> anyhow::Result<PitrSettings> {
        let mut all = vec![("BACKUP_PITR_REPO", "s3")];
        all.extend_from_slice(pairs);
        PitrSettings::resolve(&sources(&all), "app", Some(&bucket(endpoint)), &|_| {
            Ok(("AK".into(), Secret::new("se/cr@t?x"), None))
        })
    }

    #[test]
    fn an_s3_repository_is_the_bucket_reached_over_https_from_the_service() {
        let s = s3_settings(&[], "https://minio.internal:9443").unwrap();
        let conf = render_conf(&s, &server(), None, ConfFor::Enable);
        insta::assert_snapshot!(conf);
        assert_eq!(repository_in(&conf), s.repository.describe());
        assert!(
            !format!("{s:?}").contains("se/cr@t?x"),
            "Debug hides the key"
        );

        // The store the xtask reaches may not be the one the container does.
        let s = s3_settings(
            &[("BACKUP_PITR_S3_ENDPOINT", "https://host.docker.internal")],
            "http://127.0.0.1:9000",
        )
        .unwrap();
        let Repository::S3(r) = &s.repository else {
            panic!("an S3 repository")
        };
        assert_eq!((r.host.as_str(), r.port), ("host.docker.internal", None));

        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let s = s3_settings(
            &[("BACKUP_PITR_S3_CA_FILE", ca.to_str().unwrap())],
            "https://s3.example.com",
        )
        .unwrap();
        let conf = render_conf(&s, &server(), None, ConfFor::Enable);
        assert!(
            conf.contains("repo1-storage-ca-file=/var/lib/pgbackrest/s3-ca-"),
            "{conf}"
        );
        let Repository::S3(r) = &s.repository else {
            panic!("an S3 repository")
        };
        assert_eq!(ca_file_in(&conf), r.ca_path());

        let refusal = |pairs: &[(&str, &str)], endpoint: &str| {
            s3_settings(pairs, endpoint).unwrap_err().to_string()
        };
        assert_eq!(
            refusal(&[], "http://127.0.0.1:9000"),
            "pgBackRest reaches S3 only over HTTPS, and BACKUP_S3_ENDPOINT is 'http://127.0.0.1:9000': put TLS in front of the store and set BACKUP_PITR_S3_ENDPOINT to its https:// address"
        );
        assert!(refusal(&[], "https://localhost:9443").contains("the service container itself"),);
        assert!(refusal(&[], "https://s3.example.com/sub").contains("address only"));
        assert!(refusal(&[], "https://0.0.0.0:9443").contains("the service container itself"));
        let mut doubled = bucket("https://s3.example.com");
        doubled.prefix = "team//app/".into();
        let err = PitrSettings::resolve(
            &sources(&[("BACKUP_PITR_REPO", "s3")]),
            "app",
            Some(&doubled),
            &|_| Ok(("AK".into(), Secret::new("s"), None)),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("has an empty part"), "{err}");
        assert!(refusal(&[], "https://[fd00::1]:9443").contains("IPv6"));
        let secret = refusal(&[], "https://ak:pa55w0rd@s3.example.com");
        assert!(
            secret.contains("has user info in it") && !secret.contains("pa55w0rd"),
            "{secret}"
        );
        let not_pem = dir.path().join("ca.der");
        std::fs::write(&not_pem, [0x30u8, 0x82, 0xff, 0x01]).unwrap();
        assert!(
            refusal(
                &[("BACKUP_PITR_S3_CA_FILE", not_pem.to_str().unwrap())],
                "https://s3.example.com"
            )
            .contains("openssl x509 -inform der")
        );
        assert!(
            refusal(
                &[("BACKUP_PITR_S3_CA_FILE", dir.path().to_str().unwrap())],
                "https://s3.example.com"
            )
            .contains("is not a certificate file")
        );
        assert!(
            refusal(
                &[("BACKUP_PITR_S3_CA_FILE", "/nonexistent/ca.pem")],
                "https://s3.example.com"
            )
            .starts_with("reading BACKUP_PITR_S3_CA_FILE /nonexistent/ca.pem")
        );
        let err = PitrSettings::resolve(
            &sources(&[("BACKUP_PITR_REPO", "s3")]),
            "app",
            None,
            &|_| unreachable!(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("BACKUP_PITR_REPO=s3 needs the bucket"),
            "{err}"
        );
        let err = resolve(&sources(&[("BACKUP_PITR_REPO", "nfs")]), "app")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "BACKUP_PITR_REPO 'nfs' is not valid: use volume or s3");
        let err = PitrSettings::resolve(
            &sources(&[("BACKUP_PITR_REPO", "s3")]),
            "app",
            Some(&bucket("https://s3.example.com")),
            &|_| Ok(("AK".into(), Secret::new("a\nrepo1-path=/x"), None)),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("spans lines"), "{err}");
    }

    #[test]
    fn settings_have_defaults_and_refuse_bad_values() {
        let s = resolve(&sources(&[]), "my app").unwrap();
        assert_eq!(
            (s.stanza.as_str(), s.retention_full, s.archive_timeout),
            ("my_app", None, 60)
        );
        assert!(s.cipher.is_none());
        let err = resolve(&sources(&[("BACKUP_PITR_RETENTION_FULL", "0")]), "app")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "BACKUP_PITR_RETENTION_FULL '0' is not valid: use a whole number from 1 to 9999"
        );
        let err = resolve(&sources(&[("BACKUP_PITR_STANZA", "a b")]), "app")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("BACKUP_PITR_STANZA 'a b' is not valid"),
            "{err}"
        );
        let s = resolve(
            &sources(&[
                ("BACKUP_PITR_CIPHER_PASS", "p/@?ss"),
                ("BACKUP_PITR_ARCHIVE_TIMEOUT", "30"),
            ]),
            "app",
        )
        .unwrap();
        assert_eq!(s.cipher.as_ref().unwrap().expose(), "p/@?ss");
        assert_eq!(s.archive_timeout, 30);
        assert!(!format!("{s:?}").contains("p/@?ss"), "Debug hides the pass");
    }

    #[test]
    fn the_configuration_names_the_stanza_the_server_and_the_exclusion() {
        let conf = render_conf(&settings(), &server(), None, ConfFor::Enable);
        insta::assert_snapshot!(conf);
        // An enable without BACKUP_PITR_RETENTION_FULL keeps the file's.
        let kept = render_conf(
            &settings(),
            &server(),
            Some("[global]\nrepo1-retention-full=8\n"),
            ConfFor::Enable,
        );
        // Written for a restore on a new machine: no expiry it cannot know.
        let fresh = render_conf(&settings(), &server(), None, ConfFor::Restore);
        assert!(!fresh.contains("repo1-retention-full="), "{fresh}");
        assert!(kept.contains("repo1-retention-full=8\n"), "{kept}");
        assert_eq!(repository_in(&conf), settings().repository.describe());
        let mut enc = settings();
        enc.cipher = Some(Secret::new("k3y"));
        let conf = render_conf(&enc, &server(), None, ConfFor::Enable);
        assert!(conf.contains("repo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass=k3y\n"));
    }

    #[test]
    fn enable_lists_only_real_changes_and_knows_which_need_a_restart() {
        let mut current: BTreeMap<String, String> = [
            ("archive_mode", "off"),
            ("archive_command", "(disabled)"),
            ("archive_timeout", "0"),
            ("wal_level", "replica"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let changes = enable_changes(&current, &settings());
        let names: Vec<_> = changes.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            ["archive_mode", "archive_command", "archive_timeout"]
        );
        assert!(needs_restart(&changes));
        assert_eq!(
            stanza_in(&archive_command("my-db")).as_deref(),
            Some("my-db")
        );
        assert_eq!(stanza_in("cp %p /mnt/%f"), None);
        // Applied: nothing left to do, and SHOW's "1min" is 60 s.
        current.insert("archive_mode".into(), "on".into());
        current.insert("archive_command".into(), archive_command("app"));
        current.insert("archive_timeout".into(), "1min".into());
        assert!(enable_changes(&current, &settings()).is_empty());
        // Only the timeout differs: a reload is enough.
        current.insert("archive_timeout".into(), "5min".into());
        let changes = enable_changes(&current, &settings());
        assert_eq!(changes.len(), 1);
        assert!(!needs_restart(&changes));
        // minimal WAL cannot be archived.
        current.insert("wal_level".into(), "minimal".into());
        assert!(needs_restart(&enable_changes(&current, &settings())));
        // Disable resets what enable set, and nothing at its default.
        let changes = disable_changes(&current);
        assert_eq!(changes.len(), 3);
        assert!(changes.iter().all(|c| c.to.is_none()));
        let defaults: BTreeMap<String, String> = [
            ("archive_mode", "off"),
            ("archive_command", "(disabled)"),
            ("archive_timeout", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert!(disable_changes(&defaults).is_empty());
    }

    const INFO: &str = r#"[{"archive":[{"database":{"id":1,"repo-key":1},"id":"17-1","max":"000000010000000000000009","min":"000000010000000000000001"}],
      "backup":[
        {"archive":{"start":"000000010000000000000006","stop":"000000010000000000000006"},"error":false,"info":{"delta":1000,"repository":{"delta":300,"size":900},"size":31000000},"label":"20261128-090800F_20261128-091000I","prior":"20261128-090800F","timestamp":{"start":1795857000,"stop":1795857003},"type":"incr"},
        {"archive":{"start":"000000010000000000000002","stop":"000000010000000000000003"},"error":false,"info":{"delta":31024822,"repository":{"delta":4014380,"size":4014380},"size":31024822},"label":"20261128-090737F","prior":null,"timestamp":{"start":1795856857,"stop":1795856859},"type":"full"},
        {"archive":{"start":"000000010000000000000007","stop":"000000010000000000000007"},"error":true,"info":{"size":1},"label":"bad","timestamp":{"start":1795857100,"stop":1795857101},"type":"full"}],
      "cipher":"none","db":[{"id":1,"repo-key":1,"system-id":7713146388274253844,"version":"17"}],"name":"app",
      "status":{"code":0,"lock":{"backup":{"held":false}},"message":"ok"}}]"#;

    #[test]
    fn info_lists_trusted_backups_oldest_first() {
        let info = parse_info(INFO, "app").unwrap();
        assert_eq!(info.code, 0);
        assert_eq!(info.backups.len(), 2, "the one with errors is left out");
        assert_eq!(info.backups[0].kind, BackupKind::Full);
        assert_eq!(info.backups[1].kind, BackupKind::Incr);
        assert_eq!(info.backups[1].prior.as_deref(), Some("20261128-090800F"));
        assert_eq!(info.backups[1].repo_size, 300);
        assert_eq!(info.wal_max.as_deref(), Some("000000010000000000000009"));
        assert_eq!(info.system_id, Some(7_713_146_388_274_253_844));
        assert_eq!(info.archive_id.as_deref(), Some("17-1"));
        assert!(parse_info(INFO, "other").is_err());
        let missing = r#"[{"archive":[],"backup":[],"cipher":"none","db":[],"name":"app","status":{"code":1,"message":"missing stanza path"}}]"#;
        let info = parse_info(missing, "app").unwrap();
        assert_eq!((info.code, info.backups.len()), (1, 0));
        // A repository error's message with a raw line break.
        let broken = "[{\"archive\":[],\"backup\":[],\"cipher\":\"none\",\"db\":[],\"name\":\"app\",\"repo\":[{\"cipher\":\"none\",\"key\":1,\"status\":{\"code\":99,\"message\":\"[FormatError] cipher\nHINT: is the pass right?\"}}],\"status\":{\"code\":99,\"message\":\"other\"}}]";
        let info = parse_info(broken, "app").unwrap();
        assert_eq!(info.code, 99);
        assert_eq!(
            info.describe(),
            "other: [FormatError] cipher HINT: is the pass right?"
        );
    }

    #[test]
    fn a_target_must_be_after_the_oldest_backup_and_not_in_the_future() {
        let info = parse_info(INFO, "app").unwrap();
        let at = |epoch: f64| Target::Time {
            text: "T".into(),
            utc: "T".into(),
            epoch,
        };
        let now = 1_795_860_000.0;
        assert!(check_covered(&info, &at(1_795_856_860.0), now).is_ok());
        assert!(check_covered(&info, &Target::Latest, now).is_ok());
        let err = check_covered(&info, &at(1_795_856_858.0), now).unwrap_err();
        assert_eq!(
            err,
            "T is before the end of the oldest physical backup (20261128-090737F): the earliest time that can be restored is 2026-11-28 09:07:40+00"
        );
        let err = check_covered(&info, &at(now + 10.0), now).unwrap_err();
        assert!(err.starts_with("T is in the future"), "{err}");
        let empty = StanzaInfo {
            backups: vec![],
            ..info
        };
        assert!(
            check_covered(&empty, &Target::Latest, now)
                .unwrap_err()
                .contains("db-backup --physical")
        );
    }

    #[test]
    fn status_problems_name_the_stanza_and_what_to_do() {
        let info = parse_info(INFO, "app").unwrap();
        let newest = info.backups.last().unwrap().stopped as f64;
        assert!(problems("app", &info, 0.0, newest + 60.0, 93_600.0, 300.0).is_empty());
        let p = problems("app", &info, 900.0, newest + 100_000.0, 93_600.0, 300.0);
        assert_eq!(
            p,
            [
                "the newest physical backup of stanza 'app' (20261128-090800F_20261128-091000I) is older than 26 h",
                "WAL archiving of stanza 'app' is 15 min behind: changes since then would be lost with the server (see `docker compose logs` for archive-push errors)"
            ]
        );
        let empty = StanzaInfo {
            backups: vec![],
            code: 2,
            ..info
        };
        assert_eq!(
            problems("app", &empty, 0.0, 0.0, 1.0, 300.0),
            ["stanza 'app' has no physical backup: run `cargo xtask db-backup --physical`"]
        );
        assert_eq!(max_lag(&settings()), 300.0);
    }

    #[test]
    fn a_whole_server_restore_is_asked_for() {
        let t = Target::Latest;
        assert_eq!(consent(&t, "db", true, false), Consent::Proceed);
        assert!(matches!(consent(&t, "db", false, true), Consent::Ask(q) if q.ends_with("[y/N] ")));
        assert_eq!(
            consent(&t, "db", false, false),
            Consent::Refuse("restoring the compose service 'db' to the latest archived state replaces every database in it: add --yes (the current data is set aside, not deleted)".into())
        );
    }

    #[test]
    fn archive_lag_is_the_wait_of_the_oldest_finished_segment() {
        let idle = Archiver {
            last_archived_wal: Some("000000010000000000000004".into()),
            last_archived_at: Some(1000.0),
            last_failed_at: None,
            oldest_waiting_at: None,
            waiting: 0,
            now: 5000.0,
        };
        // An idle server: nothing finished waits, however long ago the last push.
        assert_eq!(archive_lag(&idle), 0.0);
        // Pushes fail or fall behind: the oldest waiting segment counts.
        let behind = Archiver {
            oldest_waiting_at: Some(4400.0),
            waiting: 300,
            last_archived_at: Some(4999.0),
            ..idle
        };
        assert_eq!(archive_lag(&behind), 600.0);
    }

    #[test]
    fn a_restore_starts_from_a_backup_on_the_current_timelines_history() {
        let b = |label: &str, timeline: u32, stopped: i64, lsn_stop: u64| Physical {
            label: label.into(),
            kind: BackupKind::Full,
            started: stopped - 1,
            stopped,
            size: 1,
            repo_size: 1,
            wal_start: String::new(),
            wal_stop: String::new(),
            prior: None,
            timeline,
            lsn_stop,
        };
        // 10:00 backup on 1; a restore branched timeline 2 off 1 at 0x500;
        // an 11:00 backup on 1 after the branch (abandoned); 12:00 on 2.
        let backups = [
            b("t1-10", 1, 1000, 0x300),
            b("t1-11", 1, 1100, 0x800),
            b("t2-12", 2, 1200, 0x900),
        ];
        let history = parse_history("1\t0/500\tbefore 2026-11-28 10:30:00+00\n");
        assert_eq!(history, [(1, 0x500)]);
        let latest = choose_set(&backups, 2, &history, &Target::Latest).unwrap();
        assert_eq!(latest.label, "t2-12");
        let at = |epoch| Target::Time {
            text: "T".into(),
            utc: "T".into(),
            epoch,
        };
        assert_eq!(
            choose_set(&backups, 2, &history, &at(1150.0))
                .unwrap()
                .label,
            "t1-10",
            "not the abandoned 11:00"
        );
        assert!(choose_set(&backups, 2, &history, &at(900.0)).is_err());
        // Timeline 3 left 2 at 0x400, before 2 left 1 at 0x500 (a restore to a
        // time before the first restore's branch): a backup of 1 ending at
        // 0x450 is not on 3's history.
        let backups3 = [b("t1-10", 1, 1000, 0x300), b("t1-1030", 1, 1050, 0x450)];
        let history3 = parse_history(
            "1\t0/500\tno recovery target specified\n2\t0/400\tbefore 2026-11-28 10:20:00+00\n",
        );
        assert_eq!(
            choose_set(&backups3, 3, &history3, &Target::Latest)
                .unwrap()
                .label,
            "t1-10"
        );
        // On timeline 1 itself every backup of it counts.
        assert_eq!(
            choose_set(&backups, 1, &[], &at(1150.0)).unwrap().label,
            "t1-11"
        );
        assert_eq!(parse_lsn("1/A0"), Some((1 << 32) | 0xA0));
        assert_eq!(parse_lsn("x"), None);
    }

    #[test]
    fn the_default_type_renews_the_full_backup_weekly() {
        let info = parse_info(INFO, "app").unwrap();
        let full = info.backups[0].stopped as f64;
        assert_eq!(default_kind(&[], full), BackupKind::Full);
        assert_eq!(
            default_kind(&info.backups, full + 86_400.0),
            BackupKind::Incr
        );
        assert_eq!(
            default_kind(&info.backups, full + 8.0 * 86_400.0),
            BackupKind::Full
        );
    }
}
