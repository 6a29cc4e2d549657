//! Antivirus scanning with ClamAV's `clamd` over its socket (`INSTREAM`): every file is scanned
//! once per content hash, before it is first served, and the verdict is stored. An infected file
//! is never served; when clamd cannot be reached, nothing unscanned is served either (fail
//! closed), and the log says why.

use std::{path::PathBuf, time::Duration};

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use ganglion_http::MatrixError;
use ganglion_storage::media as media_store;
use ganglion_types::ErrorClass;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::{MediaError, MediaState};

/// clamd's largest `INSTREAM` chunk is its `StreamMaxLength`; chunks this size suit any setting.
const CHUNK: usize = 64 * 1024;
/// clamd's answer is one short line.
const MAX_REPLY: usize = 4096;

#[derive(Debug, Clone)]
pub enum ClamdAddress {
    Unix(PathBuf),
    Tcp(String),
}

impl ClamdAddress {
    /// `unix:/run/clamav/clamd.ctl` or `tcp://127.0.0.1:3310`.
    pub fn parse(address: &str) -> Option<ClamdAddress> {
        if let Some(path) = address.strip_prefix("unix:") {
            return (!path.is_empty()).then(|| ClamdAddress::Unix(PathBuf::from(path)));
        }
        let host = address.strip_prefix("tcp://")?;
        (!host.is_empty()).then(|| ClamdAddress::Tcp(host.to_owned()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    /// What clamd found (`Eicar-Signature`).
    Infected(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("clamd is unreachable: {0}")]
    Unreachable(std::io::Error),
    #[error("clamd did not answer within {0:?}")]
    Timeout(Duration),
    #[error("clamd answered {0:?}")]
    Refused(String),
    #[error("reading the file to scan: {0}")]
    File(String),
}

pub struct Clamd {
    address: ClamdAddress,
    timeout: Duration,
}

trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

impl Clamd {
    pub fn new(address: ClamdAddress, timeout: Duration) -> Clamd {
        Clamd { address, timeout }
    }

    /// Scans `body` (an `INSTREAM` session of its own).
    pub async fn scan<E: std::fmt::Display>(
        &self,
        body: impl Stream<Item = Result<Bytes, E>>,
    ) -> Result<Verdict, ScanError> {
        tokio::time::timeout(self.timeout, self.scan_unbounded(body))
            .await
            .map_err(|_| ScanError::Timeout(self.timeout))?
    }

    async fn scan_unbounded<E: std::fmt::Display>(
        &self,
        body: impl Stream<Item = Result<Bytes, E>>,
    ) -> Result<Verdict, ScanError> {
        let mut connection: Box<dyn Connection> = match &self.address {
            ClamdAddress::Unix(path) => {
                Box::new(tokio::net::UnixStream::connect(path).await.map_err(ScanError::Unreachable)?)
            }
            ClamdAddress::Tcp(host) => {
                Box::new(tokio::net::TcpStream::connect(host).await.map_err(ScanError::Unreachable)?)
            }
        };
        connection.write_all(b"zINSTREAM\0").await.map_err(ScanError::Unreachable)?;
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|error| ScanError::File(error.to_string()))?;
            for piece in chunk.chunks(CHUNK) {
                // clamd closes the stream early past its size limit; its answer says so.
                let sent = async {
                    connection.write_all(&(piece.len() as u32).to_be_bytes()).await?;
                    connection.write_all(piece).await
                };
                if sent.await.is_err() {
                    return Err(reply(&mut connection)
                        .await
                        .map_or_else(|| ScanError::Refused("nothing".into()), ScanError::Refused));
                }
            }
        }
        connection.write_all(&0u32.to_be_bytes()).await.map_err(ScanError::Unreachable)?;
        let answer = reply(&mut connection).await.ok_or_else(|| ScanError::Refused(String::new()))?;
        parse_reply(&answer)
    }
}

/// clamd's answer, up to its terminating NUL (`None` if it sent nothing).
async fn reply(connection: &mut Box<dyn Connection>) -> Option<String> {
    let mut answer = Vec::new();
    let mut buffer = [0u8; 512];
    while answer.len() < MAX_REPLY {
        match connection.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                answer.extend_from_slice(&buffer[..read]);
                if answer.contains(&0) {
                    break;
                }
            }
        }
    }
    let end = answer.iter().position(|byte| *byte == 0).unwrap_or(answer.len());
    let text = String::from_utf8_lossy(&answer[..end]).trim().to_owned();
    (!text.is_empty()).then_some(text)
}

/// `stream: OK`, `stream: Eicar-Signature FOUND`, or an error (`… ERROR`).
fn parse_reply(answer: &str) -> Result<Verdict, ScanError> {
    let result = answer.strip_prefix("stream:").map(str::trim).unwrap_or(answer);
    if result == "OK" {
        return Ok(Verdict::Clean);
    }
    match result.strip_suffix(" FOUND") {
        Some(name) => Ok(Verdict::Infected(name.to_owned())),
        None => Err(ScanError::Refused(answer.to_owned())),
    }
}

/// Refuses to serve `sha256` unless clamd found it clean (scanning it now if it never was);
/// `Ok` at once when scanning is off.
pub(crate) async fn ensure_clean(state: &MediaState, sha256: &str) -> Result<(), MatrixError> {
    let Some(clamd) = &state.scanner else { return Ok(()) };
    let verdict = verdict_of(state, clamd, sha256).await?;
    refuse_infected(verdict)
}

/// The stored verdict on `sha256`, scanning it now if it never was.
pub(crate) async fn verdict_of(
    state: &MediaState,
    clamd: &Clamd,
    sha256: &str,
) -> Result<media_store::ScanVerdict, MatrixError> {
    Ok(cached_verdict(state, clamd, sha256, sha256, |chunk| chunk).await?.0)
}

/// The verdict stored under `subject`; else the stored file `content_sha256`, each chunk passed
/// through `transform` (an attachment's decryption), is scanned now and the verdict stored under
/// `subject`. `true` beside a verdict made now.
pub(crate) async fn cached_verdict(
    state: &MediaState,
    clamd: &Clamd,
    subject: &str,
    content_sha256: &str,
    mut transform: impl FnMut(Bytes) -> Bytes + Send,
) -> Result<(media_store::ScanVerdict, bool), MatrixError> {
    let stored = {
        let mut conn = state.db.conn().await?;
        media_store::scan_verdict_of(&mut conn, subject).await?
    };
    if let Some(verdict) = stored {
        return Ok((verdict, false));
    }
    let Some(file) = state.store.get(content_sha256).await.map_err(MediaError::from)? else {
        return Err(MatrixError::not_found("Media not found"));
    };
    let body = file.body.map(move |chunk| chunk.map(&mut transform));
    let verdict = stored_verdict(&state.metrics, clamd.scan(body).await, subject)?;
    let mut conn = state.db.conn().await?;
    media_store::insert_scan_verdict(&mut conn, subject, &verdict, ganglion_storage::now_ms()).await?;
    Ok((verdict, true))
}

/// A scan's outcome as a verdict to store, or the error that serves nothing (fail closed).
pub(crate) fn stored_verdict(
    metrics: &ganglion_metrics::MediaMetrics,
    outcome: Result<Verdict, ScanError>,
    subject: &str,
) -> Result<media_store::ScanVerdict, MatrixError> {
    use ganglion_metrics::ScanOutcome;
    match outcome {
        Ok(Verdict::Clean) => {
            metrics.scanned(ScanOutcome::Clean);
            Ok(media_store::ScanVerdict { clean: true, info: None })
        }
        Ok(Verdict::Infected(name)) => {
            metrics.scanned(ScanOutcome::Infected);
            tracing::warn!(subject, virus = %name, "refused an infected file");
            Ok(media_store::ScanVerdict { clean: false, info: Some(name) })
        }
        Err(error) => {
            metrics.scanned(ScanOutcome::Failed);
            tracing::error!(%error, subject, "antivirus scan failed; the file is not served");
            Err(MatrixError::new(
                ErrorClass::Unavailable,
                "The file cannot be scanned for viruses now, so it is not served; try again later",
            ))
        }
    }
}

/// `Ok` for a clean verdict; for an infected one the error every endpoint answers, with the
/// scanner's finding and the content scanner API's reason.
pub(crate) fn refuse_infected(verdict: media_store::ScanVerdict) -> Result<(), MatrixError> {
    if verdict.clean {
        return Ok(());
    }
    let info = verdict.info.unwrap_or_else(|| "malware".to_owned());
    Err(MatrixError::forbidden(format!("This file is infected ({info}) and is not served"))
        .with("info", serde_json::Value::String(info))
        .with("reason", serde_json::Value::String("MCS_MEDIA_NOT_CLEAN".into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_replies_parse() {
        assert!(matches!(ClamdAddress::parse("unix:/run/clamd.ctl"), Some(ClamdAddress::Unix(_))));
        assert!(matches!(ClamdAddress::parse("tcp://127.0.0.1:3310"), Some(ClamdAddress::Tcp(_))));
        assert!(ClamdAddress::parse("127.0.0.1:3310").is_none());
        assert!(ClamdAddress::parse("unix:").is_none());
        assert_eq!(parse_reply("stream: OK").unwrap(), Verdict::Clean);
        assert_eq!(
            parse_reply("stream: eicar.com.UNOFFICIAL FOUND").unwrap(),
            Verdict::Infected("eicar.com.UNOFFICIAL".into())
        );
        assert!(matches!(parse_reply("INSTREAM size limit exceeded. ERROR"), Err(ScanError::Refused(_))));
    }
}
