//! The provider under load, as a child process: `x402pp provider` (this very binary) on a free
//! port of 127.0.0.1, ready once it has printed that it listens and answers `GET /health`, killed
//! and reaped when dropped (so an error anywhere leaves no provider behind); and what Linux's
//! `/proc` says about a process: its CPU time (`utime + stime` of `/proc/<pid>/stat`, all its
//! threads, in clock ticks) and its resident memory (`VmRSS` of `/proc/<pid>/status`).

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

/// The line the provider prints once it listens (`services/provider/src/cli.rs`).
const READY_LINE: &str = "x402pp provider on ";
/// The longest a provider may take to print [`READY_LINE`]: it reads the cluster's genesis hash
/// and migrates its ledger first; generous for a debug build on a busy machine.
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// The longest the first `GET /health` may take once the provider listens.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of the child's output kept for error messages.
const TAIL_LINES: usize = 40;
/// Starts tried when the free port picked was taken before the child bound it.
const PORT_ATTEMPTS: u32 = 3;
/// `utime` is field 14 of `/proc/<pid>/stat`; fields are counted from field 3 (the first after
/// the command name), so it is the 12th of those (index 11), `stime` the next.
const UTIME_AFTER_NAME: usize = 11;
/// Linux's `USER_HZ` on every architecture Rust targets but Alpha: the clock ticks of
/// `/proc/<pid>/stat` when `getconf CLK_TCK` cannot be run.
const DEFAULT_CLOCK_TICKS: u64 = 100;

/// Reading `/proc` failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The file could not be read (not Linux, or the process is gone).
    #[error("cannot read {path}: {source} (the load generator reads Linux's /proc)")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file does not have the expected field.
    #[error("cannot parse {what} in {path}")]
    Parse {
        /// The file.
        path: String,
        /// The field.
        what: &'static str,
    },
}

/// Starting a provider failed; every variant carries the tail of the child's output.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The process could not be spawned.
    #[error("cannot start `{exe} provider`: {source}")]
    Spawn {
        /// The executable.
        exe: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It exited (or closed its output) before listening.
    #[error("the provider exited before listening ({status}); its output:\n{output}")]
    Exited {
        /// Its exit status.
        status: String,
        /// The last lines of its stdout and stderr.
        output: String,
    },
    /// It did not print that it listens in time.
    #[error("the provider did not listen within {secs} s; its output:\n{output}")]
    Timeout {
        /// The limit.
        secs: u64,
        /// The last lines of its stdout and stderr.
        output: String,
    },
    /// It listens but `GET /health` did not answer 2xx.
    #[error("the provider listens but GET {url} failed: {reason}; its output:\n{output}")]
    Health {
        /// The URL.
        url: String,
        /// The status or transport error.
        reason: String,
        /// The last lines of its stdout and stderr.
        output: String,
    },
}

impl StartError {
    /// Whether the child failed because its port was taken (worth another port).
    fn port_taken(&self) -> bool {
        match self {
            Self::Exited { output, .. } => {
                output.contains("Address already in use") || output.contains("os error 98")
            }
            _ => false,
        }
    }
}

/// How to start the providers: the flags of `x402pp provider` that matter here.
#[derive(Debug, Clone)]
pub(super) struct ProviderSpec {
    /// The provider's keypair file (every replica uses the same key).
    pub keypair: PathBuf,
    /// The mint prices are in.
    pub mint: String,
    /// The localnet's JSON-RPC URL.
    pub rpc_url: String,
    /// The ledger (every replica uses the same one).
    pub database_url: String,
    /// Price per request, atomic units.
    pub price: u64,
    /// The latency promise (the agents' budget asks for it).
    pub max_latency_ms: u32,
}

impl ProviderSpec {
    /// The child's arguments when it listens on `port`: no `exact` fallback, no per-session
    /// rate limit, and settlement out of the way (no claim by amount, one claim a day at most).
    fn args(&self, port: u16) -> Vec<String> {
        let mut args: Vec<String> = [
            "provider",
            "--no-exact",
            "--rate-limit-per-session",
            "0",
            "--claim-interval-secs",
            "86400",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        for (flag, value) in [
            ("--keypair", self.keypair.display().to_string()),
            ("--mint", self.mint.clone()),
            ("--rpc-url", self.rpc_url.clone()),
            ("--listen", format!("127.0.0.1:{port}")),
            ("--database-url", self.database_url.clone()),
            ("--price", self.price.to_string()),
            ("--max-latency-ms", self.max_latency_ms.to_string()),
            ("--claim-threshold", u64::MAX.to_string()),
        ] {
            args.push(flag.to_owned());
            args.push(value);
        }
        args
    }
}

/// The last lines a child printed, stdout and stderr interleaved as they were read.
#[derive(Debug, Default)]
struct Tail(VecDeque<String>);

impl Tail {
    fn push(&mut self, line: String) {
        if self.0.len() >= TAIL_LINES {
            self.0.pop_front();
        }
        self.0.push_back(line);
    }

    fn render(&self) -> String {
        if self.0.is_empty() {
            return "(nothing)".to_owned();
        }
        self.0.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

fn lock(tail: &Mutex<Tail>) -> MutexGuard<'_, Tail> {
    tail.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Reads `stream` to its end on a thread of its own (so the child never blocks on a full pipe),
/// keeping the last lines in `tail` and signalling `ready` when the provider's ready line
/// passes; `ready` is dropped unsent if the stream ends first.
fn drain(
    name: &str,
    stream: impl Read + Send + 'static,
    tail: Arc<Mutex<Tail>>,
    mut ready: Option<oneshot::Sender<()>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let prefix = format!("[{name}] ");
    std::thread::Builder::new()
        .name(format!("provider-{name}"))
        .spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buffer = Vec::new();
            loop {
                buffer.clear();
                match reader.read_until(b'\n', &mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let line = String::from_utf8_lossy(&buffer).trim_end().to_owned();
                if line.starts_with(READY_LINE) {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                }
                lock(&tail).push(format!("{prefix}{line}"));
            }
        })
}

/// A running provider child process; killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub(super) struct ProviderProcess {
    child: Child,
    url: String,
    output: Arc<Mutex<Tail>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl ProviderProcess {
    /// Starts `exe provider` as `spec` says on a free port and returns once it answers
    /// `GET /health`; tries another port when the one picked was taken meanwhile.
    pub(super) async fn start(exe: &Path, spec: &ProviderSpec) -> Result<Self, StartError> {
        let mut attempt = 1u32;
        loop {
            match Self::start_once(exe, spec).await {
                Err(error) if error.port_taken() && attempt < PORT_ATTEMPTS => {
                    attempt = attempt.saturating_add(1);
                }
                other => return other,
            }
        }
    }

    async fn start_once(exe: &Path, spec: &ProviderSpec) -> Result<Self, StartError> {
        let spawn_error = |source| StartError::Spawn {
            exe: exe.display().to_string(),
            source,
        };
        let port = x402pp_testkit::support::free_port().map_err(spawn_error)?;
        let mut command = Command::new(exe);
        command
            .args(spec.args(port))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Logs only what goes wrong: the provider's own logging stays out of the measure.
            .env("RUST_LOG", "warn");
        // Only the flags above configure it: none of the user's X402PP_* settings.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("X402PP_") {
                command.env_remove(key);
            }
        }
        let mut child = command.spawn().map_err(spawn_error)?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let mut process = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            output: Arc::new(Mutex::new(Tail::default())),
            readers: Vec::new(),
        };
        let (ready_tx, ready_rx) = oneshot::channel();
        if let Some(stdout) = stdout {
            let reader = drain("stdout", stdout, process.output.clone(), Some(ready_tx))
                .map_err(spawn_error)?;
            process.readers.push(reader);
        }
        if let Some(stderr) = stderr {
            let reader =
                drain("stderr", stderr, process.output.clone(), None).map_err(spawn_error)?;
            process.readers.push(reader);
        }
        match tokio::time::timeout(READY_TIMEOUT, ready_rx).await {
            Ok(Ok(())) => {}
            // Its stdout ended before the ready line: it exited.
            Ok(Err(_)) => {
                let (status, output) = process.stop_and_collect();
                return Err(StartError::Exited { status, output });
            }
            Err(_) => {
                let (_, output) = process.stop_and_collect();
                return Err(StartError::Timeout {
                    secs: READY_TIMEOUT.as_secs(),
                    output,
                });
            }
        }
        let health = process.health_url();
        let answer = reqwest::Client::new()
            .get(&health)
            .timeout(HEALTH_TIMEOUT)
            .send()
            .await;
        let reason = match answer {
            Ok(response) if response.status().is_success() => return Ok(process),
            Ok(response) => format!("HTTP {}", response.status()),
            Err(e) => e.to_string(),
        };
        let (_, output) = process.stop_and_collect();
        Err(StartError::Health {
            url: health,
            reason,
            output,
        })
    }

    /// Kills and reaps the child, waits for its output to be read, and returns its exit status
    /// and the tail of its output.
    fn stop_and_collect(&mut self) -> (String, String) {
        let _ = self.child.kill();
        let status = match self.child.wait() {
            Ok(status) => describe(status),
            Err(e) => format!("unknown exit status: {e}"),
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        let output = lock(&self.output).render();
        (status, output)
    }

    /// `http://127.0.0.1:<port>`.
    pub(super) fn url(&self) -> &str {
        &self.url
    }

    /// `http://127.0.0.1:<port>/health`.
    pub(super) fn health_url(&self) -> String {
        format!("{}/health", self.url)
    }

    /// The child's process id.
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ProviderProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn describe(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => "killed by a signal".to_owned(),
    }
}

/// Clock ticks per second of `/proc/<pid>/stat`'s times: `getconf CLK_TCK`, else Linux's 100.
pub(super) fn clock_ticks_per_sec() -> u64 {
    let asked = Command::new("getconf")
        .arg("CLK_TCK")
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8_lossy(&output.stdout).trim().parse().ok())
        .filter(|ticks: &u64| *ticks > 0);
    match asked {
        Some(ticks) => ticks,
        None => {
            eprintln!(
                "warning: `getconf CLK_TCK` failed; assuming {DEFAULT_CLOCK_TICKS} clock ticks per second"
            );
            DEFAULT_CLOCK_TICKS
        }
    }
}

fn read(path: &str) -> Result<String, ProcError> {
    std::fs::read_to_string(path).map_err(|source| ProcError::Read {
        path: path.to_owned(),
        source,
    })
}

/// CPU time of process `pid` (all its threads, user + system) in clock ticks.
pub(super) fn cpu_ticks(pid: u32) -> Result<u64, ProcError> {
    let path = format!("/proc/{pid}/stat");
    parse_cpu_ticks(&read(&path)?).ok_or(ProcError::Parse {
        path,
        what: "utime and stime",
    })
}

/// Resident memory of process `pid`, KiB.
pub(super) fn rss_kib(pid: u32) -> Result<u64, ProcError> {
    let path = format!("/proc/{pid}/status");
    parse_rss_kib(&read(&path)?).ok_or(ProcError::Parse {
        path,
        what: "VmRSS",
    })
}

/// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field 2)
/// is in parentheses and may hold spaces and parentheses itself: fields are counted after the
/// last `)`, where field 3 starts.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, after_name) = stat.rsplit_once(')')?;
    let mut fields = after_name.split_whitespace().skip(UTIME_AFTER_NAME);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// The `VmRSS:   1234 kB` line of `/proc/<pid>/status`, in KiB.
fn parse_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.trim_start_matches("VmRSS:")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_utime_plus_stime_counted_after_the_command_name() {
        // pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt
        // utime stime ...
        let stat = "4242 (x402pp (a) b) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 56 0 0 20 0 9 0";
        assert_eq!(parse_cpu_ticks(stat), Some(1234 + 56));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1 2"), None);
        assert_eq!(parse_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn rss_is_read_from_the_vmrss_line() {
        let status = "Name:\tx402pp\nVmPeak:\t  99999 kB\nVmRSS:\t   51234 kB\nThreads:\t9\n";
        assert_eq!(parse_rss_kib(status), Some(51_234));
        assert_eq!(parse_rss_kib("Name:\tx\n"), None);
    }

    #[test]
    fn this_process_has_cpu_time_and_memory_in_proc() {
        if !Path::new("/proc/self/stat").exists() {
            return; // not Linux
        }
        let pid = std::process::id();
        assert!(rss_kib(pid).is_ok_and(|kib| kib > 0));
        assert!(cpu_ticks(pid).is_ok());
        assert!(clock_ticks_per_sec() > 0);
    }

    #[test]
    fn the_provider_is_started_with_settlement_and_rate_limits_out_of_the_way() {
        let spec = ProviderSpec {
            keypair: PathBuf::from("/tmp/p.json"),
            mint: "M".into(),
            rpc_url: "http://127.0.0.1:1".into(),
            database_url: "sqlite://l?mode=rwc".into(),
            price: 1,
            max_latency_ms: 250,
        };
        let args = spec.args(4321).join(" ");
        for expected in [
            "provider --no-exact --rate-limit-per-session 0 --claim-interval-secs 86400",
            "--listen 127.0.0.1:4321",
            "--claim-threshold 18446744073709551615",
            "--keypair /tmp/p.json",
            "--database-url sqlite://l?mode=rwc",
        ] {
            assert!(args.contains(expected), "{args}");
        }
    }
}
