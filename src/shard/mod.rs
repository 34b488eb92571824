//! Sharding: which replica serves which VncPasswords when `--shards` is above 1.

pub mod assign;
pub mod range;

pub use range::{ShardRange, fnv1a64, selector};
