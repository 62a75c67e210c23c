//! The fuzzing harness behind `r1-fuzz` (src/bin/r1-fuzz.rs), `tests/fuzz.rs` and
//! `scripts/fuzz.sh`: stable Rust, no libFuzzer.
//!
//! For each [`Target`] the parent process reads the seed corpus (`tests/fuzz/corpus/<target>/`),
//! replays every seed as it is, then feeds mutated inputs ([`mutate::Mutator`], ChaCha8 from a
//! fixed seed) to a worker: a child `r1-fuzz worker TARGET` under a memory limit
//! (`RLIMIT_AS`, 2 GiB by default) that runs each input through the real entry point under
//! `catch_unwind` and answers accepted / refused / panicked over a pipe. A panic is caught and
//! counted; an abort (an allocation the limit refuses, a stack overflow) kills the worker, which
//! the parent sees as an abnormal exit, counts, and restarts; an input that takes longer than the
//! timeout is a hang and the worker is killed. Every finding's input is saved under
//! `tests/fuzz/corpus/crashes/<target>/<kind>-<hash>/` with a `finding.txt` saying what happened.
//! The HTTP target drives a real r1d instead of a worker ([`http`]).

pub mod http;
pub mod input;
pub mod mutate;
pub mod seeds;
pub mod targets;

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use input::Input;
pub use targets::Target;

/// How much to try per target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    /// This many mutated inputs (after the seeds): deterministic, for CI.
    Inputs(u64),
    /// Mutated inputs until this much time has passed: for long runs.
    Seconds(f64),
}

/// Settings of a fuzzing run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The corpus root: `<corpus>/<target>/` holds the seeds, `<corpus>/crashes/` the findings.
    pub corpus: PathBuf,
    /// How much to try per target.
    pub budget: Budget,
    /// The generator's seed: the same seed and corpus try the same inputs.
    pub seed: u64,
    /// Address-space limit of each worker and of the fuzzed r1d, bytes.
    pub memory_limit: u64,
    /// How long one input may take before it counts as a hang.
    pub timeout: Duration,
    /// The `r1-fuzz` executable (workers are `r1-fuzz worker TARGET`).
    pub worker_exe: PathBuf,
    /// The `r1d` executable, for the HTTP target.
    pub r1d_exe: PathBuf,
}

/// What went wrong with an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FindingKind {
    /// A panic, caught in the worker.
    Panic,
    /// The process died (abort, signal, allocation failure, stack overflow) or, for the HTTP
    /// target, r1d exited.
    Abort,
    /// No answer within the timeout.
    Hang,
}

impl FindingKind {
    /// The name used in saved findings' folders.
    pub fn name(self) -> &'static str {
        match self {
            FindingKind::Panic => "panic",
            FindingKind::Abort => "abort",
            FindingKind::Hang => "hang",
        }
    }
}

/// One input that broke a target.
#[derive(Debug, Clone)]
pub struct Finding {
    /// What happened.
    pub kind: FindingKind,
    /// The panic message, or the exit status and the tail of stderr.
    pub message: String,
    /// Where the reproducer was saved (absent when an identical one already was).
    pub saved: Option<PathBuf>,
}

/// What one target's run tried and found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The target.
    pub target: Target,
    /// Inputs tried (seeds included).
    pub inputs: u64,
    /// Of those, seeds replayed unchanged.
    pub seeds: u64,
    /// Inputs the entry point accepted.
    pub accepted: u64,
    /// Inputs it refused with an error.
    pub refused: u64,
    /// Caught panics.
    pub panics: u64,
    /// Process deaths.
    pub aborts: u64,
    /// Timeouts.
    pub hangs: u64,
    /// Wall time.
    pub seconds: f64,
    /// Every finding (at most a few saved per distinct message).
    pub findings: Vec<Finding>,
    /// Target-specific counts (the HTTP target: answers by status class).
    pub notes: BTreeMap<String, u64>,
}

impl Report {
    fn new(target: Target) -> Self {
        Report {
            target,
            inputs: 0,
            seeds: 0,
            accepted: 0,
            refused: 0,
            panics: 0,
            aborts: 0,
            hangs: 0,
            seconds: 0.0,
            findings: Vec::new(),
            notes: BTreeMap::new(),
        }
    }

    /// Whether nothing panicked, aborted or hung.
    pub fn clean(&self) -> bool {
        self.panics == 0 && self.aborts == 0 && self.hangs == 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<10} inputs {:>7} (seeds {:>3})  accepted {:>6}  refused {:>7}  panics {}  aborts {}  hangs {}  {:>6.1}s",
            self.target.name(),
            self.inputs,
            self.seeds,
            self.accepted,
            self.refused,
            self.panics,
            self.aborts,
            self.hangs,
            self.seconds
        )?;
        if !self.notes.is_empty() {
            let notes: Vec<String> = self.notes.iter().map(|(k, v)| format!("{k} {v}")).collect();
            write!(f, "  [{}]", notes.join(", "))?;
        }
        for finding in &self.findings {
            write!(
                f,
                "\n    {}: {}{}",
                finding.kind.name(),
                finding.message.lines().next().unwrap_or(""),
                finding
                    .saved
                    .as_ref()
                    .map(|p| format!("\n      reproducer: {}", p.display()))
                    .unwrap_or_default()
            )?;
        }
        Ok(())
    }
}

/// Why a fuzzing run could not be carried out (not a finding: the harness itself failed).
#[derive(Debug)]
pub struct HarnessError(pub String);

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HarnessError {}

/// The answer to one input.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Accepted.
    Accepted,
    /// Refused with an error (the expected answer to most inputs); HTTP: the status class.
    Refused(String),
    /// Broke the target.
    Broke(FindingKind, String),
}

/// Something that runs inputs: a worker process, or the HTTP client of an r1d.
pub trait Executor {
    /// Runs one input.
    fn exec(&mut self, input: &Input) -> Result<Outcome, HarnessError>;
}

/// Reads the seeds of `target` (every entry of `<corpus>/<target>/`, sorted).
pub fn load_corpus(corpus: &Path, target: Target) -> Result<Vec<Input>, HarnessError> {
    let dir = corpus.join(target.name());
    let entries = input::sorted_entries(&dir)
        .map_err(|e| HarnessError(format!("reading the corpus {}: {e}", dir.display())))?;
    let mut seeds = Vec::new();
    for entry in entries {
        seeds.push(
            Input::read(&entry)
                .map_err(|e| HarnessError(format!("reading seed {}: {e}", entry.display())))?,
        );
    }
    if seeds.is_empty() {
        return Err(HarnessError(format!(
            "{} holds no seeds (generate them with `r1-fuzz seed {}`)",
            dir.display(),
            corpus.display()
        )));
    }
    Ok(seeds)
}

/// Fuzzes one target: every seed as it is, then mutated inputs until the budget is spent.
pub fn fuzz_target(options: &Options, target: Target) -> Result<Report, HarnessError> {
    let seeds = load_corpus(&options.corpus, target)?;
    let scratch =
        tempfile::tempdir().map_err(|e| HarnessError(format!("creating a scratch folder: {e}")))?;
    let mut executor: Box<dyn Executor> = if target == Target::Http {
        Box::new(http::HttpTarget::start(options, scratch.path())?)
    } else {
        Box::new(Worker::spawn(options, target, scratch.path())?)
    };
    // Each target draws from its own stream, so adding a target does not change another's inputs.
    let mut rng = ChaCha8Rng::seed_from_u64(
        options.seed ^ (target as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
    );
    let mut report = Report::new(target);
    let mut saved: BTreeMap<String, usize> = BTreeMap::new();
    let began = Instant::now();
    let mut mutated = 0u64;
    let mut index = 0usize;
    loop {
        let input = if index < seeds.len() {
            report.seeds += 1;
            seeds[index].clone()
        } else {
            let more = match options.budget {
                Budget::Inputs(n) => mutated < n,
                Budget::Seconds(s) => began.elapsed().as_secs_f64() < s,
            };
            if !more {
                break;
            }
            mutated += 1;
            if target == Target::Http && rng.random_bool(0.5) {
                http::generate(&mut rng)
            } else {
                let base = &seeds[rng.random_range(0..seeds.len())];
                let mut mutator = mutate::Mutator {
                    rng: &mut rng,
                    corpus: &seeds,
                };
                mutator.mutate(base)
            }
        };
        index += 1;
        report.inputs += 1;
        match executor.exec(&input)? {
            Outcome::Accepted => report.accepted += 1,
            Outcome::Refused(class) => {
                report.refused += 1;
                if target == Target::Http {
                    *report.notes.entry(class).or_default() += 1;
                }
            }
            Outcome::Broke(kind, message) => {
                match kind {
                    FindingKind::Panic => report.panics += 1,
                    FindingKind::Abort => report.aborts += 1,
                    FindingKind::Hang => report.hangs += 1,
                }
                let key = format!("{}:{}", kind.name(), signature(&message));
                let count = saved.entry(key).or_default();
                *count += 1;
                let path = if *count <= 3 {
                    Some(save_finding(options, target, kind, &message, &input)?)
                } else {
                    None
                };
                report.findings.push(Finding {
                    kind,
                    message,
                    saved: path,
                });
            }
        }
    }
    report.seconds = began.elapsed().as_secs_f64();
    Ok(report)
}

/// What makes two findings "the same": the message without its numbers (allocation sizes,
/// addresses, line numbers of the input).
fn signature(message: &str) -> String {
    message
        .lines()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_ascii_digit())
        .collect()
}

/// Saves a finding's input and what happened under `<corpus>/crashes/<target>/`.
fn save_finding(
    options: &Options,
    target: Target,
    kind: FindingKind,
    message: &str,
    input: &Input,
) -> Result<PathBuf, HarnessError> {
    let dir = options
        .corpus
        .join("crashes")
        .join(target.name())
        .join(format!("{}-{:016x}", kind.name(), input.hash()));
    let fail =
        |e: std::io::Error| HarnessError(format!("saving a finding in {}: {e}", dir.display()));
    input.write_into(&dir).map_err(fail)?;
    let note = format!(
        "target: {target}\nkind: {}\nseed: {}\nreplay: cargo run -p r1-tests --bin r1-fuzz -- replay {target} {}\n\n{message}\n",
        kind.name(),
        options.seed,
        dir.display()
    );
    std::fs::write(dir.join("finding.txt"), note).map_err(fail)?;
    Ok(dir)
}

/// Starts `command` with an address-space limit of `bytes` and no core dumps.
pub fn limit_memory(command: &mut Command, bytes: u64) {
    // SAFETY: only async-signal-safe calls (setrlimit) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: bytes as libc::rlim_t,
                rlim_max: bytes as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::setrlimit(libc::RLIMIT_CORE, &none) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The last `max` bytes of a file, as text.
pub fn tail(path: &Path, max: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

// ---------------------------------------------------------------------------------------------
// The worker process and its parent-side handle.

/// A reply on the worker pipe: 0 accepted, 1 refused, 2 panicked; then the message.
const ACCEPTED: u8 = 0;
const REFUSED: u8 = 1;
const PANICKED: u8 = 2;

/// The longest message sent back (refusal texts can quote a whole input).
const MAX_MESSAGE: usize = 2048;

/// The stack of the thread that runs inputs: r1d's HTTP workers and stage threads get Rust's
/// default 2 MiB, less than a process's main thread, so a recursion that fits 8 MiB but not
/// 2 MiB would crash r1d and must crash here too.
const WORKER_STACK: usize = 2 << 20;

/// The panic message of the last panic on any thread (set by the worker's hook).
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// The worker's main loop: reads inputs from stdin, runs each through `target`, answers on
/// stdout. Panics are caught and reported; everything else (an abort) ends the process, which
/// the parent sees.
pub fn worker_main(target: Target) -> Result<(), HarnessError> {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(non-text panic payload)".into());
        if let Ok(mut last) = LAST_PANIC.lock() {
            *last = Some(format!("panicked at {location}: {payload}"));
        }
    }));
    let thread = std::thread::Builder::new()
        .name(format!("fuzz-{target}"))
        .stack_size(WORKER_STACK)
        .spawn(move || worker_loop(target))
        .map_err(|e| HarnessError(format!("starting the worker thread: {e}")))?;
    thread
        .join()
        .map_err(|_| HarnessError("the worker loop panicked".into()))?
}

fn worker_loop(target: Target) -> Result<(), HarnessError> {
    let scratch =
        tempfile::tempdir().map_err(|e| HarnessError(format!("creating a scratch folder: {e}")))?;
    let mut stdin = BufReader::new(std::io::stdin().lock());
    let mut stdout = std::io::stdout().lock();
    let pipe = |e: std::io::Error| HarnessError(format!("worker pipe: {e}"));
    while let Some(input) = Input::decode(&mut stdin).map_err(pipe)? {
        let work = scratch.path().join("work");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)
            .map_err(|e| HarnessError(format!("creating {}: {e}", work.display())))?;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            targets::run(target, &input, &work)
        }));
        let (status, message) = match result {
            Ok(Ok(())) => (ACCEPTED, String::new()),
            Ok(Err(e)) => (REFUSED, e),
            Err(_) => (
                PANICKED,
                LAST_PANIC
                    .lock()
                    .ok()
                    .and_then(|mut l| l.take())
                    .unwrap_or_else(|| "panicked".into()),
            ),
        };
        let mut message = message.into_bytes();
        message.truncate(MAX_MESSAGE);
        let mut reply = vec![status];
        reply.extend((message.len() as u32).to_le_bytes());
        reply.extend(message);
        stdout.write_all(&reply).map_err(pipe)?;
        stdout.flush().map_err(pipe)?;
    }
    Ok(())
}

/// Runs one saved input in this process (no limit, no catching): for a backtrace of a finding.
pub fn replay(target: Target, path: &Path) -> Result<Result<(), String>, HarnessError> {
    let input =
        Input::read(path).map_err(|e| HarnessError(format!("reading {}: {e}", path.display())))?;
    let scratch =
        tempfile::tempdir().map_err(|e| HarnessError(format!("creating a scratch folder: {e}")))?;
    Ok(targets::run(target, &input, scratch.path()))
}

/// A worker reply as the parent reads it.
type Reply = (u8, String);

/// The parent's handle on a worker process.
struct Worker {
    target: Target,
    exe: PathBuf,
    memory_limit: u64,
    timeout: Duration,
    log: PathBuf,
    child: Child,
    stdin: ChildStdin,
    replies: Receiver<Reply>,
}

impl Worker {
    fn spawn(options: &Options, target: Target, scratch: &Path) -> Result<Worker, HarnessError> {
        let log = scratch.join(format!("worker-{target}.log"));
        let (child, stdin, replies) =
            Self::start(&options.worker_exe, target, options.memory_limit, &log)?;
        Ok(Worker {
            target,
            exe: options.worker_exe.clone(),
            memory_limit: options.memory_limit,
            timeout: options.timeout,
            log,
            child,
            stdin,
            replies,
        })
    }

    fn start(
        exe: &Path,
        target: Target,
        memory_limit: u64,
        log: &Path,
    ) -> Result<(Child, ChildStdin, Receiver<Reply>), HarnessError> {
        let stderr = std::fs::File::create(log)
            .map_err(|e| HarnessError(format!("creating {}: {e}", log.display())))?;
        let mut command = Command::new(exe);
        command
            .arg("worker")
            .arg(target.name())
            .env("RUST_BACKTRACE", "0")
            .env("RAYON_NUM_THREADS", "2")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        limit_memory(&mut command, memory_limit);
        let mut child = command.spawn().map_err(|e| {
            HarnessError(format!("starting {} worker {target}: {e}", exe.display()))
        })?;
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let (send, replies) = mpsc::channel();
        std::thread::spawn(move || loop {
            let mut head = [0u8; 5];
            if stdout.read_exact(&mut head).is_err() {
                return;
            }
            let n = (u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize)
                .min(MAX_MESSAGE);
            let mut message = vec![0u8; n];
            if stdout.read_exact(&mut message).is_err() {
                return;
            }
            if send
                .send((head[0], String::from_utf8_lossy(&message).into_owned()))
                .is_err()
            {
                return;
            }
        });
        Ok((child, stdin, replies))
    }

    /// Replaces a dead or killed worker.
    fn restart(&mut self) -> Result<(), HarnessError> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, stdin, replies) =
            Self::start(&self.exe, self.target, self.memory_limit, &self.log)?;
        self.child = child;
        self.stdin = stdin;
        self.replies = replies;
        Ok(())
    }
}

impl Executor for Worker {
    fn exec(&mut self, input: &Input) -> Result<Outcome, HarnessError> {
        let sent = input.encode(&mut self.stdin);
        let reply = match sent {
            Ok(()) => self.replies.recv_timeout(self.timeout),
            // A worker that died while reading (or before) shows as a closed pipe.
            Err(_) => Err(RecvTimeoutError::Disconnected),
        };
        match reply {
            Ok((ACCEPTED, _)) => Ok(Outcome::Accepted),
            Ok((PANICKED, message)) => Ok(Outcome::Broke(FindingKind::Panic, message)),
            Ok((_, message)) => Ok(Outcome::Refused(message)),
            Err(RecvTimeoutError::Timeout) => {
                self.restart()?;
                Ok(Outcome::Broke(
                    FindingKind::Hang,
                    format!("no answer within {:.0?}", self.timeout),
                ))
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self
                    .child
                    .wait()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| format!("unknown status ({e})"));
                let message = format!("worker died: {status}\n{}", tail(&self.log, 1500).trim());
                self.restart()?;
                Ok(Outcome::Broke(FindingKind::Abort, message))
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
