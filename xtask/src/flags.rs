//! Every command and option of `cargo xtask`, declared in one place.
//!
//! Options that several tasks share are `Args` groups flattened into each
//! task. Values that may also come from the environment are resolved in
//! `config.rs` (flag > environment > `.env` > default), not by clap, so the
//! same precedence applies to every source, `DATABASE_URL` included.

use std::path::PathBuf;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};

use crate::core::config::{Overrides, Via};
use crate::core::format::Format;
use crate::core::naming::{BackupType, TypeChoice};

#[derive(Debug, Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Database tooling for this workspace: PostgreSQL backups",
    long_about = None,
    disable_help_subcommand = true,
    max_term_width = 100,
    after_help = "Configuration: flag > environment > .env file > default. See README.md for every variable."
)]
pub(crate) struct Xtask {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Back up a database: pg_dump streamed, compressed and hashed into BACKUP_DIR
    DbBackup(DbBackup),
    /// Restore a backup all-or-nothing: loaded into a scratch database, checked, then swapped in
    DbRestore(DbRestore),
    /// List the backups in BACKUP_DIR, newest first
    DbList(DbList),
    /// Check backups: checksum, compressed stream and SQL structure, in one read of each file
    DbVerify(DbVerify),
    /// Apply retention: delete expired backups, never the last good ones, and say why
    DbPrune(DbPrune),
    /// Health check for monitors and CI: exit 5 when the newest backup is too old or the last run failed
    DbStatus(DbStatus),
    /// Try it all on a throwaway server: backup, verify, list, restore, compare; then clean up
    Demo(Demo),
    /// Clone prod-like data into the local development database, masked, all-or-nothing
    DbClone(DbClone),
    /// Start the compose database service and wait until it is healthy
    DbUp(DbUp),
    /// Stop the compose database service (its data volume is kept)
    DbDown(DbDown),
    /// Open psql on the database, by the same route as the other tasks (arguments after -- go to psql)
    DbPsql(DbPsql),
    /// Point-in-time recovery for the compose service: WAL archiving and physical backups with pgBackRest
    DbPitr(DbPitr),
}

#[derive(Debug, Clone, Args)]
pub(crate) struct DbPitr {
    #[command(subcommand)]
    pub(crate) action: PitrAction,
    #[command(flatten)]
    pub(crate) dir: DirArgs,
}

#[derive(Debug, Clone, Subcommand)]
pub(crate) enum PitrAction {
    /// Archive every WAL segment with pgBackRest (stanza, repository on the db-pitr volume,
    /// archive_mode, archive_command, archive_timeout), restart if needed, then check it end to end
    Enable {
        /// Show the changes and make none
        #[arg(long)]
        dry_run: bool,
        /// Let the repository move (BACKUP_PITR_REPO, the store, the bucket or its prefix changed):
        /// the backups in the old one are then no longer used
        #[arg(long)]
        move_repository: bool,
    },
    /// Stop archiving WAL (the repository and its backups are kept)
    Disable {
        /// Show the changes and make none
        #[arg(long)]
        dry_run: bool,
    },
    /// What is archived and backed up: the stanza, physical backups, the archive's lag
    Status {
        /// Print the result as JSON on stdout
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Args)]
pub(crate) struct DbStatus {
    #[command(flatten)]
    pub(crate) dir: DirArgs,
    /// The database to check [env: POSTGRES_DB] [default: app]
    #[arg(
        short = 'd',
        long = "dbname",
        value_name = "NAME",
        conflicts_with = "all"
    )]
    pub(crate) dbname: Option<String>,
    /// Check every database that has backups or metrics in BACKUP_DIR
    #[arg(long)]
    pub(crate) all: bool,
    /// Oldest acceptable newest backup: 26h, 90m, 2d, 1w [env: BACKUP_MAX_AGE] [default: 26h]
    #[arg(long, value_name = "AGE")]
    pub(crate) max_age: Option<String>,
    /// Print the result as JSON on stdout
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Masking rules: xtask/masking.toml ([mask] \"schema.table.column\" = \"null|fixed:VALUE|email|name|phone|text|keep\"; \
[subset] \"schema.table\" = \"condition\" or { where = \"condition\", fraction = 0.05 }). \
The fakes are keyed by BACKUP_MASK_SALT (or the file BACKUP_MASK_SALT_FILE), never by a committed file. \
Environments: xtask/environments.toml ([name] host, port, dbname, user, password_env, sslmode)."
)]
pub(crate) struct DbClone {
    /// Where from: an environment in xtask/environments.toml, a postgres:// URL, a backup file,
    /// `latest` or `s3:latest`
    #[arg(long, value_name = "SOURCE")]
    pub(crate) from: String,
    /// The database to replace [default: POSTGRES_DB, the development database]
    #[arg(long, value_name = "NAME")]
    pub(crate) to: Option<String>,
    #[command(flatten)]
    pub(crate) connection: ConnectionArgs,
    /// Leave this table's data out (the table exists, empty); `*` and `?` globs, repeatable
    #[arg(long = "exclude-table-data", value_name = "PATTERN")]
    pub(crate) exclude_table_data: Vec<String>,
    /// Only the schema, no data (a live source)
    #[arg(long, conflicts_with_all = ["subset", "subset_fraction"])]
    pub(crate) schema_only: bool,
    /// A slice: this table's rows that match CONDITION, the rows that reference them, and every
    /// row those reference, so every foreign key holds ('schema.table: condition'; repeatable)
    #[arg(long = "subset", value_name = "TABLE: CONDITION")]
    pub(crate) subset: Vec<String>,
    /// A deterministic share of a table's rows, the same rows every run (schema.table=0.05;
    /// repeatable); the slice then follows the foreign keys as with --subset
    #[arg(long = "subset-fraction", value_name = "TABLE=FRACTION")]
    pub(crate) subset_fraction: Vec<String>,
    /// Clone every row even though the masking rules file has a [subset] section
    #[arg(long, conflicts_with_all = ["subset", "subset_fraction"])]
    pub(crate) no_subset: bool,
    /// Print what the subset keeps, table by table, and write nothing to the target
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Masking rules [default: xtask/masking.toml]; required for any source but a database on
    /// this machine
    #[arg(long, value_name = "FILE", conflicts_with = "no_mask")]
    pub(crate) mask: Option<PathBuf>,
    /// Copy every column as it is, from any source (no masking rules)
    #[arg(long)]
    pub(crate) no_mask: bool,
    #[command(flatten)]
    pub(crate) roles: RoleArgs,
    /// With `latest` and backups of several servers in one store: the server's system
    /// identifier or host:port
    #[arg(long, value_name = "SERVER")]
    pub(crate) source: Option<String>,
    /// Allow a target that is not on this machine
    #[arg(long)]
    pub(crate) allow_remote_target: bool,
    /// Replace an existing target database without asking (it is kept as {db}_pre_clone_{timestamp})
    #[arg(short = 'y', long)]
    pub(crate) yes: bool,
    /// Print one JSON object describing the result on stdout
    #[arg(long)]
    pub(crate) json: bool,
    /// Print only errors
    #[arg(short, long, conflicts_with = "verbose")]
    pub(crate) quiet: bool,
    /// Print more detail
    #[arg(short, long)]
    pub(crate) verbose: bool,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct DbUp {
    /// Seconds to wait for the service to become healthy
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub(crate) timeout: u64,
    /// Print only errors
    #[arg(short, long)]
    pub(crate) quiet: bool,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct DbDown {
    /// Print only errors
    #[arg(short, long)]
    pub(crate) quiet: bool,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct DbPsql {
    #[command(flatten)]
    pub(crate) connection: ConnectionArgs,
    /// Print more detail (the route taken)
    #[arg(short, long)]
    pub(crate) verbose: bool,
    /// Arguments for psql, e.g. `-- -c 'SELECT 1'`
    #[arg(last = true, value_name = "PSQL_ARGS")]
    pub(crate) args: Vec<String>,
}

/// Where the database is. Passwords are never flags: they would show in `ps`.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct ConnectionArgs {
    /// Database server host [env: POSTGRES_HOST] [default: localhost]
    #[arg(help_heading = "Connection", long, value_name = "HOST")]
    pub(crate) host: Option<String>,
    /// Database server port [env: POSTGRES_PORT] [default: 5432]
    #[arg(help_heading = "Connection", long, value_name = "PORT")]
    pub(crate) port: Option<u16>,
    /// Database name [env: POSTGRES_DB] [default: app]
    #[arg(
        help_heading = "Connection",
        short = 'd',
        long = "dbname",
        value_name = "NAME"
    )]
    pub(crate) dbname: Option<String>,
    /// Database user [env: POSTGRES_USER] [default: app]; the password comes from PGPASSWORD,
    /// POSTGRES_PASSWORD, DATABASE_URL or ~/.pgpass
    #[arg(
        help_heading = "Connection",
        short = 'U',
        long = "user",
        value_name = "USER"
    )]
    pub(crate) user: Option<String>,
    /// Where the client tools run: auto (the compose service if it runs, else here), host,
    /// compose [env: BACKUP_VIA, BACKUP_COMPOSE_SERVICE] [default: auto, db]
    #[arg(
        help_heading = "Connection",
        long,
        value_name = "ROUTE",
        value_parser = |s: &str| s.parse::<Via>()
    )]
    pub(crate) via: Option<Via>,
}

/// Loading without the source's roles (restore, clone, a restore test).
#[derive(Debug, Clone, Copy, Default, Args)]
pub(crate) struct RoleArgs {
    /// Load everything as the connecting user: no ALTER ... OWNER TO, no database owner
    #[arg(long)]
    pub(crate) no_owner: bool,
    /// Leave privileges out: no GRANT or REVOKE, no database privileges
    #[arg(long)]
    pub(crate) no_acl: bool,
}

/// Options every database task takes.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct CommonArgs {
    #[command(flatten)]
    pub(crate) connection: ConnectionArgs,
    #[command(flatten)]
    pub(crate) dir: DirArgs,
}

/// Where backups are, and how much to say: every task that touches backups.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct DirArgs {
    /// Backup directory, relative to the workspace root [env: BACKUP_DIR] [default: ./backups]
    #[arg(long, value_name = "DIR")]
    pub(crate) backup_dir: Option<PathBuf>,
    /// Print only errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub(crate) quiet: bool,
    /// Print more detail (the commands run, the settings' sources)
    #[arg(short, long, global = true)]
    pub(crate) verbose: bool,
}

/// `--type` of a backup: a tier, or `auto` to pick it by date.
fn type_or_auto() -> impl TypedValueParser<Value = TypeChoice> {
    PossibleValuesParser::new([
        PossibleValue::new("auto").help(
            "First backup of a calendar month: monthly; else first of an ISO week: weekly; else daily",
        ),
        PossibleValue::new("daily"),
        PossibleValue::new("weekly"),
        PossibleValue::new("monthly"),
    ])
    .try_map(|s| s.parse::<TypeChoice>())
}

/// `--type` where a tier narrows a choice.
fn format() -> impl TypedValueParser<Value = Format> {
    clap::builder::NonEmptyStringValueParser::new().try_map(|s| s.parse::<Format>())
}

fn tier() -> impl TypedValueParser<Value = BackupType> {
    PossibleValuesParser::new(["daily", "weekly", "monthly"]).try_map(|s| s.parse::<BackupType>())
}

#[derive(Debug, Clone, Args)]
pub(crate) struct DbBackup {
    #[command(flatten)]
    pub(crate) common: CommonArgs,
    /// Retention tier of this backup
    #[arg(
        long = "type",
        value_parser = type_or_auto(),
        default_value = "daily",
        value_name = "TYPE"
    )]
    pub(crate) kind: TypeChoice,
    /// Re-read the written backup and check its checksum, compressed stream and SQL structure
    #[arg(long)]
    pub(crate) verify: bool,
    /// Dump only the schema (no table data)
    #[arg(long)]
    pub(crate) schema_only: bool,
    /// Print one JSON object describing the result on stdout
    #[arg(long)]
    pub(crate) json: bool,
    /// Do not prune old backups after this one succeeds
    #[arg(long)]
    pub(crate) no_prune: bool,
    /// Keep the backup local even when BACKUP_S3_BUCKET is set
    #[arg(long, conflicts_with = "remote_only")]
    pub(crate) no_upload: bool,
    /// Stream straight to BACKUP_S3_BUCKET, with no local copy [env: BACKUP_LOCAL=false]
    #[arg(long)]
    pub(crate) remote_only: bool,
    /// The server's roles, memberships, role settings and tablespaces (pg_dumpall --globals-only)
    /// as a backup of their own, named {cluster}_globals_{type}_{timestamp}
    #[arg(long, conflicts_with_all = ["all", "schema_only"])]
    pub(crate) globals: bool,
    /// Every connectable database of the server and the globals, one backup set each
    /// (BACKUP_DATABASES and BACKUP_EXCLUDE_DATABASES, comma-separated, narrow it)
    #[arg(long)]
    pub(crate) all: bool,
    /// gzip level, 1 (fast) to 9 (small) [env: BACKUP_COMPRESSION_LEVEL] [default: 6]
    #[arg(long, value_name = "LEVEL", value_parser = clap::value_parser!(u32).range(1..=9))]
    pub(crate) compression_level: Option<u32>,
    /// gzip[:1-9], zstd[:1-19] (faster and smaller) or none [env: BACKUP_COMPRESSION]
    /// [default: gzip:6]
    #[arg(long, value_name = "CODEC[:LEVEL]")]
    pub(crate) compress: Option<String>,
    /// plain (SQL, .sql.gz), custom (pg_dump -Fc, .dump: restored with pg_restore -j) or
    /// directory (pg_dump -Fd -j, .dir/: dumped and restored in parallel)
    /// [env: BACKUP_FORMAT] [default: plain]
    #[arg(long, value_name = "FORMAT", value_parser = format())]
    pub(crate) format: Option<Format>,
    #[command(flatten)]
    pub(crate) jobs: JobsArgs,
    /// A physical backup of the compose service's whole server with pgBackRest (db-pitr enable
    /// first): full when no full backup is a week old, else incremental
    #[arg(long, conflicts_with_all = ["globals", "all", "schema_only", "format", "compress", "compression_level", "remote_only", "verify"])]
    pub(crate) physical: bool,
    /// With --physical: a full backup
    #[arg(long, requires = "physical", conflicts_with_all = ["diff", "incr"])]
    pub(crate) full: bool,
    /// With --physical: what changed since the last full backup
    #[arg(long, requires = "physical", conflicts_with = "incr")]
    pub(crate) diff: bool,
    /// With --physical: what changed since the last backup of any type
    #[arg(long, requires = "physical")]
    pub(crate) incr: bool,
}

/// `--jobs`.
#[derive(Debug, Clone, Args)]
pub(crate) struct JobsArgs {
    /// Threads that compress and read, and pg_dump's (directory format) and pg_restore's parallel jobs [env: BACKUP_JOBS]
    /// [default: one per core, at most 8]
    #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) jobs: Option<u16>,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct Demo {
    /// Print only errors and the result
    #[arg(short, long)]
    pub(crate) quiet: bool,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct DbList {
    #[command(flatten)]
    pub(crate) dir: DirArgs,
    /// Print the list as JSON on stdout
    #[arg(long)]
    pub(crate) json: bool,
    /// List the off-site copies (BACKUP_S3_BUCKET) instead
    #[arg(long)]
    pub(crate) remote: bool,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct DbVerify {
    #[command(flatten)]
    pub(crate) common: CommonArgs,
    /// The backup to check: a path, or a file name in BACKUP_DIR
    #[arg(value_name = "FILE", conflicts_with_all = ["latest", "all"])]
    pub(crate) file: Option<String>,
    /// Check the newest usable backup of the database (POSTGRES_DB or --dbname)
    #[arg(long, conflicts_with = "all")]
    pub(crate) latest: bool,
    /// Check every backup in BACKUP_DIR
    #[arg(long)]
    pub(crate) all: bool,
    /// With --latest: the newest of this tier
    #[arg(long = "type", value_parser = tier(), value_name = "TYPE", requires = "latest")]
    pub(crate) kind: Option<BackupType>,
    /// Also restore into a throwaway database on the server, compare row counts, and drop it
    #[arg(long)]
    pub(crate) restore_test: bool,
    #[command(flatten)]
    pub(crate) roles: RoleArgs,
    /// With --latest and backups of several servers in one store: the server's system
    /// identifier or host:port (as db-list --json shows them)
    #[arg(long, value_name = "SERVER", requires = "latest")]
    pub(crate) source: Option<String>,
    /// Check the off-site copies (BACKUP_S3_BUCKET), streamed, never stored
    #[arg(long)]
    pub(crate) remote: bool,
    /// Print the results as JSON on stdout
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct DbRestore {
    #[command(flatten)]
    pub(crate) common: CommonArgs,
    /// The backup to restore: a path, or a file name in BACKUP_DIR
    #[arg(value_name = "FILE", required_unless_present_any = ["latest", "list", "to_time", "to_latest"], conflicts_with = "latest")]
    pub(crate) file: Option<String>,
    /// Restore the newest usable backup of the database (decided by .meta, skipping failed ones)
    #[arg(long)]
    pub(crate) latest: bool,
    /// With --latest: the newest of this tier
    #[arg(long = "type", value_parser = tier(), value_name = "TYPE", requires = "latest")]
    pub(crate) kind: Option<BackupType>,
    /// Run every check and print the plan; touch nothing
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// With --latest and backups of several servers in one store: the server's system
    /// identifier or host:port (as db-list --json shows them)
    #[arg(long, value_name = "SERVER", requires = "latest")]
    pub(crate) source: Option<String>,
    /// Restore from the off-site copy (BACKUP_S3_BUCKET), streamed into the same checked load
    #[arg(long)]
    pub(crate) remote: bool,
    /// List the backups (as db-list) and exit
    #[arg(long)]
    pub(crate) list: bool,
    /// Restore into this database instead (created; replaced only with --yes)
    #[arg(long, value_name = "NAME", conflicts_with = "all")]
    pub(crate) target_db: Option<String>,
    /// Every database of the newest complete `db-backup --all` run, each all-or-nothing
    #[arg(long, requires = "latest", conflicts_with_all = ["table", "kind"])]
    pub(crate) all: bool,
    /// First create the roles and tablespaces of the newest globals backup that this server
    /// lacks (existing ones are never changed)
    #[arg(long)]
    pub(crate) with_globals: bool,
    #[command(flatten)]
    pub(crate) roles: RoleArgs,
    /// Only this table (schema.table; repeatable): its definition, data, indexes, constraints,
    /// triggers and what they depend on, into --target-db
    #[arg(long = "table", value_name = "TABLE", requires = "target_db")]
    pub(crate) table: Vec<String>,
    #[command(flatten)]
    pub(crate) jobs: JobsArgs,
    /// Replace an existing database without asking
    #[arg(short = 'y', long)]
    pub(crate) yes: bool,
    /// Drop the replaced database after success instead of keeping it as {db}_pre_restore_{timestamp} (_2, _3, ... after it when that name is taken)
    #[arg(long)]
    pub(crate) drop_previous: bool,
    /// Print one JSON object describing the result on stdout
    #[arg(long)]
    pub(crate) json: bool,
    /// Point-in-time recovery of the compose service's whole server to this moment, e.g.
    /// '2026-11-27 10:15:00+00' (pgBackRest: db-pitr enable, db-backup --physical); the old data
    /// is set aside
    #[arg(long, value_name = "TIME", conflicts_with_all = ["file", "latest", "list", "remote", "target_db", "all", "with_globals", "table", "drop_previous", "dry_run", "to_latest"])]
    pub(crate) to_time: Option<String>,
    /// Point-in-time recovery of the compose service's whole server to the end of the archived WAL
    #[arg(long, conflicts_with_all = ["file", "latest", "list", "remote", "target_db", "all", "with_globals", "table", "drop_previous", "dry_run"])]
    pub(crate) to_latest: bool,
}

#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Retention: BACKUP_RETENTION_DAILY (days, default 7), BACKUP_RETENTION_WEEKLY (weeks, 4), \
BACKUP_RETENTION_MONTHLY (months, 12), BACKUP_RETENTION_MIN (backups kept per database whatever their age, 1)."
)]
pub(crate) struct DbPrune {
    #[command(flatten)]
    pub(crate) dir: DirArgs,
    /// Show every backup with its verdict and the reason, delete nothing
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Apply the same policy to the off-site copies (BACKUP_S3_BUCKET)
    #[arg(long)]
    pub(crate) remote: bool,
    /// Print the verdicts as one JSON object on stdout
    #[arg(long)]
    pub(crate) json: bool,
}

impl ConnectionArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            host: self.host.clone(),
            port: self.port,
            dbname: self.dbname.clone(),
            user: self.user.clone(),
            via: self.via,
            ..Overrides::default()
        }
    }
}

impl CommonArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            backup_dir: self.dir.backup_dir.clone(),
            ..self.connection.overrides()
        }
    }
}

impl DirArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            backup_dir: self.backup_dir.clone(),
            ..Overrides::default()
        }
    }
}

impl Command {
    /// What this command's flags set, for the settings.
    pub(crate) fn overrides(&self) -> Overrides {
        match self {
            Command::DbBackup(a) => Overrides {
                compression_level: a.compression_level,
                compression: a.compress.clone(),
                format: a.format,
                jobs: a.jobs.jobs.map(usize::from),
                ..a.common.overrides()
            },
            Command::DbRestore(a) => Overrides {
                jobs: a.jobs.jobs.map(usize::from),
                ..a.common.overrides()
            },
            Command::DbVerify(a) => a.common.overrides(),
            Command::DbList(a) => a.dir.overrides(),
            Command::DbPrune(a) => a.dir.overrides(),
            Command::DbStatus(a) => Overrides {
                dbname: a.dbname.clone(),
                max_age: a.max_age.clone(),
                ..a.dir.overrides()
            },
            Command::DbClone(a) => a.connection.overrides(),
            Command::DbPsql(a) => a.connection.overrides(),
            Command::DbPitr(a) => a.dir.overrides(),
            Command::DbUp(_) | Command::DbDown(_) | Command::Demo(_) => Overrides::default(),
        }
    }

    /// `-q` and `-v`.
    pub(crate) fn verbosity(&self) -> (bool, bool) {
        match self {
            Command::DbBackup(a) => (a.common.dir.quiet, a.common.dir.verbose),
            Command::DbRestore(a) => (a.common.dir.quiet, a.common.dir.verbose),
            Command::DbVerify(a) => (a.common.dir.quiet, a.common.dir.verbose),
            Command::DbList(a) => (a.dir.quiet, a.dir.verbose),
            Command::DbPrune(a) => (a.dir.quiet, a.dir.verbose),
            Command::DbStatus(a) => (a.dir.quiet, a.dir.verbose),
            Command::DbClone(a) => (a.quiet, a.verbose),
            Command::DbPsql(a) => (false, a.verbose),
            Command::DbUp(a) => (a.quiet, false),
            Command::DbDown(a) => (a.quiet, false),
            Command::Demo(a) => (a.quiet, false),
            Command::DbPitr(a) => (a.dir.quiet, a.dir.verbose),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        super::Xtask::command().debug_assert();
    }

    /// Words of one shell command line: quotes, comments, pipes (each
    /// command of a pipeline is its own list). Enough for documentation.
    fn shell_commands(line: &str) -> Vec<Vec<String>> {
        let (mut commands, mut words, mut word) = (Vec::new(), Vec::new(), None::<String>);
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\'' | '"' => {
                    let w = word.get_or_insert_with(String::new);
                    for q in chars.by_ref() {
                        if q == c {
                            break;
                        }
                        w.push(q);
                    }
                }
                '#' if word.is_none() => break,
                '|' | ';' | '&' => {
                    words.extend(word.take());
                    if !words.is_empty() {
                        commands.push(std::mem::take(&mut words));
                    }
                }
                c if c.is_whitespace() => words.extend(word.take()),
                c => word.get_or_insert_with(String::new).push(c),
            }
        }
        words.extend(word);
        if !words.is_empty() {
            commands.push(words);
        }
        commands
    }

    /// Every `cargo xtask ...` in the README's and the operations docs' sh
    /// blocks is a command line this binary accepts.
    #[test]
    fn documented_commands_parse() {
        use clap::Parser;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut docs = vec![root.join("README.md")];
        for dir in ["docs", "docs/operations"] {
            for e in std::fs::read_dir(root.join(dir)).unwrap().flatten() {
                if e.path().extension().is_some_and(|x| x == "md") {
                    docs.push(e.path());
                }
            }
        }
        let mut checked = 0;
        for doc in docs {
            let text = std::fs::read_to_string(&doc).unwrap();
            for block in text.split("```sh\n").skip(1) {
                let block = block.split("```").next().unwrap().replace("\\\n", " ");
                for line in block.lines() {
                    for words in shell_commands(line) {
                        let Some(args) = words
                            .windows(2)
                            .position(|w| w[0] == "cargo" && w[1] == "xtask")
                            .map(|i| &words[i + 2..])
                        else {
                            continue;
                        };
                        let argv = std::iter::once("xtask").chain(args.iter().map(String::as_str));
                        if let Err(e) = super::Xtask::try_parse_from(argv)
                            && e.kind() != clap::error::ErrorKind::DisplayHelp
                        {
                            panic!("{}: `cargo xtask {}`: {e}", doc.display(), args.join(" "));
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 40, "only {checked} documented commands found");
    }
}
