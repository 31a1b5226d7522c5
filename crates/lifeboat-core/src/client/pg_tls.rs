//! TLS for Lifeboat's own PostgreSQL connections (snapshot export, fingerprint, checks,
//! restore targets, drills), with libpq's meaning of every `sslmode`:
//!
//! | sslmode | TLS | certificate checked against a CA | host name checked |
//! | --- | --- | --- | --- |
//! | `disable` | never | - | - |
//! | `allow`, `prefer` (default) | if the server offers it | no | no |
//! | `require` | always | only if `sslrootcert` is given (as libpq) | no |
//! | `verify-ca` | always | yes | no |
//! | `verify-full` | always | yes | yes |
//!
//! `sslrootcert` names a PEM file of CA certificates, or `system` for the system's CAs (which,
//! as in libpq, needs `verify-full`). `sslcert` and `sslkey` give a client certificate. The
//! same URL parameters reach pg_dump, pg_restore and psql, whose libpq reads them itself.
//! rustls does the TLS (already in the build for S3 and Redis), through tokio-postgres-rustls,
//! the maintained adapter between the two.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use crate::error::{Error, Result};
use crate::secret::SecretUrl;

/// `sslmode`, as libpq reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS if the server offers it, else plain; no certificate check.
    Prefer,
    /// TLS always; the certificate is checked only when a root certificate is given (as libpq).
    Require,
    /// TLS, the certificate must chain to the root certificate.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host.
    VerifyFull,
}

impl SslMode {
    fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where the CA certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Roots {
    File(PathBuf),
    System,
}

/// The TLS settings of one PostgreSQL URL.
#[derive(Debug, Clone)]
pub struct PgTls {
    mode: SslMode,
    roots: Option<Roots>,
    client_cert: Option<(PathBuf, PathBuf)>,
}

impl PgTls {
    /// Reads `sslmode`, `sslrootcert`, `sslcert` and `sslkey` from the URL's query.
    pub fn from_url(url: &SecretUrl) -> Result<PgTls> {
        let params = url.query_pairs();
        let get = |key: &str| {
            params
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let mode = match get("sslmode").as_deref() {
            None | Some("prefer" | "allow") => SslMode::Prefer,
            Some("disable") => SslMode::Disable,
            Some("require") => SslMode::Require,
            Some("verify-ca") => SslMode::VerifyCa,
            Some("verify-full") => SslMode::VerifyFull,
            Some(other) => {
                return Err(
                    Error::config(format!("sslmode={other} is not a PostgreSQL sslmode"))
                        .with_hint("use disable, prefer, require, verify-ca or verify-full"),
                )
            }
        };
        let roots = get("sslrootcert").map(|v| match v.as_str() {
            "system" => Roots::System,
            path => Roots::File(PathBuf::from(path)),
        });
        if roots == Some(Roots::System) && mode != SslMode::VerifyFull {
            return Err(Error::config(format!(
                "sslrootcert=system needs sslmode=verify-full (got sslmode={})",
                mode.as_str()
            ))
            .with_hint("with the system's CAs anyone can get a certificate: the host name must be checked too"));
        }
        if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && roots.is_none() {
            return Err(Error::config(format!(
                "sslmode={} needs sslrootcert: the CA certificate (PEM file) that signed the server's certificate, or sslrootcert=system",
                mode.as_str()
            ))
            .with_hint("add &sslrootcert=/path/to/ca.pem to the URL (your provider publishes it), or sslrootcert=system for a public CA"));
        }
        let client_cert = match (get("sslcert"), get("sslkey")) {
            (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
            (None, None) => None,
            _ => {
                return Err(Error::config(
                    "sslcert and sslkey go together: a client certificate needs its key",
                ))
            }
        };
        Ok(PgTls {
            mode,
            roots,
            client_cert,
        })
    }

    /// The `sslmode` in force.
    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// What tokio-postgres negotiates: whether TLS is tried, and whether it is required.
    pub fn postgres_mode(&self) -> PgSslMode {
        match self.mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
        }
    }

    /// The `sslrootcert` value, for messages.
    pub fn roots_description(&self) -> String {
        match &self.roots {
            Some(Roots::File(p)) => format!("sslrootcert={}", p.display()),
            Some(Roots::System) => "sslrootcert=system".to_string(),
            None => "no sslrootcert".to_string(),
        }
    }

    /// The rustls connector for these settings.
    pub fn connector(&self) -> Result<MakeRustlsConnect> {
        crate::net::tls_provider();
        let builder = rustls::ClientConfig::builder();
        let provider = builder.crypto_provider().clone();
        let verifier: Arc<dyn ServerCertVerifier> = match (&self.roots, self.mode) {
            // libpq: without a root certificate, prefer and require encrypt but do not check.
            (None, _) | (_, SslMode::Disable | SslMode::Prefer) => {
                Arc::new(NoCertificateCheck(provider.clone()))
            }
            (Some(roots), mode) => {
                let store = Arc::new(self.root_store(roots)?);
                let webpki = WebPkiServerVerifier::builder_with_provider(store, provider.clone())
                    .build()
                    .map_err(|e| {
                        Error::config(format!("cannot use {}: {e}", self.roots_description()))
                    })?;
                if mode == SslMode::VerifyFull {
                    webpki
                } else {
                    // require with a root certificate behaves as verify-ca, as in libpq.
                    Arc::new(CaOnly(webpki))
                }
            }
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                use rustls::pki_types::pem::PemObject;
                let certs = CertificateDer::pem_file_iter(cert)
                    .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                    .map_err(|e| {
                        Error::config(format!(
                            "cannot read the client certificate sslcert={}: {e}",
                            cert.display()
                        ))
                    })?;
                let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    Error::config(format!(
                        "cannot read the client key sslkey={}: {e}",
                        key.display()
                    ))
                })?;
                builder.with_client_auth_cert(certs, key_der).map_err(|e| {
                    Error::config(format!(
                        "sslcert={} and sslkey={} do not make a client certificate: {e}",
                        cert.display(),
                        key.display()
                    ))
                })?
            }
        };
        Ok(MakeRustlsConnect::new(config))
    }

    fn root_store(&self, roots: &Roots) -> Result<rustls::RootCertStore> {
        let mut store = rustls::RootCertStore::empty();
        match roots {
            Roots::File(path) => {
                use rustls::pki_types::pem::PemObject;
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                    .map_err(|e| {
                        Error::config(format!(
                            "cannot read the CA certificates sslrootcert={}: {e}",
                            path.display()
                        ))
                        .with_hint("sslrootcert must name a PEM file of CA certificates")
                    })?;
                for cert in certs {
                    store.add(cert).map_err(|e| {
                        Error::config(format!(
                            "sslrootcert={} holds a certificate rustls rejects: {e}",
                            path.display()
                        ))
                    })?;
                }
            }
            Roots::System => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = store.add(cert);
                }
            }
        }
        if store.is_empty() {
            return Err(Error::config(format!(
                "{} holds no CA certificate",
                self.roots_description()
            )));
        }
        Ok(store)
    }

    /// Explains a failed TLS handshake or a refusal that TLS settings fix: (what failed, hint).
    pub fn explain(
        &self,
        host: &str,
        failure: &(dyn std::error::Error + 'static),
    ) -> Option<(String, String)> {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(failure);
        while let Some(e) = source {
            // The handshake error arrives inside an io::Error, whose `source()` skips it.
            let inner = e
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .map(|inner| inner as &(dyn std::error::Error + 'static));
            for candidate in [Some(e), inner].into_iter().flatten() {
                if let Some(rustls::Error::InvalidCertificate(cert)) =
                    candidate.downcast_ref::<rustls::Error>()
                {
                    return Some(self.explain_certificate(host, cert));
                }
            }
            source = e.source();
        }
        let text = failure.to_string();
        if text.contains("server does not support TLS") {
            return Some((
                format!("{host} does not accept TLS connections, and sslmode={} requires TLS", self.mode.as_str()),
                "enable ssl on the server, or use sslmode=prefer (or disable) on a network you trust".to_string(),
            ));
        }
        None
    }

    fn explain_certificate(&self, host: &str, e: &CertificateError) -> (String, String) {
        match e {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => (
                format!("the server's certificate is not valid for the host name {host}"),
                "connect with a host name the certificate names (sslmode=verify-full checks it), or use sslmode=verify-ca to check only the CA".to_string(),
            ),
            CertificateError::UnknownIssuer | CertificateError::BadSignature => (
                format!(
                    "the certificate of {host} is not signed by a CA in {}",
                    self.roots_description()
                ),
                "set sslrootcert to the CA certificate that signed the server's certificate (your provider publishes it), or sslrootcert=system for a public CA".to_string(),
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => (
                format!("the certificate of {host} has expired"),
                "the server's certificate must be renewed; check also this machine's clock".to_string(),
            ),
            other => (
                format!("the certificate of {host} was refused: {other:?}"),
                format!(
                    "check sslrootcert ({}) and sslmode={}",
                    self.roots_description(),
                    self.mode.as_str()
                ),
            ),
        }
    }
}

/// `verify-ca`: the chain must lead to a trusted CA; the name is not checked (libpq).
#[derive(Debug)]
struct CaOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for CaOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without a root certificate: encrypted, the certificate not checked
/// (libpq's meaning; the handshake's signatures are still verified).
#[derive(Debug)]
struct NoCertificateCheck(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(query: &str) -> Result<PgTls> {
        PgTls::from_url(&SecretUrl::parse(&format!("postgres://u@db.example/app?{query}")).unwrap())
    }

    #[test]
    fn modes_read_as_libpq_reads_them() {
        assert_eq!(tls("").unwrap().mode(), SslMode::Prefer);
        assert_eq!(
            tls("sslmode=disable").unwrap().postgres_mode(),
            PgSslMode::Disable
        );
        assert_eq!(
            tls("sslmode=require").unwrap().postgres_mode(),
            PgSslMode::Require
        );
        assert_eq!(
            tls("sslmode=verify-full&sslrootcert=/x.pem")
                .unwrap()
                .mode(),
            SslMode::VerifyFull
        );
        let e = tls("sslmode=verify-full").unwrap_err();
        assert!(e.message().contains("needs sslrootcert"), "{}", e.message());
        let e = tls("sslmode=require&sslrootcert=system").unwrap_err();
        assert!(
            e.message().contains("needs sslmode=verify-full"),
            "{}",
            e.message()
        );
        assert!(tls("sslmode=sometimes").is_err());
        assert!(tls("sslcert=/c.pem").is_err());
    }
}
