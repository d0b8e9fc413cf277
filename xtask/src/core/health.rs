//! Is a database's backup healthy? Pure: what the backup directory and the
//! metrics say, a clock and a threshold in; a verdict with its reasons out.
//! `db-status` prints it and turns it into an exit code for monitors and CI.

use std::fmt::Write as _;

use serde::Serialize;
use time::{Duration, OffsetDateTime};

use crate::core::human;

/// The newest usable backup of a database, as far as health goes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Newest {
    pub(crate) file: String,
    #[serde(rename = "type")]
    pub(crate) kind: String,
    #[serde(with = "time::serde::rfc3339")]
    pub(crate) finished_at: OffsetDateTime,
    pub(crate) size_bytes: u64,
}

/// What is known about one database.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Facts {
    pub(crate) database: String,
    pub(crate) newest: Option<Newest>,
    /// From the metrics, across types.
    pub(crate) last_success: Option<OffsetDateTime>,
    pub(crate) last_failure: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Verdict {
    Ok,
    /// No usable backup at all.
    Missing,
    /// The newest usable backup is older than the threshold.
    Stale,
    /// The last run failed (a later success clears it).
    Failing,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Health {
    pub(crate) database: String,
    pub(crate) verdict: Verdict,
    pub(crate) newest: Option<Newest>,
    pub(crate) age_seconds: Option<i64>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub(crate) last_failure_at: Option<OffsetDateTime>,
    /// Every reason it is not ok, one line each.
    pub(crate) problems: Vec<String>,
}

impl Health {
    pub(crate) fn ok(&self) -> bool {
        self.verdict == Verdict::Ok
    }
}

pub(crate) fn assess(facts: &Facts, now: OffsetDateTime, max_age: Duration) -> Health {
    let mut problems = Vec::new();
    let mut verdict = Verdict::Ok;
    let age = facts.newest.as_ref().map(|n| now - n.finished_at);
    match (&facts.newest, age) {
        (Some(newest), Some(age)) if age > max_age => {
            verdict = Verdict::Stale;
            problems.push(format!(
                "the newest backup of '{}' ({}) is {} old, more than the allowed {}",
                facts.database,
                newest.file,
                human::age(age),
                human::age(max_age)
            ));
        }
        (None, _) => {
            verdict = Verdict::Missing;
            problems.push(format!("there is no usable backup of '{}'", facts.database));
        }
        _ => {}
    }
    let failing = match (facts.last_failure, facts.last_success) {
        (Some(f), Some(s)) => f > s,
        (Some(_), None) => true,
        _ => false,
    };
    if failing {
        if verdict == Verdict::Ok {
            verdict = Verdict::Failing;
        }
        let at = facts.last_failure.expect("failing has a failure");
        problems.push(format!(
            "the last backup run of '{}' failed, {} ago (see its log; the metrics say when)",
            facts.database,
            human::age(now - at)
        ));
    }
    Health {
        database: facts.database.clone(),
        verdict,
        newest: facts.newest.clone(),
        age_seconds: age.map(|a| a.whole_seconds()),
        last_failure_at: facts.last_failure.filter(|_| failing),
        problems,
    }
}

/// The table `db-status` prints.
pub(crate) fn render(rows: &[Health]) -> String {
    let width = rows
        .iter()
        .map(|h| h.database.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let file_width = rows
        .iter()
        .filter_map(|h| h.newest.as_ref().map(|n| n.file.len()))
        .max()
        .unwrap_or(13)
        .max(13);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$}  {:<8}  {:<file_width$}  {:>8}  {:>9}",
        "DATABASE", "STATUS", "NEWEST BACKUP", "AGE", "SIZE"
    );
    for h in rows {
        let status = match h.verdict {
            Verdict::Ok => "ok",
            Verdict::Missing => "MISSING",
            Verdict::Stale => "STALE",
            Verdict::Failing => "FAILING",
        };
        let (file, age, size) = match &h.newest {
            Some(n) => (
                n.file.as_str(),
                human::age(Duration::seconds(h.age_seconds.unwrap_or(0))),
                human::bytes(n.size_bytes),
            ),
            None => ("-", "-".into(), "-".into()),
        };
        let _ = writeln!(
            out,
            "{:<width$}  {:<8}  {:<file_width$}  {:>8}  {:>9}",
            h.database, status, file, age, size
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn facts(finished: Option<OffsetDateTime>) -> Facts {
        Facts {
            database: "app".into(),
            newest: finished.map(|f| Newest {
                file: "app_daily_20261124T020000Z.sql.gz".into(),
                kind: "daily".into(),
                finished_at: f,
                size_bytes: 60_000,
            }),
            last_success: finished,
            last_failure: None,
        }
    }

    #[test]
    fn verdicts() {
        let now = datetime!(2026-11-25 03:00 UTC);
        let max = Duration::hours(26);
        let fresh = assess(&facts(Some(datetime!(2026-11-24 02:00 UTC))), now, max);
        assert_eq!((fresh.verdict, fresh.problems.len()), (Verdict::Ok, 0));
        assert_eq!(fresh.age_seconds, Some(25 * 3600));

        let stale = assess(&facts(Some(datetime!(2026-11-23 02:00 UTC))), now, max);
        assert_eq!(stale.verdict, Verdict::Stale);
        assert_eq!(
            stale.problems,
            [
                "the newest backup of 'app' (app_daily_20261124T020000Z.sql.gz) is 2d 1h old, more than the allowed 1d 2h"
            ]
        );

        let missing = assess(&facts(None), now, max);
        assert_eq!(missing.verdict, Verdict::Missing);

        let mut f = facts(Some(datetime!(2026-11-24 02:00 UTC)));
        f.last_failure = Some(datetime!(2026-11-25 02:00 UTC));
        let failing = assess(&f, now, max);
        assert_eq!(failing.verdict, Verdict::Failing);
        assert!(failing.problems[0].starts_with("the last backup run of 'app' failed, 1h 0m ago"));

        // A success after the failure clears it.
        f.last_success = Some(datetime!(2026-11-25 02:30 UTC));
        assert!(assess(&f, now, max).ok());
    }

    #[test]
    fn table() {
        let now = datetime!(2026-11-25 03:00 UTC);
        let rows = [
            assess(
                &facts(Some(datetime!(2026-11-24 02:00 UTC))),
                now,
                Duration::hours(26),
            ),
            assess(
                &Facts {
                    database: "shop".into(),
                    ..facts(None)
                },
                now,
                Duration::hours(26),
            ),
        ];
        insta::assert_snapshot!(render(&rows), @r"
        DATABASE  STATUS    NEWEST BACKUP                           AGE       SIZE
        app       ok        app_daily_20261124T020000Z.sql.gz     1d 1h   58.6 KiB
        shop      MISSING   -                                         -          -
        ");
    }
}
