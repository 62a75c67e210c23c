//! r1d's Prometheus metrics: one registry, owned by [`Metrics`], rendered at `/metrics`.
//!
//! The daemon reports events (a learner step, a checkpoint, a state change, an HTTP request) and
//! this module turns them into series that follow Prometheus' naming conventions: an `r1_`
//! prefix, base units in the name (`_seconds`, `_bytes`, `_ratio` for 0..1 shares), `_total` on
//! counters, histograms for durations. The full table, with the PromQL behind each dashboard
//! panel, is in docs/observability.md.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::core::Collector;
use prometheus::{
    exponential_buckets, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use r1_actors::judge::sandbox::JudgeCounts;
use r1_kernels::device::{MemoryEstimate, Placement};

use crate::device_metrics::DeviceMetrics;
use crate::series::remove_run;

/// Every state a run can be in; `r1_run_state{run,state}` has one series per state, and exactly
/// one of them is 1 for a run whose state is known.
pub const RUN_STATES: [&str; 8] = [
    "queued", "starting", "running", "paused", "stopping", "stopped", "finished", "failed",
];

/// The `outcome` label values of `r1_sandbox_runs_total`, one per field of [`JudgeCounts`]
/// except the `runs` total, which is their sum.
pub const SANDBOX_OUTCOMES: [&str; 8] = [
    "passed",
    "wrong_answer",
    "runtime_error",
    "unproven",
    "timed_out",
    "output_overflow",
    "sandbox_error",
    "rejected",
];

/// One reward component's statistics over a step's completions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ComponentStat {
    /// The component's name as the reward config spells it: `accuracy`, `format`, `language`, ….
    pub name: String,
    /// Mean of this component's reward over the step's completions.
    pub mean: f64,
    /// Standard deviation of this component's reward over the step's completions.
    pub std: f64,
}

/// One reward model's scores over a preference step's general completions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RewardModelStat {
    /// The model's name in the stage config (`helpfulness`).
    pub name: String,
    /// Mean raw score.
    pub mean: f64,
    /// Population standard deviation of the raw scores.
    pub std: f64,
    /// Share of general prompt groups whose ranking this model decided, 0 to 1.
    pub decided_share: f64,
}

/// Everything one learner step of one run reports; the daemon fills it from the learner's stats
/// and the step's timings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepMetrics {
    /// The run the step belongs to (the `run` label of every per-run series).
    pub run: String,
    /// The pipeline stage the run is in (`r1-zero`, `reasoning-rl`, …), exported one-hot.
    pub stage: String,
    /// The learner step just finished.
    pub step: u64,
    /// Mean total reward over the step's completions.
    pub reward_mean: f64,
    /// Standard deviation of the total reward over the step's completions.
    pub reward_std: f64,
    /// Per-component reward statistics.
    pub components: Vec<ComponentStat>,
    /// Share of completions judged correct, 0 to 1.
    pub accuracy: f64,
    /// KL estimate (k3) against the reference policy, mean per token.
    pub kl: f64,
    /// Policy entropy per completion token, mean.
    pub entropy: f64,
    /// Share of tokens whose probability ratio was clipped, 0 to 1.
    pub clip_fraction: f64,
    /// Global gradient L2 norm before clipping.
    pub grad_norm: f64,
    /// Learning rate of this step's update.
    pub lr: f64,
    /// The step's loss.
    pub loss: f64,
    /// Mean completion length in tokens.
    pub completion_len_mean: f64,
    /// Longest completion in tokens.
    pub completion_len_max: f64,
    /// Share of completions cut at the length limit, 0 to 1.
    pub truncated_fraction: f64,
    /// Share of prompt groups whose rewards were all equal (no signal), 0 to 1.
    pub zero_std_fraction: f64,
    /// Share of completions that re-examine their reasoning ("wait", "let me check"), 0 to 1.
    pub reflection_rate: f64,
    /// Seconds spent in each phase of the step: `sample`, `judge`, `learn`, `checkpoint`, ….
    pub phases: Vec<(String, f64)>,
    /// Wall-clock seconds of the whole step.
    pub step_seconds: f64,
    /// Completion tokens the sampler generated for this step.
    pub tokens_generated: u64,
    /// Tokens the learner trained on in this step.
    pub tokens_trained: u64,
    /// A preference step's reward models (empty in other stages).
    pub reward_models: Vec<RewardModelStat>,
    /// A preference step's (preference rewards counted, mean weighted raw preference reward).
    pub preference: Option<(bool, f64)>,
}

/// A per-run gauge holding the latest value of one learner statistic.
struct LearnerStat {
    /// Its name (`r1_loss`).
    name: &'static str,
    /// The gauge, labelled `run`.
    gauge: GaugeVec,
    /// Reads the statistic out of a step.
    read: ReadStat,
}

/// Reads one statistic out of a step.
type ReadStat = fn(&StepMetrics) -> f64;

/// The learner statistics exported as `r1_<name>{run}` gauges: name, help, accessor.
const LEARNER_STATS: [(&str, &str, ReadStat); 14] = [
    (
        "r1_reward_mean",
        "Mean total reward over the latest step's completions.",
        |m| m.reward_mean,
    ),
    (
        "r1_reward_std",
        "Standard deviation of the total reward over the latest step's completions.",
        |m| m.reward_std,
    ),
    (
        "r1_accuracy_ratio",
        "Share of the latest step's completions judged correct (0 to 1).",
        |m| m.accuracy,
    ),
    (
        "r1_kl_divergence",
        "KL estimate (k3) of the policy against the reference, mean per token, latest step.",
        |m| m.kl,
    ),
    (
        "r1_policy_entropy",
        "Policy entropy per completion token in nats, mean over the latest step.",
        |m| m.entropy,
    ),
    (
        "r1_clip_ratio",
        "Share of the latest step's tokens whose probability ratio was clipped (0 to 1).",
        |m| m.clip_fraction,
    ),
    (
        "r1_grad_norm",
        "Global L2 norm of the latest step's gradient before clipping.",
        |m| m.grad_norm,
    ),
    (
        "r1_learning_rate",
        "Learning rate of the latest step's optimizer update.",
        |m| m.lr,
    ),
    ("r1_loss", "Loss of the latest learner step.", |m| m.loss),
    (
        "r1_completion_length_mean_tokens",
        "Mean completion length in tokens, latest step.",
        |m| m.completion_len_mean,
    ),
    (
        "r1_completion_length_max_tokens",
        "Longest completion in tokens, latest step.",
        |m| m.completion_len_max,
    ),
    (
        "r1_truncated_ratio",
        "Share of the latest step's completions cut at the length limit (0 to 1).",
        |m| m.truncated_fraction,
    ),
    (
        "r1_zero_std_group_ratio",
        "Share of the latest step's prompt groups whose rewards were all equal, which carry no learning signal (0 to 1).",
        |m| m.zero_std_fraction,
    ),
    (
        "r1_reflection_ratio",
        "Share of the latest step's completions that re-examine their own reasoning, the 'aha' signal (0 to 1).",
        |m| m.reflection_rate,
    ),
];

/// Buckets for step and phase durations: 10 ms to about 87 minutes, doubling, so a tiny CPU
/// model's sub-second steps and a large model's multi-minute steps both resolve.
fn duration_buckets() -> Vec<f64> {
    exponential_buckets(0.01, 2.0, 20).expect("constant, valid bucket layout")
}

/// r1d's metrics registry and every series in it.
///
/// Cheap to share (`Arc<Metrics>`): every method takes `&self` and is safe to call from any
/// thread or actor.
pub struct Metrics {
    /// The registry `render` gathers; private so no one registers a metric past this module.
    registry: Registry,
    /// `r1_steps_total{run}`: learner steps observed by this process.
    steps: IntCounterVec,
    /// `r1_step{run}`: the latest learner step number.
    step: IntGaugeVec,
    /// `r1_last_step_timestamp_seconds{run}`: when the latest step was observed, for stall alerts.
    last_step_time: GaugeVec,
    /// `r1_run_stage{run,stage}`: 1 for the stage of the run's latest step.
    stage: IntGaugeVec,
    /// The stage each run's `r1_run_stage` series currently shows, to clear it on a change.
    stages: Mutex<HashMap<String, String>>,
    /// The per-run learner statistic gauges of [`LEARNER_STATS`].
    learner: Vec<LearnerStat>,
    /// `r1_reward_component_mean{run,component}`.
    component_mean: GaugeVec,
    /// `r1_reward_component_std{run,component}`.
    component_std: GaugeVec,
    /// `r1_reward_model_score_mean{run,model}`.
    rm_mean: GaugeVec,
    /// `r1_reward_model_score_std{run,model}`.
    rm_std: GaugeVec,
    /// `r1_reward_model_decided_ratio{run,model}`.
    rm_decided: GaugeVec,
    /// `r1_preference_reward{run}`.
    preference_reward: GaugeVec,
    /// `r1_preference_active{run}`.
    preference_active: IntGaugeVec,
    /// `r1_step_duration_seconds{run}`.
    step_duration: HistogramVec,
    /// `r1_phase_duration_seconds{run,phase}`.
    phase_duration: HistogramVec,
    /// `r1_tokens_generated_total{run}`.
    tokens_generated: IntCounterVec,
    /// `r1_tokens_trained_total{run}`.
    tokens_trained: IntCounterVec,
    /// `r1_run_state{run,state}`: one-hot over [`RUN_STATES`].
    run_state: IntGaugeVec,
    /// `r1_checkpoints_total{run}`.
    checkpoints: IntCounterVec,
    /// `r1_checkpoint_last_timestamp_seconds{run}`: age is `time() - it` in PromQL.
    checkpoint_time: GaugeVec,
    /// `r1_checkpoint_last_step{run}`.
    checkpoint_step: IntGaugeVec,
    /// `r1_checkpoint_last_size_bytes{run}`.
    checkpoint_bytes: IntGaugeVec,
    /// `r1_reward_timeouts_total{component}`.
    reward_timeouts: IntCounterVec,
    /// `r1_sandbox_runs_total{outcome}`.
    sandbox_runs: IntCounterVec,
    /// The judge totals last exported, so `sync_sandbox` adds only what is new.
    sandbox_seen: Mutex<JudgeCounts>,
    /// `r1_http_requests_total{route,method,status}`.
    http_requests: IntCounterVec,
    /// `r1_http_request_duration_seconds{route,method}`.
    http_duration: HistogramVec,
    /// The per-device series (memory estimate, resident memory, step time share).
    devices: DeviceMetrics,
}

/// Registers `collector` on `registry`; a failure is a bug in this module (a duplicate or
/// malformed name), never something a user controls.
fn register<C: Collector + Clone + 'static>(registry: &Registry, collector: C) -> C {
    registry
        .register(Box::new(collector.clone()))
        .expect("r1d metric names are unique and well formed");
    collector
}

/// Builds and registers an `IntCounterVec`.
fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
    register(registry, vec)
}

/// Builds and registers a float `GaugeVec`.
fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let vec = GaugeVec::new(Opts::new(name, help), labels).expect("valid gauge");
    register(registry, vec)
}

/// Builds and registers an `IntGaugeVec`.
fn int_gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let vec = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge");
    register(registry, vec)
}

/// Builds and registers a `HistogramVec`.
fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets);
    let vec = HistogramVec::new(opts, labels).expect("valid histogram");
    register(registry, vec)
}

/// Seconds since the Unix epoch, now.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

/// A duration worth observing: histograms keep sums, so one NaN or negative value would spoil
/// every later quantile and mean of its series.
fn valid_seconds(seconds: f64, what: &str, run: &str) -> bool {
    let valid = seconds.is_finite() && seconds >= 0.0;
    if !valid {
        tracing::warn!(
            run,
            what,
            seconds,
            "duration not recorded: not a finite, non-negative number"
        );
    }
    valid
}

impl Metrics {
    /// Registers every r1d metric and sets `r1_build_info{version,arch,profile}` to 1 and
    /// `r1_start_time_seconds` to now.
    pub fn new(version: &str) -> Self {
        let registry = Registry::new();
        let r = &registry;
        let build_info = int_gauge(
            r,
            "r1_build_info",
            "Always 1; the labels say which r1d build is running.",
            &["version", "arch", "profile"],
        );
        let profile = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        build_info
            .with_label_values(&[version, std::env::consts::ARCH, profile])
            .set(1);
        let start_time = gauge(
            r,
            "r1_start_time_seconds",
            "Unix time at which this r1d process started.",
            &[],
        );
        start_time.with_label_values(&[] as &[&str]).set(unix_now());

        let learner = LEARNER_STATS
            .iter()
            .map(|&(name, help, read)| LearnerStat {
                name,
                gauge: gauge(r, name, help, &["run"]),
                read,
            })
            .collect();

        let metrics = Self {
            steps: counter(
                r,
                "r1_steps_total",
                "Learner steps this r1d process has observed, per run.",
                &["run"],
            ),
            step: int_gauge(r, "r1_step", "The latest learner step of the run.", &["run"]),
            last_step_time: gauge(
                r,
                "r1_last_step_timestamp_seconds",
                "Unix time at which the run's latest learner step finished.",
                &["run"],
            ),
            stage: int_gauge(
                r,
                "r1_run_stage",
                "1 for the pipeline stage of the run's latest learner step.",
                &["run", "stage"],
            ),
            stages: Mutex::new(HashMap::new()),
            learner,
            component_mean: gauge(
                r,
                "r1_reward_component_mean",
                "Mean of one reward component over the latest step's completions.",
                &["run", "component"],
            ),
            component_std: gauge(
                r,
                "r1_reward_component_std",
                "Standard deviation of one reward component over the latest step's completions.",
                &["run", "component"],
            ),
            rm_mean: gauge(
                r,
                "r1_reward_model_score_mean",
                "Mean raw score of one reward model over the latest preference step's general completions.",
                &["run", "model"],
            ),
            rm_std: gauge(
                r,
                "r1_reward_model_score_std",
                "Standard deviation of one reward model's raw scores over the latest preference step's general completions.",
                &["run", "model"],
            ),
            rm_decided: gauge(
                r,
                "r1_reward_model_decided_ratio",
                "Share of the latest preference step's general prompt groups whose ranking this reward model decided (0 to 1).",
                &["run", "model"],
            ),
            preference_reward: gauge(
                r,
                "r1_preference_reward",
                "Mean weighted raw reward-model score of the latest preference step's general completions.",
                &["run"],
            ),
            preference_active: int_gauge(
                r,
                "r1_preference_active",
                "1 when preference rewards counted in the run's latest step, 0 before they switch on.",
                &["run"],
            ),
            step_duration: histogram(
                r,
                "r1_step_duration_seconds",
                "Wall-clock duration of whole learner steps.",
                &["run"],
                duration_buckets(),
            ),
            phase_duration: histogram(
                r,
                "r1_phase_duration_seconds",
                "Wall-clock duration of each phase of a learner step (sample, judge, learn, checkpoint, ...).",
                &["run", "phase"],
                duration_buckets(),
            ),
            tokens_generated: counter(
                r,
                "r1_tokens_generated_total",
                "Completion tokens generated by the sampler.",
                &["run"],
            ),
            tokens_trained: counter(
                r,
                "r1_tokens_trained_total",
                "Tokens the learner trained on.",
                &["run"],
            ),
            run_state: int_gauge(
                r,
                "r1_run_state",
                "1 for the run's current state, 0 for every other state.",
                &["run", "state"],
            ),
            checkpoints: counter(
                r,
                "r1_checkpoints_total",
                "Checkpoints written and made durable by this r1d process.",
                &["run"],
            ),
            checkpoint_time: gauge(
                r,
                "r1_checkpoint_last_timestamp_seconds",
                "Unix time of the run's latest durable checkpoint; its age is time() minus this.",
                &["run"],
            ),
            checkpoint_step: int_gauge(
                r,
                "r1_checkpoint_last_step",
                "Learner step of the run's latest durable checkpoint.",
                &["run"],
            ),
            checkpoint_bytes: int_gauge(
                r,
                "r1_checkpoint_last_size_bytes",
                "Size on disk of the run's latest checkpoint.",
                &["run"],
            ),
            reward_timeouts: counter(
                r,
                "r1_reward_timeouts_total",
                "Rewards that did not answer in time and scored 0, per reward component.",
                &["component"],
            ),
            sandbox_runs: counter(
                r,
                "r1_sandbox_runs_total",
                "Programs judged in the code sandbox, by outcome; a rising sandbox_error means the machine, not the model, fails.",
                &["outcome"],
            ),
            sandbox_seen: Mutex::new(JudgeCounts::default()),
            http_requests: counter(
                r,
                "r1_http_requests_total",
                "HTTP API requests answered, by route template, method and status code.",
                &["route", "method", "status"],
            ),
            http_duration: histogram(
                r,
                "r1_http_request_duration_seconds",
                "Time to answer HTTP API requests, by route template and method.",
                &["route", "method"],
                prometheus::DEFAULT_BUCKETS.to_vec(),
            ),
            devices: DeviceMetrics::new(r),
            registry,
        };
        // Every outcome exists from the start at 0, so rates are 0 rather than absent.
        for outcome in SANDBOX_OUTCOMES {
            metrics.sandbox_runs.with_label_values(&[outcome]);
        }
        metrics
    }

    /// Records one finished learner step: counters advance, every statistic's gauge takes the
    /// step's value, durations go into the step and phase histograms.
    ///
    /// Statistics are exported as given, NaN included (a NaN loss is news); durations that are
    /// negative or not finite are skipped with a warning, as they would spoil the histograms.
    pub fn observe_step(&self, m: &StepMetrics) {
        let run = m.run.as_str();
        self.steps.with_label_values(&[run]).inc();
        // Saturate: a step number past i64::MAX is not a real run, but must not wrap negative.
        self.step
            .with_label_values(&[run])
            .set(i64::try_from(m.step).unwrap_or(i64::MAX));
        self.last_step_time
            .with_label_values(&[run])
            .set(unix_now());
        self.set_stage(run, &m.stage);
        for stat in &self.learner {
            stat.gauge.with_label_values(&[run]).set((stat.read)(m));
        }
        for component in &m.components {
            let labels = [run, component.name.as_str()];
            self.component_mean
                .with_label_values(&labels)
                .set(component.mean);
            self.component_std
                .with_label_values(&labels)
                .set(component.std);
        }
        for model in &m.reward_models {
            let labels = [run, model.name.as_str()];
            self.rm_mean.with_label_values(&labels).set(model.mean);
            self.rm_std.with_label_values(&labels).set(model.std);
            self.rm_decided
                .with_label_values(&labels)
                .set(model.decided_share);
        }
        if let Some((active, reward)) = m.preference {
            self.preference_reward.with_label_values(&[run]).set(reward);
            self.preference_active
                .with_label_values(&[run])
                .set(i64::from(active));
        }
        if valid_seconds(m.step_seconds, "step", run) {
            self.step_duration
                .with_label_values(&[run])
                .observe(m.step_seconds);
        }
        for (phase, seconds) in &m.phases {
            if valid_seconds(*seconds, phase, run) {
                self.phase_duration
                    .with_label_values(&[run, phase.as_str()])
                    .observe(*seconds);
            }
        }
        self.tokens_generated
            .with_label_values(&[run])
            .inc_by(m.tokens_generated);
        self.tokens_trained
            .with_label_values(&[run])
            .inc_by(m.tokens_trained);
        self.devices.observe_step(run, &m.phases, m.step_seconds);
    }

    /// Records where a run's workers run and its memory estimate by device and category.
    pub fn set_run_devices(&self, run: &str, placement: &Placement, estimate: &MemoryEstimate) {
        self.devices.set_run(run, placement, estimate);
    }

    /// Progress of a stage without GRPO steps (sft, rejection, distill, eval): `done` of `total`
    /// units of work (`total` 0: not a counted unit). Counted units move `r1_step`,
    /// `r1_steps_total` and `r1_last_step_timestamp_seconds`; the statistics named `loss`,
    /// `learning_rate` and `grad_norm` set `r1_loss`, `r1_learning_rate` and `r1_grad_norm`.
    pub fn observe_progress(
        &self,
        run: &str,
        stage: &str,
        done: u64,
        total: u64,
        stats: &[(String, f64)],
    ) {
        self.set_stage(run, stage);
        if total > 0 {
            self.steps.with_label_values(&[run]).inc();
            self.step
                .with_label_values(&[run])
                .set(i64::try_from(done).unwrap_or(i64::MAX));
            self.last_step_time
                .with_label_values(&[run])
                .set(unix_now());
        }
        for (name, value) in stats {
            let metric = match name.as_str() {
                "loss" => "r1_loss",
                "learning_rate" => "r1_learning_rate",
                "grad_norm" => "r1_grad_norm",
                _ => continue,
            };
            if let Some(stat) = self.learner.iter().find(|s| s.name == metric) {
                stat.gauge.with_label_values(&[run]).set(*value);
            }
        }
    }

    /// Makes `stage` the run's one stage in `r1_run_stage`.
    fn set_stage(&self, run: &str, stage: &str) {
        let mut stages = self
            .stages
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(previous) = stages.get(run) {
            if previous == stage {
                return;
            }
            // The series may already be gone (forget_run); either way it must not stay at 1.
            let _ = self.stage.remove_label_values(&[run, previous.as_str()]);
        }
        self.stage.with_label_values(&[run, stage]).set(1);
        stages.insert(run.to_owned(), stage.to_owned());
    }

    /// Sets the run's state: `r1_run_state{run,state}` becomes 1 for `state` and 0 for every
    /// other state of [`RUN_STATES`]. Also creates the run's `r1_steps_total` at 0, so the run
    /// appears in the dashboard's run selector before its first step.
    ///
    /// A state outside [`RUN_STATES`] is a bug in the caller: it is logged, and every state of
    /// the run reads 0 (unknown) rather than keeping a stale one.
    pub fn set_run_state(&self, run: &str, state: &str) {
        if !RUN_STATES.contains(&state) {
            tracing::warn!(run, state, known = ?RUN_STATES, "unknown run state; exporting none");
        }
        for known in RUN_STATES {
            self.run_state
                .with_label_values(&[run, known])
                .set(i64::from(known == state));
        }
        self.steps.with_label_values(&[run]).inc_by(0);
    }

    /// Records a durable checkpoint of `run` at learner step `step`, finished at `unix_seconds`
    /// (seconds since the epoch), `bytes` large on disk.
    pub fn observe_checkpoint(&self, run: &str, step: u64, unix_seconds: f64, bytes: u64) {
        self.checkpoints.with_label_values(&[run]).inc();
        self.checkpoint_time
            .with_label_values(&[run])
            .set(unix_seconds);
        self.checkpoint_step
            .with_label_values(&[run])
            .set(i64::try_from(step).unwrap_or(i64::MAX));
        self.checkpoint_bytes
            .with_label_values(&[run])
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Counts one reward of `component` that did not answer in time (and so scored 0).
    pub fn observe_reward_timeout(&self, component: &str) {
        self.reward_timeouts.with_label_values(&[component]).inc();
    }

    /// Brings `r1_sandbox_runs_total{outcome}` up to the code judge's running totals
    /// (`CodeJudge::counts()`); call it before each render or after each judged batch.
    ///
    /// Only the growth since the previous call is added, so counters never go backwards. When a
    /// total is below the one seen before, the judge was replaced by a new one counting from 0,
    /// and its whole total is new.
    pub fn sync_sandbox(&self, counts: &JudgeCounts) {
        let mut seen = self
            .sandbox_seen
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let pairs = [
            (counts.passes, seen.passes),
            (counts.wrong_answers, seen.wrong_answers),
            (counts.runtime_errors, seen.runtime_errors),
            (counts.unproven, seen.unproven),
            (counts.timeouts, seen.timeouts),
            (counts.output_overflows, seen.output_overflows),
            (counts.sandbox_errors, seen.sandbox_errors),
            (counts.rejected, seen.rejected),
        ];
        for (outcome, (now, before)) in SANDBOX_OUTCOMES.iter().zip(pairs) {
            let new = if now >= before { now - before } else { now };
            self.sandbox_runs.with_label_values(&[*outcome]).inc_by(new);
        }
        *seen = *counts;
    }

    /// Records one answered HTTP request. `route` is the route's template (`/runs/{id}`), never
    /// the raw path, so the number of series stays bounded; unmatched paths should share one
    /// route name such as `unmatched`.
    pub fn observe_http(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let status = status.to_string();
        self.http_requests
            .with_label_values(&[route, method, status.as_str()])
            .inc();
        if valid_seconds(seconds, "http", route) {
            self.http_duration
                .with_label_values(&[route, method])
                .observe(seconds);
        }
    }

    /// Removes every series of `run` (a run deleted from the daemon), so dashboards and the run
    /// selector stop listing it.
    pub fn forget_run(&self, run: &str) {
        remove_run(&self.steps, run);
        remove_run(&self.tokens_generated, run);
        remove_run(&self.tokens_trained, run);
        remove_run(&self.checkpoints, run);
        for vec in [
            &self.step,
            &self.stage,
            &self.run_state,
            &self.checkpoint_step,
            &self.checkpoint_bytes,
            &self.preference_active,
        ] {
            remove_run(vec, run);
        }
        let float_gauges = [
            &self.last_step_time,
            &self.component_mean,
            &self.component_std,
            &self.checkpoint_time,
            &self.rm_mean,
            &self.rm_std,
            &self.rm_decided,
            &self.preference_reward,
        ];
        for vec in float_gauges
            .into_iter()
            .chain(self.learner.iter().map(|stat| &stat.gauge))
        {
            remove_run(vec, run);
        }
        remove_run(&self.step_duration, run);
        remove_run(&self.phase_duration, run);
        self.devices.forget_run(run);
        self.stages
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .remove(run);
    }

    /// Every metric in the Prometheus text exposition format 0.0.4, for `GET /metrics`
    /// (content type [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        self.devices.refresh();
        let families = self.registry.gather();
        let mut text = String::new();
        if let Err(error) = TextEncoder::new().encode_utf8(&families, &mut text) {
            // Only a malformed metric family can fail to encode: a bug here, not user input.
            // Scrapers see the exposition cut short and a comment saying why.
            tracing::error!(%error, "rendering metrics failed");
            text.push_str(&format!("# r1d: rendering metrics failed: {error}\n"));
        }
        text
    }
}

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}
