//! One container's log stream, which never goes silent while the container
//! runs.
//!
//! # Expected flow
//! A stream waits for a `--max-log-requests` slot, opens `pods/log` with
//! `timestamps=true` (and `follow` unless `--no-follow`), and renders lines
//! until the body ends. When it ends while the same run of the container is
//! still running (EOF from a kubelet log rotation, an API server restart, a
//! proxy timeout), it is opened again from the last timestamp it printed.
//! When the container restarts, what the previous run wrote after the last
//! printed line is read from `previous=true`, then the new run is followed
//! from its start.
//!
//! # Guarantees
//! - No line is printed twice or lost across a resume: the API's `sinceTime`
//!   has whole seconds, so the stream asks from the second of its last line
//!   and skips what it printed of that second (lines before it, and as many
//!   lines with exactly the last timestamp as it has printed).
//! - Every retry and every give-up is a notice on stderr, with the reason.
//! - A stream holds at most one chunk of output plus its partial last line.
//!
//! # Assumptions
//! - Timestamps within one container's log never go backwards (the kubelet
//!   stamps lines as it writes them to one file).
//! - The pod watch reports a restart or deletion within a few seconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::LogParams;
use tokio::io::AsyncReadExt as _;
use tokio::sync::{Semaphore, watch};
use tokio_util::compat::FuturesAsyncReadCompatExt as _;
use tokio_util::sync::CancellationToken;

use super::output::{Batch, Formatter, Prefix, Sink};
use super::select::{Instance, State as RunState, Target};

/// Bytes read from the API at a time, and so the most one batch holds.
pub const CHUNK: usize = 64 * 1024;

/// A line longer than this is cut, so one runaway line cannot grow memory.
const MAX_LINE: usize = 1024 * 1024;

/// After a container restarts or its pod is deleted, how long its open stream
/// may still deliver what the container wrote last.
const GRACE: Duration = Duration::from_secs(2);

/// What the pod watch says about a stream's container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// The container as the pod's status shows it; `wanted` is false once the
    /// filters no longer select it (say, it stopped and only running ones are
    /// followed): the stream then ends instead of resuming.
    Present { instance: Instance, wanted: bool },
    /// The pod was deleted.
    Gone,
}

/// What every stream shares.
pub struct Shared {
    pub formatter: Formatter,
    pub sink: Sink,
    pub slots: Arc<Semaphore>,
    pub max_requests: usize,
    pub follow: bool,
    pub since: Option<Duration>,
    pub tail: Option<i64>,
    pub merge: bool,
    /// Ask the API for timestamps: to resume a followed stream exactly, and
    /// for --timestamps, -o json and --merge-by-time. A bulk `--no-follow`
    /// without them costs the server half the writes (the kubelet writes a
    /// line's timestamp and its text separately, flushing after each).
    pub timestamps: bool,
    pub cancel: CancellationToken,
    /// Set when a stream gave up with an error: kdev then exits 1.
    pub failed: AtomicBool,
    queued: AtomicUsize,
    queued_notice: AtomicBool,
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        formatter: Formatter,
        sink: Sink,
        max_requests: usize,
        follow: bool,
        since: Option<Duration>,
        tail: Option<i64>,
        merge: bool,
        timestamps: bool,
        cancel: CancellationToken,
    ) -> Self {
        Shared {
            formatter,
            sink,
            slots: Arc::new(Semaphore::new(max_requests)),
            max_requests,
            follow,
            since,
            tail,
            merge,
            timestamps: timestamps || follow || merge,
            cancel,
            failed: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            queued_notice: AtomicBool::new(false),
        }
    }

    /// Waits for a request slot; says once, the first time one is not free,
    /// that streams are queued rather than dropped.
    pub async fn slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Some(permit);
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.say_queued();
        let permit = tokio::select! {
            permit = self.slots.clone().acquire_owned() => permit.ok(),
            () = self.cancel.cancelled() => None,
        };
        self.queued.fetch_sub(1, Ordering::Relaxed);
        permit
    }

    /// Says once that streams beyond `--max-log-requests` are queued rather
    /// than dropped: when one has to wait, or up front when more streams
    /// than slots are started at once.
    pub fn say_queued(&self) {
        if !self.queued_notice.swap(true, Ordering::Relaxed) {
            eprintln!(
                "kdev: more than {} streams: the others wait for a free slot (raise --max-log-requests to follow all at once)",
                self.max_requests
            );
        }
    }

    /// Sends a batch; false when the output is gone (closed pipe).
    pub async fn send(&self, batch: Batch) -> bool {
        self.sink.send(batch).await.is_ok()
    }
}

/// A notice about one stream, on stderr.
pub fn notice(target: &Target, file: Option<&str>, message: impl std::fmt::Display) {
    let file = file.map(|f| format!(" {f}")).unwrap_or_default();
    eprintln!(
        "kdev: {}/{} {}{file}: {message}",
        target.namespace, target.pod, target.container
    );
}

/// How far a stream got: the last line's raw timestamp and how many lines
/// had exactly that timestamp, and how many lines it has read in all (for a
/// stream without timestamps).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    last: Vec<u8>,
    same: u32,
    lines: u64,
}

impl Cursor {
    fn see(&mut self, ts: &[u8]) {
        if self.last == ts {
            self.same += 1;
        } else {
            // Reuses the allocation: no allocation per line.
            self.last.clear();
            self.last.extend_from_slice(ts);
            self.same = 1;
        }
    }

    /// Where to resume: the whole second to ask from, and what to skip.
    pub fn resume(&self) -> Option<(jiff::Timestamp, Dedupe)> {
        let last = parse_ts(&self.last)?;
        let second = jiff::Timestamp::from_second(last.as_second()).ok()?;
        Some((
            second,
            Dedupe::Since {
                last,
                skip_equal: self.same,
            },
        ))
    }

    /// For a stream without timestamps (`--no-follow`, whose log only grows
    /// at its end while it is read): ask again, skip what was read.
    pub fn resume_by_count(&self) -> Option<Dedupe> {
        (self.lines > 0).then_some(Dedupe::Lines(self.lines))
    }
}

/// Skips, on a resumed stream, the lines already printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dedupe {
    /// Lines before `last`, and `skip_equal` lines at exactly `last`.
    Since {
        last: jiff::Timestamp,
        skip_equal: u32,
    },
    /// The first N lines.
    Lines(u64),
}

impl Dedupe {
    /// True when the line was printed before. Once a line is new, all the
    /// following ones are too (timestamps do not go backwards).
    fn seen(&mut self, ts: Option<jiff::Timestamp>) -> bool {
        match self {
            Dedupe::Since { last, .. } if ts.is_some_and(|ts| ts < *last) => true,
            Dedupe::Since { last, skip_equal } if ts == Some(*last) && *skip_equal > 0 => {
                *skip_equal -= 1;
                true
            }
            Dedupe::Since { .. } => false,
            Dedupe::Lines(left) => {
                *left = left.saturating_sub(1);
                true
            }
        }
    }

    fn done(&self) -> bool {
        matches!(self, Dedupe::Lines(0))
    }
}

fn parse_ts(raw: &[u8]) -> Option<jiff::Timestamp> {
    std::str::from_utf8(raw).ok()?.parse().ok()
}

/// Renders a byte stream of `TIMESTAMP MESSAGE` lines, keeping the partial
/// last line for the next chunk.
pub struct Renderer {
    prefix: Prefix,
    carry: Vec<u8>,
    pub cursor: Cursor,
    dedupe: Option<Dedupe>,
    /// Lines carry the API's timestamp (false for file tails).
    timestamped: bool,
    merge: bool,
}

impl Renderer {
    pub fn new(prefix: Prefix, timestamped: bool, merge: bool) -> Self {
        Renderer {
            prefix,
            carry: Vec::new(),
            cursor: Cursor::default(),
            dedupe: None,
            timestamped,
            merge,
        }
    }

    /// Starts a new request: drops a partial line (the server sends it again)
    /// and skips what `dedupe` says was printed.
    pub fn restart(&mut self, dedupe: Option<Dedupe>) {
        self.carry.clear();
        self.dedupe = dedupe;
    }

    /// Renders the complete lines of `data` into a batch.
    pub fn feed(&mut self, formatter: &Formatter, data: &[u8]) -> Option<Batch> {
        let mut out = Vec::with_capacity(data.len() + data.len() / 2);
        let mut times = self.merge.then(Vec::new);
        let mut rest: &[u8] = data;
        let carried;
        if !self.carry.is_empty() {
            match memchr::memchr(b'\n', data) {
                Some(end) => {
                    self.carry.extend_from_slice(&data[..end]);
                    carried = std::mem::take(&mut self.carry);
                    self.line(formatter, &carried, &mut out, times.as_mut());
                    rest = &data[end + 1..];
                }
                None => {
                    self.carry.extend_from_slice(data);
                    if self.carry.len() > MAX_LINE {
                        let long = std::mem::take(&mut self.carry);
                        self.line(formatter, &long, &mut out, times.as_mut());
                    }
                    rest = &[];
                }
            }
        }
        let complete = match memchr::memrchr(b'\n', rest) {
            Some(end) => {
                self.carry.extend_from_slice(&rest[end + 1..]);
                &rest[..end]
            }
            None => {
                self.carry.extend_from_slice(rest);
                &[]
            }
        };
        if !complete.is_empty() || rest.first() == Some(&b'\n') {
            for line in complete.split(|&b| b == b'\n') {
                self.line(formatter, line, &mut out, times.as_mut());
            }
        }
        Batch::rendered(out, times)
    }

    /// Renders what is left when the stream has ended for good.
    pub fn finish(&mut self, formatter: &Formatter) -> Option<Batch> {
        if self.carry.is_empty() {
            return None;
        }
        let mut out = Vec::new();
        let mut times = self.merge.then(Vec::new);
        let carried = std::mem::take(&mut self.carry);
        self.line(formatter, &carried, &mut out, times.as_mut());
        Batch::rendered(out, times)
    }

    fn line(
        &mut self,
        formatter: &Formatter,
        line: &[u8],
        out: &mut Vec<u8>,
        times: Option<&mut Vec<(i128, usize)>>,
    ) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let (ts, message) = if self.timestamped {
            match memchr::memchr(b' ', line) {
                Some(space) => (Some(&line[..space]), &line[space + 1..]),
                // Not a log line (an empty line, or text the server added).
                None => (None, line),
            }
        } else {
            (None, line)
        };
        let mut parsed = None;
        if let Some(dedupe) = &mut self.dedupe {
            if matches!(dedupe, Dedupe::Since { .. }) {
                parsed = ts.and_then(parse_ts);
            }
            let seen = !dedupe.done() && dedupe.seen(parsed);
            if seen {
                return;
            }
            self.dedupe = None;
        }
        self.cursor.lines += 1;
        if let Some(ts) = ts {
            self.cursor.see(ts);
        }
        if !formatter.admits(message) {
            return;
        }
        formatter.line(&self.prefix, ts, message, out);
        if let Some(times) = times {
            let nanos = match parsed.or_else(|| ts.and_then(parse_ts)) {
                Some(ts) => ts.as_nanosecond(),
                None => jiff::Timestamp::now().as_nanosecond(),
            };
            times.push((nanos, out.len()));
        }
    }
}

/// How a request ended.
#[derive(Debug)]
enum End {
    /// The body ended.
    Eof,
    /// The container has not started, or has stopped: nothing to read now.
    NotRunning,
    /// The request failed; `retry` is false for errors retrying cannot fix.
    Failed { why: String, retry: bool },
    /// The container restarted (after the grace for the old run's last lines).
    Restarted(Instance),
    /// The pod was deleted, or the filters no longer select the container.
    Gone,
    /// kdev is stopping, or stdout was closed.
    Cancelled,
}

/// The state of one stream; the states are its documentation.
#[derive(Debug)]
enum State {
    /// Open a request for the current run and read it to its end.
    Streaming,
    /// The container is not running: wait until the pod watch says it runs.
    WaitingToRun,
    /// The last request failed or ended empty: retry after a pause.
    Backoff(Duration),
    /// The container restarted: read the rest of the previous run's log, then
    /// follow the new run from its start.
    DrainPrevious(Instance),
    Done,
}

/// One container's stream. See the module's documentation.
pub struct Stream {
    pub target: Target,
    pub api: Api<Pod>,
    pub status: watch::Receiver<Status>,
    pub shared: Arc<Shared>,
    instance: Instance,
    renderer: Renderer,
    /// Consecutive failed or empty requests, for the back-off.
    attempt: u32,
    /// Read a restarted container's new run whole, not from --since/--tail.
    whole_run: bool,
}

impl Stream {
    pub fn new(
        target: Target,
        api: Api<Pod>,
        status: watch::Receiver<Status>,
        shared: Arc<Shared>,
    ) -> Self {
        let instance = match &*status.borrow() {
            Status::Present { instance, .. } => instance.clone(),
            Status::Gone => Instance {
                id: None,
                restarts: 0,
                state: RunState::Terminated,
            },
        };
        let prefix = shared.formatter.prefix(&target, None);
        let renderer = Renderer::new(prefix, shared.timestamps, shared.merge);
        Stream {
            target,
            api,
            status,
            shared,
            instance,
            renderer,
            attempt: 0,
            whole_run: false,
        }
    }

    pub async fn run(mut self) {
        let mut state = if self.instance.state == RunState::Waiting && self.shared.follow {
            State::WaitingToRun
        } else {
            State::Streaming
        };
        loop {
            state = match state {
                State::Streaming => {
                    let end = self.request(false).await;
                    self.after(end)
                }
                State::WaitingToRun => self.wait_to_run().await,
                State::Backoff(pause) => {
                    tokio::select! {
                        () = tokio::time::sleep(pause) => State::Streaming,
                        () = self.shared.cancel.cancelled() => State::Done,
                    }
                }
                State::DrainPrevious(next) => {
                    if self.renderer.cursor != Cursor::default() {
                        let _ = self.request(true).await;
                    }
                    notice(
                        &self.target,
                        None,
                        format!(
                            "container restarted (restart {}); following the new run",
                            next.restarts
                        ),
                    );
                    self.instance = next;
                    self.renderer.cursor = Cursor::default();
                    self.whole_run = true;
                    self.attempt = 0;
                    State::Streaming
                }
                State::Done => {
                    if let Some(batch) = self.renderer.finish(&self.shared.formatter) {
                        self.shared.send(batch).await;
                    }
                    return;
                }
            };
        }
    }

    /// The next state after a request ended: the stream's whole policy.
    fn after(&mut self, end: End) -> State {
        let status = self.status.borrow().clone();
        match end {
            End::Cancelled | End::Gone => State::Done,
            End::Restarted(next) => State::DrainPrevious(next),
            End::Eof if !self.shared.follow => State::Done,
            End::NotRunning if !self.shared.follow => {
                notice(
                    &self.target,
                    None,
                    "the container is not running: no logs to read",
                );
                State::Done
            }
            End::Eof | End::NotRunning => match status {
                Status::Gone | Status::Present { wanted: false, .. } => State::Done,
                Status::Present { instance, .. } if self.instance.restarted_as(&instance) => {
                    State::DrainPrevious(instance)
                }
                Status::Present { instance, .. } if instance.state == RunState::Running => {
                    // The stream ended while the same run still runs: resume.
                    // Right after a first EOF at once; if it keeps ending
                    // empty (the watch lags a stop), with growing pauses.
                    self.attempt += 1;
                    let why = match end {
                        End::NotRunning => "the API said the container is not running",
                        _ => "the log stream ended",
                    };
                    notice(
                        &self.target,
                        None,
                        format!(
                            "{why} while the container runs; resuming from the last line printed"
                        ),
                    );
                    if self.attempt == 1 {
                        State::Streaming
                    } else {
                        State::Backoff(pause(self.attempt - 1))
                    }
                }
                Status::Present { .. } if !self.shared.follow => State::Done,
                Status::Present { instance, .. } => {
                    self.instance = instance;
                    State::WaitingToRun
                }
            },
            End::Failed { why, retry } => {
                self.attempt += 1;
                let hopeless = !retry || (!self.shared.follow && self.attempt > 5);
                if hopeless || matches!(status, Status::Gone) {
                    if !matches!(status, Status::Gone) {
                        notice(&self.target, None, format!("giving up: {why}"));
                        self.shared.failed.store(true, Ordering::Relaxed);
                    }
                    return State::Done;
                }
                let pause = pause(self.attempt);
                notice(
                    &self.target,
                    None,
                    format!("{why}; retrying in {:.1}s", pause.as_secs_f64()),
                );
                State::Backoff(pause)
            }
        }
    }

    async fn wait_to_run(&mut self) -> State {
        loop {
            let status = self.status.borrow_and_update().clone();
            match status {
                Status::Gone | Status::Present { wanted: false, .. } => return State::Done,
                Status::Present { instance, .. } if instance.state != RunState::Waiting => {
                    if self.instance.restarted_as(&instance)
                        && self.renderer.cursor != Cursor::default()
                    {
                        return State::DrainPrevious(instance);
                    }
                    self.instance = instance;
                    return State::Streaming;
                }
                Status::Present { .. } => {}
            }
            tokio::select! {
                changed = self.status.changed() => if changed.is_err() { return State::Done },
                () = self.shared.cancel.cancelled() => return State::Done,
            }
        }
    }

    /// One request, read to its end. `previous` reads the previous run's log
    /// from the cursor, without following.
    async fn request(&mut self, previous: bool) -> End {
        let Some(_permit) = self.shared.slot().await else {
            return End::Cancelled;
        };
        let mut params = LogParams {
            container: Some(self.target.container.clone()),
            follow: self.shared.follow && !previous,
            previous,
            timestamps: self.shared.timestamps,
            ..LogParams::default()
        };
        let resume = if self.shared.timestamps {
            self.renderer.cursor.resume()
        } else {
            None
        };
        let dedupe = match resume {
            Some((since, dedupe)) => {
                params.since_time = Some(since);
                Some(dedupe)
            }
            None if self.whole_run => None,
            None => {
                params.since_seconds = self.shared.since.map(|d| d.as_secs().max(1) as i64);
                params.tail_lines = self.shared.tail.filter(|&n| n >= 0);
                self.renderer.cursor.resume_by_count()
            }
        };
        self.renderer.restart(dedupe);

        let opened = tokio::select! {
            opened = self.api.log_stream(&self.target.pod, &params) => opened,
            () = self.shared.cancel.cancelled() => return End::Cancelled,
        };
        let body = match opened {
            Ok(body) => body,
            Err(err) => return classify(err),
        };
        let mut body = body.compat();
        let mut buf = vec![0u8; CHUNK];
        let mut read_any = false;
        let mut ending: Option<(tokio::time::Instant, End)> = None;
        loop {
            let deadline = ending.as_ref().map(|(at, _)| *at);
            let read = tokio::select! {
                read = body.read(&mut buf) => read,
                () = self.shared.cancel.cancelled() => return End::Cancelled,
                changed = self.status.changed(), if ending.is_none() && !previous => {
                    if changed.is_err() {
                        return End::Cancelled;
                    }
                    if let Some(end) = self.ends_stream() {
                        // Let the old run's last lines arrive first.
                        ending = Some((tokio::time::Instant::now() + GRACE, end));
                    }
                    continue;
                }
                () = sleep_until(deadline) => {
                    return ending.map_or(End::Cancelled, |(_, end)| end);
                }
            };
            match read {
                Ok(0) => {
                    if read_any {
                        self.attempt = 0;
                    }
                    return match ending {
                        Some((_, end)) => end,
                        None => End::Eof,
                    };
                }
                Ok(n) => {
                    read_any = true;
                    if let Some(batch) = self.renderer.feed(&self.shared.formatter, &buf[..n])
                        && !self.shared.send(batch).await
                    {
                        return End::Cancelled;
                    }
                }
                Err(err) => {
                    if read_any {
                        self.attempt = 0;
                    }
                    if let Some((_, end)) = ending {
                        return end;
                    }
                    return End::Failed {
                        why: format!("the log stream broke: {err}"),
                        retry: true,
                    };
                }
            }
        }
    }

    /// Whether a status change ends the open stream: a restart or deletion.
    fn ends_stream(&self) -> Option<End> {
        match &*self.status.borrow() {
            Status::Gone => Some(End::Gone),
            Status::Present { instance, .. } if self.instance.restarted_as(instance) => {
                Some(End::Restarted(instance.clone()))
            }
            Status::Present { .. } => None,
        }
    }
}

/// 1, 2, 4, 8, then 10 s between attempts.
/// The pause before retry number `attempt` (1-based), on the shared jittered
/// policy, so streams broken together do not retry in lockstep.
pub fn pause(attempt: u32) -> Duration {
    crate::k8s::backoff::delays()
        .nth(attempt.saturating_sub(1) as usize)
        .unwrap_or(crate::k8s::backoff::MAX)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sorts an error opening a stream into what the stream does next.
fn classify(err: kube::Error) -> End {
    match &err {
        kube::Error::Api(status) => {
            let message = status.message.to_lowercase();
            if status.code == 400
                && (message.contains("waiting to start")
                    || message.contains("is not running")
                    || message.contains("containercreating")
                    || message.contains("podinitializing"))
            {
                End::NotRunning
            } else if status.code == 404 && message.contains("pods") {
                End::Gone
            } else {
                End::Failed {
                    why: format!("the API server refused the log request: {}", status.message),
                    // Permissions and bad requests do not fix themselves;
                    // server errors (a kubelet restarting) often do.
                    retry: status.code >= 500 || status.code == 429,
                }
            }
        }
        _ => End::Failed {
            why: format!("failed to open the log stream: {err}"),
            retry: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::output::Format;

    fn formatter() -> Formatter {
        Formatter {
            format: Format::Raw,
            color: false,
            timestamps: true,
            namespaces: false,
            include: vec![],
            exclude: vec![],
            highlight: vec![],
        }
    }

    fn renderer() -> Renderer {
        Renderer::new(Prefix::default(), true, false)
    }

    fn text(batch: Option<Batch>) -> String {
        match batch {
            Some(Batch::Lines(bytes)) => String::from_utf8(bytes).unwrap(),
            Some(Batch::Timed { bytes, .. }) => String::from_utf8(bytes).unwrap(),
            None => String::new(),
        }
    }

    #[test]
    fn lines_split_across_chunks_are_joined() {
        let f = formatter();
        let mut r = renderer();
        assert_eq!(
            text(r.feed(&f, b"2026-01-01T00:00:00Z a\n2026-01-01T00:00:01Z b")),
            "2026-01-01T00:00:00Z a\n"
        );
        assert_eq!(text(r.feed(&f, b"c")), "");
        assert_eq!(
            text(r.feed(&f, b"d\n\n2026-01-01T00:00:02Z e\n")),
            "2026-01-01T00:00:01Z bcd\n\n2026-01-01T00:00:02Z e\n"
        );
        assert_eq!(text(r.finish(&f)), "");
    }

    #[test]
    fn a_resume_skips_exactly_what_was_printed() {
        let f = formatter();
        let mut r = renderer();
        let first =
            b"2026-01-01T00:00:05.1Z a\n2026-01-01T00:00:05.7Z b\n2026-01-01T00:00:05.7Z c\n";
        r.feed(&f, first);
        let (since, dedupe) = r.cursor.resume().unwrap();
        assert_eq!(since.to_string(), "2026-01-01T00:00:05Z");
        r.restart(Some(dedupe));
        // The server sends the whole second again, then what is new; a
        // third line at .7 was written after the stream broke.
        let again = b"2026-01-01T00:00:05.1Z a\n2026-01-01T00:00:05.7Z b\n2026-01-01T00:00:05.7Z c\n2026-01-01T00:00:05.7Z d\n2026-01-01T00:00:06Z e\n";
        assert_eq!(
            text(r.feed(&f, again)),
            "2026-01-01T00:00:05.7Z d\n2026-01-01T00:00:06Z e\n"
        );
    }

    #[test]
    fn a_resume_drops_a_partial_line_the_server_sends_again() {
        let f = formatter();
        let mut r = renderer();
        r.feed(&f, b"2026-01-01T00:00:01Z a\n2026-01-01T00:00:02Z par");
        let (_, dedupe) = r.cursor.resume().unwrap();
        r.restart(Some(dedupe));
        assert_eq!(
            text(r.feed(
                &f,
                b"2026-01-01T00:00:01Z a\n2026-01-01T00:00:02Z partial\n"
            )),
            "2026-01-01T00:00:02Z partial\n"
        );
    }

    #[test]
    fn a_stream_without_timestamps_resumes_by_line_count() {
        let mut f = formatter();
        f.timestamps = false;
        let mut r = Renderer::new(Prefix::default(), false, false);
        assert_eq!(text(r.feed(&f, b"a\nb\nc")), "a\nb\n");
        let dedupe = r.cursor.resume_by_count();
        assert_eq!(dedupe, Some(Dedupe::Lines(2)));
        r.restart(dedupe);
        assert_eq!(text(r.feed(&f, b"a\nb\nc\nd\n")), "c\nd\n");
        assert_eq!(r.cursor.resume_by_count(), Some(Dedupe::Lines(4)));
    }

    #[test]
    fn timestamps_with_trimmed_zeros_compare_as_times() {
        // RFC 3339 with nanoseconds trims trailing zeros, so ".1Z" sorts after
        // ".12Z" as text; the dedupe compares times.
        let f = formatter();
        let mut r = renderer();
        r.feed(&f, b"2026-01-01T00:00:00.12Z a\n");
        let (_, dedupe) = r.cursor.resume().unwrap();
        r.restart(Some(dedupe));
        assert_eq!(
            text(r.feed(&f, b"2026-01-01T00:00:00.12Z a\n2026-01-01T00:00:00.2Z b\n")),
            "2026-01-01T00:00:00.2Z b\n"
        );
    }

    #[test]
    fn merged_batches_carry_each_lines_time_and_end() {
        let f = formatter();
        let mut r = Renderer::new(Prefix::default(), true, true);
        match r.feed(&f, b"1970-01-01T00:00:01Z a\n1970-01-01T00:00:02Z b\n") {
            Some(Batch::Timed { bytes, lines }) => {
                assert_eq!(lines[0], (1_000_000_000, 23));
                assert_eq!(lines[1], (2_000_000_000, bytes.len()));
            }
            _ => panic!("a timed batch"),
        }
    }

    #[test]
    fn filtered_lines_still_move_the_cursor() {
        let mut f = formatter();
        f.exclude = vec![regex::bytes::Regex::new("noise").unwrap()];
        let mut r = renderer();
        assert_eq!(text(r.feed(&f, b"2026-01-01T00:00:01Z noise\n")), "");
        assert_eq!(
            r.cursor.resume().unwrap().0.to_string(),
            "2026-01-01T00:00:01Z"
        );
    }

    proptest::proptest! {
        /// API log bodies (CRI-derived `TIMESTAMP MESSAGE` lines), cut into
        /// arbitrary chunks, with a resume cursor in place.
        #[test]
        fn any_log_body_in_any_chunks_never_panics(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000),
            cuts in proptest::collection::vec(0usize..2000, 0..8),
            merge in proptest::prelude::any::<bool>(),
        ) {
            let f = formatter();
            let mut r = Renderer::new(Prefix::default(), true, merge);
            let mut cuts = cuts;
            cuts.push(body.len());
            cuts.sort_unstable();
            let mut at = 0;
            for cut in cuts {
                let cut = cut.min(body.len());
                if cut > at {
                    let _ = r.feed(&f, &body[at..cut]);
                    at = cut;
                }
            }
            let _ = r.finish(&f);
            let _ = r.cursor.resume();
            let _ = parse_ts(&body);
        }
    }
}
