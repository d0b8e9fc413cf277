//! Notifications after a backup: a command on success, a command on
//! failure, and a webhook for both, each given the same JSON payload. A hook
//! never blocks or fails the backup: it runs with a time limit, and what goes
//! wrong is reported as a warning, never as the backup's exit code.
//!
//! - `BACKUP_HOOK_SUCCESS` / `BACKUP_HOOK_FAILURE`: a command line run by
//!   `sh -c` (the operator's own command, as in a crontab), payload on stdin
//!   and the main fields in `BACKUP_HOOK_*` variables.
//! - `BACKUP_WEBHOOK_URL`: POSTed the payload as `application/json` with
//!   `curl`; the URL (often holding a token) goes to curl on stdin, never argv.
//! - `BACKUP_HOOK_TIMEOUT`: seconds per hook (default 30).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{Secret, Sources, number_setting};

/// What the hooks are told about a backup run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// `success` or `failure`.
    pub status: &'static str,
    pub database: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub file: Option<String>,
    pub path: Option<String>,
    pub size_bytes: Option<u64>,
    pub duration_seconds: Option<f64>,
    pub error: Option<String>,
    /// The machine the backup ran on.
    pub host: String,
    /// RFC 3339.
    pub at: String,
}

/// The configured hooks.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    pub on_success: Option<String>,
    pub on_failure: Option<String>,
    pub webhook: Option<Secret>,
    pub timeout: Duration,
}

impl Hooks {
    pub fn from_sources(sources: &Sources) -> anyhow::Result<Hooks> {
        let get = |k: &str| sources.get(k).map(|(v, _)| v);
        let secs = number_setting(
            sources,
            "BACKUP_HOOK_TIMEOUT",
            None,
            30u64,
            "a number of seconds from 1 to 3600",
            |s| (1..=3600).contains(s),
        )?;
        let webhook = get("BACKUP_WEBHOOK_URL");
        if let Some(url) = &webhook
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            anyhow::bail!(
                "BACKUP_WEBHOOK_URL is not an http:// or https:// URL: set it to the address to POST to"
            );
        }
        Ok(Hooks {
            on_success: get("BACKUP_HOOK_SUCCESS"),
            on_failure: get("BACKUP_HOOK_FAILURE"),
            webhook: webhook.map(Secret::new),
            timeout: Duration::from_secs(secs),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.on_success.is_none() && self.on_failure.is_none() && self.webhook.is_none()
    }

    /// Runs the hooks for `event`; returns one line per hook that failed.
    pub fn run(&self, event: &Event) -> Vec<String> {
        let payload = serde_json::to_string(event).expect("an event always serializes");
        let mut problems = Vec::new();
        let command = match event.status {
            "success" => self.on_success.as_ref().map(|c| ("BACKUP_HOOK_SUCCESS", c)),
            _ => self.on_failure.as_ref().map(|c| ("BACKUP_HOOK_FAILURE", c)),
        };
        if let Some((name, command)) = command
            && let Err(e) = run_command(command, event, &payload, self.timeout)
        {
            problems.push(format!("the {name} hook failed ({e})"));
        }
        if let Some(url) = &self.webhook
            && let Err(e) = post(url, &payload, self.timeout)
        {
            problems.push(format!("the webhook (BACKUP_WEBHOOK_URL) failed ({e})"));
        }
        problems
    }
}

/// Waits for `child` until `timeout`, then kills it. Returns its output.
fn wait_with_timeout(
    mut child: std::process::Child,
    timeout: Duration,
) -> Result<(std::process::ExitStatus, String), String> {
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok((status, reader.join().unwrap_or_default())),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "still running after {} s; stopped",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

fn run_command(
    command: &str,
    event: &Event,
    payload: &str,
    timeout: Duration,
) -> Result<(), String> {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env("BACKUP_HOOK_STATUS", event.status)
        .env("BACKUP_HOOK_DATABASE", &event.database)
        .env("BACKUP_HOOK_TYPE", &event.kind)
        .env("BACKUP_HOOK_FILE", event.path.as_deref().unwrap_or(""))
        .env("BACKUP_HOOK_ERROR", event.error.as_deref().unwrap_or(""));
    let mut child = c.spawn().map_err(|e| format!("cannot run sh: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine: ignore a broken pipe.
        let _ = stdin.write_all(payload.as_bytes());
    }
    let (status, stderr) = wait_with_timeout(child, timeout)?;
    if status.success() {
        Ok(())
    } else {
        let line = first_line(&stderr);
        Err(if line.is_empty() {
            status.to_string()
        } else {
            format!("{status}: {line}")
        })
    }
}

/// Pure: curl's config (read from stdin with `--config -`) for one POST.
pub fn curl_config(url: &str, payload: &str) -> String {
    let quote = |s: &str| {
        let mut q = String::from("\"");
        for c in s.chars() {
            match c {
                '\\' => q.push_str("\\\\"),
                '"' => q.push_str("\\\""),
                '\n' => q.push_str("\\n"),
                '\r' => q.push_str("\\r"),
                '\t' => q.push_str("\\t"),
                c => q.push(c),
            }
        }
        q.push('"');
        q
    };
    format!(
        "url = {}\nheader = \"Content-Type: application/json\"\ndata-binary = {}\n",
        quote(url),
        quote(payload)
    )
}

fn post(url: &Secret, payload: &str, timeout: Duration) -> Result<(), String> {
    let mut child = Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--fail",
            "--proto",
            "=http,https",
        ])
        .args([
            "--max-time",
            &timeout.as_secs().to_string(),
            "--config",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run curl: {e}; install curl"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(curl_config(url.expose(), payload).as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let (status, stderr) = wait_with_timeout(child, timeout + Duration::from_secs(5))?;
    if status.success() {
        return Ok(());
    }
    // curl names the host, not the path; still, never repeat the URL.
    Err(first_line(&stderr).replace(url.expose(), "<BACKUP_WEBHOOK_URL>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curl_config_quotes_everything() {
        let cfg = curl_config(
            "https://hooks.example/T0/secret",
            r#"{"error":"a \"quoted\" C:\path"}"#,
        );
        assert_eq!(
            cfg,
            "url = \"https://hooks.example/T0/secret\"\nheader = \"Content-Type: application/json\"\ndata-binary = \"{\\\"error\\\":\\\"a \\\\\\\"quoted\\\\\\\" C:\\\\path\\\"}\"\n"
        );
    }

    #[test]
    fn a_failing_or_slow_command_is_reported_not_raised() {
        let event = Event {
            status: "success",
            database: "app".into(),
            kind: "daily".into(),
            file: None,
            path: None,
            size_bytes: None,
            duration_seconds: None,
            error: None,
            host: "h".into(),
            at: "2026-11-24T00:00:00Z".into(),
        };
        let hooks = Hooks {
            on_success: Some("echo bad >&2; exit 7".into()),
            timeout: Duration::from_secs(5),
            ..Hooks::default()
        };
        assert_eq!(
            hooks.run(&event),
            ["the BACKUP_HOOK_SUCCESS hook failed (exit status: 7: bad)"]
        );
        let slow = Hooks {
            on_success: Some("sleep 5".into()),
            timeout: Duration::from_secs(1),
            ..Hooks::default()
        };
        let t = Instant::now();
        assert_eq!(
            slow.run(&event),
            ["the BACKUP_HOOK_SUCCESS hook failed (still running after 1 s; stopped)"]
        );
        assert!(t.elapsed() < Duration::from_secs(3));
        let reads = Hooks {
            on_success: Some(
                r#"grep -q '"status":"success"' && test "$BACKUP_HOOK_DATABASE" = app"#.into(),
            ),
            timeout: Duration::from_secs(5),
            ..Hooks::default()
        };
        assert!(reads.run(&event).is_empty());
    }
}
