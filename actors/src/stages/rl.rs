//! One RL step and the one run loop around it, for every RL stage — R1-Zero GRPO, reasoning RL,
//! preference RL — and both drivers: `r1ctl train` (in-process workers, `stages::rl_local`) and
//! r1d (actor workers, `service::actor_workers`).
//!
//! Follow one rollout here, top to bottom: [`run_rl`] loads the starting point
//! ([`StepWorkers::load`]), then between steps asks the [`RunControl`] whether to go on, and calls
//! [`rl_step`]: prompts from the plan → template → [`StepWorkers::generate`] → reward phase
//! ([`StepWorkers::reward`]: rule judge ‖ language scorer, and in a preference run the reward
//! models on the general prompts, combined and normalised; optionally dynamic sampling rounds)
//! → [`StepWorkers::learn`] → [`StepWorkers::save`] when a checkpoint is due. What the workers
//! are — direct calls or actix messages with timeouts — is the driver's only choice; every number
//! is decided here, so both drivers take the same steps.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use r1_kernels::device::Placement;
use r1_kernels::sample::{Completion, GenerationRequest};
use r1_kernels::tokenizer::Tokenizer;

use crate::judge::reward::{CodeSandbox, RewardItem, RewardReport, RewardRules};
pub use crate::keeper::StartPoint;
use crate::keeper::{SavedCheckpoint, TrainerState};
use crate::learner::{GrpoStepStats, LearnerConfig, Rollout};
use crate::messages::{PhaseTimes, RunState, SampleRecord, StepRecord};
use crate::reward_model::RewardModelScorer;
use crate::reward_normaliser::RewardNormaliser;
use crate::stages::grpo::{
    group_requests, mean_std, reward_item, rollouts, round_seed, sampling_for, stage_rules,
    step_report, DynamicSampling, GrpoStepReport, PhaseSeconds, StageError, StageSettings,
};
use crate::stages::job::{ModelSpec, RunError, RunSpec};
use crate::stages::preference::{
    combine_rewards, end_markers, model_items, preference_report, split_by_kind, step_prompts,
    PreferenceSettings, StagePrompt,
};
use crate::stages::problem::StageProblem;

/// Rollouts kept per step for people to read (r1d stores them; `r1ctl train` writes them to
/// `<output_dir>/samples.jsonl`).
pub const SAMPLES_PER_STEP: usize = 4;

/// How long a reward worker may take on one step before its items score 0 (actor workers).
pub const REWARD_TIMEOUT: Duration = Duration::from_secs(600);

/// The sampling seed of step `step` (0-based) of a run seeded `seed`: the one formula, so a
/// resumed run samples exactly as one that never stopped.
pub fn step_seed(seed: u64, step: u64) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ step
}

/// What a preference-RL run adds to its plan: the reward models and the general prompts.
pub struct PreferencePlan {
    /// Reward models, normalisation, switch-on step (`settings.stage` equals the plan's).
    pub settings: PreferenceSettings,
    /// The loaded reward models, in `settings.reward_models` order.
    pub scorers: Arc<Vec<RewardModelScorer>>,
    /// The general prompts, taken in order, `n_general` per step, cycling.
    pub general: Vec<String>,
    /// Reasoning prompts per step (from the plan's problems).
    pub n_reasoning: usize,
    /// General prompts per step.
    pub n_general: usize,
}

/// Everything an RL run needs, resolved from its job config once (tokenizer, prompts and reward
/// models read): built by `GrpoJob::plan` / `PreferenceJob::plan` for `r1ctl train` and r1d alike.
#[derive(Clone)]
pub struct RlPlan {
    /// Seed, output directory (and so the checkpoint folder), checkpoint policy, config hash,
    /// optional early stop.
    pub run: RunSpec,
    /// The starting model.
    pub model: ModelSpec,
    /// Its tokenizer.
    pub tokenizer: Arc<Tokenizer>,
    /// The training prompts (reasoning problems), taken in order from the data cursor, cycling.
    pub problems: Arc<Vec<StageProblem>>,
    /// Template, sampling, reward rules, decode batch.
    pub settings: StageSettings,
    /// The learner's settings (group size, minibatches, objective, schedule…).
    pub learner: LearnerConfig,
    /// Steps of the stage.
    pub steps: u64,
    /// Prompts per step.
    pub prompts_per_step: usize,
    /// Dynamic sampling (DAPO): at most this many extra rounds per step replace groups whose
    /// rewards are all equal with fresh prompts (0: off); the data cursor then advances by the
    /// prompts each step consumed and is saved in every checkpoint.
    pub dynamic_sampling: usize,
    /// Rollouts kept per step for people to read.
    pub samples_per_step: usize,
    /// How long a reward worker may take on one step before its items score 0.
    pub reward_timeout: Duration,
    /// Where code items run.
    pub sandbox: Arc<CodeSandbox>,
    /// The device of each worker (`[devices]` resolved against this machine): what the driver
    /// hands the sampler, the learner replicas and the reward-model scorer.
    pub placement: Placement,
    /// Set for a preference-RL run: reasoning prompts get the rule rewards, general ones the
    /// reward models (see `stages::preference`).
    pub preference: Option<Arc<PreferencePlan>>,
}

impl RlPlan {
    /// The step the run ends at: the config's steps, or `run.stop_at` when earlier.
    pub fn total_steps(&self) -> u64 {
        self.run.stop_at.unwrap_or(self.steps).min(self.steps)
    }

    /// `n` problems of the training stream from `cursor`, wrapping around the pool (none when the
    /// pool is empty).
    pub fn take(&self, cursor: u64, n: usize) -> Vec<StageProblem> {
        let len = self.problems.len();
        if len == 0 {
            return Vec::new();
        }
        let start = (cursor % len as u64) as usize;
        (0..n)
            .map(|i| self.problems[(start + i) % len].clone())
            .collect()
    }

    /// The data cursor after `step` steps of a preference run (its prompts follow the step).
    fn preference_cursor(&self, preference: &PreferencePlan, step: u64) -> u64 {
        step * preference.n_reasoning as u64
    }

    /// Whether the step that ends at `new_step` writes a checkpoint: every
    /// `checkpoint.every_steps`, and at the run's last step.
    pub fn checkpoint_due(&self, new_step: u64) -> bool {
        new_step.is_multiple_of(self.run.checkpoint.every_steps.max(1))
            || new_step >= self.total_steps()
    }
}

/// What the reward phase's workers answered for one batch.
#[derive(Debug, Clone, Default)]
pub struct Rewards {
    /// The rule judge's report of each item, language share included.
    pub reports: Vec<RewardReport>,
    /// Each reward model's raw scores of its items (`None`: it did not answer in time, or had
    /// nothing to score).
    pub model_scores: Vec<Option<Vec<f32>>>,
    /// Workers that did not answer in time (`judge`, `language`, `reward_model:<name>`): their
    /// items scored 0.
    pub timeouts: Vec<String>,
}

/// What the learner did in one update.
#[derive(Debug, Clone)]
pub struct LearnedStep {
    /// Statistics of the update.
    pub stats: GrpoStepStats,
    /// Optimizer steps taken so far.
    pub optimizer_step: u64,
}

/// The workers of an RL step. Synchronous: the in-process implementation calls the engine, the
/// actor implementation sends the actix messages and blocks on their replies (on the run's own
/// thread, never an event loop).
pub trait StepWorkers {
    /// Loads the policy: the first of `candidates` (checkpoint folders, newest first) that
    /// verifies ([`crate::keeper::resume_point`]), else the plan's model.
    fn load(&mut self, candidates: &[PathBuf]) -> Result<StartPoint, StageError>;

    /// Samples every request's group with the current policy; completions ordered by (request,
    /// sample).
    fn generate(&mut self, requests: Vec<GenerationRequest>)
        -> Result<Vec<Completion>, StageError>;

    /// The reward phase: the rule judge and the language scorer on `items` under `rules`, and
    /// reward model `m` on `models[m]` (empty: no model scores this batch) — one call, so the
    /// actor workers run them all at once.
    fn reward(
        &mut self,
        items: Arc<Vec<RewardItem>>,
        rules: RewardRules,
        models: Vec<Vec<(String, String)>>,
    ) -> Result<Rewards, StageError>;

    /// One GRPO update on whole groups of rollouts; the sampler uses the new weights from now on.
    fn learn(&mut self, rollouts: Vec<Rollout>) -> Result<LearnedStep, StageError>;

    /// What the sampler held at its largest generation since the last call, by category
    /// (its copy of the weights where it keeps one, the KV cache, the decoding buffers); taken,
    /// so each step reports its own.
    fn sampler_memory(&mut self) -> Vec<r1_kernels::device::memory::MemoryPart>;

    /// Writes a checkpoint of the learner with `state` and prunes old ones
    /// ([`crate::keeper::write_checkpoint`]).
    fn save(&mut self, state: TrainerState) -> Result<SavedCheckpoint, StageError>;
}

/// The counters a run carries from step to step (all saved in every checkpoint).
#[derive(Debug, Clone, Default)]
pub struct RlState {
    /// Steps taken.
    pub step: u64,
    /// Optimizer steps taken.
    pub optimizer_step: u64,
    /// Next prompt of the training stream.
    pub cursor: u64,
    /// A preference run's running moments of each reward model's scores.
    pub normaliser: RewardNormaliser,
}

impl RlState {
    /// What a checkpoint of this state records besides the weights.
    pub fn trainer_state(&self, plan: &RlPlan) -> TrainerState {
        TrainerState {
            step: self.step,
            optimizer_step: self.optimizer_step,
            data_cursor: self.cursor,
            seed: plan.run.seed,
            config_hash: plan.run.config_hash.clone(),
            reward_normaliser: plan.preference.is_some().then(|| self.normaliser.clone()),
        }
    }
}

/// What one step produced.
#[derive(Debug, Clone)]
pub struct StepDone {
    /// The step's record (report, reward components, phases, tokens, timeouts, cursor).
    pub record: StepRecord,
    /// Rollouts kept for people to read: the first of each group.
    pub samples: Vec<SampleRecord>,
    /// The checkpoint written at the end of the step, when one was due.
    pub checkpoint: Option<SavedCheckpoint>,
}

/// The reward phase's outcome: everything the learner and the step record need.
struct Rewarded {
    /// Encoded prompt of each group.
    prompts: Vec<Vec<u32>>,
    /// Every completion, grouped.
    completions: Vec<Completion>,
    /// The reward each completion trains on.
    rewards: Vec<f64>,
    /// Workers that did not answer in time.
    timeouts: Vec<String>,
    /// Completion tokens sampled (dropped groups included).
    tokens_generated: usize,
    /// The data cursor after the step.
    cursor: u64,
    /// What only one kind of run has.
    kind: RewardedKind,
}

enum RewardedKind {
    /// Rule rewards (GRPO, reasoning RL): the problems of the groups kept and their reports.
    Rules {
        problems: Vec<StageProblem>,
        reports: Vec<RewardReport>,
        dynamic: crate::stages::grpo::DynamicSamplingStats,
    },
    /// Preference RL: the step's prompts, which completions went to the rules (`reasoning`,
    /// with their reports `rule`) and which to the reward models (`general`).
    Preference {
        prompts: Vec<StagePrompt>,
        reasoning: Vec<usize>,
        rule: Vec<RewardReport>,
        general: Vec<usize>,
        stats: crate::stages::preference::PreferenceStats,
    },
}

/// One RL step from `state`, sampled with `seed`: sample → reward → learn → checkpoint when
/// `checkpoint_due`. Advances `state` (step, optimizer step, data cursor, normaliser).
pub fn rl_step(
    plan: &RlPlan,
    workers: &mut dyn StepWorkers,
    state: &mut RlState,
    seed: u64,
    checkpoint_due: bool,
) -> Result<StepDone, StageError> {
    let began = Instant::now();
    let mut phases = PhaseTimes::default();
    let rewarded = match &plan.preference {
        None => rule_rewards(plan, workers, state.cursor, seed, &mut phases)?,
        Some(preference) => {
            preference_rewards(plan, preference, workers, state, seed, &mut phases)?
        }
    };

    let t = Instant::now();
    let rollouts = rollouts(
        &rewarded.prompts,
        &rewarded.completions,
        &rewarded.rewards,
        plan.placement.sampler_precision,
    );
    let tokens_trained = rollouts
        .iter()
        .map(|r| (r.prompt_ids.len() + r.completion_ids.len()) as u64)
        .sum();
    let learned = workers.learn(rollouts)?;
    phases.learn = t.elapsed().as_secs_f64();

    let g = plan.learner.group_size.max(1);
    let new_step = learned.stats.step;
    let completions = &rewarded.completions;
    let (mut report, samples, components, preference) = match rewarded.kind {
        RewardedKind::Rules {
            problems,
            reports,
            dynamic,
        } => {
            let mut report = step_report(learned.stats, &problems, completions, &reports);
            report.dynamic = dynamic;
            report.tokens_generated = rewarded.tokens_generated;
            let samples = completions
                .iter()
                .zip(&reports)
                .step_by(g)
                .take(plan.samples_per_step)
                .map(|(c, r)| judged_sample(new_step, &problems[c.request].prompt, c, r))
                .collect();
            let components = record_components(&report);
            (report, samples, components, None)
        }
        RewardedKind::Preference {
            prompts,
            reasoning,
            rule,
            general,
            stats,
        } => {
            let report = preference_report(learned.stats, &prompts, completions, &reasoning, &rule);
            let samples = (0..completions.len())
                .step_by(g)
                .take(plan.samples_per_step)
                .map(|k| {
                    let c = &completions[k];
                    let judged = reasoning.iter().position(|&r| r == k).map(|i| &rule[i]);
                    SampleRecord {
                        step: new_step,
                        prompt: prompts[c.request].text().to_string(),
                        completion: c.text.clone().unwrap_or_default(),
                        reward: rewarded.rewards[k] as f32,
                        accuracy: judged.map_or(0.0, |r| r.accuracy.reward),
                        format: judged.map_or(0.0, |r| r.format.reward),
                        language: judged.and_then(|r| r.language.as_ref().map(|l| l.share)),
                        why: judged.map(shortfalls).unwrap_or_default(),
                    }
                })
                .collect();
            let mut components = record_components(&report);
            let general_rewards: Vec<f64> = general.iter().map(|&k| rewarded.rewards[k]).collect();
            let (mean, std) = mean_std(&general_rewards);
            components.push(("preference".to_string(), mean, std));
            (report, samples, components, Some(stats))
        }
    };
    report.phases = PhaseSeconds {
        sample: phases.sample,
        judge: phases.judge,
        learn: phases.learn,
    };
    let mut parts = report.learner.memory.clone();
    parts.extend(workers.sampler_memory());
    report.memory = crate::stages::grpo::StepMemory {
        parts,
        peak_resident_bytes: r1_kernels::model::limits::peak_resident_bytes(),
    };
    state.step = new_step;
    state.optimizer_step = learned.optimizer_step;
    state.cursor = rewarded.cursor;

    let checkpoint = if checkpoint_due {
        let t = Instant::now();
        let saved = workers.save(state.trainer_state(plan))?;
        phases.checkpoint = t.elapsed().as_secs_f64();
        Some(saved)
    } else {
        None
    };
    Ok(StepDone {
        record: StepRecord {
            step: new_step,
            report,
            components,
            phases,
            seconds: began.elapsed().as_secs_f64(),
            tokens_generated: rewarded.tokens_generated as u64,
            tokens_trained,
            reward_timeouts: rewarded.timeouts,
            data_cursor: rewarded.cursor,
            preference,
        },
        samples,
        checkpoint,
    })
}

/// The sample record of a completion judged by the rules: its text, each reward and why it fell
/// short.
pub fn judged_sample(step: u64, prompt: &str, c: &Completion, r: &RewardReport) -> SampleRecord {
    SampleRecord {
        step,
        prompt: prompt.to_string(),
        completion: c.text.clone().unwrap_or_default(),
        reward: r.total,
        accuracy: r.accuracy.reward,
        format: r.format.reward,
        language: r.language.as_ref().map(|l| l.share),
        why: shortfalls(r),
    }
}

/// Why a judged completion's components fell short, as a sample record keeps it.
pub fn shortfalls(r: &RewardReport) -> Vec<String> {
    [
        ("accuracy", r.accuracy.why.as_ref()),
        ("format", r.format.why.as_ref()),
        ("language", r.language.as_ref().and_then(|l| l.why.as_ref())),
    ]
    .into_iter()
    .filter_map(|(name, why)| why.map(|why| format!("{name}: {why}")))
    .collect()
}

/// The step report's reward components as the step record keeps them: (name, mean, std).
fn record_components(report: &GrpoStepReport) -> Vec<(String, f64, f64)> {
    report
        .components
        .iter()
        .map(|c| (c.name.clone(), c.mean, c.std))
        .collect()
}

/// The reward phase of a GRPO step: `prompts_per_step` problems from `cursor`, sampled and judged
/// by the rules; with dynamic sampling, more rounds of fresh problems replace the groups whose
/// rewards are all equal (`DynamicSampling`), round `r` seeded `round_seed(seed, r)`.
fn rule_rewards(
    plan: &RlPlan,
    workers: &mut dyn StepWorkers,
    cursor: u64,
    seed: u64,
    phases: &mut PhaseTimes,
) -> Result<Rewarded, StageError> {
    let g = plan.learner.group_size;
    let sampling = sampling_for(&plan.settings, &plan.tokenizer);
    let mut rounds = DynamicSampling::new(plan.prompts_per_step, plan.dynamic_sampling, g);
    let mut cursor = cursor;
    let mut timeouts = Vec::new();
    while rounds.want() > 0 {
        let problems = plan.take(cursor, rounds.want());
        if problems.is_empty() {
            break;
        }
        cursor += problems.len() as u64;
        let t = Instant::now();
        let batch = group_requests(
            &problems,
            &plan.settings,
            &plan.tokenizer,
            &sampling,
            g,
            round_seed(seed, rounds.round()),
        )?;
        let completions = workers.generate(batch.requests)?;
        phases.sample += t.elapsed().as_secs_f64();

        let t = Instant::now();
        let rules = stage_rules(&plan.settings, batch.prefilled_think);
        let items = Arc::new(
            completions
                .iter()
                .map(|c| reward_item(&problems, c))
                .collect::<Vec<_>>(),
        );
        let rewards = workers.reward(items, rules, Vec::new())?;
        timeouts.extend(rewards.timeouts);
        phases.judge += t.elapsed().as_secs_f64();
        rounds.add(problems, batch.prompts, completions, rewards.reports);
    }
    let kept = rounds.finish()?;
    Ok(Rewarded {
        rewards: kept.reports.iter().map(|r| r.total as f64).collect(),
        prompts: kept.prompts,
        completions: kept.completions,
        timeouts,
        tokens_generated: kept.tokens_generated,
        cursor,
        kind: RewardedKind::Rules {
            problems: kept.problems,
            reports: kept.reports,
            dynamic: kept.dynamic,
        },
    })
}

/// The reward phase of a preference step: every prompt of the step sampled; the reasoning
/// completions to the rule judge ‖ language scorer, at the same time each reward model's view of
/// the general completions; the scores normalised, weighed and combined (`combine_rewards`).
fn preference_rewards(
    plan: &RlPlan,
    preference: &PreferencePlan,
    workers: &mut dyn StepWorkers,
    state: &mut RlState,
    seed: u64,
    phases: &mut PhaseTimes,
) -> Result<Rewarded, StageError> {
    let g = plan.learner.group_size.max(1);
    let prompts = step_prompts(
        &plan.problems,
        &preference.general,
        preference.n_reasoning,
        preference.n_general,
        state.step,
    );
    let t = Instant::now();
    let sampling = sampling_for(&plan.settings, &plan.tokenizer);
    let batch = group_requests(
        &prompts,
        &plan.settings,
        &plan.tokenizer,
        &sampling,
        g,
        seed,
    )?;
    let mut completions = workers.generate(batch.requests)?;
    // Groups must be consecutive for the learner.
    completions.sort_by_key(|c| (c.request, c.sample));
    phases.sample = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let (reasoning, general) = split_by_kind(&prompts, &completions);
    let rules = stage_rules(&plan.settings, batch.prefilled_think);
    let items = Arc::new(
        reasoning
            .iter()
            .map(|&k| reward_item(&prompts, &completions[k]))
            .collect::<Vec<_>>(),
    );
    let markers = end_markers(&plan.settings, &plan.tokenizer);
    let models = if general.is_empty() {
        Vec::new()
    } else {
        preference
            .settings
            .reward_models
            .iter()
            .map(|use_| model_items(&prompts, &completions, &general, use_.view, &markers))
            .collect()
    };
    let rewards = workers.reward(items, rules, models)?;
    let combined = combine_rewards(
        &preference.settings,
        completions.len(),
        g,
        &reasoning,
        &rewards.reports,
        &general,
        &rewards.model_scores,
        &mut state.normaliser,
        state.step,
    )
    .map_err(StageError::Worker)?;
    phases.judge = t.elapsed().as_secs_f64();
    Ok(Rewarded {
        prompts: batch.prompts,
        tokens_generated: completions.iter().map(|c| c.token_ids.len()).sum(),
        completions,
        rewards: combined.rewards,
        timeouts: rewards.timeouts,
        cursor: plan.preference_cursor(preference, state.step + 1),
        kind: RewardedKind::Preference {
            prompts,
            reasoning,
            rule: rewards.reports,
            general,
            stats: combined.stats,
        },
    })
}

/// What a run loop tells its driver.
#[derive(Debug, Clone)]
pub enum RlEvent {
    /// The learner loaded: the step it starts at, the checkpoint it resumed, damaged ones skipped.
    Started(StartPoint),
    /// A step finished (its checkpoint, if any, follows as `Checkpoint`).
    Step(Box<StepRecord>, Vec<SampleRecord>),
    /// A checkpoint became durable.
    Checkpoint(SavedCheckpoint),
}

/// Decides between steps whether a run goes on: the one pause/stop/suspend state machine of r1d
/// (`service::RunLifecycle`), or `r1ctl train`'s stop flag (an `AtomicBool` set by a signal).
pub trait RunControl {
    /// The run loaded its starting point; `message` says what it resumed from.
    fn started(&self, _step: u64, _message: Option<String>) {}

    /// Before each step: `None` to take it, `Some(state)` to end the run in `state` (stopped,
    /// suspended, finished). `done`: the run has taken its last step. May block while paused.
    fn between_steps(&self, done: bool) -> Option<RunState>;
}

/// `r1ctl train`: a set flag stops the run after its current step.
impl RunControl for AtomicBool {
    fn between_steps(&self, done: bool) -> Option<RunState> {
        if done {
            Some(RunState::Finished)
        } else if self.load(Ordering::Relaxed) {
            Some(RunState::Stopped)
        } else {
            None
        }
    }
}

/// How a run loop ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RlRunReport {
    /// Steps taken in total (resumed ones included).
    pub steps: u64,
    /// Finished, stopped or suspended.
    pub ended: RunState,
    /// Mean reward of the last step this call took.
    pub last_reward: Option<f64>,
    /// Next prompt of the training stream.
    pub data_cursor: u64,
    /// The newest checkpoint this call wrote.
    pub checkpoint: Option<PathBuf>,
}

/// The run loop of every RL stage: load (resuming from the first good of `candidates`), then
/// step after step until `control` ends the run, with a checkpoint every
/// `checkpoint.every_steps`, at the last step, and at a stop or suspend between two.
pub fn run_rl(
    plan: &RlPlan,
    workers: &mut dyn StepWorkers,
    candidates: &[PathBuf],
    control: &dyn RunControl,
    events: &mut dyn FnMut(RlEvent),
) -> Result<RlRunReport, RunError> {
    let at = |at: String| {
        move |e: StageError| RunError::At {
            at,
            source: Box::new(RunError::Stage(e)),
        }
    };
    let start = workers.load(candidates).map_err(at("loading".into()))?;
    let mut state = RlState {
        step: start.step,
        optimizer_step: start.optimizer_step,
        cursor: start.data_cursor,
        normaliser: start.reward_normaliser.clone().unwrap_or_default(),
    };
    let mut notes: Vec<String> = start
        .skipped
        .iter()
        .map(|s| format!("skipped damaged checkpoint {s}"))
        .collect();
    if let Some(dir) = &start.resumed_from {
        notes.push(format!("resumed from {}", dir.display()));
    }
    // A resumed run's step is saved already; step 0 is the model directory itself.
    let mut saved_at = Some(start.step);
    events(RlEvent::Started(start));
    control.started(state.step, (!notes.is_empty()).then(|| notes.join("; ")));

    let total = plan.total_steps();
    let mut report = RlRunReport {
        steps: state.step,
        ended: RunState::Finished,
        last_reward: None,
        data_cursor: state.cursor,
        checkpoint: None,
    };
    report.ended = loop {
        if let Some(end) = control.between_steps(state.step >= total) {
            break end;
        }
        let seed = step_seed(plan.run.seed, state.step);
        let due = plan.checkpoint_due(state.step + 1);
        let done = rl_step(plan, workers, &mut state, seed, due)
            .map_err(at(format!("step {}", state.step + 1)))?;
        report.last_reward = Some(done.record.report.learner.reward_mean);
        events(RlEvent::Step(Box::new(done.record), done.samples));
        if let Some(saved) = done.checkpoint {
            saved_at = Some(saved.step);
            report.checkpoint = Some(saved.path.clone());
            events(RlEvent::Checkpoint(saved));
        }
    };
    if saved_at != Some(state.step) {
        let saved = workers
            .save(state.trainer_state(plan))
            .map_err(at("final checkpoint".into()))?;
        report.checkpoint = Some(saved.path.clone());
        events(RlEvent::Checkpoint(saved));
    }
    report.steps = state.step;
    report.data_cursor = state.cursor;
    Ok(report)
}
