//! Turning log lines into output, and writing it.
//!
//! Streams format whole lines into batches (one allocation per chunk read,
//! not per line) and send them through a bounded channel to one writer
//! thread. So lines never interleave mid-line, a slow stdout holds the
//! streams back (the channel fills, they stop reading, TCP pushes back on the
//! server) instead of growing memory, and a closed pipe ends kdev quietly.

use std::io::{self, Write};

use regex::bytes::Regex;
use tokio::sync::mpsc;

use super::select::Target;

/// `-o`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `pod container message`, the prefix coloured per pod.
    Default,
    /// The message only.
    Raw,
    /// One JSON object per line: namespace, pod, container, [file,] timestamp, message.
    Json,
}

/// `--color`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

/// How every line is filtered and rendered; shared by all streams.
#[derive(Debug)]
pub struct Formatter {
    pub format: Format,
    pub color: bool,
    pub timestamps: bool,
    /// Print the namespace too (more than one namespace is followed).
    pub namespaces: bool,
    pub include: Vec<Regex>,
    pub exclude: Vec<Regex>,
    pub highlight: Vec<Regex>,
}

/// Where a line comes from, rendered once per stream.
#[derive(Debug, Default)]
pub struct Prefix(Vec<u8>);

const POD_COLORS: [&str; 6] = ["31", "32", "33", "34", "35", "36"];
const CONTAINER_COLORS: [&str; 6] = ["91", "92", "93", "94", "95", "96"];
const HIGHLIGHT: &[u8] = b"\x1b[1;31m";
const RESET: &[u8] = b"\x1b[0m";

/// A colour that stays the same for a name across runs and machines.
fn palette<'a>(colors: &[&'a str], name: &str) -> &'a str {
    let hash = kdev_contract::hash::fnv1a(name.as_bytes());
    colors[(hash % colors.len() as u64) as usize]
}

impl Formatter {
    /// The prefix of every line from `target` (and `file`, for a file tail).
    pub fn prefix(&self, target: &Target, file: Option<&str>) -> Prefix {
        let mut out = Vec::new();
        match self.format {
            Format::Raw => {}
            Format::Json => {
                out.extend_from_slice(b"{\"namespace\":");
                json_string(&mut out, &target.namespace);
                out.extend_from_slice(b",\"pod\":");
                json_string(&mut out, &target.pod);
                out.extend_from_slice(b",\"container\":");
                json_string(&mut out, &target.container);
                if let Some(file) = file {
                    out.extend_from_slice(b",\"file\":");
                    json_string(&mut out, file);
                }
            }
            Format::Default => {
                let container = match file {
                    Some(file) => format!("{}:{file}", target.container),
                    None => target.container.clone(),
                };
                if self.color {
                    let pod_color = palette(&POD_COLORS, &target.pod);
                    let container_color = palette(&CONTAINER_COLORS, &target.container);
                    if self.namespaces {
                        out.extend(
                            format!("\x1b[{pod_color}m{}\x1b[0m ", target.namespace).bytes(),
                        );
                    }
                    out.extend(
                        format!(
                            "\x1b[{pod_color}m{}\x1b[0m \x1b[{container_color}m{container}\x1b[0m ",
                            target.pod
                        )
                        .bytes(),
                    );
                } else {
                    if self.namespaces {
                        out.extend(format!("{} ", target.namespace).bytes());
                    }
                    out.extend(format!("{} {container} ", target.pod).bytes());
                }
            }
        }
        Prefix(out)
    }

    /// True when `-i`/`-e` let the message through.
    pub fn admits(&self, message: &[u8]) -> bool {
        (self.include.is_empty() || self.include.iter().any(|re| re.is_match(message)))
            && !self.exclude.iter().any(|re| re.is_match(message))
    }

    /// Appends one rendered line (with its newline) to `out`. `timestamp` is
    /// the API's RFC 3339 time, or None for a file line.
    pub fn line(
        &self,
        prefix: &Prefix,
        timestamp: Option<&[u8]>,
        message: &[u8],
        out: &mut Vec<u8>,
    ) {
        out.extend_from_slice(&prefix.0);
        match self.format {
            Format::Json => {
                out.extend_from_slice(b",\"timestamp\":");
                match timestamp {
                    Some(ts) => json_string(out, &String::from_utf8_lossy(ts)),
                    None => out.extend_from_slice(b"null"),
                }
                out.extend_from_slice(b",\"message\":");
                json_string(out, &String::from_utf8_lossy(message));
                out.extend_from_slice(b"}\n");
            }
            Format::Default | Format::Raw => {
                if self.timestamps
                    && let Some(ts) = timestamp
                {
                    out.extend_from_slice(ts);
                    out.push(b' ');
                }
                if self.color && !self.highlight.is_empty() {
                    highlight(&self.highlight, message, out);
                } else {
                    out.extend_from_slice(message);
                }
                out.push(b'\n');
            }
        }
    }
}

fn json_string(out: &mut Vec<u8>, text: &str) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// Copies `message` with every match of any pattern wrapped in colour.
fn highlight(patterns: &[Regex], message: &[u8], out: &mut Vec<u8>) {
    let mut spans: Vec<(usize, usize)> = patterns
        .iter()
        .flat_map(|re| re.find_iter(message).map(|m| (m.start(), m.end())))
        .filter(|(s, e)| s < e)
        .collect();
    spans.sort_unstable();
    // Overlapping matches become one span.
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
    for (start, end) in spans {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    let mut at = 0;
    for (start, end) in merged {
        out.extend_from_slice(&message[at..start]);
        out.extend_from_slice(HIGHLIGHT);
        out.extend_from_slice(&message[start..end]);
        out.extend_from_slice(RESET);
        at = end;
    }
    out.extend_from_slice(&message[at..]);
}

/// Rendered lines on their way to stdout. `Timed` carries each line's time
/// (nanoseconds since the epoch) and end offset, for `--merge-by-time`.
pub enum Batch {
    Lines(Vec<u8>),
    Timed {
        bytes: Vec<u8>,
        lines: Vec<(i128, usize)>,
    },
}

impl Batch {
    /// A batch of rendered lines; `times` when they are merged by time.
    /// None when nothing was rendered.
    pub fn rendered(bytes: Vec<u8>, times: Option<Vec<(i128, usize)>>) -> Option<Batch> {
        if bytes.is_empty() {
            return None;
        }
        Some(match times {
            Some(lines) => Batch::Timed { bytes, lines },
            None => Batch::Lines(bytes),
        })
    }
}

/// How streams hand their output on.
pub type Sink = mpsc::Sender<Batch>;

/// How many batches may wait for stdout: with batches of at most
/// [`super::stream::CHUNK`] bytes this bounds the queued output to a few MiB
/// whatever the number of streams.
pub const QUEUED_BATCHES: usize = 64;

/// Why the writer stopped.
pub enum WriterEnd {
    /// Every sender is gone and everything was written.
    Drained,
    /// The reader of stdout went away (`| head`): end quietly.
    ClosedPipe,
}

/// Writes batches of plain lines to stdout on its own thread (stdout is a
/// blocking file). Flushes whenever no batch is waiting, so a followed log
/// shows up at once, while a bulk dump is written in large pieces.
pub fn spawn_writer(
    mut rx: mpsc::Receiver<Vec<u8>>,
) -> std::thread::JoinHandle<io::Result<WriterEnd>> {
    std::thread::spawn(move || {
        let stdout = io::stdout();
        let mut out = io::BufWriter::with_capacity(256 * 1024, stdout.lock());
        let result = (|| {
            while let Some(bytes) = rx.blocking_recv() {
                out.write_all(&bytes)?;
                if rx.is_empty() {
                    out.flush()?;
                }
            }
            out.flush()
        })();
        match result {
            Ok(()) => Ok(WriterEnd::Drained),
            Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(WriterEnd::ClosedPipe),
            Err(err) => Err(err),
        }
    })
}

/// Passes plain batches on to the writer untouched (no `--merge-by-time`).
pub async fn forward(mut rx: mpsc::Receiver<Batch>, writer: mpsc::Sender<Vec<u8>>) {
    while let Some(batch) = rx.recv().await {
        let bytes = match batch {
            Batch::Lines(bytes) | Batch::Timed { bytes, .. } => bytes,
        };
        if writer.send(bytes).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            namespace: "team".into(),
            pod: "web-1".into(),
            uid: "u".into(),
            container: "app".into(),
        }
    }

    fn formatter(format: Format) -> Formatter {
        Formatter {
            format,
            color: false,
            timestamps: false,
            namespaces: false,
            include: vec![],
            exclude: vec![],
            highlight: vec![],
        }
    }

    fn render(f: &Formatter, file: Option<&str>, ts: Option<&str>, msg: &str) -> String {
        let mut out = Vec::new();
        f.line(
            &f.prefix(&target(), file),
            ts.map(str::as_bytes),
            msg.as_bytes(),
            &mut out,
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn default_lines_carry_pod_and_container() {
        let f = formatter(Format::Default);
        assert_eq!(render(&f, None, Some("T"), "hello"), "web-1 app hello\n");
        assert_eq!(
            render(&f, Some("/var/log/a.log"), None, "hi"),
            "web-1 app:/var/log/a.log hi\n"
        );
        let mut f = formatter(Format::Default);
        f.timestamps = true;
        f.namespaces = true;
        assert_eq!(
            render(&f, None, Some("T"), "hello"),
            "team web-1 app T hello\n"
        );
    }

    #[test]
    fn raw_is_the_message() {
        assert_eq!(
            render(&formatter(Format::Raw), None, Some("T"), "hello"),
            "hello\n"
        );
    }

    #[test]
    fn json_lines_parse() {
        let f = formatter(Format::Json);
        let line = render(
            &f,
            Some("/a \"b\""),
            Some("2026-01-01T00:00:00Z"),
            "say \"hi\"\t\u{1}",
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["namespace"], "team");
        assert_eq!(v["pod"], "web-1");
        assert_eq!(v["container"], "app");
        assert_eq!(v["file"], "/a \"b\"");
        assert_eq!(v["timestamp"], "2026-01-01T00:00:00Z");
        assert_eq!(v["message"], "say \"hi\"\t\u{1}");
        let v: serde_json::Value = serde_json::from_str(&render(&f, None, None, "x")).unwrap();
        assert!(v["timestamp"].is_null() && v.get("file").is_none());
    }

    #[test]
    fn include_and_exclude_filter_messages() {
        let mut f = formatter(Format::Raw);
        f.include = vec![Regex::new("GET|POST").unwrap()];
        f.exclude = vec![Regex::new("healthz").unwrap()];
        assert!(f.admits(b"GET /api"));
        assert!(!f.admits(b"GET /healthz"));
        assert!(!f.admits(b"DELETE /api"));
    }

    #[test]
    fn highlights_wrap_overlapping_matches_once() {
        let mut out = Vec::new();
        let patterns = [Regex::new("err").unwrap(), Regex::new("error").unwrap()];
        highlight(&patterns, b"an error here", &mut out);
        assert_eq!(out, b"an \x1b[1;31merror\x1b[0m here");
    }

    #[test]
    fn colours_are_stable_per_name() {
        let mut f = formatter(Format::Default);
        f.color = true;
        let a = f.prefix(&target(), None).0;
        let b = f.prefix(&target(), None).0;
        assert_eq!(a, b);
        assert!(String::from_utf8(a).unwrap().starts_with("\x1b["));
    }
}
