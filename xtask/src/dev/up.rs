//! `cargo xtask up`: the whole system on one machine, in the foreground.

use std::process::Command;

use anyhow::{bail, Result};

use crate::dev::supervise::{self, Ready};
use crate::proc::{self, step, warn};
use crate::system::{Ports, Service};
use crate::workspace::{self, cargo};

/// Where `service` listens: its address variable, else its default (the
/// `DEV` row of the ports table, which are the services' own defaults).
fn listen_addr(service: Service) -> String {
    workspace::var(service.addr_var()).unwrap_or_else(|| Ports::DEV.of(service).to_owned())
}

/// Where a client reaches the service: a wildcard bind address is
/// reachable on loopback.
fn connect_addr(service: Service) -> String {
    let addr = listen_addr(service);
    if let Some(port) = addr.strip_prefix("0.0.0.0:") {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = addr.strip_prefix("[::]:") {
        format!("[::1]:{port}")
    } else {
        addr
    }
}

pub fn run(no_build: bool) -> Result<()> {
    // Before anything slow: a second `up` would only fail later, at bind time.
    ensure_ports_free()?;
    let backends = super::ensure_backends(true)?;
    let environment = environment();

    if !no_build {
        step("building the workspace binaries");
        proc::run(cargo().args(["build", "--workspace", "--bins"]))?;
    }
    let bin_dir = workspace::target_dir().join("debug");

    step("applying migrations");
    proc::run(Command::new(bin_dir.join("catalogctl")).arg("migrate").envs(backends.vars()))?;

    let children = Service::ALL
        .map(|service| {
            let mut command = Command::new(bin_dir.join(service.binary()));
            command.current_dir(workspace::root()).envs(backends.vars()).env("CATALOG_ENV", &environment);
            (service.binary(), command)
        })
        .into();
    let ready = Ready { addrs: Service::ALL.map(connect_addr).into(), banner: banner() };
    step("starting services (Ctrl-C stops them)");
    let result = supervise::run(children, ready);
    eprintln!("xtask: the broker keeps running; `cargo xtask down` stops it");
    result
}

fn ensure_ports_free() -> Result<()> {
    for service in Service::ALL {
        let addr = connect_addr(service);
        if proc::tcp_reachable(&addr) {
            bail!("{addr} ({}) is already in use; is another `cargo xtask up` running?", service.binary());
        }
    }
    Ok(())
}

/// `CATALOG_ENV` as given, else `development`: the APIs then sign and verify tokens with the
/// public development key unless `TOKEN_SIGNING_KEY` / `TOKEN_VERIFY_KEYS` are set.
fn environment() -> String {
    workspace::var("CATALOG_ENV").unwrap_or_else(|| {
        warn("CATALOG_ENV is not set; running with CATALOG_ENV=development (public dev-only token key)");
        "development".to_owned()
    })
}

fn banner() -> String {
    let mut text = String::from("\nThe catalog is up:\n");
    for service in Service::ALL {
        let url = format!("http://{}", connect_addr(service));
        let docs = if service.has_openapi() { format!(", spec {url}/openapi.json") } else { String::new() };
        text += &format!("  {:<12} {url}  (health {url}/health{docs})\n", service.binary());
    }
    text += "\nCreate an admin user:\n  echo 'a-long-password' | cargo run -q -p catalogctl -- \
             user create --username admin --email admin@example.com --role admin --password-stdin\n\
             \nCtrl-C stops the services; the broker keeps running until `cargo xtask down`.\n";
    text
}
