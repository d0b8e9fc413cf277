//! Developer helpers around the compose service: `db-up`, `db-down`, and
//! `db-psql` (psql by the same route the other tasks take).

use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use crate::flags::{DbDown, DbPsql, DbUp};
use crate::services::compose::{Compose, ComposeError};
use crate::services::pg;
use crate::tasks::Context;
use crate::ui;

fn compose_and_service(ctx: &Context) -> anyhow::Result<(Compose, String)> {
    let compose = Compose::detect(&ctx.settings.root)?;
    Ok((compose, ctx.settings.compose_service.clone()))
}

pub(crate) fn up(args: DbUp, ctx: &Context) -> anyhow::Result<ExitCode> {
    let settings = &ctx.settings;
    let (compose, service) = compose_and_service(ctx)?;
    compose.up(&service, args.quiet)?;
    compose
        .wait_healthy(&service, Duration::from_secs(args.timeout))
        .map_err(|e| match e {
            ComposeError::NotHealthyYet { .. } => {
                anyhow::format_err!("{e}, or wait longer with --timeout")
            }
            e => e.into(),
        })?;
    let published = compose
        .published(&service, 5432)
        .map(|p| format!(", published on {p}"))
        .unwrap_or_default();
    ui::info(format!(
        "the compose service '{service}' is up{published}: database '{}' (try `cargo xtask db-psql`)",
        settings.connection.dbname
    ));
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn down(_: DbDown, ctx: &Context) -> anyhow::Result<ExitCode> {
    let (compose, service) = compose_and_service(ctx)?;
    compose.stop(&service)?;
    ui::info(format!(
        "stopped the compose service '{service}'; its data volume is kept (`docker compose down --volumes` deletes it)"
    ));
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn psql(args: DbPsql, ctx: &Context) -> anyhow::Result<ExitCode> {
    let route = pg::route(&ctx.settings)?;
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let psql_args: Vec<OsString> = args.args.iter().map(OsString::from).collect();
    let tool = route
        .client
        .command_with("psql", &psql_args, &route.conn, interactive);
    ui::detail(format!(
        "{} on {}",
        route.client.describe("psql"),
        route.conn.display_target()
    ));
    let status = tool
        .run_here()
        .map_err(|e| route.client.spawn_error("psql", e))?;
    // psql's own exit code: 1 fatal, 2 connection lost, 3 script error.
    Ok(ExitCode::from(
        status.code().unwrap_or(1).clamp(0, 255) as u8
    ))
}
