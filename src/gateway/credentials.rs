//! Credentials: the admin key of the nodes and the brokers' API keys.
//!
//! The admin key is each node's own configuration (it is the operator's credential and never
//! enters the replicated state). Broker keys are replicated state: the engine holds each
//! broker's key digest (SHA-256), registered by the operator (`exchange-cli admin
//! set-broker-key`) or from the brokers file, which the leader applies when it takes office.
//! Logging on compares digests, so the engine, its log and its snapshots hold no usable key.

use std::path::Path;

use exchange_domain::{AccountId, BrokerId, CompId, KeyDigest, KeySalt};
use serde::Deserialize;

/// The shortest key accepted: a key must not be guessable.
pub const API_KEY_CHARS_MIN: usize = 16;
/// The longest key accepted (bounds the work a logon costs).
pub const API_KEY_CHARS_MAX: usize = 256;

/// The development cluster's brokers file, whose keys are public (they are in this repository).
const DEVELOPMENT_BROKERS_FILE: &str = include_str!("../../cluster/brokers.toml");

/// The public keys of the development cluster (`cluster/brokers.toml`): a node refuses to start
/// with any of them unless told it is a development node (`--dev`).
pub fn development_keys() -> Vec<String> {
    toml::from_str::<BrokersFile>(DEVELOPMENT_BROKERS_FILE)
        .map(|file| {
            file.admin_key
                .into_iter()
                .chain(file.brokers.into_iter().map(|b| b.key))
                .chain(file.drop_copies.into_iter().map(|d| d.key))
                .collect()
        })
        .unwrap_or_default()
}

/// The SHA-256 digest of a key.
pub fn digest(key: &str) -> KeyDigest {
    let hash = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(hash.as_ref());
    KeyDigest(bytes)
}

/// The digest a broker's key is registered and looked up by: HMAC-SHA-256 keyed with the
/// cluster's salt, or, in a cluster made before salts (`None`), plain SHA-256.
pub fn broker_digest(salt: Option<KeySalt>, key: &str) -> KeyDigest {
    let Some(salt) = salt else {
        return digest(key);
    };
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &salt.0),
        key.as_bytes(),
    );
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(tag.as_ref());
    KeyDigest(bytes)
}

/// Whether a key is acceptable as a credential.
pub fn check_key(key: &str) -> Result<(), String> {
    let chars = key.chars().count();
    if !(API_KEY_CHARS_MIN..=API_KEY_CHARS_MAX).contains(&chars) {
        return Err(format!(
            "an API key has {API_KEY_CHARS_MIN} to {API_KEY_CHARS_MAX} characters, this one {chars}"
        ));
    }
    Ok(())
}

/// Whether a FIX SenderCompID can be a broker's or a drop copy's ([`CompId`]'s rules).
fn check_comp_id(comp_id: &str) -> Result<(), String> {
    CompId::new(comp_id)
        .map(|_| ())
        .map_err(|e| format!("fix_comp_id {comp_id:?}: {e}"))
}

/// One broker of the brokers file.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BrokerEntry {
    /// 1 or more (0 is the operator).
    pub id: u32,
    pub key: String,
    /// The accounts it owns: created for it when they do not exist.
    #[serde(default)]
    pub accounts: Vec<u64>,
    /// Its SenderCompID(49) on FIX (docs/fix.md); without one, the broker has no FIX session.
    #[serde(default)]
    pub fix_comp_id: Option<String>,
}

/// A FIX drop copy session of the brokers file: read-only, it receives the execution reports of
/// one broker, or of every broker.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DropCopyEntry {
    /// Its SenderCompID(49).
    pub fix_comp_id: String,
    /// Its key, sent as Password(554): it may read, never trade.
    pub key: String,
    /// The broker whose reports it receives; none: every broker's (the operator's drop copy).
    #[serde(default)]
    pub broker: Option<u32>,
}

/// The brokers file (`cluster/brokers.toml`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BrokersFile {
    /// The operator's key: administration and membership need it.
    pub admin_key: Option<String>,
    #[serde(default, rename = "broker")]
    pub brokers: Vec<BrokerEntry>,
    #[serde(default, rename = "drop_copy")]
    pub drop_copies: Vec<DropCopyEntry>,
}

impl BrokersFile {
    /// Each broker's FIX SenderCompID, of those given one (checked by `load`).
    pub fn fix_comp_ids(&self) -> Vec<(BrokerId, CompId)> {
        self.brokers
            .iter()
            .filter_map(|b| Some((BrokerId(b.id), CompId::new(b.fix_comp_id.as_deref()?).ok()?)))
            .collect()
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read brokers file {}: {e}", path.display()))?;
        let file: BrokersFile =
            toml::from_str(&text).map_err(|e| format!("brokers file {}: {e}", path.display()))?;
        file.validate()
            .map_err(|e| format!("brokers file {}: {e}", path.display()))?;
        Ok(file)
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(key) = &self.admin_key {
            check_key(key).map_err(|e| format!("admin_key: {e}"))?;
        }
        let mut ids = std::collections::BTreeSet::new();
        let mut keys = std::collections::BTreeMap::new();
        let mut accounts = std::collections::BTreeSet::new();
        let mut comp_ids = std::collections::BTreeMap::new();
        for broker in &self.brokers {
            if broker.id == BrokerId::OPERATOR.0 {
                return Err("broker id 0 is the operator; brokers start at 1".into());
            }
            if !ids.insert(broker.id) {
                return Err(format!("broker {} appears twice", broker.id));
            }
            check_key(&broker.key).map_err(|e| format!("broker {}: {e}", broker.id))?;
            if Some(&broker.key) == self.admin_key.as_ref() {
                return Err(format!("broker {} uses the admin key", broker.id));
            }
            // A key names its broker: two brokers with one key could act for each other.
            if let Some(other) = keys.insert(broker.key.as_str(), broker.id) {
                return Err(format!(
                    "brokers {other} and {} have the same key; every broker needs its own",
                    broker.id
                ));
            }
            if let Some(comp_id) = &broker.fix_comp_id {
                check_comp_id(comp_id).map_err(|e| format!("broker {}: {e}", broker.id))?;
                if let Some(other) = comp_ids.insert(comp_id.as_str(), broker.id) {
                    return Err(format!(
                        "brokers {other} and {} have the same fix_comp_id {comp_id:?}",
                        broker.id
                    ));
                }
            }
            for &account in &broker.accounts {
                if !accounts.insert(account) {
                    return Err(format!("account {account} is given to two brokers"));
                }
            }
        }
        for copy in &self.drop_copies {
            let which = format!("drop copy {:?}", copy.fix_comp_id);
            check_comp_id(&copy.fix_comp_id).map_err(|e| format!("{which}: {e}"))?;
            if comp_ids.insert(copy.fix_comp_id.as_str(), 0).is_some() {
                return Err(format!("{which}: the fix_comp_id is taken"));
            }
            check_key(&copy.key).map_err(|e| format!("{which}: {e}"))?;
            // A read-only key must not be one that may trade or administer.
            if Some(&copy.key) == self.admin_key.as_ref() || keys.contains_key(copy.key.as_str()) {
                return Err(format!("{which}: its key is the admin's or a broker's"));
            }
            if copy.broker == Some(BrokerId::OPERATOR.0) {
                return Err(format!(
                    "{which}: broker 0 is the operator; leave broker out for every broker's reports"
                ));
            }
        }
        Ok(())
    }

    /// Each drop copy's SenderCompID, its key's digest, and whose reports it gets (`None`:
    /// every broker's).
    pub fn fix_drop_copies(&self) -> Vec<(String, KeyDigest, Option<BrokerId>)> {
        self.drop_copies
            .iter()
            .map(|d| {
                (
                    d.fix_comp_id.clone(),
                    digest(&d.key),
                    d.broker.map(BrokerId),
                )
            })
            .collect()
    }

    /// The development keys this file holds, by where they are (`admin_key`, `broker 1`).
    pub fn development_keys_used(&self) -> Vec<String> {
        let public = development_keys();
        let admin = self
            .admin_key
            .iter()
            .filter(|key| public.contains(key))
            .map(|_| "admin_key".to_string());
        let brokers = self
            .brokers
            .iter()
            .filter(|b| public.contains(&b.key))
            .map(|b| format!("broker {}", b.id));
        let drop_copies = self
            .drop_copies
            .iter()
            .filter(|d| public.contains(&d.key))
            .map(|d| format!("drop copy {}", d.fix_comp_id));
        admin.chain(brokers).chain(drop_copies).collect()
    }

    /// The admin key's digest, if the file names one.
    pub fn admin_digest(&self) -> Option<KeyDigest> {
        self.admin_key.as_deref().map(digest)
    }

    /// (broker, key digest with the cluster's salt, owned accounts) for every broker of the file.
    pub fn registrations(
        &self,
        salt: Option<KeySalt>,
    ) -> Vec<(BrokerId, KeyDigest, Vec<AccountId>)> {
        self.brokers
            .iter()
            .map(|b| {
                (
                    BrokerId(b.id),
                    broker_digest(salt, &b.key),
                    b.accounts.iter().map(|&a| AccountId(a)).collect(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_development_brokers_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster/brokers.toml");
        let file = BrokersFile::load(&path).expect("cluster/brokers.toml loads");
        assert!(file.admin_key.is_some());
        assert!(!file.brokers.is_empty());
        // Every key of it is known to be public.
        assert_eq!(
            file.development_keys_used(),
            [
                "admin_key",
                "broker 1",
                "broker 2",
                "drop copy DROPCOPY1",
                "drop copy DROPCOPY"
            ]
        );
        assert_eq!(development_keys().len(), 5);
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        let cases = [
            ("admin_key = \"short\"", "16 to 256"),
            (
                "[[broker]]\nid = 0\nkey = \"0123456789abcdef\"",
                "operator",
            ),
            (
                "[[broker]]\nid = 1\nkey = \"0123456789abcdef\"\n[[broker]]\nid = 1\nkey = \"0123456789abcdeg\"",
                "twice",
            ),
            (
                "[[broker]]\nid = 1\nkey = \"0123456789abcdef\"\naccounts = [5]\n[[broker]]\nid = 2\nkey = \"0123456789abcdeg\"\naccounts = [5]",
                "two brokers",
            ),
            ("[[broker]]\nid = 1\nkey = \"0123456789abcdef\"\ncolour = 1", "unknown field"),
            (
                "[[broker]]\nid = 1\nkey = \"0123456789abcdef\"\n[[broker]]\nid = 2\nkey = \"0123456789abcdef\"",
                "same key",
            ),
        ];
        for (text, why) in cases {
            let error = toml::from_str::<BrokersFile>(text)
                .map_err(|e| e.to_string())
                .and_then(|f| f.validate().map(|_| f))
                .expect_err(text);
            assert!(error.contains(why), "{text}: {error}");
        }
    }

    #[test]
    fn a_salted_digest_is_hmac_sha256_and_differs_by_salt() {
        let (one, two) = (Some(KeySalt([1; 16])), Some(KeySalt([2; 16])));
        let key = "a-broker-key-0123456789";
        assert_eq!(broker_digest(None, key), digest(key));
        assert_ne!(broker_digest(one, key), digest(key));
        assert_ne!(broker_digest(one, key), broker_digest(two, key));
        assert_eq!(broker_digest(one, key), broker_digest(one, key));
        // RFC 4231 shape: HMAC-SHA-256 with a 16-byte key, checked against ring's verify.
        let tag = broker_digest(one, key);
        ring::hmac::verify(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[1; 16]),
            key.as_bytes(),
            &tag.0,
        )
        .expect("HMAC-SHA-256 of the key under the salt");
    }

    #[test]
    fn digests_are_sha256() {
        assert_eq!(
            digest("abc").0[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "SHA-256(\"abc\") starts ba7816bf"
        );
    }
}
