//! TLS setup: the certificate and key files turned into one shared rustls `ServerConfig`.
//!
//! Loaded once at start (and by `-t`), so a missing file, a key that is not a key, or a
//! key that does not match the certificate stops the start with a message naming the
//! option and the file. Each connection's TLS state is in `tls_layer`.
//!
//! The crypto provider is *ring*: it builds with nothing but a C compiler, where the default
//! (aws-lc-rs) also wants CMake and, on some targets, NASM.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;

/// The server's TLS configuration, or `None` where no certificate is configured.
/// `file` names the config file in messages.
pub fn server_config(config: &Config, file: &str) -> Result<Option<Arc<ServerConfig>>, String> {
    let (cert_path, key_path) = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => (cert, key),
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(format!(
                "{file}: option `tls_key` is missing: `tls_cert` needs its private key"
            ));
        }
        (None, Some(_)) => {
            return Err(format!(
                "{file}: option `tls_cert` is missing: `tls_key` needs its certificate"
            ));
        }
    };
    let certs = load_certs(cert_path).map_err(|e| format!("{file}: option `tls_cert`: {e}"))?;
    let key = load_key(key_path).map_err(|e| format!("{file}: option `tls_key`: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "{file}: options `tls_cert`/`tls_key`: {} and {} do not go together ({e}): \
                 give the key the certificate was made for",
                cert_path.display(),
                key_path.display()
            )
        })?;
    // Clients that resume sessions are mail senders under test; a small cache is plenty.
    tls.session_storage = rustls::server::ServerSessionMemoryCache::new(256);
    Ok(Some(Arc::new(tls)))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| unreadable(path, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not a PEM certificate chain: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no certificate: give a PEM file with -----BEGIN CERTIFICATE-----",
            path.display()
        ));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::Io(io) => unreadable(path, &io),
        other => format!(
            "{} holds no usable private key ({other}): give a PEM key in PKCS#8, PKCS#1 or SEC1 form",
            path.display()
        ),
    })
}

fn unreadable(path: &Path, error: &dyn std::fmt::Display) -> String {
    format!("cannot read {}: {error}", path.display())
}
