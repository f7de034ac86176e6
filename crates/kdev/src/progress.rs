//! Progress on stderr for every wait longer than a second.
//!
//! On a terminal a step's line is redrawn each second with the time spent; in
//! a pipe or CI log each step prints one line when it starts and one when it
//! ends, so logs stay readable.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// A step being waited on. Call [`Step::done`] when it has finished; a step
/// dropped without `done` (an error is on its way) just clears its line.
pub struct Step {
    message: String,
    started: Instant,
    ticker: Option<JoinHandle<()>>,
    finished: bool,
}

impl Step {
    pub fn start(message: impl Into<String>) -> Self {
        let message = message.into();
        let started = Instant::now();
        let ticker = if std::io::stderr().is_terminal() {
            let message = message.clone();
            Some(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    let mut err = std::io::stderr().lock();
                    let _ = write!(
                        err,
                        "\r\x1b[2K… {message} ({}s)",
                        started.elapsed().as_secs()
                    );
                    let _ = err.flush();
                }
            }))
        } else {
            eprintln!("… {message}");
            None
        };
        Self {
            message,
            started,
            ticker,
            finished: false,
        }
    }

    /// Replaces the step's line with "✓ message (time)".
    pub fn done(mut self) {
        self.finished = true;
        self.stop_ticker();
        eprintln!(
            "✓ {} ({:.1}s)",
            self.message,
            self.started.elapsed().as_secs_f64()
        );
    }

    fn stop_ticker(&mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
            eprint!("\r\x1b[2K");
        }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if !self.finished {
            self.stop_ticker();
        }
    }
}
