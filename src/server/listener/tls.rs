//! TLS for the edge: the certificate chain and key read from PEM files, an acceptor that a
//! reload (SIGHUP) swaps for new connections without touching open ones.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{error, info};

/// Why the certificate and key could not be made into a TLS configuration, or reloads could
/// not be set up. Messages name the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate chain {}: {source}", .path.display())]
    UnreadableChain {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("cannot read certificate chain {}: no PEM certificate in it", .path.display())]
    EmptyChain { path: PathBuf },
    #[error("cannot read private key {}: {source}", .path.display())]
    UnreadableKey {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("tls: {0}")]
    Protocols(#[source] rustls::Error),
    #[error(
        "the certificate in {} and the key in {} are not usable together: {source}",
        .cert.display(),
        .key.display()
    )]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot listen for SIGHUP: {0}")]
    Sighup(#[source] std::io::Error),
}

/// A TLS certificate chain and private key read from PEM files, and the acceptor built from
/// them. Clones share the acceptor, so [`TlsCertificates::reload`] on any clone changes the
/// certificate new connections get, without touching the listener or open connections.
/// `floe serve` reloads on SIGHUP by calling that same function.
#[derive(Clone)]
pub struct TlsCertificates {
    pub(super) inner: Arc<TlsInner>,
}

pub(super) struct TlsInner {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    /// Read once per handshake, written only by a successful reload.
    pub(super) acceptor: RwLock<TlsAcceptor>,
}

impl std::fmt::Debug for TlsCertificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsCertificates")
            .field("cert", &self.inner.cert)
            .field("key", &self.inner.key)
            .finish_non_exhaustive()
    }
}

impl TlsCertificates {
    /// Reads the PEM certificate chain at `cert` and the PEM private key at `key`. Blocking
    /// (two small files).
    pub fn load(cert: &Path, key: &Path) -> Result<TlsCertificates, TlsError> {
        let config = rustls_config(cert, key)?;
        Ok(TlsCertificates {
            inner: Arc::new(TlsInner {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                acceptor: RwLock::new(TlsAcceptor::from(Arc::new(config))),
            }),
        })
    }

    /// Reads both files again and, if they make a usable certificate, serves it to every new
    /// connection. On error the previous certificate stays in use. Blocking (two small files).
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = rustls_config(&self.inner.cert, &self.inner.key)?;
        let mut acceptor = self
            .inner
            .acceptor
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *acceptor = TlsAcceptor::from(Arc::new(config));
        Ok(())
    }

    pub(super) fn acceptor(&self) -> TlsAcceptor {
        self.inner
            .acceptor
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A rustls server configuration (ring provider, TLS 1.2 and 1.3, ALPN `http/1.1`) from PEM
/// files; errors name the file at fault.
pub(super) fn rustls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::UnreadableChain {
            path: cert.to_path_buf(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::EmptyChain {
            path: cert.to_path_buf(),
        });
    }
    let private_key =
        PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::UnreadableKey {
            path: key.to_path_buf(),
            source,
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Protocols)?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|source| TlsError::Mismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            source,
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Reloads `tls` on every SIGHUP until the task is aborted; a failed reload keeps the previous
/// certificate and is logged.
#[cfg(unix)]
pub(crate) fn reload_on_sighup(
    tls: TlsCertificates,
) -> Result<tokio::task::JoinHandle<()>, TlsError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup()).map_err(TlsError::Sighup)?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let certificates = tls.clone();
            match tokio::task::spawn_blocking(move || certificates.reload()).await {
                Ok(Ok(())) => info!(cert = %tls.inner.cert.display(), "tls certificate reloaded"),
                Ok(Err(reason)) => error!(
                    error = %reason,
                    "tls reload failed; the previous certificate stays in use"
                ),
                Err(e) => {
                    error!(error = %e, "tls reload failed; the previous certificate stays in use")
                }
            }
        }
    }))
}
