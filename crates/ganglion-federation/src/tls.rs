//! TLS of the federation listener: the configured certificate, or a self-signed one generated on
//! first start (enough for a test federation, whose peers do not verify certificates).

use std::{path::Path, sync::Arc};

use ganglion_config::Config;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("TLS: {0}")]
    Config(String),
}

/// The listener's rustls config, from `federation.tls_certificate` and `tls_private_key`, or from
/// `<data_dir>/federation-tls.{crt,key}`, generated for the server name if absent.
pub fn server_config(config: &Config) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (certificate, key) = match (&config.federation.tls_certificate, &config.federation.tls_private_key) {
        (Some(certificate), Some(key)) => (certificate.clone(), key.clone()),
        _ => {
            let certificate = config.data_dir.join("federation-tls.crt");
            let key = config.data_dir.join("federation-tls.key");
            if !certificate.exists() || !key.exists() {
                generate_self_signed(&config.server_name, &certificate, &key)?;
                tracing::info!(certificate = %certificate.display(), "generated a self-signed federation certificate");
            }
            (certificate, key)
        }
    };
    let chain = CertificateDer::pem_file_iter(&certificate)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|error| file_error(&certificate, error))?;
    if chain.is_empty() {
        return Err(file_error(&certificate, "holds no certificate"));
    }
    let key = PrivateKeyDer::from_pem_file(&key).map_err(|error| file_error(&key, error))?;
    let mut server =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Config(error.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|error| TlsError::Config(error.to_string()))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}

/// A self-signed certificate for the host of `server_name` (and `localhost`).
fn generate_self_signed(server_name: &str, certificate: &Path, key: &Path) -> Result<(), TlsError> {
    let host = match server_name.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']')) => {
            host
        }
        _ => server_name,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let names: Vec<String> =
        if host == "localhost" { vec![host.into()] } else { vec![host.into(), "localhost".into()] };
    let generated =
        rcgen::generate_simple_self_signed(names).map_err(|error| TlsError::Config(error.to_string()))?;
    if let Some(parent) = certificate.parent() {
        std::fs::create_dir_all(parent).map_err(|error| file_error(parent, error))?;
    }
    std::fs::write(key, generated.signing_key.serialize_pem()).map_err(|error| file_error(key, error))?;
    restrict(key);
    std::fs::write(certificate, generated.cert.pem()).map_err(|error| file_error(certificate, error))?;
    Ok(())
}

/// The private key is readable by its owner only.
fn restrict(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
}

fn file_error(path: &Path, error: impl std::fmt::Display) -> TlsError {
    TlsError::File { path: path.display().to_string(), message: error.to_string() }
}
