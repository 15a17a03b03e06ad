//! Where things are: workspace root, `.local/`, target directory, cargo.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root. xtask lives one level below it, and
/// `CARGO_MANIFEST_DIR` is baked in at compile time, so this is right no
/// matter which directory `cargo xtask` is invoked from.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask has a parent directory").to_path_buf()
}

/// Machine-local state (downloaded tools, logs, pid files); gitignored.
pub fn local_dir() -> PathBuf {
    root().join(".local")
}

/// Cargo's target directory. Honours `CARGO_TARGET_DIR` (relative to the
/// current directory, as cargo resolves it); `build.target-dir` in a cargo
/// config file is not consulted because this workspace doesn't set one.
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => env::current_dir().unwrap_or_default().join(dir),
        None => root().join("target"),
    }
}

/// A `cargo` command running in the workspace root. `cargo run` exports the
/// path of the cargo that launched us as `CARGO`; using it keeps the same
/// toolchain even when several are installed.
pub fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// An environment variable, treating "set but empty" as unset.
pub fn var(name: &str) -> Option<String> {
    env::var(name).ok().filter(|v| !v.trim().is_empty())
}
