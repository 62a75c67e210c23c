//! An in-process RL run's records: `steps.jsonl` and `samples.jsonl` in its output directory,
//! the same for the same seed, equal after a stop, a kill (records of steps past the checkpoint,
//! a torn last line) and a resume to those of a run that never stopped; the step charts written
//! from them at the end, one point per step.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use r1_actors::data::DataSource;
use r1_actors::learner::LearnerConfig;
use r1_actors::messages::StepRecord;
use r1_actors::messages::{PhaseTimes, SampleRecord};
use r1_actors::report::{read_samples, read_steps, write_step_charts, SAMPLES_FILE, STEPS_FILE};
use r1_actors::stages::preference::{Normalisation, ResponseView};
use r1_actors::stages::rl::SAMPLES_PER_STEP;
use r1_actors::stages::{
    run_grpo, run_preference, CheckpointConfig, GeneralPrompts, GrpoJob, GrpoLoopConfig, ModelSpec,
    PreferenceJob, RewardModelSpec, RunSpec, StageEvent,
};
use r1_kernels::model::save_reward_model_dir;
use r1_kernels::model::tiny::TinyModel;
use r1_kernels::sample::SamplingParams;
use r1_kernels::template::{PromptTemplate, TemplateKind};
use r1_kernels::tokenizer::ByteTokenizer;
use r1_kernels::train::{GrpoConfig, LrSchedule};

const STEPS: u64 = 3;

fn model_dir(root: &Path) -> PathBuf {
    let dir = root.join("base");
    if !dir.exists() {
        TinyModel::byte().seed(4).save(&dir).unwrap();
    }
    dir
}

fn job(root: &Path, output: &str, seed: u64) -> GrpoJob {
    GrpoJob {
        run: RunSpec {
            seed,
            output_dir: root.join(output),
            checkpoint: CheckpointConfig {
                every_steps: 100,
                keep_last: 2,
            },
            config_hash: "records".into(),
            stop_at: None,
            devices: Default::default(),
        },
        model: ModelSpec {
            path: model_dir(root),
            template: PromptTemplate::new(TemplateKind::ChatMl),
            tokenizer: Some("byte".into()),
        },
        data: DataSource::Builtin {
            task: "arithmetic".into(),
            train_size: 12,
            test_size: 2,
        },
        sampling: SamplingParams {
            temperature: 1.0,
            max_new_tokens: 10,
            ..SamplingParams::default()
        },
        rules: Default::default(),
        learner: LearnerConfig {
            grpo: GrpoConfig {
                beta: 0.01,
                max_completion_length: 10,
                ..GrpoConfig::default()
            },
            group_size: 2,
            minibatches: 1,
            schedule: LrSchedule::constant(1e-3),
            ..LearnerConfig::default()
        },
        grpo: GrpoLoopConfig {
            steps: STEPS,
            prompts_per_step: 4,
            max_batch: 8,
            dynamic_sampling: 0,
        },
    }
}

/// A step record without its wall times: what the seed determines.
fn timeless(mut s: StepRecord) -> StepRecord {
    s.report = s.report.deterministic();
    s.phases = PhaseTimes::default();
    s.seconds = 0.0;
    s
}

fn records(dir: &Path) -> (Vec<StepRecord>, Vec<u8>) {
    let steps = read_steps(dir).unwrap().into_iter().map(timeless).collect();
    (steps, std::fs::read(dir.join(SAMPLES_FILE)).unwrap())
}

fn run_to_end(job: &GrpoJob) {
    let report = run_grpo(job, &mut |_| {}, &AtomicBool::new(false)).unwrap();
    assert_eq!((report.steps, report.stopped), (STEPS, false));
}

#[test]
fn a_run_records_its_steps_and_samples_the_same_for_the_same_seed_and_across_a_resume() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let straight = job(root, "straight", 5);
    run_to_end(&straight);
    let out = &straight.run.output_dir;
    let steps = read_steps(out).unwrap();
    let samples: Vec<SampleRecord> = read_samples(out).unwrap();
    assert_eq!(
        steps.iter().map(|s| s.step).collect::<Vec<_>>(),
        (1..=STEPS).collect::<Vec<_>>()
    );
    assert_eq!(samples.len(), STEPS as usize * SAMPLES_PER_STEP);
    for (i, s) in samples.iter().enumerate() {
        assert_eq!(s.step, 1 + (i / SAMPLES_PER_STEP) as u64);
        assert!(!s.prompt.is_empty(), "{s:?}");
        assert!(s.reward.is_finite() && s.accuracy.is_finite() && s.format.is_finite());
    }

    // The same seed: the same records (wall times aside); another seed: other samples.
    let again = job(root, "again", 5);
    run_to_end(&again);
    assert_eq!(records(out), records(&again.run.output_dir));
    let other = job(root, "other", 6);
    run_to_end(&other);
    assert_ne!(records(out).1, records(&other.run.output_dir).1);

    // Stopped after step 1 (checkpoint 1), then killed after recording a step 2 it never
    // checkpointed (another seed's records, the last line torn), then resumed.
    let split = job(root, "split", 5);
    let stop = AtomicBool::new(false);
    let first = run_grpo(
        &split,
        &mut |e| {
            if matches!(e, StageEvent::GrpoStep { .. }) {
                stop.store(true, Ordering::Relaxed);
            }
        },
        &stop,
    )
    .unwrap();
    assert_eq!((first.steps, first.stopped), (1, true));
    let split_dir = &split.run.output_dir;
    assert_eq!(read_steps(split_dir).unwrap().len(), 1);
    // A stopped run has its charts too.
    assert!(split_dir.join("reward.svg").is_file());
    for (name, keep) in [(STEPS_FILE, 1), (SAMPLES_FILE, SAMPLES_PER_STEP)] {
        let theirs = std::fs::read_to_string(other.run.output_dir.join(name)).unwrap();
        let step2: String = theirs
            .lines()
            .skip(keep)
            .take(keep)
            .map(|l| format!("{l}\n"))
            .collect();
        let mut ours = std::fs::read_to_string(split_dir.join(name)).unwrap();
        ours.push_str(&step2);
        ours.push_str("{\"step\": 3, \"pro");
        std::fs::write(split_dir.join(name), ours).unwrap();
    }
    let mut resumed = None;
    let second = run_grpo(
        &split,
        &mut |e| {
            if let StageEvent::Resumed { step } = e {
                resumed = Some(step);
            }
        },
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!((resumed, second.steps), (Some(1), STEPS));
    assert_eq!(records(out), records(split_dir));
}

/// The `d` commands of the chart path named `series` in the SVG `file`.
fn path_points(file: &Path, series: &str) -> usize {
    let svg = std::fs::read_to_string(file).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let path = doc
        .descendants()
        .find(|n| n.tag_name().name() == "path" && n.attribute("data-series") == Some(series))
        .unwrap_or_else(|| panic!("{}: no `{series}` series", file.display()));
    path.attribute("d")
        .unwrap()
        .split_whitespace()
        .filter(|t| t.starts_with(['M', 'L']))
        .count()
}

#[test]
fn the_charts_of_a_run_have_one_point_per_step_and_are_rewritten_from_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let run = job(dir.path(), "run", 7);
    run_to_end(&run);
    let out = &run.run.output_dir;
    for (file, series) in [
        ("reward.svg", "reward"),
        ("reward.svg", "accuracy"),
        ("reward.svg", "format"),
        ("response_length.svg", "response length"),
        ("reflection_rate.svg", "reflection rate"),
        ("kl.svg", "KL"),
        ("entropy.svg", "entropy"),
    ] {
        assert_eq!(
            path_points(&out.join(file), series),
            STEPS as usize,
            "{file}"
        );
    }
    let before = std::fs::read(out.join("kl.svg")).unwrap();
    std::fs::remove_file(out.join("kl.svg")).unwrap();
    let written = write_step_charts(out, &[]).unwrap();
    assert_eq!(written.len(), 5);
    assert_eq!(std::fs::read(out.join("kl.svg")).unwrap(), before);
}

#[test]
fn a_preference_run_records_its_reasoning_and_general_samples_the_same_across_a_resume() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let base = job(root, "unused", 5);
    let rm = TinyModel::byte()
        .seed(11)
        .reward_model(Some(ByteTokenizer::EOS));
    save_reward_model_dir(&rm, &root.join("helpful")).unwrap();
    std::fs::write(
        root.join("general.jsonl"),
        "{\"prompt\": \"say hi\"}\n{\"prompt\": \"say bye\"}\n",
    )
    .unwrap();
    let preference = |output: &str, stop_at: Option<u64>| PreferenceJob {
        run: RunSpec {
            output_dir: root.join(output),
            stop_at,
            ..base.run.clone()
        },
        model: base.model.clone(),
        data: base.data.clone(),
        general: GeneralPrompts {
            path: root.join("general.jsonl"),
            field: "prompt".into(),
        },
        sampling: base.sampling.clone(),
        rules: Default::default(),
        learner: base.learner.clone(),
        grpo: base.grpo.clone(),
        reward_models: vec![RewardModelSpec {
            name: "helpful".into(),
            path: root.join("helpful"),
            tokenizer: Some("byte".into()),
            view: ResponseView::Whole,
            weight: 1.0,
            max_batch: 4,
            max_tokens: 64,
        }],
        normalisation: Normalisation::Running { momentum: 0.5 },
        preference_from_step: 1,
        general_share: 0.5,
    };
    let never = AtomicBool::new(false);
    let whole = preference("whole", None);
    assert_eq!(
        run_preference(&whole, &mut |_| {}, &never).unwrap().steps,
        STEPS
    );
    let out = &whole.run.output_dir;
    let steps = read_steps(out).unwrap();
    assert_eq!(steps.len(), STEPS as usize);
    assert!(steps.iter().all(|s| s.preference.is_some()));
    let samples = read_samples(out).unwrap();
    assert_eq!(samples.len(), STEPS as usize * SAMPLES_PER_STEP);
    // Reasoning prompts (arithmetic) and general ones (the greetings) are both kept.
    assert!(samples.iter().any(|s| s.prompt.starts_with("say ")));
    assert!(samples.iter().any(|s| !s.prompt.starts_with("say ")));

    run_preference(&preference("split", Some(2)), &mut |_| {}, &never).unwrap();
    run_preference(&preference("split", None), &mut |_| {}, &never).unwrap();
    assert_eq!(records(out), records(&root.join("split")));
    assert!(root.join("split/reward.svg").is_file());
}
