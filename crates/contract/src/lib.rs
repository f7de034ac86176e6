//! The contract between kdev's processes: the CLI on a laptop, the agent in a
//! proxy pod and the controller in the cluster.
//!
//! This crate does no I/O. It holds what two processes must agree on:
//! label and annotation keys, and the rules that decide from cluster state
//! alone what a process may do (for example whether a Lease has expired).
//!
//! # Compatibility
//! A controller and agent already running in a cluster keep talking to newer
//! and older CLIs. So:
//! - a key in [`keys`] is never renamed or given a new meaning; a new key may
//!   be added, and readers ignore keys they do not know;
//! - a rule here only changes in a way that an older reader would still
//!   accept (for example a Lease is never judged expired earlier than before).

#![forbid(unsafe_code)]

pub mod duration;
pub mod envs;
pub mod hash;
pub mod keys;
pub mod lease;
pub mod schedule;
pub mod selector;
pub mod session;
pub mod tunnel;
pub mod webhook;
