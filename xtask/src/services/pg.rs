//! How PostgreSQL's client tools are run: found, version-checked, given the
//! connection through libpq's environment (never argv), and their failures
//! turned into one line that says what to do.
//!
//! Two routes: `host` runs the tools installed on this machine against
//! `host:port`; `compose` runs them inside the compose service with
//! `exec -T`, so client and server versions match by construction. Either
//! way the bytes stream through this process. [`open`] picks the route
//! (`--via auto|host|compose`) and connects once.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::core::config::{Connection, Origin, Secret, Settings, Via};
use crate::core::dbprops::DatabaseProps;
use crate::core::format::{Codec, Compression};
use crate::core::meta::SourceId;
use crate::services::compose::{Compose, ComposeError, Service};
use crate::services::interrupt;
use crate::services::process::{ChildReader, SpawnError, ToolCommand};
use crate::ui;

/// A PostgreSQL version as a tool or a server reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PgVersion {
    pub(crate) major: u32,
    pub(crate) minor: u32,
    /// As reported, e.g. `17.12 (Debian 17.12-0+deb13u1)`.
    pub(crate) text: String,
}

impl PgVersion {
    /// Whether this release has a fix that came out in each `(major,
    /// minor)` of `fixed` (in order) and is in every major after the last.
    fn has_fix(&self, fixed: &[(u32, u32)]) -> bool {
        match fixed.iter().find(|(major, _)| *major == self.major) {
            Some((_, minor)) => self.minor >= *minor,
            None => fixed.last().is_some_and(|(major, _)| self.major > *major),
        }
    }

    /// Parses `pg_dump (PostgreSQL) 15.18 (Debian ...)`, `17.12 (Debian ...)`, `16beta2`.
    pub(crate) fn parse(s: &str) -> Option<PgVersion> {
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

    pub(crate) fn short(&self) -> String {
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
pub(crate) enum PgError {
    ToolMissing {
        tool: String,
    },
    /// The program that runs the tool could not start (`docker` on the compose route).
    Spawn(String),
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
            PgError::Spawn(detail) => write!(f, "{detail}"),
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
pub(crate) fn classify(tool: &str, stderr: &str, conn: &Connection) -> PgError {
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
    } else if has(&format!(
        "FATAL:  database \"{}\" does not exist",
        conn.dbname
    )) {
        PgError::NoDatabase {
            dbname: conn.dbname.clone(),
            target,
        }
    } else if has(&format!("FATAL:  role \"{}\" does not exist", conn.user)) {
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
pub(crate) enum Runner {
    /// Installed on this machine; `None`: found on PATH.
    Host { bindir: Option<PathBuf> },
    /// Inside a running compose service.
    Compose(Box<Service>),
}

/// The client tools of one installation, with their version.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    pub(crate) runner: Runner,
    pub(crate) version: PgVersion,
}

/// libpq variables that name the server's address: inside the service the
/// tools use the local socket, so these are not forwarded.
const HOST_ONLY_VARS: [&str; 3] = ["PGHOST", "PGPORT", "PGSSLMODE"];

impl Client {
    /// `host` or `compose`: recorded in `.meta`.
    pub(crate) fn via(&self) -> &'static str {
        match self.runner {
            Runner::Host { .. } => "host",
            Runner::Compose(_) => "compose",
        }
    }

    /// Where `tool` runs, for `-v`.
    pub(crate) fn describe(&self, tool: &str) -> String {
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
    pub(crate) fn command(&self, tool: &str, args: &[OsString], conn: &Connection) -> ToolCommand {
        self.command_with(tool, args, conn, false)
    }

    /// As [`Client::command`]; `tty` gives an interactive tool a terminal
    /// inside the service (never for streams).
    pub(crate) fn command_with(
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
                new_group: false,
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
                    new_group: false,
                }
            }
        }
    }

    /// The error for a tool that did not start: on the host the tool itself
    /// is missing; on the compose route the program that runs it failed.
    pub(crate) fn spawn_error(&self, tool: &str, e: SpawnError) -> PgError {
        match &self.runner {
            Runner::Host { .. } if e.error.kind() == std::io::ErrorKind::NotFound => {
                PgError::ToolMissing { tool: tool.into() }
            }
            Runner::Host { .. } => PgError::Spawn(e.to_string()),
            Runner::Compose(_) => PgError::Spawn(format!(
                "{e}: it runs {tool} in the compose service; install Docker, or use --via host"
            )),
        }
    }

    /// The tools inside a running compose service.
    pub(crate) fn in_service(service: Service) -> Result<Client, PgError> {
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
            .output(b"")
            .map_err(|e| probe.spawn_error("pg_dump", e))?;
        let text = String::from_utf8_lossy(&out.stdout);
        match (out.status.success(), PgVersion::parse(&text)) {
            (true, Some(version)) => Ok(Client { version, ..probe }),
            _ => Err(PgError::Failed {
                tool: "pg_dump --version in the compose service".into(),
                detail: out
                    .stderr
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
    pub(crate) fn find(min_major: Option<u32>) -> Result<Client, PgError> {
        let host = |bindir: Option<PathBuf>, version: PgVersion| Client {
            runner: Runner::Host { bindir },
            version,
        };
        let on_path = tool_version(Path::new("pg_dump"));
        let good = |v: &PgVersion| min_major.is_none_or(|m| v.major >= m);
        if let Some(v) = &on_path
            && good(v)
        {
            return Ok(host(unwrapped(v), v.clone()));
        }
        let mut others: Vec<Client> = installed_bindirs()
            .into_iter()
            .filter_map(|dir| tool_version(&dir.join("pg_dump")).map(|v| host(Some(dir), v)))
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

    /// Whether this pg_restore's `--jobs` never truncates a table whose rows
    /// another job loaded through the partition root (PostgreSQL commit
    /// 012ffb36, the releases of May 2023): older ones can lose those rows
    /// while every COPY reports them inserted.
    pub(crate) fn parallel_restore_keeps_loaded_rows(&self) -> bool {
        self.version
            .has_fix(&[(11, 20), (12, 15), (13, 11), (14, 8), (15, 3)])
    }

    /// Whether this psql knows `\restrict` (the releases of August 2025 and
    /// later): then it can refuse every command hidden in a dump by itself.
    pub(crate) fn has_restrict(&self) -> bool {
        self.version
            .has_fix(&[(13, 22), (14, 19), (15, 14), (16, 10), (17, 6)])
    }

    /// Runs a psql script read from stdin, with psql variables (`:'v'` is a
    /// quoted literal, `:"v"` a quoted identifier), so values are never spliced
    /// into SQL text. Returns unaligned, tuples-only output.
    pub(crate) fn script(
        &self,
        conn: &Connection,
        sql: &str,
        vars: &[(&str, &str)],
    ) -> Result<String, PgError> {
        self.script_until(conn, sql, vars, None)
    }

    /// [`Client::script`] that gives up at `deadline`.
    fn script_until(
        &self,
        conn: &Connection,
        sql: &str,
        vars: &[(&str, &str)],
        deadline: Option<std::time::Instant>,
    ) -> Result<String, PgError> {
        let args = script_args(vars);
        let out = self
            .command("psql", &args, conn)
            .output_until(sql.as_bytes(), deadline)
            .map_err(|e| self.spawn_error("psql", e))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(classify("psql", &out.stderr, conn))
        }
    }

    /// Runs one SQL statement with `psql` and returns its unaligned output.
    pub(crate) fn query(&self, conn: &Connection, sql: &str) -> Result<String, PgError> {
        self.script(conn, sql, &[])
    }

    /// Connects once and returns the server's version: the preflight of every task.
    pub(crate) fn server_version(&self, conn: &Connection) -> Result<PgVersion, PgError> {
        let out = self.query(conn, "SHOW server_version")?;
        PgVersion::parse(&out).ok_or_else(|| PgError::Failed {
            tool: "psql".into(),
            detail: format!("unexpected server version '{out}'"),
        })
    }

    /// `pg_dump` (or for the globals `pg_dumpall --globals-only`) writing
    /// plain SQL to a stream we read; its stderr is kept for the error, its
    /// exit status checked by the reader's owner.
    pub(crate) fn dump(
        &self,
        conn: &Connection,
        opts: &DumpOptions,
    ) -> Result<ChildReader, PgError> {
        let mut args: Vec<OsString> = vec!["--no-password".into()];
        let tool = match opts.globals {
            Some(passwords) => {
                args.push("--globals-only".into());
                // pg_dumpall ignores PGDATABASE: the database the settings name
                // is the one pg_hba lets us into.
                args.push(format!("--database={}", conn.dbname).into());
                if !passwords {
                    args.push("--no-role-passwords".into());
                }
                "pg_dumpall"
            }
            None => {
                match (&opts.archive, &opts.directory) {
                    (None, _) => args.push("--format=plain".into()),
                    (Some(c), None) => {
                        args.push("--format=custom".into());
                        args.push(self.archive_compression(*c)?.into());
                    }
                    (Some(c), Some((path, jobs))) => {
                        args.push("--format=directory".into());
                        args.push(self.archive_compression(*c)?.into());
                        args.push(format!("--jobs={}", (*jobs).max(1)).into());
                        if let Runner::Host { .. } = self.runner {
                            let mut file = OsString::from("--file=");
                            file.push(path);
                            args.push(file);
                        }
                    }
                }
                if opts.schema_only {
                    args.push("--schema-only".into());
                }
                if let Some(id) = &opts.snapshot {
                    args.push(format!("--snapshot={id}").into());
                }
                "pg_dump"
            }
        };
        if let (Some(_), Runner::Compose(_)) = (&opts.directory, &self.runner) {
            // pg_dump writes the directory inside the service: it comes out
            // as a tar stream on stdout, and the directory there goes.
            let mut script: Vec<OsString> = vec![
                "-c".into(),
                concat!(
                    "d=$(mktemp -d) || exit 1; trap 'rm -rf \"$d\"' EXIT; trap 'exit 143' INT TERM HUP; ",
                    "pg_dump \"$@\" --file=\"$d/dump\" || exit $?; ",
                    "tar -C \"$d/dump\" -cf - ."
                )
                .into(),
                "sh".into(),
            ];
            script.extend(args);
            return self.dump_reader(tool, self.command("sh", &script, conn), conn);
        }
        self.dump_reader(tool, self.command(tool, &args, conn), conn)
    }

    /// A dump's reader that a signal stops. On the host SIGTERM reaches
    /// pg_dump itself. `docker compose exec` passes no signal on (moby
    /// issue 9098): ended, it would leave pg_dump running in the service
    /// with its locks held until the dump was done. There the dump's
    /// sessions carry a name of their own, and the server ends them.
    fn dump_reader(
        &self,
        tool: &str,
        mut cmd: ToolCommand,
        conn: &Connection,
    ) -> Result<ChildReader, PgError> {
        let session = match self.runner {
            Runner::Host { .. } => None,
            Runner::Compose(_) => {
                let name = dump_session_name();
                for (key, value) in cmd.env.iter_mut() {
                    if *key == "PGAPPNAME" {
                        value.clone_from(&name);
                    }
                }
                Some((self.clone(), conn.clone(), name))
            }
        };
        let reader = cmd.reader().map_err(|e| self.spawn_error(tool, e))?;
        Ok(reader.on_signal(move |pid| {
            if let Some((client, conn, name)) = session {
                client.end_sessions(&conn, &name);
            }
            interrupt::terminate(pid);
        }))
    }

    /// Ends the server's sessions named `application_name` (a dump's, see
    /// [`Client::dump_reader`]). Asked again for two seconds while none is
    /// found (the signal may come before pg_dump has connected) or psql
    /// fails (said when it never answered); ten seconds at most in all:
    /// what stops a run must not hang it.
    fn end_sessions(&self, conn: &Connection, application_name: &str) {
        let sql = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                   WHERE application_name = :'app' AND pid <> pg_backend_pid()";
        let start = std::time::Instant::now();
        let deadline = start + std::time::Duration::from_secs(10);
        let mut failed = None;
        while start.elapsed() < std::time::Duration::from_secs(2) {
            match self.script_until(conn, sql, &[("app", application_name)], Some(deadline)) {
                Ok(n) if n != "0" => return,
                // None (yet, or any more: a dump that had ended has none).
                Ok(_) => failed = None,
                Err(e) => failed = Some(e),
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        if let Some(why) = failed {
            ui::warn(format!(
                "could not end the dump's sessions on the server ({why}): their application_name is '{application_name}'"
            ));
        }
    }

    /// pg_dump's `--compress` for a custom archive: gzip levels everywhere,
    /// zstd from pg_dump 16 on (which also takes the `method:level` form).
    pub(crate) fn archive_compression(&self, c: Compression) -> Result<String, PgError> {
        match c.codec {
            Codec::Gzip => Ok(format!("--compress={}", c.level)),
            Codec::None => Ok("--compress=0".into()),
            Codec::Zstd if self.version.major >= 16 => Ok(format!("--compress=zstd:{}", c.level)),
            Codec::Zstd => Err(PgError::Failed {
                tool: format!("pg_dump {}", self.version),
                detail: "it cannot write zstd into a custom archive (pg_dump 16 and newer can): use --compress gzip, or --via compose with a newer image".into(),
            }),
        }
    }

    /// `pg_restore --file=-`: a custom archive on its stdin, its SQL on stdout.
    pub(crate) fn unarchiver(&self) -> impl Fn() -> std::io::Result<std::process::Child> + '_ {
        move || {
            let args = ["--file=-".into()];
            self.command("pg_restore", &args, &Connection::local_default())
                .spawn(Stdio::piped(), Stdio::piped())
                .map_err(|e| std::io::Error::other(self.spawn_error("pg_restore", e).to_string()))
        }
    }

    /// `pg_restore --file=- DIR`: a directory backup's SQL on stdout. On
    /// this machine it reads the path (stdin is not read); in the service
    /// the directory comes on stdin as a tar stream ([`Client::dir_input`]),
    /// unpacked into a temporary directory there that goes afterwards.
    pub(crate) fn dir_unarchiver<'a>(
        &'a self,
        dir: &'a Path,
    ) -> impl Fn() -> std::io::Result<std::process::Child> + 'a {
        move || {
            let (tool, args): (&str, Vec<OsString>) = match self.runner {
                Runner::Host { .. } => ("pg_restore", vec!["--file=-".into(), dir.into()]),
                Runner::Compose(_) => (
                    "sh",
                    vec![
                        "-c".into(),
                        concat!(
                            "d=$(mktemp -d) || exit 1; trap 'rm -rf \"$d\"' EXIT; trap 'exit 143' INT TERM HUP; ",
                            "tar -xf - -C \"$d\" || exit 1; ",
                            "pg_restore --file=- \"$d\""
                        )
                        .into(),
                    ],
                ),
            };
            self.command(tool, &args, &Connection::local_default())
                .spawn(Stdio::piped(), Stdio::piped())
                .map_err(|e| std::io::Error::other(self.spawn_error("pg_restore", e).to_string()))
        }
    }

    /// What [`Client::dir_unarchiver`] reads on stdin: nothing on this
    /// machine; for the service a tar stream of `dir` (this machine's `tar`).
    pub(crate) fn dir_input(&self, dir: &Path) -> std::io::Result<Box<dyn std::io::Read + Send>> {
        match self.runner {
            Runner::Host { .. } => Ok(Box::new(std::io::empty())),
            Runner::Compose(_) => {
                let tar = ToolCommand::new("tar")
                    .args([
                        OsString::from("-C"),
                        dir.into(),
                        "-cf".into(),
                        "-".into(),
                        ".".into(),
                    ])
                    .reader()
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                Ok(Box::new(tar))
            }
        }
    }

    /// One column of a query, a value a line.
    pub(crate) fn list(&self, conn: &Connection, sql: &str) -> Result<Vec<String>, PgError> {
        Ok(self
            .query(conn, sql)?
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }

    /// The server's roles.
    pub(crate) fn roles(&self, conn: &Connection) -> Result<BTreeSet<String>, PgError> {
        Ok(self
            .list(conn, "SELECT rolname FROM pg_roles")?
            .into_iter()
            .collect())
    }

    /// Whether the connecting user is a superuser.
    pub(crate) fn is_superuser(&self, conn: &Connection) -> Result<bool, PgError> {
        Ok(self.query(
            conn,
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
        )? == "t")
    }

    /// Checks that this client can dump a server of version `server`.
    pub(crate) fn check_dump_compat(&self, server: &PgVersion) -> Result<(), PgError> {
        if self.version.major < server.major {
            return Err(PgError::ClientTooOld {
                tool: "pg_dump".into(),
                client: self.version.clone(),
                server: server.clone(),
            });
        }
        Ok(())
    }
}

/// The properties of database `name` (`None`: there is none), as a backup
/// records them and a restore gives them back.
pub(crate) fn database_props(
    client: &Client,
    conn: &Connection,
    server: &PgVersion,
    name: &str,
) -> anyhow::Result<Option<DatabaseProps>> {
    let v = server.major;
    let provider = if v >= 15 {
        "CASE d.datlocprovider WHEN 'c' THEN 'libc' WHEN 'i' THEN 'icu' WHEN 'b' THEN 'builtin' END"
    } else {
        "NULL"
    };
    let provider_locale = match v {
        ..=14 => "NULL",
        15 | 16 => "d.daticulocale",
        _ => "d.datlocale",
    };
    let rules = if v >= 16 { "d.daticurules" } else { "NULL" };
    let sql = format!(
        "SELECT json_build_object(
           'owner', pg_get_userbyid(d.datdba),
           'connection_limit', d.datconnlimit,
           'acl', CASE WHEN d.datacl IS NULL THEN NULL ELSE coalesce((
               SELECT json_agg(json_build_object(
                   'grantee', CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
                   'privilege', a.privilege_type, 'grantable', a.is_grantable) ORDER BY a.grantee, a.privilege_type)
               FROM aclexplode(d.datacl) a), '[]'::json) END,
           'comment', shobj_description(d.oid, 'pg_database'),
           'settings', coalesce((
               SELECT json_agg(json_build_object('role', r.rolname, 'config', s.setconfig) ORDER BY r.rolname NULLS FIRST)
               FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole WHERE s.setdatabase = d.oid), '[]'::json),
           'encoding', pg_encoding_to_char(d.encoding), 'collate', d.datcollate, 'ctype', d.datctype,
           'locale_provider', {provider}, 'provider_locale', {provider_locale}, 'icu_rules', {rules})
         FROM pg_database d WHERE d.datname = :'db';"
    );
    let out = client.script(conn, &sql, &[("db", name)])?;
    if out.is_empty() {
        return Ok(None);
    }
    serde_json::from_str(&out)
        .map(Some)
        .map_err(|e| anyhow::format_err!("the properties of database {name} did not read: {e}"))
}

/// Which server a backup came from: its system identifier (unique per
/// cluster) and where it was reached, so backups of two servers that share
/// a bucket are never taken for each other's.
pub(crate) fn source_identity(client: &Client, conn: &Connection) -> anyhow::Result<SourceId> {
    let id = client.query(conn, "SELECT system_identifier FROM pg_control_system()")?;
    Ok(SourceId {
        system_identifier: id,
        host: conn.server_label(),
    })
}

/// Whether a dump made by pg_dump `dump` loads into `server`: a newer
/// pg_dump writes settings an older server rejects (`transaction_timeout`).
pub(crate) fn check_load_compat(
    dump: Option<&PgVersion>,
    server: &PgVersion,
) -> anyhow::Result<()> {
    match dump {
        Some(d) if d.major > server.major => anyhow::bail!(
            "this dump was made by pg_dump {d} and cannot load into PostgreSQL {server} (a newer pg_dump writes settings an older server rejects): restore into a PostgreSQL {} server or newer",
            d.major
        ),
        _ => Ok(()),
    }
}

/// psql's arguments for a script on stdin: unaligned, tuples only, quiet,
/// stopping at the first error, with `vars` as psql variables.
fn script_args(vars: &[(&str, &str)]) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["-X", "-A", "-t", "-q", "-w", "-v", "ON_ERROR_STOP=1"]
        .map(OsString::from)
        .to_vec();
    for (k, v) in vars {
        args.push("-v".into());
        args.push(format!("{k}={v}").into());
    }
    args
}

/// The `application_name` of one dump's sessions on the compose route:
/// `cargo-xtask` as every session of the tool, then this process, the
/// dump's number in it and the clock's nanoseconds, so that exactly those
/// sessions can be ended.
fn dump_session_name() -> String {
    static DUMPS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = DUMPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Pids repeat across containers that share a server: the clock too.
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("cargo-xtask dump {}.{n}.{clock:08x}", std::process::id())
}

/// A connected route: the tools, the connection as they see it, and the server.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) client: Client,
    pub(crate) conn: Connection,
    pub(crate) server: PgVersion,
}

/// What the session is for: a dump needs a `pg_dump` at least as new as the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    Dump,
    Load,
}

/// The tools and the connection as they see it, before connecting.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub(crate) client: Client,
    pub(crate) conn: Connection,
}

/// Picks the route (`--via`) and finds the tools; connects nowhere yet.
/// `auto` takes the compose service only for a server on this machine at
/// the port the service publishes (or no port given): a tunnel to another
/// server on a local port is not the service.
pub(crate) fn route(settings: &Settings) -> anyhow::Result<Route> {
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
            Ok(svc) => {
                let port = settings.connection.port;
                let published = svc.published_port(5432);
                if settings.origin("port") == Origin::Default || published == Some(port) {
                    Some(svc)
                } else {
                    ui::detail(format!(
                        "port {port} is not the one the compose service '{}' publishes ({}): using the host's client tools",
                        svc.name,
                        published.map_or("none".into(), |p| p.to_string())
                    ));
                    None
                }
            }
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
            conn: in_service(&settings.connection, &svc, |name| settings.origin(name)),
            client: Client::in_service(svc)?,
        },
        None => Route {
            conn: settings.connection.clone(),
            client: Client::find(None)?,
        },
    })
}

/// The connection as the tools inside `svc` see it: user, database and
/// password nobody gave (`origin` is [`Origin::Default`]) come from the
/// service's own environment, as the official image reads it.
fn in_service(conn: &Connection, svc: &Service, origin: impl Fn(&str) -> Origin) -> Connection {
    let mut conn = conn.clone();
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

impl Route {
    /// Connects once (the preflight of every database task). On the host a
    /// dump needs a `pg_dump` at least as new as the server: a newer installed
    /// one is taken when there is one.
    pub(crate) fn connect(self, purpose: Purpose) -> anyhow::Result<Session> {
        let Route { client, conn } = self;
        let server = client.server_version(&conn)?;
        let client = match client.runner {
            Runner::Host { .. }
                if purpose == Purpose::Dump && client.version.major < server.major =>
            {
                Client::find(Some(server.major))?
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

    /// The same route to the server's maintenance database.
    pub(crate) fn maintenance(self) -> Route {
        Route {
            conn: self.conn.maintenance(),
            ..self
        }
    }
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

/// The directory of the programs Debian's `pg_wrapper` runs for `pg_dump`
/// on PATH, when that is what PATH has: the installed directory whose
/// pg_dump reports the same version. pg_wrapper is a Perl script that
/// costs about 70 ms a call before the program starts, and a restore runs
/// psql a dozen times; one directory also keeps psql and pg_restore at the
/// version whose abilities were judged from pg_dump's.
fn unwrapped(on_path: &PgVersion) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join("pg_dump"))
        .find(|p| p.is_file())?;
    let real = std::fs::canonicalize(found).ok()?;
    if real.file_name()? != "pg_wrapper" {
        return None;
    }
    installed_bindirs()
        .into_iter()
        .find(|dir| tool_version(&dir.join("pg_dump")).is_some_and(|v| v.text == on_path.text))
}

fn tool_version(tool: &Path) -> Option<PgVersion> {
    let out = ToolCommand::new(tool)
        .args(["--version"])
        .output(b"")
        .ok()?;
    if !out.status.success() {
        return None;
    }
    PgVersion::parse(&String::from_utf8_lossy(&out.stdout))
}

/// Options of a plain-format dump.
#[derive(Debug, Clone, Default)]
pub(crate) struct DumpOptions {
    pub(crate) schema_only: bool,
    /// The server's globals instead of a database: `Some(with role passwords)`.
    pub(crate) globals: Option<bool>,
    /// pg_dump's custom archive compressed so, instead of plain SQL (with
    /// `directory`: its directory format compressed so).
    pub(crate) archive: Option<Compression>,
    /// pg_dump's directory format written here by `jobs` workers (nothing
    /// on stdout): `pg_dump --format=directory --jobs --file`.
    pub(crate) directory: Option<(PathBuf, usize)>,
    /// Dump at this exported snapshot (`pg_dump --snapshot`).
    pub(crate) snapshot: Option<String>,
}

/// The git commit of the workspace, if it is a git checkout.
pub(crate) fn git_commit(root: &Path) -> Option<String> {
    let out = ToolCommand::new("git")
        .args([
            OsString::from("-C"),
            root.into(),
            "rev-parse".into(),
            "HEAD".into(),
        ])
        .output(b"")
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && s.len() >= 40).then_some(s)
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
            password: Some(Secret::new("hunter2")),
            sslmode: None,
            service: None,
            connect_timeout: 10,
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
                "psql:<stdin>:5: ERROR:  role \"reader\" does not exist",
                "psql failed: psql:<stdin>:5: ERROR:  role \"reader\" does not exist",
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
    fn a_failed_start_names_the_program_that_failed() {
        let host = Client {
            runner: Runner::Host { bindir: None },
            version: PgVersion::parse("15.18").unwrap(),
        };
        let missing = || crate::services::process::SpawnError {
            program: "docker".into(),
            error: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(
            host.spawn_error("psql", missing()).to_string(),
            "psql was not found on PATH: install the PostgreSQL client tools (Debian: apt-get install postgresql-client)"
        );
        let compose = crate::services::compose::tests::service();
        let routed = Client {
            runner: Runner::Compose(Box::new(compose)),
            version: PgVersion::parse("17.6").unwrap(),
        };
        let msg = routed.spawn_error("psql", missing()).to_string();
        assert!(
            msg.starts_with("docker was not found on PATH: it runs psql in the compose service"),
            "{msg}"
        );
    }

    #[test]
    fn parallel_restores_from_before_may_2023_are_not_trusted_to_keep_rows() {
        let client = |v: &str| Client {
            runner: Runner::Host { bindir: None },
            version: PgVersion::parse(v).unwrap(),
        };
        let keeps = |v: &str| client(v).parallel_restore_keeps_loaded_rows();
        for old in ["15.2", "14.7", "13.10", "12.14", "11.19", "10.23"] {
            assert!(!keeps(old), "{old}");
        }
        for fixed in [
            "15.3", "15.18", "14.8", "13.11", "12.15", "11.20", "16.0", "17.6",
        ] {
            assert!(keeps(fixed), "{fixed}");
        }
        // The same table of releases: psql's \restrict (August 2025).
        let restricts = |v: &str| client(v).has_restrict();
        for old in ["12.22", "13.21", "14.18", "15.13", "16.9", "17.5"] {
            assert!(!restricts(old), "{old}");
        }
        for fixed in ["13.22", "14.19", "15.14", "16.10", "17.6", "18.0"] {
            assert!(restricts(fixed), "{fixed}");
        }
    }

    #[test]
    fn too_old_client_names_both_versions_and_the_remedy() {
        let client = Client {
            runner: Runner::Host { bindir: None },
            version: PgVersion::parse("15.18").unwrap(),
        };
        let server = PgVersion::parse("17.12 (Debian)").unwrap();
        let msg = client.check_dump_compat(&server).unwrap_err().to_string();
        assert_eq!(
            msg,
            "pg_dump 15.18 is older than the server (17.12) and cannot dump it: run it inside the compose service with --via compose, or install the PostgreSQL 17 client tools"
        );
        assert!(
            client
                .check_dump_compat(&PgVersion::parse("15.2").unwrap())
                .is_ok()
        );
        let v = |s| PgVersion::parse(s).unwrap();
        assert!(check_load_compat(Some(&v("15.8")), &v("17.2")).is_ok());
        assert!(check_load_compat(None, &v("15.2")).is_ok());
        let err = check_load_compat(Some(&v("17.6")), &v("15.18"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "this dump was made by pg_dump 17.6 and cannot load into PostgreSQL 15.18 (a newer pg_dump writes settings an older server rejects): restore into a PostgreSQL 17 server or newer"
        );
    }
}
