//! The system under test, as the benchmarks and the fault suite run it: a fresh database
//! migrated by the release `catalogctl`, the release services started on it under the one
//! supervisor (so they are stopped however the caller ends), the table of the ports every user
//! of xtask runs them on, and an admin account with its bearer token.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use sqlx::postgres::PgPoolOptions;

use crate::dev::postgres::DbUrl;
use crate::dev::supervise::Supervisor;
use crate::dev::Backends;
use crate::proc;
use crate::workspace::target_dir;

const ADMIN_USERNAME: &str = "bench";
const ADMIN_PASSWORD: &str = "bench-password";

/// The workspace's services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    CommandApi,
    QueryApi,
    Projector,
}

impl Service {
    pub const ALL: [Self; 3] = [Self::CommandApi, Self::QueryApi, Self::Projector];

    /// Its binary, which is also its process's name.
    pub fn binary(self) -> &'static str {
        match self {
            Self::CommandApi => "command-api",
            Self::QueryApi => "query-api",
            Self::Projector => "projector",
        }
    }

    /// The environment variable it reads its listen address from.
    pub fn addr_var(self) -> &'static str {
        match self {
            Self::CommandApi => "COMMAND_API_ADDR",
            Self::QueryApi => "QUERY_API_ADDR",
            Self::Projector => "PROJECTOR_ADDR",
        }
    }

    /// Whether it serves `/openapi.json`.
    pub fn has_openapi(self) -> bool {
        self != Self::Projector
    }
}

/// Where each user of xtask runs the services, all on loopback: every port xtask starts a
/// service on is in this one table. Each user has a row of its own, so that `up`, a
/// benchmark and the fault suite can run side by side without one measuring or breaking
/// another's processes (a release service refuses to start where something already listens).
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub command_api: &'static str,
    pub query_api: &'static str,
    pub projector: &'static str,
    /// A second projector process, `--role publish` only, next to a `--role project` one: the
    /// fault suite crashes the two halves of the pipeline apart. No one else runs one.
    pub publisher: Option<&'static str>,
    /// More processes of the same services: the fault suite's scale-out scenario runs a second
    /// command-api and query-api and a second and third projector on these.
    pub spare: &'static [&'static str],
    /// A broker of this user's own: the fault suite pauses it (a shared one is never paused).
    pub broker: Option<&'static str>,
}

impl Ports {
    /// `cargo xtask up`: the services' own defaults (each can be moved with its variable).
    pub const DEV: Self = Self::three("127.0.0.1:8080", "127.0.0.1:8081", "127.0.0.1:8082");
    pub const BENCH_WRITE: Self = Self::three("127.0.0.1:18080", "127.0.0.1:18081", "127.0.0.1:18082");
    pub const BENCH_PIPELINE: Self = Self::three("127.0.0.1:18180", "127.0.0.1:18181", "127.0.0.1:18182");
    pub const BENCH_SOAK: Self = Self::three("127.0.0.1:18380", "127.0.0.1:18381", "127.0.0.1:18382");
    pub const BENCH_CATALOG: Self = Self::three("127.0.0.1:18480", "127.0.0.1:18481", "127.0.0.1:18482");
    pub const BENCH_RESERVATIONS: Self = Self::three("127.0.0.1:18580", "127.0.0.1:18581", "127.0.0.1:18582");
    pub const FAULTS: Self = Self {
        publisher: Some("127.0.0.1:19083"),
        spare: &["127.0.0.1:19084", "127.0.0.1:19085", "127.0.0.1:19086", "127.0.0.1:19087"],
        broker: Some("127.0.0.1:19092"),
        ..Self::three("127.0.0.1:19080", "127.0.0.1:19081", "127.0.0.1:19082")
    };

    const fn three(command_api: &'static str, query_api: &'static str, projector: &'static str) -> Self {
        Self { command_api, query_api, projector, publisher: None, spare: &[], broker: None }
    }

    /// The address of `service` in this row.
    pub fn of(&self, service: Service) -> &'static str {
        match service {
            Service::CommandApi => self.command_api,
            Service::QueryApi => self.query_api,
            Service::Projector => self.projector,
        }
    }
}

/// Where `cargo xtask bench` and `cargo xtask faults` have just built the release binaries.
pub fn release_binary(name: &str) -> PathBuf {
    target_dir().join("release").join(name)
}

/// The release `catalogctl`, pointed at `database_url`; the subcommand comes next.
pub fn catalogctl(database_url: &str) -> Command {
    let mut command = Command::new(release_binary("catalogctl"));
    command.args(["--database-url", database_url]);
    command
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
    let status =
        catalogctl(&url).arg("migrate").stdout(Stdio::null()).status().context("running catalogctl migrate")?;
    anyhow::ensure!(status.success(), "catalogctl migrate failed");
    Ok(url)
}

/// Release services on a database of their own. Dropping it kills the services that still
/// run; `stop` is the graceful way.
pub struct System {
    /// The URL of its database.
    pub url: String,
    pub ports: Ports,
    brokers: String,
    services: Supervisor,
}

impl System {
    /// The bootstrap servers its projectors are given.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// A fresh database `database` (see [`fresh_database`]); no service runs yet.
    pub async fn fresh(backends: &Backends, database: &str, ports: Ports) -> Result<Self> {
        let url = fresh_database(backends, database).await?;
        Ok(Self { url, ports, brokers: backends.kafka_brokers.clone(), services: Supervisor::default() })
    }

    /// An existing database `url`, kept as it is (a benchmark reusing what it built before).
    pub fn existing(backends: &Backends, url: String, ports: Ports) -> Self {
        Self { url, ports, brokers: backends.kafka_brokers.clone(), services: Supervisor::default() }
    }

    /// Starts release `service` under its own name on its port of this system's row.
    pub fn start(&mut self, service: Service, configure: impl FnOnce(&mut Command) -> &mut Command) -> Result<()> {
        self.start_as(service.binary(), service, self.ports.of(service), configure)
    }

    /// Starts release `service` as process `name` listening on `addr`, and waits until it
    /// accepts connections. It gets this system's database, its address, the broker (the
    /// projector), `CATALOG_ENV=development` (tokens signed with the public development key,
    /// valid for an hour) and `RUST_LOG=warn`; its stdout is discarded and its stderr stays
    /// visible. `configure` adds to that or overrides it. Fails at once if
    /// something else already listens on `addr`: that is what would be measured.
    pub fn start_as(
        &mut self,
        name: &'static str,
        service: Service,
        addr: &str,
        configure: impl FnOnce(&mut Command) -> &mut Command,
    ) -> Result<()> {
        if proc::tcp_reachable(addr) {
            bail!("cannot start {name}: something already listens on {addr}");
        }
        let mut command = Command::new(release_binary(service.binary()));
        command
            .env("RUST_LOG", "warn")
            .env("CATALOG_ENV", "development")
            // One admin token serves a whole benchmark or scenario: the longest lifetime allowed.
            .env("TOKEN_TTL_SECONDS", "3600")
            .env("DATABASE_URL", &self.url)
            .env(service.addr_var(), addr)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if service == Service::Projector {
            command.env("KAFKA_BROKERS", &self.brokers);
        }
        configure(&mut command);
        self.services.start(name, &mut command)?;
        self.services.wait_listening(name, addr)
    }

    /// Stops process `name` gracefully (SIGTERM, then wait).
    pub fn stop(&mut self, name: &str) {
        self.services.stop(name);
    }

    /// Stops every process gracefully.
    pub fn stop_all(&mut self) {
        self.services.stop_all();
    }

    /// SIGKILLs process `name`, as a crash.
    pub fn kill(&mut self, name: &str) -> Result<()> {
        self.services.kill(name)
    }

    /// Fails if a process has exited: nothing may go on measuring without it.
    pub fn ensure_running(&mut self) -> Result<()> {
        self.services.ensure_running()
    }

    /// The name and pid of every process.
    /// User + system CPU seconds used so far by each of the system's services (by name), by
    /// every `postgres` process on the machine (the server is shared, so other users' queries
    /// count too) and by the broker (found by name).
    pub fn cpu_seconds_by_group(&self) -> std::collections::BTreeMap<&'static str, f64> {
        let mut groups: std::collections::BTreeMap<&'static str, f64> =
            self.pids().map(|(name, pid)| (name, proc::cpu_seconds(pid))).collect();
        let (mut postgres, mut broker) = (0.0, 0.0);
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            match std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default().trim() {
                "postgres" => postgres += proc::cpu_seconds(pid),
                "tansu" | "kafka" | "java" => broker += proc::cpu_seconds(pid),
                _ => {}
            }
        }
        groups.insert("postgres", postgres);
        groups.insert("broker", broker);
        groups
    }

    pub fn pids(&self) -> impl Iterator<Item = (&'static str, u32)> + '_ {
        self.services.pids()
    }

    /// Creates the admin account with `catalogctl user create` and returns its bearer token
    /// from this system's command-api, which must be running.
    pub async fn admin_token(&self) -> Result<String> {
        let mut child = catalogctl(&self.url)
            .args(["user", "create", "--username", ADMIN_USERNAME])
            .args(["--email", "bench@example.com", "--role", "admin", "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .context("starting catalogctl user create")?;
        child.stdin.take().context("stdin")?.write_all(format!("{ADMIN_PASSWORD}\n").as_bytes())?;
        anyhow::ensure!(child.wait()?.success(), "catalogctl user create failed");
        let response: serde_json::Value = reqwest::Client::new()
            .post(format!("http://{}/api/v1/auth/token", self.ports.command_api))
            .json(&serde_json::json!({"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(response["access_token"].as_str().context("no token")?.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_two_rows_of_the_ports_table_share_a_port() {
        let rows = [
            Ports::DEV,
            Ports::BENCH_WRITE,
            Ports::BENCH_PIPELINE,
            Ports::BENCH_SOAK,
            Ports::BENCH_CATALOG,
            Ports::BENCH_RESERVATIONS,
            Ports::FAULTS,
        ];
        let mut addrs: Vec<&str> = rows
            .iter()
            .flat_map(|row| {
                Service::ALL
                    .iter()
                    .map(|s| row.of(*s))
                    .chain(row.publisher)
                    .chain(row.spare.iter().copied())
                    .chain(row.broker)
            })
            .chain([crate::dev::broker::DEFAULT_BROKERS])
            .collect();
        let all = addrs.len();
        addrs.sort_unstable();
        addrs.dedup();
        assert_eq!(addrs.len(), all, "a port is used twice: {addrs:?}");
    }
}
