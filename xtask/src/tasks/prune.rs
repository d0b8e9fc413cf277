//! `cargo xtask db-prune`: applies the retention decision (`core::retention`)
//! to the backup directory, or with `--remote` to the off-site copy. The
//! same decision runs after every successful `db-backup`.

use std::fmt::Write as _;
use std::process::ExitCode;

use serde_json::json;
use time::OffsetDateTime;

use crate::core::human;
use crate::core::retention::Policy;
use crate::flags::DbPrune;
use crate::services::catalog::{self, Backups, PruneReport};
use crate::services::fsutil;
use crate::tasks::Context;
use crate::ui;

/// The table people read: every backup, newest first, its verdict and why.
fn render(report: &PruneReport) -> String {
    let mut out = String::new();
    let verdict = |delete: bool| match (delete, report.dry_run) {
        (true, true) => "delete",
        (true, false) => "deleted",
        (false, _) => "keep",
    };
    let width = report
        .rows
        .iter()
        .map(|r| r.file.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let _ = writeln!(
        out,
        "{:<8} {:<width$}  {:<7}  {:>8}  {:>9}  REASON",
        "VERDICT", "BACKUP", "TYPE", "AGE", "SIZE"
    );
    for r in report.rows.iter().rev() {
        let _ = writeln!(
            out,
            "{:<8} {:<width$}  {:<7}  {:>8}  {:>9}  {}",
            verdict(r.delete),
            r.file,
            r.kind,
            human::age(time::Duration::seconds(r.age_seconds)),
            human::bytes(r.size_bytes),
            r.reason_text
        );
    }
    if !report.foreign.is_empty() {
        let _ = writeln!(
            out,
            "left alone (not made by this tool): {}",
            report.foreign.join(", ")
        );
    }
    let action = if report.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    let _ = writeln!(
        out,
        "{action} {} of {} backups, {}",
        report.deleted(),
        report.rows.len(),
        human::bytes(report.freed_bytes())
    );
    out
}

fn to_json(report: &PruneReport, policy: &Policy, now: OffsetDateTime) -> serde_json::Value {
    json!({
        "dry_run": report.dry_run,
        "now": now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "policy": {
            "daily_days": policy.daily_days,
            "weekly_weeks": policy.weekly_weeks,
            "monthly_months": policy.monthly_months,
            "min_keep": policy.min_keep,
        },
        "backups": report.rows.iter().rev().collect::<Vec<_>>(),
        "foreign": report.foreign,
        "deleted": report.deleted(),
        "freed_bytes": report.freed_bytes(),
    })
}

pub(crate) fn run(args: DbPrune, ctx: &Context) -> anyhow::Result<ExitCode> {
    let settings = &ctx.settings;
    let policy = &settings.retention;
    let now = settings.now_or(OffsetDateTime::now_utc());
    ui::detail(format!(
        "backup_dir: {} (from {})",
        settings.backup_dir.display(),
        settings.origin("backup_dir")
    ));
    let backups = Backups::open(settings, args.remote)?;
    let store = backups.store();
    if backups.is_remote() {
        ui::detail(format!(
            "pruning the off-site copies in {}",
            store.location()
        ));
    }
    let report = catalog::prune(store.as_ref(), policy, now, args.dry_run)?;
    if !args.dry_run && !backups.is_remote() {
        for path in fsutil::remove_stale_partials(&settings.backup_dir).unwrap_or_default() {
            ui::detail(format!(
                "removed the leftover of an interrupted run: {}",
                path.display()
            ));
        }
    }
    if args.json {
        println!("{}", to_json(&report, policy, now));
    } else if ui::verbosity() >= ui::Verbosity::Normal || args.dry_run {
        print!("{}", render(&report));
    }
    Ok(ExitCode::SUCCESS)
}
