//! The rustls client configuration (ring provider): trust roots, the optional extra CA
//! file, the accept-any verifier, and plain-worded handshake errors.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use super::{NetError, TlsOptions};

/// Builds the client configuration. Reads `extra_ca_file` with blocking file I/O, so
/// call it before the executor starts or on a blocking thread.
pub(crate) fn build_client_config(options: &TlsOptions) -> Result<Arc<ClientConfig>, NetError> {
    let provider = Arc::new(ring_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| NetError::Tls(format!("cannot set up TLS: {error}")))?;

    let config = if options.verify {
        let roots = load_roots(options.extra_ca_file.as_deref())?;
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate { provider }))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// Returns rustls's ring provider. rustls 0.23.48 deprecates it because ring has no
/// post-quantum key exchange. It stays because aws-lc-rs, the other provider, does not
/// cross-build for the boards with plain gcc.
#[allow(deprecated)]
fn ring_provider() -> CryptoProvider {
    ring::default_provider()
}

/// Returns the built-in web roots plus every certificate in `extra_ca_file`.
fn load_roots(extra_ca_file: Option<&Path>) -> Result<RootCertStore, NetError> {
    let mut roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let Some(path) = extra_ca_file else {
        return Ok(roots);
    };

    let certificates = CertificateDer::pem_file_iter(path).map_err(|error| {
        NetError::Tls(format!(
            "cannot read CA file {}: {error}; check that it exists and is a PEM file",
            path.display()
        ))
    })?;

    let mut added = 0;
    for (index, certificate) in certificates.enumerate() {
        let certificate = certificate.map_err(|error| {
            NetError::Tls(format!(
                "certificate {} in CA file {} is not valid PEM: {error}",
                index + 1,
                path.display()
            ))
        })?;
        roots.add(certificate).map_err(|error| {
            NetError::Tls(format!(
                "certificate {} in CA file {} cannot be used as a trust root: {error}",
                index + 1,
                path.display()
            ))
        })?;
        added += 1;
    }

    if added == 0 {
        return Err(NetError::Tls(format!(
            "CA file {} contains no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(roots)
}

/// Converts a failed handshake into an error that names the problem with `host` in plain words.
pub(crate) fn describe_handshake_error(host: &str, error: &std::io::Error) -> NetError {
    let rustls_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());

    let message = match rustls_error {
        Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => format!(
            "the certificate of {host} is not trusted: its issuer is not a known certificate \
             authority; add the CA certificate to the CA file or check the host"
        ),
        Some(rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        )) => format!(
            "the certificate of {host} has expired; the server must renew it, and nothing \
             is sent until it does"
        ),
        Some(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => format!(
            "the certificate presented by {host} is for another host name; check the host \
             in the URL, or the server's certificate"
        ),
        Some(rustls::Error::InvalidCertificate(reason)) => format!(
            "the certificate of {host} is not trusted: {}",
            rustls::Error::InvalidCertificate(reason.clone())
        ),
        Some(other) => format!("TLS handshake with {host} failed: {other}"),
        None => format!("TLS handshake with {host} failed: {error}"),
    };
    NetError::Tls(message)
}

/// Returns the name that rustls checks the certificate against and sends as SNI.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, NetError> {
    ServerName::try_from(host.to_string()).map_err(|error| {
        NetError::InvalidUrl(format!("{host} is not a valid TLS server name: {error}"))
    })
}

/// A verifier that accepts any server certificate but still checks the handshake
/// signatures, for sites whose operator turned verification off.
#[derive(Debug)]
struct AcceptAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
