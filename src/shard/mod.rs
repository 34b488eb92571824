//! Sharding of the VncPasswords between replicas by the hash of their uid: which replica holds how
//! many shards ([`assign`]), the hash and ranges ([`range`]), and the API server's own filtering of
//! lists and watches by that hash (Kubernetes sharded list and watch, KEP-5866, [`server`]).

pub mod assign;
mod range;
pub mod server;

pub use range::{ShardRange, fnv1a64, selector};
pub use server::{server_filters, sharded_client};
