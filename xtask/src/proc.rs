//! Small process, network and timing helpers shared by the commands.

use std::ffi::OsStr;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Prints a progress line on stderr, so that stdout stays usable for output
/// a caller may want to capture (e.g. `cargo xtask services`).
pub fn step(msg: impl AsRef<str>) {
    eprintln!("==> {}", msg.as_ref());
}

pub fn warn(msg: impl AsRef<str>) {
    eprintln!("xtask: warning: {}", msg.as_ref());
}

/// A shell-like rendering of a command, for error messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(OsStr::to_string_lossy).collect::<Vec<_>>().join(" ")
}

/// Runs a command and fails unless it succeeds. Its stdout goes to our
/// stderr: tool chatter (pip, pg_ctlcluster) must not end up in output that
/// callers capture, such as `eval "$(cargo xtask services)"`.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = status(cmd.stdout(std::io::stderr()))?;
    if !status.success() {
        bail!("`{}` failed ({status})", describe(cmd));
    }
    Ok(())
}

/// Runs a command with inherited stdio and returns its exit status.
pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    cmd.status().with_context(|| format!("could not run `{}`", describe(cmd)))
}

/// Runs a command silently and reports only whether it succeeded; a missing
/// program counts as failure.
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Runs a command and returns its trimmed stdout; stderr is included in the
/// error when it fails.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("could not run `{}`", describe(cmd)))?;
    if !out.status.success() {
        bail!("`{}` failed ({}): {}", describe(cmd), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Runs a command with inherited stdio and passes its exit code on as ours: the code a shell
/// would report (its own, or 128 + signal number when it was killed); a code outside 0..=255
/// can't be represented and becomes a plain failure.
pub fn run_for_exit_code(cmd: &mut Command) -> Result<ExitCode> {
    let status = status(cmd)?;
    let code = status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1);
    Ok(u8::try_from(code).map_or(ExitCode::FAILURE, ExitCode::from))
}

/// Sends a signal (e.g. "TERM") with the `kill` utility. std has no safe way
/// to signal an arbitrary pid and the workspace forbids `unsafe`, so this
/// shells out instead of pulling in libc/nix. A negative pid addresses a
/// whole process group.
pub fn send_signal(pid: i64, signal: &str) -> bool {
    succeeds(Command::new("kill").args(["-s", signal, "--", &pid.to_string()]))
}

/// A `kB` field of `/proc/<pid>/status` ("VmRSS", "VmHWM", ...), if the process and field exist.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.strip_prefix(field).is_some_and(|rest| rest.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU seconds process `pid` has used so far (at the usual 100 ticks per
/// second), 0 if it cannot be read.
pub fn cpu_seconds(pid: u32) -> f64 {
    let fields = stat_fields(pid).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// The fields of `/proc/<pid>/stat` after the parenthesised command name (which may hold
/// spaces): `[0]` is the state, `[11]` and `[12]` utime and stime in clock ticks.
pub fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Whether `addr` ("host:port") accepts a TCP connection right now.
pub fn tcp_reachable(addr: &str) -> bool {
    let Ok(addrs) = addr.to_socket_addrs() else {
        return false;
    };
    addrs.into_iter().any(|a| TcpStream::connect_timeout(&a, Duration::from_millis(500)).is_ok())
}

/// Polls `check` until it returns true, failing once `timeout` has passed.
/// Every wait in xtask goes through here so that none can hang forever.
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(200).min(deadline - now));
    }
}

/// Looks a program up in PATH, like `command -v`.
pub fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields_of_this_process_are_read() {
        let me = std::process::id();
        assert!(status_kib(me, "VmRSS").is_some_and(|kib| kib > 0));
        assert!(status_kib(me, "VmRS").is_none(), "a prefix of a field name is not the field");
        let fields = stat_fields(me).expect("own stat");
        // The process's main thread may be waiting on the test thread: running or sleeping.
        assert!(matches!(fields[0].as_str(), "R" | "S"), "state of a live process: {fields:?}");
        assert!(fields[11].parse::<u64>().is_ok() && fields[12].parse::<u64>().is_ok(), "utime and stime: {fields:?}");
        assert!(stat_fields(u32::MAX).is_none());
    }
}
