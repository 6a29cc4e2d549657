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
        Ok(ServerKey { server_name: server_name.to_owned(), key_pair })
    }

    /// A fresh in-memory key, for tests.
    pub fn ephemeral(server_name: &str) -> ServerKey {
        let document = Ed25519KeyPair::generate();
        let key_pair = Ed25519KeyPair::from_der(&document, "test".into()).expect("generated key parses");
        ServerKey { server_name: server_name.to_owned(), key_pair }
    }
}
