//! Is a database's backup healthy? Pure: what the backup directory and the
//! metrics say, a clock and a threshold in; a verdict with its reasons out.
//! `db-status` prints it and turns it into an exit code for monitors and CI.

use std::fmt::Write as _;

use serde::Serialize;
use time::{Duration, OffsetDateTime};

use crate::retention::human_age;
use crate::ui;

/// Parses `26h`, `90m`, `2d`, `1w`, `3600s`, `1d12h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(secs) = text.parse::<i64>() {
        return (secs > 0).then(|| Duration::seconds(secs));
    }
    let mut total = Duration::ZERO;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: i64 = number.parse().ok()?;
        number.clear();
        total += match c {
            's' => Duration::seconds(n),
            'm' => Duration::minutes(n),
            'h' => Duration::hours(n),
            'd' => Duration::days(n),
            'w' => Duration::weeks(n),
            _ => return None,
        };
    }
    (number.is_empty() && total > Duration::ZERO).then_some(total)
}

/// The newest usable backup of a database, as far as health goes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Newest {
    pub file: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
    pub size_bytes: u64,
}

/// What is known about one database.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub database: String,
    pub newest: Option<Newest>,
    /// From the metrics, across types.
    pub last_success: Option<OffsetDateTime>,
    pub last_failure: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Ok,
    /// No usable backup at all.
    Missing,
    /// The newest usable backup is older than the threshold.
    Stale,
    /// The last run failed (a later success clears it).
    Failing,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    pub database: String,
    pub verdict: Verdict,
    pub newest: Option<Newest>,
    pub age_seconds: Option<i64>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_failure_at: Option<OffsetDateTime>,
    /// Every reason it is not ok, one line each.
    pub problems: Vec<String>,
}

impl Health {
    pub fn ok(&self) -> bool {
        self.verdict == Verdict::Ok
    }
}

pub fn assess(facts: &Facts, now: OffsetDateTime, max_age: Duration) -> Health {
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
                human_age(age),
                human_age(max_age)
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
            human_age(now - at)
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
pub fn render(rows: &[Health]) -> String {
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
                human_age(Duration::seconds(h.age_seconds.unwrap_or(0))),
                ui::bytes(n.size_bytes),
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

    #[test]
    fn durations() {
        assert_eq!(parse_duration("26h"), Some(Duration::hours(26)));
        assert_eq!(parse_duration("1d12h"), Some(Duration::hours(36)));
        assert_eq!(parse_duration("90m"), Some(Duration::minutes(90)));
        assert_eq!(parse_duration("1w"), Some(Duration::days(7)));
        assert_eq!(parse_duration("3600"), Some(Duration::hours(1)));
        for bad in ["", "h", "0", "-5", "26x", "12h30"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

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
