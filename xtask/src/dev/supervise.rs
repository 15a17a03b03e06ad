//! The one supervisor of xtask's child processes: the services of `cargo xtask up`, and the
//! release services that the benchmarks and the fault suite start through `system.rs`.
//!
//! A [`Supervisor`] owns its children, and dropping it kills whichever still run, so an early
//! return or a panic never leaves one behind. Children are started one of two ways:
//!
//! - [`Supervisor::start`]: in xtask's own process group, with the output the caller set up.
//!   A Ctrl-C in the terminal reaches them as well, so an interrupted benchmark leaves nothing
//!   running.
//! - [`run`], for `up`: long-lived processes in the foreground, the way a Procfile runner does
//!   it: prefixed output, and all of them stop together. Each child gets its own process
//!   group, so a Ctrl-C in the terminal only reaches xtask; xtask then sends exactly one
//!   SIGTERM to every child and waits for them to drain. Without that, children would receive
//!   the terminal's SIGINT directly while xtask died at once, leaving them writing into closed
//!   pipes and the shell prompt back before they had stopped.

use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::proc;

/// Grace period between SIGTERM and SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a started service gets to open its port.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the children of `up` get to open their ports before we stop
/// waiting to print the "ready" banner.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the children are checked for an exit.
const POLL: Duration = Duration::from_millis(100);
/// How long the output of `up`'s children may still take once they have
/// exited; a grandchild still holding a pipe open must not keep us here.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Child processes, by name, that are stopped together.
#[derive(Default)]
pub struct Supervisor {
    children: Vec<Supervised>,
    /// One per output forwarder of `up`; disconnected once it has copied its last line.
    forwarders: Vec<mpsc::Receiver<()>>,
}

struct Supervised {
    name: &'static str,
    child: std::process::Child,
    /// In a process group of its own (`up`): signals go to the whole group,
    /// which also covers anything the service may have spawned itself.
    own_group: bool,
    /// How it ended, once it has exited and been reaped.
    exit: Option<String>,
}

impl Supervised {
    /// Reaps the child if it has exited; how it ended, the first time only.
    fn reap(&mut self) -> Option<String> {
        if self.exit.is_some() {
            return None;
        }
        let exit = match self.child.try_wait() {
            Ok(None) => return None,
            Ok(Some(status)) => status.to_string(),
            Err(err) => format!("wait failed: {err}"),
        };
        self.exit = Some(exit.clone());
        Some(exit)
    }

    /// Sends `signal` (e.g. "TERM") unless the child has been reaped: its pid
    /// may belong to another process by now.
    fn signal(&mut self, signal: &str) {
        self.reap();
        if self.exit.is_none() {
            let pid = i64::from(self.child.id());
            proc::send_signal(if self.own_group { -pid } else { pid }, signal);
        }
    }
}

impl Supervisor {
    /// Starts `command` as child `name`, in xtask's process group and with
    /// the stdio the caller configured.
    pub fn start(&mut self, name: &'static str, command: &mut Command) -> Result<()> {
        self.spawn(name, command, false).map(drop)
    }

    fn spawn(&mut self, name: &'static str, command: &mut Command, own_group: bool) -> Result<&mut Supervised> {
        if self.children.iter().any(|c| c.name == name) {
            bail!("cannot start {name}: it is already running");
        }
        if own_group {
            command.process_group(0);
        }
        let child = command.spawn().with_context(|| format!("starting {name}"))?;
        self.children.push(Supervised { name, child, own_group, exit: None });
        Ok(self.children.last_mut().expect("just pushed"))
    }

    /// Waits until child `name` accepts connections on `addr`, failing early
    /// if any child exits.
    pub fn wait_listening(&mut self, name: &str, addr: &str) -> Result<()> {
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        loop {
            self.ensure_running()?;
            if proc::tcp_reachable(addr) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{name} did not listen on {addr} within {LISTEN_TIMEOUT:?}");
            }
            std::thread::sleep(POLL);
        }
    }

    /// Fails if any child has exited: services run until they are stopped,
    /// and nothing may go on measuring or testing without one.
    pub fn ensure_running(&mut self) -> Result<()> {
        for child in &mut self.children {
            child.reap();
            if let Some(exit) = &child.exit {
                bail!("{} exited unexpectedly ({exit})", child.name);
            }
        }
        Ok(())
    }

    /// The name and pid of every child, e.g. to read their use of memory from /proc.
    pub fn pids(&self) -> impl Iterator<Item = (&'static str, u32)> + '_ {
        self.children.iter().map(|c| (c.name, c.child.id()))
    }

    /// SIGKILL to child `name`, as a crash: none of its shutdown code runs.
    pub fn kill(&mut self, name: &str) -> Result<()> {
        let mut child = self.remove(name).with_context(|| format!("{name} is not running"))?;
        let _ = child.child.kill();
        let _ = child.child.wait();
        Ok(())
    }

    /// Stops child `name` gracefully, if it runs (see [`Self::stop_all`]).
    pub fn stop(&mut self, name: &str) {
        if let Some(child) = self.remove(name) {
            Supervisor { children: vec![child], forwarders: Vec::new() }.stop_all();
        }
    }

    /// SIGTERM to every child, then SIGKILL to those still running after the grace period.
    pub fn stop_all(&mut self) {
        self.signal_all("TERM");
        let stopped = proc::wait_until("the services to stop", STOP_TIMEOUT, || {
            self.reap_all();
            !self.any_running()
        });
        if stopped.is_err() {
            proc::warn(format!("services still running after {STOP_TIMEOUT:?}; killing them"));
            self.signal_all("KILL");
            for child in &mut self.children {
                let _ = child.child.wait();
            }
        }
        self.children.clear();
    }

    fn remove(&mut self, name: &str) -> Option<Supervised> {
        let index = self.children.iter().position(|c| c.name == name)?;
        Some(self.children.remove(index))
    }

    fn signal_all(&mut self, signal: &str) {
        for child in &mut self.children {
            child.signal(signal);
        }
    }

    /// The children that have exited since the last look, and how.
    fn reap_all(&mut self) -> Vec<(&'static str, String)> {
        self.children.iter_mut().filter_map(|c| Some((c.name, c.reap()?))).collect()
    }

    fn any_running(&self) -> bool {
        self.children.iter().any(|c| c.exit.is_none())
    }

    /// Starts child `name` for `up`: in its own process group, with its
    /// output copied line by line behind `prefix`.
    fn start_prefixed(&mut self, name: &'static str, mut command: Command, prefix: String) -> Result<()> {
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = &mut self.spawn(name, &mut command, true)?.child;
        let (stdout, stderr) = (child.stdout.take().context("stdout")?, child.stderr.take().context("stderr")?);
        self.forwarders.push(forward(stdout, prefix.clone(), Stream::Out));
        self.forwarders.push(forward(stderr, prefix, Stream::Err));
        Ok(())
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        for child in &mut self.children {
            if child.exit.is_none() {
                let _ = child.child.kill();
                let _ = child.child.wait();
            }
        }
    }
}

/// What `up` announces once every address accepts connections.
pub struct Ready {
    pub addrs: Vec<String>,
    pub banner: String,
}

/// Runs the children (name and command) in the foreground until one of them
/// exits (an error: services should run forever) or xtask receives SIGINT,
/// SIGTERM or SIGHUP (a normal stop).
pub fn run(children: Vec<(&'static str, Command)>, ready: Ready) -> Result<()> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(foreground(children, ready))
}

async fn foreground(children: Vec<(&'static str, Command)>, ready: Ready) -> Result<()> {
    // Installed before spawning so that no signal slips through unhandled.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;

    let width = children.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    let mut supervisor = Supervisor::default();
    for (index, (name, command)) in children.into_iter().enumerate() {
        supervisor.start_prefixed(name, command, prefix(name, width, index))?;
    }
    let announcer = tokio::spawn(announce_when_ready(ready));

    let mut poll = tokio::time::interval(POLL);
    let failure = loop {
        tokio::select! {
            _ = sigint.recv() => break None,
            _ = sigterm.recv() => break None,
            _ = sighup.recv() => break None,
            _ = poll.tick() => {
                if let Err(err) = supervisor.ensure_running() {
                    break Some(err.to_string());
                }
            }
        }
    };
    announcer.abort();
    if let Some(msg) = &failure {
        eprintln!("xtask: {msg}; stopping the other services");
    } else {
        eprintln!("xtask: stopping services…");
    }

    stop_in_foreground(&mut supervisor, &mut sigint).await;
    // Let the last log lines through.
    for forwarder in supervisor.forwarders.drain(..) {
        let _ = forwarder.recv_timeout(DRAIN_TIMEOUT);
    }
    match failure {
        Some(msg) => bail!(msg),
        None => Ok(()),
    }
}

/// [`Supervisor::stop_all`] that reports each exit and also kills on a
/// second Ctrl-C.
async fn stop_in_foreground(supervisor: &mut Supervisor, sigint: &mut Signal) {
    supervisor.signal_all("TERM");
    let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
    let mut poll = tokio::time::interval(POLL);
    let mut killed = false;
    while supervisor.any_running() {
        tokio::select! {
            _ = poll.tick() => {
                for (name, exit) in supervisor.reap_all() {
                    eprintln!("xtask: {name} stopped ({exit})");
                }
            }
            _ = tokio::time::sleep_until(deadline), if !killed => {
                eprintln!("xtask: services still running after {STOP_TIMEOUT:?}; killing them");
                supervisor.signal_all("KILL");
                killed = true;
            }
            _ = sigint.recv(), if !killed => {
                eprintln!("xtask: second Ctrl-C; killing services");
                supervisor.signal_all("KILL");
                killed = true;
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Stream {
    Out,
    Err,
}

/// Copies a child's output line by line with its prefix, on a thread of its
/// own. Lines are written whole under the lock so output of different
/// services never interleaves mid-line; write errors (e.g. `| head`) are
/// ignored rather than panicking. The returned channel disconnects when the
/// stream has ended.
fn forward(stream: impl Read + Send + 'static, prefix: String, to: Stream) -> mpsc::Receiver<()> {
    let (done, finished) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let _done = done;
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&buf);
            let line = text.trim_end_matches(['\n', '\r']);
            let _ = match to {
                Stream::Out => writeln!(std::io::stdout().lock(), "{prefix}{line}"),
                Stream::Err => writeln!(std::io::stderr().lock(), "{prefix}{line}"),
            };
        }
    });
    finished
}

/// `[name] `, padded so the logs line up, and coloured on a terminal unless
/// NO_COLOR is set.
fn prefix(name: &str, width: usize, index: usize) -> String {
    const COLORS: [u8; 6] = [36, 35, 33, 32, 34, 31];
    let tag = format!("{:<width$}", format!("[{name}]"), width = width + 2);
    if std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
        format!("\x1b[{}m{tag}\x1b[0m ", COLORS[index % COLORS.len()])
    } else {
        format!("{tag} ")
    }
}

async fn announce_when_ready(ready: Ready) {
    let all_up = async {
        for addr in &ready.addrs {
            while tokio::net::TcpStream::connect(addr.as_str()).await.is_err() {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    if tokio::time::timeout(READY_TIMEOUT, all_up).await.is_err() {
        proc::warn(format!("not every service listens after {READY_TIMEOUT:?}; check the logs above"));
    }
    eprintln!("{}", ready.banner);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_kills_and_notices_exits() {
        let mut supervisor = Supervisor::default();
        supervisor.start("sleeper", Command::new("sleep").arg("60")).unwrap();
        supervisor.start("quitter", &mut Command::new("true")).unwrap();
        assert!(supervisor.start("sleeper", Command::new("sleep").arg("60")).is_err(), "one child per name");
        proc::wait_until("true to exit", Duration::from_secs(5), || supervisor.ensure_running().is_err()).unwrap();
        let error = supervisor.ensure_running().unwrap_err().to_string();
        assert!(error.starts_with("quitter exited unexpectedly"), "{error}");
        assert!(supervisor.kill("quitter").is_ok() && supervisor.kill("quitter").is_err());
        supervisor.ensure_running().unwrap();
        let started = Instant::now();
        supervisor.stop("sleeper");
        assert!(started.elapsed() < STOP_TIMEOUT, "sleep stops on SIGTERM");
        assert_eq!(supervisor.pids().count(), 0);
    }
}
