//! The recovery runbook (docs/operations/database-recovery.md), step by
//! step, with its own commands: recover one table, and undo a restore.

use std::collections::BTreeMap;
use std::process::{Output, Stdio};

use e2e::{DB, PgServer, Xtask, show};

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", show(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn psql(x: &Xtask, env: &BTreeMap<String, String>, args: &[&str]) -> String {
    let mut argv = vec!["db-psql"];
    argv.extend_from_slice(args);
    ok(x.run(&argv, env))
}

#[test]
fn recover_one_table_then_undo_a_restore() {
    let pg = PgServer::start(15);
    pg.psql(
        DB,
        "CREATE TABLE public.customers (customer_id int PRIMARY KEY, name text);
         INSERT INTO customers SELECT i, 'c' || i FROM generate_series(1, 10) i;
         CREATE TABLE public.orders (order_id int PRIMARY KEY, customer_id int REFERENCES customers, total numeric);
         INSERT INTO orders SELECT i, 1 + i % 10, i * 1.5 FROM generate_series(1, 100) i;",
    );
    let x = crate::xtask();
    let env = pg.xtask_env(DB);
    ok(x.run(&["db-backup", "-q"], &env));

    // The incident: orders deleted by mistake.
    pg.psql(DB, "DELETE FROM orders WHERE order_id <= 10");

    // 3. Recover one table.
    ok(x.run(
        &[
            "db-restore",
            "--latest",
            "--table",
            "public.orders",
            "--target-db",
            "app_recover",
        ],
        &env,
    ));
    psql(
        &x,
        &env,
        &[
            "--",
            "-c",
            "CREATE TABLE public.orders_recovered (LIKE public.orders INCLUDING ALL)",
        ],
    );
    let mut from = x
        .command(
            &[
                "db-psql",
                "-d",
                "app_recover",
                "--",
                "-c",
                "\\copy public.orders TO pstdout",
            ],
            &env,
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let into = x
        .command(
            &[
                "db-psql",
                "--",
                "-c",
                "\\copy public.orders_recovered FROM pstdin",
            ],
            &env,
        )
        .stdin(from.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(from.wait().unwrap().success());
    assert_eq!(ok(into), "COPY 100");
    assert_eq!(
        psql(
            &x,
            &env,
            &["--", "-Atc", "SELECT count(*) FROM public.orders_recovered"]
        ),
        "100"
    );
    psql(
        &x,
        &env,
        &[
            "--",
            "-c",
            "INSERT INTO public.orders SELECT * FROM public.orders_recovered r
  WHERE NOT EXISTS (SELECT 1 FROM public.orders o WHERE o.order_id = r.order_id)",
        ],
    );
    psql(
        &x,
        &env,
        &["--", "-c", "DROP TABLE public.orders_recovered"],
    );
    psql(
        &x,
        &env,
        &["-d", "postgres", "--", "-c", "DROP DATABASE app_recover"],
    );
    assert_eq!(
        pg.psql(DB, "SELECT count(*), sum(total) FROM orders"),
        "100|7575.0"
    );

    // 1. A full restore, then 4. undo it: the replaced database comes back.
    pg.psql(
        DB,
        "INSERT INTO customers VALUES (999, 'added after the backup')",
    );
    ok(x.run(&["db-restore", "--latest", "--yes"], &env));
    assert_eq!(
        pg.psql(DB, "SELECT count(*) FROM customers WHERE customer_id = 999"),
        "0"
    );
    let previous = psql(
        &x,
        &env,
        &[
            "-d",
            "postgres",
            "--",
            "-Atc",
            "SELECT datname FROM pg_database WHERE datname LIKE 'app_pre_restore_%' ORDER BY 1 DESC",
        ],
    );
    assert!(previous.starts_with("app_pre_restore_"), "{previous}");
    let rename = format!("ALTER DATABASE {previous} RENAME TO app");
    psql(
        &x,
        &env,
        &[
            "-d",
            "postgres",
            "--",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'app'",
            "-c",
            "ALTER DATABASE app RENAME TO app_undone",
            "-c",
            &rename,
        ],
    );
    assert_eq!(
        pg.psql(DB, "SELECT name FROM customers WHERE customer_id = 999"),
        "added after the backup"
    );
}
