//! What every `cargo xtask bench` benchmark needs: a fresh database migrated by the release
//! `catalogctl`, release services run as child processes that are stopped however the
//! benchmark ends, an admin account and its bearer token, percentiles, and the benchmark's own
//! section of BENCHMARKS.md.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sqlx::postgres::PgPoolOptions;

use crate::postgres::DbUrl;
use crate::proc::{self, step};
use crate::workspace::{root, target_dir};
use crate::Backends;

/// Signs the tokens of every service a benchmark starts (at least 32 bytes, as required).
pub const JWT_SECRET: &str = "bench-secret-bench-secret-bench-secret";
const ADMIN_USERNAME: &str = "bench";
const ADMIN_PASSWORD: &str = "bench-password";
/// How long a started service gets to open its port.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(20);

/// Where `cargo xtask bench` has just built the release binaries.
pub fn release_binary(name: &str) -> PathBuf {
    target_dir().join("release").join(name)
}

/// Drops and recreates database `name` on the server of DATABASE_URL, applies the migrations
/// with `catalogctl migrate`, and returns its URL.
pub async fn fresh_database(backends: &Backends, name: &str) -> Result<String> {
    let base = DbUrl::parse(&backends.database_url)?;
    let pool = PgPoolOptions::new().max_connections(1).connect(&base.with_database("postgres")).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&pool).await?;
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&pool).await?;
    pool.close().await;
    let url = base.with_database(name);
    let status = Command::new(release_binary("catalogctl"))
        .args(["--database-url", &url, "migrate"])
        .stdout(Stdio::null())
        .status()
        .context("running catalogctl migrate")?;
    anyhow::ensure!(status.success(), "catalogctl migrate failed");
    Ok(url)
}

/// A release service running as a child process. Dropping it kills the process, so an early
/// return or a panic never leaves one behind; `stop` is the graceful way (SIGTERM, then wait).
pub struct Service {
    name: String,
    child: Child,
    stopped: bool,
}

impl Service {
    /// Starts release binary `binary` with `configure` applied to its command. Its stdout is
    /// discarded; its stderr (logs at `warn` unless `configure` sets RUST_LOG) stays visible.
    pub fn start(binary: &str, configure: impl FnOnce(&mut Command) -> &mut Command) -> Result<Self> {
        let mut command = Command::new(release_binary(binary));
        command.env("RUST_LOG", "warn").env("JWT_SECRET", JWT_SECRET).stdin(Stdio::null()).stdout(Stdio::null());
        configure(&mut command);
        let child = command.spawn().with_context(|| format!("starting {binary}"))?;
        Ok(Self { name: binary.to_owned(), child, stopped: false })
    }

    /// Starts a service that listens on `addr` and waits until it accepts connections. Fails
    /// at once if something else already listens there: the benchmark would measure that.
    pub fn start_listening(
        binary: &str,
        addr: &str,
        configure: impl FnOnce(&mut Command) -> &mut Command,
    ) -> Result<Self> {
        if proc::tcp_reachable(addr) {
            bail!("cannot start {binary}: something already listens on {addr}");
        }
        let mut service = Self::start(binary, configure)?;
        service.wait_listening(addr)?;
        Ok(service)
    }

    /// Fails if the process has exited: a benchmark must not keep measuring without it.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            self.stopped = true;
            bail!("{} exited unexpectedly ({status})", self.name);
        }
        Ok(())
    }

    /// Waits until the service accepts connections on `addr`, failing early if it exits.
    pub fn wait_listening(&mut self, addr: &str) -> Result<()> {
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        loop {
            self.ensure_running()?;
            if proc::tcp_reachable(addr) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{} did not listen on {addr} within {LISTEN_TIMEOUT:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The process id, e.g. to read its memory from /proc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash: no shutdown code of the service runs.
    pub fn kill_hard(&mut self) {
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.stopped = true;
        }
    }

    /// SIGTERM, then wait for it to finish.
    pub fn stop(&mut self) {
        if !self.stopped {
            let _ = proc::send_signal(i64::from(self.child.id()), "TERM");
            let _ = self.child.wait();
            self.stopped = true;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Creates the benchmark's admin account with `catalogctl user create`.
pub fn create_admin(database_url: &str) -> Result<()> {
    let mut child = Command::new(release_binary("catalogctl"))
        .args(["--database-url", database_url, "user", "create", "--username", ADMIN_USERNAME])
        .args(["--email", "bench@example.com", "--role", "admin", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("starting catalogctl user create")?;
    child.stdin.take().context("stdin")?.write_all(format!("{ADMIN_PASSWORD}\n").as_bytes())?;
    anyhow::ensure!(child.wait()?.success(), "catalogctl user create failed");
    Ok(())
}

/// The admin's bearer token, from the command-api listening on `addr`.
pub async fn login(addr: &str) -> Result<String> {
    let response: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/auth/token"))
        .json(&serde_json::json!({"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(response["access_token"].as_str().context("no token")?.to_owned())
}

/// The `q` quantile (0..=1) of ascending `sorted` values, nearest rank; NaN when empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Replaces (or appends) the `## {name}` section of BENCHMARKS.md with `section`, which
/// starts with that heading. Other sections are kept as they are.
pub fn write_section(name: &str, section: &str) -> Result<()> {
    let heading = format!("## {name}");
    let path = root().join("BENCHMARKS.md");
    let existing = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n\n".into());
    let mut kept = String::new();
    let mut skipping = false;
    for line in existing.lines() {
        if line.starts_with("## ") {
            skipping = line == heading;
        }
        if !skipping {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    let updated = format!("{}\n\n{section}", kept.trim_end());
    std::fs::write(&path, updated)?;
    step(format!("results written to {}", path.display()));
    Ok(())
}
