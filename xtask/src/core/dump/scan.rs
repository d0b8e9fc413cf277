//! What one read of a dump establishes: its structure (header, trailer,
//! terminated data blocks, no foreign psql commands), the versions in its
//! header and the rows of each data block. `.meta` records it at backup
//! time; every check compares against it.

use std::collections::BTreeMap;

use super::{DumpError, DumpKind};

/// The findings of a whole stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ScanReport {
    pub(crate) bytes: u64,
    pub(crate) kind: DumpKind,
    pub(crate) server_version: Option<String>,
    pub(crate) pg_dump_version: Option<String>,
    /// Rows per table, as the COPY blocks hold them (schema-qualified, as pg_dump quotes them).
    pub(crate) tables: BTreeMap<String, u64>,
    /// The rows of each COPY block, in stream order (what psql's `COPY n` tags must match).
    pub(crate) copies: Vec<u64>,
    /// Roles the dump names as owners (object headers, `FOR ROLE`), and in privileges.
    pub(crate) owners: std::collections::BTreeSet<String>,
    pub(crate) grantees: std::collections::BTreeSet<String>,
    pub(crate) error: Option<DumpError>,
}

impl ScanReport {
    pub(crate) fn check(&self) -> Result<(), DumpError> {
        match &self.error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

/// Scans a whole byte slice.
#[cfg(test)]
pub(crate) fn scan(data: &[u8]) -> ScanReport {
    let mut r = super::Reader::new();
    let _ = r.feed(data, &mut ());
    r.finish(&mut ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::dump::Reader;

    const DUMP: &str = "\\restrict abc123
--
-- PostgreSQL database dump
--

-- Dumped from database version 17.12 (Debian 17.12-0+deb13u1)
-- Dumped by pg_dump version 17.12 (Debian 17.12-0+deb13u1)

SET statement_timeout = 0;

CREATE TABLE public.\"Odd Name\" (id integer);

--
-- Data for Name: Odd Name; Type: TABLE DATA; Schema: public; Owner: app
--

COPY public.\"Odd Name\" (id) FROM stdin;
1
2
\\.


--
-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: app
--

COPY public.t (a, b) FROM stdin;
x\t\\N
COPY public.t (a) FROM stdin;
\\.


--
-- PostgreSQL database dump complete
--

\\unrestrict abc123

";

    #[test]
    fn a_complete_dump_passes_and_counts_rows() {
        let r = scan(DUMP.as_bytes());
        assert_eq!(r.check(), Ok(()));
        assert_eq!(
            r.server_version.as_deref(),
            Some("17.12 (Debian 17.12-0+deb13u1)")
        );
        assert_eq!(
            r.pg_dump_version.as_deref(),
            Some("17.12 (Debian 17.12-0+deb13u1)")
        );
        let tables: Vec<_> = r.tables.iter().map(|(t, n)| (t.as_str(), *n)).collect();
        assert_eq!(tables, vec![("public.\"Odd Name\"", 2), ("public.t", 2)]);
        assert_eq!(r.copies, vec![2, 2]);
    }

    #[test]
    fn chunk_boundaries_do_not_matter() {
        let whole = scan(DUMP.as_bytes());
        for size in [1, 2, 3, 7, 64] {
            let mut s = Reader::new();
            for chunk in DUMP.as_bytes().chunks(size) {
                s.feed(chunk, &mut ()).unwrap();
            }
            assert_eq!(s.finish(&mut ()), whole, "chunk size {size}");
        }
    }

    #[test]
    fn every_truncation_is_caught() {
        // Cutting the dump anywhere before the trailer must fail the check.
        let end = DUMP.find("-- PostgreSQL database dump complete").unwrap();
        for cut in 0..end {
            let r = scan(&DUMP.as_bytes()[..cut]);
            assert!(r.check().is_err(), "a dump cut at byte {cut} passed");
        }
    }

    #[test]
    fn the_errors_name_the_problem() {
        let cut = DUMP.find("2\n\\.").unwrap();
        assert_eq!(
            scan(&DUMP.as_bytes()[..cut])
                .check()
                .unwrap_err()
                .to_string(),
            "the data of table public.\"Odd Name\" is not terminated (no '\\.' line): the dump is truncated"
        );
        assert_eq!(scan(b"").check(), Err(DumpError::Empty));
        assert_eq!(
            scan(b"CREATE TABLE x();\n").check(),
            Err(DumpError::NoHeader)
        );
        let extra = format!("{DUMP}DROP TABLE users;\n");
        assert!(matches!(
            scan(extra.as_bytes()).check(),
            Err(DumpError::AfterTrailer { .. })
        ));
    }

    #[test]
    fn bytes_that_are_not_utf8_and_long_lines_are_fine() {
        let mut dump = DUMP.replace("x\t\\N", "caf\u{e9}").into_bytes();
        let at = dump.windows(2).position(|w| w == "é".as_bytes()).unwrap();
        dump.splice(at..at + 2, [0xE9]); // LATIN1 é
        let long = "y".repeat(100_000);
        let dump = [dump.as_slice(), long.as_bytes()].concat();
        // The long line lands after the trailer: that is an error, and it is reported shortly.
        let r = scan(&dump);
        match r.check() {
            Err(DumpError::AfterTrailer { line }) => assert_eq!(line.len(), 60),
            other => panic!("{other:?}"),
        }
        let mut dump2 = DUMP.replace("x\t\\N", &long).into_bytes();
        let at = dump2.windows(5).position(|w| w == b"yyyyy").unwrap();
        dump2[at] = 0xE9;
        assert_eq!(scan(&dump2).check(), Ok(()));
        assert_eq!(scan(&dump2).tables["public.t"], 2);
    }

    #[test]
    fn a_cluster_dump_has_its_own_header_and_trailer() {
        let globals = "--\n-- PostgreSQL database cluster dump\n--\n\n\\restrict k1\nCREATE ROLE app;\n\n--\n-- PostgreSQL database cluster dump complete\n--\n\n\\unrestrict k1\n";
        let r = scan(globals.as_bytes());
        assert_eq!(r.check(), Ok(()));
        assert_eq!(r.kind, DumpKind::Cluster);
    }
}
