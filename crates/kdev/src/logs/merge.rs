//! `--merge-by-time[=WINDOW]`: lines from all streams in timestamp order.
//!
//! Each line is held for WINDOW after it arrives; when that time is up it is
//! printed together with every held line that has an earlier timestamp. So
//! lines that arrive within WINDOW of each other come out in timestamp
//! order, and no line waits much longer than WINDOW. A line arriving later
//! than WINDOW behind lines already printed is printed as soon as its own
//! time is up (out of order, never dropped).
//!
//! Memory is bounded: past [`MAX_HELD_BYTES`] the earliest lines are
//! printed early; and while stdout is slow the merger stops taking input,
//! which holds the streams back.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::output::Batch;

/// How much output may wait in the merge window.
pub const MAX_HELD_BYTES: usize = 16 * 1024 * 1024;

/// The lines waiting in the window, pure (times are passed in) so the order
/// is tested without a clock.
#[derive(Default)]
pub struct Window {
    held: BTreeMap<(i128, u64), Vec<u8>>,
    arrivals: VecDeque<(Instant, (i128, u64))>,
    seq: u64,
    bytes: usize,
}

impl Window {
    pub fn add(&mut self, now: Instant, time: i128, line: Vec<u8>) {
        let key = (time, self.seq);
        self.seq += 1;
        self.bytes += line.len();
        self.held.insert(key, line);
        self.arrivals.push_back((now, key));
    }

    /// Appends to `out` the lines whose time is up at `now`, in order.
    pub fn release(&mut self, now: Instant, window: Duration, out: &mut Vec<u8>) {
        while let Some(&(arrived, key)) = self.arrivals.front() {
            let over = self.bytes > MAX_HELD_BYTES;
            if arrived + window > now && !over {
                break;
            }
            self.arrivals.pop_front();
            if !self.held.contains_key(&key) {
                continue; // printed already, before a later-arriving earlier line
            }
            let later = self.held.split_off(&(key.0, key.1 + 1));
            let ready = std::mem::replace(&mut self.held, later);
            for line in ready.into_values() {
                self.bytes -= line.len();
                out.extend_from_slice(&line);
            }
        }
    }

    /// Everything, in order (the input has ended).
    pub fn drain(&mut self, out: &mut Vec<u8>) {
        for line in std::mem::take(&mut self.held).into_values() {
            out.extend_from_slice(&line);
        }
        self.arrivals.clear();
        self.bytes = 0;
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// Takes timed batches from the streams and passes ordered output on.
pub async fn run(mut rx: mpsc::Receiver<Batch>, writer: mpsc::Sender<Vec<u8>>, window: Duration) {
    let mut held = Window::default();
    let tick = (window / 4).max(Duration::from_millis(10));
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { break };
                let now = Instant::now();
                match batch {
                    Batch::Timed { bytes, lines } => {
                        let mut start = 0;
                        for (time, end) in lines {
                            held.add(now, time, bytes[start..end].to_vec());
                            start = end;
                        }
                    }
                    // Untimed output (never sent in merge mode) goes straight out.
                    Batch::Lines(bytes) => {
                        if writer.send(bytes).await.is_err() {
                            return;
                        }
                    }
                }
            }
            _ = ticker.tick(), if !held.is_empty() => {
                let mut out = Vec::new();
                held.release(Instant::now(), window, &mut out);
                if !out.is_empty() && writer.send(out).await.is_err() {
                    return;
                }
            }
        }
    }
    let mut out = Vec::new();
    held.drain(&mut out);
    if !out.is_empty() {
        let _ = writer.send(out).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_within_the_window_come_out_in_time_order() {
        let t0 = Instant::now();
        let window = Duration::from_millis(500);
        let mut w = Window::default();
        w.add(t0, 30, b"c\n".to_vec());
        w.add(t0 + Duration::from_millis(100), 10, b"a\n".to_vec());
        w.add(t0 + Duration::from_millis(200), 20, b"b\n".to_vec());
        let mut out = Vec::new();
        w.release(t0 + Duration::from_millis(499), window, &mut out);
        assert!(out.is_empty(), "nothing is due yet");
        w.release(t0 + Duration::from_millis(500), window, &mut out);
        assert_eq!(out, b"a\nb\nc\n");
        assert!(w.is_empty());
    }

    #[test]
    fn a_line_is_not_held_for_later_arrivals_past_its_window() {
        let t0 = Instant::now();
        let window = Duration::from_millis(500);
        let mut w = Window::default();
        w.add(t0, 10, b"a\n".to_vec());
        w.add(t0 + Duration::from_millis(400), 50, b"e\n".to_vec());
        let mut out = Vec::new();
        w.release(t0 + Duration::from_millis(500), window, &mut out);
        assert_eq!(out, b"a\n");
        // A line older than one already printed still comes out, ordered
        // among those still held.
        w.add(t0 + Duration::from_millis(600), 5, b"late\n".to_vec());
        w.release(t0 + Duration::from_millis(900), window, &mut out);
        assert_eq!(out, b"a\nlate\ne\n");
        w.release(t0 + Duration::from_millis(1100), window, &mut out);
        assert_eq!(out, b"a\nlate\ne\n");
        assert!(w.is_empty());
    }

    #[test]
    fn equal_times_keep_arrival_order() {
        let t0 = Instant::now();
        let mut w = Window::default();
        w.add(t0, 1, b"first\n".to_vec());
        w.add(t0, 1, b"second\n".to_vec());
        let mut out = Vec::new();
        w.drain(&mut out);
        assert_eq!(out, b"first\nsecond\n");
    }
}
