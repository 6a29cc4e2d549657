//! Python tools for the tests, each in a virtual environment made once from PyPI under the
//! target directory: matrix-nio (with its end-to-end encryption extra) for interoperability
//! tests, moto's S3 server for media stored in S3, and ansible-core with supervisor for the
//! playbook test ([`ansible_venv`], built on the general [`python_venv`]).

use std::{
    path::PathBuf,
    process::Command,
    sync::{Mutex, OnceLock},
};

use anyhow::Context as _;

/// The pinned matrix-nio, with the `e2e` extra (its crypto on the vodozemac bindings).
const NIO: &str = "matrix-nio[e2e]==0.26.0";
const PYTHON_ENV: &str = "GANGLION_TEST_PYTHON";

/// The pinned moto, an S3-compatible server (`moto_server`).
const MOTO: &str = "moto[server]==5.2.5";

/// The pinned ansible-core (`ansible-playbook`) and supervisor (`supervisord`, the service
/// manager the playbook uses where systemd is absent, as in the test).
const ANSIBLE: &[&str] = &["ansible-core==2.19.14", "supervisor==4.3.0"];

static PROVISIONED: OnceLock<Mutex<Option<PathBuf>>> = OnceLock::new();
static MOTO_PROVISIONED: OnceLock<Mutex<Option<PathBuf>>> = OnceLock::new();
/// Serialises [`python_venv`]: one installation at a time in this process.
static VENVS: Mutex<()> = Mutex::new(());
/// What [`python_venv`] installed, in the venv: a venv whose file differs is installed again.
const REQUIREMENTS_FILE: &str = "ganglion-requirements.txt";

/// The virtual environment `<target>/<name>` with exactly `requirements` (pip specifiers, pinned)
/// installed from PyPI: made (`python3 -m venv`, `pip install`) on first use, or when the
/// requirements changed since; its directory. Blocks for as long as the installation takes;
/// call it from `spawn_blocking`.
pub fn python_venv(name: &str, requirements: &[&str]) -> anyhow::Result<PathBuf> {
    let _one_at_a_time = VENVS.lock().unwrap_or_else(|e| e.into_inner());
    let venv = crate::binary::target_dir().join(name);
    let python = venv.join("bin").join("python");
    let wanted = requirements.join("\n") + "\n";
    let marker = venv.join(REQUIREMENTS_FILE);
    if python.is_file() && std::fs::read_to_string(&marker).is_ok_and(|installed| installed == wanted) {
        return Ok(venv);
    }
    if !python.is_file() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv), "python3 -m venv")?;
    }
    run(
        Command::new(&python).args(["-m", "pip", "install", "--quiet"]).args(requirements),
        &format!("pip install {}", requirements.join(" ")),
    )?;
    std::fs::write(&marker, wanted).with_context(|| format!("writing {}", marker.display()))?;
    Ok(venv)
}

/// `<target>/ansible-venv`, with ansible-core and supervisor (both pinned) from PyPI: its `bin`
/// has `ansible-playbook`, `supervisord` and `supervisorctl`.
pub fn ansible_venv() -> anyhow::Result<PathBuf> {
    let venv = python_venv("ansible-venv", ANSIBLE)?;
    for tool in ["ansible-playbook", "supervisord", "supervisorctl"] {
        anyhow::ensure!(venv.join("bin").join(tool).is_file(), "{} has no {tool}", venv.display());
    }
    Ok(venv)
}

/// `moto_server` from `<target>/moto-venv`, installed on first use (blocking, as above).
pub fn moto_server() -> anyhow::Result<PathBuf> {
    let mut provisioned =
        MOTO_PROVISIONED.get_or_init(|| Mutex::new(None)).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(server) = provisioned.as_ref() {
        return Ok(server.clone());
    }
    let venv = crate::binary::target_dir().join("moto-venv");
    let python = venv.join("bin").join("python");
    let server = venv.join("bin").join("moto_server");
    let has_moto = || {
        server.is_file()
            && Command::new(&python)
                .args(["-c", "import moto.server, flask_cors"])
                .output()
                .is_ok_and(|output| output.status.success())
    };
    if !has_moto() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv), "python3 -m venv")?;
        run(Command::new(&python).args(["-m", "pip", "install", "--quiet", MOTO]), "pip install moto")?;
        anyhow::ensure!(has_moto(), "{} has no moto server after installing it", venv.display());
    }
    *provisioned = Some(server.clone());
    Ok(server)
}

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
