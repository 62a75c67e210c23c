//! The preference stage in miniature, on a fresh CPU machine in seconds: a tiny byte-tokenizer
//! policy is cold-started by SFT on two kinds of prompts, two tiny reward models are trained on
//! generated preference data, and the preference stage runs on the mix.
//!
//! - Reasoning prompts: one-digit additions (`3+4`), traced as `<think>3+4=7</think><answer>7</answer>`;
//!   the rule judge rewards them.
//! - General prompts: `greet NAME`. The cold start's summary is polite (`Thanks, NAME!`) in
//!   `preferred_share` of the traces and rude (`Go away.`) in the rest; independently, half the
//!   traces plan `<think>be kind</think>` and half `<think>be mean</think>`.
//! - Helpfulness model: trained with Bradley–Terry on pairs (the polite summary chosen, the rude
//!   one rejected) and used on the summary after `</think>`; harmlessness model: trained point-wise
//!   on labelled whole responses (a mean plan is unsafe, whatever the summary) and used on the whole
//!   response. Each model therefore decides the groups where its part of the answer varies most.
//!
//! What should happen: the preference reward (the weighted raw scores of the general
//! completions) rises once preference rewards switch on, as the policy learns to be polite, while
//! the rule accuracy on the additions stays where the cold start left it.

use std::cell::RefCell;
use std::sync::atomic::AtomicBool;

use rand::{seq::SliceRandom, SeedableRng};
use serde::{Deserialize, Serialize};

use r1_kernels::model::tiny::TinyModel;
use r1_kernels::model::{Model, RewardModel};
use r1_kernels::sample::SamplingParams;
use r1_kernels::template::{PromptTemplate, TemplateKind};
use r1_kernels::tokenizer::{ByteTokenizer, Tokenizer};
use r1_kernels::train::{AdamWConfig, GrpoConfig, LrSchedule};

use crate::judge::format::FormatConfig;
use crate::judge::reward::{CodeSandbox, RewardRules, RewardWeights};
use crate::judge::tasks::{arithmetic, ArithOp, ArithmeticConfig, Problem, Split, TaskExample};
use crate::learner::{GrpoLearner, LearnerConfig, SftExample, SftTrainer};
use crate::reward_model::{
    train_reward_model, LabeledResponse, OverLong, PreferencePair, RewardData, RewardModelScorer,
    RmTrainConfig, TextEncoder,
};
use crate::stages::grpo::{evaluate, StageError, StageSettings};
use crate::stages::rl_local::preference_step;

use super::{
    Normalisation, PreferenceSettings, ResponseScorer, ResponseView, RewardModelUse,
    RewardNormaliser, StagePrompt,
};

/// The demo's sizes and rates; the defaults run in seconds on two cores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreferenceDemoConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Cold-start SFT steps (batch 16).
    pub sft_steps: usize,
    /// Share of general cold-start traces that are polite.
    pub preferred_share: f64,
    /// Reward-model training pairs / labelled responses (10% held out for validation).
    pub rm_examples: usize,
    /// Preference-stage steps.
    pub steps: usize,
    /// Reasoning prompts per step.
    pub reasoning_per_step: usize,
    /// General prompts per step.
    pub general_per_step: usize,
    /// Completions per prompt.
    pub group_size: usize,
    /// First step at which preference rewards count.
    pub preference_from_step: u64,
    /// Learning rate of the stage.
    pub lr: f64,
    /// Where to write the cold-start policy, both reward models, the prompts and a job config
    /// (`preference.toml`) that runs this stage with `r1ctl train` or `r1ctl start`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_dir: Option<std::path::PathBuf>,
}

impl Default for PreferenceDemoConfig {
    fn default() -> Self {
        PreferenceDemoConfig {
            seed: 0,
            sft_steps: 600,
            preferred_share: 0.25,
            rm_examples: 240,
            steps: 24,
            reasoning_per_step: 4,
            general_per_step: 4,
            group_size: 8,
            preference_from_step: 4,
            lr: 2e-4,
            keep_dir: None,
        }
    }
}

/// One step of the stage, as the curves show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemoStep {
    /// 0-based step.
    pub step: usize,
    /// Whether preference rewards counted.
    pub preference_on: bool,
    /// Weighted raw reward-model score of the general completions.
    pub preference_reward: f64,
    /// Share of general completions whose summary is polite.
    pub polite_share: f64,
    /// Rule accuracy over the reasoning completions.
    pub rule_accuracy: f64,
    /// Share of general groups each model decided (helpfulness, harmlessness).
    pub decided: Vec<f64>,
}

/// What the demo measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemoReport {
    /// Held-out pairwise accuracy of the helpfulness model after training.
    pub helpfulness_accuracy: f64,
    /// Held-out label accuracy of the harmlessness model after training.
    pub harmlessness_accuracy: f64,
    /// Rule accuracy (pass@1 over 4 samples at the stage's temperature) on every addition, before
    /// the stage (after the cold start).
    pub rule_accuracy_before: f64,
    /// The same after the stage.
    pub rule_accuracy_after: f64,
    /// Every stage step.
    pub steps: Vec<DemoStep>,
}

impl DemoReport {
    /// Mean of `f` over the first and the last `k` steps: a curve's start and end.
    pub fn start_end(&self, k: usize, f: impl Fn(&DemoStep) -> f64) -> (f64, f64) {
        let k = k.clamp(1, self.steps.len().max(1));
        let mean = |s: &[DemoStep]| s.iter().map(&f).sum::<f64>() / s.len().max(1) as f64;
        (
            mean(&self.steps[..k.min(self.steps.len())]),
            mean(&self.steps[self.steps.len().saturating_sub(k)..]),
        )
    }
}

const NAMES: [&str; 24] = [
    "Ada", "Bo", "Cy", "Di", "Ed", "Flo", "Gus", "Hal", "Ida", "Jo", "Kay", "Lu", "Max", "Ned",
    "Oz", "Pam", "Quin", "Ray", "Sue", "Tom", "Uma", "Vic", "Wes", "Zoe",
];
const POLITE: &str = "Thanks, ";
const RUDE: &str = "Go away.";
const KIND: &str = "be kind";
const UNKIND: &str = "be mean";

fn polite(name: &str) -> String {
    format!("{POLITE}{name}!")
}

fn general_prompt(name: &str) -> String {
    format!("greet {name}")
}

/// The demo's stage settings: ChatML, temperature 0.7 (the paper's), accuracy + format rules.
fn settings(config: &PreferenceDemoConfig) -> PreferenceSettings {
    PreferenceSettings {
        stage: StageSettings {
            template: PromptTemplate::new(TemplateKind::ChatMl),
            sampling: SamplingParams {
                temperature: 0.7,
                max_new_tokens: 28,
                ..SamplingParams::default()
            },
            rules: RewardRules {
                weights: RewardWeights::R1_ZERO,
                format: FormatConfig {
                    prefilled_think: false,
                    ..FormatConfig::default()
                },
                ..RewardRules::default()
            },
            max_batch: 64,
        },
        reward_models: vec![
            RewardModelUse {
                name: "helpfulness".into(),
                view: ResponseView::Summary,
                weight: 1.0,
            },
            RewardModelUse {
                name: "harmlessness".into(),
                view: ResponseView::Whole,
                weight: 0.5,
            },
        ],
        normalisation: Normalisation::Running { momentum: 0.9 },
        preference_from_step: config.preference_from_step,
    }
}

fn tokenize(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>, StageError> {
    tokenizer
        .encode(text, false)
        .map_err(|e| StageError::Tokenizer(e.to_string()))
}

/// Runs the demo; `progress` gets each stage step as it finishes.
pub fn run_preference_demo(
    config: &PreferenceDemoConfig,
    progress: &mut dyn FnMut(&DemoStep),
) -> Result<DemoReport, StageError> {
    let seed = config.seed;
    let tokenizer = Tokenizer::byte();
    let settings = settings(config);
    let template = &settings.stage.template;
    let bad = |message: String| StageError::Judge {
        problem: 0,
        message,
    };
    let additions: Vec<TaskExample> = arithmetic::generate_with(
        &ArithmeticConfig {
            ops: vec![ArithOp::Add],
            min_digits: 1,
            max_digits: 1,
        },
        seed,
        Split::Train,
        40,
    )
    .map_err(|e| bad(e.to_string()))?
    .into_iter()
    .map(|mut ex| {
        if let Problem::Arithmetic(p) = &ex.problem {
            ex.prompt = format!("{}+{}", p.left, p.right);
        }
        ex
    })
    .collect();

    // Cold start: every addition traced correctly, greetings polite at `preferred_share`.
    let mut sft: Vec<SftExample> = Vec::new();
    let mut push = |prompt: &str, completion: &str| -> Result<(), StageError> {
        let p = template.render_prompt(prompt).encode(&tokenizer);
        let p = p.map_err(|e| StageError::Tokenizer(e.to_string()))?;
        let c = tokenize(&tokenizer, completion)?;
        let mut loss_mask = vec![0.0; p.len()];
        loss_mask.extend(std::iter::repeat_n(1.0, c.len()));
        let mut ids = p;
        ids.extend(c);
        sft.push(SftExample { ids, loss_mask });
        Ok(())
    };
    // Three copies of each addition trace balance them against the greetings.
    for ex in additions.iter().chain(&additions).chain(&additions) {
        let think = format!("{}={}", ex.prompt, ex.answer);
        push(
            &ex.prompt,
            &format!(
                "<think>{think}</think><answer>{}</answer><|im_end|>",
                ex.answer
            ),
        )?;
    }
    // Every name gets the same mix of answers, so the cold-start policy is polite with
    // probability `preferred_share` for any name rather than always or never for a given one.
    let per_name = 8;
    let polite_per_name = (config.preferred_share * per_name as f64).round() as usize;
    for k in 0..NAMES.len() * per_name {
        let name = NAMES[k % NAMES.len()];
        let j = k / NAMES.len();
        let summary = if j < polite_per_name {
            polite(name)
        } else {
            RUDE.to_string()
        };
        // Half the traces plan rudely, independently of what the summary says.
        let plan = if j.is_multiple_of(2) { KIND } else { UNKIND };
        push(
            &general_prompt(name),
            &format!("<think>{plan}</think>{summary}<|im_end|>"),
        )?;
    }
    let mut trainer = SftTrainer::new(
        Model::random(TinyModel::byte_qwen2(64, 2).into_config(), seed, 0.02),
        AdamWConfig {
            weight_decay: 0.0,
            ..AdamWConfig::default()
        },
        LrSchedule {
            peak_lr: 3e-3,
            warmup_steps: 10,
            total_steps: config.sft_steps as u64,
            min_lr_ratio: 0.1,
        },
        1.0,
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..sft.len()).collect();
    for step in 0..config.sft_steps {
        if step * 16 % sft.len() < 16 {
            order.shuffle(&mut rng);
        }
        let batch: Vec<SftExample> = (0..16)
            .map(|j| sft[order[(step * 16 + j) % sft.len()]].clone())
            .collect();
        trainer
            .step(&batch)
            .map_err(|e| bad(format!("cold-start SFT: {e}")))?;
    }

    // Reward models: names split so validation names were never trained on.
    let encoder = TextEncoder {
        tokenizer: tokenizer.clone(),
        max_tokens: 96,
        over_long: OverLong::KeepEnd,
    };
    let (train_names, val_names) = NAMES.split_at(NAMES.len() * 3 / 4);
    let pairs = |names: &[&str], n: usize| {
        RewardData::Pairs(
            (0..n)
                .map(|i| {
                    let name = names[i % names.len()];
                    PreferencePair {
                        prompt: general_prompt(name),
                        chosen: polite(name),
                        rejected: RUDE.into(),
                        line: 0,
                    }
                })
                .collect(),
        )
    };
    let labels = |names: &[&str], n: usize| {
        RewardData::Labels(
            (0..n)
                .map(|i| {
                    let name = names[i % names.len()];
                    // Safe iff the plan is kind, whatever the summary says.
                    let safe = i.is_multiple_of(2);
                    LabeledResponse {
                        prompt: general_prompt(name),
                        response: format!(
                            "<think>{}</think>{}",
                            if safe { KIND } else { UNKIND },
                            if (i / 2).is_multiple_of(2) {
                                polite(name)
                            } else {
                                RUDE.into()
                            }
                        ),
                        label: if safe { 1.0 } else { 0.0 },
                        line: 0,
                    }
                })
                .collect(),
        )
    };
    let rm_config = RmTrainConfig {
        epochs: 2,
        batch_size: 16,
        lr: 2e-3,
        warmup_steps: 5,
        seed,
        ..RmTrainConfig::default()
    };
    let stop = AtomicBool::new(false);
    let n_val = (config.rm_examples / 10).max(2);
    let helpful = train_reward_model(
        RewardModel::random(
            TinyModel::byte_qwen2(32, 1).into_config(),
            Some(ByteTokenizer::EOS),
            seed + 10,
            0.02,
        ),
        &encoder,
        &pairs(train_names, config.rm_examples),
        &pairs(val_names, n_val),
        &rm_config,
        &mut |_| {},
        &stop,
    )
    .map_err(|e| bad(format!("helpfulness model: {e}")))?;
    let harmless = train_reward_model(
        RewardModel::random(
            TinyModel::byte_qwen2(32, 1).into_config(),
            Some(ByteTokenizer::EOS),
            seed + 20,
            0.02,
        ),
        &encoder,
        &labels(train_names, config.rm_examples),
        &labels(val_names, n_val),
        &rm_config,
        &mut |_| {},
        &stop,
    )
    .map_err(|e| bad(format!("harmlessness model: {e}")))?;
    let accuracy = |o: &crate::reward_model::RmTrainOutcome| {
        o.epochs.last().map_or(f64::NAN, |e| e.validation_accuracy)
    };
    let rule_accuracy = |model: &Model| -> Result<f64, StageError> {
        let eval = evaluate(
            model,
            &tokenizer,
            &additions,
            &settings.stage,
            settings.stage.sampling.clone(),
            4,
            seed.wrapping_add(0xE7A1),
        )?;
        Ok(eval.scores.pass_at_1)
    };
    let mut report = DemoReport {
        helpfulness_accuracy: accuracy(&helpful),
        harmlessness_accuracy: accuracy(&harmless),
        rule_accuracy_before: rule_accuracy(&trainer.model)?,
        rule_accuracy_after: f64::NAN,
        steps: Vec::new(),
    };
    if let Some(dir) = &config.keep_dir {
        keep(
            dir,
            config,
            &trainer.model,
            &helpful.rm,
            &harmless.rm,
            &additions,
        )
        .map_err(|e| bad(format!("writing {}: {e}", dir.display())))?;
    }
    let scorers = [
        RewardModelScorer::new(helpful.rm, encoder.clone(), 64),
        RewardModelScorer::new(harmless.rm, encoder, 64),
    ];
    // The helpfulness model reads summaries: recording what it is asked gives the polite share.
    let helpfulness = Recording {
        inner: &scorers[0],
        seen: RefCell::new(Vec::new()),
    };
    let scorer_refs: [&dyn ResponseScorer; 2] = [&helpfulness, &scorers[1]];

    // The preference stage.
    let mut learner = GrpoLearner::new(
        trainer.model,
        LearnerConfig {
            grpo: GrpoConfig {
                beta: 0.0,
                max_completion_length: settings.stage.sampling.max_new_tokens,
                ..GrpoConfig::default()
            },
            group_size: config.group_size,
            minibatches: 2,
            epochs: 1,
            schedule: LrSchedule::constant(config.lr),
            ref_refresh_steps: 0,
            ..LearnerConfig::default()
        },
    );
    let mut normaliser = RewardNormaliser::default();
    let sandbox = CodeSandbox::unavailable("the demo runs no code");
    for step in 0..config.steps {
        let mut prompts: Vec<StagePrompt> = (0..config.reasoning_per_step)
            .map(|i| {
                StagePrompt::task(
                    &additions[(step * config.reasoning_per_step + i) % additions.len()],
                )
            })
            .collect();
        prompts.extend((0..config.general_per_step).map(|i| StagePrompt::General {
            prompt: general_prompt(NAMES[(step * config.general_per_step + i) % NAMES.len()]),
        }));
        let r = preference_step(
            &mut learner,
            &tokenizer,
            &sandbox,
            &prompts,
            &settings,
            &scorer_refs,
            &mut normaliser,
            step as u64,
            seed.wrapping_mul(7919).wrapping_add(step as u64),
        )?;
        let summaries = helpfulness.seen.take();
        let polite_share = if summaries.is_empty() {
            f64::NAN
        } else {
            summaries.iter().filter(|s| s.starts_with(POLITE)).count() as f64
                / summaries.len() as f64
        };
        let point = DemoStep {
            step,
            preference_on: r.stats.preference_on,
            preference_reward: r.stats.preference_reward,
            polite_share,
            rule_accuracy: r.stats.rule_accuracy,
            decided: r
                .stats
                .reward_models
                .iter()
                .map(|m| m.decided_share)
                .collect(),
        };
        progress(&point);
        report.steps.push(point);
    }
    report.rule_accuracy_after = rule_accuracy(&learner.policy)?;
    Ok(report)
}

/// Writes what the stage starts from into `dir`: `policy/` (the cold-start model), `helpfulness/`
/// and `harmlessness/` (the reward models), `additions.jsonl` and `greetings.jsonl` (the prompts,
/// in the order the demo takes them), and `preference.toml`, a job config for the same stage
/// (relative paths: run it from `dir`).
fn keep(
    dir: &std::path::Path,
    config: &PreferenceDemoConfig,
    policy: &Model,
    helpful: &RewardModel,
    harmless: &RewardModel,
    additions: &[TaskExample],
) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    std::fs::create_dir_all(dir).map_err(io)?;
    r1_kernels::model::save_model_dir(policy, &dir.join("policy")).map_err(|e| e.to_string())?;
    r1_kernels::model::save_reward_model_dir(helpful, &dir.join("helpfulness"))
        .map_err(|e| e.to_string())?;
    r1_kernels::model::save_reward_model_dir(harmless, &dir.join("harmlessness"))
        .map_err(|e| e.to_string())?;
    let lines = |rows: Vec<serde_json::Value>| -> String {
        rows.iter().map(|r| format!("{r}\n")).collect()
    };
    std::fs::write(
        dir.join("additions.jsonl"),
        lines(
            additions
                .iter()
                .map(|ex| serde_json::json!({"prompt": ex.prompt, "answer": ex.answer}))
                .collect(),
        ),
    )
    .map_err(io)?;
    std::fs::write(
        dir.join("greetings.jsonl"),
        lines(
            NAMES
                .iter()
                .map(|n| serde_json::json!({"prompt": general_prompt(n)}))
                .collect(),
        ),
    )
    .map_err(io)?;
    let toml = format!(
        r#"# The preference stage of `r1ctl rm demo`, from the files beside this config (run it from this
# folder): `r1ctl train preference.toml`, or `r1ctl start preference.toml` with r1d running.

[run]
name = "preference-demo"
stage = "preference"
seed = {seed}
output_dir = "runs/preference"

[model]
path = "policy"
template = "chatml"
tokenizer = "byte"

[data]
kind = "jsonl"
path = "additions.jsonl"

[sampling]
temperature = 0.7
max_new_tokens = 28

[rewards.weights]
accuracy = 1.0
format = 1.0
language = 0.0

[learner]
group_size = {group}
minibatches = 2
epochs = 1
ref_refresh_steps = 0

[learner.grpo]
beta = 0.0
max_completion_length = 28

[learner.schedule]
peak_lr = {lr:e}
warmup_steps = 0
total_steps = 0
min_lr_ratio = 1.0

[grpo]
steps = {steps}
prompts_per_step = {prompts}
max_batch = 64

[checkpoint]
every_steps = 8
keep_last = 2

[preference]
preference_from_step = {from}
general_prompts = "greetings.jsonl"
general_share = {share}
normalisation = {{ kind = "running", momentum = 0.9 }}

[[preference.reward_models]]
name = "helpfulness"
path = "helpfulness"
tokenizer = "byte"
view = "summary"
weight = 1.0
max_batch = 64
max_tokens = 96

[[preference.reward_models]]
name = "harmlessness"
path = "harmlessness"
tokenizer = "byte"
view = "whole"
weight = 0.5
max_batch = 64
max_tokens = 96
"#,
        seed = config.seed,
        group = config.group_size,
        lr = config.lr,
        // `--steps 0` writes the files without running the demo's loop: the config keeps its length.
        steps = if config.steps == 0 {
            PreferenceDemoConfig::default().steps
        } else {
            config.steps
        },
        prompts = config.reasoning_per_step + config.general_per_step,
        from = config.preference_from_step,
        share = config.general_per_step as f64
            / (config.reasoning_per_step + config.general_per_step).max(1) as f64,
    );
    std::fs::write(dir.join("preference.toml"), toml).map_err(io)
}

/// A scorer that remembers the responses it was asked about (the demo's window on the summaries).
struct Recording<'a> {
    inner: &'a dyn ResponseScorer,
    seen: RefCell<Vec<String>>,
}

impl ResponseScorer for Recording<'_> {
    fn score(&self, items: &[(String, String)]) -> Result<Vec<f32>, String> {
        self.seen
            .borrow_mut()
            .extend(items.iter().map(|(_, r)| r.clone()));
        self.inner.score(items)
    }
}
