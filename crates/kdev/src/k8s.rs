//! Everything kdev's capabilities share about talking to Kubernetes: a client
//! from kubectl's flags ([`client`]), names checked as the API server checks
//! them ([`names`]), the one guarded read-modify-write ([`guarded`]), object
//! helpers ([`objects`]), a port-forward as a byte stream ([`portforward`]), the one retry policy ([`backoff`]) and the one way
//! to wait for an object ([`wait`]).
//!
//! This module imports no command module and no CLI type.

pub mod activity;
pub mod backoff;
pub mod client;
pub mod guarded;
pub mod names;
pub mod objects;
pub mod portforward;
pub mod wait;

pub use client::{Flags, Kube, connect, explain, is_conflict, is_not_found, refused_with, served};
pub use names::{validate_dns_label, validate_subdomain};
