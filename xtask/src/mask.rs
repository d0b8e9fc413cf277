//! Data hygiene for clones, on the SQL stream: masking columns and leaving
//! tables' data out, one line at a time (memory bounded by the longest row).
//! Pure: bytes in, bytes out, no database.
//!
//! Masking is deterministic: the same input gives the same fake in every
//! column and every clone (a keyed SHA-256, `salt` the key), so joins and
//! unique constraints on masked columns still hold, and two clones are equal.
//! NULL stays NULL, except under `null`.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// What becomes of a column's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
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
    pub fn parse(s: &str) -> Option<Strategy> {
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
}

/// Which tables' columns are masked (`schema.table` → column → strategy),
/// and the key of the fakes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    pub columns: BTreeMap<String, BTreeMap<String, Strategy>>,
    pub salt: String,
}

impl Rules {
    /// The rules file: `[mask]` with `"schema.table.column" = "strategy"`
    /// (a table without a schema is `public`), optional top-level `salt`.
    pub fn parse_toml(text: &str) -> Result<Rules, String> {
        let value: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| e.message().to_string())?;
        let mut rules = Rules {
            salt: value
                .get("salt")
                .and_then(|s| s.as_str())
                .unwrap_or("xtask-db-clone")
                .to_string(),
            ..Rules::default()
        };
        for key in value.keys() {
            if key != "salt" && key != "mask" {
                return Err(format!(
                    "unknown key '{key}': the file has `salt` and a [mask] table"
                ));
            }
        }
        let Some(mask) = value.get("mask") else {
            return Ok(rules);
        };
        let mask = mask.as_table().ok_or("`mask` must be a table")?;
        for (column, strategy) in mask {
            let parts: Vec<&str> = column.split('.').collect();
            let (table, col) = match parts.as_slice() {
                [t, c] => (format!("public.{t}"), c.to_string()),
                [s, t, c] => (format!("{s}.{t}"), c.to_string()),
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
    pub fn masked_columns(&self) -> Vec<String> {
        self.columns
            .iter()
            .flat_map(|(t, cols)| {
                cols.iter()
                    .filter(|(_, s)| **s != Strategy::Keep)
                    .map(move |(c, _)| format!("{t}.{c}"))
            })
            .collect()
    }

    /// Rules naming a table or column `schema` (table → columns) does not have.
    pub fn missing(&self, schema: &BTreeMap<String, Vec<String>>) -> Vec<String> {
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
pub fn matches(pattern: &str, table: &str) -> bool {
    let subject = if pattern.contains('.') {
        table
    } else {
        table.rsplit('.').next().unwrap_or(table)
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

fn keyed(salt: &str, kind: &str, value: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([0]);
    h.update(kind.as_bytes());
    h.update([0]);
    h.update(value.as_bytes());
    h.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
pub fn fake(strategy: &Strategy, salt: &str, value: &str) -> Option<String> {
    let h = |kind| keyed(salt, kind, value);
    Some(match strategy {
        Strategy::Null => return None,
        Strategy::Keep => value.to_string(),
        Strategy::Fixed(v) => v.clone(),
        Strategy::Email => format!("user-{}@example.invalid", hex(&h("email")[..8])),
        Strategy::Name => {
            let d = h("name");
            format!(
                "{} {}-{}",
                FIRST[usize::from(d[0] % 16)],
                LAST[usize::from(d[1] % 16)],
                hex(&d[2..6])
            )
        }
        Strategy::Phone => {
            let d = h("phone");
            let n = u64::from_be_bytes(d[..8].try_into().expect("8 bytes")) % 10_000_000_000;
            format!("+1-555-{n:010}")
        }
        Strategy::Text => format!("text-{}", hex(&h("text")[..12])),
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

/// `COPY public.t (a, b) FROM stdin;` → (`public.t`, [a, b]), identifiers unquoted.
pub fn parse_copy_header(line: &str) -> Option<(String, Vec<String>)> {
    let rest = line.strip_prefix("COPY ")?.trim_end();
    let rest = rest.strip_suffix(" FROM stdin;")?;
    let (table, cols) = match rest.find(" (") {
        Some(i) => (&rest[..i], &rest[i + 2..rest.len().saturating_sub(1)]),
        None => (rest, ""),
    };
    let unquote = |s: &str| {
        let s = s.trim();
        s.strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .map_or_else(|| s.to_string(), |x| x.replace("\"\"", "\""))
    };
    let table = match table.split_once('.') {
        Some((s, t)) => format!("{}.{}", unquote(s), unquote(t)),
        None => format!("public.{}", unquote(table)),
    };
    let cols = if cols.is_empty() {
        Vec::new()
    } else {
        cols.split(", ").map(unquote).collect()
    };
    Some((table, cols))
}

enum State {
    Sql,
    /// In a COPY block: (column index, strategy) to mask, or the block is left out.
    Copy {
        table: String,
        masks: Vec<(usize, Strategy)>,
        excluded: bool,
    },
}

/// The streaming rewriter: feed the dump, get the dump to load.
pub struct Rewriter<'a> {
    rules: &'a Rules,
    exclude: &'a [String],
    state: State,
    partial: Vec<u8>,
    /// Rows per table that went out (left-out tables: 0), and which were left out.
    pub rows: BTreeMap<String, u64>,
    pub excluded_tables: Vec<String>,
    /// Tables whose COPY header was seen, with their columns.
    pub seen: BTreeMap<String, Vec<String>>,
}

impl<'a> Rewriter<'a> {
    pub fn new(rules: &'a Rules, exclude: &'a [String]) -> Rewriter<'a> {
        Rewriter {
            rules,
            exclude,
            state: State::Sql,
            partial: Vec::new(),
            rows: BTreeMap::new(),
            excluded_tables: Vec::new(),
            seen: BTreeMap::new(),
        }
    }

    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let mut rest = chunk;
        while let Some(i) = memchr::memchr(b'\n', rest) {
            if self.partial.is_empty() {
                self.line(&rest[..=i], out);
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&rest[..=i]);
                self.line(&line, out);
            }
            rest = &rest[i + 1..];
        }
        self.partial.extend_from_slice(rest);
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line, out);
        }
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        match &mut self.state {
            State::Sql => {
                if line.starts_with(b"COPY ")
                    && let Some((table, cols)) = parse_copy_header(&String::from_utf8_lossy(line))
                {
                    let excluded = self.exclude.iter().any(|p| matches(p, &table));
                    let masks = self
                        .rules
                        .columns
                        .get(&table)
                        .map(|m| {
                            cols.iter()
                                .enumerate()
                                .filter_map(|(i, c)| {
                                    m.get(c)
                                        .filter(|s| **s != Strategy::Keep)
                                        .map(|s| (i, s.clone()))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    self.seen.insert(table.clone(), cols);
                    self.rows.entry(table.clone()).or_insert(0);
                    if excluded {
                        self.excluded_tables.push(table.clone());
                    } else {
                        out.extend_from_slice(line);
                    }
                    self.state = State::Copy {
                        table,
                        masks,
                        excluded,
                    };
                    return;
                }
                out.extend_from_slice(line);
            }
            State::Copy {
                table,
                masks,
                excluded,
            } => {
                if line == b"\\.\n" || line == b"\\." {
                    if !*excluded {
                        out.extend_from_slice(line);
                    }
                    self.state = State::Sql;
                    return;
                }
                if *excluded {
                    return;
                }
                *self
                    .rows
                    .get_mut(table.as_str())
                    .expect("counted at the header") += 1;
                if masks.is_empty() {
                    out.extend_from_slice(line);
                    return;
                }
                let body = line.strip_suffix(b"\n").unwrap_or(line);
                for (i, field) in body.split(|b| *b == b'\t').enumerate() {
                    if i > 0 {
                        out.push(b'\t');
                    }
                    match masks.iter().find(|(m, _)| *m == i) {
                        Some((_, strategy)) => {
                            let value = decode(field);
                            let masked = value
                                .as_deref()
                                .and_then(|v| fake(strategy, &self.rules.salt, v));
                            encode(masked.as_deref(), out);
                        }
                        None => out.extend_from_slice(field),
                    }
                }
                if line.ends_with(b"\n") {
                    out.push(b'\n');
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules::parse_toml(
            r#"
salt = "test"
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
        let mut r = Rewriter::new(&rules, exclude);
        let mut out = Vec::new();
        // Byte by byte: lines split anywhere still come out whole.
        for b in input.as_bytes() {
            r.feed(std::slice::from_ref(b), &mut out);
        }
        r.finish(&mut out);
        (String::from_utf8(out).unwrap(), r.rows)
    }

    const DUMP: &str = "SET x = 1;\nCOPY public.customers (id, name, email, phone, notes, tier) FROM stdin;\n1\tAnn Lee\tann@corp.com\t555-1234\tsecret\\tnote\tgold\n2\tBob\tann@corp.com\t\\N\t\\N\tgold\n\\.\nCOPY public.audit_log (id, what) FROM stdin;\n1\tlogin\n\\.\nSELECT 1;\n";

    #[test]
    fn masks_deterministically_and_keeps_the_rest() {
        let (out, rows) = run(DUMP, &[]);
        let lines: Vec<&str> = out.lines().collect();
        let a: Vec<&str> = lines[2].split('\t').collect();
        let b: Vec<&str> = lines[3].split('\t').collect();
        assert_eq!(a[0], "1");
        assert!(a[1].contains(' ') && a[1] != "Ann Lee", "{}", a[1]);
        assert!(a[2].ends_with("@example.invalid"));
        assert_eq!(a[2], b[2], "equal inputs, equal fakes");
        assert!(a[3].starts_with("+1-555-"));
        assert_eq!((a[4], b[4]), ("\\N", "\\N"));
        assert_eq!((a[5], b[5]), ("basic", "basic"));
        assert_eq!(b[3], "\\N", "NULL stays NULL");
        assert!(!out.contains("ann@corp.com") && !out.contains("secret"));
        assert_eq!(lines[6], "1\tlogin");
        assert_eq!(rows["public.customers"], 2);
        assert_eq!(run(DUMP, &[]).0, out, "the same in every run");
    }

    #[test]
    fn excluded_tables_lose_their_data_block() {
        let (out, rows) = run(DUMP, &["audit_*".to_string()]);
        assert!(
            !out.contains("audit_log") && out.ends_with("SELECT 1;\n"),
            "{out}"
        );
        assert_eq!(rows["public.audit_log"], 0);
        assert!(matches("public.audit_*", "public.audit_log"));
        assert!(matches("audit_log", "sales.audit_log"));
        assert!(!matches("public.audit_log", "sales.audit_log"));
    }

    #[test]
    fn rules_files() {
        let r = rules();
        assert_eq!(
            r.columns["public.customers"]["tier"],
            Strategy::Fixed("basic".into())
        );
        assert_eq!(r.masked_columns().len(), 5);
        let schema = BTreeMap::from([(
            "public.customers".to_string(),
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
        assert_eq!(
            parse_copy_header("COPY \"Sales\".\"Order Items\" (id, \"Note\") FROM stdin;\n")
                .unwrap(),
            (
                "Sales.Order Items".to_string(),
                vec!["id".to_string(), "Note".to_string()]
            )
        );
    }
}
