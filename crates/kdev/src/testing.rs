//! `kdev test`: declarative end-to-end tests written for kuttl or chainsaw,
//! run against a real cluster.
//!
//! - [`yaml`]: documents that remember their lines (errors name file:line).
//! - [`model`]: what a test is, whatever its format; [`kuttl`] and
//!   [`chainsaw`] read the two formats into it; [`suite`] finds tests.
//! - [`expr`]: chainsaw's `(expression)`s; [`matching`]: does an object
//!   satisfy an expected one (every mismatch); [`diff`]: how a failure reads.
//! - [`run`]: one test against the cluster; [`runner`]: a suite in parallel;
//!   [`report`]: terminal, JUnit and JSON output, and the last run's results.
//! - [`target`]: the cluster a suite runs on (`--cluster`); [`prepare`]:
//!   the controller under test deployed or run locally; [`watch`]: which
//!   tests a change calls for (`--watch`).

pub mod chainsaw;
pub mod cluster;
pub mod diff;
pub mod expr;
pub mod kuttl;
pub mod matching;
pub mod model;
pub mod prepare;
pub mod report;
pub mod run;
pub mod runner;
pub mod suite;
pub mod target;
pub mod watch;
pub mod yaml;
