//! The `messageId` window, per partition (retries of one message share a key, so a partition).
//!
//! Each id is kept as a 64-bit hash (SipHash with a per-process random key, so nobody can craft
//! ids that collide on purpose) in a hash set, and again with its first-seen second in a FIFO for
//! expiry. Memory per id: 8 bytes + 1 control byte in the set at a load of 7/8 to 7/16 (power-of-two
//! growth), plus 16 bytes in the FIFO (doubling growth): 26–53 bytes, about 42 bytes at 10 million
//! ids (≈ 420 MB). [`Dedupe::memory_bytes`] reports the real figure from the capacities.
//!
//! At the bounds: an id older than the window is forgotten (a retry after it passes); above
//! `max_ids` in total the oldest id of the partition being written is forgotten first, so the
//! effective window shrinks under overload instead of memory growing (counted in `evicted`).
//! A false duplicate needs a 64-bit collision: about 1 in 1.8 × 10^12 per id at 10 million ids.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

/// The set's keys are already hashes: pass them through.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `u64` keys; fold anything else in for completeness.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Default)]
struct Window {
    ids: HashSet<u64, BuildHasherDefault<Identity>>,
    /// (id hash, first seen, seconds since the Unix epoch), oldest first.
    order: VecDeque<(u64, u64)>,
}

impl Window {
    fn pop_oldest(&mut self) -> bool {
        match self.order.pop_front() {
            Some((h, _)) => {
                self.ids.remove(&h);
                true
            }
            None => false,
        }
    }
}

pub struct Dedupe {
    window_secs: u64,
    max_ids: usize,
    hasher: RandomState,
    partitions: HashMap<i32, Window>,
    total: usize,
    evicted: u64,
}

impl Dedupe {
    pub fn new(window_secs: u64, max_ids: usize) -> Dedupe {
        Dedupe {
            window_secs,
            max_ids: max_ids.max(1),
            hasher: RandomState::new(),
            partitions: HashMap::new(),
            total: 0,
            evicted: 0,
        }
    }

    pub fn window_secs(&self) -> u64 {
        self.window_secs
    }

    fn hash(&self, message_id: &str) -> u64 {
        self.hasher.hash_one(message_id)
    }

    /// Whether `message_id` was seen on `partition` within the window; remembers it if not.
    pub fn seen(&mut self, partition: i32, message_id: &str, now_secs: u64) -> bool {
        let h = self.hash(message_id);
        self.expire(partition, now_secs);
        if self
            .partitions
            .get(&partition)
            .is_some_and(|w| w.ids.contains(&h))
        {
            return true;
        }
        self.insert(partition, h, now_secs);
        false
    }

    /// Remembers an id seen at `at_secs` (rebuilding a partition's window from the output topic).
    pub fn remember(&mut self, partition: i32, message_id: &str, at_secs: u64) {
        let h = self.hash(message_id);
        if !self
            .partitions
            .get(&partition)
            .is_some_and(|w| w.ids.contains(&h))
        {
            self.insert(partition, h, at_secs);
        }
    }

    fn insert(&mut self, partition: i32, h: u64, at_secs: u64) {
        while self.total >= self.max_ids {
            let own = self
                .partitions
                .get_mut(&partition)
                .is_some_and(Window::pop_oldest);
            let evicted = own || self.partitions.values_mut().any(Window::pop_oldest);
            if !evicted {
                break;
            }
            self.total -= 1;
            self.evicted += 1;
        }
        let w = self.partitions.entry(partition).or_default();
        w.ids.insert(h);
        w.order.push_back((h, at_secs));
        self.total += 1;
    }

    /// Forgets the partition's ids first seen at or before `now − window`.
    pub fn expire(&mut self, partition: i32, now_secs: u64) {
        let Some(w) = self.partitions.get_mut(&partition) else {
            return;
        };
        let cutoff = now_secs.saturating_sub(self.window_secs);
        while w.order.front().is_some_and(|&(_, at)| at <= cutoff) {
            w.pop_oldest();
            self.total -= 1;
        }
    }

    /// Drops a partition's window (revoked: its next owner rebuilds it).
    pub fn forget(&mut self, partition: i32) {
        if let Some(w) = self.partitions.remove(&partition) {
            self.total -= w.order.len();
        }
    }

    /// Starts a partition's window empty (before rebuilding it), forgetting what was there.
    pub fn reset(&mut self, partition: i32) {
        self.forget(partition);
        self.partitions.insert(partition, Window::default());
    }

    pub fn has_partition(&self, partition: i32) -> bool {
        self.partitions.contains_key(&partition)
    }

    pub fn partitions(&self) -> Vec<i32> {
        self.partitions.keys().copied().collect()
    }

    /// Ids held, all partitions.
    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Ids forgotten before their window ended because `max_ids` was reached.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Bytes held by the sets and FIFOs, from their capacities.
    pub fn memory_bytes(&self) -> usize {
        self.partitions
            .values()
            .map(|w| {
                // hashbrown: one u64 slot plus one control byte per bucket; buckets are the
                // next power of two above capacity × 8/7.
                let buckets = if w.ids.capacity() == 0 {
                    0
                } else {
                    (w.ids.capacity() * 8 / 7).next_power_of_two()
                };
                buckets * 9 + w.order.capacity() * std::mem::size_of::<(u64, u64)>()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_message_id_is_a_duplicate_on_its_partition_only() {
        let mut d = Dedupe::new(60, 100);
        assert!(!d.seen(0, "m1", 1000));
        assert!(d.seen(0, "m1", 1001));
        assert!(
            !d.seen(1, "m1", 1001),
            "another partition has its own window"
        );
        assert!(!d.seen(0, "m2", 1002));
        assert_eq!(d.len(), 3);
    }

    #[test]
    fn ids_are_forgotten_when_the_window_has_passed() {
        let mut d = Dedupe::new(60, 100);
        assert!(!d.seen(0, "m1", 1000));
        assert!(d.seen(0, "m1", 1059));
        assert!(
            !d.seen(0, "m1", 1060),
            "first seen 60 s ago: the window is over"
        );
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn above_max_ids_the_oldest_id_goes_first_and_is_counted() {
        let mut d = Dedupe::new(3600, 3);
        for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
            assert!(!d.seen(0, id, 1000 + i as u64));
        }
        assert_eq!(d.len(), 3);
        assert_eq!(d.evicted(), 1);
        assert!(!d.seen(0, "a", 1010), "evicted: a retry of it passes");
        assert!(d.seen(0, "d", 1010));
    }

    #[test]
    fn a_rebuilt_partition_knows_its_ids_and_forget_frees_them() {
        let mut d = Dedupe::new(3600, 100);
        d.reset(2);
        d.remember(2, "m1", 500);
        d.remember(2, "m1", 501);
        assert_eq!(d.len(), 1);
        assert!(d.seen(2, "m1", 600));
        d.forget(2);
        assert!(d.is_empty());
        assert!(!d.has_partition(2));
    }

    #[test]
    fn ten_million_ids_fit_in_well_under_a_gigabyte() {
        let mut d = Dedupe::new(86_400, usize::MAX);
        let n = 1_000_000u64;
        for i in 0..n {
            d.remember((i % 4) as i32, &format!("ajs-next-{i}"), 1000);
        }
        let per_id = d.memory_bytes() as f64 / n as f64;
        assert!(per_id < 60.0, "{per_id} bytes per id");
        assert!(per_id * 10_000_000.0 < 1e9);
    }
}
