//! The HTTP target: a real `r1d` on 127.0.0.1 (its own state folder, under the memory limit)
//! gets raw HTTP requests — mutated seeds from `corpus/http/` and requests generated here from
//! every route, method, header and JSON shape, with the right token, a wrong one and none.
//!
//! Setup starts one real run of a tiny model for two steps, so the per-run routes (steps,
//! samples, checkpoints and their files, evals, controls) have something to serve. A request
//! may be answered with any status; r1d exiting is an abort, and r1d that neither answers nor
//! serves `/healthz` within the timeout is a hang. A run a fuzzed request starts is stopped at
//! once, so one lucky config does not train for the rest of the budget.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use r1_config::testkit::JobToml;
use rand::Rng;
use serde_json::{json, Value};

use super::mutate::TEXT_NUMBERS;
use super::{limit_memory, tail, Executor, FindingKind, HarnessError, Input, Options, Outcome};

/// Where the token goes in corpus requests (substituted when sent, so a saved request replays
/// against any r1d).
pub const TOKEN: &str = "{TOKEN}";

/// Where the folder holding the tiny model goes in corpus requests.
pub const WORK: &str = "{WORK}";

/// How long r1d gets to start and to finish the setup run.
const SETUP_TIMEOUT: Duration = Duration::from_secs(120);

/// A job config for the tiny model in `{WORK}/model`: `steps` GRPO steps, a checkpoint each.
pub fn job_toml(steps: u64) -> String {
    JobToml::grpo(Path::new("model"), steps)
        .set("run", "name", "fuzz")
        .set("run", "output_dir", "runs/fuzz")
        .set("data", "train_size", 16)
        .set("data", "test_size", 4)
        .tokens(4)
        .text()
}

/// A raw request with `Content-Length` set to the body's length.
pub fn raw_request(method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> String {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    if let Some(token) = token {
        text.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some(body) = body {
        text.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        text.push_str("\r\n");
    }
    text
}

/// A status line's code, or why there was none.
#[derive(Debug)]
struct Answer {
    status: Option<u16>,
    body: Vec<u8>,
}

/// Sends `request` and reads the answer: the headers and `Content-Length` bytes of body, or
/// until the server closes. The write side is shut after sending, so a request that promises
/// more body than it has ends at once rather than waiting for bytes that never come.
fn send(addr: SocketAddr, request: &[u8], timeout: Duration) -> Result<Answer, String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    // The server may answer and close before reading a long body: a failed write is not an error.
    let _ = stream.write_all(request);
    let _ = stream.shutdown(Shutdown::Write);
    let began = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if length.is_some_and(|n| buf.len() >= end + 4 + n) {
                break;
            }
        }
        if began.elapsed() > timeout {
            return Err("timed out reading the answer".into());
        }
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if buf.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err("timed out reading the answer".into())
            }
            Err(_) => break,
        }
    }
    let status = std::str::from_utf8(&buf[..buf.len().min(12)])
        .ok()
        .and_then(|s| {
            s.strip_prefix("HTTP/1.1 ")
                .or_else(|| s.strip_prefix("HTTP/1.0 "))
        })
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok());
    let body = find(&buf, b"\r\n\r\n").map_or(Vec::new(), |end| buf[end + 4..].to_vec());
    Ok(Answer { status, body })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A running r1d and what the requests need to know about it.
pub struct HttpTarget {
    exe: PathBuf,
    memory_limit: u64,
    timeout: Duration,
    /// Holds the model (`model/`) and one state folder per r1d started.
    root: PathBuf,
    starts: u32,
    child: Child,
    addr: SocketAddr,
    token: String,
    log: PathBuf,
}

impl HttpTarget {
    /// Writes the tiny model, starts r1d and runs the setup run to its end.
    pub fn start(options: &Options, scratch: &Path) -> Result<HttpTarget, HarnessError> {
        if !options.r1d_exe.is_file() {
            return Err(HarnessError(format!(
                "{} is missing: build it first (cargo build -p r1-daemon --bin r1d)",
                options.r1d_exe.display()
            )));
        }
        let root = scratch.to_path_buf();
        super::seeds::tiny_model(&root.join("model"))
            .map_err(|e| HarnessError(format!("writing the tiny model: {e}")))?;
        let (child, addr, token, log) = launch(&options.r1d_exe, &root, 0, options.memory_limit)?;
        let mut target = HttpTarget {
            exe: options.r1d_exe.clone(),
            memory_limit: options.memory_limit,
            timeout: options.timeout,
            root,
            starts: 1,
            child,
            addr,
            token,
            log,
        };
        target.setup_run()?;
        Ok(target)
    }

    /// Starts the two-step run and waits for it to finish.
    fn setup_run(&mut self) -> Result<(), HarnessError> {
        let body = json!({
            "config_toml": job_toml(2),
            "source": "fuzz.toml",
            "base_dir": self.root,
        })
        .to_string();
        let started = self.call("POST", "/v1/runs", Some(&body))?;
        if started.status != Some(200) && started.status != Some(201) && started.status != Some(202)
        {
            return Err(HarnessError(format!(
                "the setup run was refused ({:?}): {}",
                started.status,
                String::from_utf8_lossy(&started.body)
            )));
        }
        let began = Instant::now();
        loop {
            let run = self.call("GET", "/v1/runs/run-0001", None)?;
            let record: Value = serde_json::from_slice(&run.body).unwrap_or(Value::Null);
            match record["state"].as_str() {
                Some("finished") => return Ok(()),
                Some("failed") | Some("stopped") => {
                    return Err(HarnessError(format!("the setup run ended as {record}")))
                }
                _ => {}
            }
            if began.elapsed() > SETUP_TIMEOUT {
                return Err(HarnessError(format!(
                    "the setup run did not finish in {SETUP_TIMEOUT:?}: {record}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// An authorised request of the harness's own.
    fn call(&self, method: &str, path: &str, body: Option<&str>) -> Result<Answer, HarnessError> {
        let request = raw_request(method, path, Some(&self.token), body);
        send(self.addr, request.as_bytes(), self.timeout)
            .map_err(|e| HarnessError(format!("{method} {path}: {e}")))
    }

    /// Stops every run that a fuzzed request started or resumed.
    fn stop_active_runs(&self) -> Result<(), HarnessError> {
        let runs = self.call("GET", "/v1/runs", None)?;
        let list: Value = serde_json::from_slice(&runs.body).unwrap_or(Value::Null);
        for run in list.as_array().into_iter().flatten() {
            let state = run["state"].as_str().unwrap_or("");
            if !matches!(state, "finished" | "failed" | "stopped") {
                if let Some(id) = run["id"].as_str() {
                    self.call("POST", &format!("/v1/runs/{id}/stop"), None)?;
                }
            }
        }
        Ok(())
    }

    /// The request with the placeholders filled in. A `Content-Length` that matched the body
    /// before keeps matching it (the folder path is longer than `{WORK}`); one that did not stays
    /// off by as much as it was.
    fn substitute(&self, raw: &[u8]) -> Vec<u8> {
        let fill = |bytes: &[u8]| {
            replace(
                &replace(bytes, TOKEN.as_bytes(), self.token.as_bytes()),
                WORK.as_bytes(),
                self.root.to_string_lossy().as_bytes(),
            )
        };
        let Some(split) = find(raw, b"\r\n\r\n") else {
            return fill(raw);
        };
        let (head, body) = (fill(&raw[..split + 4]), fill(&raw[split + 4..]));
        let grown = body.len() as i64 - (raw.len() - split - 4) as i64;
        if grown == 0 {
            return [head, body].concat();
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut out = Vec::with_capacity(head.len() + body.len());
        for line in text.split_inclusive("\r\n") {
            let length = line
                .strip_prefix("Content-Length: ")
                .and_then(|v| v.trim_end().parse::<i64>().ok());
            match length {
                Some(n) => out.extend(format!("Content-Length: {}\r\n", n + grown).into_bytes()),
                _ => out.extend(line.as_bytes()),
            }
        }
        out.extend(body);
        out
    }

    /// Whether r1d answers `/healthz`.
    fn healthy(&self) -> bool {
        send(
            self.addr,
            raw_request("GET", "/healthz", None, None).as_bytes(),
            self.timeout,
        )
        .is_ok_and(|a| a.status == Some(200))
    }

    /// A fresh r1d on a fresh state folder, after one died or hung.
    fn restart(&mut self) -> Result<(), HarnessError> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, addr, token, log) =
            launch(&self.exe, &self.root, self.starts, self.memory_limit)?;
        self.starts += 1;
        self.child = child;
        self.addr = addr;
        self.token = token;
        self.log = log;
        self.setup_run()
    }
}

/// Starts r1d number `n` on 127.0.0.1:0 with its own state folder under `root`; waits for its
/// address file and token.
fn launch(
    exe: &Path,
    root: &Path,
    n: u32,
    memory_limit: u64,
) -> Result<(Child, SocketAddr, String, PathBuf), HarnessError> {
    let state = root.join(format!("state-{n}"));
    let log = root.join(format!("r1d-{n}.log"));
    let stderr = std::fs::File::create(&log)
        .map_err(|e| HarnessError(format!("creating {}: {e}", log.display())))?;
    let mut command = Command::new(exe);
    command
        .args(["--listen", "127.0.0.1:0", "--state-dir"])
        .arg(&state)
        .env_remove("NOTIFY_SOCKET")
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    limit_memory(&mut command, memory_limit);
    let mut child = command
        .spawn()
        .map_err(|e| HarnessError(format!("starting {}: {e}", exe.display())))?;
    let began = Instant::now();
    let addr = loop {
        if let Ok(text) = std::fs::read_to_string(state.join("r1d.addr")) {
            if text.ends_with('\n') {
                break text.trim().parse::<SocketAddr>().map_err(|e| {
                    HarnessError(format!("{}: {e}", state.join("r1d.addr").display()))
                })?;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(HarnessError(format!(
                "r1d exited at start ({status}): {}",
                tail(&log, 2000)
            )));
        }
        if began.elapsed() > SETUP_TIMEOUT {
            let _ = child.kill();
            return Err(HarnessError(format!(
                "r1d did not start: {}",
                tail(&log, 2000)
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let token = std::fs::read_to_string(state.join("token"))
        .map_err(|e| HarnessError(format!("{}: {e}", state.join("token").display())))?
        .trim()
        .to_string();
    Ok((child, addr, token, log))
}

impl Executor for HttpTarget {
    fn exec(&mut self, input: &Input) -> Result<Outcome, HarnessError> {
        let raw = input
            .files
            .first()
            .map(|(_, b)| b.as_slice())
            .unwrap_or(&[]);
        let request = self.substitute(raw);
        let answer = send(self.addr, &request, self.timeout);
        if let Ok(Some(status)) = self.child.try_wait() {
            let message = format!("r1d exited: {status}\n{}", tail(&self.log, 1500).trim());
            self.restart()?;
            return Ok(Outcome::Broke(FindingKind::Abort, message));
        }
        if std::env::var_os("R1_FUZZ_TRACE").is_some() {
            let line = request.split(|&b| b == b'\n').next().unwrap_or(&[]);
            let status = answer.as_ref().map(|a| a.status);
            eprintln!(
                "{} -> {status:?}",
                String::from_utf8_lossy(&line[..line.len().min(120)])
            );
        }
        let class = match &answer {
            Ok(Answer {
                status: Some(s), ..
            }) => format!("{}xx", s / 100),
            Ok(Answer { status: None, .. }) => "closed".to_string(),
            Err(_) => "slow".to_string(),
        };
        if !self.healthy() {
            let message = format!(
                "r1d stopped answering /healthz after this request (its answer: {class})\n{}",
                tail(&self.log, 1500).trim()
            );
            self.restart()?;
            return Ok(Outcome::Broke(FindingKind::Hang, message));
        }
        let post = request.starts_with(b"POST");
        if post
            && matches!(
                &answer,
                Ok(Answer {
                    status: Some(200..=299),
                    ..
                })
            )
        {
            self.stop_active_runs()?;
        }
        Ok(match answer {
            Ok(Answer {
                status: Some(200..=299),
                ..
            }) => Outcome::Accepted,
            _ => Outcome::Refused(class),
        })
    }
}

impl Drop for HttpTarget {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every occurrence of `from` in `bytes` replaced by `to`.
fn replace(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Requests generated from the API's shape.

const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "BREW", "get", "",
];
const RUN_IDS: &[&str] = &[
    "run-0001",
    "run-0002",
    "run-9999",
    "run-18446744073709551616",
    "",
    "..",
    "%2e%2e",
    "run-0001%00",
    "run-0001%2f..%2f..",
    "ŗũñ",
    "run-0001;drop",
];
const FILES: &[&str] = &[
    "model.safetensors",
    "config.json",
    "optimizer.safetensors",
    "trainer.json",
    "../../token",
    "..%2f..%2ftoken",
    "%00",
    "token",
];
const ACTIONS: &[&str] = &["pause", "resume", "stop", "start", "eval", "", "PAUSE"];
const JSON_KEYS: &[&str] = &[
    "config_toml",
    "source",
    "base_dir",
    "queue",
    "step",
    "k",
    "problems",
    "greedy",
    "temperature",
    "top_p",
    "seed",
    "config",
    "id",
];

/// A request generated from the API's routes: any method, a path of a real route with odd
/// segments, a query, headers (token right, wrong or absent; lying lengths) and a JSON body.
pub fn generate(rng: &mut impl Rng) -> Input {
    let pick = |rng: &mut dyn rand::RngCore, items: &[&'static str]| -> &'static str {
        items[rng.random_range(0..items.len())]
    };
    let number =
        |rng: &mut dyn rand::RngCore| TEXT_NUMBERS[rng.random_range(0..TEXT_NUMBERS.len())];
    let method = pick(rng, METHODS);
    let id = if rng.random_bool(0.05) {
        "x".repeat(rng.random_range(100..20000))
    } else {
        pick(rng, RUN_IDS).to_string()
    };
    let mut path = match rng.random_range(0..13) {
        0 => "/healthz".to_string(),
        1 => "/metrics".to_string(),
        2 | 3 => "/v1/runs".to_string(),
        4 => format!("/v1/runs/{id}"),
        5 => format!("/v1/runs/{id}/steps"),
        6 => format!("/v1/runs/{id}/samples"),
        7 => format!("/v1/runs/{id}/checkpoints"),
        8 => format!(
            "/v1/runs/{id}/checkpoints/{}/files/{}",
            number(rng),
            pick(rng, FILES)
        ),
        9 => format!("/v1/runs/{id}/eval"),
        10 => format!("/v1/runs/{id}/evals"),
        11 => format!("/v1/runs/{id}/{}", pick(rng, ACTIONS)),
        _ => format!(
            "/{}",
            pick(rng, &["", "v1", "v1/", "//v1//runs", "v1/runs/", "%", "?"])
        ),
    };
    if rng.random_bool(0.3) {
        let query = match rng.random_range(0..4) {
            0 => format!("after={}&limit={}", number(rng), number(rng)),
            1 => format!("limit={}", number(rng)),
            2 => format!("after={}&bogus=1", number(rng)),
            _ => "after=&limit=x&&=".to_string(),
        };
        path = format!("{path}?{query}");
    }
    let body = if rng.random_bool(0.6) {
        Some(if rng.random_bool(0.8) {
            json_value(rng, 0).to_string()
        } else {
            "{\"config_toml\": \"[run]\\nname = ".to_string()
        })
    } else {
        None
    };
    let version = if rng.random_bool(0.95) {
        "HTTP/1.1"
    } else {
        pick(rng, &["HTTP/1.0", "HTTP/2", "HTTP/9.9", ""])
    };
    let mut text = format!("{method} {path} {version}\r\nHost: 127.0.0.1\r\n");
    match rng.random_range(0..6) {
        0 | 1 => text.push_str(&format!("Authorization: Bearer {TOKEN}\r\n")),
        2 => text.push_str("Authorization: Bearer wrong-token\r\n"),
        3 => text.push_str(&format!(
            "Authorization: {}\r\n",
            pick(
                rng,
                &[
                    "Bearer ",
                    "Basic dXNlcjpwYXNz",
                    "bearer {TOKEN}",
                    "Bearer {TOKEN}{TOKEN}",
                    "Bearer  {TOKEN} "
                ]
            )
        )),
        _ => {}
    }
    if rng.random_bool(0.7) {
        text.push_str(&format!(
            "Content-Type: {}\r\n",
            pick(
                rng,
                &[
                    "application/json",
                    "application/json",
                    "text/plain",
                    "application/json; charset=utf-16",
                    "multipart/form-data; boundary=x",
                    ""
                ]
            )
        ));
    }
    if rng.random_bool(0.1) {
        text.push_str(&format!(
            "X-Long: {}\r\n",
            "a".repeat(rng.random_range(1000..70000))
        ));
    }
    if rng.random_bool(0.05) {
        text.push_str("Transfer-Encoding: chunked\r\n");
    }
    let length = body.as_ref().map_or(0, String::len);
    match rng.random_range(0..10) {
        0 => {}
        1 => text.push_str(&format!("Content-Length: {}\r\n", number(rng))),
        2 => text.push_str(&format!(
            "Content-Length: {}\r\nContent-Length: 0\r\n",
            length
        )),
        _ => text.push_str(&format!("Content-Length: {length}\r\n")),
    }
    text.push_str("\r\n");
    if let Some(body) = body {
        text.push_str(&body);
    }
    Input::single("request.http", text.into_bytes())
}

/// A JSON value shaped like the API's bodies: objects with its keys, numbers at the edges,
/// strings that are TOML (good, broken, huge), nesting.
fn json_value(rng: &mut impl Rng, depth: usize) -> Value {
    let choice = if depth == 0 {
        0
    } else {
        rng.random_range(0..8)
    };
    match choice {
        0 | 1 if depth < 4 => {
            let mut object = serde_json::Map::new();
            for _ in 0..rng.random_range(0..5) {
                let key = JSON_KEYS[rng.random_range(0..JSON_KEYS.len())];
                let value = match (key, rng.random_range(0..3)) {
                    ("config_toml", 0) => Value::String(job_toml(1)),
                    ("config_toml", 1) => Value::String(job_toml(1).replace(
                        "group_size = 2",
                        &format!(
                            "group_size = {}",
                            TEXT_NUMBERS[rng.random_range(0..TEXT_NUMBERS.len())]
                        ),
                    )),
                    ("base_dir", 0) => Value::String(WORK.into()),
                    ("source", 0) => Value::String("../../../etc/passwd".into()),
                    _ => json_value(rng, depth + 1),
                };
                object.insert(key.to_string(), value);
            }
            Value::Object(object)
        }
        2 => {
            let text = TEXT_NUMBERS[rng.random_range(0..TEXT_NUMBERS.len())];
            serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.into()))
        }
        3 => Value::Bool(rng.random()),
        4 => Value::Null,
        5 if depth < 4 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| json_value(rng, depth + 1))
                .collect(),
        ),
        6 => Value::String("x".repeat(rng.random_range(0..3000))),
        _ => Value::String(
            ["", "[run]", "\u{0}", "run-0001", "ŗ", "\\"][rng.random_range(0..6)].into(),
        ),
    }
}
