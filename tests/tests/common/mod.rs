//! Shared by the end-to-end tests: a real `r1d` process on a free port with its own state folder,
//! `r1ctl` pointed at it, and a tiny model + job config to run.
//!
//! The binaries come from the target folder these tests were built into: `cargo test --workspace`
//! (scripts/test.sh) builds them. Running only this crate's tests needs `cargo build --bins` first.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use r1_config::testkit::JobToml;
use r1_kernels::model::tiny::TinyModel;
use r1_kernels::model::Model;
use r1_kernels::tokenizer::ByteTokenizer;

/// A binary of the workspace, next to this test's `deps` folder.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (cargo build --bins, or run scripts/test.sh)",
        path.display()
    );
    path
}

/// A tiny random byte-level model directory.
pub fn tiny_model(dir: &Path) -> PathBuf {
    let model_dir = dir.join("model");
    TinyModel::byte().seed(1).save(&model_dir).unwrap();
    model_dir
}

/// A GRPO job on the tiny model: `steps` steps, a checkpoint every `every` steps.
fn grpo_job(dir: &Path, steps: u64, every: u64) -> JobToml {
    let model = tiny_model(dir);
    JobToml::grpo(&model, steps)
        .set("run", "name", "e2e")
        .set("run", "seed", 5)
        // r1d keeps run outputs under its state folder; output_dir is for `r1ctl train`.
        .set("run", "output_dir", "runs/e2e")
        .set("checkpoint", "every_steps", every as i64)
        .set("checkpoint", "keep_last", 3)
}

/// [`grpo_job`] written to `dir/job.toml`.
pub fn job_config(dir: &Path, steps: u64, every: u64) -> PathBuf {
    grpo_job(dir, steps, every)
        .write(&dir.join("job.toml"))
        .unwrap()
}

/// A preference-RL job on the tiny model: `steps` steps of 2 reasoning (arithmetic) and 2 general
/// prompts, two random tiny reward models (`helpful` reads the summary, `harmless` the whole
/// response), preference rewards from step 1, a checkpoint every `every` steps.
pub fn preference_job_config(dir: &Path, steps: u64, every: u64) -> PathBuf {
    for (name, seed) in [("helpful", 11), ("harmless", 12)] {
        TinyModel::byte()
            .seed(seed)
            .save_reward_model(&dir.join(name), Some(ByteTokenizer::EOS))
            .unwrap();
    }
    std::fs::write(
        dir.join("general.jsonl"),
        "{\"prompt\": \"say hi\"}\n{\"prompt\": \"say bye\"}\n{\"prompt\": \"thank Ada\"}\n",
    )
    .unwrap();
    let reward_model = |name: &str, view: &str| {
        vec![
            ("name", name.into()),
            ("path", dir.join(name).display().to_string().into()),
            ("tokenizer", "byte".into()),
            ("view", view.into()),
            ("max_tokens", 64.into()),
        ]
    };
    grpo_job(dir, steps, every)
        .set("run", "stage", "preference")
        .set("grpo", "prompts_per_step", 4)
        .set("preference", "preference_from_step", 1)
        .set_path("preference", "general_prompts", &dir.join("general.jsonl"))
        .set("preference", "general_share", 0.5)
        .set("preference.normalisation", "kind", "running")
        .set("preference.normalisation", "momentum", 0.5)
        .table(
            "preference.reward_models",
            true,
            reward_model("helpful", "summary"),
        )
        .table(
            "preference.reward_models",
            true,
            reward_model("harmless", "whole"),
        )
        .write(&dir.join("preference.toml"))
        .unwrap()
}

/// Runs `r1ctl train CONFIG` in `dir` (relative output paths land there) and loads the model it
/// saved in `dir/<final_dir>`: the in-process result a daemon run is compared with.
pub fn train_in_process(config: &Path, dir: &Path, final_dir: &str) -> Model {
    let out = Command::new(bin("r1ctl"))
        .arg("train")
        .arg(config)
        .current_dir(dir)
        .output()
        .expect("running r1ctl train");
    assert!(
        out.status.success(),
        "r1ctl train: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    r1_kernels::model::load_model_dir(&dir.join(final_dir)).expect("the final model")
}

/// The daemon `d` finishes run `id` at step `steps`, having resumed it from a checkpoint;
/// returns the finished run.
pub fn finishes_resumed(d: &Daemon, id: &str, steps: u64) -> serde_json::Value {
    let done = d.wait_for(id, Duration::from_secs(120), |r| r["state"] == "finished");
    assert_eq!(done["step"], steps, "{done}");
    assert!(
        done["message"]
            .as_str()
            .unwrap_or("")
            .contains("resumed from"),
        "{done}"
    );
    done
}

/// The daemon `d` finishes run `id` (of `config`, written in `dir`) at step `steps` after
/// resuming from a checkpoint, on the weights `r1ctl train CONFIG` reaches in `dir`.
pub fn finishes_resumed_on_r1ctl_train_weights(
    d: &Daemon,
    id: &str,
    config: &Path,
    dir: &Path,
    steps: u64,
) {
    finishes_resumed(d, id, steps);
    let in_process = train_in_process(config, dir, "runs/e2e/final");
    let daemon = d.last_checkpoint(id);
    assert_eq!(daemon.state.step, steps);
    assert!(
        daemon.model.params == in_process.params,
        "the interrupted r1d run and r1ctl train ended with different weights"
    );
}

/// A running `r1d`.
pub struct Daemon {
    pub state: PathBuf,
    pub child: Child,
    pub addr: String,
    pub token: String,
}

impl Daemon {
    /// Starts a run with `r1ctl start CONFIG` from the folder `cwd` (its relative paths resolve
    /// there); returns the run id.
    pub fn start_run_from(&self, config: &Path, cwd: &Path) -> String {
        let out = Command::new(bin("r1ctl"))
            .arg("start")
            .arg(config)
            .env("R1_STATE_DIR", &self.state)
            .current_dir(cwd)
            .output()
            .expect("running r1ctl start");
        assert!(
            out.status.success(),
            "r1ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The run's newest recorded checkpoint, loaded.
    pub fn last_checkpoint(&self, id: &str) -> r1_actors::keeper::Checkpoint {
        let checkpoints = self.get(&format!("/v1/runs/{id}/checkpoints")).unwrap();
        let last = checkpoints
            .as_array()
            .unwrap()
            .last()
            .expect("a recorded checkpoint")
            .clone();
        r1_actors::keeper::load_checkpoint(Path::new(last["path"].as_str().unwrap())).unwrap()
    }

    /// Starts `r1d` on a free port with `state` as its state folder; waits for /healthz.
    pub fn start(state: &Path) -> Daemon {
        Daemon::start_with(state, &[], None)
    }

    /// [`Daemon::start`] with more command-line arguments, and optionally a soft limit on open
    /// descriptors set before r1d runs (the hard limit stays as it is).
    pub fn start_with(state: &Path, extra: &[&str], nofile_soft: Option<u64>) -> Daemon {
        let _ = std::fs::remove_file(state.join("r1d.addr"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(state.with_extension("log"))
            .unwrap();
        let mut command = Command::new(bin("r1d"));
        command
            .args(["--listen", "127.0.0.1:0", "--state-dir"])
            .arg(state)
            .args(extra)
            .env_remove("NOTIFY_SOCKET")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(soft) = nofile_soft {
            use std::os::unix::process::CommandExt;
            // SAFETY: between fork and exec only async-signal-safe calls: getrlimit, setrlimit.
            unsafe {
                command.pre_exec(move || {
                    let mut limit = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    limit.rlim_cur = soft.min(limit.rlim_max);
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command.spawn().unwrap();
        let began = Instant::now();
        let addr = loop {
            if let Ok(text) = std::fs::read_to_string(state.join("r1d.addr")) {
                if text.ends_with('\n') {
                    break text.trim().to_string();
                }
            }
            assert!(
                began.elapsed() < Duration::from_secs(30),
                "r1d did not start: {}",
                std::fs::read_to_string(state.with_extension("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let token = std::fs::read_to_string(state.join("token"))
            .unwrap()
            .trim()
            .to_string();
        let daemon = Daemon {
            state: state.to_path_buf(),
            child,
            addr,
            token,
        };
        while ureq::get(&daemon.url("/healthz")).call().is_err() {
            assert!(
                began.elapsed() < Duration::from_secs(30),
                "r1d never answered /healthz"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        daemon
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// GET with the token; the JSON body, or (status, body) for an error status.
    pub fn get(&self, path: &str) -> Result<serde_json::Value, (u16, serde_json::Value)> {
        answer(
            ureq::get(&self.url(path))
                .set("Authorization", &format!("Bearer {}", self.token))
                .call(),
        )
    }

    /// POST a JSON body with the token.
    pub fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, (u16, serde_json::Value)> {
        answer(
            ureq::post(&self.url(path))
                .set("Authorization", &format!("Bearer {}", self.token))
                .send_json(body.clone()),
        )
    }

    /// Starts a run of `config` through r1ctl; returns its id.
    pub fn start_run(&self, config: &Path) -> String {
        let out = self.r1ctl(&["start".as_ref(), config.as_os_str()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Runs r1ctl against this daemon.
    pub fn r1ctl(&self, args: &[&std::ffi::OsStr]) -> Output {
        Command::new(bin("r1ctl"))
            .args(args)
            .env("R1_STATE_DIR", &self.state)
            .env_remove("R1_ADDR")
            .env_remove("R1_TOKEN_FILE")
            .output()
            .unwrap()
    }

    /// The run's record.
    pub fn run(&self, id: &str) -> serde_json::Value {
        self.get(&format!("/v1/runs/{id}")).unwrap()
    }

    /// Waits until `done` holds for the run's record.
    pub fn wait_for(
        &self,
        id: &str,
        timeout: Duration,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let began = Instant::now();
        loop {
            let run = self.run(id);
            if done(&run) {
                return run;
            }
            assert!(began.elapsed() < timeout, "timed out; run is {run}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, and reap.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM; waits for the exit and returns its status and how long it took.
    pub fn terminate(mut self) -> (std::process::ExitStatus, Duration) {
        let began = Instant::now();
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        (status, began.elapsed())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn answer(
    r: Result<ureq::Response, ureq::Error>,
) -> Result<serde_json::Value, (u16, serde_json::Value)> {
    match r {
        Ok(response) => Ok(response.into_json().unwrap_or(serde_json::Value::Null)),
        Err(ureq::Error::Status(code, response)) => Err((
            code,
            response.into_json().unwrap_or(serde_json::Value::Null),
        )),
        Err(e) => panic!("transport error: {e}"),
    }
}

/// SHA-256 of a file, hex.
pub fn sha256(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// VmRSS and VmHWM (peak) of process `pid`, in KiB, from /proc/PID/status.
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}
