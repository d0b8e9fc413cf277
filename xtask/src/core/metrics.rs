//! The Prometheus textfile (node_exporter's textfile collector format) the
//! backup writes into `BACKUP_DIR/metrics/`. Pure: parse what is there, merge
//! this run's series in, render. Series of other databases and types, and
//! lines this tool does not know, are kept as they were.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use time::OffsetDateTime;

use crate::core::naming::BackupType;

pub(crate) const FILE_NAME: &str = "backup.prom";

/// The metrics this tool owns, in the order they are written, with their help.
const KNOWN: &[(&str, &str)] = &[
    (
        "backup_last_success_timestamp",
        "Unix time of the last successful backup.",
    ),
    (
        "backup_last_failure_timestamp",
        "Unix time of the last failed backup.",
    ),
    (
        "backup_last_status",
        "1 if the last backup succeeded, 0 if it failed.",
    ),
    (
        "backup_size_bytes",
        "Size of the last successful backup file in bytes.",
    ),
    (
        "backup_uncompressed_size_bytes",
        "Size of the SQL in the last successful backup in bytes.",
    ),
    (
        "backup_duration_seconds",
        "Duration of the last successful backup in seconds.",
    ),
    (
        "backup_last_verify_timestamp",
        "Unix time of the last verification of a backup.",
    ),
    (
        "backup_last_verify_status",
        "1 if the last verification passed, 0 if it failed.",
    ),
    (
        "backup_last_verify_success_timestamp",
        "Unix time of the last verification that passed.",
    ),
    (
        "backup_last_upload_status",
        "1 if the last upload to the off-site copy succeeded, 0 if it failed.",
    ),
    (
        "backup_last_upload_success_timestamp",
        "Unix time of the last successful upload to the off-site copy.",
    ),
    (
        "backup_last_upload_failure_timestamp",
        "Unix time of the last failed upload to the off-site copy.",
    ),
    (
        "backup_physical_last_success_timestamp",
        "Unix time of the last successful physical backup (pgBackRest) of this type.",
    ),
    (
        "backup_physical_last_failure_timestamp",
        "Unix time of the last failed physical backup (pgBackRest).",
    ),
    (
        "backup_physical_size_bytes",
        "What the last physical backup of this type added to the repository, in bytes.",
    ),
    (
        "backup_physical_database_size_bytes",
        "Size of the server's data in the last physical backup of this type, in bytes.",
    ),
    (
        "backup_physical_duration_seconds",
        "Duration of the last physical backup of this type in seconds.",
    ),
    (
        "backup_wal_archive_lag_seconds",
        "Seconds of WAL at risk when last measured: since the last archived segment while a finished one waits or a push failed, else 0.",
    ),
    (
        "backup_wal_archive_checked_timestamp",
        "Unix time the archive lag was last measured.",
    ),
];

/// The names of the metrics this tool writes (alert rules and dashboards may use only these).
#[cfg(test)]
pub(crate) fn known_names() -> impl Iterator<Item = &'static str> {
    KNOWN.iter().map(|(n, _)| *n)
}

/// One series: metric name and its rendered label set.
type Key = (String, String);

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Metrics {
    series: BTreeMap<Key, String>,
}

impl Metrics {
    /// Reads a textfile; comment lines are dropped (they are rewritten for known metrics).
    pub(crate) fn parse(text: &str) -> Metrics {
        let mut series = BTreeMap::new();
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (head, value) = match line.rsplit_once(' ') {
                Some(p) => p,
                None => continue,
            };
            let (name, labels) = match head.find('{') {
                Some(i) => (&head[..i], &head[i..]),
                None => (head, ""),
            };
            series.insert((name.to_string(), labels.to_string()), value.to_string());
        }
        Metrics { series }
    }

    pub(crate) fn set(&mut self, name: &str, labels: &[(&str, &str)], value: impl ToString) {
        self.series
            .insert((name.to_string(), render_labels(labels)), value.to_string());
    }

    /// The largest value of `name` across the series of `database` (any type).
    pub(crate) fn max_for_database(&self, name: &str, database: &str) -> Option<f64> {
        // The tool writes `database` as the first label.
        let first = format!("{{database=\"{}\"", escape(database));
        self.series
            .iter()
            .filter(|((n, labels), _)| {
                n == name
                    && labels
                        .strip_prefix(&first)
                        .is_some_and(|rest| rest.starts_with(',') || rest.starts_with('}'))
            })
            .filter_map(|(_, v)| v.parse::<f64>().ok())
            .reduce(f64::max)
    }

    /// The databases any series names (the tool writes `database` first).
    pub(crate) fn databases(&self) -> Vec<String> {
        let mut dbs: Vec<String> = self
            .series
            .keys()
            .filter_map(|(_, labels)| {
                let rest = labels.strip_prefix("{database=\"")?;
                let end = rest.find("\",").or_else(|| rest.find("\"}"))?;
                Some(rest[..end].replace("\\\"", "\"").replace("\\\\", "\\"))
            })
            .collect();
        dbs.sort();
        dbs.dedup();
        dbs
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let mut names: Vec<&str> = KNOWN.iter().map(|(n, _)| *n).collect();
        for (name, _) in self.series.keys() {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
        for name in names {
            let rows: Vec<_> = self.series.iter().filter(|((n, _), _)| n == name).collect();
            if rows.is_empty() {
                continue;
            }
            if let Some((_, help)) = KNOWN.iter().find(|(n, _)| *n == name) {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            }
            for ((n, labels), value) in rows {
                let _ = writeln!(out, "{n}{labels} {value}");
            }
        }
        out
    }
}

fn render_labels(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The outcome of one backup run, as the metrics record it.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Success {
        size_bytes: u64,
        uncompressed_bytes: u64,
        duration_seconds: f64,
    },
    Failure,
}

pub(crate) fn record_backup(
    m: &mut Metrics,
    database: &str,
    kind: BackupType,
    at: OffsetDateTime,
    outcome: &Outcome,
) {
    let labels = [("database", database), ("type", kind.as_str())];
    let ts = at.unix_timestamp();
    match outcome {
        Outcome::Success {
            size_bytes,
            uncompressed_bytes,
            duration_seconds,
        } => {
            m.set("backup_last_success_timestamp", &labels, ts);
            m.set("backup_last_status", &labels, 1);
            m.set("backup_size_bytes", &labels, size_bytes);
            m.set(
                "backup_uncompressed_size_bytes",
                &labels,
                uncompressed_bytes,
            );
            m.set(
                "backup_duration_seconds",
                &labels,
                format!("{duration_seconds:.3}"),
            );
        }
        Outcome::Failure => {
            m.set("backup_last_failure_timestamp", &labels, ts);
            m.set("backup_last_status", &labels, 0);
        }
    }
}

/// A physical backup's result, for the stanza's series.
pub(crate) fn record_physical(
    m: &mut Metrics,
    stanza: &str,
    at: OffsetDateTime,
    outcome: Option<(&str, u64, u64, f64)>,
) {
    let ts = at.unix_timestamp();
    match outcome {
        Some((kind, repo_bytes, db_bytes, secs)) => {
            let labels = [("stanza", stanza), ("type", kind)];
            m.set("backup_physical_last_success_timestamp", &labels, ts);
            m.set("backup_physical_size_bytes", &labels, repo_bytes);
            m.set("backup_physical_database_size_bytes", &labels, db_bytes);
            m.set(
                "backup_physical_duration_seconds",
                &labels,
                format!("{secs:.3}"),
            );
        }
        None => m.set(
            "backup_physical_last_failure_timestamp",
            &[("stanza", stanza)],
            ts,
        ),
    }
}

/// The WAL archive's lag, measured now.
pub(crate) fn record_archive_lag(m: &mut Metrics, stanza: &str, at: OffsetDateTime, lag: f64) {
    let labels = [("stanza", stanza)];
    m.set(
        "backup_wal_archive_lag_seconds",
        &labels,
        format!("{lag:.0}"),
    );
    m.set(
        "backup_wal_archive_checked_timestamp",
        &labels,
        at.unix_timestamp(),
    );
}

/// A check of a backup set that the metrics follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// `--verify`, `db-verify`: the last check's time and result.
    Verify,
    /// The off-site copy: the last result, and when it last succeeded or failed.
    Upload,
}

pub(crate) fn record_check(
    m: &mut Metrics,
    check: Check,
    database: &str,
    kind: BackupType,
    at: OffsetDateTime,
    ok: bool,
) {
    let labels = [("database", database), ("type", kind.as_str())];
    let ts = at.unix_timestamp();
    match check {
        Check::Verify => {
            m.set("backup_last_verify_timestamp", &labels, ts);
            m.set("backup_last_verify_status", &labels, u8::from(ok));
            if ok {
                m.set("backup_last_verify_success_timestamp", &labels, ts);
            }
        }
        Check::Upload => {
            m.set("backup_last_upload_status", &labels, u8::from(ok));
            let name = if ok {
                "backup_last_upload_success_timestamp"
            } else {
                "backup_last_upload_failure_timestamp"
            };
            m.set(name, &labels, ts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    /// The shipped alert rules and dashboard use only metrics this tool writes.
    #[test]
    fn ops_files_name_only_known_metrics() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let known: Vec<&str> = known_names().collect();
        for file in [
            "ops/prometheus/backup-alerts.yml",
            "ops/prometheus/backup-alerts.test.yml",
            "ops/grafana/backup-dashboard.json",
        ] {
            let text = std::fs::read_to_string(root.join(file)).unwrap();
            let mut used = 0;
            for (i, _) in text.match_indices("backup_") {
                let name: String = text[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                assert!(
                    known.contains(&name.as_str()),
                    "{file} uses {name}, which the tool never writes"
                );
                used += 1;
            }
            assert!(used > 0, "{file} names no metric");
        }
    }

    #[test]
    fn per_database_queries() {
        let m = Metrics::parse(
            "backup_last_success_timestamp{database=\"app\",type=\"daily\"} 100\n\
             backup_last_success_timestamp{database=\"app\",type=\"weekly\"} 300\n\
             backup_last_success_timestamp{database=\"app2\",type=\"daily\"} 999\n\
             node_other{database=\"zzz\"} 1\n",
        );
        assert_eq!(
            m.max_for_database("backup_last_success_timestamp", "app"),
            Some(300.0)
        );
        assert_eq!(
            m.max_for_database("backup_last_failure_timestamp", "app"),
            None
        );
        assert_eq!(m.databases(), ["app", "app2", "zzz"]);
    }

    #[test]
    fn merging_keeps_other_series_and_foreign_lines() {
        let before = "\
# HELP backup_size_bytes old help
backup_size_bytes{database=\"other\",type=\"weekly\"} 42
backup_last_status{database=\"app\",type=\"daily\"} 0
node_custom_metric 7
";
        let mut m = Metrics::parse(before);
        record_backup(
            &mut m,
            "app",
            BackupType::Daily,
            datetime!(2026-11-24 02:00 UTC),
            &Outcome::Success {
                size_bytes: 1048576,
                uncompressed_bytes: 8388608,
                duration_seconds: 12.3456,
            },
        );
        record_backup(
            &mut m,
            "app",
            BackupType::Monthly,
            datetime!(2026-11-24 03:00 UTC),
            &Outcome::Failure,
        );
        record_check(
            &mut m,
            Check::Verify,
            "app",
            BackupType::Daily,
            datetime!(2026-11-24 02:01 UTC),
            true,
        );
        let text = m.render();
        insta::assert_snapshot!(text);
        assert_eq!(Metrics::parse(&text), m, "render and parse agree");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut m = Metrics::default();
        m.set("backup_last_status", &[("database", "we\"ird\\db")], 1);
        assert_eq!(
            m.render().lines().last().unwrap(),
            "backup_last_status{database=\"we\\\"ird\\\\db\"} 1"
        );
    }
}
