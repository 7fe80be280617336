//! TLS for the cluster: a certificate authority, one certificate per node (valid as server
//! and client, so nodes authenticate each other), and the QUIC configurations built on them.
//!
//! Files in the certificate directory (`exchange-node gen-certs` writes them): `ca.pem`, and
//! `node-<id>.pem`, `node-<id>.key` per node. The authority's private key (`ca.key`, to sign
//! more) goes to a directory of its own (`<certs>-ca` by default) that nodes never read: a node
//! that is broken into must not be able to mint certificates for the others. A node's
//! certificate names `node-<id>` and `localhost` and the loopback and listed addresses; peers
//! dial it by the name `node-<id>`, so addresses can change without new certificates, and the
//! Raft server holds every RPC to the node its certificate names.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use exchange_client::tls::{
    ask_for_prompt_acks, err, provider, quic_client, read_cert, roots, TLS_VERSIONS,
};
pub use exchange_client::tls::{
    broker_client, load_ca, transport, transport_config, TlsError, BROKER_ALPN, RAFT_ALPN,
};

/// The name a node's certificate carries and peers dial it by.
pub fn node_name(id: u64) -> String {
    format!("node-{id}")
}

/// The certificate and key a node presents, and the authority it trusts.
#[derive(Debug)]
pub struct Identity {
    pub ca: CertificateDer<'static>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// Node `id`'s identity from the certificate directory.
pub fn load_identity(dir: &Path, id: u64) -> Result<Identity, TlsError> {
    let name = node_name(id);
    let key_path = dir.join(format!("{name}.key"));
    Ok(Identity {
        ca: load_ca(dir)?,
        chain: vec![read_cert(&dir.join(format!("{name}.pem")))?],
        key: PrivateKeyDer::from_pem_file(&key_path).map_err(|e| err(key_path.display(), e))?,
    })
}

/// Where `generate` keeps the authority's private key by default: a directory beside the
/// certificate directory (`cluster/certs` -> `cluster/certs-ca`), never in it.
pub fn default_ca_key_dir(certs_dir: &Path) -> PathBuf {
    let name = certs_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "certs".into());
    certs_dir.with_file_name(format!("{name}-ca"))
}

/// The authority's private key left in the certificate directory by an earlier version: every
/// node reads that directory, so it should not be there.
pub fn stray_ca_key(certs_dir: &Path) -> Option<PathBuf> {
    Some(certs_dir.join("ca.key")).filter(|path| path.exists())
}

/// `generate_with_ca_key` with the authority's key in `default_ca_key_dir(dir)`.
pub fn generate(
    dir: &Path,
    nodes: &[u64],
    extra_sans: &[String],
) -> Result<Vec<PathBuf>, TlsError> {
    generate_with_ca_key(dir, &default_ca_key_dir(dir), nodes, extra_sans)
}

/// Writes a new authority and one certificate per node into `dir`, the authority's private key
/// into `ca_key_dir`; an existing authority is reused so that certificates for new nodes join
/// the same cluster (a key an earlier version left in `dir` is moved out). Returns the files
/// written.
pub fn generate_with_ca_key(
    dir: &Path,
    ca_key_dir: &Path,
    nodes: &[u64],
    extra_sans: &[String],
) -> Result<Vec<PathBuf>, TlsError> {
    std::fs::create_dir_all(dir).map_err(|e| err(dir.display(), e))?;
    create_private_dir(ca_key_dir)?;
    let (ca_pem, ca_key_pem) = (dir.join("ca.pem"), ca_key_dir.join("ca.key"));
    let mut written = Vec::new();
    if let Some(stray) = stray_ca_key(dir) {
        if ca_key_pem.exists() {
            return Err(err(
                stray.display(),
                format!(
                    "the authority's key is both here and in {}: remove this one (nodes read \
                     this directory)",
                    ca_key_pem.display()
                ),
            ));
        }
        std::fs::rename(&stray, &ca_key_pem).map_err(|e| err(stray.display(), e))?;
        written.push(ca_key_pem.clone());
    }
    let ca_key = if ca_key_pem.exists() {
        let pem = std::fs::read_to_string(&ca_key_pem).map_err(|e| err(ca_key_pem.display(), e))?;
        KeyPair::from_pem(&pem).map_err(|e| err(ca_key_pem.display(), e))?
    } else {
        KeyPair::generate().map_err(|e| err("generating the CA key", e))?
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(|e| err("CA", e))?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "exchange cluster CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    // Re-signing the same parameters with the same key gives an equivalent authority, so
    // certificates made earlier stay valid.
    let ca_cert = ca_params.self_signed(&ca_key).map_err(|e| err("CA", e))?;
    if !ca_key_pem.exists() {
        write_private(&ca_key_pem, &ca_key.serialize_pem())?;
        written.push(ca_key_pem);
    }
    if !ca_pem.exists() {
        std::fs::write(&ca_pem, ca_cert.pem()).map_err(|e| err(ca_pem.display(), e))?;
        written.push(ca_pem);
    }
    for &id in nodes {
        let name = node_name(id);
        let mut sans = vec![
            name.clone(),
            "localhost".into(),
            "127.0.0.1".into(),
            "::1".into(),
        ];
        sans.extend(extra_sans.iter().cloned());
        let mut params = CertificateParams::new(sans).map_err(|e| err(&name, e))?;
        params.distinguished_name.push(DnType::CommonName, &name);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().map_err(|e| err(&name, e))?;
        let cert = params
            .signed_by(&key, &ca_cert, &ca_key)
            .map_err(|e| err(&name, e))?;
        let (cert_path, key_path) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).map_err(|e| err(cert_path.display(), e))?;
        write_private(&key_path, &key.serialize_pem())?;
        written.extend([cert_path, key_path]);
    }
    Ok(written)
}

fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| err(dir.display(), e))
}

fn write_private(path: &Path, pem: &str) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| err(path.display(), e))?;
    file.write_all(pem.as_bytes())
        .map_err(|e| err(path.display(), e))
}

/// Transport for the broker endpoint: idle brokers are dropped after 30 s, and each may have
/// only a few streams open, which bounds what one connection can make the node hold.
pub fn broker_transport() -> Arc<TransportConfig> {
    let mut transport = TransportConfig::default();
    transport.max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(30_000))));
    transport.keep_alive_interval(Some(Duration::from_secs(5)));
    transport.max_concurrent_bidi_streams(VarInt::from_u32(BROKER_STREAMS_MAX));
    transport.max_concurrent_uni_streams(VarInt::from_u32(0));
    // What a connection may send ahead of the node reading it: one largest frame per stream,
    // a few in all.
    transport.stream_receive_window(VarInt::from_u32(BROKER_STREAM_WINDOW_BYTES));
    transport.receive_window(VarInt::from_u32(4 * BROKER_STREAM_WINDOW_BYTES));
    transport.initial_rtt(Duration::from_millis(1));
    ask_for_prompt_acks(&mut transport);
    Arc::new(transport)
}

/// A broker stream's flow-control window: a largest request frame (1 MiB) and its header.
const BROKER_STREAM_WINDOW_BYTES: u32 = (1 << 20) + (1 << 16);

/// Concurrent request streams one broker connection may have.
pub const BROKER_STREAMS_MAX: u32 = 64;

fn quic_server(
    tls: rustls::ServerConfig,
    transport: Arc<TransportConfig>,
) -> Result<quinn::ServerConfig, TlsError> {
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| err("QUIC TLS", e))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport);
    Ok(config)
}

/// A server that requires a client certificate from the cluster's authority (node to node).
pub fn mutual_server(
    identity: &Identity,
    transport: Arc<TransportConfig>,
) -> Result<quinn::ServerConfig, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(&identity.ca)?, provider())
        .build()
        .map_err(|e| err("client verifier", e))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(TLS_VERSIONS)
        .map_err(|e| err("TLS", e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|e| err("node certificate", e))?;
    tls.alpn_protocols = vec![RAFT_ALPN.to_vec()];
    quic_server(tls, transport)
}

/// A client presenting the node's certificate (node to node).
pub fn mutual_client(
    identity: &Identity,
    transport: Arc<TransportConfig>,
) -> Result<quinn::ClientConfig, TlsError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(TLS_VERSIONS)
        .map_err(|e| err("TLS", e))?
        .with_root_certificates(roots(&identity.ca)?)
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|e| err("node certificate", e))?;
    tls.alpn_protocols = vec![RAFT_ALPN.to_vec()];
    quic_client(tls, transport)
}

/// A server brokers connect to: it proves itself with the node certificate; brokers prove
/// themselves with credentials inside the protocol.
pub fn broker_server(
    identity: &Identity,
    transport: Arc<TransportConfig>,
) -> Result<quinn::ServerConfig, TlsError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(TLS_VERSIONS)
        .map_err(|e| err("TLS", e))?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|e| err("node certificate", e))?;
    tls.alpn_protocols = vec![BROKER_ALPN.to_vec()];
    quic_server(tls, transport)
}

/// The TLS server of FIX over TLS (`--fix-tls`): the node certificate, TLS 1.2 or 1.3 (FIX
/// engines' TLS stacks do not all speak 1.3 yet), no client certificate (the broker proves
/// itself with its key in the Logon).
pub fn fix_server(identity: &Identity) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| err("TLS", e))?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|e| err("node certificate", e))?;
    Ok(Arc::new(tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificates_load_and_a_second_run_keeps_the_authority() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let dir = scratch.path().join("certs");
        // A key an earlier version left among the certificates is moved out of them.
        std::fs::create_dir_all(&dir).expect("certs");
        std::fs::write(
            dir.join("ca.key"),
            KeyPair::generate().expect("key").serialize_pem(),
        )
        .expect("stray key");
        let stray = std::fs::read(dir.join("ca.key")).expect("stray key");
        generate(&dir, &[1, 2], &[]).expect("generate");
        assert_eq!(
            stray_ca_key(&dir),
            None,
            "the authority's key left among the certificates"
        );
        let ca_key = scratch.path().join("certs-ca/ca.key");
        assert_eq!(std::fs::read(&ca_key).expect("moved key"), stray);
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("mode").permissions().mode() & 0o777;
        assert_eq!(mode(&scratch.path().join("certs-ca")), 0o700);
        let ca_before = std::fs::read(dir.join("ca.pem")).expect("ca");
        let one = load_identity(&dir, 1).expect("node 1");
        generate(&dir, &[3], &["10.77.0.3".into()]).expect("add node 3");
        assert_eq!(std::fs::read(dir.join("ca.pem")).expect("ca"), ca_before);
        let three = load_identity(&dir, 3).expect("node 3");
        assert_eq!(one.ca, three.ca);
        assert!(
            load_identity(&dir, 9).is_err(),
            "a missing node is an error"
        );
        // Nothing a node reads is private to the authority.
        for file in std::fs::read_dir(&dir).expect("certs") {
            let name = file.expect("entry").file_name();
            assert!(
                name.to_string_lossy().starts_with("node-") || name == "ca.pem",
                "{name:?}"
            );
        }
    }

    /// Node 1's identity (generated under `dir`), and its broker and Raft endpoints on
    /// loopback, as a node makes them.
    fn node_endpoints(dir: &Path) -> (Identity, quinn::Endpoint, quinn::Endpoint) {
        let dir = dir.join("certs");
        generate(&dir, &[1], &[]).expect("generate");
        let identity = load_identity(&dir, 1).expect("identity");
        let loopback: std::net::SocketAddr = "127.0.0.1:0".parse().expect("address");
        let brokers = quinn::Endpoint::server(
            broker_server(&identity, broker_transport()).expect("broker server"),
            loopback,
        )
        .expect("broker endpoint");
        let raft = quinn::Endpoint::server(
            mutual_server(&identity, transport(Duration::from_secs(2))).expect("raft server"),
            loopback,
        )
        .expect("raft endpoint");
        (identity, brokers, raft)
    }

    /// Each endpoint speaks its own application protocol: a Raft client cannot complete a
    /// handshake with the broker endpoint, nor a broker client with the Raft endpoint, nor
    /// either under a server name the certificate does not carry.
    #[tokio::test]
    async fn each_endpoint_accepts_only_its_own_protocol_and_name() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let (identity, brokers, raft) = node_endpoints(scratch.path());
        let idle = Duration::from_secs(2);
        let loopback: std::net::SocketAddr = "127.0.0.1:0".parse().expect("address");
        for server in [brokers.clone(), raft.clone()] {
            tokio::spawn(async move {
                while let Some(incoming) = server.accept().await {
                    let _ = incoming.await;
                }
            });
        }
        let mut client = quinn::Endpoint::client(loopback).expect("client endpoint");
        let broker_client = broker_client(&identity.ca, transport(idle)).expect("broker client");
        let raft_client = mutual_client(&identity, transport(idle)).expect("raft client");
        let dial = |client: &quinn::Endpoint, to: &quinn::Endpoint, name: &str| {
            let connecting = client
                .connect(to.local_addr().expect("bound"), name)
                .expect("connect");
            async move {
                tokio::time::timeout(Duration::from_secs(5), connecting)
                    .await
                    .expect("the handshake ends")
            }
        };
        client.set_default_client_config(broker_client.clone());
        assert!(dial(&client, &brokers, "localhost").await.is_ok());
        assert!(
            dial(&client, &raft, "node-1").await.is_err(),
            "a broker on the Raft port"
        );
        assert!(
            dial(&client, &brokers, "exchange.example.net")
                .await
                .is_err(),
            "a name the certificate does not carry"
        );
        client.set_default_client_config(raft_client);
        assert!(dial(&client, &raft, "node-1").await.is_ok());
        assert!(
            dial(&client, &brokers, "localhost").await.is_err(),
            "Raft on the broker port"
        );
    }

    /// Every connection, the Raft one and the brokers', asks its peer to acknowledge within
    /// `ACK_DELAY_MAX` (an ACK_FREQUENCY frame each way), so that a lost packet is probed for
    /// within milliseconds, not QUIC's default 25 ms doubled with each loss in a row
    /// (docs/performance.md, "Packet loss").
    #[tokio::test]
    async fn both_ends_ask_their_peer_to_acknowledge_promptly() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let (identity, brokers, raft) = node_endpoints(scratch.path());
        let idle = Duration::from_secs(2);
        let loopback: std::net::SocketAddr = "127.0.0.1:0".parse().expect("address");
        // Each server echoes one stream.
        for server in [brokers.clone(), raft.clone()] {
            tokio::spawn(async move {
                while let Some(incoming) = server.accept().await {
                    tokio::spawn(async move {
                        let Ok(connection) = incoming.await else {
                            return;
                        };
                        let Ok((mut send, mut recv)) = connection.accept_bi().await else {
                            return;
                        };
                        let Ok(bytes) = recv.read_to_end(64).await else {
                            return;
                        };
                        let _ = send.write_all(&bytes).await;
                        let _ = send.finish();
                        // Held until the client has read the answer and closes.
                        connection.closed().await;
                    });
                }
            });
        }
        let mut client = quinn::Endpoint::client(loopback).expect("client endpoint");
        let clients = [
            (
                broker_client(&identity.ca, transport(idle)).expect("broker client"),
                &brokers,
                "localhost",
            ),
            (
                mutual_client(&identity, transport(idle)).expect("raft client"),
                &raft,
                "node-1",
            ),
        ];
        for (config, server, name) in clients {
            client.set_default_client_config(config);
            let exchange = async {
                let connection = client
                    .connect(server.local_addr().expect("bound"), name)
                    .expect("connect")
                    .await
                    .expect("handshake");
                let (mut send, mut recv) = connection.open_bi().await.expect("stream");
                send.write_all(b"ping").await.expect("write");
                send.finish().expect("finish");
                assert_eq!(recv.read_to_end(64).await.expect("echo"), b"ping");
                connection
            };
            let connection = tokio::time::timeout(Duration::from_secs(5), exchange)
                .await
                .expect("the exchange ends");
            // Each end asks in its first packet once the handshake is confirmed, which for the
            // client may come after the echo: wait for it, a while.
            let asked_both = |stats: &quinn::ConnectionStats| {
                stats.frame_tx.ack_frequency >= 1 && stats.frame_rx.ack_frequency >= 1
            };
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while !asked_both(&connection.stats()) && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let stats = connection.stats();
            assert!(
                stats.frame_tx.ack_frequency >= 1,
                "{name}: asked nothing of the server"
            );
            assert!(
                stats.frame_rx.ack_frequency >= 1,
                "{name}: the server asked nothing"
            );
            connection.close(0u32.into(), b"done");
        }
    }
}
