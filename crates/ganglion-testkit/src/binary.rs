//! Finding (and if need be building) the `ganglion` binary.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    time::SystemTime,
};

use anyhow::Context as _;

/// Set to a path to use that binary and never build.
const BIN_ENV: &str = "GANGLION_BIN";
/// Set to `1` to run `cargo build -p ganglion` once per test process even if a binary exists,
/// so that `cargo test -p ganglion-tests` after a server change does not test a stale binary.
const REBUILD_ENV: &str = "GANGLION_TESTKIT_BUILD";

/// Outcome of the one `cargo build` a test process may run, shared by all its tests.
static BUILD: Mutex<Option<Result<(), String>>> = Mutex::new(None);

/// The workspace root, from this crate's manifest directory (`<root>/crates/ganglion-testkit`).
pub(crate) fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.ancestors().nth(2).unwrap_or(manifest).to_path_buf()
}

pub(crate) fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() { dir } else { workspace_root().join(dir) }
        }
        None => workspace_root().join("target"),
    }
}

/// The newest of `target/debug/ganglion` and `target/release/ganglion`, if any exists.
fn existing_binary() -> Option<PathBuf> {
    let target = target_dir();
    ["debug", "release"]
        .iter()
        .map(|profile| target.join(profile).join("ganglion"))
        .filter_map(|path| {
            let modified = path.metadata().ok()?.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            Some((modified, path))
        })
        .max_by_key(|(modified, _)| *modified)
        .map(|(_, path)| path)
}

/// Runs `cargo build -p ganglion` at most once per process; later callers get the same outcome.
fn build_once() -> anyhow::Result<()> {
    let mut outcome = BUILD.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if outcome.is_none() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        eprintln!("ganglion-testkit: running `cargo build -p ganglion` in {}", workspace_root().display());
        let result =
            Command::new(cargo).args(["build", "-p", "ganglion"]).current_dir(workspace_root()).output();
        *outcome = Some(match result {
            Ok(output) if output.status.success() => Ok(()),
            Ok(output) => Err(format!(
                "`cargo build -p ganglion` failed ({}):\n{}",
                output.status,
                tail(&String::from_utf8_lossy(&output.stderr), 40)
            )),
            Err(error) => Err(format!("could not run cargo: {error}")),
        });
    }
    match outcome.as_ref() {
        Some(Ok(())) => Ok(()),
        Some(Err(message)) => Err(anyhow::anyhow!("{message}")),
        None => unreachable!("outcome was just set"),
    }
}

/// Path of the `ganglion` binary: `$GANGLION_BIN`, else `<target>/{debug,release}/ganglion`
/// (the newest), else it builds `-p ganglion` once (guarded by a process-wide lock) and looks again.
///
/// This blocks (a build can take minutes); call it from `spawn_blocking` in async code.
pub fn ganglion_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(BIN_ENV) {
        let path = PathBuf::from(path);
        anyhow::ensure!(path.is_file(), "{BIN_ENV}={} is not a file", path.display());
        return Ok(path);
    }
    if std::env::var(REBUILD_ENV).is_ok_and(|value| value == "1") {
        build_once()?;
    }
    if let Some(path) = existing_binary() {
        return Ok(path);
    }
    build_once()?;
    existing_binary().with_context(|| {
        format!("`cargo build -p ganglion` succeeded but no binary is in {}", target_dir().display())
    })
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
