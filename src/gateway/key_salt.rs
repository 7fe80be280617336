//! The cluster's key salt. The first leader of a new cluster chooses it, before any broker is
//! registered, and every broker key digest is keyed with it from then on
//! (`credentials::broker_digest`). The engine takes it once, and only while no broker holds a
//! key, so a cluster whose brokers were registered before salts existed keeps plain digests:
//! which kind a cluster has never changes under a registered key.

use exchange_domain::{AdminCommand, BrokerCommand, Command, KeySalt};
use ring::rand::SecureRandom;

use crate::replication::engine_thread::EngineHandle;
use crate::replication::sequencer::Sequencer;

/// Why the salt could not be settled.
#[derive(Debug)]
pub enum KeySaltError {
    /// The engine stopped, or the command was not sequenced (not the leader, stopping).
    Unavailable(String),
    /// The system's random source failed.
    Random,
}

impl std::fmt::Display for KeySaltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySaltError::Unavailable(why) => write!(f, "the key salt is not settled: {why}"),
            KeySaltError::Random => write!(f, "the system's random source failed"),
        }
    }
}

impl std::error::Error for KeySaltError {}

/// The salt broker keys are digested with: the cluster's, set now by this leader if the
/// cluster has neither a salt nor a broker; `None` in a cluster made before salts.
pub async fn settle(
    sequencer: &Sequencer,
    engine: &EngineHandle,
) -> Result<Option<KeySalt>, KeySaltError> {
    let unavailable = |e: &dyn std::fmt::Display| KeySaltError::Unavailable(e.to_string());
    let (salt, any_key) = engine
        .query(|engine| {
            let any_key = engine.brokers().any(|(_, digest)| !digest.is_revoked());
            (engine.key_salt(), any_key)
        })
        .await
        .map_err(|e| unavailable(&e))?;
    if salt.is_some() || any_key {
        return Ok(salt);
    }
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| KeySaltError::Random)?;
    let command = Command::Admin(AdminCommand::SetKeySalt {
        salt: KeySalt(bytes),
    });
    for answer in sequencer
        .submit_many(vec![BrokerCommand::operator(command)])
        .await
    {
        answer.map_err(|e| unavailable(&e))?;
    }
    // Taken, or refused because another leader's salt (or a broker) came first: what the
    // engine holds now is the cluster's, for good.
    engine
        .query(|engine| engine.key_salt())
        .await
        .map_err(|e| unavailable(&e))
}
