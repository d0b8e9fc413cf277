//! The `.sha256` of a directory backup: one `sha256sum` line per file in
//! the directory, each named from the backup directory
//! (`<hex>  app_daily_20261124T020000Z.dir/toc.dat`), so `sha256sum -c`
//! run there checks every file. Its own SHA-256 is what `.meta` records,
//! so a manifest and a `.meta` that disagree are found as for one file.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::core::meta::sha256_line;

/// The files of one directory backup and their SHA-256, by file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Manifest {
    /// The directory's name: `app_daily_20261124T020000Z.dir`.
    pub(crate) dir: String,
    pub(crate) files: BTreeMap<String, String>,
}

/// Whether `name` can be a file pg_dump wrote into a directory backup
/// (`toc.dat`, `3456.dat.gz`, `blob_16385.dat.zst`, `blobs.toc`): a plain
/// name, never a path, so a manifest can never point outside its directory.
pub(crate) fn is_member_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Manifest {
    /// The manifest's text, in file name order.
    pub(crate) fn render(&self) -> String {
        self.files
            .iter()
            .map(|(file, hex)| sha256_line(hex, &format!("{}/{file}", self.dir)))
            .collect()
    }

    /// What `.meta` records for the backup: the SHA-256 of the manifest's text.
    pub(crate) fn digest_of(text: &str) -> String {
        format!("{:x}", Sha256::digest(text.as_bytes()))
    }

    /// Reads a manifest back, with its digest (what `.meta` records).
    pub(crate) fn read(text: &str, dir: &str) -> Result<(Manifest, String), String> {
        Ok((Manifest::parse(text, dir)?, Manifest::digest_of(text)))
    }

    /// Reads a manifest back; every line must name a file of `dir`, once.
    pub(crate) fn parse(text: &str, dir: &str) -> Result<Manifest, String> {
        let mut files = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let at = || format!("line {} of {dir}.sha256", i + 1);
            let (hex, named) = crate::core::meta::parse_sha256_line(line)
                .ok_or_else(|| format!("{} is not a sha256sum line", at()))?;
            let file = named
                .strip_prefix(dir)
                .and_then(|f| f.strip_prefix('/'))
                .filter(|f| is_member_name(f))
                .ok_or_else(|| format!("{} names '{named}', which is not a file of {dir}", at()))?;
            if files.insert(file.to_string(), hex).is_some() {
                return Err(format!("{} names {named} a second time", at()));
            }
        }
        if !files.contains_key("toc.dat") {
            return Err(format!(
                "{dir}.sha256 does not list toc.dat: it is not the manifest of a directory backup"
            ));
        }
        Ok(Manifest {
            dir: dir.to_string(),
            files,
        })
    }

    /// How the files found (name, SHA-256) differ from the manifest: one
    /// line naming the first difference, or `None` when they agree.
    pub(crate) fn disagreement(&self, found: &BTreeMap<String, String>) -> Option<String> {
        let dir = &self.dir;
        if let Some(missing) = self.files.keys().find(|f| !found.contains_key(*f)) {
            return Some(format!("{dir}/{missing} is missing: the manifest lists it"));
        }
        if let Some(extra) = found.keys().find(|f| !self.files.contains_key(*f)) {
            return Some(format!(
                "{dir}/{extra} is not in the manifest: the directory was changed"
            ));
        }
        self.files.iter().find_map(|(file, expected)| {
            let actual = &found[file];
            (!actual.eq_ignore_ascii_case(expected)).then(|| {
                format!(
                    "checksum mismatch: {dir}.sha256 says {expected} for {file}, it hashes to {actual}: the file is corrupt or was changed"
                )
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            dir: "app_daily_20261124T020000Z.dir".into(),
            files: [
                ("toc.dat".to_string(), "0a".repeat(32)),
                ("3456.dat.gz".to_string(), "1b".repeat(32)),
            ]
            .into(),
        }
    }

    #[test]
    fn renders_sha256sum_lines_and_reads_them_back() {
        let m = manifest();
        let text = m.render();
        insta::assert_snapshot!(text, @r"
        1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b  app_daily_20261124T020000Z.dir/3456.dat.gz
        0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a  app_daily_20261124T020000Z.dir/toc.dat
        ");
        assert_eq!(Manifest::parse(&text, &m.dir), Ok(m.clone()));
        assert_eq!(Manifest::digest_of(&text).len(), 64);
        assert_ne!(Manifest::digest_of(&text), Manifest::digest_of(""));
    }

    #[test]
    fn a_manifest_never_names_a_path_outside_its_directory() {
        let dir = "a_daily_20260101T000000Z.dir";
        let hex = "0a".repeat(32);
        for bad in [
            format!("{hex}  {dir}/../../etc/passwd\n"),
            format!("{hex}  {dir}/sub/toc.dat\n"),
            format!("{hex}  other.dir/toc.dat\n"),
            format!("{hex}  {dir}/.hidden\n"),
            format!("{hex}  {dir}/\n"),
            format!("{hex}  {dir}/toc.dat\n{hex}  {dir}/toc.dat\n"),
            format!("{hex}  {dir}/1.dat.gz\n"),
            "not a line\n".to_string(),
        ] {
            let err = Manifest::parse(&bad, dir).unwrap_err();
            assert!(!err.contains('\n'), "{err}");
        }
        for good in [
            "toc.dat",
            "3456.dat.gz",
            "blob_16385.dat.zst",
            "blobs_12.toc",
        ] {
            assert!(is_member_name(good), "{good}");
        }
    }

    #[test]
    fn disagreements_name_the_file() {
        let m = manifest();
        let mut found = m.files.clone();
        assert_eq!(m.disagreement(&found), None);
        found.insert("3456.dat.gz".into(), "ff".repeat(32));
        assert!(
            m.disagreement(&found)
                .unwrap()
                .contains("checksum mismatch")
        );
        found.remove("3456.dat.gz");
        insta::assert_snapshot!(m.disagreement(&found).unwrap(), @"app_daily_20261124T020000Z.dir/3456.dat.gz is missing: the manifest lists it");
        let mut extra = m.files.clone();
        extra.insert("9999.dat.gz".into(), "00".repeat(32));
        assert!(
            m.disagreement(&extra)
                .unwrap()
                .contains("not in the manifest")
        );
    }
}
