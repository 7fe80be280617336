//! The brokers' key digests (and FIX CompIDs) as this node's engine has applied them, for the
//! gateway: logons look a key up here, off the engine thread, and a session learns here that
//! the key it logged on with was rotated or revoked. A FIX logon finds its broker by CompID
//! here.
//!
//! The engine thread's output tap writes it (a key change is a replicated command, so every
//! node's table follows the same log); the gateway only reads it. A change bumps a generation
//! number that sessions compare with the one they last checked, so a request costs one atomic
//! load while no key changes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use exchange_domain::{BrokerId, CompId, KeyDigest, KeySalt};
use subtle::ConstantTimeEq;

pub struct BrokerKeys {
    keys: RwLock<Vec<(BrokerId, KeyDigest)>>,
    comp_ids: RwLock<Vec<(BrokerId, CompId)>>,
    /// The cluster's key salt, once this node applied it.
    salt: RwLock<Option<KeySalt>>,
    generation: AtomicU64,
    /// Wakes streams that must end when a key changes.
    changed: tokio::sync::watch::Sender<u64>,
}

impl Default for BrokerKeys {
    fn default() -> Self {
        BrokerKeys {
            keys: RwLock::new(Vec::new()),
            comp_ids: RwLock::new(Vec::new()),
            salt: RwLock::new(None),
            generation: AtomicU64::new(0),
            changed: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl BrokerKeys {
    /// A broker's key was set (or revoked: the all-zero digest).
    pub fn set(&self, broker: BrokerId, digest: KeyDigest) {
        {
            let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
            match keys.iter_mut().find(|(id, _)| *id == broker) {
                Some(entry) => entry.1 = digest,
                None => keys.push((broker, digest)),
            }
        }
        self.bump();
    }

    /// The cluster's key salt, as applied (or restored).
    pub fn set_salt(&self, salt: Option<KeySalt>) {
        *self.salt.write().unwrap_or_else(|p| p.into_inner()) = salt;
    }

    /// The salt keys are digested with; `None` before this node applied it, or for good in a
    /// cluster made before salts.
    pub fn salt(&self) -> Option<KeySalt> {
        *self.salt.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Every key at once, as a restored snapshot holds them.
    pub fn replace_all(&self, all: impl IntoIterator<Item = (BrokerId, KeyDigest)>) {
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = all.into_iter().collect();
        self.bump();
    }

    /// A broker's FIX CompID was set (the engine has checked that no other broker has it).
    pub fn set_comp_id(&self, broker: BrokerId, comp_id: CompId) {
        {
            let mut comp_ids = self.comp_ids.write().unwrap_or_else(|p| p.into_inner());
            match comp_ids.iter_mut().find(|(id, _)| *id == broker) {
                Some(entry) => entry.1 = comp_id,
                None => comp_ids.push((broker, comp_id)),
            }
        }
        self.bump();
    }

    /// Every CompID at once, as a restored snapshot holds them.
    pub fn replace_all_comp_ids(&self, all: impl IntoIterator<Item = (BrokerId, CompId)>) {
        *self.comp_ids.write().unwrap_or_else(|p| p.into_inner()) = all.into_iter().collect();
        self.bump();
    }

    /// The broker whose FIX sessions log on as `comp_id`.
    pub fn broker_of_comp_id(&self, comp_id: &str) -> Option<BrokerId> {
        self.comp_ids
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(_, known)| known.as_str() == comp_id)
            .map(|(broker, _)| *broker)
    }

    /// The CompID `broker`'s FIX sessions log on as, if it has one.
    pub fn comp_id_of(&self, broker: BrokerId) -> Option<CompId> {
        self.comp_ids
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(id, _)| *id == broker)
            .map(|(_, comp_id)| *comp_id)
    }

    fn bump(&self) {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.changed.send_replace(generation);
    }

    /// Changes so far (of keys and CompIDs): a session that checked its key or CompID at this
    /// generation need not check again until it moves.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The broker whose key has this digest. Every entry is compared, each in constant time,
    /// so the time taken says nothing of how much of a digest matched or where.
    pub fn broker_of(&self, digest: &KeyDigest) -> Option<BrokerId> {
        if digest.is_revoked() {
            return None;
        }
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let mut found = None;
        for (broker, known) in keys.iter() {
            if bool::from(known.0.ct_eq(&digest.0)) {
                found = Some(*broker);
            }
        }
        found
    }

    /// Whether `broker`'s key is still the one with this digest.
    pub fn holds(&self, broker: BrokerId, digest: &KeyDigest) -> bool {
        !digest.is_revoked()
            && self
                .keys
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .any(|(id, known)| *id == broker && bool::from(known.0.ct_eq(&digest.0)))
    }

    /// Wakes when any key changes.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_replaced_and_revoked() {
        let keys = BrokerKeys::default();
        let (a, b) = (KeyDigest([1; 32]), KeyDigest([2; 32]));
        keys.set(BrokerId(1), a);
        assert_eq!(keys.broker_of(&a), Some(BrokerId(1)));
        assert!(keys.holds(BrokerId(1), &a));
        let before = keys.generation();
        // Rotated: the old key names nobody, and the session holding it is told.
        keys.set(BrokerId(1), b);
        assert!(keys.generation() > before);
        assert_eq!(keys.broker_of(&a), None);
        assert!(!keys.holds(BrokerId(1), &a));
        assert_eq!(keys.broker_of(&b), Some(BrokerId(1)));
        // Revoked: nothing matches, not even the revoked digest itself.
        keys.set(BrokerId(1), KeyDigest::REVOKED);
        assert_eq!(keys.broker_of(&b), None);
        assert_eq!(keys.broker_of(&KeyDigest::REVOKED), None);
        assert!(!keys.holds(BrokerId(1), &KeyDigest::REVOKED));
        keys.replace_all([(BrokerId(2), a)]);
        assert_eq!(keys.broker_of(&a), Some(BrokerId(2)));
        assert_eq!(keys.broker_of(&b), None);
    }

    #[test]
    fn comp_ids_are_found_and_replaced() {
        let keys = BrokerKeys::default();
        let (one, two) = (CompId::new("ONE").unwrap(), CompId::new("TWO").unwrap());
        keys.set_comp_id(BrokerId(1), one);
        assert_eq!(keys.broker_of_comp_id("ONE"), Some(BrokerId(1)));
        assert_eq!(keys.comp_id_of(BrokerId(1)), Some(one));
        keys.set_comp_id(BrokerId(1), two);
        assert_eq!(keys.broker_of_comp_id("ONE"), None);
        assert_eq!(keys.broker_of_comp_id("TWO"), Some(BrokerId(1)));
        keys.replace_all_comp_ids([(BrokerId(3), one)]);
        assert_eq!(keys.broker_of_comp_id("ONE"), Some(BrokerId(3)));
        assert_eq!(keys.broker_of_comp_id("TWO"), None);
        assert_eq!(keys.comp_id_of(BrokerId(1)), None);
    }
}
