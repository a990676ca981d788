use super::*;
use crate::plugin::journal::MAX_CALL_WRITES;

const SECOND: Duration = Duration::from_secs(1);

fn refused(cells: &SharedCells, reason: Refusal) -> u64 {
    cells.refusals()[reason as usize].1
}

/// Cells under small caps: `cells` cells, or `bytes` bytes of 1-byte-key
/// cells.
fn small(cells: usize, bytes_for: usize) -> SharedCells {
    SharedCells::with_limits(
        "test",
        CellLimits {
            key_bytes: 8,
            total_bytes: bytes_for * (1 + CELL_OVERHEAD_BYTES),
            cells,
        },
    )
}

/// Writes `key` in its own committed call.
fn put(cells: &SharedCells, key: &str, value: i64, ttl: Duration, now: Instant) -> bool {
    let mut journal = CallJournal::default();
    let stored = cells.compare_and_swap(key, cells.get(key, now), value, ttl, now, &mut journal);
    journal.commit();
    stored
}

/// Heap entries in the shard of `key`, and cells in it.
fn shard_sizes(cells: &SharedCells, key: &str) -> (usize, usize) {
    let shard = cells.lock(key);
    (shard.heap.len(), shard.map.len())
}

#[test]
fn cells_add_swap_and_expire() {
    let cells = SharedCells::new("test");
    let mut journal = CallJournal::default();
    let now = Instant::now();
    let ttl = SECOND;
    assert_eq!(cells.get("a", now), None);
    assert_eq!(cells.add("a", 2, ttl, now, &mut journal), 2);
    assert_eq!(cells.add("a", 3, ttl, now, &mut journal), 5);
    assert!(!cells.compare_and_swap("a", Some(4), 9, ttl, now, &mut journal));
    assert!(cells.compare_and_swap("a", Some(5), 9, ttl, now, &mut journal));
    assert_eq!(cells.get("a", now), Some(9));
    assert!(cells.compare_and_swap("b", None, 1, ttl, now, &mut journal));
    assert!(!cells.compare_and_swap("b", None, 1, ttl, now, &mut journal));
    journal.commit();
    let later = now + ttl;
    assert_eq!(cells.get("a", later), None);
    assert_eq!(
        cells.add("a", 1, ttl, later, &mut journal),
        1,
        "expired cells start again"
    );
}

#[test]
fn long_keys_are_refused_as_at_a_cap() {
    let cells = SharedCells::new("test");
    let mut journal = CallJournal::default();
    let now = Instant::now();
    let longest = "k".repeat(MAX_KEY_BYTES);
    let long = "k".repeat(MAX_KEY_BYTES + 1);
    assert_eq!(cells.add(&longest, 2, SECOND, now, &mut journal), 2);
    assert_eq!(cells.add(&longest, 2, SECOND, now, &mut journal), 4);
    assert_eq!(cells.add(&long, 2, SECOND, now, &mut journal), 2);
    assert_eq!(
        cells.add(&long, 2, SECOND, now, &mut journal),
        2,
        "not stored"
    );
    assert!(!cells.compare_and_swap(&long, None, 1, SECOND, now, &mut journal));
    assert_eq!(cells.get(&long, now), None);
    assert_eq!(refused(&cells, Refusal::KeyTooLong), 4);
    assert_eq!(
        cells.usage(),
        CellUsage {
            cells: 1,
            bytes: MAX_KEY_BYTES + CELL_OVERHEAD_BYTES
        }
    );
    assert_eq!(journal.len(), 2, "refused writes are not journaled");
}

#[test]
fn the_byte_cap_and_the_count_cap_refuse_new_keys_only() {
    let now = Instant::now();
    // Three 1-byte keys fill the byte cap; a 2-byte key does not fit after two.
    let by_bytes = small(100, 3);
    assert!(put(&by_bytes, "a", 1, SECOND, now));
    assert!(put(&by_bytes, "b", 1, SECOND, now));
    assert!(!put(&by_bytes, "cc", 1, SECOND, now));
    assert!(put(&by_bytes, "c", 1, SECOND, now));
    assert!(!put(&by_bytes, "d", 1, SECOND, now));
    assert!(
        put(&by_bytes, "a", 2, SECOND, now),
        "a held key is rewritten"
    );
    assert_eq!(by_bytes.get("a", now), Some(2));
    let usage = by_bytes.usage();
    assert_eq!(usage.cells, 3);
    assert!(usage.bytes <= by_bytes.limits().total_bytes, "{usage:?}");
    assert_eq!(refused(&by_bytes, Refusal::Full), 2);

    let by_count = small(2, 100);
    let mut journal = CallJournal::default();
    assert_eq!(by_count.add("a", 5, SECOND, now, &mut journal), 5);
    assert_eq!(by_count.add("b", 5, SECOND, now, &mut journal), 5);
    assert_eq!(by_count.add("c", 5, SECOND, now, &mut journal), 5);
    assert_eq!(
        by_count.add("c", 5, SECOND, now, &mut journal),
        5,
        "as if fresh"
    );
    assert_eq!(by_count.get("c", now), None);
    assert_eq!(by_count.usage().cells, 2);
    assert_eq!(refused(&by_count, Refusal::Full), 2);
}

/// `n` keys that fall in the same shard as `key`.
fn in_shard_of(cells: &SharedCells, key: &str, n: usize) -> Vec<String> {
    let shard = |k: &str| cells.hasher.hash_one(k) % SHARDS as u64;
    (0..)
        .map(|i| format!("k{i}"))
        .filter(|k| shard(k) == shard(key))
        .take(n)
        .collect()
}

#[test]
fn at_a_cap_expired_cells_make_room_first() {
    let cells = small(2, 100);
    let now = Instant::now();
    let [long, short]: [String; 2] = in_shard_of(&cells, "d", 2).try_into().unwrap();
    // `long` gets five heap entries due at 1..=5 s, then lives 1,000 s:
    // the first comes up and is queued again, the others are stale.
    for s in (1..=5).rev() {
        assert!(put(&cells, &long, 1, Duration::from_secs(s), now));
    }
    assert!(put(&cells, &long, 1, 1000 * SECOND, now));
    assert!(put(&cells, &short, 1, 6 * SECOND, now));
    assert!(!put(&cells, "d", 1, SECOND, now), "at the cap");
    // The few entries every operation looks at free nothing; the write
    // looks further before refusing, and finds `short` expired.
    let later = now + 10 * SECOND;
    let mut call = CallJournal::default();
    assert!(cells.compare_and_swap("d", None, 1, SECOND, later, &mut call));
    assert_eq!(cells.get("d", later), Some(1));
    assert_eq!(cells.get(&long, later), Some(1));
    assert_eq!(cells.get(&short, later), None);
    assert_eq!(cells.usage().cells, 2);
}

#[test]
fn expiry_is_incremental_and_bounded_per_operation() {
    let cells = SharedCells::new("test");
    let now = Instant::now();
    let n = 2000;
    for i in 0..n {
        assert!(put(&cells, &format!("k{i}"), 1, SECOND, now));
    }
    assert_eq!(cells.usage().cells, n);
    let later = now + 2 * SECOND;
    assert_eq!(cells.get("k0", later), None);
    assert_eq!(
        cells.usage().cells,
        n - EXPIRE_PER_OP,
        "one operation forgets a few cells"
    );
    // Operations on every shard forget the rest, a few at a time.
    let mut ops = 1;
    while cells.usage().cells > 0 {
        cells.get(&format!("k{}", ops % n), later);
        ops += 1;
        assert!(ops < 10 * n, "expired cells are never forgotten");
    }
    assert!(
        ops >= n / EXPIRE_PER_OP,
        "{ops} operations forgot {n} cells"
    );
    assert_eq!(cells.usage(), CellUsage::default());
}

#[test]
fn a_cell_whose_expiry_moved_later_lives_until_then() {
    let cells = SharedCells::new("test");
    let now = Instant::now();
    assert!(put(&cells, "a", 1, SECOND, now));
    let half = now + SECOND / 2;
    assert!(put(&cells, "a", 2, SECOND, half));
    // Its first heap entry comes up, and is queued again.
    let after_first = now + SECOND + SECOND / 10;
    assert_eq!(cells.get("a", after_first), Some(2));
    assert_eq!(shard_sizes(&cells, "a"), (1, 1));
    assert_eq!(cells.get("a", half + SECOND), None);
    assert_eq!(cells.usage().cells, 0);
}

#[test]
fn rewriting_one_key_keeps_its_heap_bounded() {
    let now = Instant::now();
    // Later expiries add no heap entry.
    let later = SharedCells::new("test");
    for i in 0..1000u32 {
        let at = now + Duration::from_millis(i.into());
        assert!(put(&later, "hot", 1, SECOND, at));
    }
    assert_eq!(shard_sizes(&later, "hot"), (1, 1));
    // Earlier ones each add one, until the heap is rebuilt from the map.
    let earlier = SharedCells::new("test");
    let bound = 2 + shard::HEAP_SLACK;
    let mut largest = 0;
    for i in 0..1000u64 {
        assert!(put(
            &earlier,
            "hot",
            1,
            Duration::from_secs(10_000 - i),
            now
        ));
        let (heap, map) = shard_sizes(&earlier, "hot");
        assert_eq!(map, 1);
        assert!(heap <= bound, "{heap} heap entries for one cell");
        largest = largest.max(heap);
    }
    assert_eq!(
        largest, bound,
        "the heap grows to its bound, then is rebuilt"
    );
    assert_eq!(earlier.get("hot", now + Duration::from_secs(9_001)), None);
    assert_eq!(earlier.usage().cells, 0);
}

#[test]
fn a_failed_call_takes_back_its_writes() {
    let cells = SharedCells::new("test");
    let now = Instant::now();
    assert!(put(&cells, "kept", 1, SECOND, now));

    let mut call = CallJournal::default();
    assert_eq!(cells.add("kept", 5, SECOND, now, &mut call), 6);
    assert_eq!(cells.add("kept", 5, SECOND, now, &mut call), 11);
    assert_eq!(cells.add("new", 5, SECOND, now, &mut call), 5);
    call.undo(&cells, now);
    assert_eq!(
        cells.get("kept", now),
        Some(1),
        "both writes undone in order"
    );
    assert_eq!(cells.get("new", now), None);
    assert_eq!(cells.usage().cells, 1);

    // Written again since: the later write stays.
    let mut failed = CallJournal::default();
    let mut other = CallJournal::default();
    assert_eq!(cells.add("raced", 1, SECOND, now, &mut failed), 1);
    assert_eq!(cells.add("raced", 1, SECOND, now, &mut other), 2);
    other.commit();
    failed.undo(&cells, now);
    assert_eq!(cells.get("raced", now), Some(2));

    // A value before that has expired since: the cell goes.
    let mut late = CallJournal::default();
    assert_eq!(cells.add("kept", 1, 10 * SECOND, now, &mut late), 2);
    late.undo(&cells, now + 2 * SECOND);
    assert_eq!(cells.get("kept", now), None);
    assert_eq!(cells.usage().cells, 1, "only `raced` is left");
}

#[test]
fn one_call_writes_at_most_its_share() {
    let cells = SharedCells::new("test");
    let now = Instant::now();
    let mut call = CallJournal::default();
    for i in 0..MAX_CALL_WRITES {
        assert!(cells.compare_and_swap(&format!("k{i}"), None, 1, SECOND, now, &mut call));
    }
    assert!(!cells.compare_and_swap("one-more", None, 1, SECOND, now, &mut call));
    assert_eq!(cells.add("k0", 1, SECOND, now, &mut call), 1, "as if fresh");
    assert_eq!(cells.get("k0", now), Some(1));
    assert_eq!(refused(&cells, Refusal::TooManyWrites), 2);
    call.commit();
    assert_eq!(cells.add("k0", 1, SECOND, now, &mut call), 2);
}

#[test]
fn concurrent_writers_never_pass_the_cap() {
    let cells = small(500, 10_000);
    let now = Instant::now();
    let stored: usize = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let cells = &cells;
                scope.spawn(move || {
                    (0..400)
                        .filter(|i| put(cells, &format!("{t}:{i}"), 1, SECOND, now))
                        .count()
                })
            })
            .collect();
        writers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert_eq!(stored, 500);
    assert_eq!(cells.usage().cells, 500);
    assert_eq!(refused(&cells, Refusal::Full), 1600 - 500);
}
