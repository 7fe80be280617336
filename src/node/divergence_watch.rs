//! The divergence watcher: asks each peer for its applied index and the output hash there
//! (through the peer's broker endpoint, the same status request `exchange-cli status` uses),
//! looks up this node's own hash at that index in the engine's recent history, and records
//! the comparison in the `DivergenceLog` that `status` shows. Each answer (or failure) is also
//! kept in the `ClusterView` that the HTTP API shows.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;

use crate::gateway::client::Client;
use crate::http::cluster::ClusterView;
use crate::replication::divergence::{DivergenceLog, DIVERGENCE_CHECK_INTERVAL};
use crate::replication::engine_thread::EngineHandle;

/// Runs until the process ends, comparing with each peer's broker endpoint.
pub async fn watch(
    engine: Arc<EngineHandle>,
    peers: BTreeMap<u64, SocketAddr>,
    ca: CertificateDer<'static>,
    log: DivergenceLog,
    view: Arc<ClusterView>,
) {
    let Ok(client) = Client::new(peers.values().copied().collect(), &ca) else {
        tracing::error!("divergence detection disabled: cannot make a client");
        return;
    };
    let mut interval = tokio::time::interval(DIVERGENCE_CHECK_INTERVAL);
    loop {
        interval.tick().await;
        for (&peer, &addr) in &peers {
            let status = match client.status_of(addr).await {
                Ok(status) => status,
                Err(e) => {
                    view.record_peer(peer, Err(e.to_string()));
                    continue;
                }
            };
            let ours = engine.status().hash_at(status.applied_index);
            log.compare(peer, status.applied_index, &status.output_hash, ours);
            view.record_peer(peer, Ok(status));
        }
    }
}
