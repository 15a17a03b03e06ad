//! PostgreSQL: make sure the server answers and the application database
//! exists. Everything goes through `psql`, which takes the same URL the
//! services use, so credentials and options in DATABASE_URL just work.

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::proc::{self, step, warn};

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/catalog";

/// How long a freshly started cluster gets to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A `postgres://user@host:port/dbname?params` URL split around the database
/// name, which is the only part xtask needs to read or replace.
#[derive(Debug, Clone, PartialEq)]
pub struct DbUrl {
    /// Scheme and authority, e.g. `postgres://postgres@127.0.0.1:5432`.
    base: String,
    database: String,
    /// `?…` query string including the `?`, or empty.
    query: String,
}

impl DbUrl {
    pub fn parse(url: &str) -> Result<Self> {
        let (scheme, rest) = url.split_once("://").with_context(|| format!("DATABASE_URL `{url}` is not a URL"))?;
        if scheme != "postgres" && scheme != "postgresql" {
            bail!("DATABASE_URL must use postgres://, got `{scheme}://`");
        }
        let (rest, query) = match rest.find('?') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
        if database.is_empty() || database.contains('/') {
            bail!("DATABASE_URL `{url}` must name exactly one database, e.g. …/catalog");
        }
        Ok(Self { base: format!("{scheme}://{authority}"), database: database.to_owned(), query: query.to_owned() })
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    /// The same server and credentials, but another database.
    pub fn with_database(&self, database: &str) -> String {
        format!("{}/{}{}", self.base, database, self.query)
    }

    /// Host part of the authority (empty for a Unix-socket URL).
    fn host(&self) -> &str {
        let authority = self.base.split_once("://").map_or("", |(_, a)| a);
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
        if let Some(bracketed) = host_port.strip_prefix('[') {
            return bracketed.split(']').next().unwrap_or("");
        }
        host_port.split(':').next().unwrap_or("")
    }

    /// Whether the server is on this machine, i.e. whether it makes sense
    /// for xtask to try starting it.
    fn is_local(&self) -> bool {
        matches!(self.host(), "" | "127.0.0.1" | "localhost" | "::1")
    }

    /// The maintenance database URL used for server-level statements.
    fn maintenance(&self) -> String {
        self.with_database("postgres")
    }
}

/// Ensures the server answers, starting the local cluster if it is down and
/// this machine has Debian's `pg_ctlcluster`.
pub fn ensure_running(url: &DbUrl) -> Result<()> {
    if accepts_queries(url) {
        return Ok(());
    }
    if !url.is_local() {
        bail!("PostgreSQL at {} is not reachable", url.with_database(url.database()));
    }
    if proc::find_in_path("pg_ctlcluster").is_none() {
        bail!("PostgreSQL is not accepting connections and pg_ctlcluster is not available to start it");
    }
    start_clusters()?;
    proc::wait_until("PostgreSQL to accept connections", STARTUP_TIMEOUT, || accepts_queries(url))
}

/// Ensures the database named in the URL exists.
pub fn ensure_database(url: &DbUrl) -> Result<()> {
    if database_exists(url)? {
        return Ok(());
    }
    step(format!("creating database {}", url.database()));
    let created = psql(url, &format!("CREATE DATABASE {}", quote_ident(url.database())));
    // Someone else (a parallel xtask) may have created it in the meantime;
    // only the end state matters.
    if let Err(err) = created {
        if !database_exists(url)? {
            return Err(err);
        }
    }
    Ok(())
}

fn database_exists(url: &DbUrl) -> Result<bool> {
    let sql = format!("SELECT 1 FROM pg_database WHERE datname = {}", quote_literal(url.database()));
    Ok(psql(url, &sql)? == "1")
}

fn accepts_queries(url: &DbUrl) -> bool {
    proc::succeeds(&mut psql_command(url, "SELECT 1"))
}

fn psql(url: &DbUrl, sql: &str) -> Result<String> {
    proc::output(&mut psql_command(url, sql))
}

fn psql_command(url: &DbUrl, sql: &str) -> Command {
    let mut cmd = Command::new("psql");
    cmd.arg(url.maintenance())
        // No ~/.psqlrc, tuples only, unaligned, stop on error.
        .args(["-X", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql])
        // A server that is down must fail fast, not hang the readiness loop.
        .env("PGCONNECT_TIMEOUT", "3");
    cmd
}

/// Starts every local cluster (normally exactly one).
fn start_clusters() -> Result<()> {
    let versions = local_clusters().context("PostgreSQL is down and /etc/postgresql does not exist")?;
    for version in versions {
        step(format!("starting PostgreSQL {version} cluster `main`"));
        // Not fatal: the cluster may already be starting; the readiness wait
        // that follows is the real test.
        if let Err(err) = pg_ctlcluster(&version, "start") {
            warn(format!("{err:#}"));
        }
    }
    Ok(())
}

/// The versions of the local Debian clusters that `pg_ctlcluster` manages:
/// the directories under /etc/postgresql, each holding a cluster `main`.
pub fn local_clusters() -> Result<Vec<String>> {
    Ok(std::fs::read_dir("/etc/postgresql")?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect())
}

/// `pg_ctlcluster VERSION main ACTION` (start, stop), bypassing systemctl,
/// which xtask's machines need not run. A stop is `fast`: open sessions are
/// disconnected, not waited for.
pub fn pg_ctlcluster(version: &str, action: &str) -> Result<()> {
    let mut cmd = Command::new("pg_ctlcluster");
    cmd.args(["--skip-systemctl-redirect", version, "main", action]);
    if action == "stop" {
        cmd.args(["-m", "fast"]);
    }
    proc::run(&mut cmd)
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_default_url() {
        let url = DbUrl::parse(DEFAULT_DATABASE_URL).unwrap();
        assert_eq!(url.database(), "catalog");
        assert_eq!(url.host(), "127.0.0.1");
        assert!(url.is_local());
        assert_eq!(url.maintenance(), "postgres://postgres@127.0.0.1:5432/postgres");
    }

    #[test]
    fn keeps_credentials_and_query() {
        let url = DbUrl::parse("postgresql://u:p@db.example:6543/app?sslmode=require").unwrap();
        assert_eq!(url.database(), "app");
        assert_eq!(url.host(), "db.example");
        assert!(!url.is_local());
        assert_eq!(url.with_database("other"), "postgresql://u:p@db.example:6543/other?sslmode=require");
    }

    #[test]
    fn ipv6_host() {
        let url = DbUrl::parse("postgres://postgres@[::1]:5432/catalog").unwrap();
        assert_eq!(url.host(), "::1");
    }

    #[test]
    fn rejects_missing_database() {
        assert!(DbUrl::parse("postgres://postgres@127.0.0.1:5432").is_err());
        assert!(DbUrl::parse("postgres://postgres@127.0.0.1:5432/").is_err());
        assert!(DbUrl::parse("mysql://root@127.0.0.1/catalog").is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident(r#"a"b"#), r#""a""b""#);
        assert_eq!(quote_literal("o'k"), "'o''k'");
    }
}
