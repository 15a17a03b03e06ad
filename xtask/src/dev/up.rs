//! `cargo xtask up`: the whole system on one machine, in the foreground.

use std::process::Command;

use anyhow::{bail, Result};

use crate::proc::{self, step, warn};
use crate::supervise::{self, Child, Ready};
use crate::workspace::{self, cargo};

struct Service {
    name: &'static str,
    addr_var: &'static str,
    default_addr: &'static str,
    /// Whether it serves `/openapi.json` yet (set when the OpenAPI work lands).
    has_openapi: bool,
}

const SERVICES: [Service; 3] = [
    Service {
        name: "command-api",
        addr_var: "COMMAND_API_ADDR",
        default_addr: "127.0.0.1:8080",
        has_openapi: true,
    },
    Service {
        name: "query-api",
        addr_var: "QUERY_API_ADDR",
        default_addr: "127.0.0.1:8081",
        has_openapi: true,
    },
    Service {
        name: "projector",
        addr_var: "PROJECTOR_ADDR",
        default_addr: "127.0.0.1:8082",
        has_openapi: false,
    },
];

/// Only ever used when JWT_SECRET is unset; tokens signed with it are
/// worthless outside this machine, which is the point.
const DEV_JWT_SECRET: &str = "dev-only-insecure-jwt-secret-do-not-use-in-production";

impl Service {
    fn listen_addr(&self) -> String {
        workspace::var(self.addr_var).unwrap_or_else(|| self.default_addr.to_owned())
    }

    /// Where a client reaches the service: a wildcard bind address is
    /// reachable on loopback.
    fn connect_addr(&self) -> String {
        let addr = self.listen_addr();
        if let Some(port) = addr.strip_prefix("0.0.0.0:") {
            format!("127.0.0.1:{port}")
        } else if let Some(port) = addr.strip_prefix("[::]:") {
            format!("[::1]:{port}")
        } else {
            addr
        }
    }
}

pub fn run(no_build: bool) -> Result<()> {
    // Before anything slow: a second `up` would only fail later, at bind time.
    ensure_ports_free()?;
    let backends = crate::ensure_backends(true)?;
    let jwt_secret = jwt_secret();

    if !no_build {
        step("building the workspace binaries");
        proc::run(cargo().args(["build", "--workspace", "--bins"]))?;
    }
    let bin_dir = workspace::target_dir().join("debug");

    step("applying migrations");
    proc::run(
        Command::new(bin_dir.join("catalogctl"))
            .arg("migrate")
            .envs(backends.vars()),
    )?;

    let children = SERVICES
        .iter()
        .map(|service| {
            let mut command = Command::new(bin_dir.join(service.name));
            command
                .current_dir(workspace::root())
                .envs(backends.vars())
                .env("JWT_SECRET", &jwt_secret);
            Child {
                name: service.name,
                command,
            }
        })
        .collect();
    let ready = Ready {
        addrs: SERVICES.iter().map(Service::connect_addr).collect(),
        banner: banner(),
    };
    step("starting services (Ctrl-C stops them)");
    let result = supervise::run(children, ready);
    eprintln!("xtask: the broker keeps running; `cargo xtask down` stops it");
    result
}

fn ensure_ports_free() -> Result<()> {
    for service in &SERVICES {
        let addr = service.connect_addr();
        if proc::tcp_reachable(&addr) {
            bail!(
                "{addr} ({}) is already in use; is another `cargo xtask up` running?",
                service.name
            );
        }
    }
    Ok(())
}

fn jwt_secret() -> String {
    workspace::var("JWT_SECRET").unwrap_or_else(|| {
        warn("JWT_SECRET is not set; using a fixed, public dev-only secret");
        DEV_JWT_SECRET.to_owned()
    })
}

fn banner() -> String {
    let mut text = String::from("\nThe catalog is up:\n");
    for service in &SERVICES {
        let url = format!("http://{}", service.connect_addr());
        let docs = if service.has_openapi {
            format!(", spec {url}/openapi.json")
        } else {
            String::new()
        };
        text += &format!(
            "  {:<12} {url}  (health {url}/health{docs})\n",
            service.name
        );
    }
    text += "\nCreate an admin user:\n  echo 'a-long-password' | cargo run -q -p catalogctl -- \
             user create --username admin --email admin@example.com --role admin --password-stdin\n\
             \nCtrl-C stops the services; the broker keeps running until `cargo xtask down`.\n";
    text
}
