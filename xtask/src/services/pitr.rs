//! pgBackRest in the compose service: the one engine of `db-pitr`,
//! `db-backup --physical`, `db-restore --to-time`, and the physical lines of
//! `db-list` and `db-status`. Every command runs inside the service with
//! `compose exec` as the `postgres` user (pgBackRest must run as the
//! server's owner), with our configuration file on the repository's volume.
//!
//! A restore never writes over the running data: pgBackRest restores into a
//! directory beside it, a server started there recovers to the target and
//! is checked, and only then are the directories exchanged while the
//! service is stopped. The old data is set aside, not deleted.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use time::OffsetDateTime;

use crate::core::config::Settings;
use crate::core::metrics;
use crate::core::pitr::{
    self, Archiver, BackupKind, CONF, Change, ConfFor, Physical, PitrSettings, REPO, Repository,
    Server, StanzaInfo, Target, WORK_DIR,
};
use crate::services::catalog::LocalStore;
use crate::services::compose::Compose;
use crate::services::interrupt;
use crate::services::process::Finished;
use crate::ui;

/// A restore that failed half-way through the exchange: the service is
/// stopped and its data directory holds part of each data. The only failure
/// after which the backed-up server may yet be put in place (by hand).
#[derive(Debug)]
pub(crate) struct DataLeftMixed(String);

impl std::fmt::Display for DataLeftMixed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DataLeftMixed {}

/// The compose service with pgBackRest, ready to be driven.
pub(crate) struct Pitr {
    compose: Compose,
    service: String,
    pub(crate) settings: PitrSettings,
    pub(crate) server: Server,
    /// How long the service may take to become healthy.
    healthy_within: Duration,
}

/// Where the archive was complete to, just before a restore.
#[derive(Debug, Clone)]
pub(crate) struct ArchivedTo {
    /// The end of the last archived segment (pg_switch_wal's answer).
    pub(crate) lsn: String,
}

/// How an exchange of directories failed.
#[derive(Debug)]
enum Swap {
    /// Nothing is moved any more: the directory is as before.
    Undone(anyhow::Error),
    /// The undo failed too: the directory holds part of each.
    Mixed(anyhow::Error),
}

/// Where a finished restore left things.
#[derive(Debug)]
pub(crate) struct Restored {
    /// The old data, under the data directory's work directory.
    pub(crate) set_aside: String,
    pub(crate) secs: f64,
}

impl Pitr {
    /// The running compose service of these settings. PITR needs the
    /// service: pgBackRest and the WAL live there.
    pub(crate) fn connect(settings: &Settings) -> anyhow::Result<Pitr> {
        let mut compose = Compose::detect(&settings.root)?;
        compose.detached = true;
        let service = compose.service(&settings.compose_service)?;
        let pg_path = service
            .env("PGDATA")
            .unwrap_or("/var/lib/postgresql/data")
            .to_string();
        let user = service
            .env("POSTGRES_USER")
            .unwrap_or("postgres")
            .to_string();
        let mut pitr = Pitr {
            compose,
            service: settings.compose_service.clone(),
            settings: PitrSettings::resolve(
                &settings.sources,
                &settings.connection.dbname,
                settings.s3.as_ref(),
                &crate::services::s3::credentials,
            )?,
            server: Server { pg_path, user },
            healthy_within: Duration::from_secs(300),
        };
        let version = pitr.exec("root", &["pgbackrest", "version"], b"")?;
        if !version.status.success() {
            bail!(
                "the compose service '{}' has no pgBackRest: use an image with it (scripts/build-pg-image.sh builds one; on the official image add `RUN apt-get update && apt-get install -y pgbackrest`)",
                pitr.service
            );
        }
        // The stanza the server archives to, unless one is named: a
        // `--dbname` of another database must not pick another stanza.
        if !pitr.settings.stanza_given
            && let Ok(current) = pitr.current_settings()
            && let Some(stanza) = current
                .get("archive_command")
                .and_then(|c| pitr::stanza_in(c))
        {
            pitr.settings.stanza = stanza;
        }
        Ok(pitr)
    }

    /// `compose exec -T -u USER service argv...`, with `input` on stdin.
    fn exec(&self, user: &str, argv: &[&str], input: &[u8]) -> anyhow::Result<Finished> {
        let mut args = vec!["exec", "-T", "-u", user, self.service.as_str()];
        args.extend_from_slice(argv);
        // In a process group of its own (the compose is detached): Ctrl-C
        // reaches the xtask, which stops between steps and cleans up; a step
        // in the service is not cut in half.
        self.compose
            .command(&args)
            .output(input)
            .map_err(|e| anyhow::format_err!("{e}"))
    }

    /// A shell script as `user` in the service; its stderr in the error.
    fn sh(&self, user: &str, what: &str, script: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut argv = vec!["sh", "-c", script, "sh"];
        argv.extend_from_slice(args);
        let out = self.exec(user, &argv, b"")?;
        if !out.status.success() {
            bail!("{what} failed: {}", last_lines(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `--config=...` and `--stanza=...`: what every pgBackRest call starts
    /// with (`conf`: ours, [`CONF`], or a new one being tried).
    fn config_and_stanza(&self, conf: &str) -> [String; 2] {
        [
            format!("--config={conf}"),
            format!("--stanza={}", self.settings.stanza),
        ]
    }

    /// pgBackRest with our configuration and stanza; stdout, or its error.
    fn pgbackrest(&self, what: &str, args: &[&str]) -> anyhow::Result<String> {
        let [config, stanza] = self.config_and_stanza(CONF);
        let mut argv = vec!["pgbackrest", config.as_str(), stanza.as_str()];
        argv.extend_from_slice(args);
        let out = self.exec("postgres", &argv, b"")?;
        if !out.status.success() {
            bail!("{what} failed: {}", last_lines(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// SQL on the service's server (local socket, `postgres` database),
    /// unaligned rows; the SQL goes on stdin.
    fn sql(&self, sql: &str) -> anyhow::Result<String> {
        self.sql_at(None, sql)
    }

    fn sql_at(&self, socket: Option<(&str, &str)>, sql: &str) -> anyhow::Result<String> {
        self.sql_vars(socket, &[], sql)
    }

    /// With psql variables (`-v name=value`, used as `:'name'`): values a
    /// user typed reach SQL quoted by psql, never pasted in. Not for secrets
    /// (they would be in argv).
    fn sql_vars(
        &self,
        socket: Option<(&str, &str)>,
        vars: &[(&str, &str)],
        sql: &str,
    ) -> anyhow::Result<String> {
        let assignments: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut argv = vec![
            "psql",
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            &self.server.user,
            "-d",
            "postgres",
        ];
        if let Some((dir, port)) = socket {
            argv.extend_from_slice(&["-h", dir, "-p", port]);
        }
        for a in &assignments {
            argv.extend_from_slice(&["-v", a]);
        }
        let out = self.exec("postgres", &argv, sql.as_bytes())?;
        if !out.status.success() {
            bail!("{}", last_lines(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The repository directory must be a volume of its own: else it would
    /// vanish with the container, and every backup (or, with an S3
    /// repository, the configuration archiving needs) with it.
    pub(crate) fn require_repository_volume(&self) -> anyhow::Result<()> {
        let mounts = self.sh(
            "root",
            "reading the service's mounts",
            "cat /proc/self/mountinfo",
            &[],
        )?;
        if !mounts.lines().any(|l| l.split(' ').nth(4) == Some(REPO)) {
            bail!(
                "the compose service '{}' has no volume at {REPO}: add `- db-pitr:{REPO}` to its volumes (as this template's docker-compose.yml does) and run `cargo xtask db-up`, so the backups outlive the container",
                self.service
            );
        }
        Ok(())
    }

    /// Our pgBackRest configuration as the service has it, if it has one.
    pub(crate) fn existing_conf(&self) -> anyhow::Result<Option<String>> {
        let out = self.exec("postgres", &["cat", CONF], b"")?;
        Ok(out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
    }

    /// Where the configuration in use puts the repository (the settings may
    /// have changed since `enable` wrote it).
    pub(crate) fn repository_in_use(&self) -> anyhow::Result<String> {
        Ok(self.existing_conf()?.map_or_else(
            || self.settings.repository.describe(),
            |c| pitr::repository_in(&c),
        ))
    }

    /// Removes our pgBackRest configuration (best effort: a restore that
    /// wrote it and failed).
    pub(crate) fn remove_conf(&self) {
        let _ = self.exec("root", &["rm", "-f", CONF], b"");
    }

    /// Whether the service has our pgBackRest configuration.
    pub(crate) fn has_conf(&self) -> anyhow::Result<bool> {
        Ok(self
            .exec("postgres", &["test", "-f", CONF], b"")?
            .status
            .success())
    }

    /// The settings `db-pitr` manages, as SHOW gives them.
    pub(crate) fn current_settings(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let rows = self.sql(
            "SELECT name, current_setting(name) FROM pg_settings \
             WHERE name IN ('archive_mode','archive_command','archive_timeout','wal_level')",
        )?;
        Ok(rows
            .lines()
            .filter_map(|l| l.split_once('|'))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    /// Writes pgbackrest.conf (0600, owned by postgres) from stdin: the
    /// cipher pass and the S3 keys never reach an argv. The new file is
    /// tried first (`info` reads the repository with it: a wrong cipher
    /// pass or key fails; for `enable` the stanza is created with it, so the
    /// repository takes writes) and only then replaces the one archive-push
    /// uses, so a mistaken enable cannot stop the archiving that works.
    /// `existing`: the configuration it replaces, as the caller read it.
    pub(crate) fn write_conf(
        &self,
        existing: Option<&str>,
        purpose: ConfFor,
    ) -> anyhow::Result<()> {
        self.check_lasting_keys(purpose)?;
        let conf = pitr::render_conf(&self.settings, &self.server, existing, purpose);
        // The directory is postgres's (a new volume is root's); every file in
        // it is written by postgres, so nothing there can point root's
        // writes elsewhere.
        let script = format!("set -e; chown postgres:postgres {REPO}; chmod 0750 {REPO}");
        let out = self.exec("root", &["sh", "-c", &script], b"")?;
        if !out.status.success() {
            bail!("preparing {REPO} failed: {}", last_lines(&out.stderr));
        }
        // The store's CA certificate: the new configuration names it. Named
        // by its content, it never replaces one the old file uses.
        let ca = match &self.settings.repository {
            Repository::S3(r) => r.ca_pem.as_ref().zip(r.ca_path()),
            Repository::Volume => None,
        };
        let in_use = existing.and_then(pitr::ca_file_in);
        if let Some((pem, path)) = &ca {
            let script = format!(
                "set -e; umask 022; rm -f {path}.tmp; cat > {path}.tmp; mv -f {path}.tmp {path}"
            );
            let out = self.exec("postgres", &["sh", "-c", &script], pem.as_bytes())?;
            if !out.status.success() {
                bail!("writing {path} failed: {}", last_lines(&out.stderr));
            }
        }
        let new = format!("{CONF}.new");
        let script = format!("set -e; umask 077; rm -f {new}; cat > {new}");
        let out = self.exec("postgres", &["sh", "-c", &script], conf.as_bytes())?;
        if !out.status.success() {
            bail!("writing {CONF} failed: {}", last_lines(&out.stderr));
        }
        if let Err(why) = self.try_conf(&new, purpose) {
            let _ = self.exec("postgres", &["rm", "-f", &new], b"");
            self.remove_unused_cas(in_use.as_deref());
            bail!("{why}; nothing was changed");
        }
        let out = self.exec("postgres", &["mv", "-f", &new, CONF], b"")?;
        if !out.status.success() {
            bail!("writing {CONF} failed: {}", last_lines(&out.stderr));
        }
        self.remove_unused_cas(ca.map(|(_, path)| path).as_deref());
        Ok(())
    }

    /// Keys with a session token expire, and archive-push would go on using
    /// them for every segment: refused (also for a dry run, which must not
    /// promise what the real run refuses).
    pub(crate) fn check_lasting_keys(&self, purpose: ConfFor) -> anyhow::Result<()> {
        if let Repository::S3(r) = &self.settings.repository
            && r.temporary_keys
        {
            bail!(
                "the S3 keys are temporary (AWS_SESSION_TOKEN is set): {} archives with the keys written into pgBackRest's configuration, for every WAL segment, and these expire; give the repository long-lived keys (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY alone); nothing was changed",
                match purpose {
                    ConfFor::Enable => "the server",
                    ConfFor::Restore => "the restored server",
                }
            );
        }
        Ok(())
    }

    /// Our CA certificates (by their name) but the one a configuration
    /// names; best effort.
    fn remove_unused_cas(&self, keep: Option<&str>) {
        let _ = self.exec(
            "postgres",
            &[
                "find",
                REPO,
                "-maxdepth",
                "1",
                "-name",
                "s3-ca-*.pem",
                "!",
                "-path",
                keep.unwrap_or("-"),
                "-delete",
            ],
            b"",
        );
    }

    /// The checks a new configuration passes before it is used.
    fn try_conf(&self, new: &str, purpose: ConfFor) -> Result<(), String> {
        let [config, stanza] = self.config_and_stanza(new);
        let where_ = self.settings.repository.describe();
        let name = &self.settings.stanza;
        let tried = self
            .exec(
                "postgres",
                &["pgbackrest", &config, &stanza, "info", "--output=json"],
                b"",
            )
            .map_err(|e| format!("{e:#}"))?;
        let hint = match &self.settings.repository {
            Repository::Volume => {
                "is BACKUP_PITR_CIPHER_PASS the stanza's pass (or unset for an unencrypted one)?"
            }
            Repository::S3(_) => {
                "does the service reach the store at that address (BACKUP_PITR_S3_ENDPOINT), is its certificate trusted (BACKUP_PITR_S3_CA_FILE), are the keys right, and is BACKUP_PITR_CIPHER_PASS the stanza's pass?"
            }
        };
        if !tried.status.success() {
            return Err(format!(
                "pgBackRest cannot read {where_} with the new settings ({}): {hint}",
                last_lines(&tried.stderr)
            ));
        }
        // `info` exits 0 even when it cannot read the repository: the
        // stanza's code says (1: no stanza yet, 2: no backup yet, 99: an
        // error such as a wrong cipher pass).
        let info = pitr::parse_info(&String::from_utf8_lossy(&tried.stdout), name)
            .map_err(|e| format!("pgBackRest's answer to the new settings: {e:#}"))?;
        match (info.code, purpose) {
            (0 | 2, ConfFor::Enable) => {
                // Another server's stanza (two projects on one bucket and
                // prefix, the same database name): archive-push would
                // refuse every segment, and a restore would bring that server.
                let running = self.system_identifier().map_err(|e| format!("{e:#}"))?;
                match info.system_id {
                    Some(theirs) if theirs != running => Err(format!(
                        "the stanza '{name}' in {where_} is of another server (system identifier {theirs}; this one is {running}): give this server its own with BACKUP_PITR_STANZA, or, if it is that server after its data was lost, bring it back with `cargo xtask db-restore --to-latest --yes`"
                    )),
                    _ => Ok(()),
                }
            }
            (0 | 2, ConfFor::Restore) => Ok(()),
            (1, ConfFor::Enable) => {
                // Created now, with the new file: a repository that takes no
                // writes is found before archive_command points at it.
                let out = self
                    .exec(
                        "postgres",
                        &["pgbackrest", &config, &stanza, "stanza-create"],
                        b"",
                    )
                    .map_err(|e| format!("{e:#}"))?;
                if out.status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "pgBackRest cannot create the stanza '{name}' in {where_} ({}): {hint}",
                        last_lines(&out.stderr)
                    ))
                }
            }
            (1, ConfFor::Restore) => Err(format!(
                "there is no stanza '{name}' in {where_}: check BACKUP_PITR_STANZA and the repository's settings (BACKUP_PITR_REPO, BACKUP_S3_BUCKET, BACKUP_S3_PREFIX)"
            )),
            _ => Err(format!(
                "pgBackRest cannot read the stanza '{name}' in {where_} with the new settings ({}): {hint}",
                info.describe()
            )),
        }
    }

    /// ALTER SYSTEM for each change; a reload, or a restart when one needs it.
    pub(crate) fn apply(&self, changes: &[Change]) -> anyhow::Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut sql = String::new();
        for c in changes {
            match &c.to {
                Some(v) => sql.push_str(&format!(
                    "ALTER SYSTEM SET {} = '{}';\n",
                    c.name,
                    v.replace('\'', "''")
                )),
                None => sql.push_str(&format!("ALTER SYSTEM RESET {};\n", c.name)),
            }
        }
        sql.push_str("SELECT pg_reload_conf();\n");
        self.sql(&sql).context("changing the server's settings")?;
        if pitr::needs_restart(changes) {
            ui::info(format!(
                "restarting the compose service '{}' (archive_mode takes effect at start)",
                self.service
            ));
            self.compose.restart(&self.service)?;
            self.compose
                .wait_healthy(&self.service, self.healthy_within)?;
            self.wait_accepting()?;
        }
        Ok(())
    }

    /// Creates the stanza (idempotent in pgBackRest) and runs its check,
    /// which pushes one WAL segment end to end.
    pub(crate) fn create_and_check(&self) -> anyhow::Result<()> {
        self.pgbackrest("pgbackrest stanza-create", &["stanza-create"])?;
        self.pgbackrest("pgbackrest check", &["check"])?;
        Ok(())
    }

    /// The stanza's information; `None` when it has never been created.
    pub(crate) fn info(&self) -> anyhow::Result<Option<StanzaInfo>> {
        if !self.has_conf()? {
            return Ok(None);
        }
        let json = self.pgbackrest("pgbackrest info", &["info", "--output=json"])?;
        let info = pitr::parse_info(&json, &self.settings.stanza)?;
        Ok((info.code != 1).then_some(info))
    }

    /// A physical backup; pgBackRest's default type makes the first one full.
    /// `before`: the backups the stanza has (its info, read by the caller).
    pub(crate) fn backup(
        &self,
        before: &[Physical],
        kind: Option<BackupKind>,
    ) -> anyhow::Result<Physical> {
        let kind = match kind {
            Some(k) => k,
            None => pitr::default_kind(before, self.now()?),
        };
        ui::info(format!(
            "taking a {} physical backup of stanza '{}' in the compose service '{}' ...",
            kind.as_str(),
            self.settings.stanza,
            self.service
        ));
        let kind_arg = format!("--type={}", kind.as_str());
        let mut args = vec!["backup", kind_arg.as_str()];
        // BACKUP_PITR_RETENTION_FULL when set now; else the configuration's.
        let retention = self
            .settings
            .retention_full
            .map(|n| format!("--repo1-retention-full={n}"));
        if let Some(r) = &retention {
            args.push(r);
        }
        self.pgbackrest("pgbackrest backup", &args)?;
        let after = self.info()?.map(|i| i.backups).unwrap_or_default();
        after
            .into_iter()
            .filter(|b| !before.iter().any(|o| o.label == b.label))
            .max_by_key(|b| b.stopped)
            .context("pgbackrest backup finished but lists no new backup")
    }

    /// The archiver's state and the lag it means, written to the metrics.
    pub(crate) fn measure_lag(&self, store: &LocalStore) -> anyhow::Result<(Archiver, f64)> {
        let archiver = self.archiver()?;
        let lag = pitr::archive_lag(&archiver);
        store.record_metrics(|m| {
            metrics::record_archive_lag(m, &self.settings.stanza, OffsetDateTime::now_utc(), lag)
        });
        Ok((archiver, lag))
    }

    /// The archiver's state, for the lag.
    pub(crate) fn archiver(&self) -> anyhow::Result<Archiver> {
        // The finished segments that wait are the `.ready` files; a file
        // archived between the listing and its stat is skipped (missing_ok).
        let row = self.sql(
            "WITH ready AS (SELECT (pg_stat_file('pg_wal/archive_status/' || f, true)).modification AS at \
             FROM pg_ls_dir('pg_wal/archive_status') AS f WHERE f LIKE '%.ready') \
             SELECT coalesce(last_archived_wal, ''), \
             coalesce(extract(epoch FROM last_archived_time)::text, ''), \
             coalesce(extract(epoch FROM last_failed_time)::text, ''), \
             coalesce((SELECT extract(epoch FROM min(at))::text FROM ready), ''), \
             (SELECT count(at) FROM ready), extract(epoch FROM now()) \
             FROM pg_stat_archiver",
        )?;
        let f: Vec<&str> = row.split('|').collect();
        if f.len() != 6 {
            bail!("unexpected answer from pg_stat_archiver: {row}");
        }
        let num = |s: &str| s.parse::<f64>().ok();
        Ok(Archiver {
            last_archived_wal: Some(f[0].to_string()).filter(|s| !s.is_empty()),
            last_archived_at: num(f[1]),
            last_failed_at: num(f[2]),
            oldest_waiting_at: num(f[3]),
            waiting: f[4].parse().unwrap_or(0),
            now: num(f[5]).unwrap_or(0.0),
        })
    }

    /// The server's reading of a target time (as recovery will read it, in
    /// the server's time zone when none is given), in Unix seconds.
    pub(crate) fn parse_time(&self, text: &str) -> anyhow::Result<Target> {
        let refused = || {
            anyhow::format_err!(
                "--to-time '{text}' is not a time PostgreSQL reads: write it like '2026-11-27 10:15:00+00'"
            )
        };
        if text.contains(['\n', '\r']) {
            return Err(refused());
        }
        let out = self
            .sql_vars(
                None,
                &[("t", text)],
                "SELECT extract(epoch FROM :'t'::timestamptz), \
                 to_char(:'t'::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
            )
            .map_err(|_| refused())?;
        let (epoch, utc) = out.split_once('|').ok_or_else(refused)?;
        Ok(Target::Time {
            text: text.to_string(),
            utc: utc.to_string(),
            epoch: epoch.parse().map_err(|_| refused())?,
        })
    }

    /// The timeline the server runs on, and its history.
    pub(crate) fn timeline(&self, info: &StanzaInfo) -> anyhow::Result<(u32, Vec<(u32, u64)>)> {
        let tli: u32 = self
            .sql("SELECT timeline_id FROM pg_control_checkpoint()")?
            .parse()
            .context("reading the server's timeline")?;
        Ok((tli, self.history(tli, info)?))
    }

    /// A timeline's history (its ancestors' switch points), from pg_wal or
    /// else the repository (`repo-get`, which decrypts and, unlike
    /// archive-get, does not ask the running server to be the backed-up
    /// one); none for timeline 1.
    pub(crate) fn history(&self, tli: u32, info: &StanzaInfo) -> anyhow::Result<Vec<(u32, u64)>> {
        if tli <= 1 {
            return Ok(Vec::new());
        }
        let name = format!("{tli:08X}.history");
        let [config, stanza] = self.config_and_stanza(CONF);
        let in_repo = format!(
            "archive/{}/{}/{name}",
            self.settings.stanza,
            info.archive_id.as_deref().unwrap_or_default()
        );
        let out = self.exec(
            "postgres",
            &[
                "sh",
                "-c",
                "cat \"$1/pg_wal/$2\" 2>/dev/null || pgbackrest \"$3\" \"$4\" repo-get \"$5\"",
                "sh",
                &self.server.pg_path,
                &name,
                &config,
                &stanza,
                &in_repo,
            ],
            b"",
        )?;
        if !out.status.success() {
            bail!(
                "timeline {tli}'s history file {name} is neither in pg_wal nor in the repository ({}): a restore cannot follow the timeline; nothing was changed",
                last_lines(&out.stderr)
            );
        }
        Ok(pitr::parse_history(&String::from_utf8_lossy(&out.stdout)))
    }

    /// Bytes free on the data directory's volume.
    pub(crate) fn free_bytes(&self) -> anyhow::Result<u64> {
        let out = self.sh(
            "postgres",
            "measuring the free space",
            "df -P -k \"$1\" | awk 'NR == 2 { print $4 }'",
            &[&self.server.pg_path],
        )?;
        Ok(out.trim().parse::<u64>().context("reading df")? * 1024)
    }

    /// The running server's system identifier.
    pub(crate) fn system_identifier(&self) -> anyhow::Result<u64> {
        let out = self.sql("SELECT system_identifier FROM pg_control_system()")?;
        out.parse()
            .with_context(|| format!("unexpected system identifier {out}"))
    }

    /// Now, by the server's clock.
    pub(crate) fn now(&self) -> anyhow::Result<f64> {
        Ok(self.sql("SELECT extract(epoch FROM now())")?.parse()?)
    }

    /// Tablespaces outside the data directory would be restored over the
    /// live ones: refused.
    pub(crate) fn tablespaces(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .sql("SELECT spcname FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')")?
            .lines()
            .map(String::from)
            .collect())
    }

    /// Makes the archive hold everything committed until now: one empty
    /// committed transaction (recovery to a time stops at the first commit
    /// after it, so there must be one), a WAL switch, and a wait until the
    /// segment is archived.
    pub(crate) fn archive_now(&self) -> anyhow::Result<ArchivedTo> {
        let out = self.sql(
            "SELECT txid_current();\nSELECT lsn, pg_walfile_name(lsn) FROM pg_switch_wal() AS lsn;",
        )?;
        let (lsn, segment) = out
            .lines()
            .last()
            .and_then(|l| l.split_once('|'))
            .map(|(l, s)| (l.to_string(), s.to_string()))
            .with_context(|| format!("unexpected answer to pg_switch_wal: {out}"))?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let a = self.archiver()?;
            if a.last_archived_wal
                .as_deref()
                .is_some_and(|w| w.get(..24) >= segment.get(..24))
            {
                return Ok(ArchivedTo { lsn });
            }
            if Instant::now() > deadline {
                bail!(
                    "WAL segment {segment} was not archived within 120 s: see `cargo xtask db-pitr status` and `docker compose logs {}`; nothing was restored",
                    self.service
                );
            }
            interrupt::check("nothing was restored")?;
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Restores to `target` and puts the service on the result; on any
    /// failure the service is on its old data. It starts from backup `set`
    /// and recovers along `timeline` (the running server's, or the
    /// archive's newest when the running server is not the backed-up one).
    /// `need`: bytes the restore takes beside the running data.
    pub(crate) fn restore(
        &self,
        target: &Target,
        archived: Option<&ArchivedTo>,
        (set, timeline): (&str, u32),
        need: u64,
        stamp: &str,
    ) -> anyhow::Result<Restored> {
        let clock = Instant::now();
        let data = self.server.pg_path.clone();
        let work = format!("{data}/{WORK_DIR}");
        let fresh = format!("{work}/restore-{stamp}");
        let aside = format!("{work}/pre-restore-{stamp}");
        // A full volume would stop the running server too: refused first.
        let free = self.free_bytes()?;
        if free < need {
            bail!(
                "the data volume has {} free and the restore needs about {} beside the running data: remove old sets aside ({work}/pre-restore-*) or give the volume room; nothing was changed",
                crate::core::human::bytes(free),
                crate::core::human::bytes(need)
            );
        }
        // Restores of runs that died (only ours: restore-*, with no server
        // running on them), then a fresh directory.
        self.sh(
            "postgres",
            "preparing the restore directory",
            "set -e; mkdir -p \"$1\"; chmod 700 \"$1\"
             for d in \"$1\"/restore-*; do
                 [ -d \"$d\" ] || continue
                 pg_ctl -D \"$d\" status >/dev/null 2>&1 && continue
                 rm -rf \"$d\" \"$d.log\"
             done
             mkdir -m 700 \"$2\"",
            &[&work, &fresh],
        )?;
        let cleanup = || {
            let _ = self.sh(
                "postgres",
                "removing the partial restore",
                "pg_ctl -D \"$1\" -m immediate -w stop >/dev/null 2>&1; rm -rf \"$1\" \"$1.log\"",
                &[&fresh],
            );
        };
        let result = (|| -> anyhow::Result<()> {
            let mut args = vec!["restore".to_string(), format!("--pg1-path={fresh}")];
            match target {
                // The server's reading of the time, in UTC: pgBackRest and
                // recovery read the same moment whatever their time zones.
                Target::Time { utc, .. } => args.extend([
                    "--type=time".to_string(),
                    format!("--target={utc}"),
                    "--target-action=promote".to_string(),
                ]),
                Target::Latest => args.push("--type=default".into()),
            }
            args.push(format!("--set={set}"));
            args.push(format!("--target-timeline={timeline}"));
            ui::info(format!(
                "restoring physical backup {set} and recovering to {} along timeline {timeline} ...",
                target.describe()
            ));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            self.pgbackrest("pgbackrest restore", &args)?;
            interrupt::check("nothing was changed; the service is on its old data")?;
            // To the latest state, recovery must reach what was just archived:
            // a gap in the archive ends it early without an error otherwise.
            let reach = archived
                .filter(|_| matches!(target, Target::Latest))
                .map(|a| a.lsn.as_str());
            self.recover(&fresh, reach)?;
            Ok(())
        })();
        if let Err(e) = result {
            cleanup();
            return Err(e);
        }

        // The last moment a signal stops the restore with nothing changed.
        if let Err(e) = interrupt::check("nothing was changed; the service is on its old data") {
            cleanup();
            return Err(e.into());
        }
        // The exchange: the service stops, the directories swap, it starts.
        // From here a signal is noted and this runs to its end: stopping
        // half-way would leave less than either data.
        ui::info(format!(
            "stopping the compose service '{}' to put the restored data in place",
            self.service
        ));
        if let Err(e) = self.compose.stop(&self.service) {
            let _ = self.compose.up(&self.service, true);
            cleanup();
            bail!(
                "stopping the compose service failed ({e}): it stays on its old data; nothing was changed"
            );
        }
        match self.swap(&data, &fresh, &aside) {
            Ok(()) => {}
            Err(Swap::Undone(e)) => {
                let _ = self.compose.up(&self.service, true);
                let _ = self
                    .compose
                    .wait_healthy(&self.service, self.healthy_within);
                cleanup();
                return Err(e.context("the service is back on its old data"));
            }
            Err(Swap::Mixed(e)) => {
                return Err(DataLeftMixed(format!(
                    "the data directory holds part of each: the old entries are in {aside}, the restored ones in {fresh}; the service is left stopped: move them back by hand (see docs/operations/database-recovery.md): {e:#}"
                ))
                .into());
            }
        }
        let started = self
            .compose
            .up(&self.service, true)
            .map_err(anyhow::Error::from)
            .and_then(|()| {
                self.compose
                    .wait_healthy(&self.service, self.healthy_within)
                    .map_err(anyhow::Error::from)
            })
            .and_then(|()| self.wait_accepting())
            .and_then(
                |()| match self.sql("SELECT pg_is_in_recovery()")?.as_str() {
                    "f" => Ok(()),
                    other => bail!("the restored server is still in recovery ({other})"),
                },
            );
        if let Err(e) = started {
            // Back to the old data: the restored one is kept beside it for a look.
            let failed = format!("{work}/failed-{stamp}");
            let _ = self.compose.stop(&self.service);
            return Err(match self.swap_back(&data, &aside, &failed) {
                Ok(()) => {
                    let _ = self.compose.up(&self.service, true);
                    let _ = self
                        .compose
                        .wait_healthy(&self.service, self.healthy_within);
                    e.context(format!(
                        "the restored data did not start; the service is back on its old data (the restored data is in {failed})"
                    ))
                }
                Err(Swap::Undone(b) | Swap::Mixed(b)) => e.context(format!(
                    "the restored data did not start, and putting the old data back failed ({b:#}): the old data is in {aside}; the service is left stopped"
                )),
            });
        }
        Ok(Restored {
            set_aside: aside,
            secs: clock.elapsed().as_secs_f64(),
        })
    }

    /// A server on the restored directory, on a private socket, recovers to
    /// the target and promotes; it is then stopped cleanly. Its WAL is not
    /// archived from here (the service archives it once it runs on it).
    fn recover(&self, dir: &str, reach: Option<&str>) -> anyhow::Result<()> {
        let socket = format!("/tmp/xtask-pitr-{}", std::process::id());
        let log = format!("{dir}.log");
        let options = format!(
            // Small shared memory beside the running server; no logical
            // replication workers (they would advance the publishers' slots).
            "-c port=5499 -c listen_addresses='' -c unix_socket_directories={socket} -c archive_mode=off \
             -c shared_buffers=64MB -c max_logical_replication_workers=0"
        );
        ui::info("recovering to the target in a server beside the running one ...");
        self.sh(
            "postgres",
            "starting a server on the restored data",
            "set -e; mkdir -p \"$3\"; pg_ctl -D \"$1\" -l \"$2\" -o \"$4\" -t 3600 -w start >/dev/null || { grep -E 'FATAL|PANIC' \"$2\" | tail -n 2 >&2; exit 1; }",
            &[dir, &log, &socket, &options],
        )
        .map_err(|e| recovery_error(&e.to_string()))?;
        loop {
            interrupt::check("nothing was changed; the service is on its old data")?;
            match self.sql_at(Some((&socket, "5499")), "SELECT pg_is_in_recovery()") {
                Ok(r) if r == "f" => break,
                Ok(_) => {}
                Err(_) => {
                    let status = self.exec("postgres", &["pg_ctl", "-D", dir, "status"], b"")?;
                    if !status.status.success() {
                        let tail = self.sh(
                            "postgres",
                            "reading the recovery log",
                            "grep -E 'FATAL|PANIC' \"$1\" | tail -n 2",
                            &[&log],
                        )?;
                        return Err(recovery_error(&tail));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        if let Some(lsn) = reach {
            let ended = self.sql_at(
                Some((&socket, "5499")),
                &format!("SELECT pg_current_wal_lsn(), pg_current_wal_lsn() >= '{lsn}'::pg_lsn"),
            )?;
            if !ended.ends_with("|t") {
                return Err(anyhow::format_err!(
                    "recovery ended at {} before the latest archived WAL ({lsn}): a WAL segment is missing from the archive; nothing was changed, the service is on its old data",
                    ended.split('|').next().unwrap_or("?")
                ));
            }
        }
        self.sh(
            "postgres",
            "stopping the recovered server",
            RECOVERED,
            &[dir, &log],
        )?;
        Ok(())
    }

    /// With the service stopped: the data directory's entries go to
    /// `aside`, the restored ones take their place. Renames within one
    /// volume; undone if any fails.
    fn swap(&self, data: &str, fresh: &str, aside: &str) -> Result<(), Swap> {
        self.run_stopped(
            "putting the restored data in place",
            SWAP,
            &[data, fresh, aside, WORK_DIR],
        )
    }

    fn swap_back(&self, data: &str, aside: &str, failed: &str) -> Result<(), Swap> {
        self.run_stopped(
            "putting the old data back",
            SWAP,
            &[data, aside, failed, WORK_DIR],
        )
    }

    /// A script in a one-off container of the service (same image and
    /// volumes), while the service itself is stopped. Exit 2: the script's
    /// undo failed too.
    fn run_stopped(&self, what: &str, script: &str, args: &[&str]) -> Result<(), Swap> {
        let mut argv = vec![
            "run",
            "--rm",
            "--no-deps",
            "-T",
            "--entrypoint",
            "sh",
            self.service.as_str(),
            "-c",
            script,
            "sh",
        ];
        argv.extend_from_slice(args);
        let out = self
            .compose
            .command(&argv)
            .output(b"")
            .map_err(|e| Swap::Undone(anyhow::format_err!("{what} failed: {e}")))?;
        match out.status.code() {
            Some(0) => Ok(()),
            Some(2) => Err(Swap::Mixed(anyhow::format_err!(
                "{what} failed and could not be undone: {}",
                last_lines(&out.stderr)
            ))),
            _ => Err(Swap::Undone(anyhow::format_err!(
                "{what} failed: {}",
                last_lines(&out.stderr)
            ))),
        }
    }

    /// Waits until the server answers on its socket (a restart's first seconds).
    fn wait_accepting(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + self.healthy_within;
        loop {
            match self.sql("SELECT 1") {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }

    /// The physical backups for `db-list`, as JSON and as text.
    pub(crate) fn listing(&self) -> anyhow::Result<Option<(serde_json::Value, String)>> {
        let Some(info) = self.info()? else {
            return Ok(None);
        };
        let stanza = &self.settings.stanza;
        let rows: Vec<_> = info
            .backups
            .iter()
            .rev()
            .map(|b| {
                serde_json::json!({"label": b.label, "type": b.kind.as_str(),
                    "started_at": pitr::utc(b.started), "finished_at": pitr::utc(b.stopped),
                    "size_bytes": b.size, "repo_bytes": b.repo_size, "prior": b.prior,
                    "wal_start": b.wal_start, "wal_stop": b.wal_stop})
            })
            .collect();
        let repository = self.repository_in_use()?;
        let value = serde_json::json!({"stanza": stanza, "service": self.service,
            "repository": repository, "status": info.message, "backups": rows, "wal_min": info.wal_min, "wal_max": info.wal_max,
            "restorable_from": info.backups.first().map(|b| pitr::utc(b.stopped))});
        let mut text = format!(
            "\nphysical backups of the compose service '{}' (pgBackRest stanza '{stanza}' in {repository}, {}), newest first:\n",
            self.service, info.message
        );
        if info.backups.is_empty() {
            text.push_str("  none: take one with `cargo xtask db-backup --physical`\n");
        }
        for b in info.backups.iter().rev() {
            text.push_str(&format!(
                "  {:<34} {:<4}  {}  {:>10}  +{:>10}  WAL {}..{}\n",
                b.label,
                b.kind.as_str(),
                pitr::utc(b.stopped),
                crate::core::human::bytes(b.size),
                crate::core::human::bytes(b.repo_size),
                b.wal_start,
                b.wal_stop
            ));
        }
        if let (Some(first), Some(max)) = (info.backups.first(), &info.wal_max) {
            text.push_str(&format!(
                "  restorable to any time from {} to now (WAL archived to {max})\n",
                pitr::utc(first.stopped)
            ));
        }
        Ok(Some((value, text)))
    }

    pub(crate) fn service(&self) -> &str {
        &self.service
    }

    pub(crate) fn compose_name(&self) -> String {
        self.compose.name()
    }
}

/// After recovery, `$1` the recovered directory, `$2` its log: a clean
/// stop; the recovery settings pgBackRest wrote (they name the temporary
/// path) dropped, so the configuration is the service's own again; and the
/// new timeline's history file marked for the archiver. The server ran
/// without archiving, so nothing of this restore reaches the repository
/// unless the service starts on it; but without the history in the archive
/// a later recovery would not follow this timeline, and the next promotion
/// would pick the same timeline number and collide with this one's WAL.
const RECOVERED: &str = r#"set -e
pg_ctl -D "$1" -m fast -t 3600 -w stop >/dev/null
sed -i -e '/^# Recovery settings generated by pgBackRest/d' -e '/^restore_command = /d' \
    -e '/^recovery_target/d' "$1/postgresql.auto.conf"
for h in "$1"/pg_wal/*.history; do
    [ -e "$h" ] || continue
    b=${h##*/}
    [ -e "$1/pg_wal/archive_status/$b.done" ] || : > "$1/pg_wal/archive_status/$b.ready"
done
rm -f "$2"
"#;

/// `$1` data directory, `$2` the directory to put in place, `$3` where the
/// current entries go, `$4` the work directory's name (left where it is).
/// Every entry is renamed; on a failure the renames done so far are undone.
const SWAP: &str = r#"set -u
data=$1 new=$2 aside=$3 work=$4
[ -d "$new" ] && [ -s "$new/PG_VERSION" ] || { echo "$new holds no data directory" >&2; exit 1; }
mkdir -m 700 "$aside" || exit 1
chown --reference="$data" "$aside"
moved_out="" moved_in=""
undo() {
    bad=0
    for e in $moved_in; do mv "$data/$e" "$new/$e" || bad=1; done
    for e in $moved_out; do mv "$aside/$e" "$data/$e" || bad=1; done
    [ "$bad" = 0 ] || exit 2
    rmdir "$aside"
    exit 1
}
cd "$data" || exit 1
for e in * .[!.]* ..?*; do
    [ -e "$e" ] || continue
    [ "$e" = "$work" ] && continue
    mv "$e" "$aside/$e" || undo
    moved_out="$moved_out $e"
done
cd "$new" || undo
for e in * .[!.]* ..?*; do
    [ -e "$e" ] || continue
    # The copy's own (empty) work directory: the data directory keeps its own.
    if [ "$e" = "$work" ]; then rmdir "$e" 2>/dev/null; continue; fi
    mv "$e" "$data/$e" || undo
    moved_in="$moved_in $e"
done
cd "$data" && rmdir "$new" 2>/dev/null
exit 0
"#;

fn recovery_error(log: &str) -> anyhow::Error {
    if log.contains("recovery ended before configured recovery target was reached") {
        anyhow::format_err!(
            "the archive ends before the target: no transaction committed after it was archived (a missing WAL segment, or a server that was gone before then); nothing was changed, the service is on its old data"
        )
    } else {
        anyhow::format_err!(
            "recovery failed: {}; nothing was changed, the service is on its old data",
            last_lines(log.rsplit("failed: ").next().unwrap_or(log))
        )
    }
}

/// The last meaningful lines of a tool's stderr, on one line.
fn last_lines(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = &lines[lines.len().saturating_sub(3)..];
    if tail.is_empty() {
        "no message".into()
    } else {
        tail.join(" / ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_messages() {
        assert_eq!(last_lines("a\n\nb\nc\nd\n"), "b / c / d");
        let e =
            recovery_error("FATAL:  recovery ended before configured recovery target was reached");
        assert!(
            e.to_string()
                .starts_with("the archive ends before the target")
        );
    }
}
