//! Reading a plain-format `pg_dump` (or `pg_dumpall --globals-only`) stream,
//! chunk by chunk: the one place that splits lines, follows the SQL the way
//! psql's lexer does, and names tables. Its consumers are [`scan`] (what
//! `.meta` records and every check reads), [`filter`] (`--table`) and
//! [`mask`] (`db-clone`).
//!
//! The dump is bytes, not text (a LATIN1 database dumps LATIN1), and a line
//! can be as long as a row, so lines are handed on in pieces: the first
//! [`HEAD_CAP`] bytes classified, the rest as they come. Nothing holds the stream.
//!
//! The SQL between data blocks is lexed as psql lexes it (quotes, `E''`
//! strings, dollar quotes, quoted identifiers, comments), because psql runs
//! anything after a backslash outside quotes as a command of its own: `\!`
//! runs a shell command, `\connect` leaves the database being loaded. A dump
//! is data: the only commands it may hold are the ones pg_dump writes
//! (`\restrict`/`\unrestrict`, and `\connect` right after `CREATE DATABASE`
//! in a `--create` dump), and those are never passed on ([`LineKind::Meta`]).
//! Any other is an error before the line that holds it is handed to anyone.

pub(crate) mod filter;
pub(crate) mod globals;
pub(crate) mod mask;
pub(crate) mod scan;

use std::fmt;

/// How much of a line is classified before it is handed on: more than any
/// `COPY` line (1600 quoted column names) or object header.
pub(crate) const HEAD_CAP: usize = 256 * 1024;

/// A table (or any relation) as the database names it: unquoted, exact case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct TableName {
    pub(crate) schema: String,
    pub(crate) name: String,
}

impl TableName {
    pub(crate) fn new(schema: &str, name: &str) -> TableName {
        TableName {
            schema: schema.to_string(),
            name: name.to_string(),
        }
    }

    /// What a user wrote: `schema.table` or `table` (in `public`), each part
    /// optionally in double quotes (needed only when it holds a dot). Case is kept.
    pub(crate) fn from_spec(spec: &str) -> TableName {
        let idents = parse_identifiers(spec.trim().as_bytes(), b'.');
        match idents.as_deref() {
            Some([t]) => TableName::new("public", t),
            Some([s, t]) => TableName::new(s, t),
            _ => TableName::new("public", spec.trim().trim_matches('"')),
        }
    }

    /// SQL's spelling: each part quoted when it must be (pg_dump also quotes
    /// keywords; this only matters for messages).
    pub(crate) fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// For SQL we send: both parts always in double quotes (a table named
    /// `user` or `order` is a keyword unquoted).
    pub(crate) fn sql(&self) -> String {
        format!("{}.{}", ident(&self.schema), ident(&self.name))
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// An identifier always in double quotes, for SQL we send.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `name`, or `"Name"` when it is not all lower case letters, digits and underscores.
pub(crate) fn quote_ident(name: &str) -> String {
    let plain = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// Reads one SQL identifier at the start of `s` (quoted or not): its value and the bytes used.
fn parse_identifier(s: &[u8]) -> Option<(String, usize)> {
    if s.first() == Some(&b'"') {
        let mut value = Vec::new();
        let mut i = 1;
        loop {
            match s.get(i)? {
                b'"' if s.get(i + 1) == Some(&b'"') => {
                    value.push(b'"');
                    i += 2;
                }
                b'"' => return Some((String::from_utf8_lossy(&value).into_owned(), i + 1)),
                b => {
                    value.push(*b);
                    i += 1;
                }
            }
        }
    }
    let end = s
        .iter()
        .position(|b| {
            matches!(
                b,
                b' ' | b'.' | b'(' | b')' | b',' | b';' | b'\t' | b'\n' | b'\r' | b'"'
            )
        })
        .unwrap_or(s.len());
    (end > 0).then(|| (String::from_utf8_lossy(&s[..end]).into_owned(), end))
}

/// `a."B c".d` into its parts; `None` unless the whole input is identifiers and separators.
fn parse_identifiers(s: &[u8], sep: u8) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut rest = s;
    loop {
        let (ident, used) = parse_identifier(rest)?;
        parts.push(ident);
        rest = &rest[used..];
        match rest.first() {
            None => return Some(parts),
            Some(b) if *b == sep => rest = &rest[1..],
            Some(_) => return None,
        }
    }
}

/// The dotted name at the start of `s` (`a."B c".d ...`): its parts, up to what follows it.
pub(crate) fn dotted(s: &[u8]) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = s;
    while let Some((ident, used)) = parse_identifier(rest) {
        parts.push(ident);
        rest = &rest[used..];
        match rest.strip_prefix(b".") {
            Some(r) => rest = r,
            None => break,
        }
    }
    parts
}

/// A qualified name at the start of `s` (`schema.table`, or `table` in
/// `public`): the name and the bytes used.
pub(crate) fn parse_qualified(s: &[u8]) -> Option<(TableName, usize)> {
    let (first, used) = parse_identifier(s)?;
    if s.get(used) == Some(&b'.') {
        let (second, used2) = parse_identifier(&s[used + 1..])?;
        Some((TableName::new(&first, &second), used + 1 + used2))
    } else {
        Some((TableName::new("public", &first), used))
    }
}

/// `COPY public."Order" (id, "Note") FROM stdin;`, as pg_dump writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CopyHeader {
    /// The table as the line spells it (`public."Order"`): what `.meta` records.
    pub(crate) raw: String,
    pub(crate) table: TableName,
    pub(crate) columns: Vec<String>,
}

impl CopyHeader {
    /// Parses a whole line (with or without its newline); `None` unless it is exactly pg_dump's form.
    pub(crate) fn parse(line: &[u8]) -> Option<CopyHeader> {
        let line = trim_newline(line);
        let rest = line.strip_prefix(b"COPY ")?;
        let rest = rest.strip_suffix(b" FROM stdin;")?;
        let (table, used) = parse_qualified(rest)?;
        let raw = String::from_utf8_lossy(&rest[..used]).into_owned();
        let columns = match &rest[used..] {
            b"" => Vec::new(),
            cols => {
                let inner = cols.strip_prefix(b" (")?.strip_suffix(b")")?;
                let mut columns = Vec::new();
                let mut rest = inner;
                loop {
                    let (c, used) = parse_identifier(rest)?;
                    columns.push(c);
                    rest = &rest[used..];
                    if rest.is_empty() {
                        break;
                    }
                    rest = rest.strip_prefix(b", ")?;
                }
                columns
            }
        };
        Some(CopyHeader {
            raw,
            table,
            columns,
        })
    }
}

/// One object header pg_dump writes before each object:
/// `-- Name: actor; Type: TABLE; Schema: public; Owner: app`
/// (`-- Data for Name: ...` for table data). Names are as written: unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TocEntry {
    pub(crate) name: String,
    pub(crate) kind: String,
    pub(crate) schema: String,
    pub(crate) owner: Option<String>,
}

impl TocEntry {
    pub(crate) fn parse(line: &[u8]) -> Option<TocEntry> {
        let line = std::str::from_utf8(trim_newline(line)).ok()?;
        let rest = line
            .strip_prefix("-- Name: ")
            .or_else(|| line.strip_prefix("-- Data for Name: "))?;
        let (name, rest) = rest.split_once("; Type: ")?;
        let (kind, rest) = rest.split_once("; Schema: ")?;
        let (schema, owner) = match rest.split_once("; ") {
            Some((s, more)) => (
                s,
                more.split("; ")
                    .find_map(|p| p.strip_prefix("Owner: "))
                    .map(String::from),
            ),
            None => (rest, None),
        };
        Some(TocEntry {
            name: name.to_string(),
            kind: kind.to_string(),
            schema: schema.to_string(),
            owner,
        })
    }

    /// An entry about the database itself (a `--create` dump): never loaded,
    /// since it names the database the dump came from, not the one it loads into.
    pub(crate) fn is_database_level(&self) -> bool {
        matches!(self.kind.as_str(), "DATABASE" | "DATABASE PROPERTIES")
            || (matches!(self.kind.as_str(), "COMMENT" | "ACL" | "SECURITY LABEL")
                && self.name.starts_with("DATABASE "))
    }
}

fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// What a line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LineKind {
    /// A `--` comment outside any statement (pg_dump's object headers, the dump's header and trailer).
    Comment,
    /// SQL, or the rest of a statement, string or comment begun on an earlier line.
    Sql,
    /// `COPY ... FROM stdin;`: the lines up to `\.` are its rows.
    CopyStart(CopyHeader),
    CopyRow,
    /// `\.`
    CopyEnd,
    /// One of the psql commands pg_dump writes (`\restrict`, `\unrestrict`,
    /// `\connect`): checked, and never to be passed on.
    Meta,
}

/// Which dump this is, from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DumpKind {
    /// `pg_dump`: one database.
    #[default]
    Database,
    /// `pg_dumpall`: roles, memberships, tablespaces.
    Cluster,
}

/// What is wrong with a dump: one problem, the first found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DumpError {
    Empty,
    NoHeader,
    UnterminatedCopy {
        table: String,
    },
    NoTrailer,
    AfterTrailer {
        line: String,
    },
    /// A psql command pg_dump does not write: the file was made or changed by someone else.
    Command {
        line: u64,
        command: String,
    },
    /// A `COPY ... FROM stdin` that is not pg_dump's one-line form.
    OddCopy {
        line: u64,
    },
}

impl fmt::Display for DumpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DumpError::Empty => write!(f, "the dump is empty"),
            DumpError::NoHeader => write!(
                f,
                "no '-- PostgreSQL database dump' header: not a plain pg_dump file"
            ),
            DumpError::UnterminatedCopy { table } => write!(
                f,
                "the data of table {table} is not terminated (no '\\.' line): the dump is truncated"
            ),
            DumpError::NoTrailer => write!(
                f,
                "no '-- PostgreSQL database dump complete' trailer: the dump is truncated"
            ),
            DumpError::AfterTrailer { line } => {
                write!(f, "unexpected content after the dump's trailer: '{line}'")
            }
            DumpError::Command { line, command } => write!(
                f,
                "line {line} holds the psql command '{command}', which pg_dump never writes: the file was changed or made by something else; nothing of it was loaded"
            ),
            DumpError::OddCopy { line } => write!(
                f,
                "line {line} starts a COPY in a form pg_dump never writes: the file was changed or made by something else"
            ),
        }
    }
}

impl std::error::Error for DumpError {}

/// Gets the dump's lines, in pieces: the first piece of each line has
/// `first` set (at most [`HEAD_CAP`] bytes, the whole line when shorter),
/// the last `last`. `entry` is the object the line belongs to.
pub(crate) trait Visitor {
    fn piece(&mut self, line: &Line<'_>, bytes: &[u8]);
    /// The stream ended: anything held back is decided now.
    fn end(&mut self) {}
}

/// A visitor that looks at nothing: for checking only.
impl Visitor for () {
    fn piece(&mut self, _: &Line<'_>, _: &[u8]) {}
}

/// The line a piece belongs to.
#[derive(Debug)]
pub(crate) struct Line<'a> {
    pub(crate) kind: &'a LineKind,
    /// The object header in force (`None` before the first).
    pub(crate) entry: Option<&'a TocEntry>,
    pub(crate) first: bool,
    pub(crate) last: bool,
    /// The line starts a statement (outside any string, comment or statement).
    pub(crate) top: bool,
}

/// Where psql's lexer is, between statements or inside one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Lex {
    Top,
    LineComment,
    Block {
        depth: u32,
        star: bool,
        slash: bool,
    },
    /// `'...'` (standard_conforming_strings), `B''`, `X''`, `N''`, `U&''`.
    Quote,
    /// Just after a `'` closing a standard string: `''` is a quote inside it.
    QuoteEnd {
        escapes: bool,
    },
    /// `E'...'`: backslash escapes.
    EQuote,
    EQuoteEscape,
    /// `"..."`
    Ident,
    IdentEnd,
    /// `$tag$` being read at the top level.
    DollarOpen(Vec<u8>),
    /// Inside `$tag$ ... $tag$`; `matched` bytes of the closing delimiter seen.
    Dollar {
        tag: Vec<u8>,
        matched: usize,
    },
}

/// The token psql's lexer is reading at the top level, as far as quoting
/// depends on it: `$` inside a word continues it and starts no dollar quote;
/// `E'` is an escape string only when the `E` starts a token; a number
/// swallows one letter after its digits (`1e'` is `1e` then a plain string).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    None,
    /// An identifier: its length and first byte.
    Word {
        len: usize,
        first: u8,
    },
    /// Digits (and `.`, an exponent); `letter`: a letter may still join it.
    Number {
        letter: bool,
    },
}

/// The lexer between data blocks.
#[derive(Debug, Clone)]
struct Lexer {
    state: Lex,
    tok: Tok,
    prev: u8,
    /// A statement has begun since the last `;` (psql's query buffer is not empty).
    in_statement: bool,
    /// The first word of the statement, while it is being read (up to 5 bytes).
    first_word: Option<Vec<u8>>,
    /// `;` at the top level so far: statements psql has sent.
    ends: u64,
}

/// Where the lexer stopped: a psql command, or a COPY it must not see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Backslash(usize),
    Copy,
}

impl Lexer {
    fn new() -> Lexer {
        Lexer {
            state: Lex::Top,
            tok: Tok::None,
            prev: b'\n',
            in_statement: false,
            first_word: None,
            ends: 0,
        }
    }

    fn at_top(&self) -> bool {
        self.state == Lex::Top
    }

    /// Lexes `bytes`; stops at the first backslash at the top level, or at a
    /// statement that starts with COPY (pg_dump's own COPY lines never get here).
    fn feed(&mut self, bytes: &[u8]) -> Option<Stop> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match &mut self.state {
                Lex::Top => {
                    if self.top(b) {
                        return Some(Stop::Backslash(i));
                    }
                    if self.copy_statement(b) {
                        return Some(Stop::Copy);
                    }
                }
                Lex::LineComment => {
                    if b == b'\n' {
                        self.state = Lex::Top;
                    }
                }
                Lex::Block { depth, star, slash } => {
                    if *star && b == b'/' {
                        *depth -= 1;
                        *star = false;
                        if *depth == 0 {
                            self.state = Lex::Top;
                            self.prev = b' ';
                        }
                    } else if *slash && b == b'*' {
                        *depth += 1;
                        *slash = false;
                    } else {
                        *star = b == b'*';
                        *slash = b == b'/';
                    }
                }
                Lex::Quote => match memchr::memchr(b'\'', &bytes[i..]) {
                    // Fast path: skip to the next quote.
                    Some(j) => {
                        i += j;
                        self.state = Lex::QuoteEnd { escapes: false };
                    }
                    None => return None,
                },
                Lex::QuoteEnd { escapes } => {
                    if b == b'\'' {
                        self.state = if *escapes { Lex::EQuote } else { Lex::Quote };
                    } else {
                        self.end_quoted(b'\'');
                        continue; // this byte belongs to the top level
                    }
                }
                Lex::EQuote => match memchr::memchr2(b'\'', b'\\', &bytes[i..]) {
                    Some(j) => {
                        i += j;
                        self.state = if bytes[i] == b'\\' {
                            Lex::EQuoteEscape
                        } else {
                            Lex::QuoteEnd { escapes: true }
                        };
                    }
                    None => return None,
                },
                Lex::EQuoteEscape => self.state = Lex::EQuote,
                Lex::Ident => match memchr::memchr(b'"', &bytes[i..]) {
                    Some(j) => {
                        i += j;
                        self.state = Lex::IdentEnd;
                    }
                    None => return None,
                },
                Lex::IdentEnd => {
                    if b == b'"' {
                        self.state = Lex::Ident;
                    } else {
                        self.end_quoted(b'"');
                        continue;
                    }
                }
                Lex::DollarOpen(tag) => {
                    if b == b'$' {
                        let tag = std::mem::take(tag);
                        self.state = Lex::Dollar { tag, matched: 0 };
                    } else if is_ident_byte(b) && !(tag.is_empty() && b.is_ascii_digit()) {
                        tag.push(b);
                    } else {
                        // Not a dollar quote. `$12` is a parameter (a number);
                        // after `$abc` psql rescans `abc` as a word.
                        self.tok = match tag.first() {
                            None => Tok::Number { letter: true },
                            Some(&first) => Tok::Word {
                                len: tag.len(),
                                first,
                            },
                        };
                        self.state = Lex::Top;
                        continue;
                    }
                }
                Lex::Dollar { tag, matched } => {
                    // The closing delimiter is `$tag$`.
                    let want = if *matched == 0 || *matched == tag.len() + 1 {
                        b'$'
                    } else {
                        tag[*matched - 1]
                    };
                    if b == want {
                        *matched += 1;
                        if *matched == tag.len() + 2 {
                            self.end_quoted(b'$');
                        }
                    } else {
                        *matched = usize::from(b == b'$');
                    }
                }
            }
            i += 1;
        }
        None
    }

    /// Follows the first word of each statement: true when it is COPY.
    fn copy_statement(&mut self, b: u8) -> bool {
        match &mut self.first_word {
            Some(word) if b.is_ascii_alphabetic() && word.len() < 5 => {
                word.push(b.to_ascii_lowercase());
                false
            }
            Some(word) => {
                let copy = word == b"copy" && !is_ident_byte(b);
                self.first_word = None;
                copy
            }
            None => false,
        }
    }

    fn end_quoted(&mut self, prev: u8) {
        self.state = Lex::Top;
        self.prev = prev;
        self.tok = Tok::None;
    }

    /// One byte at the top level; true at a backslash.
    fn top(&mut self, b: u8) -> bool {
        let prev = self.prev;
        self.prev = b;
        let tok = self.tok;
        self.tok = Tok::None;
        match b {
            b'\\' => return true,
            b'-' if prev == b'-' => {
                self.state = Lex::LineComment;
                self.prev = b'\n';
                return false;
            }
            b'*' if prev == b'/' => {
                self.state = Lex::Block {
                    depth: 1,
                    star: false,
                    slash: false,
                };
                return false;
            }
            b'\'' => {
                let escapes = matches!(
                    tok,
                    Tok::Word {
                        len: 1,
                        first: b'e' | b'E'
                    }
                );
                self.state = if escapes { Lex::EQuote } else { Lex::Quote };
            }
            b'"' => self.state = Lex::Ident,
            b'$' if !matches!(tok, Tok::Word { .. }) => {
                self.state = Lex::DollarOpen(Vec::new());
            }
            b';' => {
                self.in_statement = false;
                self.ends += 1;
                return false;
            }
            _ => {}
        }
        self.tok = match (tok, b) {
            (Tok::Word { len, first }, _) if is_ident_byte(b) || b == b'$' => Tok::Word {
                len: len + 1,
                first,
            },
            (Tok::Number { .. }, b'0'..=b'9' | b'.') => Tok::Number { letter: true },
            (Tok::Number { letter: true }, b'e' | b'E') => Tok::Number { letter: false },
            (Tok::Number { letter: false }, b'+' | b'-') if matches!(prev, b'e' | b'E') => {
                Tok::Number { letter: false }
            }
            // One letter after a number belongs to it (psql's "junk" tokens).
            (Tok::Number { letter: true }, _) if is_ident_byte(b) => Tok::None,
            (_, b'0'..=b'9') => Tok::Number { letter: true },
            (_, _) if is_ident_byte(b) && self.state == Lex::Top => Tok::Word { len: 1, first: b },
            _ => Tok::None,
        };
        // A lone `-` or `/` may start a comment: they begin no statement by themselves.
        if !b.is_ascii_whitespace() && b != b'-' && b != b'/' {
            if !self.in_statement && b.is_ascii_alphabetic() && self.state == Lex::Top {
                // The first byte of a statement; copy_statement() reads the word from here.
                self.first_word = Some(Vec::with_capacity(5));
            }
            self.in_statement = true;
        }
        false
    }
}

/// Whether `line` is exactly one statement to psql, as it would lex it
/// from the top level: no psql command, ended by its one `;`, nothing open
/// after it (a string, a quoted name, a comment).
pub(crate) fn single_statement(line: &[u8]) -> bool {
    let mut lexer = Lexer::new();
    let mut bytes = line.to_vec();
    if !bytes.ends_with(b"\n") {
        bytes.push(b'\n');
    }
    lexer.feed(&bytes).is_none() && lexer.at_top() && !lexer.in_statement && lexer.ends == 1
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

const HEADER: &[u8] = b"-- PostgreSQL database dump";
const CLUSTER_HEADER: &[u8] = b"-- PostgreSQL database cluster dump";
const FROM_VERSION: &[u8] = b"-- Dumped from database version ";
const BY_VERSION: &[u8] = b"-- Dumped by pg_dump version ";
const BY_DUMPALL_VERSION: &[u8] = b"-- Dumped by pg_dumpall version ";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    BeforeHeader,
    Body,
    /// After a trailer line; content after it means it was not the trailer.
    AfterTrailer,
}

/// The streaming reader: lexer, structure, data blocks. Feed it chunks;
/// each line goes to the visitor once its first piece has been checked.
#[derive(Debug)]
pub(crate) struct Reader {
    lexer: Lexer,
    part: Part,
    kind: DumpKind,
    /// The current line's first bytes, while they are fewer than a line and than HEAD_CAP.
    head: Vec<u8>,
    /// The current line's kind once its first piece went out, and whether it starts a statement.
    current: Option<LineKind>,
    current_top: bool,
    copy: Option<(CopyHeader, u64)>,
    entry: Option<TocEntry>,
    line_no: u64,
    /// The first line after the last trailer-like line (for the message).
    after_trailer: Option<String>,
    pub(crate) report: scan::ScanReport,
}

impl Default for Reader {
    fn default() -> Self {
        Reader::new()
    }
}

impl Reader {
    pub(crate) fn new() -> Reader {
        Reader {
            lexer: Lexer::new(),
            part: Part::BeforeHeader,
            kind: DumpKind::Database,
            head: Vec::new(),
            current: None,
            current_top: false,
            copy: None,
            entry: None,
            line_no: 0,
            after_trailer: None,
            report: scan::ScanReport::default(),
        }
    }

    /// Reads one chunk. An error stops the reading: nothing of the line that
    /// caused it reached the visitor.
    pub(crate) fn feed(&mut self, chunk: &[u8], v: &mut impl Visitor) -> Result<(), DumpError> {
        if let Some(e) = &self.report.error {
            return Err(e.clone());
        }
        self.report.bytes += chunk.len() as u64;
        let mut rest = chunk;
        while !rest.is_empty() {
            let (piece, ends) = match memchr::memchr(b'\n', rest) {
                Some(i) => (&rest[..=i], true),
                None => (rest, false),
            };
            rest = &rest[piece.len()..];
            let result = self.piece(piece, ends, v);
            if let Err(e) = result {
                self.report.error = Some(e.clone());
                return Err(e);
            }
        }
        Ok(())
    }

    fn piece(&mut self, piece: &[u8], ends: bool, v: &mut impl Visitor) -> Result<(), DumpError> {
        if self.current.is_some() {
            // The line's first piece went out already: lex and pass the rest.
            self.more(piece, ends, v)?;
        } else if self.head.is_empty() && (ends || piece.len() >= HEAD_CAP) {
            // A whole line (or a full head) in this chunk: no copy.
            self.first(piece, ends, v)?;
        } else {
            let room = HEAD_CAP - self.head.len();
            let take = piece.len().min(room);
            self.head.extend_from_slice(&piece[..take]);
            if ends || self.head.len() == HEAD_CAP {
                let head = std::mem::take(&mut self.head);
                let full = take == piece.len();
                self.first(&head, ends && full, v)?;
                if !full {
                    self.more(&piece[take..], ends, v)?;
                }
                self.head = head;
                self.head.clear();
            }
        }
        if ends {
            self.current = None;
        }
        Ok(())
    }

    /// Classifies a line from its first bytes, checks it, and hands them on.
    fn first(&mut self, head: &[u8], last: bool, v: &mut impl Visitor) -> Result<(), DumpError> {
        self.line_no += 1;
        let top = self.lexer.at_top() && !self.lexer.in_statement && self.copy.is_none();
        let kind = self.classify(head, last)?;
        if let LineKind::Sql | LineKind::Comment = kind
            && let Some(stop) = self.lexer.feed(head)
        {
            return Err(self.stop_error(stop, head));
        }
        self.after_line(&kind, head, top);
        let line = Line {
            kind: &kind,
            entry: self.entry.as_ref(),
            first: true,
            last,
            top,
        };
        v.piece(&line, head);
        if !last {
            self.current = Some(kind);
            self.current_top = top;
        }
        Ok(())
    }

    fn more(&mut self, bytes: &[u8], last: bool, v: &mut impl Visitor) -> Result<(), DumpError> {
        let kind = self.current.take().unwrap_or(LineKind::Sql);
        if let LineKind::Sql | LineKind::Comment = kind
            && let Some(stop) = self.lexer.feed(bytes)
        {
            return Err(self.stop_error(stop, bytes));
        }
        let line = Line {
            kind: &kind,
            entry: self.entry.as_ref(),
            first: false,
            last,
            top: self.current_top,
        };
        v.piece(&line, bytes);
        self.current = Some(kind);
        Ok(())
    }

    fn stop_error(&self, stop: Stop, bytes: &[u8]) -> DumpError {
        match stop {
            Stop::Backslash(at) => self.command_error(&bytes[at..]),
            Stop::Copy => DumpError::OddCopy { line: self.line_no },
        }
    }

    fn command_error(&self, from: &[u8]) -> DumpError {
        let cmd: String = String::from_utf8_lossy(&from[..from.len().min(40)])
            .chars()
            .take_while(|c| !c.is_whitespace() || *c == ' ')
            .collect();
        DumpError::Command {
            line: self.line_no,
            command: cmd.trim().to_string(),
        }
    }

    fn classify(&mut self, head: &[u8], last: bool) -> Result<LineKind, DumpError> {
        if let Some((header, rows)) = &mut self.copy {
            let line = if last { head } else { &[][..] };
            if matches!(line, b"\\.\n" | b"\\.\r\n" | b"\\.") {
                let (header, rows) = (header.raw.clone(), *rows);
                *self.report.tables.entry(header).or_default() += rows;
                self.report.copies.push(rows);
                self.copy = None;
                return Ok(LineKind::CopyEnd);
            }
            *rows += 1;
            return Ok(LineKind::CopyRow);
        }
        if !self.lexer.at_top() {
            return Ok(LineKind::Sql);
        }
        let text = trim_newline(head);
        if text.starts_with(b"--") {
            return Ok(LineKind::Comment);
        }
        let first_token = text.trim_ascii_start();
        if first_token.first() == Some(&b'\\') {
            return self.meta(first_token);
        }
        if !self.lexer.in_statement
            && first_token.len() >= 5
            && first_token[..5].eq_ignore_ascii_case(b"copy ")
        {
            let header = CopyHeader::parse(text)
                .filter(|_| last && text.len() == first_token.len())
                .ok_or(DumpError::OddCopy { line: self.line_no })?;
            return Ok(LineKind::CopyStart(header));
        }
        Ok(LineKind::Sql)
    }

    /// A line that is a psql command: only pg_dump's own pass.
    fn meta(&self, line: &[u8]) -> Result<LineKind, DumpError> {
        let word: &[u8] = line
            .split(|b| b.is_ascii_whitespace())
            .next()
            .unwrap_or_default();
        let key_ok = |rest: &[u8]| {
            let key = rest.trim_ascii();
            !key.is_empty() && key.iter().all(u8::is_ascii_alphanumeric)
        };
        let allowed = match word {
            b"\\restrict" | b"\\unrestrict" => key_ok(&line[word.len()..]),
            b"\\connect" => self.entry.as_ref().is_some_and(|e| e.kind == "DATABASE"),
            _ => false,
        };
        if allowed {
            Ok(LineKind::Meta)
        } else {
            Err(self.command_error(line))
        }
    }

    /// Structure: header, versions, object headers, trailer, data blocks.
    fn after_line(&mut self, kind: &LineKind, head: &[u8], top: bool) {
        let text = trim_newline(head);
        // The roles a restore needs: those objects are given to (not the
        // object headers' `Owner:`, which an extension has and never sets).
        if top
            && matches!(kind, LineKind::Sql)
            // words() only for statements that can be it (not every DDL line).
            && text.get(..6).is_some_and(|h| h.eq_ignore_ascii_case(b"ALTER "))
            && let Some(owner) = altered_owner(text)
        {
            self.report.owners.insert(owner);
        }
        match kind {
            LineKind::CopyStart(header) => {
                self.copy = Some((header.clone(), 0));
                self.mark_body();
            }
            LineKind::Comment => match self.part {
                Part::BeforeHeader => {
                    if text == HEADER || text == CLUSTER_HEADER {
                        self.kind = if text == HEADER {
                            DumpKind::Database
                        } else {
                            DumpKind::Cluster
                        };
                        self.report.kind = self.kind;
                        self.part = Part::Body;
                    }
                }
                _ => {
                    if self.is_trailer(text) {
                        self.part = Part::AfterTrailer;
                        self.after_trailer = None;
                    } else if let Some(v) = text.strip_prefix(FROM_VERSION) {
                        self.report.server_version = Some(String::from_utf8_lossy(v).into_owned());
                    } else if let Some(v) = text
                        .strip_prefix(BY_VERSION)
                        .or_else(|| text.strip_prefix(BY_DUMPALL_VERSION))
                    {
                        self.report.pg_dump_version = Some(String::from_utf8_lossy(v).into_owned());
                    } else if let Some(entry) = TocEntry::parse(text) {
                        self.entry = Some(entry);
                    }
                }
            },
            LineKind::Meta => {}
            LineKind::Sql if text.trim_ascii().is_empty() => {}
            LineKind::Sql
                if self
                    .entry
                    .as_ref()
                    .is_some_and(|e| matches!(e.kind.as_str(), "ACL" | "DEFAULT ACL")) =>
            {
                let (owners, grantees) = privilege_roles(text);
                self.report.owners.extend(owners);
                self.report.grantees.extend(grantees);
            }
            LineKind::Sql | LineKind::CopyRow | LineKind::CopyEnd => match self.part {
                Part::BeforeHeader => {
                    self.report.error.get_or_insert(DumpError::NoHeader);
                }
                _ => self.mark_body_with(text),
            },
        }
    }

    fn is_trailer(&self, text: &[u8]) -> bool {
        let header = match self.kind {
            DumpKind::Database => HEADER,
            DumpKind::Cluster => CLUSTER_HEADER,
        };
        text.len() == header.len() + b" complete".len()
            && text.starts_with(header)
            && text.ends_with(b" complete")
    }

    fn mark_body(&mut self) {
        self.mark_body_with(b"COPY");
    }

    /// Content: a trailer before it was not the trailer.
    fn mark_body_with(&mut self, text: &[u8]) {
        if self.part == Part::AfterTrailer {
            self.part = Part::Body;
            self.after_trailer =
                Some(String::from_utf8_lossy(&text[..text.len().min(60)]).into_owned());
        }
    }

    /// Ends the stream: the report, with the first structural problem if any.
    pub(crate) fn finish(mut self, v: &mut impl Visitor) -> scan::ScanReport {
        if self.report.error.is_none() && !self.head.is_empty() {
            // A last line without a newline.
            let head = std::mem::take(&mut self.head);
            if let Err(e) = self.first(&head, true, v) {
                self.report.error = Some(e);
            }
        }
        if self.report.error.is_none() {
            v.end();
            self.report.error = match (&self.copy, self.part) {
                _ if self.report.bytes == 0 => Some(DumpError::Empty),
                (Some((header, _)), _) => Some(DumpError::UnterminatedCopy {
                    table: header.raw.clone(),
                }),
                (None, Part::BeforeHeader) => Some(DumpError::NoHeader),
                (None, Part::Body) => Some(match self.after_trailer.take() {
                    Some(line) => DumpError::AfterTrailer { line },
                    None => DumpError::NoTrailer,
                }),
                (None, Part::AfterTrailer) => None,
            };
        }
        self.report
    }
}

/// A word of a statement outside quotes and comments (a quoted identifier is one too).
pub(crate) struct Word {
    pub(crate) text: String,
    pub(crate) quoted: bool,
    pub(crate) offset: usize,
}

impl Word {
    /// The unquoted word in upper case (a quoted one never matches a keyword).
    pub(crate) fn keyword(&self) -> Option<String> {
        (!self.quoted).then(|| self.text.to_ascii_uppercase())
    }
}

/// The words of a statement, up to its first `;`.
pub(crate) fn words(sql: &[u8]) -> Vec<Word> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < sql.len() {
        match sql[i] {
            b';' => break,
            b'-' if sql.get(i + 1) == Some(&b'-') => {
                i = memchr::memchr(b'\n', &sql[i..]).map_or(sql.len(), |j| i + j);
            }
            b'\'' => {
                // A string ('' inside it is a quote): skipped.
                i += 1;
                while i < sql.len() {
                    if sql[i] == b'\'' {
                        if sql.get(i + 1) == Some(&b'\'') {
                            i += 1;
                        } else {
                            break;
                        }
                    }
                    i += 1;
                }
                i += 1;
            }
            b'"' => {
                let (text, used) = parse_identifier(&sql[i..]).unwrap_or_default();
                out.push(Word {
                    text,
                    quoted: true,
                    offset: i,
                });
                i += used.max(1);
            }
            b if b.is_ascii_alphabetic() || b == b'_' || b >= 0x80 => {
                let start = i;
                while i < sql.len()
                    && (sql[i].is_ascii_alphanumeric()
                        || matches!(sql[i], b'_' | b'$')
                        || sql[i] >= 0x80)
                {
                    i += 1;
                }
                out.push(Word {
                    text: String::from_utf8_lossy(&sql[start..i]).into_owned(),
                    quoted: false,
                    offset: start,
                });
            }
            _ => i += 1,
        }
    }
    out
}

/// The role an `ALTER ... OWNER TO role` statement gives the object to.
pub(crate) fn altered_owner(sql: &[u8]) -> Option<String> {
    let w = words(sql);
    let kw = |i: usize| w.get(i).and_then(Word::keyword);
    if kw(0).as_deref() != Some("ALTER") {
        return None;
    }
    (1..w.len())
        .find(|&i| kw(i).as_deref() == Some("OWNER") && kw(i + 1).as_deref() == Some("TO"))
        .and_then(|i| w.get(i + 2))
        .map(|w| w.text.clone())
}

/// The roles a privilege statement names: `FOR ROLE r` (whose defaults
/// they are), and the grantees after `TO` / `FROM` (not `PUBLIC`).
fn privilege_roles(sql: &[u8]) -> (Vec<String>, Vec<String>) {
    let words = words(sql);
    let (mut owners, mut grantees) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < words.len() {
        match words[i].keyword().as_deref() {
            Some("FOR") if words.get(i + 1).and_then(Word::keyword).as_deref() == Some("ROLE") => {
                if let Some(w) = words.get(i + 2) {
                    owners.push(w.text.clone());
                }
                i += 3;
            }
            Some("TO" | "FROM") => {
                for w in &words[i + 1..] {
                    match w.keyword().as_deref() {
                        Some("WITH" | "GRANTED" | "CASCADE" | "RESTRICT") => break,
                        Some("PUBLIC" | "GROUP") => {}
                        _ => grantees.push(w.text.clone()),
                    }
                }
                break;
            }
            _ => i += 1,
        }
    }
    (owners, grantees)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Every line as (kind, whole text), pieces joined.
    #[derive(Default)]
    pub(crate) struct Lines(pub(crate) Vec<(LineKind, String)>);

    impl Visitor for Lines {
        fn piece(&mut self, line: &Line<'_>, bytes: &[u8]) {
            if line.first {
                self.0.push((line.kind.clone(), String::new()));
            }
            self.0
                .last_mut()
                .unwrap()
                .1
                .push_str(&String::from_utf8_lossy(bytes));
        }
    }

    pub(crate) fn read(dump: &[u8], chunk: usize) -> (Lines, scan::ScanReport) {
        let mut r = Reader::new();
        let mut lines = Lines::default();
        for c in dump.chunks(chunk.max(1)) {
            if r.feed(c, &mut lines).is_err() {
                break;
            }
        }
        let report = r.finish(&mut lines);
        (lines, report)
    }

    #[test]
    fn names() {
        assert_eq!(
            TableName::from_spec("public.\"Order\""),
            TableName::new("public", "Order")
        );
        assert_eq!(
            TableName::from_spec("\"a.b\".c"),
            TableName::new("a.b", "c")
        );
        assert_eq!(
            TableName::from_spec("Film"),
            TableName::new("public", "Film")
        );
        assert_eq!(
            TableName::new("public", "Order").quoted(),
            "public.\"Order\""
        );
        assert_eq!(TableName::new("s", "a\"b").quoted(), "s.\"a\"\"b\"");
        let h = CopyHeader::parse(
            b"COPY \"Sales\".\"Order \"\"Items\"\"\" (id, \"Note\", x) FROM stdin;\n",
        )
        .unwrap();
        assert_eq!(h.table, TableName::new("Sales", "Order \"Items\""));
        assert_eq!(h.raw, "\"Sales\".\"Order \"\"Items\"\"\"");
        assert_eq!(h.columns, ["id", "Note", "x"]);
        assert!(CopyHeader::parse(b"COPY t FROM stdin").is_none());
        let e = TocEntry::parse(
            b"-- Name: Order Items pk; Type: CONSTRAINT; Schema: public; Owner: app\n",
        )
        .unwrap();
        assert_eq!(
            (e.name.as_str(), e.kind.as_str(), e.schema.as_str()),
            ("Order Items pk", "CONSTRAINT", "public")
        );
        assert_eq!(e.owner.as_deref(), Some("app"));
        assert!(
            TocEntry::parse(b"-- Name: DATABASE app; Type: COMMENT; Schema: -; Owner: app")
                .unwrap()
                .is_database_level()
        );
    }

    const BODY: &str = "--\n-- PostgreSQL database dump\n--\n\nSET x = 1;\n";
    const END: &str = "\n--\n-- PostgreSQL database dump complete\n--\n\n";

    fn dump(middle: &str) -> String {
        format!("{BODY}{middle}{END}")
    }

    #[test]
    fn commands_outside_quotes_are_refused_inside_quotes_they_are_text() {
        for hostile in [
            "\\! touch /tmp/pwned\n",
            "SELECT 1; \\! id\n",
            "\\connect postgres\n",
            "\\set ON_ERROR_STOP 0\n",
            "SELECT 'a'; \\o /tmp/x\n",
            "SELECT $x$ a $x$ \\! id\n",
            "SELECT \"a\\\" \\! id\n",
            "SELECT 'it''s' \\! id\n",
            "SELECT E'\\'' \\! id\n",
            "SELECT 1 /* a /* b */ */ \\! id\n",
            "SELECT a$b$ \\! id $b$\n",
        ] {
            for chunk in [1, 7, 4096] {
                let (lines, report) = read(dump(hostile).as_bytes(), chunk);
                assert!(
                    matches!(report.error, Some(DumpError::Command { .. })),
                    "{hostile:?} in chunks of {chunk}: {:?}",
                    report.error
                );
                assert!(
                    !lines.0.iter().any(|(_, t)| t.contains('\\')),
                    "the line with the command was handed on: {hostile:?}"
                );
            }
        }
        for harmless in [
            "COMMENT ON TABLE t IS 'line\n\\! not a command\n';\n",
            "CREATE FUNCTION f() RETURNS text AS $$\n\\! text\n$$ LANGUAGE sql;\n",
            "CREATE FUNCTION g() RETURNS text AS $body$ SELECT $$\\x$$ $body$ LANGUAGE sql;\n",
            "SELECT E'a\\\\' , '\\d+', \"we\\ird\";\n",
            "-- a comment with \\! in it\n/* and \\x here */ SELECT 1;\n",
            "COPY public.t (a) FROM stdin;\n\\N\tx\\ty\n\\.\n",
        ] {
            let (_, report) = read(dump(harmless).as_bytes(), 3);
            assert_eq!(report.check(), Ok(()), "{harmless:?}");
        }
    }

    #[test]
    fn pg_dump_commands_pass_and_are_marked() {
        let text = format!("\\restrict abc123\n{BODY}SELECT 1;\n{END}\\unrestrict abc123\n\n");
        let (lines, report) = read(text.as_bytes(), 5);
        assert_eq!(report.check(), Ok(()));
        let metas: Vec<_> = lines
            .0
            .iter()
            .filter(|(k, _)| *k == LineKind::Meta)
            .map(|(_, t)| t.as_str())
            .collect();
        assert_eq!(metas, ["\\restrict abc123\n", "\\unrestrict abc123\n"]);
        // \connect only right after CREATE DATABASE in a --create dump.
        let create = dump(
            "--\n-- Name: app; Type: DATABASE; Schema: -; Owner: app\n--\n\nCREATE DATABASE app;\n\n\\connect app\n\nSET y = 2;\n",
        );
        assert_eq!(read(create.as_bytes(), 4096).1.check(), Ok(()));
        let stray =
            dump("--\n-- Name: t; Type: TABLE; Schema: public; Owner: app\n--\n\n\\connect app\n");
        assert!(matches!(
            read(stray.as_bytes(), 4096).1.error,
            Some(DumpError::Command { .. })
        ));
    }

    #[test]
    fn the_trailer_is_only_the_last_one_and_never_inside_a_string() {
        let inside = dump("COMMENT ON TABLE t IS 'x\n-- PostgreSQL database dump complete\ny';\n");
        assert_eq!(read(inside.as_bytes(), 4096).1.check(), Ok(()));
        let early = format!("{BODY}SELECT 1;\n{END}SELECT 2;\n{END}");
        assert_eq!(read(early.as_bytes(), 4096).1.check(), Ok(()));
        let extra = format!("{}DROP TABLE users;\n", dump(""));
        assert!(matches!(
            read(extra.as_bytes(), 4096).1.error,
            Some(DumpError::AfterTrailer { .. })
        ));
    }

    #[test]
    fn copy_must_be_pg_dumps_form() {
        for odd in [
            "COPY public.t (a) FROM stdin; \n'\n\\.\n",
            "copy public.t from stdin;\n",
            "SELECT 1; COPY t FROM stdin;\n",
        ] {
            let (_, r) = read(dump(odd).as_bytes(), 4096);
            assert!(
                matches!(
                    r.error,
                    Some(DumpError::OddCopy { .. } | DumpError::Command { .. })
                ),
                "{odd:?}: {:?}",
                r.error
            );
        }
        // A COPY inside a function body is not data.
        let f = dump("CREATE FUNCTION f() RETURNS void AS $$\nCOPY x FROM stdin;\n$$;\n");
        assert_eq!(read(f.as_bytes(), 4096).1.check(), Ok(()));
    }

    #[test]
    fn long_lines_come_in_pieces_and_nothing_is_held() {
        let long = "x".repeat(HEAD_CAP * 3 + 17);
        let text = dump(&format!(
            "COPY public.t (a) FROM stdin;\n{long}\n\\.\nSELECT '{long}';\n"
        ));
        for chunk in [1000, HEAD_CAP - 1, 1 << 20] {
            let (lines, report) = read(text.as_bytes(), chunk);
            assert_eq!(report.check(), Ok(()));
            assert_eq!(report.tables["public.t"], 1);
            assert!(
                lines
                    .0
                    .iter()
                    .any(|(k, t)| *k == LineKind::CopyRow && t.len() == long.len() + 1)
            );
        }
    }

    /// The roles a restore needs: owners given by `ALTER ... OWNER TO` and
    /// `FOR ROLE`, grantees of privileges; not PUBLIC, not an extension's
    /// header, not text inside a function body.
    #[test]
    fn the_roles_a_dump_needs() {
        let dump = "--
-- PostgreSQL database dump
--

-- Name: pgcrypto; Type: EXTENSION; Schema: -; Owner: -
CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA public;

-- Name: f(); Type: FUNCTION; Schema: public; Owner: \"Own er\"
CREATE FUNCTION public.f() RETURNS void LANGUAGE sql AS $$
ALTER TABLE x OWNER TO ghost;
$$;

ALTER FUNCTION public.f() OWNER TO \"Own er\";

-- Name: TABLE t; Type: ACL; Schema: public; Owner: app
REVOKE ALL ON TABLE public.t FROM PUBLIC;
GRANT SELECT ON TABLE public.t TO reader;
GRANT SELECT,UPDATE ON TABLE public.t TO \"Read Er\" WITH GRANT OPTION;

-- Name: DEFAULT PRIVILEGES FOR TABLES; Type: DEFAULT ACL; Schema: s; Owner: app_owner
ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA s GRANT SELECT ON TABLES TO readers;

--
-- PostgreSQL database dump complete
--

";
        let mut r = Reader::new();
        r.feed(dump.as_bytes(), &mut ()).unwrap();
        let report = r.finish(&mut ());
        assert_eq!(report.error, None);
        let owners: Vec<_> = report.owners.iter().map(String::as_str).collect();
        let grantees: Vec<_> = report.grantees.iter().map(String::as_str).collect();
        assert_eq!(owners, ["Own er", "app_owner"]);
        assert_eq!(grantees, ["Read Er", "reader", "readers"]);
    }
}
