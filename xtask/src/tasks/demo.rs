//! `cargo xtask demo`: the whole job on a throwaway server, with no setup:
//! start PostgreSQL, load a small sample database, back it up (verified),
//! list, verify, restore into a second database, compare, and remove
//! everything it started, also on failure and on Ctrl-C.
//!
//! The server is a temporary cluster of the host's own `initdb`/`pg_ctl`
//! when they are installed (same version as its `pg_dump`, so the host route
//! works by construction), else a container of `POSTGRES_IMAGE`.

use std::ffi::OsString;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, format_err};
use tempfile::TempDir;

use crate::core::config::Connection;
use crate::flags::Demo;
use crate::services::interrupt;
use crate::services::pg::{Client, Runner};
use crate::services::process::ToolCommand;
use crate::tasks::Context;
use crate::ui;

const SAMPLE: &str = "
CREATE TABLE customers (id bigserial PRIMARY KEY, email text UNIQUE NOT NULL, name text NOT NULL, joined date NOT NULL);
CREATE TABLE products (id serial PRIMARY KEY, title text NOT NULL, price numeric(10,2) NOT NULL CHECK (price >= 0), tags text[]);
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers, placed_at timestamptz NOT NULL,
                     note text, total numeric(12,2) NOT NULL DEFAULT 0);
CREATE TABLE order_items (order_id bigint REFERENCES orders ON DELETE CASCADE, product_id int REFERENCES products,
                          quantity int NOT NULL, PRIMARY KEY (order_id, product_id));
CREATE INDEX ON orders (placed_at);
CREATE FUNCTION order_total(o bigint) RETURNS numeric LANGUAGE sql STABLE AS
  $$ SELECT coalesce(sum(p.price * i.quantity), 0) FROM order_items i JOIN products p ON p.id = i.product_id WHERE i.order_id = o $$;
CREATE VIEW big_spenders AS SELECT c.email, sum(o.total) AS spent FROM customers c JOIN orders o ON o.customer_id = c.id
  GROUP BY c.email HAVING sum(o.total) > 500;
INSERT INTO customers (email, name, joined)
  SELECT 'customer' || g || '@example.com', 'Customer ' || g, DATE '2024-01-01' + g FROM generate_series(1, 500) g;
INSERT INTO products (title, price, tags)
  SELECT 'Product ' || g, (g * 3.75)::numeric(10,2), ARRAY['tag' || (g % 5)] FROM generate_series(1, 60) g;
INSERT INTO orders (customer_id, placed_at, note)
  SELECT 1 + g % 500, TIMESTAMPTZ '2026-01-01 00:00Z' + g * interval '37 minutes', CASE WHEN g % 7 = 0 THEN E'gift \\u00e9\\ttab' END
  FROM generate_series(1, 3000) g;
INSERT INTO order_items SELECT o, 1 + (o * k) % 60, 1 + k FROM generate_series(1, 3000) o, generate_series(1, 3) k
  ON CONFLICT DO NOTHING;
UPDATE orders SET total = order_total(id);
";

/// A server the demo started, stopped and removed on drop.
enum Server {
    Cluster {
        bindir: PathBuf,
        dir: TempDir,
        port: u16,
    },
    Container {
        id: String,
        port: u16,
    },
}

impl Server {
    fn port(&self) -> u16 {
        match self {
            Server::Cluster { port, .. } | Server::Container { port, .. } => *port,
        }
    }

    fn describe(&self) -> String {
        match self {
            Server::Cluster { bindir, port, .. } => format!(
                "a temporary cluster of {} on 127.0.0.1:{port}",
                bindir.display()
            ),
            Server::Container { id, port } => {
                format!("container {} on 127.0.0.1:{port}", &id[..12.min(id.len())])
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        match self {
            Server::Cluster { bindir, dir, .. } => {
                let data = dir.path().join("data");
                let _ = as_postgres(&bindir.join("pg_ctl"))
                    .args([OsString::from("-D"), data.into()])
                    .args(["-m", "immediate", "stop"])
                    .output(b"");
            }
            Server::Container { id, .. } => {
                let _ = ToolCommand::new("docker")
                    .args(["rm", "-f", id.as_str()])
                    .output(b"");
            }
        }
        ui::info("demo: the server and its files are removed");
    }
}

/// Whether this process runs as root: `/proc/self` belongs to its effective user.
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// PostgreSQL's server tools refuse to run as root: run them as `postgres` then.
fn as_postgres(tool: &Path) -> ToolCommand {
    if is_root() {
        ToolCommand::new("runuser").args([
            OsString::from("-u"),
            "postgres".into(),
            "--".into(),
            tool.into(),
        ])
    } else {
        ToolCommand::new(tool)
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn run_ok(c: ToolCommand, what: &str) -> anyhow::Result<()> {
    let out = c
        .output(b"")
        .with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            out.stderr
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no message")
        );
    }
    Ok(())
}

fn start_cluster(client: &Client) -> anyhow::Result<Option<Server>> {
    let bindir = match &client.runner {
        Runner::Host { bindir: Some(b) } => b.clone(),
        _ => PathBuf::from(format!("/usr/lib/postgresql/{}/bin", client.version.major)),
    };
    if !bindir.join("initdb").is_file() {
        return Ok(None);
    }
    let dir = tempfile::Builder::new().prefix("xtask-demo-").tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir(&data)?;
    if is_root() {
        run_ok(
            ToolCommand::new("chown").args([
                OsString::from("-R"),
                "postgres".into(),
                dir.path().into(),
            ]),
            "chown",
        )?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    }
    run_ok(
        as_postgres(&bindir.join("initdb"))
            .args([OsString::from("-D"), data.clone().into()])
            .args(["-U", "demo", "--auth=trust", "-E", "UTF8", "--locale=C"]),
        "initdb",
    )?;
    let port = free_port()?;
    let server = Server::Cluster {
        bindir: bindir.clone(),
        dir,
        port,
    };
    let opts = format!(
        "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
        data.display()
    );
    let log = data.join("server.log");
    run_ok(
        as_postgres(&bindir.join("pg_ctl"))
            .args([OsString::from("-D"), data.into(), "-l".into(), log.into()])
            .args(["-w", "-o", opts.as_str(), "start"]),
        "pg_ctl start",
    )?;
    Ok(Some(server))
}

fn start_container(image: &str) -> anyhow::Result<Server> {
    let out = ToolCommand::new("docker")
        .args([
            "run",
            "-d",
            "--rm",
            "--pull",
            "never",
            "-e",
            "POSTGRES_USER=demo",
            "-e",
            "POSTGRES_HOST_AUTH_METHOD=trust",
            "-p",
            "127.0.0.1::5432",
            image,
        ])
        .output(b"")
        .context("cannot run docker")?;
    if !out.status.success() {
        bail!(
            "no host initdb, and docker cannot start {image}: {}",
            out.stderr.lines().next().unwrap_or("").trim()
        );
    }
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let port_out = ToolCommand::new("docker")
        .args(["port", id.as_str(), "5432/tcp"])
        .output(b"")?;
    let text = String::from_utf8_lossy(&port_out.stdout);
    let port = text
        .lines()
        .find_map(|l| l.rsplit(':').next()?.trim().parse().ok());
    let server = Server::Container {
        id,
        port: port.unwrap_or(0),
    };
    if server.port() == 0 {
        bail!("docker did not publish the container's port");
    }
    Ok(server)
}

pub(crate) fn run(_: Demo, ctx: &Context) -> anyhow::Result<ExitCode> {
    interrupt::watch()?;
    let check = || interrupt::check("the demo's server and files are removed");

    let client = Client::find(None)?;
    let server = match start_cluster(&client)? {
        Some(s) => s,
        None => {
            let image = ctx
                .settings
                .sources
                .get("POSTGRES_IMAGE")
                .map_or("postgres:17".to_string(), |(v, _)| v);
            start_container(&image)?
        }
    };
    ui::info(format!("demo: 1/6 started {}", server.describe()));
    let conn = Connection {
        host: "127.0.0.1".into(),
        port: server.port(),
        dbname: "postgres".into(),
        user: "demo".into(),
        password: None,
        sslmode: None,
        service: None,
        connect_timeout: 10,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.server_version(&conn).is_err() {
        check()?;
        if Instant::now() > deadline {
            bail!("the demo server did not accept connections within 60 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    client.script(&conn, "CREATE DATABASE shop;", &[])?;
    let shop = Connection {
        dbname: "shop".into(),
        ..conn.clone()
    };
    client.script(&shop, SAMPLE, &[])?;
    ui::info(
        "demo: 2/6 loaded a sample shop database (customers, products, orders, items, a view, a function)",
    );
    check()?;

    let backups = tempfile::Builder::new()
        .prefix("xtask-demo-backups-")
        .tempdir()?;
    let me = std::env::current_exe()?;
    let step = |n: u32, what: &str, args: &[&str]| -> anyhow::Result<()> {
        check()?;
        ui::info(format!(
            "demo: {n}/6 {what}: cargo xtask {}",
            args.join(" ")
        ));
        let mut c = ToolCommand::new(&me).args(args.iter().copied());
        let dir = backups.path().display().to_string();
        c.env = vec![
            ("XTASK_ROOT", dir.clone()),
            ("BACKUP_DIR", dir),
            ("POSTGRES_HOST", "127.0.0.1".into()),
            ("POSTGRES_PORT", server.port().to_string()),
            ("POSTGRES_USER", "demo".into()),
            ("POSTGRES_DB", "shop".into()),
            // The demo server is on the host, whatever compose project the workspace has.
            ("BACKUP_VIA", "host".into()),
            // Empty is unset: none of the caller's own database settings.
            ("DATABASE_URL", String::new()),
            ("PGPASSWORD", String::new()),
            ("POSTGRES_PASSWORD", String::new()),
        ];
        let status = c.run_here()?;
        check()?;
        if !status.success() {
            bail!("the demo step '{what}' failed");
        }
        Ok(())
    };
    step(
        3,
        "back up and verify",
        &["db-backup", "--verify", "--no-prune"],
    )?;
    step(4, "list and re-verify", &["db-list"])?;
    step(4, "list and re-verify", &["db-verify", "--latest"])?;
    step(
        5,
        "restore into a second database",
        &["db-restore", "--latest", "--target-db", "shop_restored"],
    )?;

    let fingerprint = |db: &str| -> anyhow::Result<String> {
        let c = Connection {
            dbname: db.into(),
            ..conn.clone()
        };
        Ok(client.script(
            &c,
            "SELECT string_agg(t || ':' || n, ' ' ORDER BY t) FROM (
               SELECT 'customers' t, count(*) || '/' || md5(string_agg(x::text, ',' ORDER BY x::text)) n FROM customers x UNION ALL
               SELECT 'products', count(*) || '/' || md5(string_agg(x::text, ',' ORDER BY x::text)) FROM products x UNION ALL
               SELECT 'orders', count(*) || '/' || md5(string_agg(x::text, ',' ORDER BY x::text)) FROM orders x UNION ALL
               SELECT 'order_items', count(*) || '/' || md5(string_agg(x::text, ',' ORDER BY x::text)) FROM order_items x UNION ALL
               SELECT 'big_spenders', count(*) || '/' || md5(string_agg(x::text, ',' ORDER BY x::text)) FROM big_spenders x) s;",
            &[],
        )?)
    };
    let (a, b) = (fingerprint("shop")?, fingerprint("shop_restored")?);
    if a != b {
        return Err(format_err!(
            "the restored database differs from the original: {a} / {b}"
        ));
    }
    ui::info("demo: 6/6 compared shop and shop_restored: every table and the view are identical");
    println!(
        "demo passed: backup, verification, listing and an all-or-nothing restore, on {}",
        server.describe()
    );
    drop(server);
    Ok(ExitCode::SUCCESS)
}
