//! How PostgreSQL's client tools are run: found, version-checked, given the
//! connection through libpq's environment (never argv), and their failures
//! turned into one line that says what to do.
//!
//! Two routes: `host` runs the tools installed on this machine against
//! `host:port`; `compose` runs them inside the compose service with
//! `exec -T`, so client and server versions match by construction. Either
//! way the bytes stream through this process. [`open`] picks the route
//! (`--via auto|host|compose`) and connects once.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use xshell::{Shell, cmd};

use crate::compose::{Compose, ComposeError, Service};
use crate::config::{Connection, Origin, Settings};
use crate::flags::Via;
use crate::ui;

/// A PostgreSQL version as a tool or a server reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgVersion {
    pub major: u32,
    pub minor: u32,
    /// As reported, e.g. `17.12 (Debian 17.12-0+deb13u1)`.
    pub text: String,
}

impl PgVersion {
    /// Parses `pg_dump (PostgreSQL) 15.18 (Debian ...)`, `17.12 (Debian ...)`, `16beta2`.
    pub fn parse(s: &str) -> Option<PgVersion> {
        let s = s.trim();
        let text = match s.find(") ") {
            Some(i) if s.starts_with(|c: char| !c.is_ascii_digit()) => &s[i + 2..],
            _ => s,
        };
        let digits: String = text
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let mut parts = digits.split('.');
        let major: u32 = parts.next()?.parse().ok()?;
        let minor: u32 = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
        Some(PgVersion {
            major,
            minor,
            text: text.to_string(),
        })
    }

    pub fn short(&self) -> String {
        format!("{}.{}", self.major, self.minor)
    }
}

impl fmt::Display for PgVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

/// Failures callers branch on; each prints as one actionable line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgError {
    ToolMissing {
        tool: String,
    },
    Unreachable {
        target: String,
        detail: String,
    },
    AuthFailed {
        user: String,
        target: String,
    },
    NoPassword {
        user: String,
        target: String,
    },
    NoDatabase {
        dbname: String,
        target: String,
    },
    NoRole {
        user: String,
        target: String,
    },
    ClientTooOld {
        tool: String,
        client: PgVersion,
        server: PgVersion,
    },
    Failed {
        tool: String,
        detail: String,
    },
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgError::ToolMissing { tool } => write!(
                f,
                "{tool} was not found on PATH: install the PostgreSQL client tools (Debian: apt-get install postgresql-client)"
            ),
            PgError::Unreachable { target, detail } => write!(
                f,
                "cannot reach PostgreSQL at {target} ({detail}): is the server running? Check POSTGRES_HOST/POSTGRES_PORT, or start the compose service with `cargo xtask db-up`"
            ),
            PgError::AuthFailed { user, target } => write!(
                f,
                "password authentication failed for user '{user}' at {target}: set the right password in PGPASSWORD, POSTGRES_PASSWORD (.env) or ~/.pgpass"
            ),
            PgError::NoPassword { user, target } => write!(
                f,
                "the server at {target} asks user '{user}' for a password and none was given: set PGPASSWORD, POSTGRES_PASSWORD (.env) or a ~/.pgpass entry"
            ),
            PgError::NoDatabase { dbname, target } => write!(
                f,
                "database '{dbname}' does not exist at {target}: check POSTGRES_DB or --dbname"
            ),
            PgError::NoRole { user, target } => {
                write!(
                    f,
                    "user '{user}' does not exist at {target}: check POSTGRES_USER or --user"
                )
            }
            PgError::ClientTooOld {
                tool,
                client,
                server,
            } => write!(
                f,
                "{tool} {client} is older than the server ({server}) and cannot dump it: run it inside the compose service with --via compose, or install the PostgreSQL {} client tools",
                server.major
            ),
            PgError::Failed { tool, detail } => write!(f, "{tool} failed: {detail}"),
        }
    }
}

impl std::error::Error for PgError {}

/// Turns a client tool's stderr into a [`PgError`]. `target` is `host:port`.
pub fn classify(tool: &str, stderr: &str, conn: &Connection) -> PgError {
    let target = conn.server_label();
    let first_line = stderr
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("exited with an error and no message")
        .to_string();
    let has = |needle: &str| stderr.contains(needle);
    if has("password authentication failed") {
        PgError::AuthFailed {
            user: conn.user.clone(),
            target,
        }
    } else if has("no password supplied") || has("fe_sendauth") {
        PgError::NoPassword {
            user: conn.user.clone(),
            target,
        }
    } else if has("database \"") && has("\" does not exist") && !has("role \"") {
        PgError::NoDatabase {
            dbname: conn.dbname.clone(),
            target,
        }
    } else if has("role \"") && has("\" does not exist") {
        PgError::NoRole {
            user: conn.user.clone(),
            target,
        }
    } else if has("Connection refused")
        || has("could not connect")
        || has("could not translate host name")
        || has("timeout expired")
        || has("No route to host")
        || has("Network is unreachable")
    {
        let detail = if has("Connection refused") {
            "connection refused"
        } else if has("could not translate host name") {
            "unknown host name"
        } else if has("timeout expired") {
            "timed out"
        } else {
            "cannot connect"
        };
        PgError::Unreachable {
            target,
            detail: detail.to_string(),
        }
    } else {
        // Strip the tool's own prefix ("pg_dump: error: ") for a shorter line.
        let detail = first_line
            .strip_prefix(&format!("{tool}: error: "))
            .or_else(|| first_line.strip_prefix(&format!("{tool}: ")))
            .unwrap_or(&first_line)
            .to_string();
        PgError::Failed {
            tool: tool.to_string(),
            detail,
        }
    }
}

/// How the client tools are run.
#[derive(Debug, Clone)]
pub enum Runner {
    /// Installed on this machine; `None`: found on PATH.
    Host { bindir: Option<PathBuf> },
    /// Inside a running compose service.
    Compose(Box<Service>),
}

/// The client tools of one installation, with their version.
#[derive(Debug, Clone)]
pub struct Client {
    pub runner: Runner,
    pub version: PgVersion,
}

/// A client tool's command line, environment and working directory, ready
/// for `std::process`, duct or xshell. The password is in `env`, never `args`.
#[derive(Debug, Clone)]
pub struct ToolCommand {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub env: Vec<(&'static str, String)>,
    pub dir: Option<PathBuf>,
}

impl ToolCommand {
    pub fn std(&self) -> std::process::Command {
        let mut c = std::process::Command::new(&self.program);
        c.args(&self.args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        if let Some(dir) = &self.dir {
            c.current_dir(dir);
        }
        c
    }

    pub fn duct(&self) -> duct::Expression {
        let mut e = duct::cmd(&self.program, &self.args);
        for (k, v) in &self.env {
            e = e.env(k, v);
        }
        if let Some(dir) = &self.dir {
            e = e.dir(dir);
        }
        e
    }
}

/// libpq variables that name the server's address: inside the service the
/// tools use the local socket, so these are not forwarded.
const HOST_ONLY_VARS: [&str; 3] = ["PGHOST", "PGPORT", "PGSSLMODE"];

impl Client {
    /// `host` or `compose`: recorded in `.meta`.
    pub fn via(&self) -> &'static str {
        match self.runner {
            Runner::Host { .. } => "host",
            Runner::Compose(_) => "compose",
        }
    }

    /// Where `tool` runs, for `-v`.
    pub fn describe(&self, tool: &str) -> String {
        match &self.runner {
            Runner::Host { bindir: Some(dir) } => dir.join(tool).display().to_string(),
            Runner::Host { bindir: None } => format!("{tool} on PATH"),
            Runner::Compose(svc) => format!(
                "{tool} in compose service '{}' ({} {})",
                svc.name,
                svc.compose.name(),
                svc.compose.version
            ),
        }
    }

    /// The command that runs `tool args` against `conn` on this route.
    pub fn command(&self, tool: &str, args: &[OsString], conn: &Connection) -> ToolCommand {
        self.command_with(tool, args, conn, false)
    }

    /// As [`Client::command`]; `tty` gives an interactive tool a terminal
    /// inside the service (never for streams).
    pub fn command_with(
        &self,
        tool: &str,
        args: &[OsString],
        conn: &Connection,
        tty: bool,
    ) -> ToolCommand {
        match &self.runner {
            Runner::Host { bindir } => ToolCommand {
                program: match bindir {
                    Some(dir) => dir.join(tool).into_os_string(),
                    None => tool.into(),
                },
                args: args.to_vec(),
                env: conn.libpq_env(),
                dir: None,
            },
            Runner::Compose(svc) => {
                let env: Vec<_> = conn
                    .libpq_env()
                    .into_iter()
                    .filter(|(k, _)| !HOST_ONLY_VARS.contains(k))
                    .collect();
                let forward: Vec<&str> = env.iter().map(|(k, _)| *k).collect();
                ToolCommand {
                    program: svc.program().into(),
                    args: svc.exec_args(tool, args, &forward, tty),
                    env,
                    dir: Some(svc.compose.dir.clone()),
                }
            }
        }
    }

    /// The tools inside a running compose service.
    pub fn in_service(service: Service) -> Result<Client, PgError> {
        let probe = Client {
            runner: Runner::Compose(Box::new(service)),
            version: PgVersion::parse("0").expect("a version"),
        };
        let cmd = probe.command(
            "pg_dump",
            &["--version".into()],
            &Connection::local_default(),
        );
        let out = cmd
            .std()
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| PgError::Failed {
                tool: "docker".into(),
                detail: e.to_string(),
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        match (out.status.success(), PgVersion::parse(&text)) {
            (true, Some(version)) => Ok(Client { version, ..probe }),
            _ => Err(PgError::Failed {
                tool: "pg_dump --version in the compose service".into(),
                detail: String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .next()
                    .unwrap_or(
                        "no output: does the service's image have the PostgreSQL client tools?",
                    )
                    .to_string(),
            }),
        }
    }

    /// `pg_dump` on PATH, or with `min_major`, the newest installed version
    /// that is at least that major (Debian and RHEL keep several side by side).
    pub fn find(sh: &Shell, min_major: Option<u32>) -> Result<Client, PgError> {
        let host = |bindir: Option<PathBuf>, version: PgVersion| Client {
            runner: Runner::Host { bindir },
            version,
        };
        let on_path = tool_version(sh, Path::new("pg_dump"));
        let good = |v: &PgVersion| min_major.is_none_or(|m| v.major >= m);
        if let Some(v) = &on_path
            && good(v)
        {
            return Ok(host(None, v.clone()));
        }
        let mut others: Vec<Client> = installed_bindirs()
            .into_iter()
            .filter_map(|dir| tool_version(sh, &dir.join("pg_dump")).map(|v| host(Some(dir), v)))
            .filter(|c| good(&c.version))
            .collect();
        others.sort_by_key(|c| std::cmp::Reverse((c.version.major, c.version.minor)));
        match (others.into_iter().next(), on_path) {
            (Some(c), _) => Ok(c),
            (None, Some(v)) => Ok(host(None, v)),
            (None, None) => Err(PgError::ToolMissing {
                tool: "pg_dump".into(),
            }),
        }
    }
}

/// A connected route: the tools, the connection as they see it, and the server.
#[derive(Debug, Clone)]
pub struct Session {
    pub client: Client,
    pub conn: Connection,
    pub server: PgVersion,
}

/// What the session is for: a dump needs a `pg_dump` at least as new as the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Dump,
    Load,
}

/// The tools and the connection as they see it, before connecting.
#[derive(Debug, Clone)]
pub struct Route {
    pub client: Client,
    pub conn: Connection,
}

/// Picks the route (`--via`) and finds the tools; connects nowhere yet.
pub fn route(sh: &Shell, settings: &Settings) -> anyhow::Result<Route> {
    let located = match settings.via {
        Via::Host => None,
        Via::Compose => Some(locate(settings)?),
        // A server elsewhere is not the compose service, whatever runs here.
        Via::Auto if !settings.connection.is_local() => {
            ui::detail(format!(
                "{} is not on this machine: using the host's client tools",
                settings.connection.server_label()
            ));
            None
        }
        Via::Auto => match locate(settings) {
            Ok(svc) => Some(svc),
            Err(ComposeError::NotRunning { service }) => {
                ui::info(format!(
                    "the compose service '{service}' is not running: using the host's client tools (`cargo xtask db-up` starts it)"
                ));
                None
            }
            Err(ComposeError::DockerUnreachable { detail }) => {
                ui::info(format!(
                    "Docker is not reachable ({detail}): using the host's client tools"
                ));
                None
            }
            Err(e @ ComposeError::UnknownService { .. })
                if settings.origin("compose_service") != Origin::Default =>
            {
                ui::warn(format!("{e}; using the host's client tools"));
                None
            }
            Err(e) => {
                ui::detail(format!(
                    "no compose route ({e}); using the host's client tools"
                ));
                None
            }
        },
    };
    Ok(match located {
        Some(svc) => Route {
            conn: settings
                .connection
                .in_service(&svc, |name| settings.origin(name)),
            client: Client::in_service(svc)?,
        },
        None => Route {
            conn: settings.connection.clone(),
            client: Client::find(sh, None)?,
        },
    })
}

impl Route {
    /// Connects once (the preflight of every database task). On the host a
    /// dump needs a `pg_dump` at least as new as the server: a newer installed
    /// one is taken when there is one.
    pub fn connect(self, sh: &Shell, purpose: Purpose) -> anyhow::Result<Session> {
        let Route { client, conn } = self;
        let server = server_version(sh, &client, &conn)?;
        let client = match client.runner {
            Runner::Host { .. }
                if purpose == Purpose::Dump && client.version.major < server.major =>
            {
                Client::find(sh, Some(server.major))?
            }
            _ => client,
        };
        ui::detail(format!(
            "route: {}: {}, server {}",
            client.via(),
            client.describe(if purpose == Purpose::Dump {
                "pg_dump"
            } else {
                "psql"
            }),
            server
        ));
        Ok(Session {
            client,
            conn,
            server,
        })
    }
}

/// [`route`] and [`Route::connect`].
pub fn open(sh: &Shell, settings: &Settings, purpose: Purpose) -> anyhow::Result<Session> {
    route(sh, settings)?.connect(sh, purpose)
}

fn locate(settings: &Settings) -> Result<Service, ComposeError> {
    Compose::detect(&settings.root)?.service(&settings.compose_service)
}

fn installed_bindirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for parent in ["/usr/lib/postgresql", "/usr/local/opt"] {
        if let Ok(entries) = std::fs::read_dir(parent) {
            for e in entries.flatten() {
                let bin = e.path().join("bin");
                if bin.join("pg_dump").is_file() {
                    dirs.push(bin);
                }
            }
        }
    }
    dirs
}

fn tool_version(sh: &Shell, tool: &Path) -> Option<PgVersion> {
    let out = cmd!(sh, "{tool} --version")
        .quiet()
        .ignore_status()
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    PgVersion::parse(&String::from_utf8_lossy(&out.stdout))
}

/// Runs one SQL statement with `psql` and returns its unaligned output.
pub fn query(sh: &Shell, client: &Client, conn: &Connection, sql: &str) -> Result<String, PgError> {
    script(sh, client, conn, sql, &[])
}

/// Runs a psql script read from stdin, with psql variables (`:'v'` is a
/// quoted literal, `:"v"` a quoted identifier), so values are never spliced
/// into SQL text. Returns unaligned, tuples-only output.
pub fn script(
    sh: &Shell,
    client: &Client,
    conn: &Connection,
    sql: &str,
    vars: &[(&str, &str)],
) -> Result<String, PgError> {
    let mut args: Vec<OsString> = ["-X", "-A", "-t", "-q", "-w", "-v", "ON_ERROR_STOP=1"]
        .map(OsString::from)
        .to_vec();
    for (k, v) in vars {
        args.push("-v".into());
        args.push(format!("{k}={v}").into());
    }
    let tool = client.command("psql", &args, conn);
    let (program, args) = (&tool.program, &tool.args);
    let mut c = cmd!(sh, "{program} {args...}")
        .quiet()
        .ignore_status()
        .stdin(sql);
    for (k, v) in &tool.env {
        c = c.env(k, v);
    }
    let out = c.output().map_err(|_| PgError::ToolMissing {
        tool: "psql".into(),
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(classify(
            "psql",
            &String::from_utf8_lossy(&out.stderr),
            conn,
        ))
    }
}

/// Connects once and returns the server's version: the preflight of every task.
pub fn server_version(
    sh: &Shell,
    client: &Client,
    conn: &Connection,
) -> Result<PgVersion, PgError> {
    let out = query(sh, client, conn, "SHOW server_version")?;
    PgVersion::parse(&out).ok_or_else(|| PgError::Failed {
        tool: "psql".into(),
        detail: format!("unexpected server version '{out}'"),
    })
}

/// Options of a plain-format dump.
#[derive(Debug, Clone, Default)]
pub struct DumpOptions {
    pub schema_only: bool,
}

/// `pg_dump` writing plain SQL to stdout, stderr captured (drained by duct's
/// threads, so a chatty pg_dump cannot deadlock), exit status checked by us.
pub fn dump_expression(client: &Client, conn: &Connection, opts: &DumpOptions) -> duct::Expression {
    let mut args: Vec<OsString> = vec!["--format=plain".into(), "--no-password".into()];
    if opts.schema_only {
        args.push("--schema-only".into());
    }
    client
        .command("pg_dump", &args, conn)
        .duct()
        .stderr_capture()
        .unchecked()
}

/// The git commit of the workspace, if it is a git checkout.
pub fn git_commit(sh: &Shell, root: &Path) -> Option<String> {
    let out = cmd!(sh, "git -C {root} rev-parse HEAD")
        .quiet()
        .ignore_status()
        .ignore_stderr()
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && s.len() >= 40).then_some(s)
}

/// Checks that `client` can dump a server of version `server`.
pub fn check_dump_compat(client: &Client, server: &PgVersion) -> Result<(), PgError> {
    if client.version.major < server.major {
        return Err(PgError::ClientTooOld {
            tool: "pg_dump".into(),
            client: client.version.clone(),
            server: server.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        Connection {
            host: "db.local".into(),
            port: 5433,
            dbname: "shop".into(),
            user: "app".into(),
            password: Some(crate::config::Secret::new("hunter2")),
            sslmode: None,
            service: None,
        }
    }

    #[test]
    fn versions() {
        let v = PgVersion::parse("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n").unwrap();
        assert_eq!((v.major, v.minor), (15, 18));
        assert_eq!(v.text, "15.18 (Debian 15.18-0+deb12u1)");
        let v = PgVersion::parse("17.12 (Debian 17.12-0+deb13u1)").unwrap();
        assert_eq!((v.major, v.minor), (17, 12));
        assert_eq!(PgVersion::parse("16beta2").unwrap().major, 16);
        assert_eq!(PgVersion::parse("9.6.24").unwrap().short(), "9.6");
        assert_eq!(PgVersion::parse("garbage"), None);
    }

    #[test]
    fn errors_are_classified_into_one_line() {
        let c = conn();
        let cases = [
            (
                "psql: error: connection to server at \"db.local\" (10.0.0.1), port 5433 failed: FATAL:  password authentication failed for user \"app\"",
                "password authentication failed for user 'app' at db.local:5433",
            ),
            (
                "psql: error: connection to server at \"db.local\", port 5433 failed: fe_sendauth: no password supplied",
                "asks user 'app' for a password",
            ),
            (
                "psql: error: connection to server ... failed: FATAL:  database \"shop\" does not exist",
                "database 'shop' does not exist at db.local:5433",
            ),
            (
                "psql: error: connection to server ... failed: FATAL:  role \"app\" does not exist",
                "user 'app' does not exist",
            ),
            (
                "psql: error: connection to server at \"db.local\" (::1), port 5433 failed: Connection refused\n\tIs the server running",
                "cannot reach PostgreSQL at db.local:5433 (connection refused)",
            ),
            (
                "pg_dump: error: query failed: ERROR:  permission denied for table secrets",
                "pg_dump failed: query failed: ERROR:  permission denied for table secrets",
            ),
        ];
        for (stderr, expected) in cases {
            let tool = if stderr.starts_with("pg_dump") {
                "pg_dump"
            } else {
                "psql"
            };
            let msg = classify(tool, stderr, &c).to_string();
            assert!(msg.contains(expected), "{msg}");
            assert!(!msg.contains('\n') && !msg.contains("hunter2"), "{msg}");
        }
    }

    #[test]
    fn too_old_client_names_both_versions_and_the_remedy() {
        let client = Client {
            runner: Runner::Host { bindir: None },
            version: PgVersion::parse("15.18").unwrap(),
        };
        let server = PgVersion::parse("17.12 (Debian)").unwrap();
        let msg = check_dump_compat(&client, &server).unwrap_err().to_string();
        assert_eq!(
            msg,
            "pg_dump 15.18 is older than the server (17.12) and cannot dump it: run it inside the compose service with --via compose, or install the PostgreSQL 17 client tools"
        );
        assert!(check_dump_compat(&client, &PgVersion::parse("15.2").unwrap()).is_ok());
    }
}
