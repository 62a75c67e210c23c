//! The director: runs a GRPO stage one step at a time, between steps honouring pause, resume and
//! stop, and tells its watcher everything that happens (`RunEvent`).

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use futures_util::future::join;

use crate::judge::reward::{RewardItem, RewardReport, RewardRules};
use crate::keeper::TrainerState;
use crate::learner::Rollout;
use crate::messages::{
    DirectorStatus, Generate, GetStatus, Judge, Learn, Learned, Load, Pause, PhaseTimes, Resume,
    RunEvent, RunEventKind, RunState, SampleRecord, SaveCheckpoint, SavedCheckpoint, ScoreLanguage,
    ScoreResponses, SetBest, StepRecord, Stop, Suspend, TakeSnapshot, UpdateWeights,
};
use crate::stages::grpo::{
    group_requests, mean_std, reward_item, rollouts, round_seed, sampling_for, stage_rules,
    step_report, DynamicSampling,
};
use crate::stages::preference::{
    combine_rewards, end_markers, model_items, preference_report, preference_rollouts,
    split_by_kind, RewardNormaliser,
};
use crate::stages::GrpoStepReport;

use super::workers::{
    JudgeActor, KeeperActor, LangActor, LearnerActor, RewardModelActor, SamplerActor,
};
use super::{GrpoPlan, PreferencePlan};

/// The worker actors of one run.
#[derive(Clone)]
struct Workers {
    sampler: Addr<SamplerActor>,
    judge: Addr<JudgeActor>,
    lang: Addr<LangActor>,
    learner: Addr<LearnerActor>,
    keeper: Addr<KeeperActor>,
    /// The reward-model scorer of a preference run.
    reward_models: Option<Addr<RewardModelActor>>,
}

/// Drives one run. Create with [`Director::new`], start with `Actor::start`.
pub struct Director {
    plan: Arc<GrpoPlan>,
    /// Spared by pruning (the best checkpoint by evaluation).
    best: Option<std::path::PathBuf>,
    watcher: Recipient<RunEvent>,
    workers: Workers,
    state: RunState,
    step: u64,
    optimizer_step: u64,
    last_checkpoint: Option<u64>,
    /// The preference stage's running moments of each reward model's scores.
    normaliser: RewardNormaliser,
    /// Next prompt of the training stream.
    cursor: u64,
    pause_requested: bool,
    stop_requested: bool,
    suspend_requested: bool,
    busy: bool,
}

impl Director {
    /// A director for `plan`, reporting to `watcher`; its workers start on their own threads.
    pub fn new(plan: GrpoPlan, watcher: Recipient<RunEvent>) -> Self {
        let tokenizer = plan.tokenizer.clone();
        let max_batch = plan.settings.max_batch;
        let sandbox = plan.sandbox.clone();
        let (model_dir, learner_config) = (plan.model_dir.clone(), plan.learner.clone());
        let workers = Workers {
            sampler: SyncArbiter::start(1, move || SamplerActor::new(tokenizer.clone(), max_batch)),
            judge: SyncArbiter::start(1, move || JudgeActor::new(sandbox.clone())),
            lang: SyncArbiter::start(1, LangActor::default),
            learner: SyncArbiter::start(1, move || {
                LearnerActor::new(model_dir.clone(), learner_config.clone())
            }),
            keeper: SyncArbiter::start(1, KeeperActor::default),
            reward_models: plan.preference.as_ref().map(|p| {
                let scorers = p.scorers.clone();
                SyncArbiter::start(1, move || RewardModelActor::new(scorers.clone()))
            }),
        };
        Director {
            best: plan.best.clone(),
            plan: Arc::new(plan),
            watcher,
            workers,
            state: RunState::Starting,
            step: 0,
            optimizer_step: 0,
            last_checkpoint: None,
            normaliser: RewardNormaliser::default(),
            cursor: 0,
            pause_requested: false,
            stop_requested: false,
            suspend_requested: false,
            busy: false,
        }
    }

    fn emit(&self, kind: RunEventKind) {
        self.watcher.do_send(RunEvent {
            run: self.plan.run.clone(),
            kind,
        });
    }

    fn set_state(&mut self, state: RunState, message: Option<String>) {
        self.state = state;
        self.emit(RunEventKind::State {
            state,
            step: self.step,
            message,
        });
    }

    fn fail(&mut self, message: String, ctx: &mut Context<Self>) {
        tracing::error!(run = %self.plan.run, "{message}");
        self.set_state(RunState::Failed, Some(message));
        ctx.stop();
    }

    /// Decides what happens after a step (or the start): another step, a pause, or the end.
    fn next(&mut self, ctx: &mut Context<Self>) {
        if self.suspend_requested {
            self.end(RunState::Suspended, ctx);
        } else if self.stop_requested {
            self.end(RunState::Stopped, ctx);
        } else if self.step >= self.plan.steps {
            self.end(RunState::Finished, ctx);
        } else if self.pause_requested {
            self.pause_requested = false;
            self.set_state(RunState::Paused, None);
        } else {
            self.take_step(ctx);
        }
    }

    fn take_step(&mut self, ctx: &mut Context<Self>) {
        self.busy = true;
        let due = (self.step + 1).is_multiple_of(self.plan.checkpoint_every.max(1));
        let fut = step(
            self.plan.clone(),
            self.workers.clone(),
            self.step,
            due,
            self.best.clone(),
            self.normaliser.clone(),
            self.cursor,
        );
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
            act.busy = false;
            match result {
                Ok(done) => {
                    act.step = done.record.step;
                    act.optimizer_step = done.optimizer_step;
                    act.normaliser = done.normaliser;
                    act.cursor = done.cursor;
                    let checkpoint = done.checkpoint.clone();
                    act.emit(RunEventKind::Step(Box::new(done.record), done.samples));
                    if let Some(saved) = checkpoint {
                        act.last_checkpoint = Some(saved.step);
                        act.emit(RunEventKind::Checkpoint(saved));
                    }
                    act.next(ctx);
                }
                Err(message) => act.fail(format!("step {}: {message}", act.step + 1), ctx),
            }
        }));
    }

    /// Ends the run: a checkpoint of the last step if it has none, then the final state.
    fn end(&mut self, state: RunState, ctx: &mut Context<Self>) {
        // Step 0 has nothing to save: the model directory is the starting point.
        if self.last_checkpoint == Some(self.step) || self.step == 0 {
            self.set_state(state, None);
            ctx.stop();
            return;
        }
        self.busy = true;
        let fut = checkpoint(
            self.plan.clone(),
            self.workers.clone(),
            self.step,
            self.optimizer_step,
            self.best.clone(),
            self.normaliser.clone(),
            self.cursor,
        );
        ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
            act.busy = false;
            match result {
                Ok(saved) => {
                    act.last_checkpoint = Some(saved.step);
                    act.emit(RunEventKind::Checkpoint(saved));
                    act.set_state(state, None);
                    ctx.stop();
                }
                Err(message) => act.fail(format!("final checkpoint: {message}"), ctx),
            }
        }));
    }
}

impl Actor for Director {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.set_state(RunState::Starting, None);
        self.busy = true;
        let load = Load {
            checkpoints: self.plan.resume_from.clone(),
            config_hash: self.plan.config_hash.clone(),
        };
        let learner = self.workers.learner.clone();
        let fut = async move { learner.send(load).await.map_err(|e| e.to_string())? };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
            act.busy = false;
            match result {
                Ok(loaded) => {
                    act.step = loaded.weights.step;
                    act.normaliser = loaded.reward_normaliser.clone().unwrap_or_default();
                    act.cursor = loaded.data_cursor;
                    if loaded.resumed_from.is_some() {
                        act.last_checkpoint = Some(act.step);
                    }
                    act.workers.sampler.do_send(UpdateWeights(loaded.weights));
                    let mut notes: Vec<String> = loaded
                        .skipped
                        .iter()
                        .map(|s| format!("skipped damaged checkpoint {s}"))
                        .collect();
                    if let Some(dir) = &loaded.resumed_from {
                        notes.push(format!("resumed from {}", dir.display()));
                    }
                    let message = (!notes.is_empty()).then(|| notes.join("; "));
                    if act.stop_requested {
                        act.set_state(RunState::Stopping, message);
                    } else {
                        act.set_state(RunState::Running, message);
                    }
                    act.next(ctx);
                }
                Err(message) => act.fail(format!("loading: {message}"), ctx),
            }
        }));
    }
}

impl Handler<Pause> for Director {
    type Result = ();

    fn handle(&mut self, _: Pause, _: &mut Context<Self>) {
        if matches!(self.state, RunState::Running | RunState::Starting) {
            self.pause_requested = true;
        }
    }
}

impl Handler<Resume> for Director {
    type Result = ();

    fn handle(&mut self, _: Resume, ctx: &mut Context<Self>) {
        self.pause_requested = false;
        if self.state == RunState::Paused && !self.busy {
            self.set_state(RunState::Running, None);
            self.next(ctx);
        }
    }
}

impl Handler<Stop> for Director {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        if self.state.is_final() || self.stop_requested {
            return;
        }
        self.stop_requested = true;
        self.set_state(RunState::Stopping, None);
        if !self.busy {
            self.next(ctx);
        }
    }
}

impl Handler<Suspend> for Director {
    type Result = ();

    fn handle(&mut self, _: Suspend, ctx: &mut Context<Self>) {
        if self.state.is_final() || self.suspend_requested {
            return;
        }
        self.suspend_requested = true;
        if !self.busy {
            self.next(ctx);
        }
    }
}

impl Handler<SetBest> for Director {
    type Result = ();

    fn handle(&mut self, msg: SetBest, _: &mut Context<Self>) {
        self.best = Some(msg.0);
    }
}

impl Handler<GetStatus> for Director {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(DirectorStatus {
            state: self.state,
            step: self.step,
        })
    }
}

/// What one step produced.
struct StepDone {
    record: StepRecord,
    samples: Vec<SampleRecord>,
    checkpoint: Option<SavedCheckpoint>,
    optimizer_step: u64,
    normaliser: RewardNormaliser,
    cursor: u64,
}

/// Judges `items` (accuracy, format) and scores their language on the two reward actors in
/// parallel, combining the components under `rules`. A reply that does not come within the plan's
/// timeout scores its items 0 and is named in the returned list.
async fn judge_items(
    plan: &GrpoPlan,
    workers: &Workers,
    items: Arc<Vec<RewardItem>>,
    rules: RewardRules,
) -> Result<(Vec<RewardReport>, Vec<String>), String> {
    let mut timeouts = Vec::new();
    if items.is_empty() {
        return Ok((Vec::new(), timeouts));
    }
    let (judged, languages) = join(
        workers
            .judge
            .send(Judge {
                items: items.clone(),
                rules,
            })
            .timeout(plan.reward_timeout),
        workers
            .lang
            .send(ScoreLanguage {
                items: items.clone(),
                weighted: rules.weights.language != 0.0,
            })
            .timeout(plan.reward_timeout),
    )
    .await;
    let mut reports = match judged {
        Ok(reports) => reports?,
        Err(actix::MailboxError::Timeout) => {
            timeouts.push("judge".to_string());
            vec![RewardReport::unjudged("the judge did not answer in time"); items.len()]
        }
        Err(e) => return Err(format!("judge: {e}")),
    };
    let languages = match languages {
        Ok(languages) => languages,
        Err(actix::MailboxError::Timeout) => {
            timeouts.push("language".to_string());
            vec![None; items.len()]
        }
        Err(e) => return Err(format!("language scorer: {e}")),
    };
    for (report, language) in reports.iter_mut().zip(languages) {
        report.set_language(language, &rules.weights);
    }
    Ok((reports, timeouts))
}

/// The step report's reward components as the step record keeps them: (name, mean, std).
fn record_components(report: &GrpoStepReport) -> Vec<(String, f64, f64)> {
    report
        .components
        .iter()
        .map(|c| (c.name.clone(), c.mean, c.std))
        .collect()
}

/// Step `step` (0-based) of the plan: sample → judge ‖ language (‖ reward models) → learn →
/// (checkpoint). With dynamic sampling, sample → judge ‖ language repeats for fresh prompts in
/// place of groups whose rewards are all equal (`stages::grpo::DynamicSampling`), reading the
/// training stream from `cursor`.
#[allow(clippy::too_many_arguments)]
async fn step(
    plan: Arc<GrpoPlan>,
    workers: Workers,
    step: u64,
    checkpoint_due: bool,
    best: Option<std::path::PathBuf>,
    normaliser: RewardNormaliser,
    cursor: u64,
) -> Result<StepDone, String> {
    if let Some(preference) = plan.preference.clone() {
        return preference_step(
            plan,
            &preference,
            workers,
            step,
            checkpoint_due,
            best,
            normaliser,
        )
        .await;
    }
    let began = Instant::now();
    let mut phases = PhaseTimes::default();
    let tokenizer = &plan.tokenizer;
    let sampling = sampling_for(&plan.settings, tokenizer);
    let mut rounds = DynamicSampling::new(
        plan.prompts_per_step,
        plan.dynamic_sampling,
        plan.learner.group_size,
    );
    let mut cursor = cursor;
    let mut reward_timeouts = Vec::new();
    while rounds.want() > 0 {
        let problems = plan.take(cursor, rounds.want());
        if problems.is_empty() {
            break;
        }
        cursor += problems.len() as u64;
        let batch = group_requests(
            &problems,
            &plan.settings,
            tokenizer,
            &sampling,
            plan.learner.group_size,
            round_seed(plan.step_seed(step), rounds.round()),
        )
        .map_err(|e| e.to_string())?;

        let t = Instant::now();
        let generated = workers
            .sampler
            .send(Generate {
                requests: batch.requests,
            })
            .await
            .map_err(|e| format!("sampler: {e}"))??;
        phases.sample += t.elapsed().as_secs_f64();
        let completions = generated.completions;

        let t = Instant::now();
        let rules = stage_rules(&plan.settings, batch.prefilled_think);
        let items = Arc::new(
            completions
                .iter()
                .map(|c| reward_item(&problems, c))
                .collect::<Vec<_>>(),
        );
        let (reports, timeouts) = judge_items(&plan, &workers, items, rules).await?;
        reward_timeouts.extend(timeouts);
        phases.judge += t.elapsed().as_secs_f64();
        rounds.add(problems, batch.prompts, completions, reports);
    }
    let kept = rounds.finish().map_err(|e| e.to_string())?;

    let batch_rollouts = rollouts(&kept.prompts, &kept.completions, &kept.reports);
    let (learned, tokens_trained) = learn(&workers, batch_rollouts, &mut phases).await?;
    let optimizer_step = learned.optimizer_step;
    let mut report = step_report(
        learned.stats,
        &kept.problems,
        &kept.completions,
        &kept.reports,
    );
    report.dynamic = kept.dynamic;
    report.tokens_generated = kept.tokens_generated;
    let saving = Saving {
        due: checkpoint_due,
        optimizer_step,
        best,
        normaliser: &normaliser,
        cursor,
    };
    let checkpoint = close_step(&plan, workers, &mut report, &mut phases, saving).await?;
    let new_step = report.learner.step;

    let g = plan.learner.group_size.max(1);
    let samples = kept
        .completions
        .iter()
        .zip(&kept.reports)
        .step_by(g)
        .take(plan.samples_per_step)
        .map(|(c, r)| SampleRecord {
            step: new_step,
            prompt: kept.problems[c.request].prompt.clone(),
            completion: c.text.clone().unwrap_or_default(),
            reward: r.total,
            accuracy: r.accuracy.reward,
            format: r.format.reward,
            language: r.language.as_ref().map(|l| l.share),
        })
        .collect();
    Ok(StepDone {
        record: StepRecord {
            step: new_step,
            components: record_components(&report),
            phases,
            seconds: began.elapsed().as_secs_f64(),
            tokens_generated: kept.tokens_generated as u64,
            tokens_trained,
            reward_timeouts,
            data_cursor: cursor,
            report,
            preference: None,
        },
        samples,
        checkpoint,
        optimizer_step,
        normaliser,
        cursor,
    })
}

/// A preference-RL step: sample every prompt → rule judge ‖ language on the reasoning completions
/// ‖ each reward model on the general completions → combine → learn → (checkpoint). The same
/// phase functions as the in-process `preference::preference_step`, in the same order.
async fn preference_step(
    plan: Arc<GrpoPlan>,
    preference: &PreferencePlan,
    workers: Workers,
    step: u64,
    checkpoint_due: bool,
    best: Option<std::path::PathBuf>,
    mut normaliser: RewardNormaliser,
) -> Result<StepDone, String> {
    let began = Instant::now();
    let mut phases = PhaseTimes::default();
    let prompts = plan.preference_prompts(step);
    let tokenizer = &plan.tokenizer;
    let g = plan.learner.group_size.max(1);
    let sampling = sampling_for(&plan.settings, tokenizer);
    let batch = group_requests(
        &prompts,
        &plan.settings,
        tokenizer,
        &sampling,
        g,
        plan.step_seed(step),
    )
    .map_err(|e| e.to_string())?;

    let t = Instant::now();
    let mut completions = workers
        .sampler
        .send(Generate {
            requests: batch.requests,
        })
        .await
        .map_err(|e| format!("sampler: {e}"))??
        .completions;
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
    let markers = end_markers(&plan.settings, tokenizer);
    let scorer = workers
        .reward_models
        .as_ref()
        .ok_or("a preference run without its reward-model scorer")?;
    let nothing_to_score = general.is_empty();
    let scores =
        futures_util::future::join_all(preference.settings.reward_models.iter().enumerate().map(
            |(m, use_)| {
                let items = model_items(&prompts, &completions, &general, use_.view, &markers);
                let reply = scorer
                    .send(ScoreResponses { model: m, items })
                    .timeout(plan.reward_timeout);
                async move { (use_.name.clone(), nothing_to_score, reply.await) }
            },
        ));
    let (judged, scores) = join(judge_items(&plan, &workers, items, rules), scores).await;
    let (rule, mut reward_timeouts) = judged?;
    let mut raw = Vec::new();
    for (name, nothing_to_score, reply) in scores {
        raw.push(match reply {
            _ if nothing_to_score => None,
            Ok(scores) => Some(scores.map_err(|e| format!("reward model `{name}`: {e}"))?),
            Err(actix::MailboxError::Timeout) => {
                reward_timeouts.push(format!("reward_model:{name}"));
                None
            }
            Err(e) => return Err(format!("reward model `{name}`: {e}")),
        });
    }
    let combined = combine_rewards(
        &preference.settings,
        completions.len(),
        g,
        &reasoning,
        &rule,
        &general,
        &raw,
        &mut normaliser,
        step,
    )?;
    phases.judge = t.elapsed().as_secs_f64();

    let batch_rollouts = preference_rollouts(&batch.prompts, &completions, &combined.rewards);
    let (learned, tokens_trained) = learn(&workers, batch_rollouts, &mut phases).await?;
    let optimizer_step = learned.optimizer_step;
    let mut report = preference_report(learned.stats, &prompts, &completions, &reasoning, &rule);
    let saving = Saving {
        due: checkpoint_due,
        optimizer_step,
        best,
        normaliser: &normaliser,
        cursor: plan.data_cursor(step + 1),
    };
    let checkpoint = close_step(&plan, workers, &mut report, &mut phases, saving).await?;
    let new_step = report.learner.step;

    // The first completion of each group, reasoning and general alike.
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
                reward: combined.rewards[k] as f32,
                accuracy: judged.map_or(0.0, |r| r.accuracy.reward),
                format: judged.map_or(0.0, |r| r.format.reward),
                language: judged.and_then(|r| r.language.as_ref().map(|l| l.share)),
            }
        })
        .collect();
    let mut components = record_components(&report);
    let general_rewards: Vec<f64> = general.iter().map(|&k| combined.rewards[k]).collect();
    let (mean, std) = mean_std(&general_rewards);
    components.push(("preference".to_string(), mean, std));
    Ok(StepDone {
        record: StepRecord {
            step: new_step,
            components,
            phases,
            seconds: began.elapsed().as_secs_f64(),
            tokens_generated: completions.iter().map(|c| c.token_ids.len() as u64).sum(),
            tokens_trained,
            reward_timeouts,
            data_cursor: plan.data_cursor(new_step),
            report,
            preference: Some(combined.stats),
        },
        samples,
        checkpoint,
        optimizer_step,
        normaliser,
        cursor: plan.data_cursor(new_step),
    })
}

/// Sends the step's rollouts to the learner and its new weights to the sampler; returns the
/// learner's reply and the tokens it trained on, timing the learn phase.
async fn learn(
    workers: &Workers,
    rollouts: Vec<Rollout>,
    phases: &mut PhaseTimes,
) -> Result<(Learned, u64), String> {
    let t = Instant::now();
    let tokens_trained = rollouts
        .iter()
        .map(|r| (r.prompt_ids.len() + r.completion_ids.len()) as u64)
        .sum();
    let learned = workers
        .learner
        .send(Learn { rollouts })
        .await
        .map_err(|e| format!("learner: {e}"))??;
    workers
        .sampler
        .do_send(UpdateWeights(learned.weights.clone()));
    phases.learn = t.elapsed().as_secs_f64();
    Ok((learned, tokens_trained))
}

/// What a step's checkpoint, if one is due, holds besides the learner's state.
struct Saving<'a> {
    due: bool,
    optimizer_step: u64,
    best: Option<std::path::PathBuf>,
    normaliser: &'a RewardNormaliser,
    cursor: u64,
}

/// Ends a step: copies its phase times into the report and writes a checkpoint when one is due
/// (every `checkpoint_every` steps and at the last step).
async fn close_step(
    plan: &Arc<GrpoPlan>,
    workers: Workers,
    report: &mut GrpoStepReport,
    phases: &mut PhaseTimes,
    saving: Saving<'_>,
) -> Result<Option<SavedCheckpoint>, String> {
    report.phases = crate::stages::grpo::PhaseSeconds {
        sample: phases.sample,
        judge: phases.judge,
        learn: phases.learn,
    };
    let new_step = report.learner.step;
    if !(saving.due || new_step >= plan.steps) {
        return Ok(None);
    }
    let t = Instant::now();
    let saved = checkpoint(
        plan.clone(),
        workers,
        new_step,
        saving.optimizer_step,
        saving.best,
        saving.normaliser.clone(),
        saving.cursor,
    )
    .await?;
    phases.checkpoint = t.elapsed().as_secs_f64();
    Ok(Some(saved))
}

/// A checkpoint of the learner's current state at `step`.
async fn checkpoint(
    plan: Arc<GrpoPlan>,
    workers: Workers,
    step: u64,
    optimizer_step: u64,
    best: Option<std::path::PathBuf>,
    normaliser: RewardNormaliser,
    cursor: u64,
) -> Result<SavedCheckpoint, String> {
    let snapshot = workers
        .learner
        .send(TakeSnapshot)
        .await
        .map_err(|e| format!("learner: {e}"))??;
    let state = TrainerState {
        step,
        optimizer_step,
        data_cursor: cursor,
        seed: plan.seed,
        config_hash: plan.config_hash.clone(),
        reward_normaliser: plan.preference.is_some().then_some(normaliser),
    };
    workers
        .keeper
        .send(SaveCheckpoint {
            root: plan.checkpoint_root.clone(),
            snapshot,
            state,
            keep_last: plan.keep_last,
            keep_also: best,
        })
        .await
        .map_err(|e| format!("keeper: {e}"))?
}
