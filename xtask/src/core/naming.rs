//! Backup file names: `{database}_{type}_{timestamp}{extension}`, and back;
//! the extension says what the file holds (`.sql.gz`, `.sql.zst`, `.sql`,
//! `.dump`: see [`Layout`]).
//!
//! The timestamp is UTC, `YYYYMMDDTHHMMSSZ`, so names sort by time. A second
//! backup of the same database and type in the same second gets a sequence
//! suffix (`...Z-2`); parsing reads from the right, so a database name may
//! itself contain underscores. Characters that cannot stand in a file name
//! (`/`, `%`, control characters, a leading dot) are percent-encoded.

use std::fmt;
use std::str::FromStr;

use crate::core::format::Layout;
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use time::{
    Date, OffsetDateTime, PrimitiveDateTime, UtcOffset, format_description::BorrowedFormatItem,
    macros::format_description,
};

pub(crate) const SHA256_SUFFIX: &str = ".sha256";
/// The extension of a file encrypted with age, after the layout's.
pub(crate) const AGE_SUFFIX: &str = ".age";
pub(crate) const META_SUFFIX: &str = ".meta";

const STAMP: &[BorrowedFormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");

/// A retention tier.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum BackupType {
    Daily,
    Weekly,
    Monthly,
}

impl BackupType {
    pub(crate) const ALL: [BackupType; 3] =
        [BackupType::Daily, BackupType::Weekly, BackupType::Monthly];

    pub fn as_str(self) -> &'static str {
        match self {
            BackupType::Daily => "daily",
            BackupType::Weekly => "weekly",
            BackupType::Monthly => "monthly",
        }
    }
}

impl fmt::Display for BackupType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for BackupType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BackupType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown backup type '{s}': use daily, weekly or monthly"))
    }
}

/// What `--type` asks for: a tier, or `auto` ([`auto_type`] picks it by date).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TypeChoice {
    Auto,
    Tier(BackupType),
}

impl FromStr for TypeChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(TypeChoice::Auto),
            s => s.parse().map(TypeChoice::Tier),
        }
    }
}

/// The identity of one backup, as its file name spells it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackupName {
    pub database: String,
    pub kind: BackupType,
    /// UTC, whole seconds.
    pub timestamp: OffsetDateTime,
    /// 1 for the first backup of that database, type and second; 2, 3, ... after.
    pub(crate) seq: u32,
    /// What the file holds; a new name is a gzip-compressed plain dump.
    pub(crate) layout: Layout,
    /// Encrypted with age after compression: the name ends in `.age`.
    pub(crate) encrypted: bool,
}

impl BackupName {
    pub fn new(database: &str, kind: BackupType, timestamp: OffsetDateTime) -> BackupName {
        let timestamp = timestamp
            .to_offset(UtcOffset::UTC)
            .replace_nanosecond(0)
            .expect("0 is a valid nanosecond");
        BackupName {
            database: database.to_string(),
            kind,
            timestamp,
            seq: 1,
            layout: Layout::Plain(crate::core::format::Codec::Gzip),
            encrypted: false,
        }
    }

    pub(crate) fn with_encryption(mut self, encrypted: bool) -> BackupName {
        self.encrypted = encrypted;
        self
    }

    pub(crate) fn with_layout(mut self, layout: Layout) -> BackupName {
        self.layout = layout;
        self
    }

    /// Whether `other` takes the same place in time (whatever the layout):
    /// two such backups cannot both exist.
    pub(crate) fn same_slot(&self, other: &BackupName) -> bool {
        (&self.database, self.kind, self.timestamp, self.seq)
            == (&other.database, other.kind, other.timestamp, other.seq)
    }

    pub fn with_seq(mut self, seq: u32) -> BackupName {
        self.seq = seq;
        self
    }

    pub(crate) fn stamp(&self) -> String {
        let mut s = self
            .timestamp
            .format(STAMP)
            .expect("a UTC timestamp always formats");
        if self.seq > 1 {
            s.push_str(&format!("-{}", self.seq));
        }
        s
    }

    /// The dump's file name, e.g. `app_daily_20261124T020000Z.sql.gz`.
    pub fn file_name(&self) -> String {
        format!(
            "{}_{}_{}{}{}",
            encode_component(&self.database),
            self.kind,
            self.stamp(),
            self.layout.extension(),
            if self.encrypted { AGE_SUFFIX } else { "" }
        )
    }

    pub fn sha256_name(&self) -> String {
        format!("{}{SHA256_SUFFIX}", self.file_name())
    }

    pub fn meta_name(&self) -> String {
        format!("{}{META_SUFFIX}", self.file_name())
    }

    /// Parses a dump's file name back; `None` for anything the tool did not name.
    pub(crate) fn parse(file_name: &str) -> Option<BackupName> {
        let (file_name, encrypted) = match file_name.strip_suffix(AGE_SUFFIX) {
            Some(inner) => (inner, true),
            None => (file_name, false),
        };
        let (stem, layout) = Layout::split(file_name)?;
        let (rest, stamp) = stem.rsplit_once('_')?;
        let (database, kind) = rest.rsplit_once('_')?;
        let kind = kind.parse().ok()?;
        let (stamp, seq) = match stamp.split_once('-') {
            Some((s, n)) => {
                let seq: u32 = n.parse().ok().filter(|n| *n >= 2)?;
                if n != seq.to_string() {
                    return None;
                }
                (s, seq)
            }
            None => (stamp, 1),
        };
        let timestamp = PrimitiveDateTime::parse(stamp, STAMP).ok()?.assume_utc();
        let database = decode_component(database)?;
        if database.is_empty() {
            return None;
        }
        Some(BackupName {
            database,
            kind,
            timestamp,
            seq,
            layout,
            encrypted,
        })
    }
}

impl PartialOrd for BackupName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Oldest first; ties broken by sequence, then database and type, so the order is total.
impl Ord for BackupName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (
            self.timestamp,
            self.seq,
            &self.database,
            self.kind,
            self.layout,
            self.encrypted,
        )
            .cmp(&(
                other.timestamp,
                other.seq,
                &other.database,
                other.kind,
                other.layout,
                other.encrypted,
            ))
    }
}

/// What cannot stand in a file name: `/`, `\\`, `%` itself, control characters.
const FILE_NAME_UNSAFE: &AsciiSet = &CONTROLS.add(b'/').add(b'\\').add(b'%');

/// Percent-encodes the bytes of a database name that cannot stand in a file
/// name (and a leading dot, which would hide the file).
pub(crate) fn encode_component(name: &str) -> String {
    let encoded = utf8_percent_encode(name, FILE_NAME_UNSAFE).to_string();
    match encoded.strip_prefix('.') {
        Some(rest) => format!("%2E{rest}"),
        None => encoded,
    }
}

/// The name back; `None` unless encoding it again gives the same text (the
/// tool's own spelling, so a foreign name never passes for one).
fn decode_component(s: &str) -> Option<String> {
    let name = percent_decode_str(s).decode_utf8().ok()?.into_owned();
    (encode_component(&name) == s).then_some(name)
}

/// `--type=auto`: monthly for the first backup of a calendar month (UTC),
/// weekly for the first of an ISO week, daily otherwise. `existing` holds the
/// timestamps of this database's complete backups, of any type.
pub(crate) fn auto_type(now: OffsetDateTime, existing: &[OffsetDateTime]) -> BackupType {
    let now = now.to_offset(UtcOffset::UTC);
    let same_month = |t: &OffsetDateTime| {
        let t = t.to_offset(UtcOffset::UTC);
        (t.year(), t.month()) == (now.year(), now.month()) && t <= now
    };
    let same_week = |t: &OffsetDateTime| {
        let t = t.to_offset(UtcOffset::UTC);
        iso_week(t.date()) == iso_week(now.date()) && t <= now
    };
    if !existing.iter().any(same_month) {
        BackupType::Monthly
    } else if !existing.iter().any(same_week) {
        BackupType::Weekly
    } else {
        BackupType::Daily
    }
}

fn iso_week(d: Date) -> (i32, u8) {
    let (year, week, _) = d.to_iso_week_date();
    (year, week)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn names_round_trip() {
        let n = BackupName::new(
            "app",
            BackupType::Daily,
            datetime!(2026-11-24 02:00:00.123 UTC),
        );
        assert_eq!(n.file_name(), "app_daily_20261124T020000Z.sql.gz");
        assert_eq!(n.sha256_name(), "app_daily_20261124T020000Z.sql.gz.sha256");
        assert_eq!(BackupName::parse(&n.file_name()), Some(n.clone()));
        let n2 = n.with_seq(2);
        assert_eq!(n2.file_name(), "app_daily_20261124T020000Z-2.sql.gz");
        assert_eq!(BackupName::parse(&n2.file_name()), Some(n2));
    }

    #[test]
    fn underscores_and_odd_characters_in_database_names() {
        for db in [
            "my_app_db",
            "weekly_daily",
            "a/b",
            "%x",
            ".hidden",
            "çava_db",
            "tab\there",
            "x_monthly",
        ] {
            for kind in BackupType::ALL {
                let n = BackupName::new(db, kind, datetime!(2026-01-02 03:04:05 UTC)).with_seq(3);
                let file = n.file_name();
                assert!(!file.contains('/') && !file.starts_with('.'), "{file}");
                assert_eq!(BackupName::parse(&file), Some(n), "{file}");
            }
        }
    }

    #[test]
    fn foreign_names_do_not_parse() {
        for name in [
            "notes.txt",
            "app_daily_20261124T020000Z.sql.bz2",
            "app_daily_20261124T020000Z.tar",
            "app_hourly_20261124T020000Z.sql.gz",
            "app_daily_2026-11-24.sql.gz",
            "_daily_20261124T020000Z.sql.gz",
            "app_daily_20261124T020000Z-1.sql.gz",
            "app_daily_20261124T020000Z-02.sql.gz",
            "app_daily_20261324T020000Z.sql.gz",
            "daily_20261124T020000Z.sql.gz",
        ] {
            assert_eq!(BackupName::parse(name), None, "{name}");
        }
    }

    #[test]
    fn each_layout_has_its_extension_and_one_place_in_time() {
        use crate::core::format::{Codec, Layout};
        let n = BackupName::new("app", BackupType::Daily, datetime!(2026-11-24 02:00:00 UTC));
        let names: Vec<String> = Layout::ALL
            .into_iter()
            .map(|l| n.clone().with_layout(l).file_name())
            .collect();
        assert_eq!(
            names,
            [
                "app_daily_20261124T020000Z.sql.gz",
                "app_daily_20261124T020000Z.sql.zst",
                "app_daily_20261124T020000Z.sql",
                "app_daily_20261124T020000Z.dump",
                "app_daily_20261124T020000Z.dir",
            ]
        );
        for (name, layout) in names.iter().zip(Layout::ALL) {
            let back = BackupName::parse(name).unwrap();
            assert_eq!(back.layout, layout);
            assert!(back.same_slot(&n));
        }
        assert!(!n.same_slot(&n.clone().with_seq(2)));
        let sealed = n.clone().with_encryption(true);
        assert_eq!(sealed.file_name(), "app_daily_20261124T020000Z.sql.gz.age");
        assert_eq!(BackupName::parse(&sealed.file_name()), Some(sealed.clone()));
        assert!(sealed.same_slot(&n));
        assert_eq!(BackupName::parse("app_daily_20261124T020000Z.age"), None);
        assert_eq!(n.layout, Layout::Plain(Codec::Gzip));
    }

    #[test]
    fn order_is_by_time_then_sequence() {
        let t = datetime!(2026-11-24 02:00:00 UTC);
        let a = BackupName::new("app", BackupType::Weekly, t);
        let b = a.clone().with_seq(2);
        let c = BackupName::new("app", BackupType::Daily, t + time::Duration::seconds(1));
        let mut v = vec![c.clone(), b.clone(), a.clone()];
        v.sort();
        assert_eq!(v, vec![a, b, c]);
    }

    #[test]
    fn auto_type_follows_month_then_iso_week() {
        // 2026-11-30 is a Monday; 2026-12-01 a Tuesday in the same ISO week.
        let mon = datetime!(2026-11-30 01:00 UTC);
        assert_eq!(auto_type(mon, &[]), BackupType::Monthly);
        assert_eq!(
            auto_type(mon, &[datetime!(2026-11-01 01:00 UTC)]),
            BackupType::Weekly
        );
        assert_eq!(
            auto_type(mon, &[datetime!(2026-11-29 23:00 UTC)]),
            BackupType::Weekly,
            "Sunday is last week"
        );
        assert_eq!(
            auto_type(
                mon,
                &[
                    datetime!(2026-11-01 01:00 UTC),
                    datetime!(2026-11-30 00:30 UTC)
                ]
            ),
            BackupType::Daily
        );
        let tue = datetime!(2026-12-01 01:00 UTC);
        assert_eq!(
            auto_type(tue, &[mon]),
            BackupType::Monthly,
            "a new month wins over the same week"
        );
        // ISO week 1 of 2027 starts on 2027-01-04; 2026-12-31 and 2027-01-01 share week 53 of 2026.
        assert_eq!(
            auto_type(
                datetime!(2027-01-01 05:00 UTC),
                &[
                    datetime!(2026-12-31 05:00 UTC),
                    datetime!(2027-01-01 01:00 UTC)
                ]
            ),
            BackupType::Daily
        );
        // A future-dated backup (clock skew) does not count as this month's.
        assert_eq!(
            auto_type(mon, &[datetime!(2026-11-30 09:00 UTC)]),
            BackupType::Monthly
        );
    }
}
