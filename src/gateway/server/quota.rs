//! Places counted per key (a broker, a source address), each given back when its holder is
//! dropped: a broker's sessions, the connections of an address that have not logged on.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// Places held now, per key and in all.
pub struct Quota<K> {
    held: Mutex<Held<K>>,
}

struct Held<K> {
    total: u32,
    by_key: HashMap<K, u32>,
}

impl<K> Default for Quota<K> {
    fn default() -> Self {
        Quota {
            held: Mutex::new(Held {
                total: 0,
                by_key: HashMap::new(),
            }),
        }
    }
}

/// One place of `key`, held until dropped.
pub struct Place<K: Hash + Eq + Copy> {
    quota: Arc<Quota<K>>,
    key: K,
}

impl<K: Hash + Eq + Copy> Quota<K> {
    /// A place for `key`, unless it holds `per_key_max` already or all keys `total_max`.
    pub fn take(self: &Arc<Self>, key: K, per_key_max: u32, total_max: u32) -> Option<Place<K>> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.total >= total_max {
            return None;
        }
        let of_key = held.by_key.entry(key).or_insert(0);
        if *of_key >= per_key_max {
            return None;
        }
        *of_key += 1;
        held.total += 1;
        Some(Place {
            quota: Arc::clone(self),
            key,
        })
    }

    /// Places held now, by all keys.
    pub fn total(&self) -> u32 {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

impl<K: Hash + Eq + Copy> Drop for Place<K> {
    fn drop(&mut self) {
        let mut held = self.quota.held.lock().unwrap_or_else(|p| p.into_inner());
        held.total = held.total.saturating_sub(1);
        if let Some(count) = held.by_key.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.by_key.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_cannot_take_every_place_and_places_come_back() {
        let quota = Arc::new(Quota::default());
        let held: Vec<_> = (0..3)
            .map(|_| quota.take(1, 3, 5).expect("a place"))
            .collect();
        assert!(quota.take(1, 3, 5).is_none(), "past the key's share");
        let other = quota.take(2, 3, 5).expect("another key gets in");
        let last = quota.take(3, 3, 5).expect("the last place");
        assert!(quota.take(4, 3, 5).is_none(), "past the total");
        assert_eq!(quota.total(), 5);
        drop((held, other, last));
        assert_eq!(quota.total(), 0);
        assert!(quota.take(1, 3, 5).is_some());
    }
}
