//! The runnable stages as library functions, on a tiny byte-tokenizer model: the GRPO step's
//! statistics and dynamic sampling, SFT and GRPO honouring the stop flag and resuming exactly,
//! rejection sampling writing provenance, distillation and evaluation.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use r1_actors::data::{DataSource, FieldMap};
use r1_actors::judge::reward::CodeSandbox;
use r1_actors::judge::tasks::{arithmetic, Split};
use r1_actors::learner::{GrpoLearner, LearnerConfig};
use r1_actors::stages::preference::{Normalisation, ResponseView};
use r1_actors::stages::rejection::SftRecord;
use r1_actors::stages::rl::{rl_step, RlPlan, RlState, REWARD_TIMEOUT};
use r1_actors::stages::{
    grpo_step, run_distill, run_eval, run_grpo, run_preference, run_rejection, run_sft,
    CheckpointConfig, DistillConfig, DistillJob, EvalConfig, EvalJob, GeneralPrompts, GrpoJob,
    GrpoLoopConfig, ModelSpec, PreferenceJob, RejectionConfig, RejectionJob, RewardModelSpec,
    RunSpec, SftConfig, SftJob, StageEvent, StageProblem, StageSettings,
};
use r1_actors::stages::{GrpoRunReport, GrpoStepReport, LocalWorkers};
use r1_kernels::model::save_reward_model_dir;
use r1_kernels::model::tiny::TinyModel;
use r1_kernels::sample::SamplingParams;
use r1_kernels::template::{PromptTemplate, TemplateKind};
use r1_kernels::tokenizer::{ByteTokenizer, Tokenizer};
use r1_kernels::train::{GrpoConfig, LrSchedule};

fn model_dir(root: &Path, name: &str, seed: u64) -> PathBuf {
    let dir = root.join(name);
    TinyModel::byte().seed(seed).save(&dir).unwrap();
    dir
}

fn spec(path: &Path) -> ModelSpec {
    ModelSpec {
        path: path.to_path_buf(),
        template: PromptTemplate::new(TemplateKind::ChatMl),
        tokenizer: Some("byte".into()),
    }
}

fn run_spec(output: &Path, stop_at: Option<u64>) -> RunSpec {
    RunSpec {
        seed: 5,
        output_dir: output.to_path_buf(),
        checkpoint: CheckpointConfig {
            every_steps: 100,
            keep_last: 2,
        },
        config_hash: "test".into(),
        stop_at,
        devices: Default::default(),
    }
}

fn learner_config() -> LearnerConfig {
    LearnerConfig {
        grpo: GrpoConfig {
            beta: 0.01,
            max_completion_length: 12,
            ..GrpoConfig::default()
        },
        group_size: 2,
        minibatches: 1,
        schedule: LrSchedule::constant(1e-3),
        ..LearnerConfig::default()
    }
}

fn sampling(max_new_tokens: usize) -> SamplingParams {
    SamplingParams {
        temperature: 1.0,
        max_new_tokens,
        ..SamplingParams::default()
    }
}

fn settings() -> StageSettings {
    StageSettings {
        template: PromptTemplate::new(TemplateKind::ChatMl),
        sampling: sampling(12),
        rules: Default::default(),
        max_batch: 8,
    }
}

/// One GRPO step of the stage's `rl_step` with in-process workers on `learner`: `prompts_per_step`
/// problems of `pool` from cursor 0, up to `extra_rounds` dynamic-sampling rounds, sampled with
/// `seed`. Returns the report and the data cursor after the step.
fn sourced_step(
    learner: &mut GrpoLearner,
    pool: Vec<StageProblem>,
    settings: StageSettings,
    prompts_per_step: usize,
    extra_rounds: usize,
    seed: u64,
) -> (GrpoStepReport, u64) {
    let sandbox = CodeSandbox::unavailable("none");
    let plan = RlPlan {
        run: run_spec(Path::new("unused"), None),
        model: spec(Path::new("unused")),
        tokenizer: Arc::new(Tokenizer::byte()),
        problems: Arc::new(pool),
        settings,
        learner: learner.config.clone(),
        steps: 1,
        prompts_per_step,
        dynamic_sampling: extra_rounds,
        samples_per_step: 0,
        reward_timeout: REWARD_TIMEOUT,
        sandbox: Arc::new(CodeSandbox::unavailable("none")),
        placement: Default::default(),
        preference: None,
    };
    let mut state = RlState::default();
    let mut workers = LocalWorkers::with_learner(&plan, learner, &sandbox, Vec::new());
    let done = rl_step(&plan, &mut workers, &mut state, seed, false).unwrap();
    (done.record.report, state.cursor)
}

#[test]
fn a_step_reports_components_phases_and_tokens() {
    let tokenizer = Tokenizer::byte();
    let problems = arithmetic::generate(5, Split::Train, 3).unwrap();
    let mut learner = GrpoLearner::new(TinyModel::byte().seed(1).model(), learner_config());
    let report = grpo_step(&mut learner, &tokenizer, &problems, &settings(), 9).unwrap();
    let names: Vec<&str> = report.components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["accuracy", "format", "language"]);
    assert_eq!(report.components[0].mean, report.accuracy);
    assert!(report.phases.sample > 0.0 && report.phases.learn > 0.0);
    assert_eq!(report.dynamic.rounds, 1);
    assert_eq!(report.dynamic.prompts_consumed, 3);
    assert!(report.tokens_generated > 0);
    assert_eq!(report.learner.tokens_trained, report.tokens_generated);
    assert!(
        (report.tokens_generated as f64 - report.learner.completion_len_mean * 6.0).abs() < 1e-9
    );
}

#[test]
fn without_dynamic_sampling_a_sourced_step_is_the_plain_step() {
    let tokenizer = Tokenizer::byte();
    let tasks = arithmetic::generate(5, Split::Train, 3).unwrap();
    let mut plain = GrpoLearner::new(TinyModel::byte().seed(1).model(), learner_config());
    let a = grpo_step(&mut plain, &tokenizer, &tasks, &settings(), 9).unwrap();
    // The same problems as dataset-style stage problems, through a prompt source.
    let problems: Vec<StageProblem> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| StageProblem::from_task(t, i))
        .collect();
    let mut sourced = GrpoLearner::new(TinyModel::byte().seed(1).model(), learner_config());
    let (b, _) = sourced_step(&mut sourced, problems, settings(), 3, 0, 9);
    assert_eq!(plain.policy.params, sourced.policy.params);
    assert_eq!(a.learner, b.learner);
}

#[test]
fn dynamic_sampling_replaces_flat_groups_deterministically() {
    let pool: Vec<StageProblem> = arithmetic::generate(7, Split::Train, 40)
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, t)| StageProblem::from_task(t, i))
        .collect();
    let run = || {
        let mut learner = GrpoLearner::new(TinyModel::byte().seed(2).model(), learner_config());
        let (report, cursor) = sourced_step(&mut learner, pool.clone(), settings(), 4, 2, 3);
        (learner.policy.params, report, cursor as usize)
    };
    let (params, report, cursor) = run();
    let d = report.dynamic;
    // The source advanced by exactly what the report says it consumed.
    assert_eq!(d.prompts_consumed, cursor);
    assert_eq!(d.prompts_consumed, 4 + d.resampled_groups);
    assert!(d.rounds >= 1 && d.rounds <= 3);
    // The batch always holds prompts_per_step groups.
    assert_eq!(
        report.learner.completion_len_mean * 8.0,
        report.learner.tokens_trained as f64
    );
    // A random model rarely gets anything right: flat groups are dropped and replaced.
    assert!(
        d.resampled_groups > 0,
        "a random model gave informative groups everywhere: {d:?}"
    );
    assert!(report.tokens_generated >= report.learner.tokens_trained);
    let (params_b, report_b, _) = run();
    assert_eq!(params, params_b, "dynamic sampling is deterministic");
    assert_eq!(report.dynamic, report_b.dynamic);
}

fn write_sft_set(path: &Path) {
    // One short problem the tiny model memorises in a few dozen steps.
    let line = r#"{"prompt": "7?", "response": "<think>7</think><answer>7</answer>"}"#;
    std::fs::write(path, format!("{line}\n").repeat(8)).unwrap();
}

fn sft_job(root: &Path, model: &Path, output: &str, stop_at: Option<u64>) -> SftJob {
    let data = root.join("sft.jsonl");
    write_sft_set(&data);
    SftJob {
        run: run_spec(&root.join(output), stop_at),
        model: spec(model),
        sft: SftConfig {
            data: Some(data),
            epochs: 6,
            batch_size: 4,
            pack_length: 128,
            lr: 3e-3,
            warmup_steps: 2,
            ..SftConfig::default()
        },
    }
}

#[test]
fn sft_stops_on_the_flag_and_resumes_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_dir(dir.path(), "base", 3);
    let never = AtomicBool::new(false);
    let straight = run_sft(
        &sft_job(dir.path(), &model, "straight", None),
        &mut |_| {},
        &never,
    )
    .unwrap();
    assert_eq!((straight.steps, straight.steps_planned), (12, 12));
    assert!(!straight.stopped);
    assert!(straight.last_loss.unwrap() < straight.first_loss.unwrap());
    let final_a = straight.final_model.unwrap();

    // Stop after the third step: the stage checkpoints and says it stopped.
    let stop = AtomicBool::new(false);
    let job = sft_job(dir.path(), &model, "split", None);
    let first = run_sft(
        &job,
        &mut |e| {
            if let StageEvent::SftStep { step: 3, .. } = e {
                stop.store(true, Ordering::Relaxed);
            }
        },
        &stop,
    )
    .unwrap();
    assert!(first.stopped);
    assert_eq!(first.steps, 3);
    assert!(first.checkpoint.unwrap().ends_with("step-00000003"));
    assert!(first.final_model.is_none());
    let mut resumed_at = None;
    let second = run_sft(
        &job,
        &mut |e| {
            if let StageEvent::Resumed { step } = e {
                resumed_at = Some(step);
            }
        },
        &never,
    )
    .unwrap();
    assert_eq!(resumed_at, Some(3));
    let final_b = second.final_model.unwrap();
    assert_eq!(
        std::fs::read(final_a.join("model.safetensors")).unwrap(),
        std::fs::read(final_b.join("model.safetensors")).unwrap(),
        "the resumed run's weights differ from the straight run's"
    );
}

/// Runs `job` until its first step ends (the stop flag set from the step event), then again to
/// the end from its checkpoint; returns both reports.
fn stopped_after_one_step_then_resumed(job: &GrpoJob) -> (GrpoRunReport, GrpoRunReport) {
    let stop = AtomicBool::new(false);
    let first = run_grpo(
        job,
        &mut |e| {
            if matches!(e, StageEvent::GrpoStep { .. }) {
                stop.store(true, Ordering::Relaxed);
            }
        },
        &stop,
    )
    .unwrap();
    assert!(first.stopped && first.steps == 1);
    let second = run_grpo(job, &mut |_| {}, &AtomicBool::new(false)).unwrap();
    (first, second)
}

#[test]
fn grpo_on_a_jsonl_dataset_stops_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_dir(dir.path(), "base", 4);
    let data = dir.path().join("math.jsonl");
    std::fs::write(
        &data,
        "{\"q\": \"1+1?\", \"a\": 2}\n{\"q\": \"2+3?\", \"a\": \"5\"}\n{\"q\": \"3*3?\", \"a\": 9}\n",
    )
    .unwrap();
    let job = |output: &str| GrpoJob {
        run: run_spec(&dir.path().join(output), None),
        model: spec(&model),
        data: DataSource::Jsonl {
            path: data.clone(),
            fields: FieldMap {
                prompt: "q".into(),
                answer: "a".into(),
                ..FieldMap::default()
            },
        },
        sampling: sampling(10),
        rules: Default::default(),
        learner: learner_config(),
        grpo: GrpoLoopConfig {
            steps: 3,
            prompts_per_step: 2,
            max_batch: 8,
            dynamic_sampling: 1,
        },
    };
    let never = AtomicBool::new(false);
    let mut steps = 0;
    let straight = run_grpo(
        &job("straight"),
        &mut |e| {
            if let StageEvent::GrpoStep { report, .. } = e {
                steps += 1;
                assert_eq!(report.components.len(), 3);
            }
        },
        &never,
    )
    .unwrap();
    assert_eq!((steps, straight.steps, straight.stopped), (3, 3, false));
    assert!(straight.data_cursor >= 6);

    let stop = AtomicBool::new(true);
    let none = run_grpo(&job("split"), &mut |_| {}, &stop).unwrap();
    assert!(none.stopped && none.steps == 0 && none.checkpoint.is_none());
    let (first, second) = stopped_after_one_step_then_resumed(&job("split"));
    assert!(first.checkpoint.is_some());
    assert_eq!(second.data_cursor, straight.data_cursor);
    assert_eq!(
        std::fs::read(straight.final_model.unwrap().join("model.safetensors")).unwrap(),
        std::fs::read(second.final_model.unwrap().join("model.safetensors")).unwrap()
    );
}

#[test]
fn grpo_with_a_bf16_sampler_corrects_reports_the_mismatch_and_resumes_exactly() {
    use r1_kernels::device::Precision;
    use r1_kernels::train::SamplerIsMode;
    let dir = tempfile::tempdir().unwrap();
    let model = model_dir(dir.path(), "base", 4);
    // Every correction mode's path: per token, and per completion (on-policy, which needs the
    // training pass's log-probs before the head).
    for mode in [SamplerIsMode::TokenTruncate, SamplerIsMode::SequenceMask] {
        let job = |output: &str| {
            let mut run = run_spec(&dir.path().join(format!("{mode:?}-{output}")), None);
            run.devices.sampler_precision = Precision::Bf16;
            let mut learner = learner_config();
            learner.grpo.sampler_is_mode = mode;
            GrpoJob {
                run,
                model: spec(&model),
                data: DataSource::Builtin {
                    task: "arithmetic".into(),
                    train_size: 20,
                    test_size: 4,
                },
                sampling: sampling(10),
                rules: Default::default(),
                learner,
                grpo: GrpoLoopConfig {
                    steps: 3,
                    prompts_per_step: 2,
                    max_batch: 8,
                    dynamic_sampling: 0,
                },
            }
        };
        let never = AtomicBool::new(false);
        let mut reports = Vec::new();
        let mut notes = Vec::new();
        let straight = run_grpo(
            &job("straight"),
            &mut |e| match e {
                StageEvent::GrpoStep { report, .. } => reports.push(report),
                StageEvent::Note { message } => notes.push(message),
                _ => {}
            },
            &never,
        )
        .unwrap();
        assert_eq!(straight.steps, 3);
        assert!(
            notes.iter().any(|n| n.contains("sampler_precision = bf16")),
            "the run's log says the sampler is bf16: {notes:?}"
        );
        for r in &reports {
            let m = r
                .learner
                .sampler
                .expect("a bf16 sampler's mismatch is reported");
            assert!(m.tokens > 0, "{m:?}");
            assert!(
                m.logp_diff_mean > 0.0 && m.logp_diff_mean < 0.05 && m.logp_diff_max < 1.0,
                "{m:?}"
            );
            assert!(m.is_min > 0.0 && m.is_max <= 2.0 + 1e-12, "{m:?}");
        }

        // Stopped after one step and resumed: the same weights as the run that never stopped.
        let (_, second) = stopped_after_one_step_then_resumed(&job("split"));
        assert_eq!(
            std::fs::read(straight.final_model.unwrap().join("model.safetensors")).unwrap(),
            std::fs::read(second.final_model.unwrap().join("model.safetensors")).unwrap(),
            "{mode:?}"
        );
    }
}

/// A teacher that has memorised "7?" → 7 (SFT of a fresh tiny model under `dir`), so rejection
/// sampling keeps some of its samples; returns its final model directory.
fn teacher(dir: &Path) -> PathBuf {
    let base = model_dir(dir, "base", 3);
    run_sft(
        &sft_job(dir, &base, "teacher", None),
        &mut |_| {},
        &AtomicBool::new(false),
    )
    .unwrap()
    .final_model
    .unwrap()
}

#[test]
fn rejection_distill_and_eval_run_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let never = AtomicBool::new(false);
    let teacher = teacher(dir.path());
    let data = dir.path().join("q.jsonl");
    std::fs::write(
        &data,
        "{\"prompt\": \"7?\", \"answer\": \"7\"}\n{\"prompt\": \"7?\", \"answer\": \"8\"}\n",
    )
    .unwrap();
    let source = DataSource::Jsonl {
        path: data.clone(),
        fields: FieldMap::default(),
    };
    let greedy = SamplingParams {
        temperature: 0.0,
        max_new_tokens: 40,
        ..SamplingParams::default()
    };
    let rejection = RejectionConfig {
        samples_per_prompt: 2,
        keep_per_prompt: 1,
        prompts_per_batch: 1,
        ..RejectionConfig::default()
    };
    let report = run_rejection(
        &RejectionJob {
            run: run_spec(&dir.path().join("rejection"), None),
            model: spec(&teacher),
            data: source.clone(),
            sampling: greedy.clone(),
            rules: Default::default(),
            rejection: rejection.clone(),
        },
        &mut |_| {},
        &never,
    )
    .unwrap();
    assert_eq!(
        (report.summary.seen, report.summary.kept),
        (4, 1),
        "{report:?}"
    );
    assert_eq!(report.summary.incorrect, 2);
    let text = std::fs::read_to_string(&report.output).unwrap();
    let records: Vec<SftRecord> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.source_checkpoint, teacher.display().to_string());
    assert_eq!(r.source_dataset, data.display().to_string());
    assert_eq!((r.source_line, r.sample), (1, 0));
    assert!(r.response.contains("<answer>7</answer>"), "{}", r.response);

    // Distillation: the teacher's kept samples train a fresh student.
    let student = model_dir(dir.path(), "student", 8);
    let distilled = run_distill(
        &DistillJob {
            run: run_spec(&dir.path().join("distill"), None),
            teacher: spec(&teacher),
            distill: DistillConfig {
                student: student.clone(),
            },
            data: source.clone(),
            sampling: greedy.clone(),
            rules: Default::default(),
            rejection,
            sft: SftConfig {
                epochs: 30,
                batch_size: 1,
                lr: 3e-3,
                ..SftConfig::default()
            },
        },
        &mut |_| {},
        &never,
    )
    .unwrap();
    assert_eq!(distilled.teacher.summary.kept, 1);
    let student_report = distilled.student.unwrap();
    assert_eq!(student_report.steps, 30);
    let student_final = student_report.final_model.unwrap();

    // Evaluation: greedy, two datasets; the teacher answers "7?" with 7, so one of the two
    // problems is right.
    let eval = |model: &Path, output: &str| {
        run_eval(
            &EvalJob {
                run: run_spec(&dir.path().join(output), None),
                model: spec(model),
                datasets: vec![
                    ("q".into(), source.clone()),
                    (
                        "arithmetic".into(),
                        DataSource::Builtin {
                            task: "arithmetic".into(),
                            train_size: 10,
                            test_size: 3,
                        },
                    ),
                ],
                sampling: greedy.clone(),
                rules: Default::default(),
                eval: EvalConfig {
                    greedy: true,
                    ..EvalConfig::default()
                },
            },
            &mut |_| {},
            &never,
        )
        .unwrap()
    };
    let teacher_eval = eval(&teacher, "eval-teacher");
    assert_eq!(teacher_eval.datasets.len(), 2);
    let q = &teacher_eval.datasets[0].eval;
    assert_eq!((q.scores.problems, q.scores.k), (2, 1));
    assert_eq!(q.scores.pass_at_1, 0.5);
    assert_eq!(q.format_rate, 1.0);
    assert!(teacher_eval.table().contains("pass@1"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&teacher_eval.report).unwrap()).unwrap();
    assert_eq!(json["datasets"][0]["name"], "q");
    // The student learned the teacher's answer.
    let student_eval = eval(&student_final, "eval-student");
    assert_eq!(student_eval.datasets[0].eval.scores.pass_at_1, 0.5);
}

#[test]
fn rejection_and_eval_stop_between_batches_and_keep_what_they_have() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_dir(dir.path(), "base", 3);
    let data = dir.path().join("q.jsonl");
    std::fs::write(
        &data,
        "{\"prompt\": \"1?\", \"answer\": \"1\"}\n{\"prompt\": \"2?\", \"answer\": \"2\"}\n{\"prompt\": \"3?\", \"answer\": \"3\"}\n",
    )
    .unwrap();
    let source = DataSource::Jsonl {
        path: data,
        fields: FieldMap::default(),
    };
    let stop = AtomicBool::new(false);
    let report = run_rejection(
        &RejectionJob {
            run: run_spec(&dir.path().join("rejection"), None),
            model: spec(&model),
            data: source.clone(),
            sampling: sampling(8),
            rules: Default::default(),
            rejection: RejectionConfig {
                samples_per_prompt: 2,
                prompts_per_batch: 1,
                ..RejectionConfig::default()
            },
        },
        &mut |e| {
            if matches!(e, StageEvent::Sampled { .. }) {
                stop.store(true, Ordering::Relaxed);
            }
        },
        &stop,
    )
    .unwrap();
    assert!(report.stopped);
    assert_eq!((report.prompts, report.prompts_planned), (1, 3));
    assert_eq!(report.summary.seen, 2);
    // The set and its summary are written, with what was kept before the stop.
    assert!(report.output.exists());
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(report.output.with_extension("summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["stopped"], true);

    let stop = AtomicBool::new(false);
    let eval = run_eval(
        &EvalJob {
            run: run_spec(&dir.path().join("eval"), None),
            model: spec(&model),
            datasets: vec![("a".into(), source.clone()), ("b".into(), source)],
            sampling: sampling(8),
            rules: Default::default(),
            eval: EvalConfig {
                samples: 2,
                ..EvalConfig::default()
            },
        },
        &mut |e| {
            if matches!(e, StageEvent::Evaluated { .. }) {
                stop.store(true, Ordering::Relaxed);
            }
        },
        &stop,
    )
    .unwrap();
    assert!(eval.stopped);
    assert_eq!(eval.datasets.len(), 1);
    assert_eq!(eval.datasets[0].eval.scores.k, 2);
    assert!(eval.report.exists());
}

#[test]
fn dynamic_sampling_keeps_informative_groups_and_fills_the_batch_with_them() {
    use r1_actors::data::DatasetItem;
    use r1_actors::judge::reward::{RewardRules, RewardWeights};
    // Even problems have a target language: a random model's samples often differ in language
    // share, so their groups can carry signal. Odd ones have none: every sample scores 0, a flat
    // group.
    let pool: Vec<StageProblem> = (0..200)
        .map(|i| {
            StageProblem::from_item(&DatasetItem {
                prompt: if i % 2 == 0 {
                    format!("What is {i} plus one?")
                } else {
                    format!("{i}+1")
                },
                answer: Some((i + 1).to_string()),
                tests: None,
                language: (i % 2 == 0).then(|| "en".to_string()),
                line: i + 1,
            })
            .unwrap()
        })
        .collect();
    let settings = StageSettings {
        rules: RewardRules {
            weights: RewardWeights {
                accuracy: 1.0,
                format: 1.0,
                language: 1.0,
            },
            ..RewardRules::default()
        },
        ..settings()
    };
    let mut learner = GrpoLearner::new(TinyModel::byte().seed(2).model(), learner_config());
    let (report, cursor) = sourced_step(&mut learner, pool, settings, 4, 20, 3);
    let d = report.dynamic;
    assert!(d.dropped_groups > 0 && d.resampled_groups > 0, "{d:?}");
    assert_eq!(d.prompts_consumed, 4 + d.resampled_groups);
    assert_eq!(
        d.prompts_consumed,
        4 + d.dropped_groups,
        "every dropped group was replaced"
    );
    assert_eq!(cursor as usize, d.prompts_consumed);
    // Enough rounds: the batch is all informative groups, and it stopped drawing once full.
    assert!(d.rounds < 21, "{d:?}");
    assert_eq!(report.learner.frac_zero_std, 0.0, "{d:?}");
    assert!(report.components[2].std > 0.0);
}

fn preference_job(root: &Path, output: &str, stop_at: Option<u64>) -> PreferenceJob {
    let model = root.join("policy");
    if !model.exists() {
        TinyModel::byte().seed(3).save(&model).unwrap();
        for (name, seed) in [("helpful", 11), ("harmless", 12)] {
            TinyModel::byte()
                .seed(seed)
                .save_reward_model(&root.join(name), Some(ByteTokenizer::EOS))
                .unwrap();
        }
        std::fs::write(
            root.join("general.jsonl"),
            "{\"prompt\": \"say hi\"}\n\n{\"prompt\": \"say bye\"}\n{\"prompt\": \"thank Ada\"}\n",
        )
        .unwrap();
    }
    let rm = |name: &str, view| RewardModelSpec {
        name: name.into(),
        path: root.join(name),
        tokenizer: Some("byte".into()),
        view,
        weight: 1.0,
        max_batch: 4,
        max_tokens: 64,
    };
    PreferenceJob {
        run: run_spec(&root.join(output), stop_at),
        model: spec(&model),
        data: DataSource::Builtin {
            task: "arithmetic".into(),
            train_size: 20,
            test_size: 4,
        },
        general: GeneralPrompts {
            path: root.join("general.jsonl"),
            field: "prompt".into(),
        },
        sampling: sampling(10),
        rules: Default::default(),
        learner: learner_config(),
        grpo: GrpoLoopConfig {
            steps: 4,
            prompts_per_step: 4,
            max_batch: 8,
            dynamic_sampling: 0,
        },
        reward_models: vec![
            rm("helpful", ResponseView::Summary),
            rm("harmless", ResponseView::Whole),
        ],
        normalisation: Normalisation::Running { momentum: 0.5 },
        preference_from_step: 1,
        general_share: 0.5,
    }
}

#[test]
fn the_preference_stage_runs_from_model_directories_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let never = AtomicBool::new(false);
    let mut steps = Vec::new();
    let whole = run_preference(
        &preference_job(root, "whole", None),
        &mut |e| {
            if let StageEvent::PreferenceStep { report, .. } = e {
                steps.push(*report);
            }
        },
        &never,
    )
    .unwrap();
    assert_eq!(whole.steps, 4);
    assert_eq!(steps.len(), 4);
    for (i, s) in steps.iter().enumerate() {
        assert_eq!((s.stats.reasoning_groups, s.stats.general_groups), (2, 2));
        assert_eq!(s.stats.preference_on, i >= 1);
        let names: Vec<&str> = s
            .stats
            .reward_models
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(names, ["helpful", "harmless"]);
        // A random reward model tells random whole responses apart.
        assert!(s.stats.reward_models[1].std > 0.0, "{:?}", s.stats);
        assert!(s.stats.preference_reward.is_finite());
    }
    let final_dir = whole.final_model.expect("a finished run saves its policy");

    // Stopped after two steps (a checkpoint holding the reward normaliser's moments), then
    // continued: the same policy as the run that never stopped.
    let first =
        run_preference(&preference_job(root, "split", Some(2)), &mut |_| {}, &never).unwrap();
    assert_eq!((first.steps, first.final_model.is_none()), (2, true));
    let saved = r1_actors::keeper::load_checkpoint(&first.checkpoint.unwrap()).unwrap();
    assert!(saved.state.reward_normaliser.is_some());
    let mut resumed_at = None;
    let second = run_preference(
        &preference_job(root, "split", None),
        &mut |e| {
            if let StageEvent::Resumed { step } = e {
                resumed_at = Some(step);
            }
        },
        &never,
    )
    .unwrap();
    assert_eq!(resumed_at, Some(2));
    let a = std::fs::read(final_dir.join("model.safetensors")).unwrap();
    let b = std::fs::read(second.final_model.unwrap().join("model.safetensors")).unwrap();
    assert!(a == b, "the resumed run ended with other weights");
}

#[test]
fn the_preference_stage_names_a_missing_reward_model_and_a_bad_prompt_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let never = AtomicBool::new(false);
    let mut job = preference_job(root, "out", None);
    job.reward_models[1].path = root.join("nowhere");
    let err = run_preference(&job, &mut |_| {}, &never)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("reward model `harmless`") && err.contains("nowhere"),
        "{err}"
    );

    // A reward model whose vocabulary is smaller than its tokenizer's ids: refused at load, not
    // when the first completion is scored.
    let rm = TinyModel::byte().vocab(100).reward_model(Some(0));
    save_reward_model_dir(&rm, &root.join("small-vocab")).unwrap();
    job.reward_models[1].path = root.join("small-vocab");
    let err = run_preference(&job, &mut |_| {}, &never)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("reward model `harmless`") && err.contains("vocabulary only 100"),
        "{err}"
    );

    let job = preference_job(root, "out", None);
    std::fs::write(
        root.join("general.jsonl"),
        "{\"prompt\": \"say hi\"}\n{\"question\": \"say bye\"}\n",
    )
    .unwrap();
    let err = run_preference(&job, &mut |_| {}, &never)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("general.jsonl:2") && err.contains("no `prompt` field"),
        "{err}"
    );
    assert!(!root.join("out").join("checkpoints").exists());
}

#[test]
fn a_stopped_or_killed_rejection_run_continues_to_the_set_an_uninterrupted_run_writes() {
    let dir = tempfile::tempdir().unwrap();
    let never = AtomicBool::new(false);
    let teacher = teacher(dir.path());
    let data = dir.path().join("q.jsonl");
    let lines: String = (0..6)
        .map(|i| format!("{{\"prompt\": \"7?\", \"answer\": \"{}\"}}\n", 7 + i % 2))
        .collect();
    std::fs::write(&data, lines).unwrap();
    let job = |out: &str| RejectionJob {
        run: run_spec(&dir.path().join(out), None),
        model: spec(&teacher),
        data: DataSource::Jsonl {
            path: data.clone(),
            fields: FieldMap::default(),
        },
        sampling: SamplingParams {
            temperature: 0.3,
            max_new_tokens: 40,
            ..SamplingParams::default()
        },
        rules: Default::default(),
        rejection: RejectionConfig {
            samples_per_prompt: 3,
            keep_per_prompt: 2,
            prompts_per_batch: 2,
            ..RejectionConfig::default()
        },
    };
    let read =
        |r: &r1_actors::stages::RejectionRunReport| std::fs::read_to_string(&r.output).unwrap();
    let whole = run_rejection(&job("whole"), &mut |_| {}, &never).unwrap();
    assert!(!whole.stopped);
    assert_eq!(whole.prompts, 6);
    assert!(whole.summary.kept >= 2, "{:?}", whole.summary);

    // Stopped after the first batch, then started again: the same set and summary.
    for (out, crash) in [("split", false), ("crash", true)] {
        let stop = AtomicBool::new(false);
        let first = run_rejection(
            &job(out),
            &mut |e| {
                if matches!(e, StageEvent::Sampled { .. }) {
                    stop.store(true, Ordering::Relaxed);
                }
            },
            &stop,
        )
        .unwrap();
        assert!(first.stopped);
        assert_eq!(first.prompts, 2);
        if crash {
            // A batch's records appended but its summary never written: the extra line is
            // dropped and the batch sampled again.
            let mut text = read(&first);
            text.push_str(read(&whole).lines().last().unwrap());
            text.push('\n');
            std::fs::write(&first.output, text).unwrap();
        }
        let mut notes = Vec::new();
        let second = run_rejection(
            &job(out),
            &mut |e| {
                if let StageEvent::Note { message } = e {
                    notes.push(message);
                }
            },
            &never,
        )
        .unwrap();
        assert!(
            notes
                .iter()
                .any(|n| n.contains("resuming after 2 of 6 prompts")),
            "{notes:?}"
        );
        assert!(!second.stopped);
        assert_eq!(second.summary, whole.summary);
        assert_eq!(read(&second), read(&whole));
    }
}

/// The in-process stage samples through the learner's engine when the sampler shares its device
/// (`GrpoLearner::sampler`): on a GPU from the weights the learner trains. An engine that keeps
/// its weights as a device does (`ResidentCpuEngine`: the sampler decodes its resident copy, the
/// host copy follows once per step) takes the plain CPU learner's steps, samples included, bit
/// for bit.
#[test]
fn sampling_through_an_engine_that_keeps_the_weights_takes_the_cpu_steps() {
    use r1_kernels::device::resident::ResidentCpuEngine;
    let pool: Vec<StageProblem> = arithmetic::generate(7, Split::Train, 12)
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, t)| StageProblem::from_task(t, i))
        .collect();
    let config = LearnerConfig {
        minibatches: 2,
        ref_refresh_steps: 2,
        ..learner_config()
    };
    let mut plain = GrpoLearner::new(TinyModel::byte().seed(3).model(), config.clone());
    let learner = GrpoLearner::new(TinyModel::byte().seed(3).model(), config);
    let engine = ResidentCpuEngine::new(&learner.policy).unwrap();
    let mut kept = learner.with_engine(Box::new(engine)).unwrap();
    for seed in 0..3u64 {
        let (a, _) = sourced_step(&mut plain, pool.clone(), settings(), 4, 0, seed);
        let (b, _) = sourced_step(&mut kept, pool.clone(), settings(), 4, 0, seed);
        assert_eq!(a.learner, b.learner, "step {seed}");
        assert_eq!(a.tokens_generated, b.tokens_generated, "step {seed}");
        assert_eq!(plain.policy.params, kept.policy.params, "step {seed}");
    }
}
