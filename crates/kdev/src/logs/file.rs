//! `--file PATH`: tailing files inside containers through exec.
//!
//! # Expected flow
//! For every selected container, kdev runs `sh -c 'exec tail -v -n N -F --
//! PATTERNS'` in it (the shell expands the globs; `-F` follows a file across
//! rotation; `-v` makes tail print a `==> PATH <==` header whenever it
//! switches files, which is how each line gets its file marker). stdout is
//! rendered like a container's log, with `container:PATH` as the prefix;
//! stderr (tail's own complaints, such as a missing file) becomes notices.
//!
//! # Guarantees
//! - A container that cannot run it (no `sh` or `tail`, no exec permission,
//!   a node that does not serve exec) gets one notice saying so; the other
//!   streams go on.
//! - When the exec ends while the container still runs, it is started again
//!   from the files' ends (`-n 0`), with a notice: lines written in between
//!   may be missing, and the notice says so.
//!
//! # Assumptions
//! - The container has a POSIX `sh` and a `tail` with `-F` and `-v`
//!   (coreutils and busybox both do).
//! - Files are line-oriented text; a file created after the exec starts is
//!   not picked up by a glob until the tail is restarted.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::AttachParams;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::sync::watch;

use super::output::{Batch, Prefix};
use super::select::{State as RunState, Target};
use super::stream::{CHUNK, Shared, Status, notice, pause};

/// Checks a `--file` pattern before it goes into a shell command line: an
/// absolute path of plain characters and glob characters only, so nothing
/// in it is ever interpreted by the shell but the glob.
pub fn validate_pattern(pattern: &str) -> Result<(), String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+@%=:,~*?[]".contains(c);
    if !pattern.starts_with('/') {
        return Err(format!(
            "invalid --file {pattern:?}: give an absolute path inside the container, like /var/log/app/*.log"
        ));
    }
    if let Some(bad) = pattern.chars().find(|&c| !plain(c)) {
        return Err(format!(
            "invalid --file {pattern:?}: {bad:?} is not allowed; use letters, digits, / . _ - and the globs * ? [ ]"
        ));
    }
    Ok(())
}

/// The command run in the container. `lines` is how many existing lines of
/// each file to print first.
pub fn command(patterns: &[String], lines: Option<u64>, follow: bool) -> Vec<String> {
    let lines = match lines {
        Some(n) => n.to_string(),
        None => "+1".to_owned(),
    };
    let follow = if follow { " -F" } else { "" };
    vec![
        "sh".to_owned(),
        "-c".to_owned(),
        format!("exec tail -v -n {lines}{follow} -- {}", patterns.join(" ")),
    ]
}

/// Splits `tail -v` output into lines of files. tail prints a header before
/// each file's lines, and a blank line before every header but the first;
/// a blank line is therefore held back until the next line shows whether it
/// was a separator.
#[derive(Debug, Default)]
pub struct TailParser {
    file: Option<String>,
    blank_pending: bool,
}

impl TailParser {
    pub fn new(first: &str) -> Self {
        TailParser {
            file: Some(first.to_owned()),
            blank_pending: false,
        }
    }

    /// The lines `line` completes, each with its file.
    pub fn feed<'a>(&mut self, line: &'a [u8], out: &mut Vec<(String, &'a [u8])>) {
        if let Some(name) = line
            .strip_prefix(b"==> ")
            .and_then(|rest| rest.strip_suffix(b" <=="))
        {
            self.file = Some(String::from_utf8_lossy(name).into_owned());
            self.blank_pending = false;
            return;
        }
        let file = self.file.clone().unwrap_or_default();
        if line.is_empty() {
            if self.blank_pending {
                out.push((file, b""));
            }
            self.blank_pending = true;
            return;
        }
        if self.blank_pending {
            out.push((file.clone(), b""));
            self.blank_pending = false;
        }
        out.push((file, line));
    }
}

/// How one exec ended.
enum End {
    /// The tail command ended (or the connection did).
    Ended(Option<String>),
    /// It could not start, for a reason retrying will not fix.
    Impossible(String),
    /// The pod is gone, or kdev is stopping.
    Stop,
}

/// The tail of `--file` patterns in one container.
pub struct FileTail {
    pub target: Target,
    pub api: Api<Pod>,
    pub status: watch::Receiver<Status>,
    pub shared: Arc<Shared>,
    pub patterns: Arc<Vec<String>>,
    /// `--tail` (None: every line).
    pub lines: Option<u64>,
    prefixes: HashMap<String, Prefix>,
}

impl FileTail {
    pub fn new(
        target: Target,
        api: Api<Pod>,
        status: watch::Receiver<Status>,
        shared: Arc<Shared>,
        patterns: Arc<Vec<String>>,
        lines: Option<u64>,
    ) -> Self {
        FileTail {
            target,
            api,
            status,
            shared,
            patterns,
            lines,
            prefixes: HashMap::new(),
        }
    }

    pub async fn run(mut self) {
        let what = self.patterns.join(" ");
        let mut attempt = 0;
        let mut lines = self.lines;
        loop {
            if !self.wait_running().await {
                return;
            }
            match self.exec(lines).await {
                End::Stop => return,
                End::Impossible(why) => {
                    notice(
                        &self.target,
                        Some(&what),
                        format!("cannot tail files: {why}"),
                    );
                    return;
                }
                End::Ended(why) => {
                    if !self.shared.follow || !self.still_running() {
                        if let Some(why) = why {
                            notice(&self.target, Some(&what), format!("file tail ended: {why}"));
                            if !self.shared.follow {
                                self.shared.failed.store(true, Ordering::Relaxed);
                            }
                        }
                        return;
                    }
                    attempt += 1;
                    let wait = pause(attempt);
                    notice(
                        &self.target,
                        Some(&what),
                        format!(
                            "file tail ended while the container runs ({}); restarting it in {:.1}s from the files' ends, lines written in between may be missing",
                            why.as_deref().unwrap_or("end of stream"),
                            wait.as_secs_f64()
                        ),
                    );
                    lines = Some(0);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.shared.cancel.cancelled() => return,
                    }
                }
            }
        }
    }

    fn still_running(&self) -> bool {
        matches!(&*self.status.borrow(), Status::Present { instance, wanted: true } if instance.state == RunState::Running)
    }

    /// Waits until the container runs; false when it never will.
    async fn wait_running(&mut self) -> bool {
        loop {
            match &*self.status.borrow_and_update() {
                Status::Gone | Status::Present { wanted: false, .. } => return false,
                Status::Present { instance, .. } if instance.state == RunState::Running => {
                    return true;
                }
                Status::Present { .. } if !self.shared.follow => {
                    notice(
                        &self.target,
                        Some(&self.patterns.join(" ")),
                        "the container is not running: cannot tail files",
                    );
                    return false;
                }
                Status::Present { .. } => {}
            }
            tokio::select! {
                changed = self.status.changed() => if changed.is_err() { return false },
                () = self.shared.cancel.cancelled() => return false,
            }
        }
    }

    async fn exec(&mut self, lines: Option<u64>) -> End {
        let Some(_permit) = self.shared.slot().await else {
            return End::Stop;
        };
        let params = AttachParams::default()
            .container(self.target.container.clone())
            .stdin(false)
            .stdout(true)
            .stderr(true);
        let started = tokio::select! {
            started = self.api.exec(&self.target.pod, command(&self.patterns, lines, self.shared.follow), &params) => started,
            () = self.shared.cancel.cancelled() => return End::Stop,
        };
        let mut process = match started {
            Ok(process) => process,
            Err(kube::Error::Api(status)) if status.code == 403 => {
                return End::Impossible(format!(
                    "{}; kdev needs permission to create pods/exec",
                    status.message
                ));
            }
            Err(err) => {
                return End::Impossible(format!(
                    "exec failed: {err}; the node must support exec and the container needs sh and tail"
                ));
            }
        };
        let (Some(mut stdout), Some(stderr), Some(status)) =
            (process.stdout(), process.stderr(), process.take_status())
        else {
            return End::Impossible("the exec session has no output streams".into());
        };
        let target = self.target.clone();
        let what = self.patterns.join(" ");
        let complaints = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                notice(&target, Some(&what), line);
            }
        });

        let first = self.patterns.first().cloned().unwrap_or_default();
        let mut parser = TailParser::new(&first);
        let mut carry: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; CHUNK];
        let mut read_any = false;
        let ended = loop {
            let read = tokio::select! {
                read = stdout.read(&mut buf) => read,
                () = self.shared.cancel.cancelled() => break End::Stop,
                changed = self.status.changed() => {
                    if changed.is_err() || matches!(&*self.status.borrow(), Status::Gone) {
                        break End::Stop;
                    }
                    continue;
                }
            };
            match read {
                Ok(0) | Err(_) => break End::Ended(None),
                Ok(n) => {
                    read_any = true;
                    carry.extend_from_slice(&buf[..n]);
                    let Some(end) = memchr::memrchr(b'\n', &carry) else {
                        continue;
                    };
                    let rest = carry.split_off(end + 1);
                    let complete = std::mem::replace(&mut carry, rest);
                    if let Some(batch) = self.render(&mut parser, &complete[..end])
                        && !self.shared.send(batch).await
                    {
                        break End::Stop;
                    }
                }
            }
        };
        process.abort();
        complaints.abort();
        if let End::Ended(_) = ended {
            let status = status.await;
            let why = status.and_then(|s| {
                (s.status.as_deref() == Some("Failure")).then(|| s.message.unwrap_or_default())
            });
            return match why {
                // It failed before printing anything: the command could not
                // run there (no sh or tail, exit 127; a runtime without exec).
                Some(why) if !read_any => End::Impossible(format!(
                    "{why}; the container needs sh and tail, and its node must support exec"
                )),
                why => End::Ended(why),
            };
        }
        ended
    }

    fn render(&mut self, parser: &mut TailParser, complete: &[u8]) -> Option<Batch> {
        let formatter = &self.shared.formatter;
        let mut out = Vec::with_capacity(complete.len() * 2);
        let mut times = self.shared.merge.then(Vec::new);
        let mut lines = Vec::new();
        for line in complete.split(|&b| b == b'\n') {
            parser.feed(line.strip_suffix(b"\r").unwrap_or(line), &mut lines);
        }
        let now = jiff::Timestamp::now().as_nanosecond();
        for (file, message) in lines {
            if !formatter.admits(message) {
                continue;
            }
            let target = &self.target;
            let prefix = self
                .prefixes
                .entry(file)
                .or_insert_with_key(|file| formatter.prefix(target, Some(file)));
            formatter.line(prefix, None, message, &mut out);
            if let Some(times) = &mut times {
                times.push((now, out.len()));
            }
        }
        Batch::rendered(out, times)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_absolute_and_plain() {
        assert!(validate_pattern("/var/log/app/*.log").is_ok());
        assert!(validate_pattern("/tmp/a-[0-9].log").is_ok());
        assert!(
            validate_pattern("app.log")
                .unwrap_err()
                .contains("absolute path")
        );
        for bad in ["/a;rm -rf /", "/a b", "/$(id)", "/a`x`", "/a|b", "/a'b"] {
            assert!(validate_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_command_globs_in_the_shell() {
        let cmd = command(&["/var/log/*.log".into(), "/tmp/x".into()], Some(10), true);
        assert_eq!(cmd[..2], ["sh", "-c"]);
        assert_eq!(cmd[2], "exec tail -v -n 10 -F -- /var/log/*.log /tmp/x");
        assert_eq!(
            command(&["/a".into()], None, false)[2],
            "exec tail -v -n +1 -- /a"
        );
    }

    #[test]
    fn headers_switch_files_and_separators_vanish() {
        let mut p = TailParser::new("/var/log/*.log");
        let mut out = Vec::new();
        for line in [
            &b"==> /var/log/a.log <=="[..],
            b"one",
            b"",
            b"two after a blank",
            b"",
            b"==> /var/log/b.log <==",
            b"three",
        ] {
            p.feed(line, &mut out);
        }
        let got: Vec<(String, String)> = out
            .into_iter()
            .map(|(f, l)| (f, String::from_utf8(l.to_vec()).unwrap()))
            .collect();
        let want = [
            ("/var/log/a.log", "one"),
            ("/var/log/a.log", ""),
            ("/var/log/a.log", "two after a blank"),
            ("/var/log/b.log", "three"),
        ];
        assert_eq!(got.len(), want.len(), "{got:?}");
        for ((f, l), (wf, wl)) in got.iter().zip(want) {
            assert_eq!((f.as_str(), l.as_str()), (wf, wl));
        }
    }

    proptest::proptest! {
        #[test]
        fn patterns_and_tail_output_never_panic(
            pattern in proptest::prelude::any::<String>(),
            lines in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80), 0..20),
        ) {
            let _ = validate_pattern(&pattern);
            let mut parser = TailParser::new("/first");
            let mut out = Vec::new();
            for line in &lines {
                parser.feed(line, &mut out);
            }
        }
    }
}
