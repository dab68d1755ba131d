//! A small least-recently-used map: the native executable keeps one program (and its
//! arena) per input signature, and at most a fixed number of them, so a server fed
//! ever new input shapes does not grow without bound.
//!
//! A linear scan: the capacity is a handful, and a lookup compares a few short keys.

use std::borrow::Borrow;

/// At most `capacity` entries; inserting into a full map evicts the entry used least
/// recently (by [`Lru::get`] or [`Lru::insert`]).
pub struct Lru<K, V> {
    capacity: usize,
    /// Entries with the tick of their last use.
    entries: Vec<(K, V, u64)>,
    tick: u64,
}

impl<K: PartialEq, V> Lru<K, V> {
    /// An empty map of `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> Self {
        Lru { capacity: capacity.max(1), entries: Vec::new(), tick: 0 }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The value of `key`, marked used.
    pub fn get<Q: PartialEq + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        self.tick += 1;
        let tick = self.tick;
        let e = self.entries.iter_mut().find(|e| e.0.borrow() == key)?;
        e.2 = tick;
        Some(&mut e.1)
    }

    /// The value of `key`, without marking it used.
    pub fn peek<Q: PartialEq + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.entries.iter().find(|e| e.0.borrow() == key).map(|e| &e.1)
    }

    /// Insert (or replace) `key`, marked used; returns the entry evicted to make room.
    pub fn insert(&mut self, key: K, value: V) -> Option<(K, V)> {
        self.tick += 1;
        if let Some(e) = self.entries.iter_mut().find(|e| e.0 == key) {
            e.1 = value;
            e.2 = self.tick;
            return None;
        }
        let mut evicted = None;
        if self.entries.len() == self.capacity {
            let oldest = (0..self.entries.len()).min_by_key(|&i| self.entries[i].2).unwrap_or(0);
            let (k, v, _) = self.entries.swap_remove(oldest);
            evicted = Some((k, v));
        }
        self.entries.push((key, value, self.tick));
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::Lru;

    #[test]
    fn the_least_recently_used_entry_is_evicted() {
        let mut c = Lru::new(2);
        assert_eq!(c.insert("a", 1), None);
        assert_eq!(c.insert("b", 2), None);
        assert_eq!(c.get(&"a"), Some(&mut 1)); // "b" is now the oldest
        assert_eq!(c.insert("c", 3), Some(("b", 2)));
        assert_eq!(c.len(), 2);
        assert_eq!(c.peek(&"b"), None);
        assert_eq!(c.peek(&"a"), Some(&1)); // peeking does not refresh "a"
        assert_eq!(c.insert("d", 4), Some(("a", 1)));
        assert_eq!(c.insert("d", 5), None, "replacing a key evicts nothing");
        assert_eq!(c.peek(&"d"), Some(&5));
        assert_eq!(c.len(), 2);
    }
}
