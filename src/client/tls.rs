//! TLS and QUIC for a broker's connection: the cluster's authority to trust, the transport
//! settings, and the application protocol names (ALPN) of both endpoints. The node's half (its
//! identity, the servers, node-to-node mutual TLS, certificate generation) is in the node's
//! crate and builds on these.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use quinn::{AckFrequencyConfig, IdleTimeout, TransportConfig, VarInt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

#[derive(Debug)]
pub struct TlsError(pub String);

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for TlsError {}

pub fn err(context: impl std::fmt::Display, e: impl std::fmt::Display) -> TlsError {
    TlsError(format!("{context}: {e}"))
}

pub fn read_cert(path: &Path) -> Result<CertificateDer<'static>, TlsError> {
    CertificateDer::from_pem_file(path).map_err(|e| err(path.display(), e))
}

/// The authority's certificate alone: what a broker needs to trust the cluster.
pub fn load_ca(dir: &Path) -> Result<CertificateDer<'static>, TlsError> {
    read_cert(&dir.join("ca.pem"))
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Transport settings: dead peers are noticed within `idle_timeout`; keep-alives keep idle
/// links open; the first round trip assumes a LAN.
pub fn transport(idle_timeout: Duration) -> Arc<TransportConfig> {
    Arc::new(transport_config(idle_timeout))
}

/// As `transport`, to adjust before use.
pub fn transport_config(idle_timeout: Duration) -> TransportConfig {
    let mut transport = TransportConfig::default();
    let idle =
        IdleTimeout::try_from(idle_timeout).unwrap_or(IdleTimeout::from(VarInt::from_u32(10_000)));
    transport.max_idle_timeout(Some(idle));
    transport.keep_alive_interval(Some(idle_timeout / 4));
    transport.max_concurrent_bidi_streams(VarInt::from_u32(1_024));
    transport.initial_rtt(Duration::from_millis(1));
    ask_for_prompt_acks(&mut transport);
    transport
}

/// The longest a peer may hold back an acknowledgement, asked of it with QUIC's ACK_FREQUENCY
/// extension. QUIC's default is 25 ms, and a sender that hears nothing back waits that long
/// (after a round trip) before it probes, twice as long after each probe lost in a row: with
/// packets lost at random, an order's round could take hundreds of milliseconds. Within a data
/// centre a round trip is well under a millisecond: 2 ms still lets most acknowledgements ride
/// on a packet going back anyway (docs/performance.md, "Packet loss").
pub const ACK_DELAY_MAX: Duration = Duration::from_millis(2);

/// Asks the peer to acknowledge within `ACK_DELAY_MAX`, so that a lost packet is probed for
/// within a few milliseconds. What goes back within it still carries the acknowledgement.
pub fn ask_for_prompt_acks(transport: &mut TransportConfig) {
    let mut acks = AckFrequencyConfig::default();
    acks.max_ack_delay(Some(ACK_DELAY_MAX));
    transport.ack_frequency_config(Some(acks));
}

/// The application protocols (ALPN) of the two endpoints: a client of one cannot complete a
/// handshake with the other (a broker dialling the Raft port, or a stray QUIC client, is
/// refused before a byte of the protocol is read). Versions are negotiated inside: a broker's
/// logon names its protocol version and is refused with the one spoken.
pub const BROKER_ALPN: &[u8] = b"exchange-broker";

pub const RAFT_ALPN: &[u8] = b"exchange-raft";

/// QUIC requires TLS 1.3.
pub const TLS_VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

pub fn quic_client(
    tls: rustls::ClientConfig,
    transport: Arc<TransportConfig>,
) -> Result<quinn::ClientConfig, TlsError> {
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| err("QUIC TLS", e))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport);
    Ok(config)
}

pub fn roots(ca: &CertificateDer<'static>) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|e| err("CA certificate", e))?;
    Ok(Arc::new(roots))
}

/// A broker's client: trusts the cluster's authority.
pub fn broker_client(
    ca: &CertificateDer<'static>,
    transport: Arc<TransportConfig>,
) -> Result<quinn::ClientConfig, TlsError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(TLS_VERSIONS)
        .map_err(|e| err("TLS", e))?
        .with_root_certificates(roots(ca)?)
        .with_no_client_auth();
    tls.alpn_protocols = vec![BROKER_ALPN.to_vec()];
    quic_client(tls, transport)
}
