//! One consistent, read-only view of a live source: a transaction that
//! exports its snapshot and stays open while the catalog is read, the rows
//! a subset needs are read, and pg_dump dumps, all at that one snapshot.
//! Nothing is written on the source: every session is a READ ONLY
//! transaction, and no temporary object is made.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};

use anyhow::{Context as _, format_err};
use serde::Deserialize;

use crate::core::config::Connection;
use crate::core::dump::{TableName, ident};
use crate::core::subset::{Catalog, ForeignKey, Leaf, Rows, Table};
use crate::services::interrupt;
use crate::services::pg::{Client, PgError, classify};
use crate::services::process::drain;

/// The exporting transaction, held by a psql that waits on its stdin.
pub(crate) struct Snapshot<'c> {
    client: &'c Client,
    conn: Connection,
    holder: Child,
    pub(crate) id: String,
}

/// What every reading session sets first: the snapshot, then pg_dump's own
/// output settings (its `setup_connection`), so values read here are byte
/// for byte the text pg_dump writes for them: an empty search_path prints
/// `regclass` values schema-qualified, as pg_dump does.
const SETTINGS: &str = "SET datestyle = ISO;\nSET intervalstyle = postgres;\nSET extra_float_digits = 3;\nSET row_security = off;\nSET statement_timeout = 0;\nSET lock_timeout = 0;\nSET search_path = '';\n";

/// No timeout may end the snapshot's transaction while the slice is decided
/// (`transaction_timeout` exists from PostgreSQL 17 on).
/// Nothing here may print: every line these sessions print is a row.
const NO_TIMEOUTS: &str = "SET idle_in_transaction_session_timeout = 0;\nDO $$BEGIN IF pg_catalog.current_setting('server_version_num')::int >= 170000 THEN PERFORM pg_catalog.set_config('transaction_timeout', '0', false); END IF; END$$;\n";

impl<'c> Snapshot<'c> {
    pub(crate) fn export(client: &'c Client, conn: &Connection) -> Result<Snapshot<'c>, PgError> {
        let args = ["-X", "-A", "-t", "-q", "-w", "-v", "ON_ERROR_STOP=1"].map(Into::into);
        let mut holder = client
            .command("psql", &args, conn)
            .spawn(Stdio::piped(), Stdio::piped())
            .map_err(|e| client.spawn_error("psql", e))?;
        let stderr = drain(holder.stderr.take().expect("stderr is piped"));
        let mut stdin = holder.stdin.take().expect("stdin is piped");
        let started = stdin.write_all(
            format!("{NO_TIMEOUTS}BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\nSELECT pg_export_snapshot();\n").as_bytes(),
        );
        let mut line = String::new();
        let mut out = BufReader::new(holder.stdout.take().expect("stdout is piped"));
        let read = out.read_line(&mut line);
        let id = line.trim().to_string();
        let valid = !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
        if started.is_err() || read.is_err() || !valid {
            drop(stdin);
            let _ = holder.wait();
            let err = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
            return Err(classify("psql", &err, conn));
        }
        // The holder's stdin stays open (kept in the child): it ends when we drop it.
        holder.stdin = Some(stdin);
        Ok(Snapshot {
            client,
            conn: conn.clone(),
            holder,
            id,
        })
    }

    /// A session script at this snapshot, ending with `body`. The client
    /// encoding is left alone: psql without a terminal takes the default
    /// pg_dump takes (PGCLIENTENCODING, the role's, the database's).
    fn script(&self, body: &str) -> String {
        format!(
            "{NO_TIMEOUTS}BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\nSET TRANSACTION SNAPSHOT '{}';\n{SETTINGS}{body}\nCOMMIT;\n",
            self.id
        )
    }

    /// Runs `body` at the snapshot, calling `line` with each line it prints.
    fn stream(&self, body: &str, line: &mut dyn FnMut(&[u8])) -> anyhow::Result<()> {
        let args = ["-X", "-A", "-t", "-q", "-w", "-v", "ON_ERROR_STOP=1"].map(Into::into);
        let mut child = self
            .client
            .command("psql", &args, &self.conn)
            .spawn(Stdio::piped(), Stdio::piped())
            .map_err(|e| self.client.spawn_error("psql", e))?;
        let stderr = drain(child.stderr.take().expect("stderr is piped"));
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let script = self.script(body);
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(script.as_bytes());
        });
        let mut out =
            BufReader::with_capacity(1 << 16, child.stdout.take().expect("stdout is piped"));
        let mut buf = Vec::new();
        loop {
            buf.clear();
            // SIGTERM to this process alone: stop the read, not wait for it.
            if interrupt::received().is_some() {
                let _ = child.kill();
                let _ = child.wait();
                return Err(interrupt::failure("nothing was written to the target").into());
            }
            if out.read_until(b'\n', &mut buf)? == 0 {
                break;
            }
            let l = buf.strip_suffix(b"\n").unwrap_or(&buf);
            line(l);
        }
        let _ = writer.join();
        let status = child.wait()?;
        let err = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
        if status.success() {
            Ok(())
        } else {
            Err(classify("psql", &err, &self.conn).into())
        }
    }

    /// The tables (partitioned ones with their leaf partitions), their
    /// primary keys and the foreign keys between them, at the snapshot.
    pub(crate) fn catalog(&self) -> anyhow::Result<Catalog> {
        let mut text = Vec::new();
        self.stream(CATALOG_SQL, &mut |l| {
            text.extend_from_slice(l);
        })
        .context("reading the source's tables and foreign keys")?;
        parse_catalog(&text)
    }
}

impl Drop for Snapshot<'_> {
    fn drop(&mut self) {
        // Closing its stdin ends the holder's session (and its transaction).
        drop(self.holder.stdin.take());
        let _ = self.holder.wait();
    }
}

impl Rows for Snapshot<'_> {
    fn scan(
        &mut self,
        table: &TableName,
        leaf: &Leaf,
        condition: Option<&str>,
        row: &mut dyn FnMut(&[u8]),
    ) -> anyhow::Result<()> {
        let columns: Vec<String> = leaf.columns.iter().map(|c| ident(c)).collect();
        // A partition is read under its table's name: a condition may say
        // `orders.placed_at`.
        let mut sql = format!(
            "COPY (SELECT {} FROM ONLY {} AS {}",
            columns.join(", "),
            leaf.name.sql(),
            ident(&table.name)
        );
        if let Some(c) = condition {
            sql.push_str(&format!(" WHERE ({c})"));
        }
        sql.push_str(") TO STDOUT;");
        let interrupted = "nothing was written to the target";
        interrupt::check(interrupted)?;
        match self.stream(&sql, row) {
            Ok(()) => Ok(()),
            // psql got the same Ctrl-C: say what happened, not how psql ended.
            Err(_) if interrupt::received().is_some() => {
                Err(interrupt::failure(interrupted).into())
            }
            Err(e) => Err(e.context(match condition {
                Some(c) => format!("reading {} WHERE {c}", leaf.name),
                None => format!("reading {}", leaf.name),
            })),
        }
    }
}

/// One JSON document: names travel as JSON strings, whatever they hold.
const CATALOG_SQL: &str = r#"
WITH logical AS (
  SELECT c.oid, n.nspname, c.relname, c.relkind
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
    AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
)
SELECT json_build_object(
  'tables', COALESCE((SELECT json_agg(json_build_object(
      'oid', l.oid::int8, 'schema', l.nspname, 'name', l.relname,
      'key', (SELECT json_agg(a.attname ORDER BY k.ord)
              FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
              JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
              WHERE i.indrelid = l.oid AND i.indisprimary),
      'leaves', (SELECT json_agg(json_build_object('schema', ln.nspname, 'name', lc.relname,
                    'columns', COALESCE((SELECT json_agg(a.attname ORDER BY a.attnum) FROM pg_attribute a
                                WHERE a.attrelid = lc.oid AND a.attnum > 0 AND NOT a.attisdropped
                                  AND a.attgenerated = ''), '[]'))
                  ORDER BY ln.nspname, lc.relname)
                 FROM pg_class lc JOIN pg_namespace ln ON ln.oid = lc.relnamespace
                 WHERE lc.relkind = 'r' AND (lc.oid = l.oid OR (l.relkind = 'p' AND lc.oid IN
                   (SELECT relid FROM pg_partition_tree(l.oid) WHERE isleaf))))
    ) ORDER BY l.nspname, l.relname) FROM logical l), '[]'),
  'foreign_keys', COALESCE((SELECT json_agg(json_build_object(
      'name', co.conname,
      'child', COALESCE(pg_partition_root(co.conrelid), co.conrelid)::int8,
      'parent', COALESCE(pg_partition_root(co.confrelid), co.confrelid)::int8,
      'columns', (SELECT json_agg(a.attname ORDER BY k.ord) FROM unnest(co.conkey) WITH ORDINALITY AS k(attnum, ord)
                  JOIN pg_attribute a ON a.attrelid = co.conrelid AND a.attnum = k.attnum),
      'referenced', (SELECT json_agg(a.attname ORDER BY k.ord) FROM unnest(co.confkey) WITH ORDINALITY AS k(attnum, ord)
                  JOIN pg_attribute a ON a.attrelid = co.confrelid AND a.attnum = k.attnum)
    ) ORDER BY co.conname, co.oid) FROM pg_constraint co WHERE co.contype = 'f' AND co.conparentid = 0), '[]')
);"#;

#[derive(Deserialize)]
struct RawCatalog {
    tables: Vec<RawTable>,
    foreign_keys: Vec<RawKey>,
}

#[derive(Deserialize)]
struct RawTable {
    oid: u64,
    schema: String,
    name: String,
    key: Option<Vec<String>>,
    leaves: Option<Vec<RawLeaf>>,
}

#[derive(Deserialize)]
struct RawLeaf {
    schema: String,
    name: String,
    columns: Vec<String>,
}

#[derive(Deserialize)]
struct RawKey {
    name: String,
    child: u64,
    parent: u64,
    columns: Vec<String>,
    referenced: Vec<String>,
}

fn parse_catalog(text: &[u8]) -> anyhow::Result<Catalog> {
    let raw: RawCatalog = serde_json::from_slice(text)
        .map_err(|e| format_err!("the source's catalog did not read as expected: {e}"))?;
    let oids: Vec<u64> = raw.tables.iter().map(|t| t.oid).collect();
    let tables = raw
        .tables
        .into_iter()
        .map(|t| Table {
            name: TableName::new(&t.schema, &t.name),
            primary_key: t.key,
            leaves: t
                .leaves
                .unwrap_or_default()
                .into_iter()
                .map(|l| Leaf {
                    name: TableName::new(&l.schema, &l.name),
                    columns: l.columns,
                })
                .collect(),
        })
        .collect();
    // A foreign key to or from a relation that is not a table here (one in
    // a system schema) ties nothing this clone copies.
    let foreign_keys = raw
        .foreign_keys
        .into_iter()
        .filter_map(|k| {
            Some(ForeignKey {
                name: k.name,
                child: oids.iter().position(|o| *o == k.child)?,
                parent: oids.iter().position(|o| *o == k.parent)?,
                columns: k.columns,
                referenced: k.referenced,
            })
        })
        .collect();
    Ok(Catalog {
        tables,
        foreign_keys,
    })
}
