//! The workspace's compose project, asked through compose itself: which
//! compose (v2 `docker compose` first, v1 `docker-compose` second), which
//! services the project has, whether one is running and with what
//! environment. Compose finds the project the way it always does (the
//! compose file in the workspace root, `COMPOSE_FILE`, `COMPOSE_PROJECT_NAME`,
//! the `.env` file): every command runs in the workspace root with this
//! process's environment, and none of compose's rules is re-implemented here.
//!
//! Parsing and argv building are pure functions below the effects, tested
//! without Docker.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::services::process::{Finished, ToolCommand};

/// Failures callers branch on (`auto` falls back to the host on some); each
/// prints as one line that says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ComposeError {
    /// Neither `docker compose` nor `docker-compose` runs.
    NotInstalled,
    NoComposeFile {
        root: PathBuf,
    },
    UnknownService {
        service: String,
        known: Vec<String>,
    },
    NotRunning {
        service: String,
    },
    DockerUnreachable {
        detail: String,
    },
    /// The container exited, died or is unhealthy.
    DidNotStart {
        service: String,
        state: String,
    },
    /// Still starting when the time was up.
    NotHealthyYet {
        service: String,
        secs: u64,
        state: String,
    },
    Failed {
        what: String,
        detail: String,
    },
}

impl fmt::Display for ComposeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ComposeError::NotInstalled => write!(
                f,
                "Docker Compose was not found (neither `docker compose` nor `docker-compose` runs): install it, or use --via host"
            ),
            ComposeError::NoComposeFile { root } => write!(
                f,
                "no compose file in {} (docker-compose.yml, compose.yaml, or COMPOSE_FILE): add one, or use --via host",
                root.display()
            ),
            ComposeError::UnknownService { service, known } => write!(
                f,
                "the compose project has no service '{service}' (it has: {}): set BACKUP_COMPOSE_SERVICE to the database's service",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
            ComposeError::NotRunning { service } => write!(
                f,
                "the compose service '{service}' is not running: start it with `cargo xtask db-up`, or use --via host"
            ),
            ComposeError::DockerUnreachable { detail } => write!(
                f,
                "Docker is not reachable ({detail}): start the Docker engine, or use --via host"
            ),
            ComposeError::DidNotStart { service, state } => write!(
                f,
                "the compose service '{service}' did not start ({state}): see `docker compose logs {service}`"
            ),
            ComposeError::NotHealthyYet {
                service,
                secs,
                state,
            } => write!(
                f,
                "the compose service '{service}' is not healthy after {secs} s ({state}): see `docker compose logs {service}`"
            ),
            ComposeError::Failed { what, detail } => write!(f, "{what} failed: {detail}"),
        }
    }
}

impl std::error::Error for ComposeError {}

/// One installed compose: the program and the arguments before a compose command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Compose {
    program: &'static str,
    prefix: &'static [&'static str],
    /// `2.26.1`, `1.29.2`.
    pub(crate) version: String,
    /// The workspace root: compose runs there.
    pub(crate) dir: PathBuf,
    /// Run compose in a process group of its own, so Ctrl-C reaches only
    /// the xtask (which decides what to stop), not a step half-way.
    pub(crate) detached: bool,
}

impl Compose {
    /// Compose v2 (the Docker CLI plugin) first, then v1's `docker-compose`.
    /// Without a compose file to find, [`ComposeError::NoComposeFile`]
    /// before compose is run at all (asking it costs about 0.35 s).
    pub(crate) fn detect(root: &Path) -> Result<Compose, ComposeError> {
        let env_names_one = ["COMPOSE_FILE", "COMPOSE_ENV_FILES"]
            .iter()
            .any(|k| std::env::var_os(k).is_some());
        if !may_have_project(root, env_names_one) {
            return Err(ComposeError::NoComposeFile {
                root: root.to_path_buf(),
            });
        }
        let candidates: [(&'static str, &'static [&'static str]); 2] =
            [("docker", &["compose"]), ("docker-compose", &[])];
        for (program, prefix) in candidates {
            let compose = Compose {
                program,
                prefix,
                version: String::new(),
                dir: root.to_path_buf(),
                detached: false,
            };
            if let Ok(out) = compose.output(&["version", "--short"])
                && out.status.success()
            {
                let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
                return Ok(Compose {
                    version: version.trim_start_matches('v').to_string(),
                    ..compose
                });
            }
        }
        Err(ComposeError::NotInstalled)
    }

    /// `docker compose` or `docker-compose`, for messages.
    pub(crate) fn name(&self) -> String {
        std::iter::once(self.program)
            .chain(self.prefix.iter().copied())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A compose command, run in the workspace root.
    pub(crate) fn command(&self, args: &[&str]) -> ToolCommand {
        let mut c = ToolCommand::new(self.program)
            .args(self.prefix.iter().copied())
            .args(args.iter().copied());
        c.dir = Some(self.dir.clone());
        c.new_group = self.detached;
        c
    }

    fn output(&self, args: &[&str]) -> std::io::Result<Finished> {
        self.command(args).output(b"").map_err(|e| e.error)
    }

    /// The project's services (`config --services`).
    pub(crate) fn services(&self) -> Result<Vec<String>, ComposeError> {
        let out = self.run("reading the compose project", &["config", "--services"])?;
        Ok(out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }

    /// The running container of `service` with its environment.
    pub(crate) fn service(&self, service: &str) -> Result<Service, ComposeError> {
        self.known(service)?;
        // v2 lists running containers only; v1 stopped ones too, hence the check of State.Running.
        let ids = self.run("listing the compose service", &["ps", "-q", service])?;
        for id in ids.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let Some(text) = inspect(id, "{{.State.Running}} {{json .Config.Env}}")? else {
                continue;
            };
            if let Some(env) = text.strip_prefix("true ") {
                return Ok(Service {
                    compose: self.clone(),
                    name: service.to_string(),
                    container: id.to_string(),
                    env: parse_env_json(env),
                });
            }
        }
        Err(ComposeError::NotRunning {
            service: service.to_string(),
        })
    }

    /// Starts `service` (and what it depends on) in the background.
    pub(crate) fn up(&self, service: &str, quiet: bool) -> Result<(), ComposeError> {
        self.known(service)?;
        let stdout = if quiet {
            Stdio::null()
        } else {
            Stdio::inherit()
        };
        let mut child = self
            .command(&["up", "--detach", service])
            .spawn(Stdio::null(), stdout)
            .map_err(|_| ComposeError::NotInstalled)?;
        let stderr = crate::services::process::drain(child.stderr.take().expect("piped"));
        let status = child.wait().map_err(|_| ComposeError::NotInstalled)?;
        let stderr = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
        if !quiet {
            eprint!("{stderr}");
        }
        if status.success() {
            Ok(())
        } else {
            Err(classify("starting the service", &stderr, &self.dir))
        }
    }

    /// Stops `service`; its container and volumes stay.
    pub(crate) fn stop(&self, service: &str) -> Result<(), ComposeError> {
        self.known(service)?;
        self.run("stopping the service", &["stop", service])
            .map(drop)
    }

    /// Restarts `service`'s container (a setting that needs a server restart).
    pub(crate) fn restart(&self, service: &str) -> Result<(), ComposeError> {
        self.known(service)?;
        self.run("restarting the service", &["restart", service])
            .map(drop)
    }

    /// Waits until `service` is running and healthy (or running, without a
    /// healthcheck); one line saying what to look at when it does not come up.
    pub(crate) fn wait_healthy(
        &self,
        service: &str,
        timeout: Duration,
    ) -> Result<(), ComposeError> {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.state(service)?.unwrap_or_default();
            match state.as_str() {
                "running healthy" | "running" => return Ok(()),
                s if s.starts_with("exited")
                    || s.starts_with("dead")
                    || s.contains("unhealthy") =>
                {
                    return Err(ComposeError::DidNotStart {
                        service: service.to_string(),
                        state: s.to_string(),
                    });
                }
                s if Instant::now() > deadline => {
                    return Err(ComposeError::NotHealthyYet {
                        service: service.to_string(),
                        secs: timeout.as_secs(),
                        state: if s.is_empty() { "no container" } else { s }.to_string(),
                    });
                }
                _ => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }

    /// The state of the service's container: `running healthy`, `running`
    /// (no healthcheck), `running starting`, `exited`, or `None` without a container.
    pub(crate) fn state(&self, service: &str) -> Result<Option<String>, ComposeError> {
        let ids = self.run("listing the compose service", &["ps", "-a", "-q", service])?;
        let Some(id) = ids.lines().map(str::trim).find(|l| !l.is_empty()) else {
            return Ok(None);
        };
        inspect(
            id,
            "{{.State.Status}}{{if .State.Health}} {{.State.Health.Status}}{{end}}",
        )
    }

    /// `127.0.0.1:5432`: where the service's port is published on this machine.
    pub(crate) fn published(&self, service: &str, port: u16) -> Option<String> {
        self.run("", &["port", service, &port.to_string()])
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    fn known(&self, service: &str) -> Result<(), ComposeError> {
        let services = self.services()?;
        if services.iter().any(|s| s == service) {
            Ok(())
        } else {
            Err(ComposeError::UnknownService {
                service: service.to_string(),
                known: services,
            })
        }
    }

    /// Runs a compose command that must succeed; returns its stdout.
    fn run(&self, what: &str, args: &[&str]) -> Result<String, ComposeError> {
        let out = self.output(args).map_err(|_| ComposeError::NotInstalled)?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        Err(classify(what, &out.stderr, &self.dir))
    }
}

/// `docker inspect --format FORMAT id`: `None` when there is no such container.
fn inspect(id: &str, format: &str) -> Result<Option<String>, ComposeError> {
    let mut command = ToolCommand::new("docker").args(["inspect", "--format", format, id]);
    // Not a step anyone needs to stop: no Ctrl-C from the terminal.
    command.new_group = true;
    let out = command
        .output(b"")
        .map_err(|e| ComposeError::DockerUnreachable {
            detail: e.to_string(),
        })?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()))
}

/// A running compose service.
#[derive(Clone)]
pub(crate) struct Service {
    pub(crate) compose: Compose,
    pub(crate) name: String,
    pub(crate) container: String,
    /// The container's environment (`POSTGRES_USER`, ...). May hold secrets:
    /// never printed.
    env: BTreeMap<String, String>,
}

/// The container's environment holds secrets: only its names are shown.
impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("container", &self.container)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Service {
    /// The host port the service publishes for `port` (`compose port`), if any.
    pub(crate) fn published_port(&self, port: u16) -> Option<u16> {
        self.compose
            .published(&self.name, port)?
            .rsplit(':')
            .next()?
            .trim()
            .parse()
            .ok()
    }

    pub(crate) fn env(&self, key: &str) -> Option<&str> {
        self.env
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The argv (after the program) that runs `tool args` inside the service.
    /// `forward` names variables passed from this process's environment
    /// (`-e NAME` without a value: secrets never reach argv).
    pub(crate) fn exec_args(
        &self,
        tool: &str,
        args: &[OsString],
        forward: &[&str],
        tty: bool,
    ) -> Vec<OsString> {
        exec_args(self.compose.prefix, &self.name, tool, args, forward, tty)
    }

    pub(crate) fn program(&self) -> &'static str {
        self.compose.program
    }
}

/// Pure: `compose exec [-T] -e A -e B service tool args...`.
pub(crate) fn exec_args(
    prefix: &[&str],
    service: &str,
    tool: &str,
    args: &[OsString],
    forward: &[&str],
    tty: bool,
) -> Vec<OsString> {
    let mut argv: Vec<OsString> = prefix.iter().map(OsString::from).collect();
    argv.push("exec".into());
    if !tty {
        // Never a TTY for streams: a TTY rewrites line endings and mangles binary data.
        argv.push("-T".into());
    }
    for name in forward {
        argv.push("-e".into());
        argv.push(name.into());
    }
    argv.push(service.into());
    argv.push(tool.into());
    argv.extend(args.iter().cloned());
    argv
}

/// Pure: `["A=1","B=x=y"]` (docker inspect's `.Config.Env` as JSON) into a map.
pub(crate) fn parse_env_json(json: &str) -> BTreeMap<String, String> {
    serde_json::from_str::<Vec<String>>(json)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// Whether compose run in `root` could find a project: `env_names_one`
/// (`COMPOSE_FILE` or `COMPOSE_ENV_FILES` set in the environment),
/// `COMPOSE_FILE` in `root`'s `.env`, or a compose file in `root` or a
/// directory above it (as written, and with symbolic links resolved),
/// where compose looks. In doubt (a `.env` that does not parse), yes.
fn may_have_project(root: &Path, env_names_one: bool) -> bool {
    const NAMES: [&str; 4] = [
        "compose.yaml",
        "compose.yml",
        "docker-compose.yaml",
        "docker-compose.yml",
    ];
    let written = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
    let in_dotenv = || match std::fs::read_to_string(written.join(".env")) {
        Ok(text) => crate::core::config::parse_dotenv(&text)
            .map_or(true, |vars| vars.contains_key("COMPOSE_FILE")),
        Err(_) => false,
    };
    let above = |dir: &Path| {
        dir.ancestors()
            .any(|d| NAMES.iter().any(|name| d.join(name).exists()))
    };
    env_names_one
        || in_dotenv()
        || above(&written)
        || std::fs::canonicalize(&written).is_ok_and(|real| above(&real))
}

/// Pure: a compose failure's stderr into one line.
pub(crate) fn classify(what: &str, stderr: &str, root: &Path) -> ComposeError {
    let has = |needle: &str| stderr.contains(needle);
    if has("no configuration file provided")
        || has("Can't find a suitable configuration file")
        || has("can't find a suitable configuration file")
    {
        ComposeError::NoComposeFile {
            root: root.to_path_buf(),
        }
    } else if has("Cannot connect to the Docker daemon")
        || has("Couldn't connect to Docker daemon")
        || has("permission denied while trying to connect")
    {
        let detail = stderr
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("no answer")
            .trim_end_matches('.')
            .to_string();
        ComposeError::DockerUnreachable { detail }
    } else {
        let detail = stderr
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("exited with an error and no message")
            .to_string();
        ComposeError::Failed {
            what: what.to_string(),
            detail,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn service() -> Service {
        Service {
            compose: Compose {
                program: "docker",
                prefix: &["compose"],
                version: "2".into(),
                dir: "/w".into(),
                detached: false,
            },
            name: "db".into(),
            container: "abc".into(),
            env: parse_env_json(r#"["POSTGRES_PASSWORD=hunter2"]"#),
        }
    }

    #[test]
    fn exec_never_puts_values_in_argv() {
        let argv = exec_args(
            &["compose"],
            "db",
            "pg_dump",
            &["--format=plain".into()],
            &["PGUSER", "PGPASSWORD"],
            false,
        );
        let argv: Vec<_> = argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            argv,
            [
                "compose",
                "exec",
                "-T",
                "-e",
                "PGUSER",
                "-e",
                "PGPASSWORD",
                "db",
                "pg_dump",
                "--format=plain"
            ]
        );
        let tty = exec_args(&[], "db", "psql", &[], &[], true);
        assert_eq!(tty, ["exec", "db", "psql"].map(OsString::from));
    }

    #[test]
    fn debug_hides_the_containers_environment() {
        let shown = format!("{:?}", service());
        assert!(
            shown.contains("POSTGRES_PASSWORD") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn container_environment() {
        let env = parse_env_json(
            r#"["POSTGRES_USER=app","POSTGRES_PASSWORD=a=b","PATH=/usr/bin","EMPTY="]"#,
        );
        assert_eq!(env["POSTGRES_USER"], "app");
        assert_eq!(env["POSTGRES_PASSWORD"], "a=b");
        assert_eq!(env["EMPTY"], "");
        assert!(parse_env_json("not json").is_empty());
    }

    #[test]
    fn compose_is_asked_only_where_it_could_find_a_project() {
        // Under /tmp, not TMPDIR: a compose file above TMPDIR would answer.
        let tmp = tempfile::tempdir_in("/tmp").unwrap();
        let root = tmp.path().join("app/sub");
        std::fs::create_dir_all(&root).unwrap();
        assert!(!may_have_project(&root, false));
        assert!(may_have_project(&root, true), "COMPOSE_FILE names one");
        std::fs::write(root.join(".env"), "A=1\nCOMPOSE_FILE=ops/db.yml\n").unwrap();
        assert!(
            may_have_project(&root, false),
            "the project's .env names one"
        );
        std::fs::write(root.join(".env"), "A=1\nexport  COMPOSE_FILE=x.yml\n").unwrap();
        assert!(may_have_project(&root, false));
        std::fs::write(root.join(".env"), "A=1\n").unwrap();
        assert!(!may_have_project(&root, false));
        // Through a symbolic link: compose sees the real directory's parents.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&root, &link).unwrap();
        assert!(!may_have_project(&link, false));
        // Compose looks in the directories above too.
        std::fs::write(tmp.path().join("app/compose.yaml"), "services: {}\n").unwrap();
        assert!(may_have_project(&root, false));
        assert!(may_have_project(&link, false));
    }

    #[test]
    fn failures_are_one_line() {
        let root = Path::new("/w");
        assert_eq!(
            classify("x", "no configuration file provided: not found\n", root),
            ComposeError::NoComposeFile { root: root.into() }
        );
        let e = classify(
            "x",
            "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?\n",
            root,
        );
        assert_eq!(
            e.to_string(),
            "Docker is not reachable (Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?): start the Docker engine, or use --via host"
        );
        let e = ComposeError::UnknownService {
            service: "postgres".into(),
            known: vec!["db".into(), "app".into()],
        };
        assert_eq!(
            e.to_string(),
            "the compose project has no service 'postgres' (it has: db, app): set BACKUP_COMPOSE_SERVICE to the database's service"
        );
    }
}
