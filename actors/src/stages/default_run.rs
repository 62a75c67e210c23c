//! The embedded default: the DeepSeek-R1 pipeline in miniature, on a fresh CPU machine with no
//! downloads. A tiny byte-tokenizer model is built from a seed, cold-started by SFT on generated
//! chain-of-thought traces for multi-digit addition, evaluated on held-out problems, trained with
//! GRPO on rule rewards (accuracy + format), evaluated again and saved.
//!
//! # Why the cold-start traces are imperfect
//! Real cold-start data is written by people or earlier models and carries their mistakes; the
//! point of the RL stage is that reward alone fixes what imitation could not. The traces here
//! make two kinds of mistakes at configurable rates:
//! - **dropped carry** ([`AdditionTaskConfig::dropped_carry_fraction`]): on problems that have a
//!   carry, the trace forgets it in the first column where it is due, so the reasoning is fluent and
//!   the final answer is wrong (`7+5=12 1+2=3` → `32` for 17+25);
//! - **broken format** ([`AdditionTaskConfig::broken_format_fraction`]): the answer is written
//!   after `</think>` without `<answer>` tags, which the format rule scores 0 (and accuracy with it).
//!
//! SFT imitates these mistakes at the rates it sees them; GRPO samples both the right and the wrong
//! habit, and the accuracy and format rewards tell them apart.
//!
//! # Why a compact prompt
//! The arithmetic task's own prompt spells out the answer format in ~150 bytes, and the R1-Zero
//! template adds ~330 more: at one token per byte that is ten times the completion, and the learner
//! pays for every prompt token of every rollout. The default run therefore asks just `17+25` in
//! the ChatML template (its `<|im_start|>`/`<|im_end|>` are single ids of the byte tokenizer), and
//! the format it wants is taught by the cold start, as in the paper's stage 2. No `<think>` is
//! pre-filled, so the format rule runs with `prefilled_think = false`.
//!
//! # Measured (default config, seed 0, 2-core machine, `r1ctl run`)
//! See [`DefaultRunConfig`]'s defaults; the numbers are in the crate's README section on
//! `r1ctl run` and in the table below, filled in from a real run:
//!
//! | | held-out accuracy (pass@1) | format rate | mean length (tokens) |
//! |---|---|---|---|
//! | after cold-start SFT | MEASURE | MEASURE | MEASURE |
//! | after GRPO | MEASURE | MEASURE | MEASURE |
//!
//! Determinism: the same config and seed give the same numbers, provided the time budget does not
//! cut the GRPO stage short (the report says whether it did).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use r1_kernels::bench::builtin_config;
use r1_kernels::model::{save_model_dir, Model, ModelConfig};
use r1_kernels::sample::{FinishReason, GenerationRequest, Sampler, SamplingParams};
use r1_kernels::template::{PromptTemplate, TemplateKind};
use r1_kernels::tokenizer::{ByteTokenizer, Tokenizer};
use r1_kernels::train::{AdamWConfig, GrpoConfig, LrSchedule};

use crate::eval::EvalScores;
use crate::judge::format::FormatConfig;
use crate::judge::reward::{score_item, CodeSandbox, RewardItem, RewardRules, RewardWeights};
use crate::judge::tasks::{
    arithmetic, ArithOp, ArithmeticConfig, ArithmeticProblem, GenerateError, Problem, Split,
    TaskExample,
};
use crate::learner::{GrpoLearner, LearnerConfig, LearnerError, SftExample, SftTrainer};
use crate::stages::grpo::StageError;
use crate::stages::{evaluate, grpo_step, StageSettings};

/// Everything that can stop the default run.
#[derive(Debug, thiserror::Error)]
pub enum DefaultRunError {
    /// A config value the run cannot use; names the field.
    #[error("default run config: `{field}` = {value} is invalid: {why}")]
    InvalidConfig {
        /// The offending field, as a dotted path (`grpo.group_size`).
        field: &'static str,
        /// Its value, as written.
        value: String,
        /// The allowed range or rule.
        why: String,
    },
    /// The task generator refused (too few distinct problems for the sizes asked).
    #[error("generating problems: {0}")]
    Generate(#[from] GenerateError),
    /// The SFT trainer refused a batch.
    #[error("cold-start SFT: {0}")]
    Sft(#[source] LearnerError),
    /// A GRPO step or an evaluation failed.
    #[error(transparent)]
    Stage(#[from] StageError),
    /// A trace or prompt could not be tokenized.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A held-out completion could not be judged.
    #[error("judging a held-out completion: {0}")]
    Judge(String),
    /// The checkpoint could not be written.
    #[error("saving the final checkpoint: {0}")]
    Save(#[source] r1_kernels::EngineError),
    /// The sampler refused the held-out batch.
    #[error("sampling held-out problems: {0}")]
    Sample(#[source] r1_kernels::EngineError),
    /// The run directory or report could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The report could not be serialised.
    #[error("writing report.json: {0}")]
    Json(#[from] serde_json::Error),
}

/// Result of the default run's functions.
pub type Result<T> = std::result::Result<T, DefaultRunError>;

/// The shape of the tiny model. Vocabulary and context come from the byte tokenizer and the task,
/// so only what is worth tuning is here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TinyModelShape {
    /// Residual width: 128 learns column addition within the time budget on 2 cores.
    pub hidden_size: usize,
    /// MLP width (4 × hidden, as GPT-2).
    pub intermediate_size: usize,
    /// Transformer blocks.
    pub num_layers: usize,
    /// Query heads; must divide `hidden_size`.
    pub num_heads: usize,
    /// Key/value heads; must divide `num_heads`.
    pub num_kv_heads: usize,
    /// Longest prompt + completion in tokens (the RoPE table and KV cache size).
    pub max_position_embeddings: usize,
    /// Std of the random initial weights.
    pub init_std: f32,
}

impl Default for TinyModelShape {
    fn default() -> Self {
        TinyModelShape {
            hidden_size: 128,
            intermediate_size: 512,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            max_position_embeddings: 128,
            init_std: 0.02,
        }
    }
}

/// The task: `a+b` on n-digit operands, with cold-start traces that make known mistakes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdditionTaskConfig {
    /// Fewest digits per operand.
    pub min_digits: u32,
    /// Most digits per operand (the trace grows one column per digit).
    pub max_digits: u32,
    /// Share of cold-start traces of problems with a carry that forget it (a fluent chain of
    /// thought with a wrong answer): what SFT cannot fix and RL must.
    pub dropped_carry_fraction: f64,
    /// Share of cold-start traces that write the answer without `<answer>` tags.
    pub broken_format_fraction: f64,
}

impl Default for AdditionTaskConfig {
    fn default() -> Self {
        AdditionTaskConfig {
            min_digits: 2,
            max_digits: 2,
            dropped_carry_fraction: 0.8,
            broken_format_fraction: 0.2,
        }
    }
}

/// The cold-start SFT stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SftSettings {
    /// Distinct generated traces (train split), cycled through in order.
    pub examples: usize,
    /// Optimizer steps.
    pub steps: usize,
    /// Traces per step.
    pub batch_size: usize,
    /// Peak learning rate (linear warmup, cosine decay to 10%).
    pub lr: f64,
    /// Warmup steps.
    pub warmup_steps: u64,
}

impl Default for SftSettings {
    fn default() -> Self {
        SftSettings {
            examples: 2000,
            steps: 800,
            batch_size: 32,
            lr: 3e-3,
            warmup_steps: 20,
        }
    }
}

/// The GRPO stage (rule rewards: accuracy + format, paper's R1-Zero weights).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpoSettings {
    /// GRPO steps (fewer if the time budget runs out).
    pub steps: usize,
    /// Prompts per step (train split, distinct from nothing: RL may revisit SFT problems).
    pub prompts_per_step: usize,
    /// Completions per prompt, G.
    pub group_size: usize,
    /// Minibatches per rollout batch (one optimizer step each).
    pub minibatches: usize,
    /// Constant learning rate: far above the paper's 3e-6, which suits a 7B model, not a 0.5M one.
    pub lr: f64,
    /// KL weight β; 0 keeps no reference model (DAPO, Dr. GRPO).
    pub beta: f64,
    /// Sampling temperature of the rollouts (the paper's 1.0).
    pub temperature: f32,
    /// Completion limit in tokens.
    pub max_new_tokens: usize,
}

impl Default for GrpoSettings {
    fn default() -> Self {
        GrpoSettings {
            steps: 200,
            prompts_per_step: 16,
            group_size: 8,
            minibatches: 2,
            lr: 1e-4,
            beta: 0.0,
            temperature: 1.0,
            max_new_tokens: 40,
        }
    }
}

/// The held-out evaluation, run before and after GRPO.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSettings {
    /// Test-split problems (never trained on).
    pub problems: usize,
    /// Samples per problem: pass@1 is their mean correctness, cons@k their majority vote.
    pub samples: usize,
    /// Sampling temperature (the paper's 0.6).
    pub temperature: f32,
    /// Nucleus sampling (the paper's 0.95).
    pub top_p: f32,
}

impl Default for EvalSettings {
    fn default() -> Self {
        EvalSettings {
            problems: 200,
            samples: 4,
            temperature: 0.6,
            top_p: 0.95,
        }
    }
}

/// The whole default run: each stage owns its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DefaultRunConfig {
    /// Seeds the model, the problems, the traces and every sampler.
    pub seed: u64,
    /// Model shape.
    pub model: TinyModelShape,
    /// Task and cold-start trace quality.
    pub task: AdditionTaskConfig,
    /// Cold-start SFT.
    pub sft: SftSettings,
    /// GRPO.
    pub grpo: GrpoSettings,
    /// Held-out evaluation.
    pub eval: EvalSettings,
    /// Wall-clock budget in seconds: GRPO stops early, keeping time for the final evaluation and
    /// the checkpoint, when the run would otherwise overrun it. 0 disables the budget.
    pub time_budget_secs: u64,
    /// Most sequences decoded together.
    pub max_batch: usize,
}

impl Default for DefaultRunConfig {
    fn default() -> Self {
        DefaultRunConfig {
            seed: 0,
            model: TinyModelShape::default(),
            task: AdditionTaskConfig::default(),
            sft: SftSettings::default(),
            grpo: GrpoSettings::default(),
            eval: EvalSettings::default(),
            time_budget_secs: 600,
            max_batch: 128,
        }
    }
}

impl DefaultRunConfig {
    /// A config for tests: a smaller model, a few steps of each stage, seconds in all.
    pub fn tiny() -> Self {
        DefaultRunConfig {
            model: TinyModelShape {
                hidden_size: 32,
                intermediate_size: 64,
                num_layers: 1,
                num_heads: 2,
                num_kv_heads: 1,
                ..TinyModelShape::default()
            },
            sft: SftSettings {
                examples: 16,
                steps: 3,
                batch_size: 4,
                warmup_steps: 1,
                ..SftSettings::default()
            },
            grpo: GrpoSettings {
                steps: 2,
                prompts_per_step: 2,
                group_size: 4,
                max_new_tokens: 24,
                ..GrpoSettings::default()
            },
            eval: EvalSettings {
                problems: 4,
                samples: 2,
                ..EvalSettings::default()
            },
            time_budget_secs: 0,
            ..DefaultRunConfig::default()
        }
    }

    /// Checks every field the run depends on; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        fn invalid<T: std::fmt::Display>(field: &'static str, value: T, why: &str) -> Result<()> {
            Err(DefaultRunError::InvalidConfig {
                field,
                value: value.to_string(),
                why: why.to_string(),
            })
        }
        let m = &self.model;
        for (field, value) in [
            ("model.hidden_size", m.hidden_size),
            ("model.intermediate_size", m.intermediate_size),
            ("model.num_layers", m.num_layers),
            ("model.num_heads", m.num_heads),
            ("model.num_kv_heads", m.num_kv_heads),
            ("sft.examples", self.sft.examples),
            ("sft.batch_size", self.sft.batch_size),
            ("grpo.prompts_per_step", self.grpo.prompts_per_step),
            ("grpo.minibatches", self.grpo.minibatches),
            ("grpo.max_new_tokens", self.grpo.max_new_tokens),
            ("eval.problems", self.eval.problems),
            ("eval.samples", self.eval.samples),
            ("max_batch", self.max_batch),
        ] {
            if value == 0 {
                return invalid(field, value, "must be at least 1");
            }
        }
        if !m.hidden_size.is_multiple_of(m.num_heads) {
            return invalid("model.num_heads", m.num_heads, "must divide model.hidden_size");
        }
        if !(m.hidden_size / m.num_heads).is_multiple_of(2) {
            return invalid(
                "model.num_heads",
                m.num_heads,
                "hidden_size / num_heads must be even (RoPE rotates pairs)",
            );
        }
        if !m.num_heads.is_multiple_of(m.num_kv_heads) {
            return invalid("model.num_kv_heads", m.num_kv_heads, "must divide model.num_heads");
        }
        if !(m.init_std.is_finite() && m.init_std > 0.0) {
            return invalid("model.init_std", m.init_std, "must be a positive number");
        }
        let t = &self.task;
        // Two digits at least keeps enough distinct test problems for an evaluation; nine at most
        // keeps every sum inside the trace arithmetic's u64.
        if !(1..=9).contains(&t.min_digits) {
            return invalid("task.min_digits", t.min_digits, "must be in 1..=9");
        }
        if !(t.min_digits..=9).contains(&t.max_digits) {
            return invalid("task.max_digits", t.max_digits, "must be in min_digits..=9");
        }
        for (field, value) in [
            ("task.dropped_carry_fraction", t.dropped_carry_fraction),
            ("task.broken_format_fraction", t.broken_format_fraction),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return invalid(field, value, "must be in 0..=1");
            }
        }
        if !(self.sft.lr.is_finite() && self.sft.lr >= 0.0) {
            return invalid("sft.lr", self.sft.lr, "must be a finite number >= 0");
        }
        let g = &self.grpo;
        if g.group_size < 2 {
            return invalid("grpo.group_size", g.group_size, "must be at least 2 (GRPO compares within a group)");
        }
        if !(g.lr.is_finite() && g.lr >= 0.0) {
            return invalid("grpo.lr", g.lr, "must be a finite number >= 0");
        }
        if !(g.beta.is_finite() && g.beta >= 0.0) {
            return invalid("grpo.beta", g.beta, "must be a finite number >= 0");
        }
        if !(g.temperature.is_finite() && g.temperature > 0.0) {
            return invalid("grpo.temperature", g.temperature, "must be > 0 (GRPO needs varied samples)");
        }
        let e = &self.eval;
        if !(e.temperature.is_finite() && e.temperature >= 0.0) {
            return invalid("eval.temperature", e.temperature, "must be >= 0 (0 is greedy)");
        }
        if !(e.top_p > 0.0 && e.top_p <= 1.0) {
            return invalid("eval.top_p", e.top_p, "must be in (0, 1]");
        }
        let longest = self.longest_sequence();
        if m.max_position_embeddings < longest {
            return invalid(
                "model.max_position_embeddings",
                m.max_position_embeddings,
                &format!(
                    "must hold the longest prompt + trace ({longest} tokens) and prompt + \
                     grpo.max_new_tokens"
                ),
            );
        }
        Ok(())
    }

    /// The most tokens a prompt plus either a cold-start trace or a sampled completion can take.
    fn longest_sequence(&self) -> usize {
        let digits = self.task.max_digits as usize;
        let prompt = chatml_overhead() + 2 * digits + 1;
        // Per column `x+y+1=ss ` (9 bytes), the tags, the answer and the end of turn.
        let trace = 9 * (digits + 1) + 4 + digits + 2;
        prompt + trace.max(self.grpo.max_new_tokens)
    }

    /// The model config the run builds: the byte tokenizer's vocabulary, the configured shape.
    pub fn model_config(&self) -> Result<ModelConfig> {
        let mut config =
            builtin_config("tiny-qwen2").ok_or_else(|| DefaultRunError::InvalidConfig {
                field: "model",
                value: "tiny-qwen2".into(),
                why: "the engine no longer has this built-in shape to start from".into(),
            })?;
        let m = &self.model;
        config.hidden_size = m.hidden_size;
        config.intermediate_size = m.intermediate_size;
        config.num_layers = m.num_layers;
        config.num_heads = m.num_heads;
        config.num_kv_heads = m.num_kv_heads;
        config.head_dim = m.hidden_size / m.num_heads.max(1);
        config.vocab_size = ByteTokenizer::VOCAB_SIZE;
        config.max_position_embeddings = m.max_position_embeddings;
        config.eos_token_ids = vec![ByteTokenizer::EOS];
        config.bos_token_id = Some(ByteTokenizer::BOS);
        Ok(config)
    }
}

/// Tokens ChatML adds around a one-line user prompt (`<|im_start|>user\n…<|im_end|>\n<|im_start|>assistant\n`).
fn chatml_overhead() -> usize {
    let rendered = PromptTemplate::new(TemplateKind::ChatMl).render_prompt("");
    ByteTokenizer.encode(&rendered.text, rendered.add_special_tokens).len()
}

/// Which stage the run is in, for progress lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageName {
    /// Building the model and generating problems and traces.
    Setup,
    /// Cold-start SFT.
    Sft,
    /// Held-out evaluation of the cold-start model.
    EvalBefore,
    /// GRPO.
    Grpo,
    /// Held-out evaluation of the RL model.
    EvalAfter,
    /// Writing the checkpoint and the report.
    Save,
}

/// What the run tells its caller as it goes, so a person can watch it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Progress {
    /// A stage began.
    Stage {
        /// Which.
        stage: StageName,
        /// What it will do.
        detail: String,
        /// Seconds since the run started.
        elapsed_secs: f64,
    },
    /// One SFT step finished (reported every few steps).
    SftStep {
        /// Steps done.
        step: usize,
        /// Steps planned.
        steps: usize,
        /// Mean cross-entropy of the step.
        loss: f64,
        /// Seconds since the run started.
        elapsed_secs: f64,
    },
    /// One GRPO step finished.
    GrpoStep {
        /// Steps done.
        step: usize,
        /// Steps planned.
        steps: usize,
        /// Mean total reward.
        reward: f64,
        /// Mean accuracy reward of the rollouts.
        accuracy: f64,
        /// Mean format reward of the rollouts.
        format: f64,
        /// Share of groups with no reward spread (no learning signal).
        frac_zero_std: f64,
        /// Mean completion length in tokens.
        completion_len: f64,
        /// Seconds since the run started.
        elapsed_secs: f64,
    },
    /// A held-out evaluation finished.
    Eval {
        /// Before or after GRPO.
        stage: StageName,
        /// Its scores.
        scores: HeldOutScores,
        /// Seconds since the run started.
        elapsed_secs: f64,
    },
}

/// The held-out numbers of one model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HeldOutScores {
    /// Test-split problems evaluated.
    pub problems: usize,
    /// Samples per problem.
    pub samples: usize,
    /// pass@1: mean correctness over the samples (the headline number).
    pub accuracy: f64,
    /// cons@k: correctness of the majority answer.
    pub cons_at_k: f64,
    /// Share of samples that pass the format rule.
    pub format_rate: f64,
    /// Mean completion length in tokens.
    pub mean_length: f64,
    /// Share of samples cut by the length limit.
    pub truncated_rate: f64,
}

/// What the SFT stage did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SftSummary {
    /// Steps taken.
    pub steps: usize,
    /// Loss of the first step.
    pub first_loss: f64,
    /// Loss of the last step.
    pub last_loss: f64,
    /// Share of traces with a dropped carry (over all traces).
    pub dropped_carry_share: f64,
    /// Share of traces with a broken format.
    pub broken_format_share: f64,
    /// Wall time of the stage.
    pub seconds: f64,
}

/// What the GRPO stage did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GrpoSummary {
    /// Steps taken.
    pub steps: usize,
    /// Steps configured.
    pub steps_planned: usize,
    /// Whether the time budget stopped it before `steps_planned`.
    pub stopped_by_time_budget: bool,
    /// Mean total reward of the first step's rollouts.
    pub first_reward: f64,
    /// Mean total reward of the last step's rollouts.
    pub last_reward: f64,
    /// Wall time of the stage.
    pub seconds: f64,
}

/// The run's result: `report.json` in the run directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefaultRunReport {
    /// Held-out scores of the cold-start (SFT) model.
    pub before: HeldOutScores,
    /// Held-out scores after GRPO.
    pub after: HeldOutScores,
    /// The SFT stage.
    pub sft: SftSummary,
    /// The GRPO stage.
    pub grpo: GrpoSummary,
    /// Wall time of both evaluations.
    pub eval_seconds: f64,
    /// Wall time of the whole run.
    pub total_seconds: f64,
    /// Parameters of the model.
    pub parameters: usize,
    /// The final checkpoint (a Hugging Face model directory).
    pub checkpoint: PathBuf,
    /// The config the run used.
    pub config: DefaultRunConfig,
}

impl DefaultRunReport {
    /// The numbers that depend only on the config and seed (not on wall time or paths): two runs
    /// with the same seed agree on these.
    pub fn deterministic_part(&self) -> (HeldOutScores, HeldOutScores, f64, f64, usize) {
        (
            self.before,
            self.after,
            self.sft.last_loss,
            self.grpo.last_reward,
            self.grpo.steps,
        )
    }
}

/// The compact question put to the model (see the module docs for why it is not the task's own).
fn compact_prompt(p: &ArithmeticProblem) -> String {
    format!("{}+{}", p.left, p.right)
}

/// How a cold-start trace goes wrong, if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TraceFlaw {
    /// Forget the carry in the first column that has one.
    DroppedCarry,
    /// Answer after `</think>` without `<answer>` tags.
    BrokenFormat,
}

/// The column-by-column chain of thought for `a + b`, least significant column first, and the
/// answer it arrives at: `7+5=12 1+2+1=4` and 42 for 17 + 25. With `drop_carry`, the first carry
/// is forgotten (and the answer follows the wrong chain).
fn addition_trace(a: u64, b: u64, drop_carry: bool) -> (String, u64) {
    let (mut a, mut b) = (a, b);
    let mut steps = Vec::new();
    let mut carry = 0u64;
    let mut dropped = !drop_carry;
    let mut answer_digits = Vec::new();
    loop {
        let (x, y) = (a % 10, b % 10);
        let mut terms = vec![x.to_string(), y.to_string()];
        let mut sum = x + y;
        if carry > 0 {
            if dropped {
                terms.push(carry.to_string());
                sum += carry;
            } else {
                dropped = true;
            }
        }
        steps.push(format!("{}={sum}", terms.join("+")));
        a /= 10;
        b /= 10;
        carry = sum / 10;
        if a == 0 && b == 0 {
            answer_digits.push(sum);
            break;
        }
        answer_digits.push(sum % 10);
    }
    let answer = answer_digits
        .iter()
        .rev()
        .fold(0u64, |acc, &d| if d >= 10 { acc * 100 + d } else { acc * 10 + d });
    (steps.join(" "), answer)
}

/// Whether `a + b` carries into a next column: a carry the trace can forget (a carry out of the
/// last column only adds a leading 1, and no trace drops that).
fn has_droppable_carry(a: u64, b: u64) -> bool {
    let (mut a, mut b, mut carry) = (a, b, 0);
    while a > 0 || b > 0 {
        carry = (a % 10 + b % 10 + carry) / 10;
        a /= 10;
        b /= 10;
        if carry > 0 && (a > 0 || b > 0) {
            return true;
        }
    }
    false
}

/// A cold-start completion for `p`, with its flaw if any.
fn cold_start_completion(p: &ArithmeticProblem, flaw: Option<TraceFlaw>) -> String {
    let (think, answer) = addition_trace(p.left, p.right, flaw == Some(TraceFlaw::DroppedCarry));
    match flaw {
        Some(TraceFlaw::BrokenFormat) => format!("<think>{think}</think>{answer}<|im_end|>"),
        _ => format!("<think>{think}</think><answer>{answer}</answer><|im_end|>"),
    }
}

/// Deterministic per-example coin flips for the flaws (SplitMix64 of seed and index), so the
/// traces do not shift when another setting changes.
fn unit_draw(seed: u64, index: u64, salt: u64) -> f64 {
    let mut z = seed
        .wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(salt.wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Problems of `split` from the addition config, re-prompted compactly.
fn addition_problems(
    task: &AdditionTaskConfig,
    seed: u64,
    split: Split,
    n: usize,
) -> Result<Vec<TaskExample>> {
    let config = ArithmeticConfig {
        ops: vec![ArithOp::Add],
        min_digits: task.min_digits,
        max_digits: task.max_digits,
    };
    let mut examples = arithmetic::generate_with(&config, seed, split, n)?;
    for ex in &mut examples {
        if let Problem::Arithmetic(p) = &ex.problem {
            ex.prompt = compact_prompt(p);
        }
    }
    Ok(examples)
}

/// The stage settings both GRPO and evaluation use: ChatML, accuracy + format rewards.
fn stage_settings(config: &DefaultRunConfig) -> StageSettings {
    StageSettings {
        template: PromptTemplate::new(TemplateKind::ChatMl),
        sampling: SamplingParams {
            temperature: config.grpo.temperature,
            max_new_tokens: config.grpo.max_new_tokens,
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
        max_batch: config.max_batch,
    }
}

/// Seconds since `start`.
fn secs(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

/// Runs the embedded default into `run_dir` (created if needed): model, cold-start SFT, held-out
/// evaluation, GRPO, evaluation again, checkpoint in `run_dir/final`, `run_dir/report.json`.
pub fn run_default(
    config: &DefaultRunConfig,
    run_dir: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<DefaultRunReport> {
    config.validate()?;
    let start = Instant::now();
    std::fs::create_dir_all(run_dir).map_err(|source| DefaultRunError::Io {
        path: run_dir.to_path_buf(),
        source,
    })?;
    let tokenizer = Tokenizer::byte();
    let settings = stage_settings(config);
    let seed = config.seed;

    progress(Progress::Stage {
        stage: StageName::Setup,
        detail: format!(
            "tiny model {}x{} ({} layers), {}-{} digit addition",
            config.model.hidden_size,
            config.model.intermediate_size,
            config.model.num_layers,
            config.task.min_digits,
            config.task.max_digits
        ),
        elapsed_secs: secs(start),
    });
    let model = Model::random(config.model_config()?, seed, config.model.init_std);
    let parameters = model.layout.total;
    let sft_problems =
        addition_problems(&config.task, seed.wrapping_add(1), Split::Train, config.sft.examples)?;
    let test_problems =
        addition_problems(&config.task, seed.wrapping_add(2), Split::Test, config.eval.problems)?;
    let rl_count = config.grpo.prompts_per_step * config.grpo.steps.max(1);
    let rl_problems = addition_problems(&config.task, seed.wrapping_add(3), Split::Train, rl_count)?;

    // Cold-start traces.
    let mut sft_examples = Vec::with_capacity(sft_problems.len());
    let (mut dropped, mut broken) = (0usize, 0usize);
    for (i, ex) in sft_problems.iter().enumerate() {
        let Problem::Arithmetic(p) = &ex.problem else {
            continue;
        };
        let flaw = if unit_draw(seed, i as u64, 1) < config.task.broken_format_fraction {
            Some(TraceFlaw::BrokenFormat)
        } else if has_droppable_carry(p.left, p.right)
            && unit_draw(seed, i as u64, 2) < config.task.dropped_carry_fraction
        {
            Some(TraceFlaw::DroppedCarry)
        } else {
            None
        };
        dropped += usize::from(flaw == Some(TraceFlaw::DroppedCarry));
        broken += usize::from(flaw == Some(TraceFlaw::BrokenFormat));
        let prompt = settings
            .template
            .render_prompt(&ex.prompt)
            .encode(&tokenizer)
            .map_err(|e| DefaultRunError::Tokenizer(e.to_string()))?;
        let completion = tokenizer
            .encode(&cold_start_completion(p, flaw), false)
            .map_err(|e| DefaultRunError::Tokenizer(e.to_string()))?;
        let mut loss_mask = vec![0.0; prompt.len()];
        loss_mask.extend(std::iter::repeat_n(1.0, completion.len()));
        let mut ids = prompt;
        ids.extend(completion);
        sft_examples.push(SftExample { ids, loss_mask });
    }

    // Cold-start SFT.
    progress(Progress::Stage {
        stage: StageName::Sft,
        detail: format!(
            "{} steps x {} traces ({} distinct; {dropped} drop a carry, {broken} break the format)",
            config.sft.steps,
            config.sft.batch_size,
            sft_examples.len()
        ),
        elapsed_secs: secs(start),
    });
    let sft_start = Instant::now();
    let schedule = LrSchedule {
        peak_lr: config.sft.lr,
        warmup_steps: config.sft.warmup_steps,
        total_steps: config.sft.steps as u64,
        min_lr_ratio: 0.1,
    };
    let mut trainer = SftTrainer::new(
        model,
        AdamWConfig {
            weight_decay: 0.0,
            ..AdamWConfig::default()
        },
        schedule,
        1.0,
    );
    let (mut first_loss, mut last_loss) = (f64::NAN, f64::NAN);
    let report_every = (config.sft.steps / 20).max(1);
    for step in 0..config.sft.steps {
        let batch: Vec<SftExample> = (0..config.sft.batch_size)
            .map(|j| sft_examples[(step * config.sft.batch_size + j) % sft_examples.len()].clone())
            .collect();
        let stats = trainer.step(&batch).map_err(DefaultRunError::Sft)?;
        if step == 0 {
            first_loss = stats.loss;
        }
        last_loss = stats.loss;
        if (step + 1) % report_every == 0 || step + 1 == config.sft.steps {
            progress(Progress::SftStep {
                step: step + 1,
                steps: config.sft.steps,
                loss: stats.loss,
                elapsed_secs: secs(start),
            });
        }
    }
    let n_traces = sft_examples.len().max(1) as f64;
    let sft = SftSummary {
        steps: config.sft.steps,
        first_loss,
        last_loss,
        dropped_carry_share: dropped as f64 / n_traces,
        broken_format_share: broken as f64 / n_traces,
        seconds: secs(sft_start),
    };
    let model = trainer.model;

    // Held-out evaluation of the cold-start model.
    progress(Progress::Stage {
        stage: StageName::EvalBefore,
        detail: format!(
            "{} held-out problems x {} samples",
            test_problems.len(),
            config.eval.samples
        ),
        elapsed_secs: secs(start),
    });
    let eval_start = Instant::now();
    let before = held_out_scores(&model, &tokenizer, &test_problems, &settings, config)?;
    let eval_once = secs(eval_start);
    progress(Progress::Eval {
        stage: StageName::EvalBefore,
        scores: before,
        elapsed_secs: secs(start),
    });

    // GRPO.
    progress(Progress::Stage {
        stage: StageName::Grpo,
        detail: format!(
            "{} steps x {} prompts x G={}, lr {}, beta {}",
            config.grpo.steps,
            config.grpo.prompts_per_step,
            config.grpo.group_size,
            config.grpo.lr,
            config.grpo.beta
        ),
        elapsed_secs: secs(start),
    });
    let grpo_start = Instant::now();
    let mut learner = GrpoLearner::new(
        model,
        LearnerConfig {
            grpo: GrpoConfig {
                beta: config.grpo.beta,
                max_completion_length: config.grpo.max_new_tokens,
                ..GrpoConfig::default()
            },
            group_size: config.grpo.group_size,
            minibatches: config.grpo.minibatches,
            epochs: 1,
            schedule: LrSchedule::constant(config.grpo.lr),
            ref_refresh_steps: 0,
            ..LearnerConfig::default()
        },
    );
    let mut grpo = GrpoSummary {
        steps: 0,
        steps_planned: config.grpo.steps,
        stopped_by_time_budget: false,
        first_reward: 0.0,
        last_reward: 0.0,
        seconds: 0.0,
    };
    let per = config.grpo.prompts_per_step;
    for step in 0..config.grpo.steps {
        if config.time_budget_secs > 0 && step > 0 {
            // Keep room for one more step, the final evaluation and saving.
            let step_secs = secs(grpo_start) / step as f64;
            let needed = secs(start) + step_secs + eval_once * 1.1 + 2.0;
            if needed > config.time_budget_secs as f64 {
                grpo.stopped_by_time_budget = true;
                break;
            }
        }
        let problems = &rl_problems[step * per..(step + 1) * per];
        let report = grpo_step(
            &mut learner,
            &tokenizer,
            problems,
            &settings,
            seed.wrapping_mul(1_000_003).wrapping_add(step as u64),
        )?;
        if step == 0 {
            grpo.first_reward = report.learner.reward_mean;
        }
        grpo.last_reward = report.learner.reward_mean;
        grpo.steps = step + 1;
        progress(Progress::GrpoStep {
            step: step + 1,
            steps: config.grpo.steps,
            reward: report.learner.reward_mean,
            accuracy: report.accuracy,
            format: report.format,
            frac_zero_std: report.learner.frac_zero_std,
            completion_len: report.learner.completion_len_mean,
            elapsed_secs: secs(start),
        });
    }
    grpo.seconds = secs(grpo_start);
    let model = learner.policy;

    progress(Progress::Stage {
        stage: StageName::EvalAfter,
        detail: format!(
            "{} held-out problems x {} samples",
            test_problems.len(),
            config.eval.samples
        ),
        elapsed_secs: secs(start),
    });
    let eval_start = Instant::now();
    let after = held_out_scores(&model, &tokenizer, &test_problems, &settings, config)?;
    let eval_seconds = eval_once + secs(eval_start);
    progress(Progress::Eval {
        stage: StageName::EvalAfter,
        scores: after,
        elapsed_secs: secs(start),
    });

    let checkpoint = run_dir.join("final");
    progress(Progress::Stage {
        stage: StageName::Save,
        detail: format!("checkpoint {}", checkpoint.display()),
        elapsed_secs: secs(start),
    });
    save_model_dir(&model, &checkpoint).map_err(DefaultRunError::Save)?;
    let report = DefaultRunReport {
        before,
        after,
        sft,
        grpo,
        eval_seconds,
        total_seconds: secs(start),
        parameters,
        checkpoint,
        config: config.clone(),
    };
    let path = run_dir.join("report.json");
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(&path, json + "\n").map_err(|source| DefaultRunError::Io { path, source })?;
    Ok(report)
}

/// Held-out scores of `model`: pass@1 and cons@k from the evaluation stage, plus the format rate
/// and completion lengths of the same samples (same seed, so the same completions).
fn held_out_scores(
    model: &Model,
    tokenizer: &Tokenizer,
    problems: &[TaskExample],
    settings: &StageSettings,
    config: &DefaultRunConfig,
) -> Result<HeldOutScores> {
    let sampling = SamplingParams {
        temperature: config.eval.temperature,
        top_p: config.eval.top_p,
        max_new_tokens: config.grpo.max_new_tokens,
        ..SamplingParams::default()
    };
    let k = config.eval.samples;
    let eval_seed = config.seed.wrapping_add(0xE7A1);
    let scores: EvalScores = evaluate(
        model,
        tokenizer,
        problems,
        settings,
        sampling.clone(),
        k,
        eval_seed,
    )?;
    let (format_rate, mean_length, truncated_rate) =
        format_and_length(model, tokenizer, problems, settings, sampling, k, eval_seed)?;
    Ok(HeldOutScores {
        problems: scores.problems,
        samples: scores.k,
        accuracy: scores.pass_at_1,
        cons_at_k: scores.cons_at_k,
        format_rate,
        mean_length,
        truncated_rate,
    })
}

/// Format rate, mean completion length and truncation rate of `k` samples per problem.
fn format_and_length(
    model: &Model,
    tokenizer: &Tokenizer,
    problems: &[TaskExample],
    settings: &StageSettings,
    mut sampling: SamplingParams,
    k: usize,
    seed: u64,
) -> Result<(f64, f64, f64)> {
    // The stop rules `evaluate` applies: the template's end of turn, the eos ids, `</answer>`.
    sampling.stop_token_ids.push(ByteTokenizer::IM_END);
    sampling
        .stop_token_ids
        .extend(tokenizer.eos_ids().iter().copied());
    sampling.stop_strings.push("</answer>".into());
    let requests = problems
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let ids = settings
                .template
                .render_prompt(&p.prompt)
                .encode(tokenizer)
                .map_err(|e| DefaultRunError::Tokenizer(e.to_string()))?;
            Ok(GenerationRequest {
                prompt_ids: ids,
                samples: k,
                // `evaluate`'s per-request seeds, so these are its completions.
                seed: seed
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    .wrapping_add(i as u64),
                params: sampling.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let completions = Sampler::new(model, settings.max_batch)
        .generate(&requests, Some(tokenizer))
        .map_err(DefaultRunError::Sample)?;
    let sandbox = CodeSandbox::unavailable("the default run has no code task");
    let (mut formatted, mut tokens, mut truncated) = (0usize, 0usize, 0usize);
    for c in &completions {
        let item = RewardItem {
            completion: c.text.clone().unwrap_or_default(),
            answer: Some(problems[c.request].answer.clone()),
            task: None,
            language: None,
            prompt: None,
            tests: None,
            extract: None,
            format: None,
            problem: Some(problems[c.request].problem.clone()),
            numbers: None,
            target: None,
        };
        let report = score_item(&item, &settings.rules, &sandbox)
            .map_err(|e| DefaultRunError::Judge(e.to_string()))?;
        formatted += usize::from(report.format.reward > 0.0);
        tokens += c.token_ids.len();
        truncated += usize::from(c.finish == FinishReason::Length);
    }
    let n = completions.len().max(1) as f64;
    Ok((
        formatted as f64 / n,
        tokens as f64 / n,
        truncated as f64 / n,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_add_column_by_column() {
        assert_eq!(
            addition_trace(17, 25, false),
            ("7+5=12 1+2+1=4".to_string(), 42)
        );
        assert_eq!(
            addition_trace(87, 25, false),
            ("7+5=12 8+2+1=11".to_string(), 112)
        );
        assert_eq!(addition_trace(5, 17, false), ("5+7=12 0+1+1=2".to_string(), 22));
        for (a, b) in [(17, 25), (99, 99), (10, 10), (5, 17), (123_456, 987_654)] {
            assert_eq!(addition_trace(a, b, false).1, a + b, "{a}+{b}");
        }
    }

    #[test]
    fn a_dropped_carry_gives_a_fluent_wrong_answer() {
        assert_eq!(
            addition_trace(17, 25, true),
            ("7+5=12 1+2=3".to_string(), 32)
        );
        assert!(has_droppable_carry(17, 25) && !has_droppable_carry(12, 34));
        assert!(!has_droppable_carry(50, 60), "a carry out of the last column cannot be dropped");
        // Without a carry there is nothing to drop.
        assert_eq!(addition_trace(12, 34, true).1, 46);
    }

    #[test]
    fn flawed_completions_fail_the_rule_they_break() {
        let p = ArithmeticProblem {
            left: 17,
            op: ArithOp::Add,
            right: 25,
        };
        assert_eq!(
            cold_start_completion(&p, None),
            "<think>7+5=12 1+2+1=4</think><answer>42</answer><|im_end|>"
        );
        assert_eq!(
            cold_start_completion(&p, Some(TraceFlaw::BrokenFormat)),
            "<think>7+5=12 1+2+1=4</think>42<|im_end|>"
        );
    }

    #[test]
    fn bad_configs_name_the_field() {
        let mut config = DefaultRunConfig::default();
        config.grpo.group_size = 1;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("grpo.group_size"), "{err}");
        let mut config = DefaultRunConfig::default();
        config.model.num_heads = 3;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("model.num_heads"), "{err}");
        let mut config = DefaultRunConfig::default();
        config.model.max_position_embeddings = 16;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("model.max_position_embeddings"), "{err}");
        assert!(DefaultRunConfig::default().validate().is_ok());
        assert!(DefaultRunConfig::tiny().validate().is_ok());
    }
}
