//! Selective recovery: a streaming filter over a plain `pg_dump` that keeps
//! the named tables (definition, defaults, data, indexes, constraints,
//! triggers, owned sequences) and what they may depend on (schemas, types,
//! domains, sequences, extensions, and the functions their triggers call),
//! and drops every other table, view, function and their data.
//!
//! pg_dump heads every object with a comment such as
//! `-- Name: actor; Type: TABLE; Schema: public; Owner: app` (or `-- Data
//! for Name: ...` for table data). The filter decides per object from that
//! header; for indexes and `SEQUENCE OWNED BY`, whose header does not name
//! the table, it holds the (short) object back and decides from its SQL.
//! Comment lines always pass (they are harmless and keep the dump's header
//! and trailer), and nothing inside a COPY block is read as a header.
//! Foreign keys are dropped: they reference tables that are not restored.

use std::collections::BTreeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Keep,
    Drop,
    /// Held back until the object's SQL says which table it belongs to.
    Hold,
}

/// Enough of a line to read a header or a `COPY ... FROM stdin;` line.
const HEAD_CAP: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineKind {
    Unknown,
    Comment,
    Other,
}

#[derive(Debug)]
pub struct TableFilter {
    /// `schema.table`, unquoted as in pg_dump's headers.
    tables: BTreeSet<(String, String)>,
    decision: Decision,
    held: Vec<u8>,
    /// The start of the current line, to classify it.
    head: Vec<u8>,
    /// Bytes of the current line not passed on yet (a comment, or a line
    /// too short to tell).
    pending: Vec<u8>,
    kind: LineKind,
    in_copy: bool,
    /// Tables whose definition was kept (to report names that matched nothing).
    pub found: BTreeSet<(String, String)>,
    pub dropped_foreign_keys: usize,
    /// Functions the kept triggers call (`schema.name`), from [`TableFilter::prepare`].
    needed_functions: BTreeSet<String>,
}

/// `public.actor` or `actor` (meaning `public.actor`) into (schema, table).
pub fn parse_table(spec: &str) -> (String, String) {
    match spec.split_once('.') {
        Some((s, t)) => (
            s.trim_matches('"').to_string(),
            t.trim_matches('"').to_string(),
        ),
        None => ("public".to_string(), spec.trim_matches('"').to_string()),
    }
}

struct Header<'a> {
    name: &'a str,
    kind: &'a str,
    schema: &'a str,
}

fn parse_header(line: &str) -> Option<Header<'_>> {
    let rest = line
        .strip_prefix("-- Name: ")
        .or_else(|| line.strip_prefix("-- Data for Name: "))?;
    let (name, rest) = rest.split_once("; Type: ")?;
    let (kind, rest) = rest.split_once("; Schema: ")?;
    let schema = rest.split_once(';').map_or(rest, |(s, _)| s);
    Some(Header { name, kind, schema })
}

impl TableFilter {
    pub fn new(specs: &[String]) -> TableFilter {
        TableFilter {
            tables: specs.iter().map(|s| parse_table(s)).collect(),
            decision: Decision::Keep,
            held: Vec::new(),
            head: Vec::new(),
            pending: Vec::new(),
            kind: LineKind::Unknown,
            in_copy: false,
            found: BTreeSet::new(),
            dropped_foreign_keys: 0,
            needed_functions: BTreeSet::new(),
        }
    }

    /// A first pass over the dump: which functions the selected tables'
    /// triggers call. Other functions are not restored, since their
    /// signatures may name tables outside the selection.
    pub fn prepare(&mut self, dump: impl std::io::BufRead) -> std::io::Result<()> {
        let mut in_trigger = false;
        for line in dump.split(b'\n') {
            let line = line?;
            let text = String::from_utf8_lossy(&line);
            if let Some(h) = parse_header(&text) {
                let owner = h.name.split(' ').next().unwrap_or(h.name);
                in_trigger = h.kind == "TRIGGER" && self.wanted(h.schema, owner);
                continue;
            }
            if !in_trigger {
                continue;
            }
            for marker in ["EXECUTE FUNCTION ", "EXECUTE PROCEDURE "] {
                if let Some(rest) = text.split(marker).nth(1) {
                    let name = rest.split('(').next().unwrap_or("").trim();
                    let qualified = if name.contains('.') {
                        name.to_string()
                    } else {
                        format!("public.{name}")
                    };
                    self.needed_functions.insert(qualified.replace('"', ""));
                }
            }
        }
        Ok(())
    }

    /// The requested tables the dump did not define.
    pub fn missing(&self) -> Vec<String> {
        self.tables
            .difference(&self.found)
            .map(|(s, t)| format!("{s}.{t}"))
            .collect()
    }

    fn wanted(&self, schema: &str, table: &str) -> bool {
        self.tables
            .contains(&(schema.to_string(), table.to_string()))
    }

    fn decide(&mut self, h: &Header) -> Decision {
        let owner_table = h.name.split(' ').next().unwrap_or(h.name);
        match h.kind {
            "TABLE" => {
                if self.wanted(h.schema, h.name) {
                    self.found
                        .insert((h.schema.to_string(), h.name.to_string()));
                    Decision::Keep
                } else {
                    Decision::Drop
                }
            }
            "TABLE DATA" if self.wanted(h.schema, h.name) => Decision::Keep,
            "DEFAULT" | "CONSTRAINT" | "TRIGGER" | "CHECK CONSTRAINT"
                if self.wanted(h.schema, owner_table) =>
            {
                Decision::Keep
            }
            "FK CONSTRAINT" => {
                if self.wanted(h.schema, owner_table) {
                    self.dropped_foreign_keys += 1;
                }
                Decision::Drop
            }
            "INDEX" | "SEQUENCE OWNED BY" => Decision::Hold,
            "FUNCTION" | "PROCEDURE" => {
                let name = h.name.split('(').next().unwrap_or(h.name).replace('"', "");
                if self
                    .needed_functions
                    .contains(&format!("{}.{name}", h.schema))
                {
                    Decision::Keep
                } else {
                    Decision::Drop
                }
            }
            "SCHEMA"
            | "EXTENSION"
            | "TYPE"
            | "DOMAIN"
            | "SEQUENCE"
            | "SEQUENCE SET"
            | "COLLATION"
            | "CAST"
            | "OPERATOR"
            | "OPERATOR CLASS"
            | "OPERATOR FAMILY"
            | "TEXT SEARCH CONFIGURATION"
            | "TEXT SEARCH DICTIONARY"
            | "CONVERSION" => Decision::Keep,
            _ => Decision::Drop,
        }
    }

    /// Decides a held object from its SQL: an index on, or a sequence owned by, a wanted table.
    fn release_held(&mut self, out: &mut Vec<u8>) {
        if self.held.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.held);
        let keep = self.tables.iter().any(|(s, t)| {
            let q = format!("{s}.{t}");
            text.contains(&format!(" ON {q} "))
                || text.contains(&format!(" ON ONLY {q} "))
                || text.contains(&format!("OWNED BY {q}."))
        });
        if keep {
            out.extend_from_slice(&self.held);
        }
        self.held.clear();
    }

    fn emit(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        match self.decision {
            Decision::Keep => out.extend_from_slice(bytes),
            Decision::Hold => self.held.extend_from_slice(bytes),
            Decision::Drop => {}
        }
    }

    /// Filters one chunk, appending what passes to `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let mut rest = data;
        while !rest.is_empty() {
            let (part, ends_line) = match memchr::memchr(b'\n', rest) {
                Some(i) => (&rest[..=i], true),
                None => (rest, false),
            };
            rest = &rest[part.len()..];
            let room = HEAD_CAP.saturating_sub(self.head.len());
            self.head.extend_from_slice(&part[..part.len().min(room)]);
            match self.kind {
                LineKind::Unknown => {
                    self.pending.extend_from_slice(part);
                    if self.in_copy || self.head.len() >= 2 || ends_line {
                        if !self.in_copy && self.head.starts_with(b"--") {
                            self.kind = LineKind::Comment;
                        } else {
                            self.kind = LineKind::Other;
                            let pending = std::mem::take(&mut self.pending);
                            self.emit(&pending, out);
                        }
                    }
                }
                LineKind::Comment => self.pending.extend_from_slice(part),
                LineKind::Other => self.emit(part, out),
            }
            if ends_line {
                let head = std::mem::take(&mut self.head);
                let text = String::from_utf8_lossy(&head);
                let text = text.trim_end_matches(['\n', '\r']);
                if self.kind == LineKind::Comment {
                    if let Some(h) = parse_header(text) {
                        self.release_held(out);
                        self.decision = self.decide(&h);
                    }
                    // Comments always pass: the dump's header and trailer stay.
                    out.append(&mut self.pending);
                } else if self.in_copy {
                    if text == "\\." {
                        self.in_copy = false;
                    }
                } else if text.starts_with("COPY ") && text.ends_with(" FROM stdin;") {
                    self.in_copy = true;
                }
                self.pending.clear();
                self.kind = LineKind::Unknown;
            }
        }
    }

    /// Ends the stream: releases what is held.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.release_held(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "--
-- PostgreSQL database dump
--

SET statement_timeout = 0;

--
-- Name: mood; Type: TYPE; Schema: public; Owner: app
--

CREATE TYPE public.mood AS ENUM ('ok');

--
-- Name: touch(); Type: FUNCTION; Schema: public; Owner: app
--

CREATE FUNCTION public.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;

--
-- Name: report(); Type: FUNCTION; Schema: public; Owner: app
--

CREATE FUNCTION public.report() RETURNS SETOF public.b LANGUAGE sql AS $$ SELECT * FROM public.b $$;

--
-- Name: a; Type: TABLE; Schema: public; Owner: app
--

CREATE TABLE public.a (id integer NOT NULL, m public.mood);

--
-- Name: a_id_seq; Type: SEQUENCE; Schema: public; Owner: app
--

CREATE SEQUENCE public.a_id_seq;

--
-- Name: a_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: app
--

ALTER SEQUENCE public.a_id_seq OWNED BY public.a.id;

--
-- Name: b; Type: TABLE; Schema: public; Owner: app
--

CREATE TABLE public.b (id integer NOT NULL, a_id integer);

--
-- Name: v; Type: VIEW; Schema: public; Owner: app
--

CREATE VIEW public.v AS SELECT 1;

--
-- Name: a id; Type: DEFAULT; Schema: public; Owner: app
--

ALTER TABLE ONLY public.a ALTER COLUMN id SET DEFAULT nextval('public.a_id_seq');

--
-- Data for Name: a; Type: TABLE DATA; Schema: public; Owner: app
--

COPY public.a (id, m) FROM stdin;
1\tok
-- Name: b; Type: TABLE; Schema: public; Owner: app
\\.


--
-- Data for Name: b; Type: TABLE DATA; Schema: public; Owner: app
--

COPY public.b (id, a_id) FROM stdin;
7\t1
\\.


--
-- Name: a a_pkey; Type: CONSTRAINT; Schema: public; Owner: app
--

ALTER TABLE ONLY public.a ADD CONSTRAINT a_pkey PRIMARY KEY (id);

--
-- Name: a_m_idx; Type: INDEX; Schema: public; Owner: app
--

CREATE INDEX a_m_idx ON public.a USING btree (m);

--
-- Name: b_idx; Type: INDEX; Schema: public; Owner: app
--

CREATE INDEX b_idx ON public.b USING btree (a_id);

--
-- Name: a a_touch; Type: TRIGGER; Schema: public; Owner: app
--

CREATE TRIGGER a_touch BEFORE UPDATE ON public.a FOR EACH ROW EXECUTE FUNCTION public.touch();

--
-- Name: b b_a_fkey; Type: FK CONSTRAINT; Schema: public; Owner: app
--

ALTER TABLE ONLY public.b ADD CONSTRAINT b_a_fkey FOREIGN KEY (a_id) REFERENCES public.a(id);

--
-- PostgreSQL database dump complete
--

";

    fn filtered(tables: &[&str], chunk: usize) -> (String, TableFilter) {
        let mut f = TableFilter::new(&tables.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        f.prepare(DUMP.as_bytes()).unwrap();
        let mut out = Vec::new();
        for c in DUMP.as_bytes().chunks(chunk) {
            f.feed(c, &mut out);
        }
        f.finish(&mut out);
        (String::from_utf8(out).unwrap(), f)
    }

    #[test]
    fn keeps_the_table_its_parts_and_dependencies_only() {
        let (sql, f) = filtered(&["a"], 4096);
        for kept in [
            "SET statement_timeout",
            "CREATE TYPE public.mood",
            "CREATE TABLE public.a",
            "CREATE SEQUENCE public.a_id_seq",
            "OWNED BY public.a.id",
            "SET DEFAULT nextval",
            "COPY public.a (id, m) FROM stdin;\n1\tok\n-- Name: b; Type: TABLE; Schema: public; Owner: app\n\\.",
            "ADD CONSTRAINT a_pkey",
            "CREATE INDEX a_m_idx",
            "CREATE FUNCTION public.touch()",
            "CREATE TRIGGER a_touch",
            "-- PostgreSQL database dump complete",
        ] {
            assert!(sql.contains(kept), "missing {kept:?} in:\n{sql}");
        }
        for dropped in [
            "CREATE TABLE public.b",
            "CREATE VIEW",
            "COPY public.b",
            "7\t1",
            "b_idx ON",
            "FOREIGN KEY",
        ] {
            assert!(!sql.contains(dropped), "kept {dropped:?} in:\n{sql}");
        }
        assert_eq!(f.missing(), Vec::<String>::new());
        assert_eq!(
            crate::sqlscan::scan(sql.as_bytes()).copies,
            vec![2],
            "a data line that looks like a header stays data"
        );
    }

    #[test]
    fn chunking_does_not_matter_and_missing_tables_are_reported() {
        let (whole, _) = filtered(&["public.b", "nope"], 4096);
        for size in [1, 3, 17] {
            assert_eq!(
                filtered(&["public.b", "nope"], size).0,
                whole,
                "chunk {size}"
            );
        }
        let (_, f) = filtered(&["public.b", "nope"], 64);
        assert_eq!(f.missing(), vec!["public.nope".to_string()]);
        assert_eq!(f.dropped_foreign_keys, 1);
        assert!(whole.contains("CREATE INDEX b_idx") && !whole.contains("CREATE INDEX a_m_idx"));
    }
}
