//! The server's ed25519 signing key, generated on first start and persisted.

use std::path::Path;

use base64::Engine;
use ruma::signatures::Ed25519KeyPair;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("signing key file {path}: {message}")]
    File { path: String, message: String },
}

pub struct ServerKey {
    pub server_name: String,
    pub key_pair: Ed25519KeyPair,
    /// Keys this server signed with before a rotation, served as `old_verify_keys` so that other
    /// servers can still check what they signed.
    pub retired: Vec<RetiredKey>,
}

/// A signing key no longer in use: its public half and when it stopped being used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetiredKey {
    /// `ed25519:<version>`.
    pub key_id: String,
    /// Unpadded base64.
    pub public_key: String,
    pub expired_ts: i64,
}

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerKey")
            .field("server_name", &self.server_name)
            .field("version", &self.key_pair.version())
            .finish()
    }
}

const ENGINE: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;

impl ServerKey {
    /// Loads the key from `path` (`ed25519 <version> <base64 PKCS#8>`), creating it if absent.
    pub fn load_or_generate(server_name: &str, path: &Path) -> Result<ServerKey, KeyError> {
        let error = |message: String| KeyError::File { path: path.display().to_string(), message };
        if !path.exists() {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| error(e.to_string()))?;
            }
            let document = Ed25519KeyPair::generate();
            let version =
                format!("a_{}", &ENGINE.encode(&document[document.len() - 4..]).replace(['+', '/'], "_"));
            let line = format!("ed25519 {version} {}\n", ENGINE.encode(&document));
            std::fs::write(path, line).map_err(|e| error(e.to_string()))?;
        }
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let mut parts = text.split_whitespace();
        let (Some("ed25519"), Some(version), Some(encoded)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(error("expected `ed25519 <version> <base64>`".into()));
        };
        let document = ENGINE.decode(encoded.trim_end_matches('=')).map_err(|e| error(e.to_string()))?;
        let key_pair =
            Ed25519KeyPair::from_der(&document, version.to_owned()).map_err(|e| error(e.to_string()))?;
        let retired = read_retired(&retired_path(path))?;
        Ok(ServerKey { server_name: server_name.to_owned(), key_pair, retired })
    }

    /// `ed25519:<version>` of the key in use.
    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.key_pair.version())
    }

    /// Unpadded base64 of the public key in use.
    pub fn public_key(&self) -> String {
        ENGINE.encode(self.key_pair.public_key())
    }

    /// Retires the key at `path` (its public half goes to `<path>.old`, expired at `now_ms`) and
    /// generates a new one in its place. Returns the new key's id.
    pub fn rotate(path: &Path, now_ms: i64) -> Result<String, KeyError> {
        if !path.exists() {
            return Err(KeyError::File {
                path: path.display().to_string(),
                message: "no signing key to retire (the server makes one on first start)".into(),
            });
        }
        let old = ServerKey::load_or_generate("rotating", path)?;
        let old_path = retired_path(path);
        let error = |message: String| KeyError::File { path: old_path.display().to_string(), message };
        let mut retired = std::fs::read_to_string(&old_path).unwrap_or_default();
        retired.push_str(&format!("{} {} {}\n", old.key_id(), old.public_key(), now_ms));
        std::fs::write(&old_path, retired).map_err(|e| error(e.to_string()))?;
        // A fresh version even within the same second: the old one is never reused.
        let staging = path.with_extension("new");
        let _ = std::fs::remove_file(&staging);
        let mut key = ServerKey::load_or_generate("rotating", &staging)?;
        while key.key_id() == old.key_id() {
            std::fs::remove_file(&staging).map_err(|e| error(e.to_string()))?;
            key = ServerKey::load_or_generate("rotating", &staging)?;
        }
        std::fs::rename(&staging, path).map_err(|e| error(e.to_string()))?;
        Ok(key.key_id())
    }

    /// A fresh in-memory key, for tests.
    pub fn ephemeral(server_name: &str) -> ServerKey {
        let document = Ed25519KeyPair::generate();
        let key_pair = Ed25519KeyPair::from_der(&document, "test".into()).expect("generated key parses");
        ServerKey { server_name: server_name.to_owned(), key_pair, retired: Vec::new() }
    }
}

/// Where the retired keys of the key at `path` are kept.
pub fn retired_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".old");
    name.into()
}

/// Lines of `<key id> <public key> <expired_ts>`; no file means none.
fn read_retired(path: &Path) -> Result<Vec<RetiredKey>, KeyError> {
    let error = |message: String| KeyError::File { path: path.display().to_string(), message };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(error(e.to_string())),
    };
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next().and_then(|ts| ts.parse().ok())) {
                (Some(key_id), Some(public_key), Some(expired_ts)) if key_id.starts_with("ed25519:") => {
                    Ok(RetiredKey {
                        key_id: key_id.to_owned(),
                        public_key: public_key.to_owned(),
                        expired_ts,
                    })
                }
                _ => Err(error(format!("expected `ed25519:<version> <base64> <expired_ts>`, got {line:?}"))),
            }
        })
        .collect()
}
