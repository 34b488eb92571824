//! Placeholder until the server-side filtering branch lands (same API).

pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShardRange {
    pub start: u64,
    pub end: u128,
}

impl ShardRange {
    pub fn of(shard: u16, shards: u16) -> Self {
        let n = u128::from(shards.max(1));
        let k = u128::from(shard);
        let span = (1u128 << 64) / n;
        let start = k * span;
        let end = if k + 1 == n {
            1u128 << 64
        } else {
            (k + 1) * span
        };
        Self {
            start: u64::try_from(start).unwrap_or(u64::MAX),
            end,
        }
    }
    pub fn contains(&self, hash: u64) -> bool {
        hash >= self.start && u128::from(hash) < self.end
    }
    pub fn contains_uid(&self, uid: &str) -> bool {
        self.contains(fnv1a64(uid.as_bytes()))
    }
    pub fn selector_term(&self) -> String {
        let end = if self.end >= 1u128 << 64 {
            "0x10000000000000000".to_string()
        } else {
            format!("0x{:016x}", self.end)
        };
        format!(
            "shardRange(object.metadata.uid, '0x{:016x}', '{end}')",
            self.start
        )
    }
}

pub fn selector(ranges: &[ShardRange]) -> Option<String> {
    (!ranges.is_empty()).then(|| {
        ranges
            .iter()
            .map(ShardRange::selector_term)
            .collect::<Vec<_>>()
            .join(" || ")
    })
}
