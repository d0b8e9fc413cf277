//! Which backups to keep and which to delete: a pure function of (backups,
//! policy, now), with the reason for every verdict. The deleting happens
//! elsewhere (`tasks/prune.rs`); remote storage will use the same decision.
//!
//! Rules, in order:
//! - a set the tool does not recognise as complete is kept, unless it is an
//!   incomplete leftover older than a day (a crashed run's files);
//! - a backup dated in the future (clock skew) is kept, and never counts as
//!   "newest" for the rails below;
//! - the newest complete, non-failed backup of each (database, type) is kept;
//! - the newest `min_keep` complete, non-failed backups of each database are kept;
//! - otherwise a backup older than its tier's retention is deleted, measured
//!   from `finished_at` (the `.meta`), else the name's timestamp.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;
use time::{Duration, OffsetDateTime};

use crate::core::naming::{BackupName, BackupType};

/// Retention per tier, and the floor per database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    pub(crate) daily_days: u32,
    pub(crate) weekly_weeks: u32,
    pub(crate) monthly_months: u32,
    pub(crate) min_keep: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            daily_days: 7,
            weekly_weeks: 4,
            monthly_months: 12,
            min_keep: 1,
        }
    }
}

impl Policy {
    /// The oldest `finished_at` a backup of `kind` may have and still be kept.
    pub(crate) fn cutoff(&self, kind: BackupType, now: OffsetDateTime) -> OffsetDateTime {
        match kind {
            BackupType::Daily => now - Duration::days(i64::from(self.daily_days)),
            BackupType::Weekly => now - Duration::weeks(i64::from(self.weekly_weeks)),
            BackupType::Monthly => months_before(now, self.monthly_months),
        }
    }

    pub(crate) fn describe(&self, kind: BackupType) -> String {
        match kind {
            BackupType::Daily => plural(self.daily_days, "day"),
            BackupType::Weekly => plural(self.weekly_weeks, "week"),
            BackupType::Monthly => plural(self.monthly_months, "month"),
        }
    }
}

fn plural(n: u32, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// The same day of the month `months` calendar months earlier, clamped to
/// the month's last day (March 31 minus one month is February 28 or 29).
pub fn months_before(t: OffsetDateTime, months: u32) -> OffsetDateTime {
    let total = t.year() * 12 + (t.month() as i32 - 1) - months as i32;
    let (year, month0) = (total.div_euclid(12), total.rem_euclid(12));
    let month = time::Month::try_from(month0 as u8 + 1).expect("0..12 + 1 is a month");
    let day = t.day().min(month.length(year));
    let date = time::Date::from_calendar_date(year, month, day).expect("a clamped day is valid");
    t.replace_date(date)
}

/// One backup as the decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub(crate) name: BackupName,
    /// From `.meta`, else the name's timestamp.
    pub(crate) finished_at: OffsetDateTime,
    /// Dump, `.sha256` and `.meta` are all there (and `.meta` reads).
    pub(crate) complete: bool,
    /// The dump itself is there. Sidecars without a dump are what a run that
    /// died between reserving a name and publishing leaves behind.
    pub(crate) has_dump: bool,
    /// Its verification failed (recorded in `.meta`).
    pub(crate) failed: bool,
    /// What restore would take: complete, sidecars that agree with each
    /// other and the file, not failed. Only these count for the rails.
    pub(crate) usable: bool,
    /// The server it came from (`.meta`): backups of different servers in
    /// one store are never each other's rails.
    pub(crate) source: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub(crate) enum Reason {
    /// Younger than its tier's retention.
    WithinRetention { kind: BackupType, limit: String },
    /// The newest complete, non-failed backup of its database and type.
    NewestOfType { kind: BackupType },
    /// Among the newest `min` backups of its database.
    MinimumCount { min: u32 },
    /// Dated after `now`: kept, and not counted as newest.
    FutureDated,
    /// Not a complete set, but young: perhaps a backup in progress.
    RecentIncomplete,
    /// Older than its tier's retention.
    Expired { kind: BackupType, limit: String },
    /// Not a complete set, and older than a day: a crashed run's leftover.
    StaleIncomplete,
    /// A dump whose `.sha256` or `.meta` is missing or unreadable: not ours to judge.
    Unrecognised,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::WithinRetention { kind, limit } => {
                write!(f, "within the {kind} retention of {limit}")
            }
            Reason::NewestOfType { kind } => write!(f, "newest good {kind} backup of its database"),
            Reason::MinimumCount { min } => {
                write!(f, "among the newest {min} good backups of its database")
            }
            Reason::FutureDated => write!(f, "dated in the future (clock skew?): kept"),
            Reason::RecentIncomplete => write!(f, "incomplete set younger than a day: kept"),
            Reason::Expired { kind, limit } => {
                write!(f, "older than the {kind} retention of {limit}")
            }
            Reason::StaleIncomplete => {
                write!(f, "leftover of an interrupted run, older than a day")
            }
            Reason::Unrecognised => {
                write!(f, "dump without a readable .sha256 or .meta: left alone")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) name: BackupName,
    pub(crate) delete: bool,
    pub(crate) reason: Reason,
    pub(crate) age: Duration,
}

/// Decides every candidate. The result is in the candidates' order.
pub(crate) fn decide(
    candidates: &[Candidate],
    policy: &Policy,
    now: OffsetDateTime,
) -> Vec<Decision> {
    let good = |c: &Candidate| c.usable && !c.failed && c.finished_at <= now;

    // Rail 1: the newest good backup of each (database, type).
    let mut newest_of_type: BTreeMap<(Option<&str>, &str, BackupType), &Candidate> =
        BTreeMap::new();
    for c in candidates.iter().filter(|c| good(c)) {
        let slot = newest_of_type
            .entry((c.source.as_deref(), c.name.database.as_str(), c.name.kind))
            .or_insert(c);
        if (c.finished_at, &c.name) > (slot.finished_at, &slot.name) {
            *slot = c;
        }
    }
    let newest: BTreeSet<&BackupName> = newest_of_type.values().map(|c| &c.name).collect();

    // Rail 2: the newest `min_keep` good backups of each database.
    let mut by_db: BTreeMap<(Option<&str>, &str), Vec<&Candidate>> = BTreeMap::new();
    for c in candidates.iter().filter(|c| good(c)) {
        by_db
            .entry((c.source.as_deref(), c.name.database.as_str()))
            .or_default()
            .push(c);
    }
    let mut floor: BTreeSet<&BackupName> = BTreeSet::new();
    for list in by_db.values_mut() {
        list.sort_by(|a, b| (b.finished_at, &b.name).cmp(&(a.finished_at, &a.name)));
        floor.extend(list.iter().take(policy.min_keep as usize).map(|c| &c.name));
    }

    candidates
        .iter()
        .map(|c| {
            let age = now - c.finished_at;
            let kind = c.name.kind;
            let limit = policy.describe(kind);
            let (delete, reason) = if !c.complete && c.has_dump {
                (false, Reason::Unrecognised)
            } else if !c.complete {
                if age > Duration::days(1) {
                    (true, Reason::StaleIncomplete)
                } else {
                    (false, Reason::RecentIncomplete)
                }
            } else if c.finished_at > now {
                (false, Reason::FutureDated)
            } else if newest.contains(&c.name) {
                (false, Reason::NewestOfType { kind })
            } else if floor.contains(&c.name) {
                (
                    false,
                    Reason::MinimumCount {
                        min: policy.min_keep,
                    },
                )
            } else if c.finished_at < policy.cutoff(kind, now) {
                (true, Reason::Expired { kind, limit })
            } else {
                (false, Reason::WithinRetention { kind, limit })
            };
            Decision {
                name: c.name.clone(),
                delete,
                reason,
                age,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-24 12:00 UTC);

    fn cand(db: &str, kind: BackupType, days_ago: i64) -> Candidate {
        let at = NOW - Duration::days(days_ago);
        Candidate {
            name: BackupName::new(db, kind, at),
            finished_at: at,
            complete: true,
            has_dump: true,
            failed: false,
            usable: true,
            source: None,
        }
    }

    fn verdicts(cs: &[Candidate], policy: &Policy) -> Vec<(bool, Reason)> {
        decide(cs, policy, NOW)
            .into_iter()
            .map(|d| (d.delete, d.reason))
            .collect()
    }

    #[test]
    fn months_are_calendar_months() {
        assert_eq!(
            months_before(datetime!(2026-03-31 10:00 UTC), 1),
            datetime!(2026-02-28 10:00 UTC)
        );
        assert_eq!(
            months_before(datetime!(2028-03-31 10:00 UTC), 1),
            datetime!(2028-02-29 10:00 UTC)
        );
        assert_eq!(
            months_before(datetime!(2026-01-15 00:00 UTC), 12),
            datetime!(2025-01-15 00:00 UTC)
        );
        assert_eq!(
            months_before(datetime!(2026-01-15 00:00 UTC), 13),
            datetime!(2024-12-15 00:00 UTC)
        );
    }

    #[test]
    fn expired_backups_go_and_the_rails_hold() {
        let p = Policy::default();
        let cs = [
            cand("app", BackupType::Daily, 1),
            cand("app", BackupType::Daily, 6),
            cand("app", BackupType::Daily, 8),
            cand("app", BackupType::Weekly, 20),
            cand("app", BackupType::Weekly, 40),
            cand("app", BackupType::Monthly, 400),
            cand("old", BackupType::Daily, 30),
        ];
        let v = verdicts(&cs, &p);
        assert_eq!(
            v[0],
            (
                false,
                Reason::NewestOfType {
                    kind: BackupType::Daily
                }
            )
        );
        assert_eq!(
            v[1],
            (
                false,
                Reason::WithinRetention {
                    kind: BackupType::Daily,
                    limit: "7 days".into()
                }
            )
        );
        assert_eq!(
            v[2],
            (
                true,
                Reason::Expired {
                    kind: BackupType::Daily,
                    limit: "7 days".into()
                }
            )
        );
        assert_eq!(
            v[3],
            (
                false,
                Reason::NewestOfType {
                    kind: BackupType::Weekly
                }
            )
        );
        assert_eq!(
            v[4],
            (
                true,
                Reason::Expired {
                    kind: BackupType::Weekly,
                    limit: "4 weeks".into()
                }
            )
        );
        assert_eq!(
            v[5],
            (
                false,
                Reason::NewestOfType {
                    kind: BackupType::Monthly
                }
            ),
            "the only monthly stays"
        );
        assert_eq!(
            v[6],
            (
                false,
                Reason::NewestOfType {
                    kind: BackupType::Daily
                }
            ),
            "another database's only backup"
        );
    }

    #[test]
    fn only_usable_backups_are_rails_and_sources_are_apart() {
        let p = Policy {
            daily_days: 1,
            ..Policy::default()
        };
        // The newest set was altered (its sidecars disagree): the older good one stays the rail.
        let mut altered = cand("app", BackupType::Daily, 2);
        altered.usable = false;
        let good = cand("app", BackupType::Daily, 5);
        let v = verdicts(&[altered, good], &p);
        assert!(v[0].0, "an expired unusable set is no rail: {:?}", v[0]);
        assert_eq!(
            v[1],
            (
                false,
                Reason::NewestOfType {
                    kind: BackupType::Daily
                }
            )
        );
        // Two servers sharing a store: each keeps its own newest.
        let mut a = cand("app", BackupType::Daily, 3);
        a.source = Some("1".into());
        let mut b = cand("app", BackupType::Daily, 4);
        b.source = Some("2".into());
        assert!(verdicts(&[a, b], &p).iter().all(|(delete, _)| !delete));
    }

    #[test]
    fn failed_future_and_incomplete_sets() {
        let p = Policy {
            min_keep: 2,
            ..Policy::default()
        };
        let mut failed = cand("app", BackupType::Daily, 1);
        failed.failed = true;
        let mut future = cand("app", BackupType::Daily, -3);
        future.name = BackupName::new("app", BackupType::Daily, NOW + Duration::days(3));
        let mut stale = cand("app", BackupType::Daily, 2);
        (stale.complete, stale.has_dump, stale.usable) = (false, false, false);
        let mut fresh = cand("app", BackupType::Daily, 0);
        (fresh.complete, fresh.has_dump, fresh.usable) = (false, false, false);
        let mut foreign = cand("app", BackupType::Daily, 90);
        (foreign.complete, foreign.usable) = (false, false);
        let cs = [
            failed,
            future,
            cand("app", BackupType::Daily, 10),
            cand("app", BackupType::Daily, 20),
            cand("app", BackupType::Daily, 30),
            stale,
            fresh,
            foreign,
        ];
        let v = verdicts(&cs, &p);
        assert_eq!(
            v[0],
            (
                false,
                Reason::WithinRetention {
                    kind: BackupType::Daily,
                    limit: "7 days".into()
                }
            ),
            "failed: not a rail"
        );
        assert_eq!(v[1], (false, Reason::FutureDated));
        assert_eq!(
            v[2],
            (
                false,
                Reason::NewestOfType {
                    kind: BackupType::Daily
                }
            ),
            "the newest good one, not the failed or future one"
        );
        assert_eq!(v[3], (false, Reason::MinimumCount { min: 2 }));
        assert!(v[4].0, "the oldest one beyond the floor expires");
        assert_eq!(v[5], (true, Reason::StaleIncomplete));
        assert_eq!(v[6], (false, Reason::RecentIncomplete));
        assert_eq!(
            v[7],
            (false, Reason::Unrecognised),
            "a dump the tool cannot vouch for is never deleted"
        );
    }

    fn arb_candidate() -> impl Strategy<Value = Candidate> {
        (
            prop::sample::select(vec!["app", "shop", "my_db"]),
            prop::sample::select(BackupType::ALL.to_vec()),
            -5i64 * 24..500 * 24,
            0u32..3,
            0u8..10,
            any::<bool>(),
        )
            .prop_map(|(db, kind, hours_ago, seq, shape, failed)| {
                let at = NOW - Duration::hours(hours_ago);
                Candidate {
                    name: BackupName::new(db, kind, at).with_seq(seq + 1),
                    finished_at: at,
                    complete: shape >= 2,
                    has_dump: shape != 0,
                    failed: failed && hours_ago % 5 == 0,
                    // A complete set whose sidecars disagree (shape 9) is not usable.
                    usable: shape >= 2 && shape != 9,
                    source: None,
                }
            })
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        (1u32..15, 1u32..8, 1u32..18, 1u32..4).prop_map(|(d, w, m, k)| Policy {
            daily_days: d,
            weekly_weeks: w,
            monthly_months: m,
            min_keep: k,
        })
    }

    fn dedup(mut cs: Vec<Candidate>) -> Vec<Candidate> {
        let mut seen = BTreeSet::new();
        cs.retain(|c| seen.insert(c.name.clone()));
        cs
    }

    proptest! {
        #[test]
        fn never_deletes_the_newest_good_backup_of_a_type(cs in prop::collection::vec(arb_candidate(), 0..40), p in arb_policy()) {
            let cs = dedup(cs);
            let ds = decide(&cs, &p, NOW);
            let mut groups: BTreeMap<(String, BackupType), &Candidate> = BTreeMap::new();
            for c in cs.iter().filter(|c| c.usable && !c.failed && c.finished_at <= NOW) {
                let e = groups.entry((c.name.database.clone(), c.name.kind)).or_insert(c);
                if (c.finished_at, &c.name) > (e.finished_at, &e.name) { *e = c; }
            }
            for newest in groups.values() {
                let d = ds.iter().find(|d| d.name == newest.name).unwrap();
                prop_assert!(!d.delete, "deleted the newest {:?}", d);
            }
        }

        #[test]
        fn never_deletes_a_complete_backup_younger_than_its_retention(cs in prop::collection::vec(arb_candidate(), 0..40), p in arb_policy()) {
            let cs = dedup(cs);
            for (c, d) in cs.iter().zip(decide(&cs, &p, NOW)) {
                if c.has_dump && !c.complete {
                    prop_assert!(!d.delete, "deleted a dump it cannot vouch for: {:?}", c);
                }
                if c.complete && c.finished_at >= p.cutoff(c.name.kind, NOW) {
                    prop_assert!(!d.delete, "{:?} {:?}", c, d);
                }
                if c.finished_at > NOW {
                    prop_assert!(!d.delete, "future-dated deleted: {:?}", c);
                }
            }
        }

        #[test]
        fn keeps_the_floor_and_is_idempotent(cs in prop::collection::vec(arb_candidate(), 0..40), p in arb_policy()) {
            let cs = dedup(cs);
            let ds = decide(&cs, &p, NOW);
            let kept: Vec<Candidate> = cs.iter().zip(&ds).filter(|(_, d)| !d.delete).map(|(c, _)| c.clone()).collect();
            // Each database keeps min(min_keep, its good backups) good backups.
            let mut good_before: BTreeMap<&str, usize> = BTreeMap::new();
            for c in cs.iter().filter(|c| c.usable && !c.failed && c.finished_at <= NOW) {
                *good_before.entry(&c.name.database).or_default() += 1;
            }
            for (db, n) in good_before {
                let after = kept.iter().filter(|c| c.name.database == db && c.usable && !c.failed && c.finished_at <= NOW).count();
                prop_assert!(after >= n.min(p.min_keep as usize), "{db}: {after} < min({n}, {})", p.min_keep);
            }
            // A second run over what is left deletes nothing.
            prop_assert!(decide(&kept, &p, NOW).iter().all(|d| !d.delete));
        }
    }
}
