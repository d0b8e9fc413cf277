//! Inspection of a plain-format `pg_dump` stream, chunk by chunk.
//!
//! The dump is bytes, not text (a LATIN1 database dumps LATIN1), and a line
//! can be as long as a row, so the scanner keeps only a short prefix of each
//! line and never the stream. It checks what a truncated or foreign file gets
//! wrong: the `-- PostgreSQL database dump` header, the `-- PostgreSQL
//! database dump complete` trailer (current minor releases write
//! `\unrestrict KEY` after it) and the `\.` terminating every COPY block; and
//! it collects what `.meta` records: the versions in the header and the rows
//! of each COPY block.

use std::collections::BTreeMap;
use std::fmt;

/// How much of a non-data line is kept: enough for any line the scanner reads
/// (a `COPY` line names every column).
const PREFIX_CAP: usize = 64 * 1024;
/// Inside a COPY block only `\.` matters.
const COPY_PREFIX_CAP: usize = 3;

const HEADER: &[u8] = b"-- PostgreSQL database dump";
const TRAILER: &[u8] = b"-- PostgreSQL database dump complete";
const DATA_COMMENT: &[u8] = b"-- Data for Name: ";
const FROM_VERSION: &[u8] = b"-- Dumped from database version ";
const BY_VERSION: &[u8] = b"-- Dumped by pg_dump version ";

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    BeforeHeader,
    Body,
    Copy { table: String, rows: u64 },
    AfterTrailer,
}

/// What is wrong with a dump's structure: one problem, the first found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StructureError {
    Empty,
    NoHeader,
    UnterminatedCopy { table: String },
    NoTrailer,
    AfterTrailer { line: String },
}

impl fmt::Display for StructureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StructureError::Empty => write!(f, "the dump is empty"),
            StructureError::NoHeader => write!(
                f,
                "no '-- PostgreSQL database dump' header: not a plain pg_dump file"
            ),
            StructureError::UnterminatedCopy { table } => {
                write!(
                    f,
                    "the data of table {table} is not terminated (no '\\.' line): the dump is truncated"
                )
            }
            StructureError::NoTrailer => {
                write!(
                    f,
                    "no '-- PostgreSQL database dump complete' trailer: the dump is truncated"
                )
            }
            StructureError::AfterTrailer { line } => {
                write!(f, "unexpected content after the dump's trailer: '{line}'")
            }
        }
    }
}

impl std::error::Error for StructureError {}

/// The findings of a whole stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanReport {
    pub bytes: u64,
    pub server_version: Option<String>,
    pub pg_dump_version: Option<String>,
    /// Rows per table, as the COPY blocks hold them (schema-qualified, as pg_dump quotes them).
    pub tables: BTreeMap<String, u64>,
    /// The rows of each COPY block, in stream order (what psql's `COPY n` tags must match).
    pub copies: Vec<u64>,
    pub error: Option<StructureError>,
}

impl ScanReport {
    pub fn check(&self) -> Result<(), StructureError> {
        match &self.error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

#[derive(Debug)]
pub struct SqlScanner {
    state: State,
    line: Vec<u8>,
    line_len: usize,
    expect_copy: bool,
    report: ScanReport,
}

impl Default for SqlScanner {
    fn default() -> Self {
        SqlScanner {
            state: State::BeforeHeader,
            line: Vec::with_capacity(PREFIX_CAP),
            line_len: 0,
            expect_copy: false,
            report: ScanReport::default(),
        }
    }
}

impl SqlScanner {
    pub fn new() -> SqlScanner {
        SqlScanner::default()
    }

    pub fn feed(&mut self, mut data: &[u8]) {
        self.report.bytes += data.len() as u64;
        while let Some(i) = memchr::memchr(b'\n', data) {
            self.push(&data[..i]);
            self.end_line();
            data = &data[i + 1..];
        }
        self.push(data);
    }

    pub fn finish(mut self) -> ScanReport {
        if self.line_len > 0 {
            self.end_line();
        }
        if self.report.error.is_none() {
            self.report.error = match &self.state {
                _ if self.report.bytes == 0 => Some(StructureError::Empty),
                State::BeforeHeader => Some(StructureError::NoHeader),
                State::Copy { table, .. } => Some(StructureError::UnterminatedCopy {
                    table: table.clone(),
                }),
                State::Body => Some(StructureError::NoTrailer),
                State::AfterTrailer => None,
            };
        }
        self.report
    }

    fn push(&mut self, part: &[u8]) {
        let cap = if matches!(self.state, State::Copy { .. }) {
            COPY_PREFIX_CAP
        } else {
            PREFIX_CAP
        };
        let room = cap.saturating_sub(self.line.len());
        self.line.extend_from_slice(&part[..part.len().min(room)]);
        self.line_len += part.len();
    }

    fn end_line(&mut self) {
        let mut line = std::mem::take(&mut self.line);
        let full_len = self.line_len;
        self.line_len = 0;
        if line.last() == Some(&b'\r') && full_len == line.len() {
            line.pop();
        }
        self.on_line(&line, full_len);
        line.clear();
        self.line = line;
    }

    fn on_line(&mut self, line: &[u8], full_len: usize) {
        if self.report.error.is_some() {
            return;
        }
        match &mut self.state {
            State::Copy { table, rows } => {
                if full_len == 2 && line == b"\\." {
                    let (table, rows) = (std::mem::take(table), *rows);
                    *self.report.tables.entry(table).or_default() += rows;
                    self.report.copies.push(rows);
                    self.state = State::Body;
                } else {
                    *rows += 1;
                }
            }
            State::BeforeHeader => {
                if line == HEADER {
                    self.state = State::Body;
                } else if !is_meta_line(line) {
                    self.report.error = Some(StructureError::NoHeader);
                }
            }
            State::Body => {
                if line.starts_with(b"--") {
                    if line == TRAILER {
                        self.state = State::AfterTrailer;
                    } else if let Some(v) = line.strip_prefix(FROM_VERSION) {
                        self.report.server_version = Some(String::from_utf8_lossy(v).into_owned());
                    } else if let Some(v) = line.strip_prefix(BY_VERSION) {
                        self.report.pg_dump_version = Some(String::from_utf8_lossy(v).into_owned());
                    } else if line.starts_with(DATA_COMMENT) {
                        self.expect_copy = true;
                    }
                } else if self.expect_copy
                    && line.starts_with(b"COPY ")
                    && line.ends_with(b" FROM stdin;")
                {
                    self.expect_copy = false;
                    let table = copy_table(&line[5..]);
                    self.state = State::Copy { table, rows: 0 };
                }
            }
            State::AfterTrailer => {
                if !is_meta_line(line) {
                    let shown = String::from_utf8_lossy(&line[..line.len().min(60)]).into_owned();
                    self.report.error = Some(StructureError::AfterTrailer { line: shown });
                }
            }
        }
    }
}

/// Lines allowed around the header and after the trailer: blank lines,
/// comments and psql's `\restrict`/`\unrestrict` guards.
fn is_meta_line(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
        || line.starts_with(b"--")
        || line.starts_with(b"\\restrict ")
        || line.starts_with(b"\\unrestrict ")
}

/// The table of `COPY <table> (<columns>) FROM stdin;`: up to the first space
/// outside double quotes.
fn copy_table(rest: &[u8]) -> String {
    let mut quoted = false;
    let end = rest
        .iter()
        .position(|&b| {
            if b == b'"' {
                quoted = !quoted;
            }
            b == b' ' && !quoted
        })
        .unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end]).into_owned()
}

/// Scans a whole byte slice (tests, small files).
pub fn scan(data: &[u8]) -> ScanReport {
    let mut s = SqlScanner::new();
    s.feed(data);
    s.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let mut s = SqlScanner::new();
            for chunk in DUMP.as_bytes().chunks(size) {
                s.feed(chunk);
            }
            assert_eq!(s.finish(), whole, "chunk size {size}");
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
        assert_eq!(scan(b"").check(), Err(StructureError::Empty));
        assert_eq!(
            scan(b"CREATE TABLE x();\n").check(),
            Err(StructureError::NoHeader)
        );
        let extra = format!("{DUMP}DROP TABLE users;\n");
        assert!(matches!(
            scan(extra.as_bytes()).check(),
            Err(StructureError::AfterTrailer { .. })
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
            Err(StructureError::AfterTrailer { line }) => assert_eq!(line.len(), 60),
            other => panic!("{other:?}"),
        }
        let mut dump2 = DUMP.replace("x\t\\N", &long).into_bytes();
        let at = dump2.windows(5).position(|w| w == b"yyyyy").unwrap();
        dump2[at] = 0xE9;
        assert_eq!(scan(&dump2).check(), Ok(()));
        assert_eq!(scan(&dump2).tables["public.t"], 2);
    }

    #[test]
    fn a_copy_statement_inside_a_function_body_is_not_data() {
        let f = "CREATE FUNCTION f() RETURNS void AS $$\nCOPY x FROM stdin;\n$$;\n";
        let dump = DUMP.replace("SET statement_timeout = 0;\n", f);
        assert_eq!(scan(dump.as_bytes()).check(), Ok(()));
    }
}
