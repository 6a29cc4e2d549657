//! A throwaway S3-compatible store: moto's server (PyPI, installed once per target directory) on
//! a free loopback port, keeping everything in memory, with one bucket made for the test. Killed
//! on drop (and with the test process).

use std::{
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::{
    binary::tail,
    server::{Supervised, append_log},
};

const START_DEADLINE: Duration = Duration::from_secs(60);
pub const S3_BUCKET: &str = "ganglion-media";

pub struct S3Server {
    process: Option<Supervised>,
    port: u16,
    dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts the server, waits (bounded) for its port and creates [`S3_BUCKET`]. Blocks; call it
    /// from `spawn_blocking`.
    pub fn start() -> anyhow::Result<S3Server> {
        let moto = crate::python::moto_server()?;
        let dir = tempfile::Builder::new().prefix("ganglion-s3-").tempdir().context("temp dir")?;
        let port = crate::ports::free_port()?;
        let output = append_log(&dir.path().join("moto.log"))?;
        let mut command = Command::new(&moto);
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output);
        let process = Supervised::spawn("moto_server", command, libc::SIGKILL, None)?;
        let mut server = S3Server { process: Some(process), port, dir };
        let deadline = Instant::now() + START_DEADLINE;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = server.process.as_ref().and_then(|process| process.wait(Duration::ZERO));
            if exited.is_some() || Instant::now() > deadline {
                server.process = None;
                anyhow::bail!("moto_server did not start ({exited:?}):\n{}", server.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Creating a bucket is one unsigned PUT (moto does not check signatures).
        let created = create_bucket(port)?;
        anyhow::ensure!(
            created.trim() == "200",
            "creating the bucket answered {created}:\n{}",
            server.log_tail()
        );
        Ok(server)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `[media.s3]` section that stores media in this server's bucket.
    pub fn media_toml(&self) -> String {
        format!(
            "[media.s3]\nbucket = \"{S3_BUCKET}\"\nendpoint = \"{}\"\nallow_http = true\n\
             access_key_id = \"test\"\nsecret_access_key = \"test\"\n",
            self.endpoint()
        )
    }

    /// How many objects the bucket holds under `prefix` (`sha256/`, `uploads/`).
    pub async fn object_count(&self, prefix: &str) -> anyhow::Result<usize> {
        let http = reqwest::Client::builder().no_proxy().build()?;
        let listing = http
            .get(format!("{}/{S3_BUCKET}?list-type=2&max-keys=1000&prefix={prefix}", self.endpoint()))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(listing.matches("<Key>").count())
    }

    fn log_tail(&self) -> String {
        tail(&std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default(), 30)
    }
}

/// `PUT /<bucket>`; the answer's status code.
fn create_bucket(port: u16) -> anyhow::Result<String> {
    use std::io::{Read as _, Write as _};
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    write!(
        stream,
        "PUT /{S3_BUCKET} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer.split_whitespace().nth(1).unwrap_or_default().to_owned())
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(process) = self.process.take() {
            let _ = process.kill();
        }
    }
}
