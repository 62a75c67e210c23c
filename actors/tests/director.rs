//! The actor driver of the RL step (Director → ActorWorkers: LearnerActor sampling, JudgeActor ‖
//! LangActor ‖ RewardModelActor, LearnerActor learning, KeeperActor) and the in-process driver
//! (`r1ctl train`: LocalWorkers) run the same `rl_step` over different workers: for one GRPO
//! config (with dynamic sampling) and one preference config they end with the same weights.
//! Pause, resume and stop act between steps; a resumed director continues where the checkpoint
//! left off.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;

use r1_actors::data::builtin_task;
use r1_actors::judge::reward::{CodeSandbox, RewardRules};
use r1_actors::judge::tasks::Split;
use r1_actors::keeper::checkpoint_dir;
use r1_actors::learner::LearnerConfig;
use r1_actors::messages::{GetStatus, Pause, Resume, RunEvent, RunEventKind, RunState, Stop};
use r1_actors::reward_model::{OverLong, RewardModelScorer, TextEncoder};
use r1_actors::service::Director;
use r1_actors::stages::preference::{
    Normalisation, PreferenceSettings, ResponseView, RewardModelUse,
};
use r1_actors::stages::rl::{PreferencePlan, RlPlan, REWARD_TIMEOUT};
use r1_actors::stages::{
    run_in_process, CheckpointConfig, ModelSpec, RunSpec, StageEvent, StageProblem, StageSettings,
};
use r1_kernels::model::tiny::TinyModel;
use r1_kernels::sample::SamplingParams;
use r1_kernels::template::{PromptTemplate, TemplateKind};
use r1_kernels::tokenizer::{ByteTokenizer, Tokenizer};
use r1_kernels::train::LrSchedule;

fn tiny_model(dir: &Path) -> PathBuf {
    let model_dir = dir.join("model");
    TinyModel::byte().seed(1).save(&model_dir).unwrap();
    model_dir
}

/// A GRPO plan writing under `dir`: 2 prompts per step, groups of 2, checkpoints every 2 steps.
fn plan(dir: &Path, model_dir: &Path, steps: u64) -> RlPlan {
    let mut learner = LearnerConfig {
        group_size: 2,
        minibatches: 1,
        schedule: LrSchedule::constant(1e-3),
        ..LearnerConfig::default()
    };
    learner.grpo.beta = 0.01;
    learner.grpo.max_completion_length = 8;
    let template = PromptTemplate::new(TemplateKind::ChatMl);
    RlPlan {
        run: RunSpec {
            seed: 3,
            output_dir: dir.to_path_buf(),
            checkpoint: CheckpointConfig {
                every_steps: 2,
                keep_last: 5,
            },
            config_hash: "hash".into(),
            stop_at: None,
            devices: Default::default(),
        },
        model: ModelSpec {
            path: model_dir.to_path_buf(),
            template,
            tokenizer: Some("byte".into()),
        },
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
            template,
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
        samples_per_step: 1,
        reward_timeout: REWARD_TIMEOUT,
        sandbox: Arc::new(CodeSandbox::unavailable("no code in this test")),
        placement: Default::default(),
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
    plan: RlPlan,
    resume_from: Vec<PathBuf>,
    control: impl FnOnce(Addr<Director>) + 'static,
) -> Vec<RunEventKind> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sys = System::new();
    let recorded = events.clone();
    sys.block_on(async move {
        let recorder = Recorder { events: recorded }.start();
        let director =
            Director::new("test".into(), plan, resume_from, None, recorder.recipient()).start();
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

/// The final policy's file of a run that wrote its checkpoints under `dir`.
fn weights_at(dir: &Path, step: u64) -> Vec<u8> {
    std::fs::read(checkpoint_dir(&dir.join("checkpoints"), step).join("model.safetensors")).unwrap()
}

#[test]
fn the_actor_and_in_process_drivers_take_the_same_steps() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = tiny_model(dir.path());
    let mut dynamic = plan(&dir.path().join("grpo"), &model_dir, 4);
    dynamic.dynamic_sampling = 2;
    let preference = preference_plan(&dir.path().join("preference"), &model_dir, 3);
    for config in [dynamic, preference] {
        let never = AtomicBool::new(false);
        let mut local = config.clone();
        local.run.output_dir = config.run.output_dir.join("in-process");
        let mut expected = Vec::new();
        let report = run_in_process(
            &local,
            &mut |event| match event {
                StageEvent::GrpoStep { report, .. } => expected.push(report.deterministic()),
                StageEvent::PreferenceStep { report, .. } => {
                    expected.push(report.report.deterministic())
                }
                _ => {}
            },
            &never,
        )
        .unwrap();
        assert_eq!(report.steps, config.steps);

        let events = run_director(config.clone(), Vec::new(), |_| {});
        assert_eq!(
            states(&events),
            [RunState::Starting, RunState::Running, RunState::Finished]
        );
        let got: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                RunEventKind::Step(record, samples) => {
                    assert_eq!(samples.len(), 1);
                    assert!(record.tokens_generated > 0 && record.tokens_trained > 0);
                    Some(record.report.deterministic())
                }
                _ => None,
            })
            .collect();
        assert_eq!(got, expected);
        assert!(
            weights_at(&config.run.output_dir, config.steps)
                == weights_at(&local.run.output_dir, config.steps),
            "the actor driver ended with other weights"
        );
    }
}

#[test]
fn pause_resume_and_stop_act_between_steps_and_a_resumed_director_continues() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = tiny_model(dir.path());
    // What the controller saw: (step when paused, step 50 ms later, state then).
    let seen_paused = Arc::new(Mutex::new(None));
    let seen = seen_paused.clone();
    let events = run_director(
        plan(dir.path(), &model_dir, 6),
        Vec::new(),
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
        plan(dir.path(), &model_dir, 6),
        vec![checkpoint_dir(&root, stopped_at)],
        |_| {},
    );
    assert_eq!(steps(&resumed), ((stopped_at + 1)..=6).collect::<Vec<_>>());
    let straight_dir = tempfile::tempdir().unwrap();
    run_director(plan(straight_dir.path(), &model_dir, 6), Vec::new(), |_| {});
    let a = std::fs::read(checkpoint_dir(&root, 6).join("model.safetensors")).unwrap();
    let b = std::fs::read(
        checkpoint_dir(&straight_dir.path().join("checkpoints"), 6).join("model.safetensors"),
    )
    .unwrap();
    assert!(a == b, "stopped + resumed differs from straight");
}

/// A plan for a preference run: 2 reasoning + 2 general prompts per step, two random reward
/// models (one reads the summary, one the whole response), running normalisation.
fn preference_plan(dir: &Path, model_dir: &Path, steps: u64) -> RlPlan {
    let mut plan = plan(dir, model_dir, steps);
    plan.prompts_per_step = 4;
    let scorer = |seed| {
        RewardModelScorer::new(
            TinyModel::byte()
                .seed(seed)
                .reward_model(Some(ByteTokenizer::EOS)),
            TextEncoder {
                tokenizer: Tokenizer::byte(),
                max_tokens: 64,
                over_long: OverLong::KeepEnd,
            },
            4,
        )
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
