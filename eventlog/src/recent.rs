//! A bounded map that keeps what is used: two generations, the older one dropped as a whole.
//!
//! The command side caches the last state of each stream it touched, and every order is a
//! stream of its own: the cache fills up. It used to start over when full, and with it went
//! the hot streams: each SKU's state, thousands of reservations, folded again from the store
//! by the next command (a 100 ms stall of the embedded server at 1,000 orders/s, once every
//! 50,000 orders). Here a full generation becomes the old one and a new one starts; whatever
//! is read from the old one moves to the new, and the old one is dropped when the new one
//! fills. A stream used at least once a generation is never dropped.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

pub struct Recent<K, V> {
    /// Entries per generation.
    capacity: usize,
    young: HashMap<K, V>,
    old: HashMap<K, V>,
}

impl<K: Hash + Eq, V> Recent<K, V> {
    /// Holds between `capacity` and twice that many entries once full.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            young: HashMap::with_capacity(capacity.max(1)),
            old: HashMap::new(),
        }
    }

    /// The entry, kept for another generation.
    pub fn get<Q>(&mut self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if !self.young.contains_key(key)
            && let Some((key, value)) = self.old.remove_entry(key)
        {
            self.insert(key, value);
        }
        self.young.get(key)
    }

    pub fn insert(&mut self, key: K, value: V) {
        if self.young.len() >= self.capacity && !self.young.contains_key(&key) {
            // Sized once for the whole generation: a map that grows rehashes all it holds at
            // once, under the caller's lock.
            let young = HashMap::with_capacity(self.capacity);
            self.old = std::mem::replace(&mut self.young, young);
        }
        self.old.remove(&key);
        self.young.insert(key, value);
    }

    pub fn remove<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.young.remove(key);
        self.old.remove(key);
    }

    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_used_every_generation_outlives_any_number_of_others() {
        let mut recent = Recent::new(100);
        recent.insert("hot".to_owned(), 0);
        for n in 0..10_000 {
            recent.insert(format!("cold-{n}"), n);
            if n % 50 == 0 {
                assert!(recent.get("hot").is_some(), "the hot entry went at {n}");
            }
        }
        assert!(recent.len() <= 200, "bounded: {}", recent.len());
        assert!(recent.get("cold-9999").is_some(), "the newest are kept");
        assert!(recent.get("cold-10").is_none(), "the unused ones went");
    }

    #[test]
    fn an_entry_is_replaced_and_removed_in_either_generation() {
        let mut recent = Recent::new(2);
        recent.insert("a", 1);
        recent.insert("b", 2);
        recent.insert("c", 3);
        recent.insert("a", 4);
        assert_eq!(recent.get("a"), Some(&4));
        assert_eq!(recent.len(), 3);
        recent.remove("b");
        recent.remove("c");
        assert_eq!(recent.get("b"), None);
        assert_eq!(recent.get("c"), None);
        assert_eq!(recent.len(), 1);
    }
}
