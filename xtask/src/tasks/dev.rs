//! Developer helpers around the compose service: `db-up`, `db-down`, and
//! `db-psql` (psql by the same route the other tasks take).

use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::compose::Compose;
use crate::config::Settings;
use crate::flags::{CommonArgs, DbDown, DbPsql, DbUp};
use crate::pg;
use crate::tasks::Context;
use crate::ui;

fn compose_and_service(ctx: &Context) -> anyhow::Result<(Compose, String, Settings)> {
    let settings = Settings::resolve(&CommonArgs::default(), &ctx.sources, &ctx.root)?;
    let compose = Compose::detect(&ctx.root)?;
    Ok((compose, settings.compose_service.clone(), settings))
}

pub fn up(args: DbUp, ctx: &Context) -> anyhow::Result<ExitCode> {
    ui::set_verbosity(args.quiet, false);
    let (compose, service, settings) = compose_and_service(ctx)?;
    compose.up(&service, args.quiet)?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    loop {
        let state = compose.state(&service)?.unwrap_or_default();
        match state.as_str() {
            "running healthy" | "running" => break,
            s if s.starts_with("exited") || s.starts_with("dead") || s.contains("unhealthy") => {
                bail!(
                    "the compose service '{service}' did not start ({s}): see `docker compose logs {service}`"
                )
            }
            s if Instant::now() > deadline => bail!(
                "the compose service '{service}' is not healthy after {} s ({}): see `docker compose logs {service}`, or wait longer with --timeout",
                args.timeout,
                if s.is_empty() { "no container" } else { s }
            ),
            _ => std::thread::sleep(Duration::from_millis(250)),
        }
    }
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

pub fn down(args: DbDown, ctx: &Context) -> anyhow::Result<ExitCode> {
    ui::set_verbosity(args.quiet, false);
    let (compose, service, _) = compose_and_service(ctx)?;
    compose.stop(&service)?;
    ui::info(format!(
        "stopped the compose service '{service}'; its data volume is kept (`docker compose down --volumes` deletes it)"
    ));
    Ok(ExitCode::SUCCESS)
}

pub fn psql(args: DbPsql, ctx: &Context) -> anyhow::Result<ExitCode> {
    ui::set_verbosity(false, args.verbose);
    let common = CommonArgs {
        connection: args.connection.clone(),
        ..CommonArgs::default()
    };
    let settings = Settings::resolve(&common, &ctx.sources, &ctx.root)?;
    let route = pg::route(&ctx.sh, &settings)?;
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
    let status = tool.std().status().map_err(|_| pg::PgError::ToolMissing {
        tool: "psql".into(),
    })?;
    // psql's own exit code: 1 fatal, 2 connection lost, 3 script error.
    Ok(ExitCode::from(
        status.code().unwrap_or(1).clamp(0, 255) as u8
    ))
}
