//! What a backup is: a plain SQL dump under a codec (gzip, zstd or
//! none), a pg_dump custom archive, or pg_dump's directory of files. The
//! pair decides the name's extension, the `.meta` record, and how the
//! backup is read back.

use std::fmt;
use std::str::FromStr;

/// How a plain dump's bytes are compressed in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Codec {
    Gzip,
    Zstd,
    None,
}

impl Codec {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
            Codec::None => "none",
        }
    }

    /// The level used when none is given: gzip's own default, and zstd's
    /// fastest rather than its CLI's 3. On dumps (COPY rows of numbers,
    /// dates, hashes) level 1 came out as small as 3 or smaller, at a half
    /// to a third of its CPU: the bench dataset 143.1 MiB against 143.7, a
    /// shop of 2 million orders 60.0 MB against 65.5, pagila 824 kB against
    /// 841; only a table of repeated blanks came out larger (2.1 MB against
    /// 1.6 of 185 MiB). docs/benchmarks.md, eighth run. On two cores the
    /// CPU is what a zstd backup waits for. pg_dump 16+ gets the same level
    /// for a custom or directory archive.
    fn default_level(self) -> u32 {
        match self {
            Codec::Gzip => 6,
            Codec::Zstd => 1,
            Codec::None => 0,
        }
    }

    fn levels(self) -> std::ops::RangeInclusive<u32> {
        match self {
            Codec::Gzip => 1..=9,
            Codec::Zstd => 1..=19,
            Codec::None => 0..=0,
        }
    }
}

/// A codec and its level: `gzip:6`, `zstd:1`, `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Compression {
    pub(crate) codec: Codec,
    pub(crate) level: u32,
}

impl Compression {
    /// Parses `gzip[:LEVEL] | zstd[:LEVEL] | none`; `fallback_level` is the
    /// level when the spec names none (BACKUP_COMPRESSION_LEVEL), for gzip only.
    pub(crate) fn parse(spec: &str, fallback_level: Option<u32>) -> Result<Compression, String> {
        let (name, level) = match spec.trim().split_once(':') {
            Some((n, l)) => (n, Some(l)),
            None => (spec.trim(), None),
        };
        let codec = match name.to_ascii_lowercase().as_str() {
            "gzip" | "gz" => Codec::Gzip,
            "zstd" | "zst" => Codec::Zstd,
            "none" => Codec::None,
            _ => {
                return Err(format!(
                    "unknown compression '{spec}': use gzip[:1-9], zstd[:1-19] or none"
                ));
            }
        };
        let level = match level {
            Some(l) => l.parse::<u32>().map_err(|_| {
                format!("compression level '{l}' is not a number: use e.g. {codec}:6")
            })?,
            None if codec == Codec::Gzip => fallback_level.unwrap_or(codec.default_level()),
            None => codec.default_level(),
        };
        if !codec.levels().contains(&level) {
            let levels = codec.levels();
            let (lo, hi) = (levels.start(), levels.end());
            return Err(match codec {
                Codec::None => format!("'{spec}': none takes no level"),
                _ => format!("{codec} level {level} is out of range: use {lo} to {hi}"),
            });
        }
        Ok(Compression { codec, level })
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.codec {
            Codec::None => f.write_str("none"),
            c => write!(f, "{c}:{}", self.level),
        }
    }
}

/// What pg_dump writes: a SQL script, its custom archive (`pg_dump -Fc`),
/// or its directory of files (`pg_dump -Fd`, the one it writes with `--jobs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Format {
    Plain,
    Custom,
    Directory,
}

impl Format {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Format::Plain => "plain",
            Format::Custom => "custom",
            Format::Directory => "directory",
        }
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "plain" | "p" => Ok(Format::Plain),
            "custom" | "c" => Ok(Format::Custom),
            "directory" | "d" => Ok(Format::Directory),
            _ => Err(format!(
                "unknown format '{s}': use plain, custom or directory"
            )),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// What a backup file holds, as its extension says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Layout {
    /// A SQL script under a codec: `.sql.gz`, `.sql.zst`, `.sql`.
    Plain(Codec),
    /// pg_dump's custom archive, compressed inside by pg_dump: `.dump`.
    Custom,
    /// pg_dump's directory of files (`toc.dat` and one file per table's
    /// data, compressed by pg_dump): `.dir`, a directory and not a file.
    Directory,
}

impl Layout {
    pub(crate) const ALL: [Layout; 5] = [
        Layout::Plain(Codec::Gzip),
        Layout::Plain(Codec::Zstd),
        Layout::Plain(Codec::None),
        Layout::Custom,
        Layout::Directory,
    ];

    pub(crate) fn of(format: Format, compression: Compression) -> Layout {
        match format {
            Format::Plain => Layout::Plain(compression.codec),
            Format::Custom => Layout::Custom,
            Format::Directory => Layout::Directory,
        }
    }

    pub(crate) fn extension(self) -> &'static str {
        match self {
            Layout::Plain(Codec::Gzip) => ".sql.gz",
            Layout::Plain(Codec::Zstd) => ".sql.zst",
            Layout::Plain(Codec::None) => ".sql",
            Layout::Custom => ".dump",
            Layout::Directory => ".dir",
        }
    }

    /// The layout a file name's extension names, and the name without it.
    pub(crate) fn split(file_name: &str) -> Option<(&str, Layout)> {
        Layout::ALL
            .into_iter()
            .find_map(|l| file_name.strip_suffix(l.extension()).map(|s| (s, l)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_specs() {
        let p = |s| Compression::parse(s, None);
        assert_eq!(
            p("gzip"),
            Ok(Compression {
                codec: Codec::Gzip,
                level: 6
            })
        );
        assert_eq!(Compression::parse("gzip", Some(9)).unwrap().level, 9);
        assert_eq!(Compression::parse("zstd", Some(9)).unwrap().level, 1);
        assert_eq!(
            p("zstd:19"),
            Ok(Compression {
                codec: Codec::Zstd,
                level: 19
            })
        );
        assert_eq!(p("none").unwrap().to_string(), "none");
        assert_eq!(p("gzip:1").unwrap().to_string(), "gzip:1");
        for bad in [
            "gzip:0", "gzip:10", "zstd:20", "none:3", "lz4", "gzip:x", "",
        ] {
            let err = p(bad).unwrap_err();
            assert!(!err.contains('\n'), "{err}");
        }
        insta::assert_snapshot!(p("zstd:22").unwrap_err(), @"zstd level 22 is out of range: use 1 to 19");
        insta::assert_snapshot!(p("brotli").unwrap_err(), @"unknown compression 'brotli': use gzip[:1-9], zstd[:1-19] or none");
    }

    #[test]
    fn layouts_and_extensions() {
        for l in Layout::ALL {
            assert_eq!(
                Layout::split(&format!("a{}", l.extension())),
                Some(("a", l))
            );
        }
        assert_eq!(Layout::split("a.sql.gz.sha256"), None);
        assert_eq!(Layout::split("a.tar"), None);
        assert_eq!("directory".parse::<Format>(), Ok(Format::Directory));
        assert!("tar".parse::<Format>().unwrap_err().contains("directory"));
    }
}
