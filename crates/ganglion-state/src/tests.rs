use ganglion_storage::state::StateEntry;
use ganglion_types::{BlockNid, EventNid, StateKeyNid, TypeNid};

use super::*;

fn entry(kind: i64, key: i64, event: i64) -> StateEntry {
    StateEntry { type_nid: TypeNid(kind), state_key_nid: StateKeyNid(key), event_nid: EventNid(event) }
}

fn materialise(base: &Snapshot, changes: &[StateEntry], next_block: &mut i64) -> (Snapshot, usize) {
    let mut next = base.clone();
    let touched = base.apply(changes);
    let rewritten = touched.len();
    for (bucket, entries) in touched {
        *next_block += 1;
        next.set_bucket(bucket, BlockNid(*next_block), entries);
    }
    (next, rewritten)
}

#[test]
fn a_change_rewrites_one_bucket_and_keeps_the_rest() {
    let mut block = 0;
    let mut snapshot = Snapshot::empty();
    // A 10,000-member room, built up one join at a time.
    for user in 1..=10_000 {
        let (next, rewritten) = materialise(&snapshot, &[entry(1, user, user)], &mut block);
        assert_eq!(rewritten, 1);
        snapshot = next;
    }
    assert_eq!(snapshot.len(), 10_000);
    for user in [1, 77, 5_000, 10_000] {
        assert_eq!(snapshot.get(TypeNid(1), StateKeyNid(user)), Some(EventNid(user)));
    }
    assert_eq!(snapshot.get(TypeNid(2), StateKeyNid(1)), None);
    // One more membership change: one block of roughly 10,000 / 256 entries is rewritten.
    let before = snapshot.bucket_list();
    let (next, rewritten) = materialise(&snapshot, &[entry(1, 42, 20_042)], &mut block);
    assert_eq!(rewritten, 1);
    let after = next.bucket_list();
    let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    assert_eq!(changed, 1);
    assert_eq!(next.get(TypeNid(1), StateKeyNid(42)), Some(EventNid(20_042)));
    assert_eq!(snapshot.get(TypeNid(1), StateKeyNid(42)), Some(EventNid(42)));
    let largest = next.buckets_for_test().map(|(_, entries)| entries.len()).max().unwrap();
    assert!(largest < 100, "largest bucket has {largest} entries");
}

#[test]
fn bucket_function_spreads_keys() {
    let mut counts = vec![0u32; BUCKETS as usize];
    for key in 0..25_600 {
        counts[bucket_of(TypeNid(3), StateKeyNid(key)) as usize] += 1;
    }
    let max = *counts.iter().max().unwrap();
    let min = *counts.iter().min().unwrap();
    assert!(max < 160 && min > 50, "min {min} max {max}");
}

#[test]
fn bounded_cache_evicts_old_generation() {
    let cache = BoundedCache::new(4);
    for key in 0..10 {
        cache.insert(key, key * 2);
    }
    assert_eq!(cache.get(&9), Some(18));
    assert_eq!(cache.get(&0), None);
}

#[test]
fn a_session_read_before_a_revocation_is_not_cached_after_it() {
    let caches = Caches::new();
    let before = caches.sessions_generation();
    caches.remember_session(before, "fresh", "@u:x", "D1");
    assert_eq!(caches.session("fresh"), Some(("@u:x".to_owned(), "D1".to_owned())));
    // A lookup read the database, then a revocation cleared the cache before it stored its answer.
    let read_at = caches.sessions_generation();
    caches.forget_sessions();
    caches.remember_session(read_at, "stale", "@u:x", "D2");
    assert_eq!(caches.session("stale"), None);
    assert_eq!(caches.session("fresh"), None);
}
