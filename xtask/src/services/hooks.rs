//! Notifications after a backup: a command on success, a command on
//! failure, and a webhook for both, each given the same JSON payload. A hook
//! never blocks or fails the backup: it runs with a time limit, and what goes
//! wrong is reported as a warning, never as the backup's exit code.
//!
//! - `BACKUP_HOOK_SUCCESS` / `BACKUP_HOOK_FAILURE`: a command line run by
//!   `sh -c` (the operator's own command, as in a crontab), payload on stdin
//!   and the main fields in `BACKUP_HOOK_*` variables. It runs in a process
//!   group of its own: the time limit ends everything it started.
//! - `BACKUP_WEBHOOK_URL`: POSTed the payload as `application/json`; the URL
//!   (often holding a token) never appears in output.
//! - `BACKUP_HOOK_TIMEOUT`: seconds per hook (default 30).

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::core::config::{HookConfig, Secret};
use crate::services::process::{ToolCommand, drain};

/// Whether the run the hooks hear about succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Success,
    Failure,
}

/// What the hooks are told about a backup run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Event {
    pub(crate) status: Status,
    pub(crate) database: String,
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) file: Option<String>,
    pub(crate) path: Option<String>,
    pub(crate) size_bytes: Option<u64>,
    pub(crate) duration_seconds: Option<f64>,
    pub(crate) error: Option<String>,
    /// The machine the backup ran on.
    pub(crate) host: String,
    /// RFC 3339.
    pub(crate) at: String,
}

impl Event {
    /// A run's event with what every event has; the rest is filled in by the caller.
    pub(crate) fn new(status: Status, database: &str, kind: &str, error: Option<String>) -> Event {
        Event {
            status,
            database: database.to_string(),
            kind: kind.to_string(),
            file: None,
            path: None,
            size_bytes: None,
            duration_seconds: None,
            error,
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
            at: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        }
    }
}

/// Runs the hooks for `event`; returns one line per hook that failed.
pub(crate) fn run(hooks: &HookConfig, event: &Event) -> Vec<String> {
    let payload = serde_json::to_string(event).expect("an event always serializes");
    let mut problems = Vec::new();
    let command = match event.status {
        Status::Success => hooks
            .on_success
            .as_ref()
            .map(|c| ("BACKUP_HOOK_SUCCESS", c)),
        Status::Failure => hooks
            .on_failure
            .as_ref()
            .map(|c| ("BACKUP_HOOK_FAILURE", c)),
    };
    if let Some((name, command)) = command
        && let Err(e) = run_command(command, event, &payload, hooks.timeout)
    {
        problems.push(format!("the {name} hook failed ({e})"));
    }
    if let Some(url) = &hooks.webhook
        && let Err(e) = post(url, &payload, hooks.timeout)
    {
        problems.push(format!("the webhook (BACKUP_WEBHOOK_URL) failed ({e})"));
    }
    problems
}

fn run_command(
    command: &str,
    event: &Event,
    payload: &str,
    timeout: Duration,
) -> Result<(), String> {
    let status = match event.status {
        Status::Success => "success",
        Status::Failure => "failure",
    };
    let mut c = ToolCommand::new("sh").args(["-c", command]);
    c.env = vec![
        ("BACKUP_HOOK_STATUS", status.into()),
        ("BACKUP_HOOK_DATABASE", event.database.clone()),
        ("BACKUP_HOOK_TYPE", event.kind.clone()),
        ("BACKUP_HOOK_FILE", event.path.clone().unwrap_or_default()),
        ("BACKUP_HOOK_ERROR", event.error.clone().unwrap_or_default()),
    ];
    c.new_group = true;
    let mut child = c
        .spawn(Stdio::piped(), Stdio::null())
        .map_err(|e| e.to_string())?;
    let (tx, stderr) = std::sync::mpsc::channel();
    let pipe = child.stderr.take().expect("stderr is piped");
    let reader = drain(pipe);
    std::thread::spawn(move || tx.send(reader.join().unwrap_or_default()));
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine: ignore a broken pipe.
        let _ = stdin.write_all(payload.as_bytes());
    }
    let deadline = Instant::now() + timeout;
    // The whole group: what a hook leaves in the background holds the run otherwise.
    // SAFETY: kill(2) with a negative pid signals that process group only.
    let kill_group = |pid: u32| unsafe {
        libc::kill(-(pid as i32), libc::SIGKILL);
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                kill_group(child.id());
                let _ = child.wait();
                return Err(format!(
                    "still running after {} s; stopped",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(e.to_string()),
        }
    };
    // Its stderr ends when everything it started has ended, or at the deadline.
    let stderr = match stderr.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(bytes) => bytes,
        Err(_) => {
            kill_group(child.id());
            stderr
                .recv_timeout(Duration::from_secs(1))
                .unwrap_or_default()
        }
    };
    let stderr = String::from_utf8_lossy(&stderr).into_owned();
    if status.success() {
        return Ok(());
    }
    match stderr.lines().map(str::trim).find(|l| !l.is_empty()) {
        Some(line) => Err(format!("{status}: {line}")),
        None => Err(status.to_string()),
    }
}

/// POSTs the payload; errors name the status or the kind of failure, never the URL.
fn post(url: &Secret, payload: &str, timeout: Duration) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let response = agent
        .post(url.expose())
        .header("content-type", "application/json")
        .send(payload)
        .map_err(|e| match e {
            ureq::Error::Timeout(_) => "timed out".to_string(),
            ureq::Error::HostNotFound => "unknown host".to_string(),
            ureq::Error::Io(io) => io.kind().to_string(),
            ureq::Error::ConnectionFailed => "connection failed".to_string(),
            _ => "the request failed".to_string(),
        })?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", status.as_u16()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event {
            status: Status::Success,
            database: "app".into(),
            kind: "daily".into(),
            file: None,
            path: None,
            size_bytes: None,
            duration_seconds: None,
            error: None,
            host: "h".into(),
            at: "2026-11-24T00:00:00Z".into(),
        }
    }

    fn hooks(on_success: &str, secs: u64) -> HookConfig {
        HookConfig {
            on_success: Some(on_success.into()),
            timeout: Duration::from_secs(secs),
            ..HookConfig::default()
        }
    }

    #[test]
    fn a_failing_or_slow_command_is_reported_not_raised() {
        assert_eq!(
            run(&hooks("echo bad >&2; exit 7", 5), &event()),
            ["the BACKUP_HOOK_SUCCESS hook failed (exit status: 7: bad)"]
        );
        let t = Instant::now();
        assert_eq!(
            run(&hooks("sleep 5", 1), &event()),
            ["the BACKUP_HOOK_SUCCESS hook failed (still running after 1 s; stopped)"]
        );
        assert!(t.elapsed() < Duration::from_secs(3));
        assert!(
            run(
                &hooks(
                    r#"grep -q '"status":"success"' && test "$BACKUP_HOOK_DATABASE" = app"#,
                    5
                ),
                &event()
            )
            .is_empty()
        );
    }

    #[test]
    fn the_time_limit_ends_what_the_hook_left_behind() {
        let t = Instant::now();
        let problems = run(&hooks("sleep 600 & sleep 600", 1), &event());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
        // And a backgrounded child that outlives its shell does not hold us either.
        let t = Instant::now();
        assert!(run(&hooks("sleep 600 &", 2), &event()).is_empty());
        assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    }
}
