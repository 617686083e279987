//! TLS for the worker port (and the HTTP port): the master's certificate
//! and key from PEM files, the worker's trust in the master (a CA file or
//! the pinned SHA-256 fingerprint of the master's certificate), self-signed
//! pairs for `bbc cert` and `bbc up`, and [`Stream`], the one connection
//! type both sides read frames from, plain or encrypted.
//!
//! Worker passwords travel in the `hello` frame and build output in every
//! frame after it: on any network but loopback both belong inside TLS.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CipherSuite, DigitallySignedStruct, SignatureScheme};

// For callers that hand a client configuration to reqwest (`bbc up`).
pub use rustls::ClientConfig;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How long a TLS handshake may take before the connection is dropped: a
/// client that connects and says nothing must not hold a task for ever.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// ring's suites with AES-128-GCM first. ring lists AES-256-GCM first;
/// 128-bit AES is a standard, strong choice (TLS 1.3's
/// mandatory-to-implement suite, what most servers prefer) and takes 10
/// rounds per block where AES-256 takes 14, on every byte of build output
/// a worker encrypts and the master decrypts (docs/perf.md, "TLS:
/// AES-128-GCM first"). Every other suite stays available, in ring's
/// order. Both sides use this list; the master follows the client's order
/// (rustls's default), so a worker of an earlier release still gets the
/// suite it asks for.
fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    // A stable sort: only the preferred suite moves.
    p.cipher_suites
        .sort_by_key(|s| s.suite() != CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(p)
}

/// The master's side: its certificate chain and key, read from PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = read_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("reading the private key {}: {e}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "the certificate {} and the key do not make a usable pair: {e}",
                cert.display()
            )
        })?;
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let what =
        |e: &dyn std::fmt::Display| format!("reading certificates from {}: {e}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| what(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| what(&e))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// How a worker knows it talks to its master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The master's certificate chains to a CA in this PEM file and names
    /// the host the worker connects to.
    Ca(PathBuf),
    /// The master's certificate has this SHA-256 fingerprint (of its DER
    /// encoding), whatever it names and whenever it expires: pinning, as
    /// with an SSH host key. What `bbc cert` prints.
    Fingerprint([u8; 32]),
}

/// The fingerprint as `bbc cert` prints it: `sha256:` and 64 hex digits.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The fingerprint of the first certificate in a PEM file.
pub fn fingerprint_of_file(cert: &Path) -> Result<String, String> {
    let certs = read_certs(cert)?;
    Ok(fingerprint(certs[0].as_ref()))
}

/// Reads a fingerprint as people paste it: with or without `sha256:` /
/// `SHA256:`, hex digits in either case, with or without `:` between
/// bytes (as `openssl x509 -fingerprint -sha256` prints).
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], String> {
    let t = s.trim();
    let t = t
        .strip_prefix("sha256:")
        .or_else(|| t.strip_prefix("SHA256:"))
        .or_else(|| t.strip_prefix("sha256 Fingerprint="))
        .unwrap_or(t);
    let hex: Vec<u8> = t.bytes().filter(|&b| b != b':').collect();
    let bad = || {
        format!(
            "`{s}` is not a SHA-256 fingerprint: expected 64 hex digits (colons allowed), \
             as `bbc cert` prints"
        )
    };
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16).ok_or_else(bad);
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Ok(out)
}

/// The worker's side.
pub fn client_config(trust: &Trust) -> Result<Arc<rustls::ClientConfig>, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = match trust {
        Trust::Ca(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(path)? {
                roots
                    .add(c)
                    .map_err(|e| format!("a certificate in {}: {e}", path.display()))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Fingerprint(sha) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                sha: *sha,
                provider: provider(),
            }))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The server name a worker checks the master's certificate against: the
/// host of `host:port` (an IP address or a DNS name).
pub fn server_name(master: &str) -> Result<ServerName<'static>, String> {
    let host = match master.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => master,
    };
    ServerName::try_from(host.to_string())
        .map_err(|e| format!("`{host}` cannot name a TLS server: {e}"))
}

/// Accepts the one certificate whose fingerprint was pinned; still checks
/// that the master holds its key (the handshake's signatures).
#[derive(Debug)]
struct Pinned {
    sha: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if got == self.sha {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the master's certificate has fingerprint {}, not the pinned one",
                fingerprint(end_entity.as_ref())
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A self-signed certificate and its key, both PEM, valid for `names` (DNS
/// names or IP addresses) for `days` days from now (valid from a day
/// ago, for clocks a little behind).
pub fn self_signed(names: &[String], days: i64) -> Result<(String, String), String> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .map_err(|e| format!("cannot make a certificate for {names:?}: {e}"))?;
    let now = time::OffsetDateTime::now_utc();
    // A negative `days` makes a certificate that has expired (for tests).
    params.not_before = now + time::Duration::days(days.min(0) - 1);
    params.not_after = now + time::Duration::days(days);
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        names.first().map_or("bbc", |n| n),
    );
    let key = rcgen::KeyPair::generate().map_err(|e| format!("generating a key: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("signing the certificate: {e}"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes a self-signed pair, valid `days`, to `cert` and `key` unless
/// `cert` exists (the key is written first: a crash in between leaves no
/// certificate without its key);
/// `Ok(true)` if it made one. The key is readable by its owner only.
pub fn ensure_self_signed(
    cert: &Path,
    key: &Path,
    names: &[String],
    days: i64,
) -> Result<bool, String> {
    if cert.exists() {
        return Ok(false);
    }
    let (cert_pem, key_pem) = self_signed(names, days)?;
    for p in [cert, key] {
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
    }
    write_private(key, key_pem.as_bytes())?;
    std::fs::write(cert, cert_pem).map_err(|e| format!("writing {}: {e}", cert.display()))?;
    Ok(true)
}

/// Writes a file only its owner may read (mode 0600 when it creates it):
/// a private key here, an API token for `bbc login`.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    f.write_all(bytes)
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// A connection between worker and master: plain TCP or TLS, either side.
pub enum Stream {
    Plain(TcpStream),
    Server(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Client(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    /// Accepts TLS on `tcp` (master side), within [`HANDSHAKE_TIMEOUT`].
    pub async fn accept(
        tcp: TcpStream,
        config: Arc<rustls::ServerConfig>,
    ) -> Result<Stream, String> {
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Err(_) => Err(format!(
                "no TLS handshake within {} s",
                HANDSHAKE_TIMEOUT.as_secs()
            )),
            Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
            Ok(Ok(s)) => Ok(Stream::Server(Box::new(s))),
        }
    }

    /// Starts TLS on `tcp` (worker side), within [`HANDSHAKE_TIMEOUT`].
    pub async fn connect(
        tcp: TcpStream,
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<Stream, String> {
        let connector = tokio_rustls::TlsConnector::from(config);
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp)).await {
            Err(_) => Err(format!(
                "no TLS handshake within {} s",
                HANDSHAKE_TIMEOUT.as_secs()
            )),
            Ok(Err(e)) => {
                let hint = if e.to_string().contains("peer certificate") {
                    " (the master's certificate is not one this worker trusts: check \
                     --master-ca or --master-fingerprint against `bbc cert`'s output)"
                } else {
                    ""
                };
                Err(format!("TLS handshake failed: {e}{hint}"))
            }
            Ok(Ok(s)) => Ok(Stream::Client(Box::new(s))),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Server(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Client(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Server(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Client(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Server(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Client(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Server(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Client(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Server(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Stream::Client(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Server(s) => s.is_write_vectored(),
            Stream::Client(s) => s.is_write_vectored(),
        }
    }
}

/// Installs ring as the process's rustls crypto provider, once (the HTTP
/// client and the SMTP client both take it from there).
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err: a provider is installed already, which is all we need.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_read_as_people_paste_them() {
        let fp = fingerprint(b"a certificate");
        let raw = parse_fingerprint(&fp).map_err(|e| e.to_string());
        assert!(raw.is_ok(), "{raw:?}");
        let colons: String = fp.as_bytes()[7..]
            .chunks(2)
            .map(|p| String::from_utf8_lossy(p).to_uppercase())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(parse_fingerprint(&colons), raw);
        assert_eq!(parse_fingerprint(&format!("SHA256:{colons}")), raw);
        assert!(parse_fingerprint("sha256:abcd").is_err());
        let not_hex = format!("sha256:{}", "g".repeat(64));
        assert!(parse_fingerprint(&not_hex).is_err());
    }

    /// Runs a handshake between `client` and the master's configuration
    /// for a fresh self-signed pair, in memory, and returns the suite the
    /// two agreed on.
    fn negotiate(client: impl FnOnce(&Path) -> Arc<rustls::ClientConfig>) -> CipherSuite {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        ensure_self_signed(&cert, &key, &["localhost".to_string()], 30).unwrap();
        let mut server =
            rustls::ServerConnection::new(server_config(&cert, &key).unwrap()).unwrap();
        let name = server_name("localhost:9989").unwrap();
        let mut client = rustls::ClientConnection::new(client(&cert), name).unwrap();
        // Each side's flight to the other until both are done (reading
        // nothing would count as the peer's end of stream: skipped).
        let mut wire = Vec::new();
        for _ in 0..10 {
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
            wire.clear();
            client.write_tls(&mut wire).unwrap();
            if !wire.is_empty() {
                server.read_tls(&mut &wire[..]).unwrap();
                server.process_new_packets().unwrap();
            }
            wire.clear();
            server.write_tls(&mut wire).unwrap();
            if !wire.is_empty() {
                client.read_tls(&mut &wire[..]).unwrap();
                client.process_new_packets().unwrap();
            }
        }
        assert!(!client.is_handshaking() && !server.is_handshaking());
        let got = client.negotiated_cipher_suite().unwrap().suite();
        assert_eq!(
            server.negotiated_cipher_suite().map(|s| s.suite()),
            Some(got)
        );
        got
    }

    #[test]
    fn workers_and_masters_agree_on_aes_128_gcm() {
        let suite = negotiate(|cert| client_config(&Trust::Ca(cert.to_path_buf())).unwrap());
        assert_eq!(suite, CipherSuite::TLS13_AES_128_GCM_SHA256);
        let pinned = negotiate(|cert| {
            let fp = parse_fingerprint(&fingerprint_of_file(cert).unwrap()).unwrap();
            client_config(&Trust::Fingerprint(fp)).unwrap()
        });
        assert_eq!(pinned, CipherSuite::TLS13_AES_128_GCM_SHA256);
    }

    #[test]
    fn a_client_preferring_aes_256_still_gets_it() {
        // A worker of an earlier release lists ring's default order: the
        // master follows it rather than refusing or overriding it.
        let suite = negotiate(|cert| {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(cert).unwrap() {
                roots.add(c).unwrap();
            }
            let ring = Arc::new(rustls::crypto::ring::default_provider());
            Arc::new(
                rustls::ClientConfig::builder_with_provider(ring)
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            )
        });
        assert_eq!(suite, CipherSuite::TLS13_AES_256_GCM_SHA384);
    }

    #[test]
    fn server_names_come_from_the_master_address() {
        assert!(server_name("127.0.0.1:9989").is_ok());
        assert!(server_name("ci.example.org:9989").is_ok());
        assert!(server_name("[::1]:9989").is_ok());
        assert!(server_name("bad name:1").is_err());
    }
}
