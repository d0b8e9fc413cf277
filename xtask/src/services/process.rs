//! The one way this tool starts a program: a [`ToolCommand`] (program,
//! arguments, environment, directory) run to completion, read as a stream,
//! or written to as a stream. Values that may be secret go in the
//! environment, never in argv, and `Debug` shows only their names. A
//! program that cannot start is named in the error: on the compose route
//! that is `docker`, not the PostgreSQL tool it was to run.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;

use crate::services::interrupt;

/// A program's command line, environment and working directory.
#[derive(Clone)]
pub(crate) struct ToolCommand {
    pub(crate) program: OsString,
    pub(crate) args: Vec<OsString>,
    pub(crate) env: Vec<(&'static str, String)>,
    pub(crate) dir: Option<PathBuf>,
    /// Start it in a process group of its own (so it can be ended with all it starts).
    pub(crate) new_group: bool,
}

/// The environment's values are never shown: they may hold a password.
impl fmt::Debug for ToolCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolCommand")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("env", &self.env.iter().map(|(k, _)| *k).collect::<Vec<_>>())
            .field("dir", &self.dir)
            .finish()
    }
}

/// A program that could not be started.
#[derive(Debug)]
pub(crate) struct SpawnError {
    pub(crate) program: String,
    pub(crate) error: io::Error,
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.error.kind() == io::ErrorKind::NotFound {
            write!(f, "{} was not found on PATH", self.program)
        } else {
            write!(f, "cannot run {} ({})", self.program, self.error)
        }
    }
}

impl std::error::Error for SpawnError {}

/// What a finished program left: its status, stdout and stderr.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: String,
}

impl ToolCommand {
    pub(crate) fn new(program: impl Into<OsString>) -> ToolCommand {
        ToolCommand {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            dir: None,
            new_group: false,
        }
    }

    pub(crate) fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The program's name, for messages.
    pub(crate) fn name(&self) -> String {
        std::path::Path::new(&self.program)
            .file_name()
            .unwrap_or(self.program.as_os_str())
            .to_string_lossy()
            .into_owned()
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        if let Some(dir) = &self.dir {
            c.current_dir(dir);
        }
        if self.new_group {
            std::os::unix::process::CommandExt::process_group(&mut c, 0);
        }
        c
    }

    /// Starts it; stderr is always piped (and drained by whoever takes it).
    pub(crate) fn spawn(&self, stdin: Stdio, stdout: Stdio) -> Result<Child, SpawnError> {
        self.command()
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| SpawnError {
                program: self.name(),
                error,
            })
    }

    /// Runs it on this terminal (stdin, stdout and stderr are ours) to the end.
    pub(crate) fn run_here(&self) -> Result<ExitStatus, SpawnError> {
        let spawn_error = |error| SpawnError {
            program: self.name(),
            error,
        };
        self.command()
            .spawn()
            .map_err(spawn_error)?
            .wait()
            .map_err(spawn_error)
    }

    /// Runs it to the end with `input` on stdin (written from a thread, so a
    /// program that talks while it reads cannot block).
    pub(crate) fn output(&self, input: &[u8]) -> Result<Finished, SpawnError> {
        self.output_until(input, None)
    }

    /// [`ToolCommand::output`], and a program still running at `deadline`
    /// is killed: an error of kind `TimedOut`.
    pub(crate) fn output_until(
        &self,
        input: &[u8],
        deadline: Option<std::time::Instant>,
    ) -> Result<Finished, SpawnError> {
        let mut child = self.spawn(Stdio::piped(), Stdio::piped())?;
        let stderr = drain(child.stderr.take().expect("stderr is piped"));
        let stdout = drain(child.stdout.take().expect("stdout is piped"));
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            // A program that exits without reading all of it is not our error.
            let _ = stdin.write_all(&input);
        });
        let status = match deadline {
            None => child.wait(),
            Some(deadline) => loop {
                match child.try_wait() {
                    Ok(Some(status)) => break Ok(status),
                    Ok(None) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    Ok(None) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in time"));
                    }
                    Err(e) => break Err(e),
                }
            },
        }
        .map_err(|error| SpawnError {
            program: self.name(),
            error,
        })?;
        let _ = writer.join();
        Ok(Finished {
            status,
            stdout: stdout.join().unwrap_or_default(),
            stderr: String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned(),
        })
    }

    /// Starts it with its stdout to read as a stream (and nothing on stdin).
    pub(crate) fn reader(&self) -> Result<ChildReader, SpawnError> {
        let mut child = self.spawn(Stdio::null(), Stdio::piped())?;
        let stderr = drain(child.stderr.take().expect("stderr is piped"));
        let stdout = child.stdout.take().expect("stdout is piped");
        Ok(ChildReader {
            child,
            stdout,
            stderr: Some(stderr),
            on_signal: None,
        })
    }
}

/// Reads a stream to its end on a thread of its own.
pub(crate) fn drain(mut stream: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = stream.read_to_end(&mut all);
        all
    })
}

/// A running program whose stdout is read as a stream; its stderr is kept.
pub(crate) struct ChildReader {
    child: Child,
    stdout: ChildStdout,
    stderr: Option<JoinHandle<Vec<u8>>>,
    /// What a signal does to the program while it runs; ended before the
    /// program is reaped (see [`interrupt::OnSignal`]).
    on_signal: Option<interrupt::OnSignal>,
}

impl Read for ChildReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stdout.read(buf)
    }
}

impl ChildReader {
    /// Waits for the program to end (after its stdout ended): its status and stderr.
    pub(crate) fn finish(mut self) -> io::Result<(ExitStatus, String)> {
        self.on_signal = None;
        let status = self.child.wait()?;
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        Ok((status, String::from_utf8_lossy(&stderr).into_owned()))
    }

    /// From now until it is reaped, a signal this process notes runs `stop`
    /// (given the program's pid).
    pub(crate) fn on_signal(mut self, stop: impl FnOnce(u32) + Send + 'static) -> ChildReader {
        let pid = self.child.id();
        self.on_signal = Some(interrupt::on_signal(move || stop(pid)));
        self
    }

    /// Stops the program now.
    pub(crate) fn kill(&mut self) {
        self.on_signal = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildReader {
    fn drop(&mut self) {
        self.on_signal = None;
        // Never leave a program running behind a reader nobody reads.
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_is_named() {
        let err = ToolCommand::new("/nonexistent/docker")
            .output(b"")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "docker was not found on PATH");
    }

    #[test]
    fn a_program_past_its_deadline_is_stopped() {
        let start = std::time::Instant::now();
        let err = ToolCommand::new("sleep")
            .args(["30"])
            .output_until(b"", Some(start + std::time::Duration::from_millis(200)))
            .unwrap_err();
        assert_eq!(err.error.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn debug_hides_the_environment() {
        let mut c = ToolCommand::new("psql");
        c.env.push(("PGPASSWORD", "hunter2".into()));
        let shown = format!("{c:?}");
        assert!(
            shown.contains("PGPASSWORD") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn streams_and_output() {
        let out = ToolCommand::new("sh")
            .args(["-c", "cat; echo err >&2; exit 3"])
            .output(b"in")
            .unwrap();
        assert_eq!(
            (
                out.status.code(),
                out.stdout.as_slice(),
                out.stderr.as_str()
            ),
            (Some(3), &b"in"[..], "err\n")
        );
        let mut r = ToolCommand::new("sh")
            .args(["-c", "echo streamed"])
            .reader()
            .unwrap();
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "streamed\n");
        assert!(r.finish().unwrap().0.success());
    }
}
