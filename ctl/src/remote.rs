//! The daemon's client: `r1ctl start|status|list|pause|resume|stop|delete|steps|samples|ckpt|eval|watch`.
//! Data goes to stdout (a table, or JSON with `-o json`), messages to stderr. Exit codes: 0 ok,
//! 1 a negative answer (no such run, not in a state that allows it), 2 usage or other error,
//! 3 the daemon is unreachable.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde::de::DeserializeOwned;
use serde::Serialize;

use r1_actors::messages::{SampleRecord, SavedCheckpoint, StepRecord};

use crate::terminal::printable;
use r1_api::{ErrorBody, EvalReport, EvalRequest, RunInfo, RunState, StartRequest};

/// Output format.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Columns for people.
    Table,
    /// JSON for programs.
    Json,
}

/// How to reach the daemon.
#[derive(Args, Clone)]
pub struct Conn {
    /// r1d's state folder: the address (r1d.addr) and token are read from it.
    #[arg(
        long,
        env = "R1_STATE_DIR",
        default_value = "/var/lib/r1d",
        global = true
    )]
    state_dir: PathBuf,
    /// Address of r1d's API (default: STATE_DIR/r1d.addr, else 127.0.0.1:7878).
    #[arg(long, env = "R1_ADDR", global = true)]
    addr: Option<String>,
    /// Bearer-token file (default: STATE_DIR/token).
    #[arg(long, env = "R1_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table", global = true)]
    pub output: Output,
}

/// Why a call failed; each maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No connection.
    #[error("r1d is unreachable at {addr}: {message} (is it running? see `systemctl status r1d`)")]
    Unreachable {
        /// Where we looked.
        addr: String,
        /// What the transport said.
        message: String,
    },
    /// The daemon answered with an error.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// Error code.
        code: String,
        /// Error message.
        message: String,
    },
    /// Anything else (token file, decoding).
    #[error("{0}")]
    Other(String),
    /// The command line names something that cannot be (a run id that is a path).
    #[error("{0}")]
    Usage(String),
}

impl CallError {
    /// The exit code of the process for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CallError::Unreachable { .. } => 3,
            CallError::Api {
                status: 404 | 409, ..
            } => 1,
            _ => 2,
        }
    }
}

struct Client {
    base: String,
    addr: String,
    token: String,
    agent: ureq::Agent,
}

impl Client {
    fn new(conn: &Conn) -> Result<Client, CallError> {
        let addr = match &conn.addr {
            Some(a) => a.clone(),
            None => std::fs::read_to_string(conn.state_dir.join("r1d.addr"))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "127.0.0.1:7878".into()),
        };
        let token_file = conn
            .token_file
            .clone()
            .unwrap_or_else(|| conn.state_dir.join("token"));
        let token = std::fs::read_to_string(&token_file)
            .map_err(|e| {
                CallError::Other(format!(
                    "reading the token file {}: {e} (set --token-file or --state-dir)",
                    token_file.display()
                ))
            })?
            .trim()
            .to_string();
        Ok(Client {
            base: format!("http://{addr}"),
            addr,
            token,
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(5))
                .build(),
        })
    }

    fn fail(&self, e: ureq::Error) -> CallError {
        match e {
            ureq::Error::Status(status, response) => {
                let text = response.into_string().unwrap_or_default();
                match serde_json::from_str::<ErrorBody>(&text) {
                    Ok(body) => CallError::Api {
                        status,
                        code: body.error.code,
                        message: body.error.message,
                    },
                    Err(_) => CallError::Api {
                        status,
                        code: "http".into(),
                        message: text,
                    },
                }
            }
            ureq::Error::Transport(t) => CallError::Unreachable {
                addr: self.addr.clone(),
                message: t.to_string(),
            },
        }
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        self.agent
            .request(method, &format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {}", self.token))
    }

    fn decode<T: DeserializeOwned>(response: ureq::Response) -> Result<T, CallError> {
        response
            .into_json()
            .map_err(|e| CallError::Other(format!("decoding the daemon's answer: {e}")))
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        let response = self.request("GET", path).call().map_err(|e| self.fail(e))?;
        Self::decode(response)
    }

    fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CallError> {
        let response = self
            .request("POST", path)
            .send_json(body)
            .map_err(|e| self.fail(e))?;
        Self::decode(response)
    }

    fn bytes(&self, path: &str) -> Result<Vec<u8>, CallError> {
        let response = self.request("GET", path).call().map_err(|e| self.fail(e))?;
        let mut bytes = Vec::new();
        response
            .into_reader()
            .read_to_end(&mut bytes)
            .map_err(|e| CallError::Other(format!("reading {path}: {e}")))?;
        Ok(bytes)
    }
}

/// The daemon commands.
#[derive(Subcommand)]
pub enum Remote {
    /// Start a run of a job config on the daemon.
    Start {
        /// The job config (TOML); relative paths in it are resolved against the current folder,
        /// as `r1ctl train` does.
        config: PathBuf,
        /// While another run is active, queue this one behind it (it starts when the runs
        /// before it have ended) instead of failing.
        #[arg(long)]
        queue: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show a run (the newest when no id is given).
    Status {
        /// Run id.
        run: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// List every run.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Pause a run after its current step.
    Pause {
        /// Run id.
        run: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Resume a paused run, or continue a failed or stopped one from its newest good checkpoint.
    Resume {
        /// Run id.
        run: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Stop a run for good after its current step (it writes a checkpoint first).
    Stop {
        /// Run id.
        run: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete an ended run: its records in r1d and its folder (checkpoints) under the state folder.
    Delete {
        /// Run id.
        run: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Per-step numbers of a run: reward, accuracy, format, KL, length, seconds.
    Steps {
        /// Run id, or the output directory of an in-process run (`r1ctl train`): its steps.jsonl.
        run: String,
        /// Only steps after this one.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many steps.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show recent rollouts of a run: prompt, completion, rewards.
    Samples {
        /// Run id, or the output directory of an in-process run (`r1ctl train`): its
        /// samples.jsonl.
        run: String,
        /// How many.
        #[arg(long, default_value_t = 5)]
        limit: usize,
        #[command(flatten)]
        conn: Conn,
    },
    /// Checkpoints of a run: list, or export one as a Hugging Face model folder.
    Ckpt {
        #[command(subcommand)]
        command: Ckpt,
    },
    /// Evaluate a run's checkpoint: pass@1 over k samples and cons@k, on the built-in task's
    /// held-out split or an eval set given with --data (the output names which).
    Eval {
        /// Run id.
        run: String,
        /// Checkpoint step (default: the newest).
        #[arg(long)]
        step: Option<u64>,
        /// Samples per problem.
        #[arg(long, default_value_t = 4)]
        k: usize,
        /// Held-out problems (default: the config's test_size).
        #[arg(long)]
        problems: Option<usize>,
        /// Greedy decoding (k = 1).
        #[arg(long)]
        greedy: bool,
        /// Sampling temperature.
        #[arg(long, default_value_t = 0.6)]
        temperature: f32,
        /// Nucleus mass.
        #[arg(long, default_value_t = 0.95)]
        top_p: f32,
        /// Seed of the evaluation's samplers (same seed, same checkpoint: same scores).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// An eval set (JSONL or .parquet, with prompt and answer) instead of the built-in task's
        /// held-out split; needed for a run that trained on a file, which has no held-out split.
        #[arg(long, value_name = "FILE")]
        data: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Follow a run live: step, reward, accuracy, tokens/s, until it ends.
    Watch {
        /// Run id (default: the newest).
        run: Option<String>,
        /// Seconds between polls.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        #[command(flatten)]
        conn: Conn,
    },
}

/// `r1ctl ckpt …`.
#[derive(Subcommand)]
pub enum Ckpt {
    /// List a run's checkpoints.
    List {
        /// Run id.
        run: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Write a checkpoint's model as a Hugging Face folder (config.json + model.safetensors).
    Export {
        /// Run id.
        run: String,
        /// Checkpoint step.
        step: u64,
        /// Folder to create.
        dir: PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
}

/// A run id as the API names runs (`run-0001`): checked before it goes into a URL, so a path
/// given by mistake (`runs/tiny-grpo`) is answered with what a run id is, not a missing route.
fn run_id(id: &str) -> Result<&str, CallError> {
    let valid = !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && id != "."
        && id != "..";
    if valid {
        Ok(id)
    } else {
        Err(CallError::Usage(format!(
            "`{}` is not a run id: r1d names runs run-0001, run-0002, … (`r1ctl list` shows them); \
             a run's files are under the daemon's state folder, not given by path",
            crate::terminal::printable(id, false)
        )))
    }
}

/// Step records as `r1ctl steps` prints them.
pub(crate) fn print_steps(steps: &[StepRecord], output: Output) {
    if output == Output::Json {
        return print_json(&steps);
    }
    println!(
        "{:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "STEP", "REWARD", "ACCURACY", "FORMAT", "KL", "LENGTH", "SECONDS"
    );
    for s in steps {
        let l = &s.report.learner;
        println!(
            "{:>6} {:>8.3} {:>8.3} {:>8.3} {:>8.4} {:>8.1} {:>8.2}",
            s.step,
            l.reward_mean,
            s.report.accuracy,
            s.report.format,
            l.kl,
            l.completion_len_mean,
            s.seconds
        );
    }
}

/// Sample records as `r1ctl samples` prints them.
pub(crate) fn print_samples(samples: &[SampleRecord], output: Output) {
    if output == Output::Json {
        return print_json(&samples);
    }
    for s in samples {
        println!(
            "── step {}  reward {:.2} (accuracy {:.0}, format {:.0}{})",
            s.step,
            s.reward,
            s.accuracy,
            s.format,
            s.language
                .map_or(String::new(), |l| format!(", language {l:.2}"))
        );
        // Model output: escaped, so it cannot drive the terminal.
        println!("prompt:     {}", printable(s.prompt.trim(), true));
        println!("completion: {}", printable(s.completion.trim(), true));
        for why in &s.why {
            println!("why:        {}", printable(why, true));
        }
    }
}

fn print_json<T: Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("answers serialize")
    );
}

fn run_line(r: &RunInfo) -> String {
    let last = r.last.as_ref().map_or(String::from("-"), |l| {
        format!("reward {:.3}  accuracy {:.3}", l.reward_mean, l.accuracy)
    });
    format!(
        "{:<10} {:<10} {:<10} {:>11} {:<16} {}",
        r.id,
        r.state.name(),
        r.stage,
        progress(r),
        r.name,
        last
    )
}

fn newest(client: &Client) -> Result<String, CallError> {
    let runs: Vec<RunInfo> = client.get("/v1/runs")?;
    runs.last().map(|r| r.id.clone()).ok_or(CallError::Api {
        status: 404,
        code: "not_found".into(),
        message: "no runs yet".into(),
    })
}

fn show_run(r: &RunInfo, output: Output) {
    if output == Output::Json {
        return print_json(r);
    }
    println!("run        {} ({})", r.id, r.name);
    println!("stage      {}", r.stage);
    println!("state      {}", r.state.name());
    if r.total_steps == 0 {
        println!("step       - (the {} stage counts no steps)", r.stage);
    } else {
        println!("step       {}/{}", r.step, r.total_steps);
    }
    println!("output     {}", r.output_dir.display());
    if let Some(m) = &r.message {
        println!("message    {}", printable(m, false));
    }
    if let Some(l) = &r.last {
        println!(
            "last step  reward {:.3}  accuracy {:.3}  format {:.3}  kl {:.4}  length {:.1}  {:.0} tok/s  {:.2}s",
            l.reward_mean, l.accuracy, l.format, l.kl, l.completion_len_mean, l.tokens_per_second, l.seconds
        );
    }
}

fn start(config: &Path, queue: bool, conn: &Conn) -> Result<i32, CallError> {
    let text = std::fs::read_to_string(config)
        .map_err(|e| CallError::Other(format!("reading {}: {e}", config.display())))?;
    // Relative paths in a config mean what they mean to `r1ctl train` run here: from this folder.
    let base_dir = std::env::current_dir().ok();
    let client = Client::new(conn)?;
    let info: RunInfo = client.post(
        "/v1/runs",
        &StartRequest {
            config_toml: text,
            source: config.display().to_string(),
            base_dir,
            queue,
        },
    )?;
    if conn.output == Output::Json {
        print_json(&info);
    } else {
        println!("{}", info.id);
        if info.state == RunState::Queued {
            eprintln!(
                "r1ctl: queued {} ({}); it starts when the runs before it have ended",
                info.id, info.name
            );
        } else {
            eprintln!(
                "r1ctl: started {} ({}); follow it with `r1ctl watch {}`",
                info.id, info.name, info.id
            );
        }
    }
    Ok(0)
}

/// A run's progress as `step/total`, or `-` for a stage that counts no steps (eval, rejection).
fn progress(r: &RunInfo) -> String {
    if r.total_steps == 0 {
        "-".into()
    } else {
        format!("{}/{}", r.step, r.total_steps)
    }
}

/// One plain progress line of `r1ctl watch` (the form used when stdout is not a terminal).
fn watch_line(info: &RunInfo) -> String {
    let mut line = format!("{} {} step {}", info.id, info.state.name(), progress(info));
    if let Some(l) = &info.last {
        line += &format!(
            "  reward {:.3}  accuracy {:.3}  {:.0} tok/s",
            l.reward_mean, l.accuracy, l.tokens_per_second
        );
    }
    line
}

fn watch(run: Option<String>, interval: f64, conn: &Conn) -> Result<i32, CallError> {
    use std::io::IsTerminal;
    let client = Client::new(conn)?;
    let id = match run {
        Some(id) => run_id(&id)?.to_string(),
        None => newest(&client)?,
    };
    let mut info: RunInfo = client.get(&format!("/v1/runs/{id}"))?;
    // A live bar on a terminal; redirected (a file, a pipe, a CI log), one plain line per change
    // of step or state, so the output is readable text rather than nothing.
    let plain = conn.output == Output::Table && !std::io::stdout().is_terminal();
    let bar = if plain {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::with_draw_target(
            Some(info.total_steps),
            indicatif::ProgressDrawTarget::stdout(),
        )
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} steps  {msg}")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    bar.set_prefix(id.clone());
    let mut after = 0;
    let mut last_printed: Option<(u64, RunState)> = None;
    loop {
        if plain && last_printed != Some((info.step, info.state)) {
            println!("{}", watch_line(&info));
            last_printed = Some((info.step, info.state));
        }
        bar.set_position(info.step);
        if let Some(l) = &info.last {
            bar.set_message(format!(
                "{}  reward {:.3}  accuracy {:.3}  {:.0} tok/s",
                info.state.name(),
                l.reward_mean,
                l.accuracy,
                l.tokens_per_second
            ));
        } else {
            bar.set_message(info.state.name().to_string());
        }
        if conn.output == Output::Json {
            let steps: Vec<StepRecord> =
                client.get(&format!("/v1/runs/{id}/steps?after={after}"))?;
            for s in &steps {
                bar.suspend(|| println!("{}", serde_json::to_string(s).expect("serializes")));
                after = s.step;
            }
        }
        if info.state.is_final() {
            bar.finish();
            eprintln!("r1ctl: run {id} {}", info.state.name());
            return Ok(if info.state == RunState::Failed {
                if let Some(m) = &info.message {
                    eprintln!("r1ctl: {}", printable(m, false));
                }
                1
            } else {
                0
            });
        }
        std::thread::sleep(Duration::from_secs_f64(interval.max(0.05)));
        info = client.get(&format!("/v1/runs/{id}"))?;
    }
}

fn call(command: Remote) -> Result<i32, CallError> {
    match command {
        Remote::Start {
            config,
            queue,
            conn,
        } => start(&config, queue, &conn),
        Remote::Status { run, conn } => {
            let client = Client::new(&conn)?;
            let id = match run {
                Some(id) => run_id(&id)?.to_string(),
                None => newest(&client)?,
            };
            let info: RunInfo = client.get(&format!("/v1/runs/{id}"))?;
            show_run(&info, conn.output);
            Ok(0)
        }
        Remote::List { conn } => {
            let runs: Vec<RunInfo> = Client::new(&conn)?.get("/v1/runs")?;
            if conn.output == Output::Json {
                print_json(&runs);
            } else {
                println!(
                    "{:<10} {:<10} {:<10} {:>11} {:<16} last step",
                    "RUN", "STATE", "STAGE", "STEP", "NAME"
                );
                for r in &runs {
                    println!("{}", run_line(r));
                }
            }
            Ok(0)
        }
        Remote::Pause { run, conn } => control(&run, "pause", &conn),
        Remote::Resume { run, conn } => control(&run, "resume", &conn),
        Remote::Stop { run, conn } => control(&run, "stop", &conn),
        Remote::Delete { run, conn } => {
            let client = Client::new(&conn)?;
            let run = run_id(&run)?;
            let response = client
                .request("DELETE", &format!("/v1/runs/{run}"))
                .call()
                .map_err(|e| client.fail(e))?;
            let info: RunInfo = Client::decode(response)?;
            if conn.output == Output::Json {
                print_json(&info);
            } else {
                eprintln!(
                    "r1ctl: deleted {run} ({}, {}); {} removed",
                    info.name,
                    info.state.name(),
                    info.output_dir.display()
                );
            }
            Ok(0)
        }
        Remote::Steps {
            run,
            after,
            limit,
            conn,
        } => {
            let client = Client::new(&conn)?;
            let run = run_id(&run)?;
            let steps: Vec<StepRecord> =
                client.get(&format!("/v1/runs/{run}/steps?after={after}&limit={limit}"))?;
            if conn.output == Output::Json {
                print_json(&steps);
                return Ok(0);
            }
            if steps.is_empty() {
                let info: RunInfo = client.get(&format!("/v1/runs/{run}"))?;
                eprintln!(
                    "r1ctl: {run} has no step records after step {after} (a {} run, {}, step {})",
                    info.stage,
                    info.state.name(),
                    progress(&info)
                );
                return Ok(1);
            }
            print_steps(&steps, Output::Table);
            Ok(0)
        }
        Remote::Samples { run, limit, conn } => {
            let client = Client::new(&conn)?;
            let run = run_id(&run)?;
            let samples: Vec<SampleRecord> =
                client.get(&format!("/v1/runs/{run}/samples?limit={limit}"))?;
            if conn.output == Output::Json {
                print_json(&samples);
            } else if samples.is_empty() {
                // Say why there is nothing, instead of printing nothing and succeeding.
                let info: RunInfo = client.get(&format!("/v1/runs/{run}"))?;
                if matches!(info.stage.as_str(), "grpo" | "preference") {
                    eprintln!(
                        "r1ctl: {run} has recorded no rollouts yet (it is {}, step {})",
                        info.state.name(),
                        progress(&info)
                    );
                } else {
                    eprintln!(
                        "r1ctl: {run} is {} {} run: only grpo and preference runs record \
                         rollouts (see `r1ctl status {run}` for its progress)",
                        if info.stage.starts_with(['a', 'e', 'i', 'o', 'u']) || info.stage == "sft"
                        {
                            "an"
                        } else {
                            "a"
                        },
                        info.stage
                    );
                }
                return Ok(1);
            } else {
                print_samples(&samples, Output::Table);
            }
            Ok(0)
        }
        Remote::Ckpt {
            command: Ckpt::List { run, conn },
        } => {
            let run = run_id(&run)?;
            let list: Vec<SavedCheckpoint> =
                Client::new(&conn)?.get(&format!("/v1/runs/{run}/checkpoints"))?;
            if conn.output == Output::Json {
                print_json(&list);
            } else {
                println!("{:>8} {:>12}  path", "STEP", "BYTES");
                for c in &list {
                    println!("{:>8} {:>12}  {}", c.step, c.bytes, c.path.display());
                }
            }
            Ok(0)
        }
        Remote::Ckpt {
            command:
                Ckpt::Export {
                    run,
                    step,
                    dir,
                    conn,
                },
        } => {
            let client = Client::new(&conn)?;
            let run = run_id(&run)?;
            if dir.exists() {
                return Err(CallError::Other(format!(
                    "{} exists; give a new folder",
                    dir.display()
                )));
            }
            let names = ["config.json", "model.safetensors"];
            let files: Vec<(String, Vec<u8>)> = names
                .iter()
                .map(|name| {
                    client
                        .bytes(&format!("/v1/runs/{run}/checkpoints/{step}/files/{name}"))
                        .map(|b| (name.to_string(), b))
                })
                .collect::<Result<_, _>>()?;
            std::fs::create_dir_all(&dir)
                .map_err(|e| CallError::Other(format!("creating {}: {e}", dir.display())))?;
            let mut written = Vec::new();
            for (name, bytes) in files {
                std::fs::write(dir.join(&name), &bytes).map_err(|e| {
                    CallError::Other(format!("writing {}: {e}", dir.join(&name).display()))
                })?;
                written.push(serde_json::json!({ "name": name, "bytes": bytes.len() }));
            }
            if conn.output == Output::Json {
                print_json(&serde_json::json!({
                    "run": run,
                    "step": step,
                    "dir": dir,
                    "files": written,
                }));
                return Ok(0);
            }
            eprintln!(
                "r1ctl: step {step} of {run} written to {} (Hugging Face layout)",
                dir.display()
            );
            Ok(0)
        }
        Remote::Eval {
            run,
            step,
            k,
            problems,
            greedy,
            temperature,
            top_p,
            seed,
            data,
            conn,
        } => {
            let run = run_id(&run)?;
            // A relative path means what it means here, as for `r1ctl start`.
            let data = match data {
                Some(path) if path.is_relative() => Some(
                    std::env::current_dir()
                        .map_err(|e| CallError::Other(format!("the current folder: {e}")))?
                        .join(path),
                ),
                other => other,
            };
            let request = EvalRequest {
                step,
                k,
                problems,
                greedy,
                temperature,
                top_p,
                seed,
                data,
            };
            let report: EvalReport =
                Client::new(&conn)?.post(&format!("/v1/runs/{run}/eval"), &request)?;
            if conn.output == Output::Json {
                print_json(&report);
            } else {
                println!("scored on: {}", printable(&report.dataset, false));
                println!(
                    "{:<10} {:>6} {:>8} {:>3} {:>8} {:>8} {:>8} {:>8}",
                    "RUN", "STEP", "PROBLEMS", "K", "PASS@1", "CONS@K", "FORMAT", "LENGTH"
                );
                println!(
                    "{:<10} {:>6} {:>8} {:>3} {:>7.1}% {:>7.1}% {:>7.1}% {:>8.1}",
                    report.run,
                    report.step,
                    report.problems,
                    report.k,
                    100.0 * report.pass_at_1,
                    100.0 * report.cons_at_k,
                    100.0 * report.format_rate,
                    report.mean_length
                );
            }
            Ok(0)
        }
        Remote::Watch {
            run,
            interval,
            conn,
        } => watch(run, interval, &conn),
    }
}

fn control(run: &str, action: &str, conn: &Conn) -> Result<i32, CallError> {
    let client = Client::new(conn)?;
    let run = run_id(run)?;
    let info: RunInfo = client.post(&format!("/v1/runs/{run}/{action}"), &serde_json::json!({}))?;
    if conn.output == Output::Json {
        print_json(&info);
    } else if action == "resume" && info.state == RunState::Starting {
        // A failed or stopped run started again: the answer is its new state.
        eprintln!("r1ctl: {run} is starting again from its newest good checkpoint");
    } else if info.state.is_final() {
        // Done at once (a queued run taken out of the queue): the answer is the new state.
        eprintln!(
            "r1ctl: {run} is now {}{}",
            info.state.name(),
            info.message
                .as_deref()
                .map(|m| format!(": {}", printable(m, false)))
                .unwrap_or_default()
        );
    } else {
        eprintln!(
            "r1ctl: {action} sent to {run} (it was {}; it acts after the current step)",
            info.state.name()
        );
    }
    Ok(0)
}

/// Runs a daemon command; returns the exit code (errors are printed here).
pub fn run(command: Remote) -> anyhow::Result<i32> {
    Ok(match call(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("r1ctl: {e}");
            e.exit_code()
        }
    })
}
