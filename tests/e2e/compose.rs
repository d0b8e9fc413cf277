//! The workspace's `docker-compose.yml`: its `db` service starts from the
//! configured image, becomes healthy, and is published on loopback only.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

use e2e::{PASSWORD, image_repo};

struct ComposeProject {
    name: String,
    file: PathBuf,
    env_file: tempfile::NamedTempFile,
    port: u16,
}

impl ComposeProject {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker");
        c.args(["compose", "--project-name", &self.name, "--file"])
            .arg(&self.file)
            .arg("--env-file")
            .arg(self.env_file.path())
            .args(args)
            .env("POSTGRES_IMAGE", format!("{}:17", image_repo()))
            .env("POSTGRES_PORT", self.port.to_string())
            .env("POSTGRES_USER", "app")
            .env("POSTGRES_DB", "app")
            .env("POSTGRES_PASSWORD", PASSWORD);
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.command(args).output().expect("docker compose runs");
        assert!(
            out.status.success(),
            "docker compose {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        let _ = self
            .command(&["down", "--volumes", "--timeout", "5"])
            .output();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn compose_db_service_is_healthy_and_loopback_only() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let project = ComposeProject {
        name: format!("xtask-e2e-{}", std::process::id()),
        file: root.join("docker-compose.yml"),
        env_file: tempfile::NamedTempFile::new().unwrap(),
        port: free_port(),
    };
    let up = project
        .command(&["up", "--detach", "--wait", "--wait-timeout", "120", "db"])
        .output()
        .unwrap();
    assert!(
        up.status.success(),
        "docker compose up failed (is the image {}:17 built? `bash scripts/build-pg-image.sh 17`): {}",
        image_repo(),
        String::from_utf8_lossy(&up.stderr)
    );
    assert_eq!(
        project.run(&["port", "db", "5432"]),
        format!("127.0.0.1:{}", project.port)
    );

    // Inside the service (no TTY) and from the host, it is the same server.
    let inside = project.run(&[
        "exec",
        "-T",
        "db",
        "psql",
        "-U",
        "app",
        "-d",
        "app",
        "-Atc",
        "SHOW server_version_num",
    ]);
    assert!(inside.starts_with("17"), "{inside}");
    let host = Command::new("psql")
        .args([
            "-X",
            "-Atc",
            "SELECT current_user || '@' || current_database()",
        ])
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", project.port.to_string())
        .env("PGUSER", "app")
        .env("PGDATABASE", "app")
        .env("PGPASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&host.stdout).trim(),
        "app@app",
        "{}",
        String::from_utf8_lossy(&host.stderr)
    );
}
