//! TLS to Redis (`rediss://`): one rustls client configuration (ring as the crypto provider)
//! for fred's pool and subscribers and for the bulk writer's own connections.
//!
//! The roots are the system's (rustls-native-certs, what Azure Cache for Redis's public
//! certificate chains to) unless the URL's `ca-file=PATH` names a PEM file of CA certificates,
//! for a private CA; then only those are trusted. The server's name is checked against the
//! URL's host.

use std::path::Path;
use std::sync::Arc;

use projections::view_store::ViewError;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

fn refused(why: String) -> ViewError {
    ViewError::Unavailable(format!("Redis TLS: {why}"))
}

/// The client configuration: the CAs of `ca_file` if given, else the system's roots.
pub(crate) fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, ViewError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| refused(format!("reading ca-file {}: {e}", path.display())))?
                .collect::<Result<_, _>>()
                .map_err(|e| refused(format!("ca-file {}: {e}", path.display())))?;
            if certificates.is_empty() {
                return Err(refused(format!(
                    "ca-file {} holds no PEM certificate",
                    path.display()
                )));
            }
            for certificate in certificates {
                roots
                    .add(certificate)
                    .map_err(|e| refused(format!("ca-file {}: {e}", path.display())))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            // A broken file among many is no reason to trust none; only no root at all is.
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(refused(format!(
                    "no system root certificate could be loaded ({:?}); name one with ca-file=PATH",
                    found.errors
                )));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| refused(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
