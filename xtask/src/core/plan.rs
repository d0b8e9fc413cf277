//! Decisions taken before anything is touched, as pure functions: where a
//! backup goes, whether replacing a database may go ahead, which databases
//! are never a target.

use std::fmt;

/// Where a backup is written, and whether a copy follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// The backup directory only.
    Local,
    /// The backup directory, then uploaded to the bucket.
    LocalThenUpload,
    /// Streamed into the bucket; nothing local.
    RemoteOnly,
}

impl Placement {
    /// From whether a bucket is configured, `--remote-only`, BACKUP_LOCAL and `--no-upload`.
    pub(crate) fn decide(
        bucket: bool,
        remote_only: bool,
        local: bool,
        no_upload: bool,
    ) -> Result<Placement, String> {
        let remote_only = (remote_only || !local) && !no_upload;
        match (bucket, remote_only, no_upload) {
            (false, true, _) => Err(
                "--remote-only (or BACKUP_LOCAL=false) needs BACKUP_S3_BUCKET: set the bucket, or drop --remote-only"
                    .into(),
            ),
            (true, true, _) => Ok(Placement::RemoteOnly),
            (true, false, false) => Ok(Placement::LocalThenUpload),
            (_, false, _) => Ok(Placement::Local),
        }
    }

    /// The bucket is the store of record: `--type=auto`, health and retention look there.
    pub(crate) fn remote_primary(self) -> bool {
        self == Placement::RemoteOnly
    }
}

/// Whether replacing a database may go ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Consent {
    Proceed,
    /// Ask this on the terminal; only `y` goes ahead.
    Ask(String),
    Refuse(String),
}

/// What replacing asks about.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Replace<'a> {
    pub(crate) target: &'a str,
    pub(crate) server: &'a str,
    pub(crate) source: &'a str,
    /// The target exists (it would be replaced).
    pub(crate) exists: bool,
    /// The target was named with `--target-db` (an explicit side database).
    pub(crate) explicit_target: bool,
    pub(crate) yes: bool,
    /// The server is this machine's.
    pub(crate) local: bool,
    pub(crate) interactive: bool,
}

/// Replacing a database needs consent: a `y` on a terminal, or `--yes`; a
/// host other than this machine, or a database named with `--target-db`,
/// always needs `--yes`.
pub(crate) fn consent(r: Replace<'_>) -> Consent {
    let Replace {
        target,
        server,
        source,
        ..
    } = r;
    if !r.exists || r.yes {
        return Consent::Proceed;
    }
    if r.explicit_target {
        return Consent::Refuse(format!(
            "database '{target}' already exists at {server}: --target-db replaces only with --yes"
        ));
    }
    if !r.local {
        return Consent::Refuse(format!(
            "restoring would replace database '{target}' on {server}, which is not this machine: pass --yes to confirm"
        ));
    }
    if !r.interactive {
        return Consent::Refuse(format!(
            "restoring would replace database '{target}' at {server}: pass --yes to confirm (there is no terminal to ask)"
        ));
    }
    Consent::Ask(format!(
        "Replace database '{target}' at {server} with {source}? The current one is kept as a copy. [y/N] "
    ))
}

/// Why a database can never be replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Forbidden(pub(crate) String);

impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `postgres` (the maintenance database the tool works through),
/// `template0` and `template1` are never swapped out.
pub(crate) fn check_target(target: &str, maintenance: &str) -> Result<(), Forbidden> {
    if matches!(target, "template0" | "template1") || target == maintenance || target == "postgres"
    {
        return Err(Forbidden(format!(
            "'{target}' is a database the server itself needs, and this tool never replaces it: restore into another with --target-db"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement() {
        use Placement::*;
        assert_eq!(Placement::decide(false, false, true, false), Ok(Local));
        assert_eq!(
            Placement::decide(true, false, true, false),
            Ok(LocalThenUpload)
        );
        assert_eq!(Placement::decide(true, false, true, true), Ok(Local));
        assert_eq!(Placement::decide(true, true, true, false), Ok(RemoteOnly));
        assert_eq!(Placement::decide(true, false, false, false), Ok(RemoteOnly));
        assert_eq!(
            Placement::decide(true, false, false, true),
            Ok(Local),
            "--no-upload keeps it local whatever BACKUP_LOCAL says"
        );
        assert!(Placement::decide(false, true, true, false).is_err());
        assert!(Placement::decide(false, false, false, false).is_err());
    }

    fn replace(exists: bool, yes: bool, local: bool, interactive: bool) -> Replace<'static> {
        Replace {
            target: "app",
            server: "localhost:5432",
            source: "f.sql.gz",
            exists,
            explicit_target: false,
            yes,
            local,
            interactive,
        }
    }

    #[test]
    fn consent_rules() {
        assert_eq!(
            consent(replace(false, false, false, false)),
            Consent::Proceed
        );
        assert_eq!(consent(replace(true, true, false, false)), Consent::Proceed);
        assert!(matches!(
            consent(replace(true, false, true, true)),
            Consent::Ask(_)
        ));
        match consent(replace(true, false, false, true)) {
            Consent::Refuse(m) => assert!(m.contains("not this machine"), "{m}"),
            other => panic!("{other:?}"),
        }
        match consent(replace(true, false, true, false)) {
            Consent::Refuse(m) => assert!(
                m.contains("pass --yes to confirm (there is no terminal"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        let explicit = Replace {
            explicit_target: true,
            ..replace(true, false, true, true)
        };
        assert!(
            matches!(consent(explicit), Consent::Refuse(m) if m.contains("--target-db replaces only with --yes"))
        );
    }

    #[test]
    fn the_servers_own_databases_are_never_targets() {
        for db in ["postgres", "template0", "template1", "maint"] {
            assert!(check_target(db, "maint").is_err(), "{db}");
        }
        assert!(check_target("app", "postgres").is_ok());
    }
}
