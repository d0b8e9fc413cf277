//! The harness itself: a real round trip per server version, with the
//! server's own pg_dump (same major by construction) and psql.

use e2e::{DB, PgServer};

per_version! {
    round_trip_through_pg_dump => super::round_trip,
}

fn round_trip(major: u32) {
    let pg = PgServer::start(major);
    let version = pg.psql(DB, "SHOW server_version_num");
    assert!(
        version.starts_with(&major.to_string()),
        "server {version} is not PostgreSQL {major}"
    );

    pg.psql(
        DB,
        "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2), tags text[], at timestamptz);
         INSERT INTO items SELECT g, 'item ' || g, g * 1.25, ARRAY['a', 'b' || g], '2026-01-01'::timestamptz + g * interval '1 hour'
         FROM generate_series(1, 500) g;
         INSERT INTO items VALUES (0, E'tab\\there\\nnewline \\\\ backslash', NULL, '{}', NULL);",
    );
    let dump = pg.exec(&["pg_dump", "-U", e2e::USER, "--format=plain", DB]);
    assert!(String::from_utf8_lossy(&dump).contains("-- PostgreSQL database dump complete"));

    pg.create_db("restored");
    pg.psql_script("restored", &dump);
    assert_eq!(
        pg.table_rows("restored", "items"),
        pg.table_rows(DB, "items"),
        "PostgreSQL {major}"
    );
    assert_eq!(pg.psql("restored", "SELECT count(*) FROM items"), "501");
}
