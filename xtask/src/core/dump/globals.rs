//! Restoring a server's globals (`pg_dumpall --globals-only`) onto a server
//! that may already have some of them: roles and tablespaces that do not
//! exist are created with everything the dump says about them (attributes,
//! password, settings, comment, memberships); those that exist are never
//! touched. A consumer of the dump reader: pg_dumpall writes one statement
//! per line.

use std::collections::BTreeSet;

use super::{Line, LineKind, Visitor, Word, single_statement, words};

/// The filter; `out` is what to run, `created` what it creates.
#[derive(Debug, Default)]
pub(crate) struct GlobalsFilter {
    existing_roles: BTreeSet<String>,
    existing_tablespaces: BTreeSet<String>,
    pub(crate) created_roles: Vec<String>,
    pub(crate) created_tablespaces: Vec<String>,
    /// Statements left out because they concern what exists, or what this tool does not restore.
    pub(crate) skipped: usize,
    /// Lines not in the form pg_dumpall writes (one statement per line): never run.
    pub(crate) odd: usize,
    pub(crate) out: Vec<u8>,
}

impl GlobalsFilter {
    pub(crate) fn new(roles: BTreeSet<String>, tablespaces: BTreeSet<String>) -> GlobalsFilter {
        GlobalsFilter {
            existing_roles: roles,
            existing_tablespaces: tablespaces,
            ..GlobalsFilter::default()
        }
    }

    fn new_role(&self, name: &str) -> bool {
        self.created_roles.iter().any(|r| r == name)
    }

    /// Whether to run a statement, and in what form: only the forms
    /// pg_dumpall writes, and only about what this load creates.
    fn decide(&mut self, line: &[u8]) -> Option<Vec<u8>> {
        // `words()` does not see block comments: a line with one is not pg_dumpall's.
        if memchr::memmem::find(line, b"/*").is_some() {
            return None;
        }
        let w = words(line);
        let kw = |i: usize| w.get(i).and_then(Word::keyword);
        let name = |i: usize| w.get(i).map(|w| w.text.clone()).unwrap_or_default();
        let position = |what: &str| (0..w.len()).find(|&i| kw(i).as_deref() == Some(what));
        match (kw(0).as_deref(), kw(1).as_deref()) {
            // The session settings pg_dumpall writes, exactly: another
            // `standard_conforming_strings` or a client-only encoding would
            // make psql read the lines after it differently from us.
            (Some("SET"), _) => SAFE_SETTINGS
                .iter()
                .any(|s| line.trim_ascii() == s.as_bytes())
                .then(|| line.to_vec()),
            // `CREATE ROLE name;` and nothing else (options would reach other roles).
            (Some("CREATE"), Some("ROLE")) if w.len() == 3 => {
                let role = name(2);
                if self.existing_roles.contains(&role) || self.new_role(&role) {
                    return None;
                }
                self.created_roles.push(role);
                Some(line.to_vec())
            }
            // `ALTER ROLE new WITH attributes` / `SET ...`: no member lists.
            (Some("ALTER"), Some("ROLE"))
                if self.new_role(&name(2))
                    && matches!(kw(3).as_deref(), Some("WITH" | "SET" | "RESET"))
                    && !(4..w.len()).any(|i| {
                        matches!(
                            kw(i).as_deref(),
                            Some("ROLE" | "ADMIN" | "USER" | "IN" | "SYSID")
                        )
                    }) =>
            {
                Some(line.to_vec())
            }
            (Some("COMMENT"), Some("ON")) if kw(2).as_deref() == Some("ROLE") => {
                self.new_role(&name(3)).then(|| line.to_vec())
            }
            (Some("COMMENT"), Some("ON")) if kw(2).as_deref() == Some("TABLESPACE") => {
                self.new_tablespace(&name(3)).then(|| line.to_vec())
            }
            (Some("SECURITY"), Some("LABEL")) => {
                let on = position("ON")?;
                match kw(on + 1).as_deref() {
                    Some("ROLE") => self.new_role(&name(on + 2)),
                    Some("TABLESPACE") => self.new_tablespace(&name(on + 2)),
                    _ => false,
                }
                .then(|| line.to_vec())
            }
            // A membership: `GRANT role TO new ...`, one member, a new one;
            // without `GRANTED BY`, which names a grantor that may not exist here.
            (Some("GRANT"), _) if position("ON").is_none() => {
                let to = position("TO")?;
                let end = (to + 1..w.len())
                    .find(|&i| matches!(kw(i).as_deref(), Some("WITH" | "GRANTED")))
                    .unwrap_or(w.len());
                if end != to + 2 || to != 2 || !self.new_role(&name(to + 1)) {
                    return None;
                }
                let cut = position("GRANTED").map_or(line.len(), |i| w[i].offset);
                let mut statement = line[..cut].trim_ascii_end().to_vec();
                if !statement.ends_with(b";") {
                    statement.push(b';');
                }
                statement.push(b'\n');
                Some(statement)
            }
            (Some("CREATE"), Some("TABLESPACE")) => {
                let ts = name(2);
                if self.existing_tablespaces.contains(&ts) || self.new_tablespace(&ts) {
                    return None;
                }
                self.created_tablespaces.push(ts);
                Some(line.to_vec())
            }
            (Some("ALTER"), Some("TABLESPACE")) => {
                self.new_tablespace(&name(2)).then(|| line.to_vec())
            }
            // Privileges on a tablespace this load created.
            (Some("GRANT" | "REVOKE"), _) => {
                let on = position("ON")?;
                (kw(on + 1).as_deref() == Some("TABLESPACE") && self.new_tablespace(&name(on + 2)))
                    .then(|| line.to_vec())
            }
            _ => None,
        }
    }

    fn new_tablespace(&self, name: &str) -> bool {
        self.created_tablespaces.iter().any(|t| t == name)
    }
}

/// The `SET` lines pg_dumpall writes that are safe to pass on: those that
/// leave psql lexing as our reader does (a client encoding that is also a
/// server encoding, standard strings).
const SAFE_SETTINGS: [&str; 5] = [
    "SET default_transaction_read_only = off;",
    "SET standard_conforming_strings = on;",
    "SET client_encoding = 'UTF8';",
    "SET client_encoding = 'SQL_ASCII';",
    "SET client_encoding = 'LATIN1';",
];

impl Visitor for GlobalsFilter {
    fn piece(&mut self, line: &Line<'_>, bytes: &[u8]) {
        match line.kind {
            LineKind::Comment => self.out.extend_from_slice(bytes),
            LineKind::Sql if bytes.trim_ascii().is_empty() => self.out.extend_from_slice(bytes),
            LineKind::Sql if line.first && line.last && line.top && single_statement(bytes) => {
                match self.decide(bytes) {
                    Some(statement) => self.out.extend_from_slice(&statement),
                    None => self.skipped += 1,
                }
            }
            LineKind::Meta => self.skipped += 1,
            // Several statements on a line, one over several lines, an
            // unclosed string: not pg_dumpall's globals, and never sent.
            _ => self.odd += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::dump::Reader;

    const GLOBALS: &str = "--
-- PostgreSQL database cluster dump
--

\\restrict k1
SET default_transaction_read_only = off;

CREATE ROLE app;
ALTER ROLE app WITH SUPERUSER INHERIT LOGIN PASSWORD 'SCRAM-SHA-256$4096:x';
CREATE ROLE \"Read Er\";
ALTER ROLE \"Read Er\" WITH NOSUPERUSER LOGIN PASSWORD 'SCRAM-SHA-256$4096:y';
COMMENT ON ROLE \"Read Er\" IS 'reads';
CREATE ROLE owner;
ALTER ROLE owner WITH NOLOGIN;
ALTER ROLE \"Read Er\" SET statement_timeout TO '5s';
ALTER ROLE app SET work_mem TO '1GB';
GRANT owner TO \"Read Er\" WITH INHERIT TRUE GRANTED BY postgres;
GRANT owner TO app GRANTED BY postgres;
CREATE TABLESPACE fast OWNER app LOCATION '/ssd';
CREATE TABLESPACE slow OWNER app LOCATION '/hdd';

--
-- PostgreSQL database cluster dump complete
--

\\unrestrict k1
";

    #[test]
    fn only_what_is_missing_is_created_and_nothing_existing_changes() {
        let mut f = GlobalsFilter::new(
            ["app".to_string(), "postgres".into()].into(),
            ["slow".to_string()].into(),
        );
        let mut r = Reader::new();
        r.feed(GLOBALS.as_bytes(), &mut f).unwrap();
        assert_eq!(r.finish(&mut f).check(), Ok(()));
        let sql = String::from_utf8(f.out.clone()).unwrap();
        assert_eq!(f.created_roles, ["Read Er", "owner"]);
        assert_eq!(f.created_tablespaces, ["fast"]);
        for kept in [
            "CREATE ROLE \"Read Er\";",
            "ALTER ROLE \"Read Er\" WITH NOSUPERUSER",
            "COMMENT ON ROLE \"Read Er\"",
            "ALTER ROLE owner WITH NOLOGIN;",
            "ALTER ROLE \"Read Er\" SET statement_timeout",
            "GRANT owner TO \"Read Er\" WITH INHERIT TRUE;\n",
            "CREATE TABLESPACE fast",
            "SET default_transaction_read_only",
        ] {
            assert!(sql.contains(kept), "missing {kept:?} in:\n{sql}");
        }
        assert_eq!(f.odd, 0);
        for dropped in [
            "CREATE ROLE app",
            "ALTER ROLE app",
            "GRANT owner TO app",
            "slow",
            "GRANTED BY",
            "\\restrict",
        ] {
            assert!(!sql.contains(dropped), "kept {dropped:?} in:\n{sql}");
        }
    }

    /// A tampered file with matching checksums: what rides along with a
    /// statement of a new role never reaches psql.
    #[test]
    fn only_single_statements_are_sent() {
        let tampered = "--
-- PostgreSQL database cluster dump
--

CREATE ROLE a; DROP DATABASE app;
COMMENT ON ROLE b IS E'\\';
CREATE ROLE b;
CREATE ROLE c' ; DROP DATABASE app; --
CREATE ROLE d /* open
ALTER ROLE app WITH PASSWORD 'x'; */;
CREATE ROLE e;
COMMENT ON ROLE e IS E'\\';
CREATE ROLE f' ; DROP DATABASE app; --
CREATE ROLE g;
SET standard_conforming_strings = off;
SET client_encoding = 'SJIS';
GRANT su TO g, app;
CREATE ROLE h SUPERUSER ROLE app;
ALTER ROLE g WITH SUPERUSER IN ROLE app;
ALTER GROUP g ADD USER app;
ALTER DATABASE app OWNER TO g /* TABLESPACE t */;
CREATE TABLESPACE t LOCATION '/x';
ALTER DATABASE app SET TABLESPACE t;
GRANT ALL ON TABLESPACE t TO g;

--
-- PostgreSQL database cluster dump complete
--

";
        let mut f = GlobalsFilter::new(["app".to_string()].into(), Default::default());
        let mut r = Reader::new();
        r.feed(tampered.as_bytes(), &mut f).unwrap();
        let _ = r.finish(&mut f);
        let sql = String::from_utf8(f.out.clone()).unwrap();
        assert!(!sql.contains("DROP"), "{sql}");
        assert!(!sql.contains("PASSWORD"), "{sql}");
        assert!(sql.contains("CREATE ROLE e;"), "{sql}");
        assert!(!sql.contains("COMMENT ON ROLE e"), "{sql}");
        assert!(sql.contains("CREATE ROLE g;"), "{sql}");
        for never in [
            "standard_conforming_strings = off",
            "SJIS",
            "TO g, app",
            "CREATE ROLE h",
            "IN ROLE",
            "ALTER GROUP",
            "ALTER DATABASE",
        ] {
            assert!(!sql.contains(never), "{never:?} reached psql:\n{sql}");
        }
        assert!(sql.contains("GRANT ALL ON TABLESPACE t TO g;"), "{sql}");
        assert!(f.odd >= 6, "{}", f.odd);
    }
}
