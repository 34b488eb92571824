//! Sharding of the VncPasswords between replicas by the hash of their uid, and the API server's
//! own filtering of lists and watches by that hash (Kubernetes sharded list and watch, KEP-5866).

mod range;
pub mod server;

pub use range::{ShardRange, fnv1a64, selector};
pub use server::{server_filters, sharded_client};
