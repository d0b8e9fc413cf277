//! Settings: every value the tool reads, resolved once into one typed
//! [`Settings`], each connection value with its origin.
//!
//! Precedence is flag > process environment > `.env` file > default, for
//! every setting. `DATABASE_URL` is an alternative spelling of the
//! `POSTGRES_*` variables: within one source an explicit `POSTGRES_*` wins
//! over the URL's part, and a higher source wins over a lower one whatever
//! its spelling. Pure: the environment and the `.env` text come in as
//! [`Sources`]; nothing here reads a file or the clock.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, format_err};
use time::{Duration, OffsetDateTime};

use crate::core::format::{Compression, Format};
use crate::core::human;
use crate::core::retention::Policy;

/// A value that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    /// The only way to the value: call it where it is handed to a child's environment.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a setting's value came from, shown with `-v`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Flag,
    Env,
    DotEnv,
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Flag => "flag",
            Origin::Env => "environment",
            Origin::DotEnv => ".env",
            Origin::Default => "default",
        })
    }
}

/// The environment and the `.env` file, as two maps (the `.env` file is never
/// copied into the process environment, so its place in the order is exact).
#[derive(Clone, Default)]
pub(crate) struct Sources {
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) dotenv: BTreeMap<String, String>,
}

/// Both maps hold secrets: only their keys are shown.
impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sources")
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("dotenv", &self.dotenv.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Sources {
    fn layers(&self) -> [(Origin, &BTreeMap<String, String>); 2] {
        [(Origin::Env, &self.env), (Origin::DotEnv, &self.dotenv)]
    }

    /// The first non-empty value of `key`, environment before `.env`.
    pub(crate) fn get(&self, key: &str) -> Option<(String, Origin)> {
        self.layers().into_iter().find_map(|(origin, map)| {
            map.get(key)
                .filter(|v| !v.is_empty())
                .map(|v| (v.clone(), origin))
        })
    }

    fn value(&self, key: &str) -> Option<String> {
        self.get(key).map(|(v, _)| v)
    }

    /// The first value of `key` as set, empty included: for settings where
    /// "set but empty" is a mistake to refuse, not the same as unset.
    fn as_set(&self, key: &str) -> Option<String> {
        self.layers()
            .into_iter()
            .find_map(|(_, map)| map.get(key).cloned())
    }

    /// Like [`Sources::get`], where each layer may also answer from its `DATABASE_URL`.
    fn get_or_url(
        &self,
        key: &str,
        part: impl Fn(&DatabaseUrl) -> Option<String>,
    ) -> anyhow::Result<Option<(String, Origin)>> {
        for (origin, map) in self.layers() {
            if let Some(v) = map.get(key).filter(|v| !v.is_empty()) {
                return Ok(Some((v.clone(), origin)));
            }
            if let Some(url) = self.url_in(origin, map)?
                && let Some(v) = part(&url)
            {
                return Ok(Some((v, origin)));
            }
        }
        Ok(None)
    }

    fn url_in(
        &self,
        origin: Origin,
        map: &BTreeMap<String, String>,
    ) -> anyhow::Result<Option<DatabaseUrl>> {
        match map.get("DATABASE_URL").filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(url) => DatabaseUrl::parse(url)
                .map(Some)
                .map_err(|e| format_err!("DATABASE_URL ({origin}): {e}")),
        }
    }

    /// A number setting with a default and a validity check; errors name the
    /// variable and what it accepts.
    fn number<T: FromStr>(
        &self,
        key: &str,
        flag: Option<T>,
        default: T,
        accepts: &str,
        valid: impl Fn(&T) -> bool,
    ) -> anyhow::Result<T> {
        if let Some(v) = flag {
            return Ok(v);
        }
        match self.get(key) {
            None => Ok(default),
            Some((text, _)) => match text.trim().parse::<T>() {
                Ok(v) if valid(&v) => Ok(v),
                _ => bail!("{key} '{text}' is not valid: use {accepts}"),
            },
        }
    }

    /// A yes/no setting: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`; anything else is an error.
    fn flag(&self, key: &str, default: bool) -> anyhow::Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some((text, _)) => parse_bool(&text)
                .ok_or_else(|| format_err!("{key} '{text}' is not valid: use true or false")),
        }
    }
}

/// `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`, any case.
pub(crate) fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Parses the `KEY=value` lines of a `.env` file: comments, blank lines,
/// `export ` prefixes and single or double quotes, as docker compose reads them.
pub(crate) fn parse_dotenv(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            bail!("line {}: expected KEY=value", n + 1);
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("line {}: '{key}' is not a variable name", n + 1);
        }
        let value = value.trim();
        let value = if let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            inner.replace("\\n", "\n").replace("\\\"", "\"")
        } else if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            inner.to_string()
        } else {
            // An unquoted value ends at an inline comment.
            match value.find(" #") {
                Some(i) => value[..i].trim_end().to_string(),
                None => value.to_string(),
            }
        };
        map.insert(key.to_string(), value);
    }
    Ok(map)
}

/// The parts of a `postgres://user:password@host:port/dbname?sslmode=...` URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DatabaseUrl {
    pub(crate) user: Option<String>,
    pub(crate) password: Option<Secret>,
    pub(crate) host: Option<String>,
    pub(crate) port: Option<u16>,
    pub(crate) dbname: Option<String>,
    pub(crate) sslmode: Option<String>,
}

impl DatabaseUrl {
    /// Parses with the `url` crate. The user information ends at the last
    /// `@`, so a password may hold `/`, `@`, `?` or `#` raw as well as
    /// percent-encoded. Errors never repeat any part of the URL: the text
    /// before the last `@`, or a host:port that is really a password, is secret.
    pub(crate) fn parse(text: &str) -> anyhow::Result<DatabaseUrl> {
        let scheme_len = ["postgres://", "postgresql://"]
            .iter()
            .find(|p| text.len() >= p.len() && text[..p.len()].eq_ignore_ascii_case(p))
            .map(|p| p.len())
            .ok_or_else(|| {
                format_err!("expected a URL starting with postgres:// or postgresql://")
            })?;
        let rest = &text[scheme_len..];
        // The user information, raw: everything up to the last '@'.
        let (userinfo, after) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let url = url::Url::parse(&format!("postgres://{after}"))
            .map_err(|_| format_err!("the URL is not valid: check its host, port and path"))?;
        let decode = |s: &str| -> anyhow::Result<String> {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| format_err!("the URL's percent-encoding is not UTF-8"))
        };
        let mut parsed = DatabaseUrl::default();
        if let Some(userinfo) = userinfo {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            parsed.user = non_empty(decode(user)?);
            // Percent-encoded when it decodes; otherwise taken as it is.
            parsed.password = password
                .map(|p| decode(p).unwrap_or_else(|_| p.to_string()))
                .filter(|p| !p.is_empty())
                .map(Secret::new);
        }
        parsed.host = url
            .host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .map(decode)
            .transpose()?
            .and_then(non_empty);
        parsed.port = url.port();
        parsed.dbname = non_empty(decode(url.path().trim_start_matches('/'))?);
        parsed.sslmode = url
            .query_pairs()
            .find(|(k, _)| k == "sslmode")
            .map(|(_, v)| v.into_owned())
            .and_then(non_empty);
        Ok(parsed)
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// `--via`: where PostgreSQL's client tools run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    Auto,
    Host,
    Compose,
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Via::Auto => "auto",
            Via::Host => "host",
            Via::Compose => "compose",
        })
    }
}

impl FromStr for Via {
    type Err = String;
    fn from_str(s: &str) -> Result<Via, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Via::Auto),
            "host" => Ok(Via::Host),
            "compose" => Ok(Via::Compose),
            _ => Err(format!("'{s}' is not a route: use auto, host or compose")),
        }
    }
}

/// How to reach the database. The password stays a [`Secret`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Connection {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) dbname: String,
    pub(crate) user: String,
    pub(crate) password: Option<Secret>,
    pub(crate) sslmode: Option<String>,
    /// Set when the tools run inside this compose service (host and port are then unused).
    pub(crate) service: Option<String>,
    /// Seconds libpq waits for the server to answer.
    pub(crate) connect_timeout: u16,
}

impl Connection {
    /// `host:port/dbname`, or `dbname in compose service 'db'`, for messages (never the password).
    pub(crate) fn display_target(&self) -> String {
        match &self.service {
            Some(_) => format!("{} in {}", self.dbname, self.server_label()),
            None => format!("{}:{}/{}", self.host, self.port, self.dbname),
        }
    }

    /// `host:port`, or `compose service 'db'`.
    pub(crate) fn server_label(&self) -> String {
        match &self.service {
            Some(svc) => format!("compose service '{svc}'"),
            None => format!("{}:{}", self.host, self.port),
        }
    }

    /// Whether the server is the developer's own (loopback, a local socket, the compose service).
    pub(crate) fn is_local(&self) -> bool {
        self.service.is_some()
            || matches!(self.host.as_str(), "localhost" | "127.0.0.1" | "::1" | "")
            || self.host.starts_with('/')
            || self.host.starts_with("127.")
    }

    /// The defaults, for probes that connect nowhere.
    pub(crate) fn local_default() -> Connection {
        Connection {
            host: DEFAULT_HOST.into(),
            port: DEFAULT_PORT,
            dbname: DEFAULT_DB.into(),
            user: DEFAULT_USER.into(),
            password: None,
            sslmode: None,
            service: None,
            connect_timeout: 10,
        }
    }

    /// The same server, another database.
    pub(crate) fn with_db(&self, dbname: &str) -> Connection {
        Connection {
            dbname: dbname.to_string(),
            ..self.clone()
        }
    }

    /// The same server's maintenance database (`postgres`), for creating,
    /// renaming and dropping databases.
    pub(crate) fn maintenance(&self) -> Connection {
        self.with_db(MAINTENANCE_DB)
    }

    /// A connection from a `postgres://` URL (`db-clone --from URL`).
    pub(crate) fn from_url(text: &str) -> anyhow::Result<Connection> {
        let u = DatabaseUrl::parse(text)?;
        Ok(Connection {
            host: u.host.unwrap_or_else(|| DEFAULT_HOST.into()),
            port: u.port.unwrap_or(DEFAULT_PORT),
            dbname: u
                .dbname
                .ok_or_else(|| format_err!("the URL names no database"))?,
            user: u.user.unwrap_or_else(|| "postgres".into()),
            password: u.password,
            sslmode: u.sslmode,
            service: None,
            connect_timeout: 10,
        })
    }

    /// The libpq environment for a client tool: the password goes here, never into argv.
    pub(crate) fn libpq_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("PGHOST", self.host.clone()),
            ("PGPORT", self.port.to_string()),
            ("PGDATABASE", self.dbname.clone()),
            ("PGUSER", self.user.clone()),
            ("PGAPPNAME", "cargo-xtask".to_string()),
            ("PGCONNECT_TIMEOUT", self.connect_timeout.to_string()),
        ];
        if let Some(pw) = &self.password {
            env.push(("PGPASSWORD", pw.expose().to_string()));
        }
        if let Some(mode) = &self.sslmode {
            env.push(("PGSSLMODE", mode.clone()));
        }
        env
    }
}

/// The off-site copy's settings (`BACKUP_S3_*` and the AWS variables).
#[derive(Debug, Clone)]
pub(crate) struct S3Config {
    pub(crate) bucket: String,
    /// Ends with `/`, or is empty.
    pub(crate) prefix: String,
    pub(crate) endpoint: String,
    pub(crate) region: String,
    pub(crate) path_style: bool,
    pub(crate) part_size: usize,
    pub(crate) credentials: S3Credentials,
}

/// Keys from the environment, or a profile of the shared credentials file
/// (read by the S3 service: reading files is not this module's business).
#[derive(Debug, Clone)]
pub(crate) enum S3Credentials {
    Keys {
        access_key: String,
        secret_key: Secret,
        session_token: Option<Secret>,
    },
    Profile {
        name: String,
        file: Option<PathBuf>,
    },
}

impl S3Config {
    /// `s3://bucket/prefix`, for messages.
    pub(crate) fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }
}

/// The hooks run after a backup.
#[derive(Debug, Clone, Default)]
pub(crate) struct HookConfig {
    pub(crate) on_success: Option<String>,
    pub(crate) on_failure: Option<String>,
    pub(crate) webhook: Option<Secret>,
    pub(crate) timeout: std::time::Duration,
}

impl HookConfig {
    pub(crate) fn is_empty(&self) -> bool {
        self.on_success.is_none() && self.on_failure.is_none() && self.webhook.is_none()
    }
}

/// Encryption at rest: who can read new backups, and what reads them.
/// Kept as given; `services::crypto` parses them, failing closed.
#[derive(Debug, Clone, Default)]
pub(crate) struct AgeConfig {
    /// BACKUP_AGE_RECIPIENTS, comma-separated (a secret key pasted by
    /// mistake must not reach `Debug`: hence [`Secret`]). `Some("")`: set, empty.
    pub(crate) recipients: Option<Secret>,
    /// BACKUP_AGE_RECIPIENTS_FILE: one recipient a line, `#` comments.
    pub(crate) recipients_file: Option<PathBuf>,
    /// BACKUP_AGE_IDENTITY_FILE: age identities or an SSH private key.
    pub(crate) identity_file: Option<PathBuf>,
}

impl AgeConfig {
    /// Whether new backups must be encrypted.
    pub(crate) fn encrypts(&self) -> bool {
        self.recipients.is_some() || self.recipients_file.is_some()
    }
}

/// What a flag set, for the settings that flags can set (no clap types here).
#[derive(Debug, Clone, Default)]
pub(crate) struct Overrides {
    pub(crate) host: Option<String>,
    pub(crate) port: Option<u16>,
    pub(crate) dbname: Option<String>,
    pub(crate) user: Option<String>,
    pub(crate) via: Option<Via>,
    pub(crate) backup_dir: Option<PathBuf>,
    pub(crate) compression_level: Option<u32>,
    /// `--compress gzip[:LEVEL] | zstd[:LEVEL] | none`.
    pub(crate) compression: Option<String>,
    pub(crate) format: Option<Format>,
    pub(crate) jobs: Option<usize>,
    pub(crate) max_age: Option<String>,
}

/// Every setting of the tool, resolved once.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) root: PathBuf,
    pub(crate) connection: Connection,
    pub(crate) backup_dir: PathBuf,
    /// Where `backup.prom` goes (BACKUP_METRICS_DIR, default BACKUP_DIR/metrics).
    pub(crate) metrics_dir: PathBuf,
    /// How the client tools run (`--via`, BACKUP_VIA).
    pub(crate) via: Via,
    /// The compose service of the database (BACKUP_COMPOSE_SERVICE).
    pub(crate) compose_service: String,
    pub(crate) retention: Policy,
    /// The codec and its level (`--compress`, BACKUP_COMPRESSION; a gzip
    /// level alone: BACKUP_COMPRESSION_LEVEL, --compression-level).
    pub(crate) compression: Compression,
    /// Plain SQL or pg_dump's custom archive (`--format`, BACKUP_FORMAT).
    pub(crate) format: Format,
    /// Threads that compress and read, and pg_restore's jobs (`--jobs`,
    /// BACKUP_JOBS; BACKUP_COMPRESSION_THREADS before it): one per core, at most 8.
    pub(crate) jobs: usize,
    /// Keep a local copy of each backup (BACKUP_LOCAL).
    pub(crate) local: bool,
    pub(crate) s3: Option<S3Config>,
    pub(crate) hooks: HookConfig,
    /// `db-backup --all`: only these databases (BACKUP_DATABASES), never these
    /// (BACKUP_EXCLUDE_DATABASES); empty: every connectable one.
    pub(crate) databases: Vec<String>,
    pub(crate) exclude_databases: Vec<String>,
    /// Role passwords in the globals backup (BACKUP_GLOBALS_PASSWORDS).
    pub(crate) globals_passwords: bool,
    /// The server's name in the globals backup's file name (BACKUP_CLUSTER).
    pub(crate) cluster: Option<String>,
    /// Encryption at rest with age (BACKUP_AGE_*).
    pub(crate) age: AgeConfig,
    /// The key of masking's fakes: BACKUP_MASK_SALT, or the file BACKUP_MASK_SALT_FILE names.
    pub(crate) mask_salt: Option<Secret>,
    pub(crate) mask_salt_file: Option<PathBuf>,
    /// The oldest acceptable newest backup (`db-status`), and where that came from.
    pub(crate) max_age: Duration,
    /// XTASK_NOW: "now" for retention and health decisions, to reproduce one.
    pub(crate) now: Option<OffsetDateTime>,
    /// The sources themselves, for names read from a file (an environment's `password_env`).
    pub(crate) sources: Sources,
    /// Each connection setting's origin, for `-v`.
    pub(crate) origins: Vec<(&'static str, Origin)>,
}

pub(crate) const DEFAULT_HOST: &str = "localhost";
pub(crate) const DEFAULT_PORT: u16 = 5432;
pub(crate) const DEFAULT_DB: &str = "app";
pub(crate) const DEFAULT_USER: &str = "app";
pub(crate) const DEFAULT_BACKUP_DIR: &str = "backups";
pub(crate) const DEFAULT_COMPOSE_SERVICE: &str = "db";
pub(crate) const DEFAULT_LEVEL: u32 = 6;

/// One job per core, at most 8: compressing and reading are CPU-bound.
pub(crate) fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
}
pub(crate) const DEFAULT_MAX_AGE: &str = "26h";
pub(crate) const DEFAULT_S3_PREFIX: &str = "backups/";
pub(crate) const DEFAULT_S3_PART_MIB: usize = 16;
/// The database the tool administers through (creating, renaming, dropping).
pub(crate) const MAINTENANCE_DB: &str = "postgres";

impl Settings {
    /// Where the setting `name` came from.
    pub(crate) fn origin(&self, name: &str) -> Origin {
        self.origins
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(Origin::Default, |(_, o)| *o)
    }

    /// "Now" for decisions: XTASK_NOW when set, else the given clock reading.
    pub(crate) fn now_or(&self, clock: OffsetDateTime) -> OffsetDateTime {
        self.now.unwrap_or(clock)
    }

    pub(crate) fn resolve(
        flags: &Overrides,
        sources: &Sources,
        root: &Path,
    ) -> anyhow::Result<Settings> {
        let mut origins = Vec::new();
        let mut pick = |name: &'static str,
                        flag: Option<String>,
                        found: Option<(String, Origin)>,
                        default: &str| {
            let (value, origin) = match (flag, found) {
                (Some(v), _) => (v, Origin::Flag),
                (None, Some(found)) => found,
                (None, None) => (default.to_string(), Origin::Default),
            };
            origins.push((name, origin));
            value
        };
        let host = pick(
            "host",
            flags.host.clone(),
            sources.get_or_url("POSTGRES_HOST", |u| u.host.clone())?,
            DEFAULT_HOST,
        );
        let port_text = pick(
            "port",
            flags.port.map(|p| p.to_string()),
            sources.get_or_url("POSTGRES_PORT", |u| u.port.map(|p| p.to_string()))?,
            &DEFAULT_PORT.to_string(),
        );
        let port = match port_text.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => bail!(
                "POSTGRES_PORT '{port_text}' is not a port number: use a number from 1 to 65535"
            ),
        };
        let dbname = pick(
            "dbname",
            flags.dbname.clone(),
            sources.get_or_url("POSTGRES_DB", |u| u.dbname.clone())?,
            DEFAULT_DB,
        );
        let user = pick(
            "user",
            flags.user.clone(),
            sources.get_or_url("POSTGRES_USER", |u| u.user.clone())?,
            DEFAULT_USER,
        );
        let via_text = pick(
            "via",
            flags.via.map(|v| v.to_string()),
            sources.get("BACKUP_VIA"),
            "auto",
        );
        let via: Via = via_text.parse().map_err(|_| {
            format_err!("BACKUP_VIA '{via_text}' is not valid: use auto, host or compose")
        })?;
        let compose_service = pick(
            "compose_service",
            None,
            sources.get("BACKUP_COMPOSE_SERVICE"),
            DEFAULT_COMPOSE_SERVICE,
        );
        let (backup_dir, origin) = match (&flags.backup_dir, sources.get("BACKUP_DIR")) {
            (Some(flag), _) => (flag.clone(), Origin::Flag),
            (None, Some((v, origin))) => (PathBuf::from(v), origin),
            (None, None) => (PathBuf::from(DEFAULT_BACKUP_DIR), Origin::Default),
        };
        origins.push(("backup_dir", origin));
        let password = resolve_password(sources)?;
        let sslmode = sources
            .get_or_url("PGSSLMODE", |u| u.sslmode.clone())?
            .map(|(v, _)| v);
        let max_age_text = flags
            .max_age
            .clone()
            .or_else(|| sources.value("BACKUP_MAX_AGE"));
        let max_age = human::parse_duration(max_age_text.as_deref().unwrap_or(DEFAULT_MAX_AGE))
            .ok_or_else(|| {
                let from = if flags.max_age.is_some() {
                    "--max-age"
                } else {
                    "BACKUP_MAX_AGE"
                };
                format_err!(
                    "{from} '{}' is not a duration: use a number with a unit, such as 26h, 90m, 2d or 1w",
                    max_age_text.unwrap_or_default()
                )
            })?;
        let now = match sources.get("XTASK_NOW") {
            None => None,
            Some((v, _)) => Some(
                OffsetDateTime::parse(&v, &time::format_description::well_known::Rfc3339).map_err(
                    |_| {
                        format_err!(
                            "XTASK_NOW '{v}' is not an RFC 3339 time such as 2026-11-24T02:00:00Z"
                        )
                    },
                )?,
            ),
        };
        Ok(Settings {
            root: root.to_path_buf(),
            connection: Connection {
                host,
                port,
                dbname,
                user,
                password,
                sslmode,
                service: None,
                connect_timeout: 10,
            },
            metrics_dir: sources
                .value("BACKUP_METRICS_DIR")
                .map_or_else(|| root.join(&backup_dir).join("metrics"), |d| root.join(d)),
            backup_dir: root.join(backup_dir),
            via,
            compose_service,
            retention: retention(sources)?,
            compression: {
                let level = sources.number(
                    "BACKUP_COMPRESSION_LEVEL",
                    flags.compression_level,
                    DEFAULT_LEVEL,
                    "a number from 1 to 9",
                    |l| (1..=9).contains(l),
                )?;
                match (&flags.compression, sources.get("BACKUP_COMPRESSION")) {
                    (Some(spec), _) => Compression::parse(spec, Some(level))
                        .map_err(|e| format_err!("--compress: {e}"))?,
                    (None, Some((spec, _))) => Compression::parse(&spec, Some(level))
                        .map_err(|e| format_err!("BACKUP_COMPRESSION: {e}"))?,
                    (None, None) => {
                        Compression::parse("gzip", Some(level)).map_err(anyhow::Error::msg)?
                    }
                }
            },
            format: match (flags.format, sources.get("BACKUP_FORMAT")) {
                (Some(f), _) => f,
                (None, Some((text, _))) => text
                    .parse()
                    .map_err(|e| format_err!("BACKUP_FORMAT: {e}"))?,
                (None, None) => Format::Plain,
            },
            jobs: {
                let key = if sources.get("BACKUP_JOBS").is_some() {
                    "BACKUP_JOBS"
                } else {
                    "BACKUP_COMPRESSION_THREADS"
                };
                sources.number(
                    key,
                    flags.jobs,
                    default_jobs(),
                    "a number of jobs from 1 to 64",
                    |t| (1..=64).contains(t),
                )?
            },
            local: sources.flag("BACKUP_LOCAL", true)?,
            s3: s3(sources)?,
            hooks: hooks(sources)?,
            databases: list(sources.value("BACKUP_DATABASES")),
            exclude_databases: list(sources.value("BACKUP_EXCLUDE_DATABASES")),
            globals_passwords: sources.flag("BACKUP_GLOBALS_PASSWORDS", false)?,
            cluster: sources.value("BACKUP_CLUSTER"),
            age: AgeConfig {
                recipients: sources.as_set("BACKUP_AGE_RECIPIENTS").map(Secret::new),
                // Empty stays empty (a path of nothing), for the one-line refusal.
                recipients_file: sources.as_set("BACKUP_AGE_RECIPIENTS_FILE").map(|f| {
                    if f.is_empty() {
                        PathBuf::new()
                    } else {
                        root.join(f)
                    }
                }),
                identity_file: sources.as_set("BACKUP_AGE_IDENTITY_FILE").map(|f| {
                    if f.is_empty() {
                        PathBuf::new()
                    } else {
                        root.join(f)
                    }
                }),
            },
            mask_salt: sources.value("BACKUP_MASK_SALT").map(Secret::new),
            mask_salt_file: sources.value("BACKUP_MASK_SALT_FILE").map(|f| root.join(f)),
            max_age,
            now,
            sources: sources.clone(),
            origins,
        })
    }
}

/// A comma-separated list (spaces around items are not part of them).
fn list(text: Option<String>) -> Vec<String> {
    text.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// PGPASSWORD, then POSTGRES_PASSWORD (the compose service's own variable), then
/// DATABASE_URL's password, layer by layer; none means libpq's `~/.pgpass`.
fn resolve_password(sources: &Sources) -> anyhow::Result<Option<Secret>> {
    for (origin, map) in sources.layers() {
        for key in ["PGPASSWORD", "POSTGRES_PASSWORD"] {
            if let Some(v) = map.get(key).filter(|v| !v.is_empty()) {
                return Ok(Some(Secret::new(v.clone())));
            }
        }
        if let Some(url) = sources.url_in(origin, map)?
            && let Some(pw) = url.password
        {
            return Ok(Some(pw));
        }
    }
    Ok(None)
}

/// The retention settings, each checked before anything is deleted.
fn retention(sources: &Sources) -> anyhow::Result<Policy> {
    let d = Policy::default();
    let setting = |key: &str, default: u32, unit: &str| {
        sources.number(
            key,
            None,
            default,
            &format!("a whole number of {unit}, 1 or more"),
            |n: &u32| *n >= 1,
        )
    };
    Ok(Policy {
        daily_days: setting("BACKUP_RETENTION_DAILY", d.daily_days, "days")?,
        weekly_weeks: setting("BACKUP_RETENTION_WEEKLY", d.weekly_weeks, "weeks")?,
        monthly_months: setting("BACKUP_RETENTION_MONTHLY", d.monthly_months, "months")?,
        min_keep: sources.number(
            "BACKUP_RETENTION_MIN",
            None,
            d.min_keep,
            "a whole number of backups, 1 or more (0 would let every backup of a database go)",
            |n: &u32| *n >= 1,
        )?,
    })
}

/// `None` when no bucket is configured (remote storage off).
fn s3(sources: &Sources) -> anyhow::Result<Option<S3Config>> {
    let get = |k: &str| sources.value(k);
    let Some(bucket) = get("BACKUP_S3_BUCKET") else {
        return Ok(None);
    };
    let region = get("BACKUP_S3_REGION")
        .or_else(|| get("AWS_REGION"))
        .or_else(|| get("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| "us-east-1".into());
    let custom = get("BACKUP_S3_ENDPOINT");
    let path_style = sources.flag("BACKUP_S3_PATH_STYLE", custom.is_some())?;
    let endpoint = custom.unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        bail!(
            "BACKUP_S3_ENDPOINT '{endpoint}' is not an http:// or https:// URL: set it to the store's address, e.g. https://minio.internal:9000"
        );
    }
    let mut prefix = get("BACKUP_S3_PREFIX").unwrap_or_else(|| DEFAULT_S3_PREFIX.into());
    prefix = prefix.trim_start_matches('/').to_string();
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    let part_mib = sources.number(
        "BACKUP_S3_PART_SIZE_MIB",
        None,
        DEFAULT_S3_PART_MIB,
        "a number of MiB from 5 to 512",
        |n| (5..=512).contains(n),
    )?;
    let credentials = match (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
        (Some(access_key), Some(secret)) => S3Credentials::Keys {
            access_key,
            secret_key: Secret::new(secret),
            session_token: get("AWS_SESSION_TOKEN").map(Secret::new),
        },
        _ => S3Credentials::Profile {
            name: get("AWS_PROFILE").unwrap_or_else(|| "default".into()),
            file: get("AWS_SHARED_CREDENTIALS_FILE").map(PathBuf::from),
        },
    };
    Ok(Some(S3Config {
        bucket,
        prefix,
        endpoint,
        region,
        path_style,
        part_size: part_mib * 1024 * 1024,
        credentials,
    }))
}

fn hooks(sources: &Sources) -> anyhow::Result<HookConfig> {
    let secs = sources.number(
        "BACKUP_HOOK_TIMEOUT",
        None,
        30u64,
        "a number of seconds from 1 to 3600",
        |s| (1..=3600).contains(s),
    )?;
    let webhook = sources.value("BACKUP_WEBHOOK_URL");
    if let Some(url) = &webhook
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        bail!(
            "BACKUP_WEBHOOK_URL is not an http:// or https:// URL: set it to the address to POST to"
        );
    }
    Ok(HookConfig {
        on_success: sources.value("BACKUP_HOOK_SUCCESS"),
        on_failure: sources.value("BACKUP_HOOK_FAILURE"),
        webhook: webhook.map(Secret::new),
        timeout: std::time::Duration::from_secs(secs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sources(env: &[(&str, &str)], dotenv: &[(&str, &str)]) -> Sources {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Sources {
            env: map(env),
            dotenv: map(dotenv),
        }
    }

    fn resolve(flags: Overrides, s: &Sources) -> Settings {
        Settings::resolve(&flags, s, Path::new("/ws")).unwrap()
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let s = resolve(Overrides::default(), &sources(&[], &[]));
        assert_eq!(s.connection.host, "localhost");
        assert_eq!(s.connection.port, 5432);
        assert_eq!(s.connection.dbname, "app");
        assert_eq!(s.connection.user, "app");
        assert_eq!(s.connection.password, None);
        assert_eq!(s.backup_dir, Path::new("/ws/backups"));
        assert!(s.origins.iter().all(|(_, o)| *o == Origin::Default));
        assert!(s.local && s.s3.is_none() && s.hooks.is_empty());
        assert_eq!(s.max_age, Duration::hours(26));
    }

    #[test]
    fn flag_beats_env_beats_dotenv() {
        let s = sources(
            &[("POSTGRES_HOST", "envhost"), ("POSTGRES_DB", "envdb")],
            &[
                ("POSTGRES_HOST", "dothost"),
                ("POSTGRES_DB", "dotdb"),
                ("POSTGRES_USER", "dotuser"),
            ],
        );
        let flags = Overrides {
            host: Some("flaghost".into()),
            ..Overrides::default()
        };
        let r = resolve(flags, &s);
        assert_eq!(r.connection.host, "flaghost");
        assert_eq!(r.connection.dbname, "envdb");
        assert_eq!(r.connection.user, "dotuser");
        assert!(r.origins.contains(&("host", Origin::Flag)));
        assert!(r.origins.contains(&("dbname", Origin::Env)));
        assert!(r.origins.contains(&("user", Origin::DotEnv)));
    }

    #[test]
    fn database_url_is_an_alternative_spelling_within_its_layer() {
        let s = sources(
            &[(
                "DATABASE_URL",
                "postgres://u%40x:p%2Fw@db.example:6543/shop?sslmode=require",
            )],
            &[("POSTGRES_HOST", "dothost"), ("POSTGRES_PASSWORD", "dotpw")],
        );
        let r = resolve(Overrides::default(), &s);
        assert_eq!(
            r.connection.host, "db.example",
            "the environment's URL beats .env"
        );
        assert_eq!(r.connection.port, 6543);
        assert_eq!(r.connection.user, "u@x");
        assert_eq!(r.connection.dbname, "shop");
        assert_eq!(
            r.connection.password.as_ref().map(Secret::expose),
            Some("p/w")
        );
        assert_eq!(r.connection.sslmode.as_deref(), Some("require"));

        let s = sources(
            &[
                ("DATABASE_URL", "postgres://u:p@h/db"),
                ("POSTGRES_DB", "explicit"),
            ],
            &[],
        );
        assert_eq!(
            resolve(Overrides::default(), &s).connection.dbname,
            "explicit"
        );
    }

    #[test]
    fn raw_passwords_with_url_characters_are_accepted_and_never_echoed() {
        for (url, password) in [
            ("postgres://app:aB3/xY+z@db/app", "aB3/xY+z"),
            ("postgres://app:p@ss?w#rd@db:5433/app", "p@ss?w#rd"),
            ("postgres://app:50%@db/app", "50%"),
            ("Postgres://app:a%2Fb@db/app", "a/b"),
        ] {
            let u = DatabaseUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(u.password.as_ref().map(Secret::expose), Some(password));
            assert_eq!(u.host.as_deref(), Some("db"));
            assert_eq!(u.dbname.as_deref(), Some("app"));
        }
        for bad in [
            "postgres://app:aB3/xY+z",
            "postgres://root:hunter2@h:99999/db",
            "mysql://root:hunter2@h/db",
        ] {
            let err = DatabaseUrl::parse(bad).unwrap_err().to_string();
            for secret in ["hunter2", "aB3", "xY"] {
                assert!(!err.contains(secret), "{err}");
            }
        }
    }

    #[test]
    fn password_order_and_secrecy() {
        let s = sources(&[("POSTGRES_PASSWORD", "b")], &[("PGPASSWORD", "c")]);
        let r = resolve(Overrides::default(), &s);
        assert_eq!(r.connection.password.as_ref().unwrap().expose(), "b");
        let printed = format!("{r:?}");
        assert!(
            !printed.contains("\"b\""),
            "Debug must hide the password: {printed}"
        );
        assert!(printed.contains("***"));
        let env = r.connection.libpq_env();
        assert!(env.contains(&("PGPASSWORD", "b".to_string())));
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let s = resolve(
            Overrides::default(),
            &sources(
                &[
                    ("DATABASE_URL", "postgres://u:url-secret@h/db"),
                    ("BACKUP_S3_BUCKET", "b"),
                    ("AWS_ACCESS_KEY_ID", "AK"),
                    ("AWS_SECRET_ACCESS_KEY", "s3-secret"),
                    ("AWS_SESSION_TOKEN", "token-secret"),
                    ("BACKUP_WEBHOOK_URL", "https://hooks.example/T0/hook-secret"),
                    ("BACKUP_MASK_SALT", "salt-secret"),
                ],
                &[("PGPASSWORD", "dotenv-secret")],
            ),
        );
        let shown = format!("{s:?}");
        for secret in [
            "url-secret",
            "s3-secret",
            "token-secret",
            "hook-secret",
            "salt-secret",
            "dotenv-secret",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn url_with_ipv6_host_and_no_userinfo() {
        let u = DatabaseUrl::parse("postgresql://[::1]:5433/app").unwrap();
        assert_eq!(u.host.as_deref(), Some("::1"));
        assert_eq!(u.port, Some(5433));
        assert_eq!(u.user, None);
    }

    #[test]
    fn bad_values_are_one_clear_error() {
        let err = |env: &[(&str, &str)]| {
            Settings::resolve(&Overrides::default(), &sources(env, &[]), Path::new("/"))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(&[("POSTGRES_PORT", "five")]),
            "POSTGRES_PORT 'five' is not a port number: use a number from 1 to 65535"
        );
        assert_eq!(
            err(&[("BACKUP_LOCAL", "nope")]),
            "BACKUP_LOCAL 'nope' is not valid: use true or false"
        );
        assert!(err(&[("BACKUP_VIA", "ssh")]).starts_with("BACKUP_VIA 'ssh' is not valid"));
        assert!(err(&[("BACKUP_RETENTION_MIN", "0")]).starts_with("BACKUP_RETENTION_MIN '0'"));
        assert!(err(&[("BACKUP_MAX_AGE", "soon")]).starts_with("BACKUP_MAX_AGE 'soon'"));
    }

    #[test]
    fn yes_no_settings_read_every_spelling() {
        for (text, local) in [("off", false), ("0", false), ("No", false), ("on", true)] {
            let s = resolve(
                Overrides::default(),
                &sources(&[("BACKUP_LOCAL", text)], &[]),
            );
            assert_eq!(s.local, local, "{text}");
        }
    }

    #[test]
    fn s3_settings() {
        assert!(
            resolve(Overrides::default(), &sources(&[], &[]))
                .s3
                .is_none()
        );
        let s = resolve(
            Overrides::default(),
            &sources(
                &[
                    ("BACKUP_S3_BUCKET", "b"),
                    ("BACKUP_S3_ENDPOINT", "http://127.0.0.1:9000"),
                    ("BACKUP_S3_PREFIX", "/team/db"),
                    ("AWS_ACCESS_KEY_ID", "AK"),
                    ("AWS_SECRET_ACCESS_KEY", "SK"),
                ],
                &[],
            ),
        )
        .s3
        .unwrap();
        assert_eq!(
            (s.prefix.as_str(), s.path_style, s.region.as_str()),
            ("team/db/", true, "us-east-1")
        );
        assert_eq!(s.location(), "s3://b/team/db/");
        assert!(!format!("{s:?}").contains("SK"));
        let aws = resolve(
            Overrides::default(),
            &sources(
                &[("BACKUP_S3_BUCKET", "b"), ("AWS_REGION", "eu-west-1")],
                &[],
            ),
        )
        .s3
        .unwrap();
        assert_eq!(
            (aws.endpoint.as_str(), aws.path_style, aws.prefix.as_str()),
            ("https://s3.eu-west-1.amazonaws.com", false, "backups/")
        );
        assert!(
            matches!(aws.credentials, S3Credentials::Profile { ref name, .. } if name == "default")
        );
    }

    #[test]
    fn dotenv_syntax() {
        let m = parse_dotenv("# c\n\nexport A=1\nB=\"two words\"\nC='x#y'\nD=plain # note\nE=\n")
            .unwrap();
        assert_eq!(m["A"], "1");
        assert_eq!(m["B"], "two words");
        assert_eq!(m["C"], "x#y");
        assert_eq!(m["D"], "plain");
        assert_eq!(m["E"], "");
        assert!(
            parse_dotenv("NOEQUALS\n")
                .unwrap_err()
                .to_string()
                .contains("line 1")
        );
    }
}
