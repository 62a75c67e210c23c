//! The actor pipeline (Director → Sampler, RewardJudge ‖ LangScorer, Learner, CheckpointKeeper)
//! takes the same steps as the in-process `grpo_step`, bit for bit; pause, resume and stop act
//! between steps; a resumed director continues where the checkpoint left off.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;

use r1_actors::data::builtin_task;
use r1_actors::judge::reward::{CodeSandbox, RewardRules};
use r1_actors::judge::tasks::Split;
use r1_actors::keeper::{checkpoint_dir, load_checkpoint};
use r1_actors::learner::{GrpoLearner, LearnerConfig};
use r1_actors::messages::{GetStatus, Pause, Resume, RunEvent, RunEventKind, RunState, Stop};
use r1_actors::reward_model::{OverLong, RewardModelScorer, TextEncoder};
use r1_actors::service::{Director, GrpoPlan, PreferencePlan};
use r1_actors::stages::preference::{
    preference_step, Normalisation, PreferenceSettings, ResponseScorer, ResponseView,
    RewardModelUse, RewardNormaliser,
};
use r1_actors::stages::{grpo_step, grpo_step_from, StageProblem, StageSettings, StepContext};
use r1_kernels::bench::builtin_config;
use r1_kernels::model::{load_model_dir, save_model_dir, Model, RewardModel};
use r1_kernels::sample::SamplingParams;
use r1_kernels::template::{PromptTemplate, TemplateKind};
use r1_kernels::tokenizer::{ByteTokenizer, Tokenizer};
use r1_kernels::train::LrSchedule;

fn tiny_model(dir: &Path) -> PathBuf {
    let mut config = builtin_config("tiny-qwen2").unwrap();
    config.vocab_size = ByteTokenizer::VOCAB_SIZE;
    config.max_position_embeddings = 512;
    let model_dir = dir.join("model");
    save_model_dir(&Model::random(config, 1, 0.05), &model_dir).unwrap();
    model_dir
}

fn plan(dir: &Path, model_dir: &Path, steps: u64, resume_from: Vec<PathBuf>) -> GrpoPlan {
    let mut learner = LearnerConfig {
        group_size: 2,
        minibatches: 1,
        schedule: LrSchedule::constant(1e-3),
        ..LearnerConfig::default()
    };
    learner.grpo.beta = 0.01;
    learner.grpo.max_completion_length = 8;
    GrpoPlan {
        run: "test".into(),
        model_dir: model_dir.to_path_buf(),
        tokenizer: Arc::new(Tokenizer::byte()),
        problems: Arc::new(
            builtin_task("arithmetic", 3, Split::Train, 16)
                .unwrap()
                .iter()
                .enumerate()
                .map(|(i, ex)| StageProblem::from_task(ex, i))
                .collect(),
        ),
        settings: StageSettings {
            template: PromptTemplate::new(TemplateKind::ChatMl),
            sampling: SamplingParams {
                temperature: 1.0,
                max_new_tokens: 8,
                ..SamplingParams::default()
            },
            rules: RewardRules::default(),
            max_batch: 4,
        },
        learner,
        steps,
        prompts_per_step: 2,
        dynamic_sampling: 0,
        seed: 3,
        checkpoint_root: dir.join("checkpoints"),
        checkpoint_every: 2,
        keep_last: 5,
        best: None,
        config_hash: "hash".into(),
        resume_from,
        reward_timeout: Duration::from_secs(60),
        samples_per_step: 1,
        sandbox: Arc::new(CodeSandbox::unavailable("no code in this test")),
        preference: None,
    }
}

/// Collects every event of a run; stops the system when the run ends.
struct Recorder {
    events: Arc<Mutex<Vec<RunEventKind>>>,
}

impl Actor for Recorder {
    type Context = Context<Self>;
}

impl Handler<RunEvent> for Recorder {
    type Result = ();

    fn handle(&mut self, event: RunEvent, _: &mut Context<Self>) {
        let end = matches!(event.kind, RunEventKind::State { state, .. } if state.is_final());
        self.events.lock().unwrap().push(event.kind);
        if end {
            System::current().stop();
        }
    }
}

fn states(events: &[RunEventKind]) -> Vec<RunState> {
    events
        .iter()
        .filter_map(|e| match e {
            RunEventKind::State { state, .. } => Some(*state),
            _ => None,
        })
        .collect()
}

fn steps(events: &[RunEventKind]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            RunEventKind::Step(record, _) => Some(record.step),
            _ => None,
        })
        .collect()
}

/// Runs a director to its end; `control` may send it messages once started.
fn run_director(
    plan: GrpoPlan,
    control: impl FnOnce(Addr<Director>) + 'static,
) -> Vec<RunEventKind> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sys = System::new();
    let recorded = events.clone();
    sys.block_on(async move {
        let recorder = Recorder { events: recorded }.start();
        let director = Director::new(plan, recorder.recipient()).start();
        control(director);
        // A run that never ends fails the test below instead of hanging it.
        actix::spawn(async {
            actix::clock::sleep(Duration::from_secs(300)).await;
            System::current().stop();
        });
    });
    sys.run().unwrap();
    let events = events.lock().unwrap().clone();
    events
}

#[test]
fn the_director_takes_the_same_steps_as_grpo_step() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = tiny_model(dir.path());
    let plan = plan(dir.path(), &model_dir, 3, Vec::new());

    let mut learner = GrpoLearner::new(load_model_dir(&model_dir).unwrap(), plan.learner.clone());
    let mut expected = Vec::new();
    for step in 0..3 {
        let report = grpo_step(
            &mut learner,
            &plan.tokenizer,
            &plan.batch(step),
            &plan.settings,
            plan.step_seed(step),
        )
        .unwrap();
        expected.push(report.deterministic());
    }

    let events = run_director(plan, |_| {});
    assert_eq!(
        states(&events),
        [RunState::Starting, RunState::Running, RunState::Finished]
    );
    let reports: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            RunEventKind::Step(record, samples) => {
                assert_eq!(samples.len(), 1);
                assert!(record.tokens_generated > 0 && record.tokens_trained > 0);
                assert_eq!(record.components.len(), 3);
                Some(record.report.deterministic())
            }
            _ => None,
        })
        .collect();
    assert_eq!(reports, expected);
    // Checkpoints at step 2 (every 2) and at the end.
    let saved: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            RunEventKind::Checkpoint(c) => Some(c.step),
            _ => None,
        })
        .collect();
    assert_eq!(saved, [2, 3]);
    let last = load_checkpoint(&checkpoint_dir(&dir.path().join("checkpoints"), 3)).unwrap();
    assert!(last.model.params == learner.policy.params);
}

#[test]
fn pause_resume_and_stop_act_between_steps_and_a_resumed_director_continues() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = tiny_model(dir.path());
    // What the controller saw: (step when paused, step 50 ms later, state then).
    let seen_paused = Arc::new(Mutex::new(None));
    let seen = seen_paused.clone();
    let events = run_director(
        plan(dir.path(), &model_dir, 6, Vec::new()),
        move |director| {
            actix::spawn(async move {
                // Pause once a step is done; the pause waits for the step under way.
                while director.send(GetStatus).await.unwrap().step < 1 {
                    actix::clock::sleep(Duration::from_millis(2)).await;
                }
                director.send(Pause).await.unwrap();
                let paused_at = loop {
                    let status = director.send(GetStatus).await.unwrap();
                    if status.state == RunState::Paused {
                        break status.step;
                    }
                    actix::clock::sleep(Duration::from_millis(2)).await;
                };
                actix::clock::sleep(Duration::from_millis(50)).await;
                let later = director.send(GetStatus).await.unwrap();
                *seen.lock().unwrap() = Some((paused_at, later.step, later.state));
                director.send(Resume).await.unwrap();
                director.send(Stop).await.unwrap();
            });
        },
    );
    let (paused_at, later, state) = seen_paused.lock().unwrap().expect("the controller ran");
    assert!(paused_at >= 1);
    assert_eq!(
        (later, state),
        (paused_at, RunState::Paused),
        "a paused run takes no steps"
    );
    assert_eq!(
        states(&events),
        [
            RunState::Starting,
            RunState::Running,
            RunState::Paused,
            RunState::Running,
            RunState::Stopping,
            RunState::Stopped
        ]
    );
    let done = steps(&events);
    let stopped_at = *done.last().unwrap();
    assert!(stopped_at < 6, "stop ends the run early");
    // The stop wrote a checkpoint of the last step taken.
    let root = dir.path().join("checkpoints");
    assert!(checkpoint_dir(&root, stopped_at).exists());

    // A new director resumes from it and finishes; the result equals a run that never stopped.
    let resumed = run_director(
        plan(
            dir.path(),
            &model_dir,
            6,
            vec![checkpoint_dir(&root, stopped_at)],
        ),
        |_| {},
    );
    assert_eq!(steps(&resumed), ((stopped_at + 1)..=6).collect::<Vec<_>>());
    let straight_dir = tempfile::tempdir().unwrap();
    run_director(plan(straight_dir.path(), &model_dir, 6, Vec::new()), |_| {});
    let a = std::fs::read(checkpoint_dir(&root, 6).join("model.safetensors")).unwrap();
    let b = std::fs::read(
        checkpoint_dir(&straight_dir.path().join("checkpoints"), 6).join("model.safetensors"),
    )
    .unwrap();
    assert!(a == b, "stopped + resumed differs from straight");
}

/// A plan for a preference run: 2 reasoning + 2 general prompts per step, two random reward
/// models (one reads the summary, one the whole response), running normalisation.
fn preference_plan(
    dir: &Path,
    model_dir: &Path,
    steps: u64,
    resume_from: Vec<PathBuf>,
) -> GrpoPlan {
    let mut plan = plan(dir, model_dir, steps, resume_from);
    plan.prompts_per_step = 4;
    let mut config = builtin_config("tiny-qwen2").unwrap();
    config.vocab_size = ByteTokenizer::VOCAB_SIZE;
    let scorer = |seed| RewardModelScorer {
        rm: RewardModel::from_causal_lm(
            &Model::random(config.clone(), seed, 0.05),
            Some(ByteTokenizer::EOS),
            seed,
            0.5,
        ),
        encoder: TextEncoder {
            tokenizer: Tokenizer::byte(),
            max_tokens: 64,
            over_long: OverLong::KeepEnd,
        },
        max_batch: 4,
    };
    let use_ = |name: &str, view| RewardModelUse {
        name: name.into(),
        view,
        weight: 1.0,
    };
    plan.preference = Some(Arc::new(PreferencePlan {
        settings: PreferenceSettings {
            stage: plan.settings.clone(),
            reward_models: vec![
                use_("helpful", ResponseView::Summary),
                use_("harmless", ResponseView::Whole),
            ],
            normalisation: Normalisation::Running { momentum: 0.5 },
            preference_from_step: 1,
        },
        scorers: Arc::new(vec![scorer(21), scorer(22)]),
        general: vec!["say hi".into(), "say bye".into(), "thank Ada".into()],
        n_reasoning: 2,
        n_general: 2,
    }));
    plan
}

#[test]
fn a_preference_run_through_the_actors_equals_preference_step_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = tiny_model(dir.path());
    let plan = preference_plan(dir.path(), &model_dir, 4, Vec::new());
    let preference = plan.preference.clone().unwrap();

    let mut learner = GrpoLearner::new(load_model_dir(&model_dir).unwrap(), plan.learner.clone());
    let mut normaliser = RewardNormaliser::default();
    let scorers: Vec<&dyn ResponseScorer> = preference
        .scorers
        .iter()
        .map(|s| s as &dyn ResponseScorer)
        .collect();
    let mut expected = Vec::new();
    for step in 0..4 {
        let r = preference_step(
            &mut learner,
            &plan.tokenizer,
            &plan.sandbox,
            &plan.preference_prompts(step),
            &preference.settings,
            &scorers,
            &mut normaliser,
            step,
            plan.step_seed(step),
        )
        .unwrap();
        expected.push((r.report.deterministic(), r.stats));
    }

    let events = run_director(plan, |_| {});
    assert_eq!(
        states(&events),
        [RunState::Starting, RunState::Running, RunState::Finished]
    );
    let got: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            RunEventKind::Step(record, samples) => {
                assert_eq!(samples.len(), 1);
                let names: Vec<&str> = record.components.iter().map(|c| c.0.as_str()).collect();
                assert_eq!(names, ["accuracy", "format", "language", "preference"]);
                assert_eq!(record.data_cursor, record.step * 2);
                Some((
                    record.report.deterministic(),
                    record.preference.clone().expect("preference statistics"),
                ))
            }
            _ => None,
        })
        .collect();
    assert_eq!(got, expected);
    assert!(expected.iter().skip(1).all(|(_, s)| s.preference_on));
    let root = dir.path().join("checkpoints");
    let last = load_checkpoint(&checkpoint_dir(&root, 4)).unwrap();
    assert!(last.model.params == learner.policy.params);
    assert_eq!(last.state.reward_normaliser.as_ref(), Some(&normaliser));

    // A director resumed from step 2 (weights, optimizer and the normaliser's moments) ends
    // with the same weights.
    std::fs::remove_dir_all(checkpoint_dir(&root, 4)).unwrap();
    let resumed = preference_plan(dir.path(), &model_dir, 4, vec![checkpoint_dir(&root, 2)]);
    let events = run_director(resumed, |_| {});
    assert_eq!(steps(&events), [3, 4]);
    let last = load_checkpoint(&checkpoint_dir(&root, 4)).unwrap();
    assert!(last.model.params == learner.policy.params);
}

#[test]
fn dynamic_sampling_through_the_actors_equals_grpo_step_from_and_resumes_at_the_saved_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = tiny_model(dir.path());
    let mut dynamic = plan(dir.path(), &model_dir, 4, Vec::new());
    dynamic.dynamic_sampling = 2;
    let sandbox = CodeSandbox::unavailable("no code in this test");

    // In-process: the same stream, cursor carried across steps.
    let mut learner =
        GrpoLearner::new(load_model_dir(&model_dir).unwrap(), dynamic.learner.clone());
    let ctx = StepContext {
        tokenizer: &dynamic.tokenizer,
        settings: &dynamic.settings,
        sandbox: &sandbox,
    };
    let mut cursor = 0u64;
    let mut expected = Vec::new();
    let mut cursors = Vec::new();
    for step in 0..4 {
        let mut next = cursor;
        let mut source = |n: usize| {
            let batch = dynamic.take(next, n);
            next += batch.len() as u64;
            batch
        };
        let report = grpo_step_from(
            &mut learner,
            &ctx,
            &mut source,
            2,
            2,
            dynamic.step_seed(step),
        )
        .unwrap();
        cursor += report.dynamic.prompts_consumed as u64;
        cursors.push(cursor);
        expected.push(report.deterministic());
    }
    assert!(
        expected.iter().any(|r| r.dynamic.resampled_groups > 0),
        "a random tiny model should leave some groups flat"
    );

    let events = run_director(dynamic, |_| {});
    let got: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            RunEventKind::Step(record, _) => {
                Some((record.report.deterministic(), record.data_cursor))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        got,
        expected
            .into_iter()
            .zip(cursors.clone())
            .collect::<Vec<_>>()
    );
    let root = dir.path().join("checkpoints");
    let at2 = load_checkpoint(&checkpoint_dir(&root, 2)).unwrap();
    assert_eq!(at2.state.data_cursor, cursors[1]);

    // Resumed from step 2: the saved cursor, the same weights at the end.
    std::fs::remove_dir_all(checkpoint_dir(&root, 4)).unwrap();
    let mut resumed = plan(dir.path(), &model_dir, 4, vec![checkpoint_dir(&root, 2)]);
    resumed.dynamic_sampling = 2;
    let events = run_director(resumed, |_| {});
    assert_eq!(steps(&events), [3, 4]);
    let last = load_checkpoint(&checkpoint_dir(&root, 4)).unwrap();
    assert_eq!(last.state.data_cursor, cursors[3]);
    assert!(last.model.params == learner.policy.params);
}
