//! The fake ECS endpoint (see README).
