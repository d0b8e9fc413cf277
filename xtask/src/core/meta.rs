//! The `.meta` file: what one backup is, as JSON. Its schema is documented in
//! `docs/backup-format.md`; `FORMAT_VERSION` changes when a field changes
//! meaning or disappears (new optional fields keep the version).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::core::dbprops::DatabaseProps;
use crate::core::naming::BackupType;

pub(crate) const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct BackupMeta {
    pub(crate) format_version: u32,
    pub(crate) database: String,
    #[serde(rename = "type")]
    pub(crate) kind: BackupType,
    pub(crate) file: String,
    #[serde(with = "time::serde::rfc3339")]
    pub(crate) started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub(crate) finished_at: OffsetDateTime,
    pub(crate) duration_seconds: f64,
    /// Size of the `.sql.gz` file.
    pub(crate) size_bytes: u64,
    /// Size of the SQL inside it.
    pub(crate) uncompressed_bytes: u64,
    /// SHA-256 of the `.sql.gz` file, as in the `.sha256` file.
    pub(crate) sha256: String,
    pub(crate) format: String,
    pub(crate) compression: Compression,
    pub(crate) schema_only: bool,
    pub(crate) pg_dump_version: String,
    pub(crate) server_version: String,
    /// How the client tools were run: `host` (or `compose` once that route exists).
    pub(crate) via: String,
    /// Rows per table, counted from the dump's COPY blocks.
    pub(crate) tables: BTreeMap<String, u64>,
    pub(crate) git_commit: Option<String>,
    pub(crate) tool_version: String,
    /// Set by `--verify` and `db-verify`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) verification: Option<Verification>,
    /// The database's own properties (owner, privileges, settings, locale).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) database_props: Option<DatabaseProps>,
    /// The server the backup came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) source: Option<SourceId>,
    /// What the dump holds: one database, or the server's roles and tablespaces.
    #[serde(default, skip_serializing_if = "Content::is_database")]
    pub(crate) content: Content,
    /// The file holds secrets beyond the data (role passwords): keep it encrypted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) sensitive: bool,
    /// Roles the dump names: owners, and grantees of privileges.
    #[serde(default, skip_serializing_if = "Roles::is_empty")]
    pub(crate) roles: Roles,
    /// The `db-backup --all` run it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) run: Option<Run>,
    /// The file is encrypted (after compression): to whom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) encryption: Option<Encryption>,
}

/// How a backup file is encrypted: age, to these recipients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Encryption {
    /// `age` (age-encryption.org/v1).
    pub(crate) scheme: String,
    pub(crate) recipients: Vec<RecipientId>,
}

/// A recipient's public key, by fingerprint: `x25519` (SHA-256 of the
/// `age1...` text), `ssh-ed25519`/`ssh-rsa` (as `ssh-keygen -l` prints it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RecipientId {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) fingerprint: String,
}

/// What a dump holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Content {
    #[default]
    Database,
    /// `pg_dumpall --globals-only`: roles, memberships, role settings, tablespaces.
    Globals,
}

impl Content {
    fn is_database(&self) -> bool {
        *self == Content::Database
    }
}

/// The roles a dump names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Roles {
    pub(crate) owners: Vec<String>,
    pub(crate) grantees: Vec<String>,
}

impl Roles {
    fn is_empty(&self) -> bool {
        self.owners.is_empty() && self.grantees.is_empty()
    }
}

/// One `db-backup --all` run: what it set out to back up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Run {
    /// When it started (RFC 3339) and its process: the same in every set of the run.
    pub(crate) id: String,
    /// Every database of the run (the globals set besides).
    pub(crate) databases: Vec<String>,
}

/// A server: its system identifier and where it was reached.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct SourceId {
    pub(crate) system_identifier: String,
    pub(crate) host: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Compression {
    pub(crate) algorithm: String,
    pub(crate) level: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Verification {
    #[serde(with = "time::serde::rfc3339")]
    pub(crate) verified_at: OffsetDateTime,
    pub(crate) ok: bool,
    /// The check included a restore into a throwaway database.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) restore_tested: bool,
    /// What failed, when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

impl BackupMeta {
    pub(crate) fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("metadata always serializes");
        s.push('\n');
        s
    }

    pub(crate) fn from_json(text: &str) -> anyhow::Result<BackupMeta> {
        Ok(serde_json::from_str(text)?)
    }
}

/// `sha256sum`'s line for a file: `sha256sum -c` accepts it in the file's directory.
pub(crate) fn sha256_line(hex: &str, file_name: &str) -> String {
    format!("{hex}  {file_name}\n")
}

/// Parses a `sha256sum` line back: (hex digest, file name).
pub(crate) fn parse_sha256_line(text: &str) -> Option<(String, String)> {
    let line = text.lines().next()?;
    let (hex, name) = line.split_once(' ')?;
    let name = name.strip_prefix([' ', '*'])?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| (hex.to_ascii_lowercase(), name.to_string()))
}

#[cfg(test)]
pub(crate) fn example() -> BackupMeta {
    use time::macros::datetime;
    BackupMeta {
        format_version: FORMAT_VERSION,
        database: "app".into(),
        kind: BackupType::Daily,
        file: "app_daily_20261124T020000Z.sql.gz".into(),
        started_at: datetime!(2026-11-24 02:00:00 UTC),
        finished_at: datetime!(2026-11-24 02:00:03.25 UTC),
        duration_seconds: 3.25,
        size_bytes: 1234,
        uncompressed_bytes: 9876,
        sha256: "ab".repeat(32),
        format: "plain".into(),
        compression: Compression {
            algorithm: "gzip".into(),
            level: 6,
        },
        schema_only: false,
        pg_dump_version: "17.12".into(),
        server_version: "17.12".into(),
        via: "host".into(),
        tables: [
            ("public.users".to_string(), 3),
            ("public.orders".to_string(), 10),
        ]
        .into(),
        git_commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        tool_version: "0.1.0".into(),
        verification: None,
        database_props: None,
        source: None,
        content: Content::Database,
        sensitive: false,
        roles: Roles::default(),
        run: None,
        encryption: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_json_shape() {
        insta::assert_snapshot!(example().to_json());
    }

    #[test]
    fn meta_round_trips() {
        let m = example();
        assert_eq!(BackupMeta::from_json(&m.to_json()).unwrap(), m);
    }

    #[test]
    fn sha256_lines() {
        let hex = "0f".repeat(32);
        let line = sha256_line(&hex, "a_daily_20260101T000000Z.sql.gz");
        assert_eq!(line, format!("{hex}  a_daily_20260101T000000Z.sql.gz\n"));
        assert_eq!(
            parse_sha256_line(&line),
            Some((hex.clone(), "a_daily_20260101T000000Z.sql.gz".into()))
        );
        assert_eq!(
            parse_sha256_line(&format!("{hex} *x.sql.gz")),
            Some((hex, "x.sql.gz".into()))
        );
        assert_eq!(parse_sha256_line("nothex  x"), None);
    }
}
