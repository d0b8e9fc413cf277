//! Data hygiene for clones, on the SQL stream: masking columns and leaving
//! tables' data out, one row at a time (memory bounded by the longest row of
//! a masked table). Pure: bytes in, bytes out, no database.
//!
//! Masking is deterministic: the same input gives the same fake in every
//! column and every clone (a keyed SHA-256, the salt its key), so joins and
//! unique constraints on masked columns still hold, and two clones are equal.
//! Each fake has at least 2^78 values, so distinct inputs collide with a
//! chance below one in a billion even at ten million distinct values.
//! NULL stays NULL, except under `null`.
//!
//! A rule on a table applies to its partitions and inheritance children
//! too: pg_dump writes their rows under the children's names, and the
//! stream says who is whose child (`ATTACH PARTITION`, `INHERITS`) before
//! any row.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use super::{Line, LineKind, TableName, Visitor, filter::target_table};
use crate::core::config::Secret;
use crate::core::subset::{Count, Filter, Subset};

/// What becomes of a column's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Strategy {
    Null,
    Fixed(String),
    Email,
    Name,
    Phone,
    Text,
    Keep,
}

impl Strategy {
    /// `null`, `email`, `name`, `phone`, `text`, `keep`, or `fixed:VALUE`.
    fn parse(s: &str) -> Option<Strategy> {
        Some(match s {
            "null" => Strategy::Null,
            "email" => Strategy::Email,
            "name" => Strategy::Name,
            "phone" => Strategy::Phone,
            "text" => Strategy::Text,
            "keep" => Strategy::Keep,
            other => Strategy::Fixed(other.strip_prefix("fixed:")?.to_string()),
        })
    }

    /// A keyed fake: needs the salt.
    fn is_fake(&self) -> bool {
        matches!(
            self,
            Strategy::Email | Strategy::Name | Strategy::Phone | Strategy::Text
        )
    }
}

/// Which tables' columns are masked (table → column → strategy).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Rules {
    pub(crate) columns: BTreeMap<TableName, BTreeMap<String, Strategy>>,
    /// The `[subset]` section: the slice a team commits once.
    pub(crate) subset: crate::core::subset::Rules,
}

impl Rules {
    /// The rules file: `[mask]` with `"schema.table.column" = "strategy"`
    /// (a table without a schema is `public`; quote a part that holds a dot).
    pub(crate) fn parse_toml(text: &str) -> Result<Rules, String> {
        let value: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| e.message().trim().to_string())?;
        let mut rules = Rules::default();
        for key in value.keys() {
            match key.as_str() {
                "mask" => {}
                "subset" => rules.subset = crate::core::subset::Rules::from_toml(&value["subset"])?,
                "salt" => {
                    return Err(
                        "it holds a `salt`, and this file is committed: anyone with the salt can test guesses against the fakes. Remove it and set BACKUP_MASK_SALT (or BACKUP_MASK_SALT_FILE, a file outside the repository)"
                            .into(),
                    );
                }
                other => {
                    return Err(format!(
                        "unknown key '{other}': the file has a [mask] table (and a [subset] one)"
                    ));
                }
            }
        }
        let Some(mask) = value.get("mask") else {
            return Ok(rules);
        };
        let mask = mask.as_table().ok_or("`mask` must be a table")?;
        for (column, strategy) in mask {
            let parts = super::dotted(column.as_bytes());
            let (table, col) = match parts.as_slice() {
                [t, c] => (TableName::new("public", t), c.clone()),
                [s, t, c] => (TableName::new(s, t), c.clone()),
                _ => {
                    return Err(format!(
                        "'{column}' is not table.column or schema.table.column"
                    ));
                }
            };
            let text = strategy
                .as_str()
                .ok_or_else(|| format!("'{column}': the strategy must be a string"))?;
            let strategy = Strategy::parse(text).ok_or_else(|| {
                format!("'{column}': unknown strategy '{text}' (null, fixed:VALUE, email, name, phone, text, keep)")
            })?;
            rules
                .columns
                .entry(table)
                .or_default()
                .insert(col, strategy);
        }
        Ok(rules)
    }

    /// Masked columns (not `keep`), as `schema.table.column`.
    pub(crate) fn masked_columns(&self) -> Vec<String> {
        self.columns
            .iter()
            .flat_map(|(t, cols)| {
                cols.iter()
                    .filter(|(_, s)| **s != Strategy::Keep)
                    .map(move |(c, _)| format!("{t}.{c}"))
            })
            .collect()
    }

    /// Whether a rule makes keyed fakes (and so needs a salt).
    pub(crate) fn needs_salt(&self) -> bool {
        self.columns.values().flatten().any(|(_, s)| s.is_fake())
    }

    /// Rules naming a table or column `schema` (table → columns) does not have.
    pub(crate) fn missing(&self, schema: &BTreeMap<TableName, Vec<String>>) -> Vec<String> {
        let mut missing = Vec::new();
        for (table, cols) in &self.columns {
            match schema.get(table) {
                None => missing.push(format!("table {table}")),
                Some(have) => {
                    for c in cols.keys().filter(|c| !have.contains(c)) {
                        missing.push(format!("column {table}.{c}"));
                    }
                }
            }
        }
        missing
    }
}

/// `*` and `?` globs against `schema.table`; a pattern without a dot matches
/// the table name in any schema.
pub(crate) fn matches(pattern: &str, table: &TableName) -> bool {
    let subject = if pattern.contains('.') {
        table.to_string()
    } else {
        table.name.clone()
    };
    glob(pattern.as_bytes(), subject.as_bytes())
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

/// The keyed hash of a value, as bytes and as hex.
fn keyed(salt: &str, kind: &str, value: &str) -> ([u8; 32], String) {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([0]);
    h.update(kind.as_bytes());
    h.update([0]);
    h.update(value.as_bytes());
    let digest = h.finalize();
    (digest.into(), format!("{digest:x}"))
}

const FIRST: [&str; 16] = [
    "Avery", "Blake", "Casey", "Devon", "Emery", "Finley", "Harper", "Jordan", "Kendall", "Logan",
    "Morgan", "Parker", "Quinn", "Riley", "Sawyer", "Taylor",
];
const LAST: [&str; 16] = [
    "Adams", "Brooks", "Carter", "Diaz", "Ellis", "Foster", "Gray", "Hayes", "Irwin", "Jensen",
    "Keller", "Lane", "Moss", "Nash", "Owens", "Price",
];

/// The fake for one non-NULL value (`None`: SQL NULL).
pub(crate) fn fake(strategy: &Strategy, salt: &str, value: &str) -> Option<String> {
    let h = |kind| keyed(salt, kind, value);
    Some(match strategy {
        Strategy::Null => return None,
        Strategy::Keep => value.to_string(),
        Strategy::Fixed(v) => v.clone(),
        // 80 bits of hash in each fake.
        Strategy::Email => format!("user-{}@example.invalid", &h("email").1[..20]),
        Strategy::Name => {
            let (d, hex) = h("name");
            format!(
                "{} {}-{}",
                FIRST[usize::from(d[0] % 16)],
                LAST[usize::from(d[1] % 16)],
                &hex[4..24]
            )
        }
        Strategy::Phone => {
            // 24 digits: 10^24 values.
            let (d, _) = h("phone");
            let n = u128::from_be_bytes(d[..16].try_into().expect("16 bytes")) % 10u128.pow(24);
            let s = format!("{n:024}");
            format!("+1-555-{}-{}-{}", &s[..8], &s[8..16], &s[16..])
        }
        Strategy::Text => format!("text-{}", &h("text").1[..24]),
    })
}

/// COPY text format: `\N` is NULL; backslash escapes.
fn decode(field: &[u8]) -> Option<String> {
    if field == b"\\N" {
        return None;
    }
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 1 < field.len() {
            i += 1;
            out.push(match field[i] {
                b'n' => b'\n',
                b't' => b'\t',
                b'r' => b'\r',
                b'b' => 8,
                b'f' => 12,
                b'v' => 11,
                other => other,
            });
        } else {
            out.push(field[i]);
        }
        i += 1;
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

fn encode(value: Option<&str>, out: &mut Vec<u8>) {
    let Some(v) = value else {
        out.extend_from_slice(b"\\N");
        return;
    };
    for &b in v.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b => out.push(b),
        }
    }
}

/// The current data block.
struct Block<'a> {
    table: TableName,
    raw: String,
    /// (column index, strategy) to mask.
    masks: Vec<(usize, Strategy)>,
    excluded: bool,
    /// The subset's decision for this block's rows (before masking).
    filter: Option<Filter<'a>>,
}

/// The streaming rewriter: a [`Visitor`] whose `out` is the dump to load.
pub(crate) struct Rewriter<'a> {
    rules: &'a Rules,
    exclude: &'a [String],
    salt: Option<&'a Secret>,
    subset: Option<&'a Subset>,
    /// child → parents, from `ATTACH PARTITION` and `INHERITS`.
    parents: BTreeMap<TableName, Vec<TableName>>,
    block: Option<Block<'a>>,
    row: Vec<u8>,
    /// Rows per table (as the dump names it) that went out; left-out tables: 0.
    pub(crate) rows: BTreeMap<String, u64>,
    /// The rows of each data block sent, in order (what psql's tags must match).
    pub(crate) copies: Vec<u64>,
    pub(crate) excluded_tables: BTreeSet<String>,
    /// Tables whose data block was seen, with their columns.
    pub(crate) seen: BTreeMap<TableName, Vec<String>>,
    /// Columns masked, per table actually rewritten (partitions count on their own).
    pub(crate) masked: BTreeSet<String>,
    /// Rows the subset read and kept, per relation.
    pub(crate) subset_counts: BTreeMap<TableName, Count>,
    /// A data block the subset could not decide for: its rows were all left
    /// out, and the clone must fail (fail closed, never unfiltered).
    pub(crate) subset_error: Option<String>,
    pub(crate) out: Vec<u8>,
}

impl<'a> Rewriter<'a> {
    /// `salt` is required when a rule makes keyed fakes ([`Rules::needs_salt`]).
    pub(crate) fn new(
        rules: &'a Rules,
        exclude: &'a [String],
        salt: Option<&'a Secret>,
    ) -> Rewriter<'a> {
        Rewriter {
            rules,
            exclude,
            salt,
            subset: None,
            parents: BTreeMap::new(),
            block: None,
            row: Vec::new(),
            rows: BTreeMap::new(),
            copies: Vec::new(),
            excluded_tables: BTreeSet::new(),
            seen: BTreeMap::new(),
            masked: BTreeSet::new(),
            subset_counts: BTreeMap::new(),
            subset_error: None,
            out: Vec::new(),
        }
    }

    /// Keeps only the rows `subset` decided on, in the tables it decided for.
    pub(crate) fn with_subset(mut self, subset: Option<&'a Subset>) -> Rewriter<'a> {
        self.subset = subset;
        self
    }

    /// The tables the stream showed with their columns: those with a data
    /// block, and their ancestors (a partitioned table has no block of its own).
    pub(crate) fn schema(&self) -> BTreeMap<TableName, Vec<String>> {
        let mut schema = self.seen.clone();
        for (table, cols) in &self.seen {
            for ancestor in self.lineage(table).into_iter().skip(1) {
                let known = schema.entry(ancestor).or_default();
                for c in cols {
                    if !known.contains(c) {
                        known.push(c.clone());
                    }
                }
            }
        }
        schema
    }

    /// `table` and every table it descends from, nearest first.
    fn lineage(&self, table: &TableName) -> Vec<TableName> {
        let mut out = vec![table.clone()];
        let mut i = 0;
        while i < out.len() && out.len() < 64 {
            for p in self.parents.get(&out[i]).into_iter().flatten() {
                if !out.contains(p) {
                    out.push(p.clone());
                }
            }
            i += 1;
        }
        out
    }

    /// Learns who inherits from whom from the schema part of the stream.
    fn learn(&mut self, entry: Option<&super::TocEntry>, line: &[u8]) {
        let Some(e) = entry else { return };
        let text = line.trim_ascii();
        if e.kind == "TABLE ATTACH"
            || (e.kind == "TABLE" && contains_word(text, b"ATTACH PARTITION"))
        {
            if let (Some(parent), Some(at)) = (target_table(text), find(text, b"ATTACH PARTITION "))
                && let Some((child, _)) =
                    super::parse_qualified(&text[at + b"ATTACH PARTITION ".len()..])
            {
                self.parents.entry(child).or_default().push(parent);
            }
        } else if e.kind == "TABLE"
            && let Some(list) = text.strip_prefix(b"INHERITS (")
        {
            let child = TableName::new(&e.schema, &e.name);
            let mut rest = list;
            while let Some((parent, used)) = super::parse_qualified(rest) {
                self.parents.entry(child.clone()).or_default().push(parent);
                rest = &rest[used..];
                match rest.strip_prefix(b", ") {
                    Some(r) => rest = r,
                    None => break,
                }
            }
        }
    }

    fn start_block(&mut self, header: &super::CopyHeader, line: &[u8]) {
        let lineage = self.lineage(&header.table);
        let excluded = self
            .exclude
            .iter()
            .any(|p| lineage.iter().any(|t| matches(p, t)));
        let mut masks = Vec::new();
        for (i, c) in header.columns.iter().enumerate() {
            // The nearest table with a rule for this column decides.
            let rule = lineage
                .iter()
                .find_map(|t| self.rules.columns.get(t).and_then(|m| m.get(c)));
            if let Some(s) = rule.filter(|s| **s != Strategy::Keep) {
                masks.push((i, s.clone()));
                self.masked.insert(format!("{}.{c}", header.table));
            }
        }
        self.seen
            .insert(header.table.clone(), header.columns.clone());
        self.rows.entry(header.raw.clone()).or_insert(0);
        let mut excluded = excluded;
        let filter = match self
            .subset
            .map(|s| s.filter(&header.table, &header.columns))
        {
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                self.subset_error.get_or_insert(e);
                excluded = true;
                None
            }
            None => None,
        };
        if excluded {
            self.excluded_tables.insert(header.raw.clone());
        } else {
            self.out.extend_from_slice(line);
        }
        self.block = Some(Block {
            table: header.table.clone(),
            raw: header.raw.clone(),
            masks,
            excluded,
            filter,
        });
    }

    fn mask_row(&mut self, row: &[u8]) {
        let block = self.block.as_ref().expect("a row is in a block");
        let salt = self.salt.map_or("", Secret::expose);
        let body = row.strip_suffix(b"\n").unwrap_or(row);
        for (i, field) in body.split(|b| *b == b'\t').enumerate() {
            if i > 0 {
                self.out.push(b'\t');
            }
            match block.masks.iter().find(|(m, _)| *m == i) {
                Some((_, strategy)) => {
                    let masked = decode(field).and_then(|v| fake(strategy, salt, &v));
                    encode(masked.as_deref(), &mut self.out);
                }
                None => self.out.extend_from_slice(field),
            }
        }
        if row.ends_with(b"\n") {
            self.out.push(b'\n');
        }
    }
}

impl Visitor for Rewriter<'_> {
    fn piece(&mut self, line: &Line<'_>, bytes: &[u8]) {
        match line.kind {
            LineKind::CopyStart(header) => self.start_block(header, bytes),
            LineKind::CopyRow => {
                let block = self.block.as_mut().expect("a row is in a block");
                if block.excluded {
                    return;
                }
                if let Some(filter) = block.filter.as_mut() {
                    // The whole row decides: gather its pieces first.
                    self.row.extend_from_slice(bytes);
                    if !line.last {
                        return;
                    }
                    let row = std::mem::take(&mut self.row);
                    let kept = filter.keeps(&row);
                    self.subset_counts
                        .entry(block.table.clone())
                        .or_default()
                        .add(&row, kept);
                    if kept.is_none() {
                        return;
                    }
                    *self
                        .rows
                        .get_mut(&block.raw)
                        .expect("counted at the header") += 1;
                    if block.masks.is_empty() {
                        self.out.extend_from_slice(&row);
                    } else {
                        self.mask_row(&row);
                    }
                    return;
                }
                if line.first {
                    *self
                        .rows
                        .get_mut(&block.raw)
                        .expect("counted at the header") += 1;
                }
                if block.masks.is_empty() {
                    self.out.extend_from_slice(bytes);
                } else if line.first && line.last {
                    self.mask_row(bytes);
                } else {
                    self.row.extend_from_slice(bytes);
                    if line.last {
                        let row = std::mem::take(&mut self.row);
                        self.mask_row(&row);
                    }
                }
            }
            LineKind::CopyEnd => {
                if let Some(block) = self.block.take() {
                    if !block.excluded {
                        self.out.extend_from_slice(bytes);
                        self.copies.push(self.rows[&block.raw]);
                    }
                    let _ = block.table;
                }
            }
            LineKind::Meta => {}
            LineKind::Sql | LineKind::Comment => {
                if line.first && line.last {
                    self.learn(line.entry, bytes);
                }
                self.out.extend_from_slice(bytes);
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

fn contains_word(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::dump::Reader;

    fn rules() -> Rules {
        Rules::parse_toml(
            r#"
[mask]
"customers.email" = "email"
"public.customers.name" = "name"
"customers.phone" = "phone"
"customers.notes" = "null"
"customers.tier" = "fixed:basic"
"customers.id" = "keep"
"#,
        )
        .unwrap()
    }

    fn run(input: &str, exclude: &[String]) -> (String, BTreeMap<String, u64>) {
        let rules = rules();
        let salt = Secret::new("test");
        let mut r = Rewriter::new(&rules, exclude, Some(&salt));
        let mut reader = Reader::new();
        let mut out = Vec::new();
        // Byte by byte: lines split anywhere still come out whole.
        for b in input.as_bytes() {
            reader.feed(std::slice::from_ref(b), &mut r).unwrap();
            out.append(&mut r.out);
        }
        assert_eq!(reader.finish(&mut r).check(), Ok(()));
        out.append(&mut r.out);
        (String::from_utf8(out).unwrap(), r.rows)
    }

    const HEAD: &str = "--\n-- PostgreSQL database dump\n--\n\nSET x = 1;\n";
    const TAIL: &str = "SELECT 1;\n\n--\n-- PostgreSQL database dump complete\n--\n\n";

    fn dump(body: &str) -> String {
        format!("{HEAD}{body}{TAIL}")
    }

    const DATA: &str = "COPY public.customers (id, name, email, phone, notes, tier) FROM stdin;\n1\tAnn Lee\tann@corp.com\t555-1234\tsecret\\tnote\tgold\n2\tBob\tann@corp.com\t\\N\t\\N\tgold\n\\.\nCOPY public.audit_log (id, what) FROM stdin;\n1\tlogin\n\\.\n";

    #[test]
    fn masks_deterministically_and_keeps_the_rest() {
        let (out, rows) = run(&dump(DATA), &[]);
        let lines: Vec<&str> = out.lines().collect();
        let a: Vec<&str> = lines[6].split('\t').collect();
        let b: Vec<&str> = lines[7].split('\t').collect();
        assert_eq!(a[0], "1");
        assert!(a[1].contains(' ') && a[1] != "Ann Lee", "{}", a[1]);
        assert!(a[2].ends_with("@example.invalid"));
        assert_eq!(a[2], b[2], "equal inputs, equal fakes");
        assert!(a[3].starts_with("+1-555-"));
        assert_eq!((a[4], b[4]), ("\\N", "\\N"));
        assert_eq!((a[5], b[5]), ("basic", "basic"));
        assert_eq!(b[3], "\\N", "NULL stays NULL");
        assert!(!out.contains("ann@corp.com") && !out.contains("secret"));
        assert!(out.contains("\n1\tlogin\n"));
        assert_eq!(rows["public.customers"], 2);
        assert_eq!(run(&dump(DATA), &[]).0, out, "the same in every run");
    }

    #[test]
    fn excluded_tables_lose_their_data_block() {
        let (out, rows) = run(&dump(DATA), &["audit_*".to_string()]);
        assert!(
            !out.contains("audit_log") && out.contains("SELECT 1;\n"),
            "{out}"
        );
        assert_eq!(rows["public.audit_log"], 0);
        let t = |s: &str, n: &str| TableName::new(s, n);
        assert!(matches("public.audit_*", &t("public", "audit_log")));
        assert!(matches("audit_log", &t("sales", "audit_log")));
        assert!(!matches("public.audit_log", &t("sales", "audit_log")));
    }

    #[test]
    fn rules_on_a_parent_reach_its_partitions_and_children() {
        let body = "--\n-- Name: customers_p1; Type: TABLE; Schema: public; Owner: app\n--\n\nCREATE TABLE public.customers_p1 (\n    id integer\n);\n\n\
--\n-- Name: customers_p1; Type: TABLE ATTACH; Schema: public; Owner: app\n--\n\nALTER TABLE ONLY public.customers ATTACH PARTITION public.customers_p1 FOR VALUES FROM (0) TO (10);\n\n\
--\n-- Name: vip; Type: TABLE; Schema: public; Owner: app\n--\n\nCREATE TABLE public.vip (\n    level integer\n)\nINHERITS (public.customers_p1);\n\n\
COPY public.customers_p1 (id, name, email, phone, notes, tier) FROM stdin;\n1\tAnn\tann@corp.com\t\\N\t\\N\tgold\n\\.\n\
COPY public.vip (id, name, email, phone, notes, tier, level) FROM stdin;\n2\tBob\tbob@corp.com\t\\N\t\\N\tgold\t3\n\\.\n";
        let (out, _) = run(&dump(body), &[]);
        assert!(!out.contains("@corp.com"), "{out}");
        let (out, rows) = run(&dump(body), &["public.customers".to_string()]);
        assert!(!out.contains("Ann") && !out.contains("Bob"), "{out}");
        assert_eq!(rows["public.vip"], 0);
    }

    #[test]
    fn fakes_are_wide_enough() {
        let salt = "s";
        let e = fake(&Strategy::Email, salt, "a").unwrap();
        assert_eq!(e.len(), "user-@example.invalid".len() + 20);
        let p = fake(&Strategy::Phone, salt, "a").unwrap();
        assert_eq!(
            p.chars().filter(char::is_ascii_digit).count(),
            1 + 3 + 24,
            "{p}"
        );
        let n = fake(&Strategy::Name, salt, "a").unwrap();
        assert!(n.rsplit('-').next().unwrap().len() == 20, "{n}");
        // Different inputs, different fakes (spot check of a few thousand).
        let set: BTreeSet<String> = (0..5000)
            .map(|i| fake(&Strategy::Phone, salt, &i.to_string()).unwrap())
            .collect();
        assert_eq!(set.len(), 5000);
    }

    #[test]
    fn rules_files() {
        let r = rules();
        assert_eq!(
            r.columns[&TableName::new("public", "customers")]["tier"],
            Strategy::Fixed("basic".into())
        );
        assert_eq!(r.masked_columns().len(), 5);
        assert!(r.needs_salt());
        let schema = BTreeMap::from([(
            TableName::new("public", "customers"),
            vec![
                "id".to_string(),
                "name".into(),
                "email".into(),
                "phone".into(),
                "tier".into(),
            ],
        )]);
        assert_eq!(r.missing(&schema), ["column public.customers.notes"]);
        assert!(
            Rules::parse_toml("[mask]\n\"a.b\" = \"scramble\"")
                .unwrap_err()
                .contains("unknown strategy 'scramble'")
        );
        assert!(
            Rules::parse_toml("[mask]\n\"ab\" = \"null\"")
                .unwrap_err()
                .contains("not table.column")
        );
        assert!(
            Rules::parse_toml("salt = \"x\"\n[mask]\n")
                .unwrap_err()
                .contains("BACKUP_MASK_SALT")
        );
        let quoted =
            Rules::parse_toml("[mask]\n'\"Sales\".\"Order.Items\".\"Note\"' = \"null\"").unwrap();
        assert!(
            quoted
                .columns
                .contains_key(&TableName::new("Sales", "Order.Items"))
        );
    }
}
