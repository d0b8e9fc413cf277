//! Subsetting: which rows a referentially whole slice of a database keeps.
//!
//! Pure: the rows come through [`Rows`] (the source's snapshot, or rows in
//! a test), the catalog of tables and foreign keys is given. What it decides,
//! for the tables connected through foreign keys to a table with a rule:
//! - a table with a rule keeps the rows that match it (a condition, a
//!   deterministic fraction, or both);
//! - a table that references such a table ("referencing") keeps the rows
//!   whose non-NULL references to kept rows all point at rows kept so
//!   (conditions and referencing, not rows pulled in upward), transitively
//!   down, with at least one such reference;
//! - every row referenced by a kept row is kept ("referenced"), transitively
//!   up, self-references and cycles included; such rows do not pull in their
//!   own children;
//! - a connected table without a rule keeps only what these require.
//!
//! Tables not connected to any table with a rule are copied whole. Rows are
//! COPY text lines; values are compared as that text (the same output
//! functions on both sides of a foreign key). Memory holds the kept keys,
//! never the rows of the tables read.

use std::collections::{BTreeMap, HashSet};

use sha2::{Digest, Sha256};

use super::dump::{TableName, dotted};

/// A table as subsetting sees it: a partitioned table with its leaf
/// partitions (whose rows are its rows), or a plain table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Table {
    pub(crate) name: TableName,
    /// The primary key's columns: a row's identity. Without one, the row's
    /// whole text is.
    pub(crate) primary_key: Option<Vec<String>>,
    pub(crate) leaves: Vec<Leaf>,
}

/// A relation that holds rows (and has a data block in a dump).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Leaf {
    pub(crate) name: TableName,
    /// In the order COPY writes them (no generated columns).
    pub(crate) columns: Vec<String>,
}

/// `child (columns) REFERENCES parent (referenced)`; indexes into the tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ForeignKey {
    pub(crate) name: String,
    pub(crate) child: usize,
    pub(crate) columns: Vec<String>,
    pub(crate) parent: usize,
    pub(crate) referenced: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Catalog {
    pub(crate) tables: Vec<Table>,
    pub(crate) foreign_keys: Vec<ForeignKey>,
}

impl Catalog {
    fn find(&self, name: &TableName) -> Option<usize> {
        self.tables.iter().position(|t| &t.name == name)
    }

    /// The table a relation's rows belong to (itself, or its partitioned root).
    pub(crate) fn owner_of(&self, leaf: &TableName) -> Option<usize> {
        self.tables
            .iter()
            .position(|t| t.leaves.iter().any(|l| &l.name == leaf))
    }
}

/// What one table keeps.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Rule {
    /// An SQL condition on the table's rows, evaluated by the source.
    pub(crate) condition: Option<String>,
    /// A deterministic share of the rows (those matching the condition).
    pub(crate) fraction: Option<f64>,
}

/// `--subset`, `--subset-fraction` and the rules file's `[subset]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Rules {
    pub(crate) tables: BTreeMap<TableName, Rule>,
}

impl Rules {
    pub(crate) fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// `schema.table: condition` (a table without a schema is `public`).
    pub(crate) fn add_condition(&mut self, spec: &str) -> Result<(), String> {
        let (table, condition) = split_outside_quotes(spec, b':')
            .ok_or_else(|| format!("--subset '{spec}': write it as 'schema.table: condition'"))?;
        let table = table_name(table)
            .ok_or_else(|| format!("--subset '{spec}': '{table}' is not table or schema.table"))?;
        check_condition(condition.trim()).map_err(|e| format!("--subset '{spec}': {e}"))?;
        self.tables.entry(table).or_default().condition = Some(condition.trim().to_string());
        Ok(())
    }

    /// `schema.table=0.05`.
    pub(crate) fn add_fraction(&mut self, spec: &str) -> Result<(), String> {
        let (table, value) = spec.rsplit_once('=').ok_or_else(|| {
            format!(
                "--subset-fraction '{spec}': write it as schema.table=FRACTION (0 < FRACTION <= 1)"
            )
        })?;
        let table = table_name(table).ok_or_else(|| {
            format!("--subset-fraction '{spec}': '{table}' is not table or schema.table")
        })?;
        let fraction = parse_fraction(value.trim()).ok_or_else(|| {
            format!(
                "--subset-fraction '{spec}': the fraction must be a number above 0 and at most 1"
            )
        })?;
        self.tables.entry(table).or_default().fraction = Some(fraction);
        Ok(())
    }

    /// The rules file's `[subset]`: `"schema.table" = "condition"`, or
    /// `"schema.table" = { where = "condition", fraction = 0.05 }`.
    pub(crate) fn from_toml(section: &toml::Value) -> Result<Rules, String> {
        let section = section.as_table().ok_or("`subset` must be a table")?;
        let mut rules = Rules::default();
        for (name, value) in section {
            let table = table_name(name)
                .ok_or_else(|| format!("[subset] '{name}' is not table or schema.table"))?;
            let mut rule = Rule::default();
            match value {
                toml::Value::String(condition) => rule.condition = Some(condition.clone()),
                toml::Value::Table(t) => {
                    for (k, v) in t {
                        match (k.as_str(), v) {
                            ("where", toml::Value::String(c)) => rule.condition = Some(c.clone()),
                            ("fraction", toml::Value::Float(f)) if *f > 0.0 && *f <= 1.0 => {
                                rule.fraction = Some(*f)
                            }
                            ("fraction", toml::Value::Integer(1)) => rule.fraction = Some(1.0),
                            ("fraction", _) => {
                                return Err(format!(
                                    "[subset] '{name}': fraction must be a number above 0 and at most 1"
                                ));
                            }
                            _ => {
                                return Err(format!(
                                    "[subset] '{name}': unknown key '{k}' (where = \"condition\", fraction = 0.05)"
                                ));
                            }
                        }
                    }
                }
                _ => {
                    return Err(format!(
                        "[subset] '{name}': give a condition (a string) or {{ where = \"...\", fraction = 0.05 }}"
                    ));
                }
            }
            if let Some(c) = &rule.condition {
                check_condition(c.trim()).map_err(|e| format!("[subset] '{name}': {e}"))?;
                rule.condition = Some(c.trim().to_string());
            }
            if rule.condition.is_none() && rule.fraction.is_none() {
                return Err(format!("[subset] '{name}': give a condition or a fraction"));
            }
            rules.tables.insert(table, rule);
        }
        Ok(rules)
    }

    /// These rules, with `other`'s replacing them table by table.
    pub(crate) fn overridden_by(mut self, other: Rules) -> Rules {
        self.tables.extend(other.tables);
        self
    }
}

fn table_name(s: &str) -> Option<TableName> {
    match dotted(s.trim().as_bytes()).as_slice() {
        [t] if !t.is_empty() => Some(TableName::new("public", t)),
        [s, t] if !s.is_empty() && !t.is_empty() => Some(TableName::new(s, t)),
        _ => None,
    }
}

fn parse_fraction(s: &str) -> Option<f64> {
    let f: f64 = s.parse().ok()?;
    (f.is_finite() && f > 0.0 && f <= 1.0).then_some(f)
}

/// Splits at the first `sep` outside double quotes (a quoted table name may hold it).
fn split_outside_quotes(s: &str, sep: u8) -> Option<(&str, &str)> {
    let mut quoted = false;
    for (i, b) in s.bytes().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b if b == sep && !quoted => return Some((&s[..i], &s[i + 1..])),
            _ => {}
        }
    }
    None
}

/// A condition is one SQL expression: it goes into `WHERE (...)` of a
/// read-only query, so a `;` outside quotes (a second statement) is refused,
/// and so are comments that could swallow the closing parenthesis.
pub(crate) fn check_condition(c: &str) -> Result<(), String> {
    if c.is_empty() {
        return Err("the condition is empty".into());
    }
    // psql reads the condition: a backslash would be one of its commands
    // (`\!` runs a shell), and inside E'' strings it hides quotes.
    if c.contains('\\') {
        return Err("a condition cannot hold a backslash".into());
    }
    let b = c.as_bytes();
    let mut i = 0;
    let mut depth = 0i32;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += 1;
                }
                if i == b.len() {
                    return Err("a quote is not closed".into());
                }
            }
            b'$' => return Err("dollar quoting is not accepted in a condition".into()),
            b';' => return Err("a condition is one expression, without ';'".into()),
            b'-' if b.get(i + 1) == Some(&b'-') => {
                return Err("a condition cannot hold a comment (--)".into());
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                return Err("a condition cannot hold a comment (/*)".into());
            }
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("a ')' closes more than the condition opened".into());
                }
            }
            _ => {}
        }
        i += 1;
    }
    if depth != 0 {
        return Err("a '(' is not closed".into());
    }
    Ok(())
}

/// Why a table keeps what it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Role {
    /// It has a rule.
    Rule,
    /// It references a table with a rule (transitively down).
    Referencing,
    /// Connected, no rule: only rows referenced by kept rows.
    Referenced,
    /// Not connected to any table with a rule: every row.
    Whole,
}

impl Role {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Role::Rule => "condition",
            Role::Referencing => "referencing",
            Role::Referenced => "referenced",
            Role::Whole => "whole",
        }
    }
}

/// The roles of the tables, and the order they are read in.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    pub(crate) roles: Vec<Role>,
    /// Strongly connected groups of tables along foreign keys, parents
    /// before children.
    groups: Vec<Vec<usize>>,
    /// For each table, the distinct column lists other tables reference.
    colsets: Vec<Vec<Vec<String>>>,
    /// For each foreign key, its index in its parent's `colsets`.
    edge_colset: Vec<usize>,
}

/// Checks the rules against the catalog and classifies every table.
pub(crate) fn plan(catalog: &Catalog, rules: &Rules) -> Result<Plan, String> {
    let n = catalog.tables.len();
    let mut roles = vec![Role::Whole; n];
    for name in rules.tables.keys() {
        match catalog.find(name) {
            Some(i) => roles[i] = Role::Rule,
            None if catalog.owner_of(name).is_some() => {
                let owner = &catalog.tables[catalog.owner_of(name).expect("checked")].name;
                return Err(format!(
                    "the subset names {name}, a partition of {owner}: name the partitioned table"
                ));
            }
            None => {
                return Err(format!(
                    "the subset names {name}, which the source does not have (or it is not a table)"
                ));
            }
        }
    }
    // Connected to a rule at all (foreign keys in either direction).
    let mut connected: Vec<bool> = roles.iter().map(|r| *r == Role::Rule).collect();
    loop {
        let mut grew = false;
        for fk in &catalog.foreign_keys {
            if connected[fk.child] != connected[fk.parent] {
                connected[fk.child] = true;
                connected[fk.parent] = true;
                grew = true;
            }
        }
        if !grew {
            break;
        }
    }
    // Referencing: a child of a table with a rule or of a referencing table.
    loop {
        let mut grew = false;
        for fk in &catalog.foreign_keys {
            if roles[fk.child] == Role::Whole
                && matches!(roles[fk.parent], Role::Rule | Role::Referencing)
            {
                roles[fk.child] = Role::Referencing;
                grew = true;
            }
        }
        if !grew {
            break;
        }
    }
    for (i, role) in roles.iter_mut().enumerate() {
        if *role == Role::Whole && connected[i] {
            *role = Role::Referenced;
        }
    }
    let mut colsets: Vec<Vec<Vec<String>>> = vec![Vec::new(); n];
    let mut edge_colset = Vec::new();
    for fk in &catalog.foreign_keys {
        let sets = &mut colsets[fk.parent];
        let at = match sets.iter().position(|c| *c == fk.referenced) {
            Some(at) => at,
            None => {
                sets.push(fk.referenced.clone());
                sets.len() - 1
            }
        };
        edge_colset.push(at);
    }
    let groups = strongly_connected(n, &catalog.foreign_keys)
        .into_iter()
        .filter(|g| g.iter().any(|t| connected[*t]))
        .collect();
    Ok(Plan {
        roles,
        groups,
        colsets,
        edge_colset,
    })
}

/// Tarjan's algorithm over child → parent edges: groups come out with
/// every group's parents before it.
fn strongly_connected(n: usize, edges: &[ForeignKey]) -> Vec<Vec<usize>> {
    let mut out_edges = vec![Vec::new(); n];
    for e in edges {
        out_edges[e.child].push(e.parent);
    }
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut groups = Vec::new();
    let mut next = 0;
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        // An explicit stack of (node, next edge): no recursion depth limit.
        let mut work = vec![(root, 0usize)];
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut e)) = work.last_mut() {
            if *e < out_edges[v].len() {
                let w = out_edges[v][*e];
                *e += 1;
                if index[w] == usize::MAX {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
            } else {
                work.pop();
                if let Some(&(u, _)) = work.last() {
                    low[u] = low[u].min(low[v]);
                }
                if low[v] == index[v] {
                    let mut group = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        group.push(w);
                        if w == v {
                            break;
                        }
                    }
                    group.sort_unstable();
                    groups.push(group);
                }
            }
        }
    }
    groups
}

/// Reads rows of the source: `leaf`'s rows (a relation of `table`) as COPY
/// text lines without their newline, in `leaf.columns` order; with
/// `condition`, only the rows it holds for (it may name `table`'s columns
/// as `table.column`).
pub(crate) trait Rows {
    fn scan(
        &mut self,
        table: &TableName,
        leaf: &Leaf,
        condition: Option<&str>,
        row: &mut dyn FnMut(&[u8]),
    ) -> anyhow::Result<()>;
}

type Key = Box<[u8]>;

/// Where in a leaf's rows the values subsetting compares are.
#[derive(Debug, Clone)]
pub(crate) struct Shape {
    /// The primary key's fields, or `None`: the whole row is the identity.
    identity: Option<Vec<usize>>,
    /// For each of the table's referenced column lists.
    incoming: Vec<Vec<usize>>,
    /// For each foreign key of the table: (its index, its columns' fields).
    outgoing: Vec<(usize, Vec<usize>)>,
}

/// Rows kept, and counted, per table.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Count {
    pub(crate) rows: u64,
    pub(crate) kept: u64,
    /// Kept by the rule, or for referencing a kept row.
    pub(crate) kept_down: u64,
    /// Kept only because a kept row references it.
    pub(crate) kept_referenced: u64,
    /// COPY text bytes read and kept.
    pub(crate) bytes: u64,
    pub(crate) kept_bytes: u64,
}

/// The decision: which rows of every connected table stay.
#[derive(Debug)]
pub(crate) struct Subset {
    catalog: Catalog,
    plan: Plan,
    /// Identities of rows kept by a rule or as referencing.
    down: Vec<HashSet<Key>>,
    /// Their values of each referenced column list (what referencing rows test).
    down_keys: Vec<Vec<HashSet<Key>>>,
    /// Values of each referenced column list that kept rows reference.
    referenced: Vec<Vec<HashSet<Key>>>,
    pub(crate) counts: Vec<Count>,
    /// How many times a table was read (a cycle is read until it settles).
    pub(crate) reads: u64,
}

/// A COPY text row and where its fields end (tabs inside values are
/// escaped, so every tab separates two fields).
struct Fields<'r> {
    row: &'r [u8],
    tabs: &'r [usize],
}

/// Splits `row` with `tabs` as the (reused) scratch space.
fn split<'r>(row: &'r [u8], tabs: &'r mut Vec<usize>) -> Fields<'r> {
    tabs.clear();
    tabs.extend(memchr::memchr_iter(b'\t', row));
    Fields { row, tabs }
}

impl Fields<'_> {
    fn get(&self, i: usize) -> Option<&[u8]> {
        if i > self.tabs.len() {
            return None;
        }
        let start = if i == 0 { 0 } else { self.tabs[i - 1] + 1 };
        let end = self.tabs.get(i).copied().unwrap_or(self.row.len());
        Some(&self.row[start..end])
    }
}

const NULL: &[u8] = b"\\N";

/// The values at `at`, joined; `None` when one is NULL (a foreign key with a
/// NULL column is not checked, MATCH SIMPLE or FULL).
fn key(fields: &Fields, at: &[usize], buf: &mut Vec<u8>) -> Option<()> {
    buf.clear();
    for (n, i) in at.iter().enumerate() {
        let f = fields.get(*i)?;
        if f == NULL {
            return None;
        }
        if n > 0 {
            buf.push(b'\t');
        }
        buf.extend_from_slice(f);
    }
    Some(())
}

/// Whether the sample of `fraction` of `table` takes the row whose identity
/// is `id`: the same rows every run (SHA-256 of the table's name and the
/// identity, so two tables' samples are not the same ids; no secret in it).
pub(crate) fn sampled(table: &TableName, id: &[u8], fraction: f64) -> bool {
    if fraction >= 1.0 {
        return true;
    }
    let mut h = Sha256::new();
    h.update(table.to_string().as_bytes());
    h.update([0]);
    h.update(id);
    let digest = h.finalize();
    let x = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    (x as f64) < fraction * (u64::MAX as f64)
}

impl Subset {
    fn shape_of(&self, table: usize, columns: &[String]) -> Result<Shape, String> {
        let at = |cols: &[String]| -> Result<Vec<usize>, String> {
            cols.iter()
                .map(|c| {
                    columns.iter().position(|x| x == c).ok_or_else(|| {
                        format!(
                            "table {} has no column {c} in one of its parts",
                            self.catalog.tables[table].name
                        )
                    })
                })
                .collect()
        };
        let t = &self.catalog.tables[table];
        Ok(Shape {
            identity: match &t.primary_key {
                Some(pk) => Some(at(pk)?),
                None => None,
            },
            incoming: self.plan.colsets[table]
                .iter()
                .map(|c| at(c))
                .collect::<Result<_, _>>()?,
            outgoing: self
                .catalog
                .foreign_keys
                .iter()
                .enumerate()
                .filter(|(_, fk)| fk.child == table)
                .map(|(i, fk)| Ok((i, at(&fk.columns)?)))
                .collect::<Result<_, String>>()?,
        })
    }

    /// Decides: reads the tables with rules, then the referencing ones
    /// parents first, then every connected table children first. `exact`
    /// reads every connected table to count its rows (else `counts` holds
    /// only the tables read; the final stream counts them all).
    pub(crate) fn compute(
        catalog: Catalog,
        plan: Plan,
        rules: &Rules,
        rows: &mut dyn Rows,
        exact: bool,
    ) -> anyhow::Result<Subset> {
        let n = catalog.tables.len();
        let mut s = Subset {
            down: vec![HashSet::new(); n],
            down_keys: plan
                .colsets
                .iter()
                .map(|c| vec![HashSet::new(); c.len()])
                .collect(),
            referenced: plan
                .colsets
                .iter()
                .map(|c| vec![HashSet::new(); c.len()])
                .collect(),
            counts: vec![Count::default(); n],
            reads: 0,
            catalog,
            plan,
        };
        let groups = s.plan.groups.clone();
        // 1. Rules.
        for t in 0..n {
            if s.plan.roles[t] != Role::Rule {
                continue;
            }
            let rule = &rules.tables[&s.catalog.tables[t].name];
            for leaf in s.catalog.tables[t].leaves.clone() {
                let shape = s.shape_of(t, &leaf.columns).map_err(anyhow::Error::msg)?;
                let mut buf = Vec::new();
                let mut tabs = Vec::new();
                s.reads += 1;
                let table = s.catalog.tables[t].name.clone();
                rows.scan(&table, &leaf, rule.condition.as_deref(), &mut |row| {
                    let fields = split(row, &mut tabs);
                    let id = identity(&fields, &shape, &mut buf);
                    if rule.fraction.is_none_or(|f| sampled(&table, &id, f)) {
                        let keys = keys_of(&fields, &shape, &mut buf);
                        s.keep_down(t, id, keys);
                    }
                })?;
            }
        }
        // 2. Referencing, parents first; a cycle until it settles.
        for group in &groups {
            let members: Vec<usize> = group
                .iter()
                .copied()
                .filter(|t| s.plan.roles[*t] == Role::Referencing)
                .collect();
            if members.is_empty() {
                continue;
            }
            loop {
                let before: usize = members.iter().map(|t| s.down[*t].len()).sum();
                for &t in &members {
                    s.scan_referencing(t, group, rows)?;
                }
                let after: usize = members.iter().map(|t| s.down[*t].len()).sum();
                if after == before || !s.cyclic(group) {
                    break;
                }
            }
        }
        // 3. Referenced, children first; a cycle until it settles.
        for group in groups.iter().rev() {
            loop {
                let before: usize = group
                    .iter()
                    .map(|t| s.referenced[*t].iter().map(HashSet::len).sum::<usize>())
                    .sum();
                for &t in group {
                    // Nothing references this table's rows: it keeps its
                    // rule's and referencing rows, whose references are
                    // taken already. Read it only to count (--dry-run).
                    if !exact && s.referenced[t].iter().all(HashSet::is_empty) {
                        continue;
                    }
                    s.scan_referenced(t, rows)?;
                }
                let after: usize = group
                    .iter()
                    .map(|t| s.referenced[*t].iter().map(HashSet::len).sum::<usize>())
                    .sum();
                if after == before || !s.cyclic(group) {
                    break;
                }
            }
        }
        Ok(s)
    }

    /// Whether a group has an edge inside it (a cycle, or a self-reference).
    fn cyclic(&self, group: &[usize]) -> bool {
        self.catalog
            .foreign_keys
            .iter()
            .any(|fk| group.contains(&fk.child) && group.contains(&fk.parent))
    }

    /// A row kept by its rule or as referencing: what references it tests
    /// against, and what it references comes along.
    fn keep_down(&mut self, t: usize, id: Key, keys: RowKeys) {
        if !self.down[t].insert(id) {
            return;
        }
        for (c, k) in keys.incoming {
            self.down_keys[t][c].insert(k);
        }
        for (edge, k) in keys.outgoing {
            let fk = &self.catalog.foreign_keys[edge];
            self.referenced[fk.parent][self.plan.edge_colset[edge]].insert(k);
        }
    }

    fn scan_referencing(
        &mut self,
        t: usize,
        inside: &[usize],
        rows: &mut dyn Rows,
    ) -> anyhow::Result<()> {
        // The foreign keys that tie this table to the rule: to tables with
        // a rule, or to referencing ones.
        let ties: Vec<usize> = self
            .catalog
            .foreign_keys
            .iter()
            .enumerate()
            .filter(|(_, fk)| {
                fk.child == t
                    && matches!(self.plan.roles[fk.parent], Role::Rule | Role::Referencing)
            })
            .map(|(i, _)| i)
            .collect();
        for leaf in self.catalog.tables[t].leaves.clone() {
            let shape = self
                .shape_of(t, &leaf.columns)
                .map_err(anyhow::Error::msg)?;
            let mut buf = Vec::new();
            let mut tabs = Vec::new();
            self.reads += 1;
            let mut kept = Vec::new();
            rows.scan(&self.catalog.tables[t].name, &leaf, None, &mut |row| {
                let fields = split(row, &mut tabs);
                let mut tied = 0;
                for (edge, at) in &shape.outgoing {
                    if !ties.contains(edge) {
                        continue;
                    }
                    if key(&fields, at, &mut buf).is_none() {
                        continue;
                    }
                    let fk = &self.catalog.foreign_keys[*edge];
                    let set = &self.down_keys[fk.parent][self.plan.edge_colset[*edge]];
                    if set.contains(buf.as_slice()) {
                        tied += 1;
                    } else if !inside.contains(&fk.parent) {
                        return;
                    }
                    // A reference inside the table's own cycle (a parent
                    // comment, an invoice's current version) need not be
                    // tied: what it points at is pulled in upward.
                }
                if tied > 0 {
                    // Only its keys wait for the end of the read, not the row.
                    let id = identity(&fields, &shape, &mut buf);
                    kept.push((id, keys_of(&fields, &shape, &mut buf)));
                }
            })?;
            // Kept after the read: a self-reference settles over reads, not
            // within one (the loop in `compute` reads again).
            for (id, keys) in kept {
                self.keep_down(t, id, keys);
            }
        }
        Ok(())
    }

    fn scan_referenced(&mut self, t: usize, rows: &mut dyn Rows) -> anyhow::Result<()> {
        let mut count = Count::default();
        for leaf in self.catalog.tables[t].leaves.clone() {
            let shape = self
                .shape_of(t, &leaf.columns)
                .map_err(anyhow::Error::msg)?;
            let mut buf = Vec::new();
            let mut tabs = Vec::new();
            let mut found: Vec<(usize, Key)> = Vec::new();
            self.reads += 1;
            rows.scan(&self.catalog.tables[t].name, &leaf, None, &mut |row| {
                let fields = split(row, &mut tabs);
                count.rows += 1;
                count.bytes += row.len() as u64 + 1;
                let down = self.down[t].contains(identity_ref(&fields, &shape, &mut buf));
                let up = !down
                    && shape.incoming.iter().enumerate().any(|(c, at)| {
                        key(&fields, at, &mut buf).is_some()
                            && self.referenced[t][c].contains(buf.as_slice())
                    });
                if !(down || up) {
                    return;
                }
                count.kept += 1;
                count.kept_bytes += row.len() as u64 + 1;
                if down {
                    count.kept_down += 1;
                    // Its references were taken when it was kept.
                    return;
                }
                count.kept_referenced += 1;
                for (edge, at) in &shape.outgoing {
                    if key(&fields, at, &mut buf).is_some() {
                        found.push((*edge, buf.as_slice().into()));
                    }
                }
            })?;
            for (edge, k) in found {
                let fk = &self.catalog.foreign_keys[edge];
                self.referenced[fk.parent][self.plan.edge_colset[edge]].insert(k);
            }
        }
        self.counts[t] = count;
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    #[cfg(test)]
    pub(crate) fn role(&self, t: usize) -> Role {
        self.plan.roles[t]
    }

    /// The filter for one data block of the final stream: `None` when the
    /// block's table is copied whole. An error when its columns are not
    /// the ones the decision read (fail closed).
    pub(crate) fn filter(
        &self,
        leaf: &TableName,
        columns: &[String],
    ) -> Result<Option<Filter<'_>>, String> {
        // pg_dump may load a partitioned table through its root (hash
        // partitions on an enum): the root's name then heads the block.
        // A name the catalog does not know is never copied unfiltered.
        let Some(t) = self
            .catalog
            .owner_of(leaf)
            .or_else(|| self.catalog.find(leaf))
        else {
            return Err(format!(
                "the dump holds rows of {leaf}, which the source's catalog did not show"
            ));
        };
        if self.plan.roles[t] == Role::Whole {
            return Ok(None);
        }
        Ok(Some(Filter {
            subset: self,
            table: t,
            shape: self.shape_of(t, columns)?,
            buf: Vec::new(),
            tabs: Vec::new(),
        }))
    }
}

/// One decided table in the summary.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct TableReport {
    pub(crate) table: String,
    /// condition, referencing, referenced.
    pub(crate) reason: &'static str,
    #[serde(flatten)]
    pub(crate) count: Count,
}

/// What the subset decided, for the summary, `--json` and `--dry-run`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Report {
    pub(crate) tables: Vec<TableReport>,
    /// Tables not connected to any rule: copied whole.
    pub(crate) whole_tables: Vec<String>,
    pub(crate) bytes_read: u64,
    pub(crate) bytes_kept: u64,
    pub(crate) bytes_saved: u64,
}

impl Subset {
    /// The counts of `stream` (per relation, from the final stream), or
    /// those of the reads (`compute` with `exact`).
    pub(crate) fn report(&self, stream: Option<&BTreeMap<TableName, Count>>) -> Report {
        let mut tables = Vec::new();
        let mut whole_tables = Vec::new();
        for (t, table) in self.catalog.tables.iter().enumerate() {
            match self.plan.roles[t] {
                Role::Whole => whole_tables.push(table.name.to_string()),
                role => tables.push(TableReport {
                    table: table.name.to_string(),
                    reason: role.label(),
                    count: match stream {
                        None => self.counts[t].clone(),
                        Some(stream) => {
                            let mut sum = Count::default();
                            let names = table.leaves.iter().map(|l| &l.name);
                            let blocks = names.chain(
                                // Loaded through its root: one block for all.
                                (!table.leaves.iter().any(|l| l.name == table.name))
                                    .then_some(&table.name),
                            );
                            for c in blocks.filter_map(|name| stream.get(name)) {
                                sum.rows += c.rows;
                                sum.kept += c.kept;
                                sum.kept_down += c.kept_down;
                                sum.kept_referenced += c.kept_referenced;
                                sum.bytes += c.bytes;
                                sum.kept_bytes += c.kept_bytes;
                            }
                            sum
                        }
                    },
                }),
            }
        }
        let bytes_read = tables.iter().map(|t| t.count.bytes).sum::<u64>();
        let bytes_kept = tables.iter().map(|t| t.count.kept_bytes).sum::<u64>();
        Report {
            tables,
            whole_tables,
            bytes_read,
            bytes_kept,
            bytes_saved: bytes_read - bytes_kept,
        }
    }
}

impl Report {
    /// The table `--dry-run` prints and the summary ends with.
    pub(crate) fn render(&self) -> String {
        let width = self.tables.iter().map(|t| t.table.len()).max().unwrap_or(0);
        let mut out = format!(
            "subset: {} tables sliced, {} copied whole; {} of {} of row data kept ({} left out)\n",
            self.tables.len(),
            self.whole_tables.len(),
            super::human::bytes(self.bytes_kept),
            super::human::bytes(self.bytes_read),
            super::human::bytes(self.bytes_saved),
        );
        for t in &self.tables {
            let c = &t.count;
            let mut line = format!(
                "  {:width$}  {:11}  {} of {} rows",
                t.table, t.reason, c.kept, c.rows
            );
            if t.reason != "referenced" && c.kept_referenced > 0 {
                line.push_str(&format!(
                    " ({} by {}, {} referenced)",
                    c.kept_down, t.reason, c.kept_referenced
                ));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        if !self.whole_tables.is_empty() {
            out.push_str(&format!("  whole: {}\n", self.whole_tables.join(", ")));
        }
        out
    }
}

/// The values a kept row's neighbours are tested against: its referenced
/// column lists (by index), and its foreign keys' columns (by key), non-NULL.
struct RowKeys {
    incoming: Vec<(usize, Key)>,
    outgoing: Vec<(usize, Key)>,
}

fn keys_of(fields: &Fields, shape: &Shape, buf: &mut Vec<u8>) -> RowKeys {
    let mut keys = RowKeys {
        incoming: Vec::new(),
        outgoing: Vec::new(),
    };
    for (c, at) in shape.incoming.iter().enumerate() {
        if key(fields, at, buf).is_some() {
            keys.incoming.push((c, buf.as_slice().into()));
        }
    }
    for (edge, at) in &shape.outgoing {
        if key(fields, at, buf).is_some() {
            keys.outgoing.push((*edge, buf.as_slice().into()));
        }
    }
    keys
}

fn identity(fields: &Fields, shape: &Shape, buf: &mut Vec<u8>) -> Key {
    identity_ref(fields, shape, buf).into()
}

/// A primary key is never NULL; without one the whole row is the identity,
/// held as 16 bytes of its SHA-256 (memory is for keys, not rows).
fn identity_ref<'b>(fields: &Fields<'b>, shape: &Shape, buf: &'b mut Vec<u8>) -> &'b [u8] {
    match &shape.identity {
        Some(at) => {
            buf.clear();
            for (n, i) in at.iter().enumerate() {
                if n > 0 {
                    buf.push(b'\t');
                }
                buf.extend_from_slice(fields.get(*i).unwrap_or_default());
            }
            buf.as_slice()
        }
        None => {
            buf.clear();
            buf.extend_from_slice(&Sha256::digest(fields.row)[..16]);
            buf.as_slice()
        }
    }
}

/// Decides row by row for one data block.
pub(crate) struct Filter<'s> {
    subset: &'s Subset,
    table: usize,
    shape: Shape,
    buf: Vec<u8>,
    tabs: Vec<usize>,
}

impl Filter<'_> {
    /// `row`: one COPY text line, with or without its newline.
    pub(crate) fn keeps(&mut self, row: &[u8]) -> Option<Kept> {
        let row = row.strip_suffix(b"\n").unwrap_or(row);
        let fields = split(row, &mut self.tabs);
        let s = self.subset;
        let t = self.table;
        if s.down[t].contains(identity_ref(&fields, &self.shape, &mut self.buf)) {
            return Some(Kept::Down);
        }
        self.shape
            .incoming
            .iter()
            .enumerate()
            .any(|(c, at)| {
                key(&fields, at, &mut self.buf).is_some()
                    && s.referenced[t][c].contains(self.buf.as_slice())
            })
            .then_some(Kept::Referenced)
    }
}

/// Why a row of the final stream stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kept {
    /// Its table's rule, or it references a row kept so.
    Down,
    /// A kept row references it.
    Referenced,
}

impl Count {
    /// Counts one row of the final stream.
    pub(crate) fn add(&mut self, row: &[u8], kept: Option<Kept>) {
        let len = row.len() as u64 + u64::from(!row.ends_with(b"\n"));
        self.rows += 1;
        self.bytes += len;
        match kept {
            None => {}
            Some(k) => {
                self.kept += 1;
                self.kept_bytes += len;
                match k {
                    Kept::Down => self.kept_down += 1,
                    Kept::Referenced => self.kept_referenced += 1,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Rows in memory; a condition is `column=value` (enough for the tests).
    #[derive(Default)]
    struct Memory {
        rows: HashMap<TableName, Vec<String>>,
        reads: HashMap<TableName, u32>,
    }

    impl Rows for Memory {
        fn scan(
            &mut self,
            _: &TableName,
            leaf: &Leaf,
            condition: Option<&str>,
            row: &mut dyn FnMut(&[u8]),
        ) -> anyhow::Result<()> {
            *self.reads.entry(leaf.name.clone()).or_default() += 1;
            for r in self.rows.get(&leaf.name).into_iter().flatten() {
                if let Some(c) = condition {
                    let (col, want) = c.split_once('=').unwrap();
                    let at = leaf.columns.iter().position(|x| x == col).unwrap();
                    if r.split('\t').nth(at) != Some(want) {
                        continue;
                    }
                }
                row(r.as_bytes());
            }
            Ok(())
        }
    }

    struct Db {
        catalog: Catalog,
        memory: Memory,
    }

    impl Db {
        fn new() -> Db {
            Db {
                catalog: Catalog::default(),
                memory: Memory::default(),
            }
        }
        fn table(&mut self, name: &str, cols: &str, pk: Option<&str>, rows: &[&str]) -> &mut Db {
            let name = TableName::new("public", name);
            self.catalog.tables.push(Table {
                name: name.clone(),
                primary_key: pk.map(|p| p.split(',').map(String::from).collect()),
                leaves: vec![Leaf {
                    name: name.clone(),
                    columns: cols.split(',').map(String::from).collect(),
                }],
            });
            self.memory
                .rows
                .insert(name, rows.iter().map(|r| r.replace(' ', "\t")).collect());
            self
        }
        fn fk(&mut self, child: &str, cols: &str, parent: &str, refd: &str) -> &mut Db {
            let at = |n: &str| self.catalog.find(&TableName::new("public", n)).unwrap();
            let fk = ForeignKey {
                name: format!("{child}_{cols}_fkey"),
                child: at(child),
                columns: cols.split(',').map(String::from).collect(),
                parent: at(parent),
                referenced: refd.split(',').map(String::from).collect(),
            };
            self.catalog.foreign_keys.push(fk);
            self
        }
        /// The kept rows of every table, as the final filter decides.
        /// The kept rows of every table, as the final filter decides; the
        /// same whether every table is read to count it or not.
        fn run(&mut self, rules: &Rules) -> (BTreeMap<String, Vec<String>>, Subset) {
            let (fast, _) = self.decide(rules, false);
            let (exact, s) = self.decide(rules, true);
            assert_eq!(fast, exact, "reading fewer tables changed the slice");
            (exact, s)
        }

        fn decide(
            &mut self,
            rules: &Rules,
            exact: bool,
        ) -> (BTreeMap<String, Vec<String>>, Subset) {
            let plan = plan(&self.catalog, rules).unwrap();
            let s = Subset::compute(self.catalog.clone(), plan, rules, &mut self.memory, exact)
                .unwrap();
            let mut out = BTreeMap::new();
            for t in &self.catalog.tables {
                let leaf = &t.leaves[0];
                let mut f = s.filter(&leaf.name, &leaf.columns).unwrap();
                let kept = self.memory.rows[&leaf.name]
                    .iter()
                    .filter(|r| f.as_mut().is_none_or(|f| f.keeps(r.as_bytes()).is_some()))
                    .map(|r| r.replace('\t', " "))
                    .collect();
                out.insert(t.name.name.clone(), kept);
            }
            (out, s)
        }
    }

    fn rule(table: &str, condition: &str) -> Rules {
        let mut r = Rules::default();
        r.add_condition(&format!("{table}: {condition}")).unwrap();
        r
    }

    /// customers ← orders ← items → products → categories (a tree), and
    /// an unrelated table.
    fn shop() -> Db {
        let mut db = Db::new();
        db.table(
            "categories",
            "id,parent_id",
            Some("id"),
            &["1 \\N", "2 1", "3 2", "4 1", "5 \\N"],
        )
        .table(
            "products",
            "id,category_id",
            Some("id"),
            &["10 3", "11 5", "12 4"],
        )
        .table(
            "customers",
            "id,email",
            Some("id"),
            &["100 a@x", "101 b@x", "102 c@x"],
        )
        .table(
            "orders",
            "id,customer_id,region",
            Some("id"),
            &["1000 100 eu", "1001 101 us", "1002 100 us"],
        )
        .table(
            "items",
            "order_id,line,product_id",
            Some("order_id,line"),
            &["1000 1 10", "1000 2 11", "1001 1 12", "1002 1 12"],
        )
        .table("settings", "k,v", None, &["a 1", "b 2"])
        .fk("categories", "parent_id", "categories", "id")
        .fk("products", "category_id", "categories", "id")
        .fk("orders", "customer_id", "customers", "id")
        .fk("items", "order_id", "orders", "id")
        .fk("items", "product_id", "products", "id");
        db
    }

    #[test]
    fn a_condition_keeps_its_rows_their_children_and_what_they_reference() {
        let mut db = shop();
        let (kept, s) = db.run(&rule("orders", "region=eu"));
        assert_eq!(kept["orders"], ["1000 100 eu"]);
        assert_eq!(kept["items"], ["1000 1 10", "1000 2 11"]);
        assert_eq!(
            kept["customers"],
            ["100 a@x"],
            "an unreferenced customer is not copied"
        );
        assert_eq!(kept["products"], ["10 3", "11 5"]);
        // The ancestors of category 3 (2, 1) and 5 itself; not 4.
        assert_eq!(kept["categories"], ["1 \\N", "2 1", "3 2", "5 \\N"]);
        assert_eq!(
            kept["settings"],
            ["a 1", "b 2"],
            "an unconnected table is whole"
        );
        let at = |n: &str| s.catalog().find(&TableName::new("public", n)).unwrap();
        assert_eq!(s.role(at("orders")), Role::Rule);
        assert_eq!(s.role(at("items")), Role::Referencing);
        assert_eq!(s.role(at("customers")), Role::Referenced);
        assert_eq!(s.role(at("settings")), Role::Whole);
        assert_eq!(s.counts[at("orders")].kept, 1);
        assert_eq!(s.counts[at("orders")].rows, 3);
        assert_eq!(s.counts[at("categories")].kept_referenced, 4);
    }

    #[test]
    fn the_summary_names_each_table_its_reason_and_its_rows() {
        let mut db = shop();
        let (_, s) = db.run(&rule("orders", "region=eu"));
        insta::assert_snapshot!(s.report(None).render());
    }

    #[test]
    fn rows_pulled_in_upward_do_not_pull_in_their_children() {
        let mut db = shop();
        // Order 1002 buys product 12, as does 1001: 1001 must not come along.
        let (kept, _) = db.run(&rule("orders", "id=1002"));
        assert_eq!(kept["orders"], ["1002 100 us"]);
        assert_eq!(kept["items"], ["1002 1 12"]);
        assert_eq!(kept["products"], ["12 4"]);
    }

    #[test]
    fn a_rule_on_a_parent_restricts_its_children_down_the_tree() {
        let mut db = shop();
        let (kept, _) = db.run(&rule("customers", "email=a@x"));
        assert_eq!(kept["customers"], ["100 a@x"]);
        assert_eq!(kept["orders"], ["1000 100 eu", "1002 100 us"]);
        assert_eq!(kept["items"], ["1000 1 10", "1000 2 11", "1002 1 12"]);
        assert_eq!(kept["products"], ["10 3", "11 5", "12 4"]);
    }

    #[test]
    fn a_referenced_row_is_kept_even_when_its_own_rule_excludes_it() {
        let mut db = shop();
        let mut rules = rule("orders", "region=eu");
        rules.add_condition("customers: email=c@x").unwrap();
        let (kept, _) = db.run(&rules);
        // 102 by its rule; 100 because order 1000 references it.
        assert_eq!(kept["customers"], ["100 a@x", "102 c@x"]);
    }

    #[test]
    fn a_mutual_pair_and_a_composite_key_settle() {
        let mut db = Db::new();
        db.table("a", "id,b_id", Some("id"), &["1 10", "2 11", "3 \\N"])
            .table("b", "id,a_id", Some("id"), &["10 2", "11 3", "12 \\N"])
            .table(
                "batches",
                "site,no",
                Some("site,no"),
                &["x 1", "x 2", "y 1"],
            )
            .table(
                "runs",
                "id,site,no",
                Some("id"),
                &["7 x 1", "8 y 1", "9 \\N 1"],
            )
            .fk("a", "b_id", "b", "id")
            .fk("b", "a_id", "a", "id")
            .fk("runs", "site,no", "batches", "site,no");
        let mut rules = rule("a", "id=1");
        rules.add_condition("runs: id=8").unwrap();
        let (kept, s) = db.run(&rules);
        // a1 → b10 → a2 → b11 → a3: the cycle is followed until it settles.
        assert_eq!(kept["a"], ["1 10", "2 11", "3 \\N"]);
        assert_eq!(kept["b"], ["10 2", "11 3"]);
        assert_eq!(kept["batches"], ["y 1"]);
        assert_eq!(kept["runs"], ["8 y 1"]);
        assert!(s.reads < 20, "{} reads", s.reads);
    }

    #[test]
    fn a_cycle_below_the_rule_keeps_what_hangs_from_kept_rows() {
        let mut db = shop();
        db.table(
            "invoices",
            "id,order_id,current",
            Some("id"),
            &["1 1000 11", "2 1001 21", "3 1000 \\N"],
        )
        .table(
            "versions",
            "id,invoice_id",
            Some("id"),
            &["10 1", "11 1", "21 2", "30 3"],
        )
        .table(
            "notes",
            "id,order_id,parent_id",
            Some("id"),
            &["1 1000 \\N", "2 1001 \\N", "3 1000 2", "4 1000 3"],
        )
        .fk("invoices", "order_id", "orders", "id")
        .fk("invoices", "current", "versions", "id")
        .fk("versions", "invoice_id", "invoices", "id")
        .fk("notes", "order_id", "orders", "id")
        .fk("notes", "parent_id", "notes", "id");
        let (kept, _) = db.run(&rule("orders", "region=eu"));
        assert_eq!(kept["invoices"], ["1 1000 11", "3 1000 \\N"]);
        assert_eq!(kept["versions"], ["10 1", "11 1", "30 3"]);
        // Note 3 (on a kept order) answers note 2 (on an order left out):
        // 2 comes along as referenced, and so does its order.
        assert_eq!(
            kept["notes"],
            ["1 1000 \\N", "2 1001 \\N", "3 1000 2", "4 1000 3"]
        );
        assert_eq!(kept["orders"], ["1000 100 eu", "1001 101 us"]);
    }

    #[test]
    fn null_references_tie_nothing_and_pull_nothing() {
        let mut db = Db::new();
        db.table("teams", "id", Some("id"), &["1", "2"])
            .table("people", "id,team_id", Some("id"), &["5 1", "6 \\N", "7 2"])
            .fk("people", "team_id", "teams", "id");
        let (kept, _) = db.run(&rule("teams", "id=1"));
        assert_eq!(kept["people"], ["5 1"]);
        let (kept, _) = db.run(&rule("people", "id=6"));
        assert_eq!(kept["teams"], Vec::<String>::new());
    }

    #[test]
    fn a_reference_to_a_unique_column_other_than_the_key() {
        let mut db = Db::new();
        db.table(
            "users",
            "id,email",
            Some("id"),
            &["1 a@x", "2 b@x", "3 c@x"],
        )
        .table("logins", "id,email", Some("id"), &["9 b@x", "8 c@x"])
        .fk("logins", "email", "users", "email");
        let (kept, _) = db.run(&rule("logins", "id=9"));
        assert_eq!(kept["users"], ["2 b@x"]);
    }

    #[test]
    fn a_sample_is_the_same_every_run_and_about_its_size() {
        let rows: Vec<String> = (0..2000).map(|i| format!("{i} x")).collect();
        let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
        let mut db = Db::new();
        db.table("events", "id,what", Some("id"), &rows);
        let mut rules = Rules::default();
        rules.add_fraction("public.events=0.05").unwrap();
        let (a, _) = db.run(&rules);
        let (b, _) = db.run(&rules);
        assert_eq!(a, b);
        let n = a["events"].len();
        assert!((60..=140).contains(&n), "{n} of 2000 at 5%");
    }

    #[test]
    fn specs_and_the_rules_file() {
        let mut r = Rules::default();
        r.add_condition("orders: created_at > now() - interval '30 days'")
            .unwrap();
        r.add_condition("sales.\"Odd: Name\": x = 'a;b'").unwrap();
        r.add_fraction("events=0.5").unwrap();
        assert_eq!(
            r.tables[&TableName::new("public", "orders")]
                .condition
                .as_deref(),
            Some("created_at > now() - interval '30 days'")
        );
        assert!(r.tables.contains_key(&TableName::new("sales", "Odd: Name")));
        assert_eq!(
            r.tables[&TableName::new("public", "events")].fraction,
            Some(0.5)
        );
        for bad in [
            "orders",
            "orders: ",
            "orders: true; DELETE FROM orders",
            "orders: true) OR (true",
            "orders: x = 1 -- ",
            "orders: x = 'open",
            "orders: $$x$$ = 'a'",
            "orders: x = 1 \\! touch /tmp/x",
            "orders: x = E'\\'' OR true",
            "orders: x ~ '\\d'",
        ] {
            assert!(Rules::default().add_condition(bad).is_err(), "{bad}");
        }
        for bad in ["events", "events=0", "events=1.5", "events=nan", "=0.5"] {
            assert!(Rules::default().add_fraction(bad).is_err(), "{bad}");
        }
        let file: toml::Table = toml::from_str(
            "[subset]\n\"public.orders\" = \"id < 10\"\nevents = { fraction = 0.05 }\nlogs = { where = \"level = 'error'\", fraction = 0.5 }\n",
        )
        .unwrap();
        let r = Rules::from_toml(&file["subset"]).unwrap();
        assert_eq!(r.tables.len(), 3);
        assert_eq!(
            r.tables[&TableName::new("public", "logs")].fraction,
            Some(0.5)
        );
        for bad in [
            "[subset]\nevents = { fraction = 2.0 }",
            "[subset]\nevents = { size = 1 }",
            "[subset]\nevents = {}",
            "[subset]\nevents = 3",
        ] {
            let file: toml::Table = toml::from_str(bad).unwrap();
            assert!(Rules::from_toml(&file["subset"]).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_block_under_a_partitioned_root_is_filtered_and_an_unknown_one_refused() {
        let mut db = shop();
        db.catalog.tables[3].leaves[0].name = TableName::new("public", "orders_p1");
        db.memory.rows.insert(
            TableName::new("public", "orders_p1"),
            db.memory.rows[&TableName::new("public", "orders")].clone(),
        );
        let rules = rule("orders", "region=eu");
        let p = plan(&db.catalog, &rules).unwrap();
        let s = Subset::compute(db.catalog.clone(), p, &rules, &mut db.memory, false).unwrap();
        let cols: Vec<String> = ["id", "customer_id", "region"].map(String::from).to_vec();
        // pg_dump's load through the root names the root.
        let mut f = s
            .filter(&TableName::new("public", "orders"), &cols)
            .unwrap()
            .expect("filtered, not whole");
        assert_eq!(f.keeps(b"1000\t100\teu"), Some(Kept::Down));
        assert_eq!(f.keeps(b"1001\t101\tus"), None);
        let e = s
            .filter(&TableName::new("public", "orders_new"), &cols)
            .err()
            .unwrap();
        assert!(e.contains("did not show"), "{e}");
    }

    #[test]
    fn naming_a_partition_or_a_missing_table_is_refused() {
        let mut db = shop();
        db.catalog.tables[0].leaves.push(Leaf {
            name: TableName::new("public", "categories_p1"),
            columns: vec!["id".into(), "parent_id".into()],
        });
        let e = plan(&db.catalog, &rule("categories_p1", "id=1")).unwrap_err();
        assert!(e.contains("partition of public.categories"), "{e}");
        let e = plan(&db.catalog, &rule("nope", "id=1")).unwrap_err();
        assert!(e.contains("does not have"), "{e}");
    }
}
