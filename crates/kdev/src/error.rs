//! How a command's outcome reaches the user.
//!
//! Commands return `anyhow::Error`s whose messages say what failed, on which
//! object and what to do next. A [`Failure::Usage`] anywhere in the chain makes
//! the process exit 2 (the user asked for something that cannot be done as
//! asked); anything else exits 1.

use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The command line or an input file is wrong; nothing was changed.
    #[error("{0}")]
    Usage(String),
}

/// Shorthand for a usage error.
pub fn usage(message: impl fmt::Display) -> anyhow::Error {
    Failure::Usage(message.to_string()).into()
}
