//! Runs a set of long-lived processes in the foreground, the way a Procfile
//! runner does: prefixed output, and all of them stop together.
//!
//! Each child gets its own process group, so a Ctrl-C in the terminal only
//! reaches xtask; xtask then sends exactly one SIGTERM to every child and
//! waits for them to drain. Without that, children would receive the
//! terminal's SIGINT directly while xtask died at once, leaving them writing
//! into closed pipes and the shell prompt back before they had stopped.

use std::io::{IsTerminal, Write};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::proc;

/// Grace period between SIGTERM and SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the children get to open their ports before we stop waiting to
/// print the "ready" banner.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Child {
    pub name: &'static str,
    pub command: std::process::Command,
}

/// What to announce once every address accepts connections.
pub struct Ready {
    pub addrs: Vec<String>,
    pub banner: String,
}

/// Runs the children until one of them exits (an error: services should run
/// forever) or xtask receives SIGINT, SIGTERM or SIGHUP (a normal stop).
pub fn run(children: Vec<Child>, ready: Ready) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(supervise(children, ready))
}

struct Running {
    name: &'static str,
    pid: u32,
    exited: bool,
}

type Exit = (usize, std::io::Result<ExitStatus>);

async fn supervise(children: Vec<Child>, ready: Ready) -> Result<()> {
    // Installed before spawning so that no signal slips through unhandled.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;

    let (exit_tx, mut exit_rx) = mpsc::unbounded_channel::<Exit>();
    let width = children.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut running = Vec::new();
    let mut forwarders = Vec::new();
    for (index, child) in children.into_iter().enumerate() {
        let name = child.name;
        let (pid, output) = spawn(child, index, prefix(name, width, index), exit_tx.clone())?;
        running.push(Running {
            name,
            pid,
            exited: false,
        });
        forwarders.extend(output);
    }
    let announcer = tokio::spawn(announce_when_ready(ready));

    let failure = tokio::select! {
        _ = sigint.recv() => None,
        _ = sigterm.recv() => None,
        _ = sighup.recv() => None,
        Some((index, status)) = exit_rx.recv() => {
            running[index].exited = true;
            Some(format!("{} exited unexpectedly ({})", running[index].name, describe(&status)))
        }
    };
    announcer.abort();
    if let Some(msg) = &failure {
        eprintln!("xtask: {msg}; stopping the other services");
    } else {
        eprintln!("xtask: stopping services…");
    }

    stop_all(&mut running, &mut exit_rx, &mut sigint).await;
    // Let the last log lines through; a grandchild still holding a pipe open
    // must not keep us here.
    for forwarder in forwarders {
        let _ = tokio::time::timeout(Duration::from_secs(2), forwarder).await;
    }
    match failure {
        Some(msg) => anyhow::bail!(msg),
        None => Ok(()),
    }
}

/// Spawns one child with piped output and a task that reports its exit.
fn spawn(
    child: Child,
    index: usize,
    prefix: String,
    exit_tx: mpsc::UnboundedSender<Exit>,
) -> Result<(u32, Vec<JoinHandle<()>>)> {
    let mut command = Command::from(child.command);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // Last resort if xtask bails out early (e.g. a later spawn fails):
        // dropping the handle kills the process instead of leaking it.
        .kill_on_drop(true);
    let mut process = command
        .spawn()
        .with_context(|| format!("starting {}", child.name))?;
    let pid = process.id().context("child has no pid")?;
    let forwarders = vec![
        tokio::spawn(forward(
            process.stdout.take().unwrap(),
            prefix.clone(),
            Stream::Out,
        )),
        tokio::spawn(forward(process.stderr.take().unwrap(), prefix, Stream::Err)),
    ];
    tokio::spawn(async move {
        let status = process.wait().await;
        let _ = exit_tx.send((index, status));
    });
    Ok((pid, forwarders))
}

/// SIGTERM to every live child, then SIGKILL for those still running after
/// the grace period or on a second Ctrl-C.
async fn stop_all(
    running: &mut [Running],
    exit_rx: &mut mpsc::UnboundedReceiver<Exit>,
    sigint: &mut tokio::signal::unix::Signal,
) {
    signal_live(running, "TERM");
    let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
    let mut killed = false;
    while running.iter().any(|r| !r.exited) {
        tokio::select! {
            exit = exit_rx.recv() => match exit {
                Some((index, status)) => {
                    running[index].exited = true;
                    eprintln!("xtask: {} stopped ({})", running[index].name, describe(&status));
                }
                None => break,
            },
            _ = tokio::time::sleep_until(deadline), if !killed => {
                eprintln!("xtask: services still running after {STOP_TIMEOUT:?}; killing them");
                signal_live(running, "KILL");
                killed = true;
            }
            _ = sigint.recv(), if !killed => {
                eprintln!("xtask: second Ctrl-C; killing services");
                signal_live(running, "KILL");
                killed = true;
            }
        }
    }
}

/// Signals the process group of each child that hasn't exited; the group
/// also covers anything a service may have spawned itself.
fn signal_live(running: &[Running], signal: &str) {
    for r in running.iter().filter(|r| !r.exited) {
        proc::send_signal(-i64::from(r.pid), signal);
    }
}

fn describe(status: &std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(err) => format!("wait failed: {err}"),
    }
}

#[derive(Clone, Copy)]
enum Stream {
    Out,
    Err,
}

/// Copies a child's output line by line with its prefix. Lines are written
/// whole under the lock so output of different services never interleaves
/// mid-line; write errors (e.g. `| head`) are ignored rather than panicking.
async fn forward(stream: impl AsyncRead + Unpin, prefix: String, to: Stream) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
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
        proc::warn(format!(
            "not every service listens after {READY_TIMEOUT:?}; check the logs above"
        ));
    }
    eprintln!("{}", ready.banner);
}
