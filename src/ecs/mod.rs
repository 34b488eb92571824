//! Everything Alibaba Cloud: the signature V1 signer (pure), the error classification, credentials
//! and the HTTP client.

pub mod accounts;
pub mod client;
pub mod clock;
pub mod credentials;
pub mod endpoints;
pub mod error;
pub mod metadata;
pub mod profile;
pub mod provider;
pub mod ratelimit;
pub mod retry;
pub mod signer;
pub mod signer_v3;
pub mod sts;
pub mod transport;
pub mod types;

pub use client::{Accepted, CallObserver, ClientConfig, EcsClient, EcsError, SignatureVersion};
pub use credentials::Credentials;
pub use error::{ApiError, ErrorClass};
pub use provider::{CredentialsProvider, ProviderConfig};
pub use types::Instance;
