//! Python clients for interoperability tests: a virtual environment with matrix-nio (and its
//! end-to-end encryption extra) from PyPI, made once under the target directory.

use std::{
    path::PathBuf,
    process::Command,
    sync::{Mutex, OnceLock},
};

use anyhow::Context as _;

/// The pinned matrix-nio, with the `e2e` extra (its crypto on the vodozemac bindings).
const NIO: &str = "matrix-nio[e2e]==0.26.0";
const PYTHON_ENV: &str = "GANGLION_TEST_PYTHON";

static PROVISIONED: OnceLock<Mutex<Option<PathBuf>>> = OnceLock::new();

/// A Python interpreter that can `import nio` with encryption: `$GANGLION_TEST_PYTHON`, else
/// `<target>/nio-venv/bin/python`, created (`python3 -m venv`, `pip install`) on first use.
/// Blocks for as long as the installation takes; call it from `spawn_blocking`.
pub fn python_with_nio() -> anyhow::Result<PathBuf> {
    if let Some(python) = std::env::var_os(PYTHON_ENV) {
        return Ok(PathBuf::from(python));
    }
    let mut provisioned =
        PROVISIONED.get_or_init(|| Mutex::new(None)).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(python) = provisioned.as_ref() {
        return Ok(python.clone());
    }
    let venv = crate::binary::target_dir().join("nio-venv");
    let python = venv.join("bin").join("python");
    let has_nio = |python: &PathBuf| {
        Command::new(python)
            .args(["-c", "import nio, nio.crypto, vodozemac"])
            .output()
            .is_ok_and(|output| output.status.success())
    };
    if !has_nio(&python) {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv), "python3 -m venv")?;
        run(Command::new(&python).args(["-m", "pip", "install", "--quiet", NIO]), "pip install matrix-nio")?;
        anyhow::ensure!(
            has_nio(&python),
            "{} cannot import nio's encryption after installing it",
            python.display()
        );
    }
    *provisioned = Some(python.clone());
    Ok(python)
}

fn run(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let output = command.output().with_context(|| format!("running {what}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{what} failed ({}):\n{}",
        output.status,
        crate::binary::tail(&String::from_utf8_lossy(&output.stderr), 30)
    );
    Ok(())
}
