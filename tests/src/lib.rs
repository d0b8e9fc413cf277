//! Test harness: a fresh, real PostgreSQL server per test, in a container
//! started by testcontainers, and a way to run the real `cargo xtask` binary
//! against it in a hermetic environment.
//!
//! Images: `XTASK_TEST_PG_IMAGE` names the image repository (default the
//! official `postgres`, so the suite runs unchanged wherever a registry is
//! reachable); the tag is the server's major version, 15 or 17: the suite
//! runs every database test against both. CI points it at `local/postgres`,
//! built offline by `scripts/build-pg-image.sh`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use testcontainers::bollard::models::PortBinding;
use testcontainers::core::wait::LogWaitStrategy;
use testcontainers::core::{ExecCommand, IntoContainerPort, WaitFor};
use testcontainers::runners::SyncRunner;
use testcontainers::{Container, GenericImage, ImageExt};

pub const PASSWORD: &str = "test-secret-pw";
pub const USER: &str = "app";
pub const DB: &str = "app";
const READY: &str = "database system is ready to accept connections";

/// The image repository under test.
pub fn image_repo() -> String {
    std::env::var("XTASK_TEST_PG_IMAGE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "postgres".into())
}

/// Fails the test with one line saying why Docker is unusable and what to do.
/// Never lets the suite pass silently without a database.
fn require_docker() {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    let result = CHECK.get_or_init(|| {
        let out = Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .output();
        match out {
            Err(e) => Err(format!("the docker CLI cannot be run ({e})")),
            Ok(o) if !o.status.success() => Err(format!(
                "no Docker engine answers ({})",
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .next()
                    .unwrap_or("docker info failed")
                    .trim()
            )),
            Ok(_) => Ok(()),
        }
    });
    if let Err(why) = result {
        panic!(
            "e2e tests need a Docker engine, and {why}: start one (`sudo bash scripts/docker-setup.sh`), or run only the unit tests with `cargo nextest run -p xtask`"
        );
    }
}

fn require_image(repo: &str, tag: &str) {
    let present = Command::new("docker")
        .args([
            "image",
            "inspect",
            "--format",
            "{{.Id}}",
            &format!("{repo}:{tag}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present && repo != "postgres" {
        panic!(
            "image {repo}:{tag} is missing: build it with `sudo bash scripts/build-pg-image.sh {tag}`"
        );
    }
}

/// A PostgreSQL server in a container, removed when dropped.
pub struct PgServer {
    pub container: Container<GenericImage>,
    pub major: u32,
    pub host: String,
    pub port: u16,
}

impl PgServer {
    pub fn start(major: u32) -> PgServer {
        require_docker();
        let repo = image_repo();
        let tag = major.to_string();
        require_image(&repo, &tag);
        let container = GenericImage::new(repo.clone(), tag.clone())
            .with_exposed_port(5432.tcp())
            // Both the official image and ours initialise through a temporary
            // server first, so the ready line appears twice.
            .with_wait_for(WaitFor::log(
                LogWaitStrategy::stdout_or_stderr(READY).with_times(2),
            ))
            .with_env_var("POSTGRES_PASSWORD", PASSWORD)
            .with_env_var("POSTGRES_USER", USER)
            .with_env_var("POSTGRES_DB", DB)
            .with_startup_timeout(Duration::from_secs(120))
            // Publish on loopback only, on a port Docker picks.
            .with_host_config_modifier(|hc| {
                hc.publish_all_ports = Some(false);
                let binding = PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(String::new()),
                };
                hc.port_bindings = Some([("5432/tcp".to_string(), Some(vec![binding]))].into());
            })
            .start()
            .unwrap_or_else(|e| panic!("cannot start {repo}:{tag}: {e}"));
        let port = container
            .get_host_port_ipv4(5432.tcp())
            .expect("the port is published");
        let server = PgServer {
            container,
            major,
            host: "127.0.0.1".into(),
            port,
        };
        server.wait_until_connectable();
        server
    }

    /// The log line can come a moment before the socket accepts: retry for a while.
    fn wait_until_connectable(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.try_psql(DB, "SELECT 1") {
                Ok(_) => return,
                Err(e) if Instant::now() > deadline => {
                    panic!("PostgreSQL {} never accepted connections: {e}", self.major)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Runs SQL with the host's `psql` (any version talks to any server) and
    /// returns unaligned, tuples-only output.
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new("psql")
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .envs(self.libpq_env(db))
            .output()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql)
            .unwrap_or_else(|e| panic!("psql failed: {e}\nSQL: {sql}"))
    }

    /// Feeds a whole script to `psql` on stdin, stopping at the first error.
    pub fn psql_script(&self, db: &str, script: &[u8]) {
        let mut child = Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
            .envs(self.libpq_env(db))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("psql runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script)
            .expect("psql reads its script");
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "psql script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn create_db(&self, name: &str) {
        self.psql(DB, &format!("CREATE DATABASE \"{name}\""));
    }

    /// libpq settings for the host's client tools.
    pub fn libpq_env(&self, db: &str) -> Vec<(String, String)> {
        [
            ("PGHOST", self.host.clone()),
            ("PGPORT", self.port.to_string()),
            ("PGUSER", USER.into()),
            ("PGDATABASE", db.into()),
            ("PGPASSWORD", PASSWORD.into()),
            ("PGCLIENTENCODING", "UTF8".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Runs a command inside the container (its own client tools, same major
    /// as the server) and returns its stdout; panics on a non-zero exit.
    pub fn exec(&self, cmd: &[&str]) -> Vec<u8> {
        let mut res = self
            .container
            .exec(ExecCommand::new(cmd.iter().copied()))
            .expect("exec starts");
        let stdout = res.stdout_to_vec().expect("exec stdout");
        let stderr = res.stderr_to_vec().unwrap_or_default();
        let code = res.exit_code().expect("exec exit code");
        assert_eq!(
            code,
            Some(0),
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&stderr)
        );
        stdout
    }

    /// The whole content of a table, ordered, as text: for comparing databases.
    pub fn table_rows(&self, db: &str, table: &str) -> String {
        self.psql(
            db,
            &format!("SELECT t::text FROM {table} t ORDER BY t::text"),
        )
    }

    /// The settings of the `cargo xtask` environment that point at this server.
    pub fn xtask_env(&self, db: &str) -> BTreeMap<String, String> {
        [
            ("POSTGRES_HOST", self.host.clone()),
            ("POSTGRES_PORT", self.port.to_string()),
            ("POSTGRES_USER", USER.to_string()),
            ("POSTGRES_DB", db.to_string()),
            ("PGPASSWORD", PASSWORD.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// A hermetic run of the xtask: a workspace root of its own (no `.env` of the
/// developer's), none of the caller's database variables, plus `env`.
pub struct Xtask {
    /// The binary under test: the test crate's `CARGO_BIN_EXE_xtask-e2e`.
    pub bin: PathBuf,
    pub root: tempfile::TempDir,
}

impl Xtask {
    pub fn new(bin: impl Into<PathBuf>) -> Xtask {
        Xtask {
            bin: bin.into(),
            root: tempfile::tempdir().expect("a temporary workspace"),
        }
    }

    pub fn backup_dir(&self) -> PathBuf {
        self.root.path().join("backups")
    }

    pub fn command(&self, args: &[&str], env: &BTreeMap<String, String>) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args);
        self.hermetic(c, env)
    }

    /// Runs a shell script as a user would type it: `cargo xtask ...` is
    /// this binary; stops at the first failing command.
    pub fn shell(&self, script: &str, env: &BTreeMap<String, String>) -> Output {
        let mut c = Command::new("bash");
        c.args(["-euo", "pipefail", "-c"])
            .arg(format!(
                "cargo() {{ [ \"$1\" = xtask ] && shift; \"$XTASK_BIN\" \"$@\"; }}\n{script}"
            ))
            .env("XTASK_BIN", &self.bin);
        self.hermetic(c, env).output().expect("bash runs")
    }

    fn hermetic(&self, mut c: Command, env: &BTreeMap<String, String>) -> Command {
        c.current_dir(self.root.path());
        for var in [
            "DATABASE_URL",
            "PGPASSWORD",
            "POSTGRES_PASSWORD",
            "POSTGRES_HOST",
            "POSTGRES_PORT",
            "POSTGRES_DB",
            "POSTGRES_USER",
            "BACKUP_DIR",
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "PGDATABASE",
            "PGSERVICE",
            "CARGO_MANIFEST_DIR",
            "BACKUP_VIA",
            "BACKUP_COMPOSE_SERVICE",
            "COMPOSE_FILE",
            "COMPOSE_PROJECT_NAME",
            "BACKUP_S3_BUCKET",
            "BACKUP_S3_ENDPOINT",
            "BACKUP_S3_PREFIX",
            "BACKUP_S3_REGION",
            "BACKUP_S3_PATH_STYLE",
            "BACKUP_S3_PART_SIZE_MIB",
            "BACKUP_LOCAL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "BACKUP_MASK_SALT",
            "BACKUP_MASK_SALT_FILE",
            "BACKUP_DATABASES",
            "BACKUP_EXCLUDE_DATABASES",
            "BACKUP_GLOBALS_PASSWORDS",
            "BACKUP_CLUSTER",
        ] {
            c.env_remove(var);
        }
        c.env("XTASK_ROOT", self.root.path()).envs(env);
        c
    }

    /// Starts a run in the background with its output captured, for tests
    /// that act while it goes (a signal, a fault).
    pub fn spawn(&self, args: &[&str], env: &BTreeMap<String, String>) -> std::process::Child {
        self.command(args, env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the xtask binary starts")
    }

    pub fn run(&self, args: &[&str], env: &BTreeMap<String, String>) -> Output {
        self.command(args, env)
            .output()
            .expect("the xtask binary runs")
    }
}

/// Files in a directory (names only, sorted), ignoring subdirectories.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `sha256sum -c *.sha256` in `dir`, as a user checks a backup directory
/// without the tool: it must pass.
pub fn assert_sha256sum_passes(dir: &Path) {
    let check = Command::new("sh")
        .arg("-c")
        .arg("sha256sum -c *.sha256")
        .current_dir(dir)
        .output()
        .expect("sh runs");
    assert!(check.status.success(), "{}", show(&check));
}

/// `env` with the clock of the run moved `days` on (`XTASK_NOW`).
pub fn days_later(env: &BTreeMap<String, String>, days: i64) -> BTreeMap<String, String> {
    let mut later = env.clone();
    later.insert(
        "XTASK_NOW".into(),
        (time::OffsetDateTime::now_utc() + time::Duration::days(days))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap(),
    );
    later
}

/// stdout and stderr of a run, for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "status: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The major version of the host's `pg_dump`.
pub fn host_pg_dump_major() -> u32 {
    let out = Command::new("pg_dump")
        .arg("--version")
        .output()
        .expect("pg_dump on the host");
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .split_whitespace()
        .nth(2)
        .expect("pg_dump (PostgreSQL) N.M");
    version.split('.').next().unwrap().parse().unwrap()
}

/// A run's stdout as the one JSON object it must be.
pub fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {}", show(out)))
}

/// A real S3-compatible server (`s3s-fs`, installed by `.ci/run`) on
/// 127.0.0.1 with its own data directory, one bucket, and credentials;
/// killed on drop.
pub struct S3Server {
    child: Option<std::process::Child>,
    pub root: tempfile::TempDir,
    pub port: u16,
    pub bucket: String,
}

pub const S3_ACCESS_KEY: &str = "AKIAXTASKTEST";
pub const S3_SECRET_KEY: &str = "s3-test-secret-key";

impl S3Server {
    pub fn start() -> S3Server {
        let root = tempfile::tempdir().expect("a data directory");
        let bucket = "backups".to_string();
        std::fs::create_dir(root.path().join(&bucket)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = S3Server {
            child: None,
            root,
            port,
            bucket,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let bin = std::env::var("XTASK_TEST_S3_SERVER").unwrap_or_else(|_| "s3s-fs".into());
        let child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(self.root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("the S3 test server `{bin}` cannot run ({e}): install it with `cargo install --locked s3s-fs@0.14.1 --features binary` (bash .ci/run does)")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the S3 test server did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (SIGKILL), keeping its data.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The xtask settings for this server.
    pub fn env(&self) -> BTreeMap<String, String> {
        [
            ("BACKUP_S3_BUCKET", self.bucket.clone()),
            ("BACKUP_S3_ENDPOINT", self.endpoint()),
            ("BACKUP_S3_PREFIX", "team/app".to_string()),
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY.to_string()),
            ("BACKUP_S3_PART_SIZE_MIB", "5".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The objects under the prefix, as files in the server's data directory.
    pub fn objects(&self) -> Vec<String> {
        files_in(&self.root.path().join(&self.bucket).join("team/app"))
    }

    /// The objects under `dir/` beneath the prefix (a directory backup's files).
    pub fn objects_in(&self, dir: &str) -> Vec<String> {
        files_in(
            &self
                .root
                .path()
                .join(&self.bucket)
                .join("team/app")
                .join(dir),
        )
    }

    /// Multipart parts the server holds for uploads in progress.
    pub fn pending_parts(&self) -> usize {
        std::fs::read_dir(self.root.path())
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(".upload_id-"))
                    .count()
            })
            .unwrap_or(0)
    }
}

/// TLS in front of a server on 127.0.0.1, for clients in containers that
/// speak only HTTPS (pgBackRest to S3): `socat` (installed by `.ci/run`)
/// listens on the address the containers reach the host by
/// (`host.docker.internal`, Docker's default bridge gateway) with a
/// certificate made for that name; killed on drop.
pub struct TlsFront {
    child: std::process::Child,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl TlsFront {
    pub fn start(target_port: u16) -> TlsFront {
        let dir = tempfile::tempdir().expect("a directory for the certificate");
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=host.docker.internal"])
            .args(["-addext", "subjectAltName=DNS:host.docker.internal"])
            .arg("-keyout")
            .arg(dir.path().join("key.pem"))
            .arg("-out")
            .arg(dir.path().join("ca.pem"))
            .output()
            .expect("openssl runs");
        assert!(out.status.success(), "openssl: {}", show(&out));
        let gateway = Command::new("docker")
            .args(["network", "inspect", "bridge", "--format"])
            .arg("{{(index .IPAM.Config 0).Gateway}}")
            .output()
            .expect("docker runs");
        let gateway = String::from_utf8_lossy(&gateway.stdout).trim().to_string();
        let gateway = if gateway.is_empty() {
            "172.17.0.1".to_string()
        } else {
            gateway
        };
        let port = std::net::TcpListener::bind((gateway.as_str(), 0))
            .unwrap_or_else(|e| panic!("the bridge gateway {gateway} takes no listener: {e}"))
            .local_addr()
            .unwrap()
            .port();
        let listen = format!(
            "OPENSSL-LISTEN:{port},bind={gateway},reuseaddr,fork,verify=0,cert={},key={}",
            dir.path().join("ca.pem").display(),
            dir.path().join("key.pem").display()
        );
        let child = Command::new("socat")
            .arg(listen)
            .arg(format!("TCP:127.0.0.1:{target_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("socat cannot run ({e}): `apt-get install socat` (bash .ci/run does)")
            });
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((gateway.as_str(), port)).is_err() {
            assert!(Instant::now() < deadline, "socat did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        TlsFront { child, dir, port }
    }

    /// The certificate, which is its own CA.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The address a container of the compose service reaches it at.
    pub fn endpoint(&self) -> String {
        format!("https://host.docker.internal:{}", self.port)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An HTTP proxy in front of the S3 test server that can lose or change
/// the answer to chosen requests: the request reaches the server, and its
/// response is dropped (the connection closes, as when a network loses it)
/// or rewritten. One request per connection; stops with the value.
pub struct LossyProxy {
    pub port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The request lines it saw, in order.
    pub lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl LossyProxy {
    /// `fault(request_line, response)` may change the response, and says
    /// whether to lose it.
    pub fn start(
        upstream: u16,
        fault: impl Fn(&str, &mut Vec<u8>) -> bool + Send + Sync + 'static,
    ) -> LossyProxy {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let fault = std::sync::Arc::new(fault);
        let (stop2, lines2) = (stop.clone(), lines.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let Ok((mut client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let (fault, lines) = (fault.clone(), lines2.clone());
                std::thread::spawn(move || {
                    client.set_nonblocking(false).unwrap();
                    // The request: headers, then Content-Length bytes of body.
                    let mut req = Vec::new();
                    let mut buf = [0u8; 65536];
                    let head_end = loop {
                        let n = client.read(&mut buf).unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        req.extend_from_slice(&buf[..n]);
                        if let Some(i) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&req[..head_end]).into_owned();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    while req.len() < head_end + length {
                        let n = client.read(&mut buf).unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        req.extend_from_slice(&buf[..n]);
                    }
                    // One request per connection, both ways.
                    let head = head.replacen("\r\n", "\r\nConnection: close\r\n", 1);
                    let line = head.lines().next().unwrap_or("").to_string();
                    lines.lock().unwrap().push(line.clone());
                    let mut upstream =
                        std::net::TcpStream::connect(("127.0.0.1", upstream)).unwrap();
                    upstream.write_all(head.as_bytes()).unwrap();
                    upstream.write_all(&req[head_end..]).unwrap();
                    let mut response = Vec::new();
                    let _ = upstream.read_to_end(&mut response);
                    if !fault(&line, &mut response) {
                        let _ = client.write_all(&response);
                    }
                });
            }
        });
        LossyProxy { port, stop, lines }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
