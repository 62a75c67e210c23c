//! Test support for r1's end-to-end tests (`tests/tests/`): a real Prometheus server pointed at
//! an r1d (or anything serving `/metrics`), and the PromQL of the Grafana dashboard.
//!
//! [`Prometheus`] starts Debian's `prometheus` binary on a free loopback port with a generated
//! scrape config (one job, `r1d`, bearer token from a file, 1 s interval), a throwaway TSDB, and
//! kills it on drop. Queries go through its HTTP API with a tiny std-only HTTP/1.0 client.
//!
//! [`fuzz`] is the fuzzing harness (`r1-fuzz`, `tests/fuzz.rs`, `scripts/fuzz.sh`; see
//! docs/fuzzing.md).

pub mod fuzz;

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// What can go wrong driving Prometheus or reading a dashboard; each names what and where.
#[derive(Debug)]
pub enum HarnessError {
    /// The `prometheus` binary could not be started.
    Spawn {
        /// The binary tried.
        binary: PathBuf,
        /// Why it could not run.
        source: std::io::Error,
    },
    /// Prometheus exited or never became ready; its log is attached.
    NotReady {
        /// What was waited for.
        what: String,
        /// The tail of Prometheus' log.
        log: String,
    },
    /// A file could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// An HTTP exchange with Prometheus failed.
    Http {
        /// The request.
        request: String,
        /// What went wrong.
        message: String,
    },
    /// Prometheus answered a query with an error or an unexpected shape.
    Query {
        /// The PromQL expression.
        expr: String,
        /// What Prometheus said, or what was wrong with its answer.
        message: String,
    },
    /// A dashboard file is not the JSON expected.
    Dashboard {
        /// The dashboard file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A condition waited for did not come true in time.
    Timeout {
        /// The condition.
        what: String,
        /// How long it was given.
        waited: Duration,
        /// The last state seen.
        last: String,
    },
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Spawn { binary, source } => write!(
                f,
                "cannot run {}: {source} (run scripts/install-deps.sh: it installs Debian's \
                 `prometheus` package)",
                binary.display()
            ),
            Self::NotReady { what, log } => write!(f, "prometheus {what}; its log:\n{log}"),
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Http { request, message } => write!(f, "{request}: {message}"),
            Self::Query { expr, message } => write!(f, "query {expr:?}: {message}"),
            Self::Dashboard { path, message } => write!(f, "{}: {message}", path.display()),
            Self::Timeout { what, waited, last } => {
                write!(f, "{what}: not true after {waited:?}; last seen: {last}")
            }
        }
    }
}

impl std::error::Error for HarnessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Spawn { source, .. } | Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Labels of one series in a query answer, sorted by name.
pub type Labels = BTreeMap<String, String>;

/// A real Prometheus server scraping one target; killed, and its data deleted, on drop.
pub struct Prometheus {
    /// The running server.
    child: Child,
    /// Where its HTTP API listens.
    address: SocketAddr,
    /// Config, TSDB and log; removed on drop.
    dir: tempfile::TempDir,
}

/// How Prometheus is started: the defaults suit a test of a few seconds.
#[derive(Debug, Clone)]
pub struct PrometheusOptions {
    /// The binary; `prometheus` on `PATH` by default.
    pub binary: PathBuf,
    /// Scrape interval (also the timeout); 1 s by default so `rate(...[1m])` has data in ~2 s.
    pub scrape_interval: Duration,
    /// How long to wait for the server to answer `/-/ready`.
    pub start_timeout: Duration,
}

impl Default for PrometheusOptions {
    fn default() -> Self {
        Self {
            binary: PathBuf::from("prometheus"),
            scrape_interval: Duration::from_secs(1),
            start_timeout: Duration::from_secs(30),
        }
    }
}

/// The job name of the generated scrape config; the dashboard's `up{job="r1d"}` relies on it.
pub const JOB: &str = "r1d";

impl Prometheus {
    /// Starts Prometheus scraping `http://{target}/metrics` with `Authorization: Bearer <the
    /// contents of token_file>`, and waits until it is ready.
    pub fn start(target: SocketAddr, token_file: &Path) -> Result<Self, HarnessError> {
        Self::start_with(target, token_file, &PrometheusOptions::default())
    }

    /// [`Prometheus::start`] with explicit options.
    pub fn start_with(
        target: SocketAddr,
        token_file: &Path,
        options: &PrometheusOptions,
    ) -> Result<Self, HarnessError> {
        // The free port is picked before Prometheus binds it; another process may take it in
        // between. Only that case is retried, with a new port.
        let mut attempt = 1;
        loop {
            match Self::start_once(target, token_file, options) {
                Err(HarnessError::NotReady { log, .. })
                    if attempt < 3 && log.contains("address already in use") =>
                {
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// One try of [`Prometheus::start_with`] on a fresh port and directory.
    fn start_once(
        target: SocketAddr,
        token_file: &Path,
        options: &PrometheusOptions,
    ) -> Result<Self, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix("r1-prometheus-")
            .tempdir()
            .map_err(|source| HarnessError::Io {
                path: std::env::temp_dir(),
                source,
            })?;
        let config_path = dir.path().join("prometheus.yml");
        let config = scrape_config(target, token_file, options.scrape_interval);
        std::fs::write(&config_path, config).map_err(|source| HarnessError::Io {
            path: config_path.clone(),
            source,
        })?;
        let log_path = dir.path().join("prometheus.log");
        let log = std::fs::File::create(&log_path).map_err(|source| HarnessError::Io {
            path: log_path.clone(),
            source,
        })?;
        let log_err = log.try_clone().map_err(|source| HarnessError::Io {
            path: log_path.clone(),
            source,
        })?;
        let address = free_loopback_port()?;
        let child = Command::new(&options.binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .arg("--storage.tsdb.retention.time=1h")
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|source| HarnessError::Spawn {
                binary: options.binary.clone(),
                source,
            })?;
        let mut prometheus = Self {
            child,
            address,
            dir,
        };
        prometheus.wait_ready(options.start_timeout)?;
        Ok(prometheus)
    }

    /// The address of Prometheus' own HTTP API and UI.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The last 4 KiB of Prometheus' log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("prometheus.log"))
            .unwrap_or_else(|e| format!("(log unreadable: {e})"));
        let start = text.len().saturating_sub(4096);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        text[start..].to_owned()
    }

    /// Polls `/-/ready` until it answers 200, failing early if the process exits.
    fn wait_ready(&mut self, timeout: Duration) -> Result<(), HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(HarnessError::NotReady {
                    what: format!("exited with {status} while starting"),
                    log: self.log_tail(),
                });
            }
            if matches!(self.get("/-/ready"), Ok((200, _))) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::NotReady {
                    what: format!("not ready after {timeout:?}"),
                    log: self.log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the target has been scraped at least once (successfully or not: `up`
    /// exists). Check `up == 1` with [`Prometheus::query`] to know it succeeded.
    pub fn wait_until_scraped(&self, timeout: Duration) -> Result<(), HarnessError> {
        self.wait_for_scrapes(1, timeout)
    }

    /// Waits until the target has been scraped at least `scrapes` times; two are the minimum
    /// for `rate()` to have data.
    pub fn wait_for_scrapes(&self, scrapes: u32, timeout: Duration) -> Result<(), HarnessError> {
        let expr = format!("count_over_time(up{{job=\"{JOB}\"}}[10m])");
        self.wait_until(
            &format!("{scrapes} scrapes of the {JOB} job"),
            timeout,
            || {
                let answer = self.query(&expr)?;
                let seen = answer.first().map_or(0.0, |(_, count)| *count);
                Ok((seen >= f64::from(scrapes), format!("{seen} scrapes")))
            },
        )
    }

    /// Polls `check` every 200 ms until it says `true` or `timeout` passes. `check` returns
    /// whether the condition holds and a description of what it saw, for the timeout message.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Result<(bool, String), HarnessError>,
    ) -> Result<(), HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match check() {
                Ok((true, _)) => return Ok(()),
                Ok((false, seen)) => seen,
                Err(error) => error.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout {
                    what: what.to_owned(),
                    waited: timeout,
                    last: format!("{last}\nprometheus log:\n{}", self.log_tail()),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Evaluates `expr` now (`/api/v1/query`): each series' labels and value. A scalar answer
    /// is one entry with no labels.
    pub fn query(&self, expr: &str) -> Result<Vec<(Labels, f64)>, HarnessError> {
        let path = format!("/api/v1/query?query={}", percent_encode(expr));
        let (status, body) = self.get(&path)?;
        let query_error = |message: String| HarnessError::Query {
            expr: expr.to_owned(),
            message,
        };
        let answer: Value = serde_json::from_str(&body)
            .map_err(|e| query_error(format!("HTTP {status}, body is not JSON ({e}): {body}")))?;
        if answer["status"] != "success" {
            return Err(query_error(format!(
                "HTTP {status}: {}: {}",
                answer["errorType"], answer["error"]
            )));
        }
        let data = &answer["data"];
        match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .ok_or_else(|| query_error(format!("vector without a result array: {body}")))?
                .iter()
                .map(|series| {
                    let labels = series["metric"]
                        .as_object()
                        .ok_or_else(|| query_error(format!("series without labels: {series}")))?
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect();
                    Ok((labels, sample_value(&series["value"]).map_err(query_error)?))
                })
                .collect(),
            Some("scalar") => Ok(vec![(
                Labels::new(),
                sample_value(&data["result"]).map_err(query_error)?,
            )]),
            other => Err(query_error(format!(
                "result type {other:?} is neither vector nor scalar"
            ))),
        }
    }

    /// The last scrape error of the [`JOB`] target (`/api/v1/targets`), `None` after a
    /// successful scrape: says why `up` is 0 (a 401 for a wrong token, a refused connection…).
    pub fn scrape_error(&self) -> Result<Option<String>, HarnessError> {
        let (status, body) = self.get("/api/v1/targets?state=active")?;
        let targets_error = |message: String| HarnessError::Query {
            expr: "/api/v1/targets".into(),
            message,
        };
        let answer: Value = serde_json::from_str(&body)
            .map_err(|e| targets_error(format!("HTTP {status}, body is not JSON ({e}): {body}")))?;
        let target = answer["data"]["activeTargets"]
            .as_array()
            .and_then(|targets| targets.iter().find(|t| t["labels"]["job"] == JOB))
            .ok_or_else(|| targets_error(format!("no active {JOB} target: {body}")))?;
        Ok(target["lastError"]
            .as_str()
            .filter(|error| !error.is_empty())
            .map(str::to_owned))
    }

    /// Waits until every query of the Grafana dashboard at `dashboard` (see
    /// [`dashboard_queries`]) returns at least one series, all finite. The error lists each
    /// query that did not, and why.
    pub fn wait_for_dashboard_data(
        &self,
        dashboard: &Path,
        timeout: Duration,
    ) -> Result<(), HarnessError> {
        let exprs = dashboard_queries(dashboard)?;
        self.wait_until(
            &format!("every query of {} has data", dashboard.display()),
            timeout,
            || {
                let mut failures = Vec::new();
                for expr in &exprs {
                    match self.query(expr) {
                        Ok(series) if series.is_empty() => {
                            failures.push(format!("{expr}: no data"))
                        }
                        Ok(series) if series.iter().any(|(_, v)| !v.is_finite()) => {
                            failures.push(format!("{expr}: not finite: {series:?}"))
                        }
                        Ok(_) => {}
                        Err(error) => failures.push(error.to_string()),
                    }
                }
                Ok((failures.is_empty(), failures.join("\n")))
            },
        )
    }

    /// `GET path` on Prometheus' HTTP API: status code and body.
    fn get(&self, path: &str) -> Result<(u16, String), HarnessError> {
        http_get(self.address, path, None)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Killing an already exited child fails harmlessly; wait reaps it either way.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of an API sample `[unix_time, "value"]`.
fn sample_value(sample: &Value) -> Result<f64, String> {
    let text = sample[1]
        .as_str()
        .ok_or_else(|| format!("sample is not [time, \"value\"]: {sample}"))?;
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        number => number
            .parse()
            .map_err(|e| format!("sample value {number:?}: {e}")),
    }
}

/// A Prometheus config scraping `target` as job [`JOB`] every `interval`, with the bearer token
/// read from `token_file`. Strings are written as JSON strings, which YAML reads as-is.
pub fn scrape_config(target: SocketAddr, token_file: &Path, interval: Duration) -> String {
    let quote = |s: &str| Value::String(s.to_owned()).to_string();
    let every = format!("{}ms", interval.as_millis().max(1));
    format!(
        "global:\n  scrape_interval: {every}\n  scrape_timeout: {every}\n  evaluation_interval: {every}\n\
         scrape_configs:\n  - job_name: {job}\n    metrics_path: /metrics\n    authorization:\n      \
         type: Bearer\n      credentials_file: {token}\n    static_configs:\n      - targets: [{target}]\n",
        job = quote(JOB),
        token = quote(&token_file.to_string_lossy()),
        target = quote(&target.to_string()),
    )
}

/// A loopback address with a port that was free a moment ago.
pub fn free_loopback_port() -> Result<SocketAddr, HarnessError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|source| HarnessError::Io {
        path: PathBuf::from("127.0.0.1:0"),
        source,
    })?;
    listener.local_addr().map_err(|source| HarnessError::Io {
        path: PathBuf::from("127.0.0.1:0"),
        source,
    })
}

/// `GET path` over HTTP/1.0 (so the answer is neither chunked nor kept alive), with an optional
/// bearer token: status code and body.
pub fn http_get(
    address: SocketAddr,
    path: &str,
    bearer: Option<&str>,
) -> Result<(u16, String), HarnessError> {
    let request = format!("GET http://{address}{path}");
    let http_error = |message: String| HarnessError::Http {
        request: request.clone(),
        message,
    };
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
        .map_err(|e| http_error(format!("connect: {e}")))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| http_error(format!("read timeout: {e}")))?;
    let authorization = bearer.map_or(String::new(), |token| {
        format!("Authorization: Bearer {token}\r\n")
    });
    let head = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n{authorization}\r\n");
    stream
        .write_all(head.as_bytes())
        .map_err(|e| http_error(format!("send: {e}")))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| http_error(format!("receive: {e}")))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| http_error(format!("no end of headers in {} bytes", raw.len())))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| http_error(format!("bad status line: {head:?}")))?;
    Ok((status, body.to_owned()))
}

/// Percent-encodes `text` for a URL query value (RFC 3986 unreserved characters pass).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Every PromQL `expr` of the Grafana dashboard at `path` (panels nested in rows included), in
/// file order, with template variables made concrete: Grafana's interval variables
/// (`$__rate_interval`, `$__interval`, `$__range`, …) become `1m`, and every other variable
/// (`$run`, `${run}`, `${run:regex}`, `[[run]]`) the regex `.*`, i.e. "All". A panel that
/// matches a variable with `=` rather than `=~` therefore finds nothing, as it would in Grafana
/// with several runs selected.
pub fn dashboard_queries(path: &Path) -> Result<Vec<String>, HarnessError> {
    let text = std::fs::read_to_string(path).map_err(|source| HarnessError::Io {
        path: path.to_owned(),
        source,
    })?;
    let dashboard: Value = serde_json::from_str(&text).map_err(|e| HarnessError::Dashboard {
        path: path.to_owned(),
        message: format!("not JSON: {e}"),
    })?;
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    if exprs.is_empty() {
        return Err(HarnessError::Dashboard {
            path: path.to_owned(),
            message: "no \"expr\" anywhere: not a Prometheus dashboard".into(),
        });
    }
    Ok(exprs.iter().map(|e| substitute_variables(e)).collect())
}

/// Appends every string value under an `"expr"` key in `value`, depth first, in order.
fn collect_exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match (key.as_str(), child) {
                    ("expr", Value::String(expr)) => out.push(expr.clone()),
                    _ => collect_exprs(child, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_exprs(item, out)),
        _ => {}
    }
}

/// Replaces Grafana template variables in `expr` (see [`dashboard_queries`]).
pub fn substitute_variables(expr: &str) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(at) = rest.find(['$', '[']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let (name, len) = if let Some(inner) = tail.strip_prefix("${") {
            match inner.find('}') {
                Some(end) => {
                    let name = inner[..end].split(':').next().unwrap_or_default();
                    (Some(name), end + 3)
                }
                None => (None, 1),
            }
        } else if let Some(inner) = tail.strip_prefix("[[") {
            match inner.find("]]") {
                Some(end) if is_variable_name(&inner[..end]) => (Some(&inner[..end]), end + 4),
                _ => (None, 1),
            }
        } else if let Some(inner) = tail.strip_prefix('$') {
            let end = inner
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(inner.len());
            if end > 0 {
                (Some(&inner[..end]), end + 1)
            } else {
                (None, 1)
            }
        } else {
            (None, 1)
        };
        match name {
            Some(name) if name.starts_with("__") => out.push_str("1m"),
            Some(_) => out.push_str(".*"),
            None => out.push_str(&tail[..1]),
        }
        rest = &tail[len..];
    }
    out.push_str(rest);
    out
}

/// A Grafana variable name: letters, digits and `_`.
fn is_variable_name(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn variables_become_match_all_and_intervals_one_minute() {
        assert_eq!(
            substitute_variables(r#"rate(r1_steps_total{run=~"$run"}[$__rate_interval])"#),
            r#"rate(r1_steps_total{run=~".*"}[1m])"#
        );
        assert_eq!(
            substitute_variables(r#"x{run=~"${run:regex}", c=~"[[component]]"}"#),
            r#"x{run=~".*", c=~".*"}"#
        );
        // Range selectors, regex brackets and a bare `$` are left alone.
        assert_eq!(
            substitute_variables(r#"rate(x{s=~"[45].."}[1m]) $"#),
            r#"rate(x{s=~"[45].."}[1m]) $"#
        );
    }

    #[test]
    fn dashboard_queries_finds_nested_exprs_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.json");
        std::fs::write(
            &path,
            r#"{"panels":[{"type":"row","panels":[{"targets":[{"expr":"a{run=~\"$run\"}"}]}]},
                {"targets":[{"expr":"b"},{"expr":"c"}]}],
               "templating":{"list":[{"query":{"query":"label_values(r1_steps_total, run)"}}]}}"#,
        )
        .unwrap();
        assert_eq!(
            dashboard_queries(&path).unwrap(),
            [r#"a{run=~".*"}"#, "b", "c"]
        );
    }

    #[test]
    fn bad_dashboards_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.json");
        std::fs::write(&path, "{ not json").unwrap();
        let message = dashboard_queries(&path).unwrap_err().to_string();
        assert!(
            message.contains("broken.json") && message.contains("not JSON"),
            "{message}"
        );
        std::fs::write(&path, r#"{"panels":[]}"#).unwrap();
        let message = dashboard_queries(&path).unwrap_err().to_string();
        assert!(message.contains("no \"expr\""), "{message}");
        let missing = dir.path().join("missing.json");
        assert!(dashboard_queries(&missing)
            .unwrap_err()
            .to_string()
            .contains("missing.json"));
    }

    #[test]
    fn scrape_config_names_job_token_and_target() {
        let config = scrape_config(
            "127.0.0.1:7878".parse().unwrap(),
            Path::new("/tmp/a \"b\"/token"),
            Duration::from_secs(1),
        );
        assert!(config.contains("job_name: \"r1d\""), "{config}");
        assert!(
            config.contains(r#"credentials_file: "/tmp/a \"b\"/token""#),
            "{config}"
        );
        assert!(
            config.contains(r#"targets: ["127.0.0.1:7878"]"#),
            "{config}"
        );
        assert!(config.contains("scrape_interval: 1000ms"), "{config}");
    }

    #[test]
    fn percent_encoding_keeps_promql_intact() {
        assert_eq!(
            percent_encode(r#"up{job="r1d"} == 1"#),
            "up%7Bjob%3D%22r1d%22%7D%20%3D%3D%201"
        );
    }
}
