//! A throwaway ClamAV daemon: the installed `clamd` (Debian `clamav-daemon`) in the foreground on
//! a Unix socket in a temp directory, with a signature database the test writes, so nothing is
//! downloaded: the EICAR test file's MD5 (`sigtool --md5`), which clamd reports as
//! `eicar.com.UNOFFICIAL FOUND`. Killed on drop (and with the test process).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::{
    binary::tail,
    server::{Supervised, append_log},
};

/// The EICAR anti-virus test file: harmless, and detected by every scanner as a virus.
pub const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
const START_DEADLINE: Duration = Duration::from_secs(60);

pub struct Clamd {
    process: Option<Supervised>,
    dir: tempfile::TempDir,
}

impl Clamd {
    /// Writes the signature database and config, starts `clamd` and waits (bounded) until its
    /// socket accepts connections.
    pub fn start() -> anyhow::Result<Clamd> {
        let clamd = find("clamd", &["/usr/sbin/clamd"])?;
        let sigtool = find("sigtool", &["/usr/bin/sigtool"])?;
        let dir = tempfile::Builder::new().prefix("ganglion-clamd-").tempdir().context("temp dir")?;
        let path = dir.path();
        fs::create_dir_all(path.join("db"))?;
        fs::write(path.join("eicar.com"), EICAR)?;
        let signature = Command::new(&sigtool)
            .arg("--md5")
            .arg("eicar.com")
            .current_dir(path)
            .output()
            .context("running sigtool --md5")?;
        anyhow::ensure!(signature.status.success(), "sigtool --md5 failed");
        fs::write(path.join("db/test.hdb"), &signature.stdout)?;
        let socket = path.join("clamd.sock");
        let config = format!(
            "Foreground yes\nDatabaseDirectory {db}\nLocalSocket {socket}\nPidFile {pid}\nLogFile {log}\n\
             StreamMaxLength 200M\nUser {user}\n",
            db = path.join("db").display(),
            socket = socket.display(),
            pid = path.join("clamd.pid").display(),
            log = path.join("clamd.log").display(),
            user = whoami(),
        );
        fs::write(path.join("clamd.conf"), config)?;
        let output = append_log(&path.join("clamd.stdout.log"))?;
        let mut command = Command::new(&clamd);
        command
            .arg("-c")
            .arg(path.join("clamd.conf"))
            .current_dir(path)
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output);
        let process = Supervised::spawn("clamd", command, libc::SIGKILL, None)?;
        let deadline = Instant::now() + START_DEADLINE;
        let mut clamd = Clamd { process: Some(process), dir };
        loop {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                return Ok(clamd);
            }
            let exited = clamd.process.as_ref().and_then(|process| process.wait(Duration::ZERO));
            if exited.is_some() || Instant::now() > deadline {
                clamd.process = None;
                anyhow::bail!(
                    "clamd did not start ({exited:?}):\n{}",
                    tail(
                        &fs::read_to_string(clamd.dir.path().join("clamd.stdout.log")).unwrap_or_default(),
                        30
                    )
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Where the server reaches it: `unix:<socket>` (`media.clamd`).
    pub fn address(&self) -> String {
        format!("unix:{}", self.socket().display())
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("clamd.sock")
    }

    /// Stops it (a crash), leaving the socket file behind.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        match self.process.take() {
            Some(process) => process.kill(),
            None => Ok(()),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

fn find(name: &str, fallbacks: &[&str]) -> anyhow::Result<PathBuf> {
    let from_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name));
    from_path
        .chain(fallbacks.iter().map(PathBuf::from))
        .find(|path| path.is_file())
        .with_context(|| format!("{name} not found: install the clamav-daemon Debian package"))
}

/// clamd drops privileges to `User`; the test's own user keeps the temp directory readable.
fn whoami() -> String {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let output = Command::new("id").args(["-un", &uid.to_string()]).output();
    output
        .ok()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "root".to_owned())
}
