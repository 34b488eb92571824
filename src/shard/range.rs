//! The pure part of sharding: the hash the API server uses, equal ranges of its 64-bit space, and the
//! `shardSelector` text that asks the API server for one or more ranges.
//!
//! It mirrors Kubernetes' sharded list and watch (KEP-5866, alpha gate `ShardedListAndWatch` since
//! 1.36): `k8s.io/apimachinery/pkg/sharding` (`hash.go`: FNV-1a 64 of the field's string bytes,
//! printed as 16 lowercase hex digits; `selector.go`: `start <= hash < end`, compared as hex text by
//! `HexLess`) and `k8s.io/apiserver/pkg/sharding/parser.go` (the accepted syntax: bounds are `0x`
//! and exactly 16 lowercase hex digits, except the end `0x10000000000000000`, 2^64).

/// 64-bit FNV-1a of `bytes`, the hash Go's `hash/fnv` `New64a` computes. Written by hand (six lines,
/// no crate): offset basis 0xcbf29ce484222325, prime 0x100000001b3, xor then multiply.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The field the selector hashes: a VncPassword's uid never changes, so its shard never does.
const KEY: &str = "object.metadata.uid";

/// 2^64, the exclusive end of the hash space.
const SPACE: u128 = 1 << 64;

/// The hashes `start <= hash < end` (end up to 2^64, hence u128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShardRange {
    pub start: u64,
    pub end: u128,
}

impl ShardRange {
    /// Shard `shard` of `shards` equal ranges: `[shard * 2^64 / shards, (shard + 1) * 2^64 / shards)`
    /// (floors), so consecutive shards meet exactly and the last one ends at 2^64. The caller
    /// guarantees `1 <= shards` and `shard < shards`; outside that it does not panic but returns an
    /// empty range (`start == end`), whose selector the API server refuses rather than read as
    /// "everything".
    pub fn of(shard: u16, shards: u16) -> Self {
        let bound = |k: u16| {
            u128::from(k)
                .checked_mul(SPACE)
                .and_then(|n| n.checked_div(u128::from(shards)))
        };
        match (bound(shard), bound(shard.saturating_add(1))) {
            (Some(start), Some(end)) if shard < shards => ShardRange {
                // start < 2^64 because shard < shards.
                start: u64::try_from(start).unwrap_or(u64::MAX),
                end,
            },
            _ => ShardRange {
                start: u64::MAX,
                end: u128::from(u64::MAX),
            },
        }
    }

    pub fn contains(&self, hash: u64) -> bool {
        self.start <= hash && u128::from(hash) < self.end
    }

    /// Whether the object with this `metadata.uid` falls in the range, as the API server decides.
    pub fn contains_uid(&self, uid: &str) -> bool {
        self.contains(fnv1a64(uid.as_bytes()))
    }

    /// `shardRange(object.metadata.uid, '0x…', '0x…')` with both bounds as the parser wants them.
    pub fn selector_term(&self) -> String {
        format!(
            "shardRange({KEY}, '0x{:016x}', '0x{:016x}')",
            self.start, self.end
        )
    }
}

/// The selector for several ranges: their terms joined by ` || ` (the API server's own rendering in
/// `selector.go`, so it echoes back identical text). None for no range: an empty `shardSelector` is
/// an error to the API server, and "no ranges" must never turn into "no filter".
pub fn selector(ranges: &[ShardRange]) -> Option<String> {
    if ranges.is_empty() {
        return None;
    }
    Some(
        ranges
            .iter()
            .map(ShardRange::selector_term)
            .collect::<Vec<_>>()
            .join(" || "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// uids and their hashes as printed by Go (`sharding.HashField` of k8s.io/apimachinery v0.37.2).
    const GO_HASHES: [(&str, u64); 7] = [
        ("", 0xcbf29ce484222325),
        ("a", 0xaf63dc4c8601ec8c),
        ("foobar", 0x85944171f73967e8),
        ("0d4e7c7e-3f1a-4b8e-9c2d-5a6b7c8d9e0f", 0x5244a9c56ac21842),
        ("6ba7b810-9dad-11d1-80b4-00c04fd430c8", 0xad05fd9059563830),
        ("ffffffff-ffff-ffff-ffff-ffffffffffff", 0x7718f1b2f3cdd331),
        ("00000000-0000-0000-0000-000000000000", 0x7c384c6218f299f1),
    ];

    /// For each `(shard, shards)`: the term Go's `sharding.Parse` accepted and printed back
    /// identically (`String()`), and which of `GO_HASHES` its `Matches` selected.
    const GO_RANGES: [(u16, u16, &str, &[usize]); 8] = [
        (
            0,
            1,
            "shardRange(object.metadata.uid, '0x0000000000000000', '0x10000000000000000')",
            &[0, 1, 2, 3, 4, 5, 6],
        ),
        (
            0,
            3,
            "shardRange(object.metadata.uid, '0x0000000000000000', '0x5555555555555555')",
            &[3],
        ),
        (
            1,
            3,
            "shardRange(object.metadata.uid, '0x5555555555555555', '0xaaaaaaaaaaaaaaaa')",
            &[2, 5, 6],
        ),
        (
            2,
            3,
            "shardRange(object.metadata.uid, '0xaaaaaaaaaaaaaaaa', '0x10000000000000000')",
            &[0, 1, 4],
        ),
        (
            0,
            4,
            "shardRange(object.metadata.uid, '0x0000000000000000', '0x4000000000000000')",
            &[],
        ),
        (
            1,
            4,
            "shardRange(object.metadata.uid, '0x4000000000000000', '0x8000000000000000')",
            &[3, 5, 6],
        ),
        (
            2,
            4,
            "shardRange(object.metadata.uid, '0x8000000000000000', '0xc000000000000000')",
            &[1, 2, 4],
        ),
        (
            3,
            4,
            "shardRange(object.metadata.uid, '0xc000000000000000', '0x10000000000000000')",
            &[0],
        ),
    ];

    #[test]
    fn fnv1a64_matches_go() {
        for (uid, hash) in GO_HASHES {
            assert_eq!(fnv1a64(uid.as_bytes()), hash, "{uid:?}");
        }
    }

    #[test]
    fn ranges_terms_and_membership_match_go() {
        for (shard, shards, term, matched) in GO_RANGES {
            let range = ShardRange::of(shard, shards);
            assert_eq!(range.selector_term(), term, "{shard}/{shards}");
            let ours: Vec<usize> = (0..GO_HASHES.len())
                .filter(|&i| range.contains_uid(GO_HASHES[i].0))
                .collect();
            assert_eq!(ours, matched, "{shard}/{shards}");
        }
    }

    /// Go's `HexLess` on the bounds we print (same length: text order; 17 digits: 2^64 is largest).
    #[test]
    fn bounds_compare_as_go_hex_less_does() {
        // (a, b, HexLess(a, b)) as printed by Go.
        for (a, b, less) in [
            (0x0u128, 0x4000000000000000u128, true),
            (0x3fffffffffffffff, 0x4000000000000000, true),
            (0x4000000000000000, 0x4000000000000000, false),
            (0xffffffffffffffff, SPACE, true),
            (SPACE, 0xffffffffffffffff, false),
            (0xa000000000000000, 0x9fffffffffffffff, false),
        ] {
            assert_eq!(a < b, less, "{a:#x} < {b:#x}");
        }
    }

    #[test]
    fn edges_of_a_range() {
        let r = ShardRange::of(1, 4);
        assert_eq!((r.start, r.end), (0x4000000000000000, 0x8000000000000000));
        assert!(!r.contains(0x3fffffffffffffff));
        assert!(r.contains(0x4000000000000000));
        assert!(r.contains(0x7fffffffffffffff));
        assert!(!r.contains(0x8000000000000000));
        let last = ShardRange::of(3, 4);
        assert!(last.contains(u64::MAX));
        assert_eq!(last.end, SPACE);
    }

    #[test]
    fn shards_partition_the_space_for_every_count() {
        for shards in [1u16, 2, 3, 5, 7, 16, 255, 1000, u16::MAX] {
            let mut expected_start = 0u128;
            for shard in 0..shards {
                let r = ShardRange::of(shard, shards);
                assert_eq!(u128::from(r.start), expected_start, "{shard}/{shards}");
                assert!(r.end > u128::from(r.start), "{shard}/{shards} empty");
                expected_start = r.end;
            }
            assert_eq!(expected_start, SPACE, "{shards}");
        }
    }

    #[test]
    fn every_hash_is_in_exactly_one_shard() {
        let shards = 7;
        for uid in (0..2000).map(|i| format!("uid-{i}")) {
            let owners = (0..shards)
                .filter(|&s| ShardRange::of(s, shards).contains_uid(&uid))
                .count();
            assert_eq!(owners, 1, "{uid}");
        }
    }

    #[test]
    fn out_of_contract_arguments_give_an_empty_range() {
        for (shard, shards) in [(0, 0), (5, 0), (4, 4), (u16::MAX, u16::MAX), (u16::MAX, 1)] {
            let r = ShardRange::of(shard, shards);
            assert_eq!(u128::from(r.start), r.end, "{shard}/{shards}");
            assert!(!(0..=u64::MAX).step_by(1 << 48).any(|h| r.contains(h)));
            assert!(!r.contains(u64::MAX));
        }
        assert_eq!(ShardRange::of(u16::MAX - 1, u16::MAX).end, SPACE);
    }

    #[test]
    fn selector_joins_terms_like_go() {
        assert_eq!(selector(&[]), None);
        assert_eq!(
            selector(&[ShardRange::of(0, 4), ShardRange::of(2, 4)]).as_deref(),
            // Parsed by Go's sharding.Parse and printed back identically.
            Some(
                "shardRange(object.metadata.uid, '0x0000000000000000', '0x4000000000000000') || shardRange(object.metadata.uid, '0x8000000000000000', '0xc000000000000000')"
            )
        );
    }
}
