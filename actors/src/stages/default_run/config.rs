//! The default run's configuration: each stage owns its settings, composed into
//! [`DefaultRunConfig`]; `validate` names the first bad field.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use r1_kernels::bench::builtin_config;
use r1_kernels::model::ModelConfig;
use r1_kernels::template::{PromptTemplate, TemplateKind};
use r1_kernels::tokenizer::ByteTokenizer;

use super::{DefaultRunError, Result};

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
    pub init_std: f64,
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

/// The operation of the run's task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskOp {
    /// `a+b`, both operands of `min_digits..=max_digits` digits; the trace adds column by column.
    Add,
    /// `a*b`, `a` of `min_digits..=max_digits` digits and `b` one digit in 2..=9; the trace
    /// multiplies `a`'s digits by `b` from the right, carrying as it goes.
    Multiply,
}

/// The task: `a+b` or `a*b` on n-digit operands, with cold-start traces that may make known
/// mistakes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskConfig {
    /// The operation.
    pub op: TaskOp,
    /// Fewest digits per operand (of `a` for multiplication).
    pub min_digits: u32,
    /// Most digits per operand (the trace grows one column per digit).
    pub max_digits: u32,
    /// Share of cold-start traces of problems with a carry that forget it (a fluent chain of
    /// thought with a wrong answer): what SFT cannot fix and RL must.
    pub dropped_carry_fraction: f64,
    /// Share of cold-start traces that write the answer without `<answer>` tags.
    pub broken_format_fraction: f64,
}

impl Default for TaskConfig {
    fn default() -> Self {
        TaskConfig {
            op: TaskOp::Add,
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
    /// Prompts per step, fresh train-split problems each step (they may overlap the SFT traces'
    /// problems: both are training data; only the test split is held out).
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
    pub temperature: f64,
    /// Completion limit in tokens.
    pub max_new_tokens: usize,
}

impl Default for GrpoSettings {
    fn default() -> Self {
        GrpoSettings {
            steps: 150,
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
    pub temperature: f64,
    /// Nucleus sampling (the paper's 0.95).
    pub top_p: f64,
    /// Also evaluate the starting model, before the cold start (a real model's base figures;
    /// the tiny random model scores 0).
    pub base: bool,
}

impl Default for EvalSettings {
    fn default() -> Self {
        EvalSettings {
            problems: 200,
            samples: 4,
            temperature: 0.6,
            top_p: 0.95,
            base: false,
        }
    }
}

/// The whole default run: each stage owns its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DefaultRunConfig {
    /// Seeds the model, the problems, the traces and every sampler.
    pub seed: u64,
    /// A Hugging Face model directory (config.json, safetensors, tokenizer.json) to start from
    /// instead of the tiny random model: a real model's recipe. Its tokenizer is used, `model`
    /// is ignored, and a relative path is taken from the working directory.
    pub model_dir: Option<PathBuf>,
    /// The chat format prompts and traces are written in (`chatml`, `llama3`, …): the model's
    /// own, for a real model (SmolLM2 and Qwen use ChatML).
    pub template: TemplateKind,
    /// Model shape.
    pub model: TinyModelShape,
    /// Task and cold-start trace quality.
    pub task: TaskConfig,
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
            model_dir: None,
            template: TemplateKind::ChatMl,
            model: TinyModelShape::default(),
            task: TaskConfig::default(),
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
            ("sft.steps", self.sft.steps),
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
            return invalid(
                "model.num_heads",
                m.num_heads,
                "must divide model.hidden_size",
            );
        }
        if !(m.hidden_size / m.num_heads).is_multiple_of(2) {
            return invalid(
                "model.num_heads",
                m.num_heads,
                "hidden_size / num_heads must be even (RoPE rotates pairs)",
            );
        }
        if !m.num_heads.is_multiple_of(m.num_kv_heads) {
            return invalid(
                "model.num_kv_heads",
                m.num_kv_heads,
                "must divide model.num_heads",
            );
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
            return invalid(
                "grpo.group_size",
                g.group_size,
                "must be at least 2 (GRPO compares within a group)",
            );
        }
        if !(g.lr.is_finite() && g.lr >= 0.0) {
            return invalid("grpo.lr", g.lr, "must be a finite number >= 0");
        }
        if !(g.beta.is_finite() && g.beta >= 0.0) {
            return invalid("grpo.beta", g.beta, "must be a finite number >= 0");
        }
        if !(g.temperature > 0.0 && g.temperature <= 100.0) {
            return invalid(
                "grpo.temperature",
                g.temperature,
                "must be in (0, 100] (GRPO needs varied samples)",
            );
        }
        let e = &self.eval;
        if !(e.temperature >= 0.0 && e.temperature <= 100.0) {
            return invalid(
                "eval.temperature",
                e.temperature,
                "must be in [0, 100] (0 is greedy)",
            );
        }
        if !(e.top_p > 0.0 && e.top_p <= 1.0) {
            return invalid("eval.top_p", e.top_p, "must be in (0, 1]");
        }
        // A real model's context is checked against its config once loaded (`run_default`).
        let longest = self.longest_sequence();
        if self.model_dir.is_none() && m.max_position_embeddings < longest {
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

/// Tokens ChatML adds around a one-line user prompt
/// (`<|im_start|>user\n…<|im_end|>\n<|im_start|>assistant\n`).
fn chatml_overhead() -> usize {
    let rendered = PromptTemplate::new(TemplateKind::ChatMl).render_prompt("");
    ByteTokenizer
        .encode(&rendered.text, rendered.add_special_tokens)
        .len()
}

#[cfg(test)]
mod tests {
    use super::*;

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
