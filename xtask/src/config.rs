//! Settings: where each value comes from, resolved in one place.
//!
//! Precedence is flag > process environment > `.env` file > default, for
//! every setting. `DATABASE_URL` is an alternative spelling of the
//! `POSTGRES_*` variables: within one source an explicit `POSTGRES_*` wins
//! over the URL's part, and a higher source wins over a lower one whatever
//! its spelling. Everything here is pure apart from reading `.env` and the
//! environment in [`Sources::load`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, format_err};

use clap::ValueEnum;

use crate::flags::{CommonArgs, DirArgs, Via};

/// A value that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    /// The only way to the value: call it where it is handed to a child's environment.
    pub fn expose(&self) -> &str {
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
pub enum Origin {
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
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub env: BTreeMap<String, String>,
    pub dotenv: BTreeMap<String, String>,
}

impl Sources {
    /// The process environment plus `root/.env` when it exists.
    pub fn load(root: &Path) -> anyhow::Result<Sources> {
        let env = std::env::vars().collect();
        let path = root.join(".env");
        let dotenv = match std::fs::read_to_string(&path) {
            Ok(text) => {
                parse_dotenv(&text).with_context(|| format!("reading {}", path.display()))?
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Sources { env, dotenv })
    }

    fn layers(&self) -> [(Origin, &BTreeMap<String, String>); 2] {
        [(Origin::Env, &self.env), (Origin::DotEnv, &self.dotenv)]
    }

    /// The first non-empty value of `key`, environment before `.env`.
    pub fn get(&self, key: &str) -> Option<(String, Origin)> {
        self.layers().into_iter().find_map(|(origin, map)| {
            map.get(key)
                .filter(|v| !v.is_empty())
                .map(|v| (v.clone(), origin))
        })
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
            if let Some(url) = map.get("DATABASE_URL").filter(|v| !v.is_empty()) {
                let url = DatabaseUrl::parse(url)
                    .map_err(|e| format_err!("DATABASE_URL ({origin}): {e}"))?;
                if let Some(v) = part(&url) {
                    return Ok(Some((v, origin)));
                }
            }
        }
        Ok(None)
    }
}

/// Parses the `KEY=value` lines of a `.env` file: comments, blank lines,
/// `export ` prefixes and single or double quotes, as docker compose reads them.
pub fn parse_dotenv(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
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
pub struct DatabaseUrl {
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub dbname: Option<String>,
    pub sslmode: Option<String>,
}

impl DatabaseUrl {
    /// Errors never repeat the URL: it may hold a password.
    pub fn parse(url: &str) -> anyhow::Result<DatabaseUrl> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or_else(|| {
                format_err!("expected a URL starting with postgres:// or postgresql://")
            })?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (rest, None),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let mut parsed = DatabaseUrl::default();
        if let Some(userinfo) = userinfo {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            parsed.user = non_empty(percent_decode(user).context("user name")?);
            parsed.password = password
                .map(|p| {
                    percent_decode(p)
                        .map_err(|_| format_err!("the password is not valid percent-encoding"))
                })
                .transpose()?
                .filter(|p| !p.is_empty())
                .map(Secret::new);
        }
        let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
            let (h, after) = bracketed
                .split_once(']')
                .ok_or_else(|| format_err!("unclosed '[' in the host"))?;
            (h, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        parsed.host = non_empty(percent_decode(host).context("host")?);
        if let Some(port) = port.filter(|p| !p.is_empty()) {
            parsed.port =
                Some(port.parse().map_err(|_| {
                    format_err!("the port '{port}' is not a number from 1 to 65535")
                })?);
        }
        if let Some(path) = path {
            parsed.dbname = non_empty(percent_decode(path).context("database name")?);
        }
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            if let Some(("sslmode", v)) = pair.split_once('=') {
                parsed.sslmode = non_empty(percent_decode(v)?);
            }
        }
        Ok(parsed)
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn percent_decode(s: &str) -> anyhow::Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format_err!("bad percent-encoding"))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format_err!("percent-encoding is not UTF-8"))
}

/// How to reach the database. The password stays a [`Secret`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub user: String,
    pub password: Option<Secret>,
    pub sslmode: Option<String>,
    /// Set when the tools run inside this compose service (host and port are then unused).
    pub service: Option<String>,
}

impl Connection {
    /// `host:port/dbname`, or `dbname in compose service 'db'`, for messages (never the password).
    pub fn display_target(&self) -> String {
        match &self.service {
            Some(_) => format!("{} in {}", self.dbname, self.server_label()),
            None => format!("{}:{}/{}", self.host, self.port, self.dbname),
        }
    }

    /// `host:port`, or `compose service 'db'`.
    pub fn server_label(&self) -> String {
        match &self.service {
            Some(svc) => format!("compose service '{svc}'"),
            None => format!("{}:{}", self.host, self.port),
        }
    }

    /// Whether the server is the developer's own (loopback, a local socket, the compose service).
    pub fn is_local(&self) -> bool {
        self.service.is_some()
            || matches!(self.host.as_str(), "localhost" | "127.0.0.1" | "::1" | "")
            || self.host.starts_with('/')
            || self.host.starts_with("127.")
    }

    /// The defaults, for probes that connect nowhere.
    pub fn local_default() -> Connection {
        Connection {
            host: DEFAULT_HOST.into(),
            port: DEFAULT_PORT,
            dbname: DEFAULT_DB.into(),
            user: DEFAULT_USER.into(),
            password: None,
            sslmode: None,
            service: None,
        }
    }

    /// This connection as the tools inside `svc` see it: user, database and
    /// password nobody gave (`origin` is [`Origin::Default`]) come from the
    /// service's own environment, as the official image reads it.
    pub fn in_service(
        &self,
        svc: &crate::compose::Service,
        origin: impl Fn(&str) -> Origin,
    ) -> Connection {
        let mut conn = self.clone();
        if origin("user") == Origin::Default {
            conn.user = svc.env("POSTGRES_USER").unwrap_or("postgres").to_string();
        }
        if origin("dbname") == Origin::Default {
            conn.dbname = svc
                .env("POSTGRES_DB")
                .map(String::from)
                .unwrap_or_else(|| conn.user.clone());
        }
        if conn.password.is_none() {
            conn.password = svc.env("POSTGRES_PASSWORD").map(Secret::new);
        }
        conn.service = Some(svc.name.clone());
        conn
    }

    /// The same server's maintenance database (`postgres`), for creating,
    /// renaming and dropping databases.
    pub fn maintenance(&self) -> Connection {
        Connection {
            dbname: "postgres".into(),
            ..self.clone()
        }
    }

    /// The libpq environment for a client tool: the password goes here, never into argv.
    pub fn libpq_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("PGHOST", self.host.clone()),
            ("PGPORT", self.port.to_string()),
            ("PGDATABASE", self.dbname.clone()),
            ("PGUSER", self.user.clone()),
            ("PGAPPNAME", "cargo-xtask".to_string()),
            ("PGCONNECT_TIMEOUT", "10".to_string()),
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

/// The settings every database task needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub root: PathBuf,
    pub connection: Connection,
    pub backup_dir: PathBuf,
    /// How the client tools run (`--via`, BACKUP_VIA).
    pub via: Via,
    /// The compose service of the database (BACKUP_COMPOSE_SERVICE).
    pub compose_service: String,
    /// Each setting's origin, for `-v`.
    pub origins: Vec<(&'static str, Origin)>,
}

impl Settings {
    /// Where the setting `name` came from.
    pub fn origin(&self, name: &str) -> Origin {
        self.origins
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(Origin::Default, |(_, o)| *o)
    }
}

pub const DEFAULT_HOST: &str = "localhost";
pub const DEFAULT_PORT: u16 = 5432;
pub const DEFAULT_DB: &str = "app";
pub const DEFAULT_USER: &str = "app";
pub const DEFAULT_BACKUP_DIR: &str = "backups";
pub const DEFAULT_COMPOSE_SERVICE: &str = "db";

impl Settings {
    pub fn resolve(args: &CommonArgs, sources: &Sources, root: &Path) -> anyhow::Result<Settings> {
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
        let c = &args.connection;
        let host = pick(
            "host",
            c.host.clone(),
            sources.get_or_url("POSTGRES_HOST", |u| u.host.clone())?,
            DEFAULT_HOST,
        );
        let port_text = pick(
            "port",
            c.port.map(|p| p.to_string()),
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
            c.dbname.clone(),
            sources.get_or_url("POSTGRES_DB", |u| u.dbname.clone())?,
            DEFAULT_DB,
        );
        let user = pick(
            "user",
            c.user.clone(),
            sources.get_or_url("POSTGRES_USER", |u| u.user.clone())?,
            DEFAULT_USER,
        );
        let via_text = pick(
            "via",
            c.via.map(|v| v.to_string()),
            sources.get("BACKUP_VIA"),
            "auto",
        );
        let via = Via::from_str(&via_text, true).map_err(|_| {
            format_err!("BACKUP_VIA '{via_text}' is not valid: use auto, host or compose")
        })?;
        let compose_service = pick(
            "compose_service",
            None,
            sources.get("BACKUP_COMPOSE_SERVICE"),
            DEFAULT_COMPOSE_SERVICE,
        );
        let (backup_dir, origin) = resolve_backup_dir(&args.dir, sources, root);
        origins.push(("backup_dir", origin));
        let password = resolve_password(sources)?;
        let sslmode = sources
            .get_or_url("PGSSLMODE", |u| u.sslmode.clone())?
            .map(|(v, _)| v);
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
            },
            backup_dir,
            via,
            compose_service,
            origins,
        })
    }
}

/// The backup directory (flag > BACKUP_DIR > default), relative to `root`.
pub fn resolve_backup_dir(args: &DirArgs, sources: &Sources, root: &Path) -> (PathBuf, Origin) {
    let (dir, origin) = match (&args.backup_dir, sources.get("BACKUP_DIR")) {
        (Some(flag), _) => (flag.clone(), Origin::Flag),
        (None, Some((v, origin))) => (PathBuf::from(v), origin),
        (None, None) => (PathBuf::from(DEFAULT_BACKUP_DIR), Origin::Default),
    };
    (root.join(dir), origin)
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
        if let Some(url) = map.get("DATABASE_URL").filter(|v| !v.is_empty()) {
            let url =
                DatabaseUrl::parse(url).map_err(|e| format_err!("DATABASE_URL ({origin}): {e}"))?;
            if let Some(pw) = url.password {
                return Ok(Some(pw));
            }
        }
    }
    Ok(None)
}

/// A setting read from the sources, with a default and a validity check. Errors
/// name the variable and what it accepts.
pub fn number_setting<T: std::str::FromStr>(
    sources: &Sources,
    key: &str,
    flag: Option<T>,
    default: T,
    accepts: &str,
    valid: impl Fn(&T) -> bool,
) -> anyhow::Result<T> {
    if let Some(v) = flag {
        return Ok(v);
    }
    match sources.get(key) {
        None => Ok(default),
        Some((text, _)) => match text.trim().parse::<T>() {
            Ok(v) if valid(&v) => Ok(v),
            _ => bail!("{key} '{text}' is not valid: use {accepts}"),
        },
    }
}

/// The workspace root: backups and `.env` are relative to it.
///
/// `XTASK_ROOT` sets it explicitly (a deployed binary, the tests).
/// `cargo run` sets `CARGO_MANIFEST_DIR` to `xtask/` at run time; a binary
/// run by hand falls back to the directory it was built in, then to the
/// current directory (a copied binary in a container, say).
pub fn project_root() -> PathBuf {
    if let Some(root) = std::env::var_os("XTASK_ROOT").filter(|r| !r.is_empty()) {
        return PathBuf::from(root);
    }
    let from_manifest = |dir: &str| Path::new(dir).parent().map(Path::to_path_buf);
    if let Some(root) = std::env::var("CARGO_MANIFEST_DIR")
        .ok()
        .and_then(|d| from_manifest(&d))
        && root.join("xtask").is_dir()
    {
        return root;
    }
    if let Some(root) =
        from_manifest(env!("CARGO_MANIFEST_DIR")).filter(|r| r.join("xtask").is_dir())
    {
        return root;
    }
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(env: &[(&str, &str)], dotenv: &[(&str, &str)]) -> Sources {
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

    fn resolve(args: CommonArgs, s: &Sources) -> Settings {
        Settings::resolve(&args, s, Path::new("/ws")).unwrap()
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let s = resolve(CommonArgs::default(), &sources(&[], &[]));
        assert_eq!(s.connection.host, "localhost");
        assert_eq!(s.connection.port, 5432);
        assert_eq!(s.connection.dbname, "app");
        assert_eq!(s.connection.user, "app");
        assert_eq!(s.connection.password, None);
        assert_eq!(s.backup_dir, Path::new("/ws/backups"));
        assert!(s.origins.iter().all(|(_, o)| *o == Origin::Default));
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
        let mut args = CommonArgs::default();
        args.connection.host = Some("flaghost".into());
        let r = resolve(args, &s);
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
        let r = resolve(CommonArgs::default(), &s);
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
            resolve(CommonArgs::default(), &s).connection.dbname,
            "explicit"
        );
    }

    #[test]
    fn password_order_and_secrecy() {
        let s = sources(&[("POSTGRES_PASSWORD", "b")], &[("PGPASSWORD", "c")]);
        let r = resolve(CommonArgs::default(), &s);
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
    fn url_errors_never_echo_the_url() {
        let err = DatabaseUrl::parse("mysql://root:hunter2@h/db")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"));
        let err = DatabaseUrl::parse("postgres://root:hunter2@h:99999/db")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("99999"));
    }

    #[test]
    fn url_with_ipv6_host_and_no_userinfo() {
        let u = DatabaseUrl::parse("postgresql://[::1]:5433/app").unwrap();
        assert_eq!(u.host.as_deref(), Some("::1"));
        assert_eq!(u.port, Some(5433));
        assert_eq!(u.user, None);
    }

    #[test]
    fn bad_port_is_one_clear_error() {
        let s = sources(&[("POSTGRES_PORT", "five")], &[]);
        let err = Settings::resolve(&CommonArgs::default(), &s, Path::new("/")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "POSTGRES_PORT 'five' is not a port number: use a number from 1 to 65535"
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
