//! Selective recovery: a streaming filter over a plain dump that keeps the
//! named tables (definition, defaults, data, indexes, constraints, triggers,
//! owned sequences) and what they may depend on (schemas, types, domains,
//! sequences, extensions, and the functions their definitions call), and
//! drops every other table, view, function and their data.
//!
//! pg_dump heads every object with a header such as
//! `-- Name: actor; Type: TABLE; Schema: public; Owner: app`. Tables and
//! their data are decided from it. The parts of a table (indexes,
//! constraints, triggers, defaults, owned sequences, comments and grants)
//! are held back while they are read and decided from their SQL, which
//! names the table as SQL does (`public."Order"`): their headers do not name
//! it reliably. Functions are held back until a kept object calls them.
//! Foreign keys are dropped: they reference tables that are not restored.

use std::collections::{BTreeMap, BTreeSet};

use super::{Line, LineKind, TableName, TocEntry, Visitor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Keep,
    Drop,
    /// Held until the object's SQL names its table.
    Part,
    /// A function: held until something kept calls it.
    Function,
}

/// Held object text: enough for any part's statements (functions are whole).
const PART_CAP: usize = 1 << 20;

#[derive(Debug)]
pub(crate) struct TableFilter {
    tables: BTreeSet<TableName>,
    decision: Decision,
    entry: Option<TocEntry>,
    held: Vec<u8>,
    /// Functions not released yet: how kept SQL calls them (`schema.name(`) and their text.
    functions: Vec<(String, Vec<u8>)>,
    /// Tables whose definition was kept (to report names that matched nothing).
    pub(crate) found: BTreeSet<TableName>,
    pub(crate) dropped_foreign_keys: usize,
    /// Rows of each data block passed on, in order, and per table.
    pub(crate) copies: Vec<u64>,
    pub(crate) rows: BTreeMap<String, u64>,
    block: Option<(String, u64)>,
    /// What passes, for the caller to take after each chunk.
    pub(crate) out: Vec<u8>,
}

impl TableFilter {
    pub(crate) fn new(specs: &[String]) -> TableFilter {
        TableFilter {
            tables: specs.iter().map(|s| TableName::from_spec(s)).collect(),
            decision: Decision::Keep,
            entry: None,
            held: Vec::new(),
            functions: Vec::new(),
            found: BTreeSet::new(),
            dropped_foreign_keys: 0,
            copies: Vec::new(),
            rows: BTreeMap::new(),
            block: None,
            out: Vec::new(),
        }
    }

    /// The requested tables the dump did not define.
    pub(crate) fn missing(&self) -> Vec<String> {
        self.tables
            .difference(&self.found)
            .map(TableName::to_string)
            .collect()
    }

    fn wanted(&self, schema: &str, name: &str) -> bool {
        self.tables.contains(&TableName::new(schema, name))
    }

    fn decide(&mut self, e: &TocEntry) -> Decision {
        match e.kind.as_str() {
            "TABLE" | "FOREIGN TABLE" => {
                if self.wanted(&e.schema, &e.name) {
                    self.found.insert(TableName::new(&e.schema, &e.name));
                    Decision::Keep
                } else {
                    Decision::Drop
                }
            }
            "TABLE DATA" if self.wanted(&e.schema, &e.name) => Decision::Keep,
            "DEFAULT" | "CONSTRAINT" | "CHECK CONSTRAINT" | "FK CONSTRAINT" | "TRIGGER"
            | "INDEX" | "SEQUENCE OWNED BY" | "COMMENT" | "ACL" | "POLICY" | "RULE"
            | "ROW SECURITY" => Decision::Part,
            "FUNCTION" | "PROCEDURE" => Decision::Function,
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

    /// The end of an object: a held part or function is decided now.
    fn close(&mut self) {
        let held = std::mem::take(&mut self.held);
        match self.decision {
            Decision::Part => {
                let fk = self
                    .entry
                    .as_ref()
                    .is_some_and(|e| e.kind == "FK CONSTRAINT");
                let keep = target_table(&held).is_some_and(|t| self.tables.contains(&t));
                if keep && fk {
                    self.dropped_foreign_keys += 1;
                } else if keep {
                    self.emit(&held);
                }
            }
            Decision::Function => {
                if let Some(e) = &self.entry {
                    let name = e.name.split('(').next().unwrap_or(&e.name);
                    let call = format!("{}(", TableName::new(&e.schema, name).quoted());
                    self.functions.push((call, held));
                }
            }
            Decision::Keep | Decision::Drop => {}
        }
    }

    /// Passes kept SQL on, after the held functions it calls (and those they call).
    fn emit(&mut self, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        let mut i = 0;
        while i < self.functions.len() {
            if text.contains(&self.functions[i].0) {
                let (_, body) = self.functions.remove(i);
                self.emit(&body);
                i = 0;
            } else {
                i += 1;
            }
        }
        self.out.extend_from_slice(bytes);
    }
}

impl Visitor for TableFilter {
    fn piece(&mut self, line: &Line<'_>, bytes: &[u8]) {
        if line.first
            && *line.kind == LineKind::Comment
            && line.entry.is_some()
            && line.entry != self.entry.as_ref()
        {
            self.close();
            let entry = line.entry.cloned().expect("checked");
            self.decision = self.decide(&entry);
            self.entry = Some(entry);
        }
        match (line.kind, self.decision) {
            // Comments pass (the dump's header and trailer); psql's commands never do.
            (LineKind::Comment, _) => self.out.extend_from_slice(bytes),
            (LineKind::Meta, _) => {}
            (LineKind::CopyStart(h), Decision::Keep) => {
                self.block = Some((h.raw.clone(), 0));
                self.out.extend_from_slice(bytes);
            }
            (LineKind::CopyRow, Decision::Keep) => {
                if let (Some((_, n)), true) = (&mut self.block, line.first) {
                    *n += 1;
                }
                self.out.extend_from_slice(bytes);
            }
            (LineKind::CopyEnd, Decision::Keep) => {
                if let Some((table, n)) = self.block.take() {
                    self.copies.push(n);
                    *self.rows.entry(table).or_default() += n;
                }
                self.out.extend_from_slice(bytes);
            }
            (_, Decision::Keep) => self.emit(bytes),
            (_, Decision::Part | Decision::Function) => {
                if self.held.len() < PART_CAP || self.decision == Decision::Function {
                    self.held.extend_from_slice(bytes);
                }
            }
            (_, Decision::Drop) => {}
        }
    }

    fn end(&mut self) {
        self.close();
    }
}

/// The table a part's first statement is about: `ALTER TABLE [ONLY] t`,
/// `CREATE INDEX i ON [ONLY] t`, `CREATE TRIGGER x ... ON t`, `COMMENT ON
/// TABLE t` / `COLUMN t.c`, `GRANT ... ON TABLE t`, `CREATE POLICY p ON t`,
/// `CREATE RULE r AS ON e TO t`, `ALTER SEQUENCE s OWNED BY t.c`.
pub(crate) fn target_table(sql: &[u8]) -> Option<TableName> {
    let words = super::words(sql);
    let upper = |i: usize| words.get(i).and_then(super::Word::keyword);
    let find = |seq: &[&str]| {
        (0..words.len()).find(|&i| (0..seq.len()).all(|k| upper(i + k).as_deref() == Some(seq[k])))
    };
    // The dotted name starting at word `i`, after an optional ONLY.
    let parts_at = |mut i: usize| {
        if upper(i).as_deref() == Some("ONLY") {
            i += 1;
        }
        Some(super::dotted(&sql[words.get(i)?.offset..]))
    };
    let table = |parts: &[String], column: bool| match (parts, column) {
        ([s, t], false) | ([s, t, _], true) => Some(TableName::new(s, t)),
        ([t], false) | ([t, _], true) => Some(TableName::new("public", t)),
        _ => None,
    };
    if let Some(i) = find(&["ALTER", "TABLE"]) {
        return table(&parts_at(i + 2)?, false);
    }
    if let Some(i) = find(&["OWNED", "BY"]) {
        return table(&parts_at(i + 2)?, true);
    }
    if let Some(i) = find(&["ON", "TABLE"]) {
        return table(&parts_at(i + 2)?, false);
    }
    if let Some(i) = find(&["ON", "COLUMN"]) {
        return table(&parts_at(i + 2)?, true);
    }
    if let Some(i) = find(&["AS", "ON"]) {
        let to = (i..words.len()).find(|&k| upper(k).as_deref() == Some("TO"))?;
        return table(&parts_at(to + 1)?, false);
    }
    // CREATE INDEX, TRIGGER, POLICY: `ON` and the table.
    if upper(0).as_deref() != Some("CREATE") {
        return None;
    }
    table(&parts_at(find(&["ON"])? + 1)?, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::dump::Reader;

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
-- Name: Order; Type: TABLE; Schema: public; Owner: app
--

CREATE TABLE public.\"Order\" (id integer NOT NULL);

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
-- Name: order_id_idx; Type: INDEX; Schema: public; Owner: app
--

CREATE INDEX order_id_idx ON public.\"Order\" USING btree (id);

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
        let mut r = Reader::new();
        let mut out = Vec::new();
        for c in DUMP.as_bytes().chunks(chunk) {
            r.feed(c, &mut f).unwrap();
            out.append(&mut f.out);
        }
        assert_eq!(r.finish(&mut f).check(), Ok(()));
        out.append(&mut f.out);
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
        assert!(
            sql.find("CREATE FUNCTION public.touch()") < sql.find("CREATE TRIGGER a_touch"),
            "a function comes before the trigger that calls it"
        );
        for dropped in [
            "CREATE TABLE public.b",
            "CREATE VIEW",
            "COPY public.b",
            "7\t1",
            "b_idx ON",
            "FOREIGN KEY",
            "CREATE FUNCTION public.report",
            "CREATE TABLE public.\"Order\"",
        ] {
            assert!(!sql.contains(dropped), "kept {dropped:?} in:\n{sql}");
        }
        assert_eq!(f.missing(), Vec::<String>::new());
        assert_eq!(
            crate::core::dump::scan::scan(sql.as_bytes()).copies,
            vec![2],
            "a data line that looks like a header stays data"
        );
    }

    #[test]
    fn a_quoted_name_keeps_its_indexes() {
        let (sql, f) = filtered(&["public.\"Order\""], 64);
        assert!(sql.contains("CREATE TABLE public.\"Order\""), "{sql}");
        assert!(sql.contains("CREATE INDEX order_id_idx"), "{sql}");
        assert!(f.missing().is_empty());
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

    #[test]
    fn targets_of_parts() {
        let t = |sql: &str| target_table(sql.as_bytes()).map(|t| t.to_string());
        assert_eq!(
            t("CREATE UNIQUE INDEX \"X on y\" ON ONLY \"S\".\"T t\" USING btree (a);").as_deref(),
            Some("S.T t")
        );
        assert_eq!(
            t("ALTER TABLE ONLY public.a ADD CONSTRAINT c CHECK (x <> 'ON public.b');").as_deref(),
            Some("public.a")
        );
        assert_eq!(t("CREATE TRIGGER x AFTER INSERT ON public.\"Order\" FOR EACH ROW EXECUTE FUNCTION f();").as_deref(), Some("public.Order"));
        assert_eq!(
            t("COMMENT ON COLUMN public.a.id IS 'ON public.b';").as_deref(),
            Some("public.a")
        );
        assert_eq!(
            t("GRANT SELECT ON TABLE public.a TO reader;").as_deref(),
            Some("public.a")
        );
        assert_eq!(
            t("CREATE RULE r AS ON UPDATE TO public.a DO INSTEAD NOTHING;").as_deref(),
            Some("public.a")
        );
        assert_eq!(
            t("ALTER SEQUENCE public.s OWNED BY public.\"Order\".id;").as_deref(),
            Some("public.Order")
        );
        assert_eq!(t("COMMENT ON FUNCTION public.f() IS 'x';"), None);
    }
}
