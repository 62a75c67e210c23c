//! r1-config: the typed configuration of a run, read from TOML.
//!
//! Each component owns its config struct (torchtitan style): sampling (`SamplingParams`), rewards
//! (`RewardRules`), the learner (`LearnerConfig`, with the GRPO objective, AdamW and the schedule);
//! `JobConfig` composes them with what only a run has (stage, model, data, checkpoints) and one
//! table per stage (`[grpo]`, `[sft]`, `[rejection]`, `[distill]`, `[eval]`), each owned by the
//! stage in `r1_actors::stages`; `JobConfig::*_job` turn a config into the stage's job.
//! Unknown keys are rejected, and every error names the file, the line and the key path, e.g.
//! `r1-zero.toml:14:1: learner.grpo.betta: unknown field`.
//!
//! `config/examples/` holds presets with the paper's numbers; a test loads every one. With the
//! feature `testkit`, [`testkit::JobToml`] builds the job configs tests write.

pub mod limits;
pub mod preference;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use r1_actors::judge::reward::RewardRules;
use r1_actors::learner::LearnerConfig;
use r1_actors::stages::{
    DistillJob, EvalJob, GeneralPrompts, GrpoJob, ModelSpec, PreferenceJob, RejectionJob,
    RewardModelSpec, RunSpec, SftJob,
};
pub use r1_kernels::device::DevicesConfig;
use r1_kernels::sample::SamplingParams;
use r1_kernels::template::PromptTemplate;

pub use r1_actors::data::{DataSource as DataConfig, FieldMap};
pub use r1_actors::stages::{
    CheckpointConfig, DistillConfig, EvalConfig, GrpoLoopConfig, RejectionConfig, SftConfig,
};

/// Which stage of the R1 pipeline a run executes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// GRPO with rule rewards (R1-Zero, reasoning RL, preference RL's rule part).
    Grpo,
    /// Supervised fine-tuning (cold start, the rejection-sampled set, distillation).
    Sft,
    /// Sample k answers per prompt, keep correct readable ones as an SFT set.
    Rejection,
    /// A teacher's filtered samples, then SFT of a student on them.
    Distill,
    /// pass@1 over k samples and cons@k.
    Eval,
    /// The last RL stage: GRPO with rule rewards for reasoning prompts and reward models for
    /// general ones (`[grpo]` and `[preference]`).
    Preference,
}

impl Stage {
    /// The stage's name as configs, runs and messages spell it (`run.stage`).
    pub fn name(self) -> &'static str {
        match self {
            Stage::Grpo => "grpo",
            Stage::Preference => "preference",
            Stage::Sft => "sft",
            Stage::Rejection => "rejection",
            Stage::Distill => "distill",
            Stage::Eval => "eval",
        }
    }
}

/// What the run is and where it writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// A name for people and for the run directory.
    pub name: String,
    /// The stage.
    pub stage: Stage,
    /// Seed of every random choice in the run (sampling, data order).
    #[serde(default)]
    pub seed: u64,
    /// Where checkpoints, reports and logs go.
    pub output_dir: PathBuf,
}

/// The model to start from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A Hugging Face model directory (config.json, safetensors, tokenizer.json).
    pub path: PathBuf,
    /// Prompt template: r1_zero, chatml, llama3, with `+reasoning` to pre-fill `<think>`.
    #[serde(default)]
    pub template: PromptTemplate,
    /// `"byte"` for r1's byte tokenizer (tiny built-in models); absent: the model directory's
    /// tokenizer.json.
    #[serde(default)]
    pub tokenizer: Option<String>,
}

/// A whole run: each component's config, composed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// What and where.
    pub run: RunConfig,
    /// The starting model.
    pub model: ModelSection,
    /// The prompts.
    pub data: DataConfig,
    /// Rollout sampling.
    #[serde(default)]
    pub sampling: SamplingParams,
    /// Reward rules.
    #[serde(default)]
    pub rewards: RewardRules,
    /// The learner (GRPO objective, optimizer, schedule).
    #[serde(default)]
    pub learner: LearnerConfig,
    /// The GRPO loop (for `stage = "grpo"`).
    #[serde(default)]
    pub grpo: Option<GrpoLoopConfig>,
    /// Supervised fine-tuning (for `stage = "sft"`, and the student of `distill`).
    #[serde(default)]
    pub sft: Option<SftConfig>,
    /// Rejection sampling (for `stage = "rejection"`, and the teacher of `distill`).
    #[serde(default)]
    pub rejection: Option<RejectionConfig>,
    /// Distillation's student (for `stage = "distill"`).
    #[serde(default)]
    pub distill: Option<DistillConfig>,
    /// Evaluation (for `stage = "eval"`).
    #[serde(default)]
    pub eval: Option<EvalConfig>,
    /// Checkpointing.
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// The preference-RL stage's reward models and schedule (the last RL stage).
    #[serde(default)]
    pub preference: Option<preference::PreferenceStageSection>,
    /// Which device the sampler, the learner(s) and the reward models use (`[devices]`; every
    /// key `auto` when absent: the GPUs present, else the CPU).
    #[serde(default)]
    pub devices: DevicesConfig,
}

/// Why a config cannot be used: where, and what.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed, or a key is unknown, missing or of the wrong type.
    #[error("{path}:{line}:{column}: {key}{message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when unknown).
        line: usize,
        /// 1-based column (0 when unknown).
        column: usize,
        /// The key path (`learner.grpo.beta`), with ": " after it; empty at the top level.
        key: String,
        /// The parser's message.
        message: String,
    },
    /// Every key parsed but a value is out of range or inconsistent with another.
    #[error("{path}: {key}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key path.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

impl JobConfig {
    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        Self::from_toml(&text, path)
    }

    /// Parses and validates TOML text; `path` only names the file in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let syntax = |span: Option<std::ops::Range<usize>>, key: String, message: String| {
            let (line, column) = span.map_or((0, 0), |s| line_col(text, s.start));
            ConfigError::Syntax {
                path: path.to_path_buf(),
                line,
                column,
                key,
                message,
            }
        };
        let deserializer = toml::de::Deserializer::parse(text)
            .map_err(|e| syntax(e.span(), String::new(), e.message().to_string()))?;
        let config: JobConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." || key.is_empty() {
                String::new()
            } else {
                format!("{key}: ")
            };
            let inner = e.into_inner();
            syntax(inner.span(), key, inner.message().to_string())
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Range and consistency checks that types cannot express.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.into(),
            message,
        };
        self.sampling
            .validate()
            .map_err(|m| invalid("sampling", m))?;
        self.rewards
            .weights
            .validate()
            .map_err(|e| invalid("rewards.weights", e.to_string()))?;
        let l = &self.learner;
        if l.group_size < 2 {
            return Err(invalid(
                "learner.group_size",
                format!(
                    "GRPO compares completions within a group: need at least 2, got {}",
                    l.group_size
                ),
            ));
        }
        if l.minibatches == 0 || l.epochs == 0 {
            return Err(invalid(
                "learner.minibatches",
                "minibatches and epochs must be at least 1".into(),
            ));
        }
        if !(l.grpo.epsilon_low > 0.0 && l.grpo.epsilon_low < 1.0) {
            return Err(invalid(
                "learner.grpo.epsilon_low",
                format!("must be in (0, 1), got {}", l.grpo.epsilon_low),
            ));
        }
        let valid = l.grpo.epsilon_high > 0.0 && l.grpo.beta >= 0.0;
        if !valid {
            return Err(invalid(
                "learner.grpo",
                "epsilon_high must be > 0 and beta >= 0".into(),
            ));
        }
        l.grpo
            .validate()
            .map_err(|message| invalid("learner.grpo", message))?;
        if !(l.schedule.peak_lr > 0.0 && l.schedule.peak_lr.is_finite()) {
            return Err(invalid(
                "learner.schedule.peak_lr",
                format!("must be a positive number, got {}", l.schedule.peak_lr),
            ));
        }
        match (self.run.stage, &self.grpo) {
            (Stage::Grpo, None) => {
                return Err(invalid(
                    "grpo",
                    "stage = \"grpo\" needs a [grpo] table (steps, prompts_per_step)".into(),
                ))
            }
            (Stage::Grpo, Some(g))
                if g.steps == 0 || g.prompts_per_step == 0 || g.max_batch == 0 =>
            {
                return Err(invalid(
                    "grpo",
                    "steps, prompts_per_step and max_batch must be at least 1".into(),
                ));
            }
            (Stage::Preference, _) if self.preference.is_none() => {
                return Err(invalid(
                    "preference",
                    "stage = \"preference\" needs a [preference] table (reward_models, general_prompts, preference_from_step)".into(),
                ))
            }
            (Stage::Preference, None) => {
                return Err(invalid(
                    "grpo",
                    "stage = \"preference\" needs a [grpo] table (steps, prompts_per_step)".into(),
                ))
            }
            (Stage::Preference, Some(g))
                if g.steps == 0 || g.prompts_per_step == 0 || g.max_batch == 0 =>
            {
                return Err(invalid(
                    "grpo",
                    "steps, prompts_per_step and max_batch must be at least 1".into(),
                ));
            }
            (Stage::Preference, Some(g)) if g.dynamic_sampling > 0 => {
                return Err(invalid(
                    "grpo.dynamic_sampling",
                    "the preference stage does not resample groups; leave it at 0".into(),
                ));
            }
            (Stage::Sft, _) if self.sft.is_none() => {
                return Err(invalid(
                    "sft",
                    "stage = \"sft\" needs an [sft] table (data = the JSONL set)".into(),
                ))
            }
            (Stage::Sft, _) if self.sft.as_ref().is_some_and(|s| s.data.is_none()) => {
                return Err(invalid(
                    "sft.data",
                    "stage = \"sft\" needs the JSONL set to train on".into(),
                ));
            }
            (Stage::Distill, _) if self.distill.is_none() => {
                return Err(invalid(
                    "distill",
                    "stage = \"distill\" needs a [distill] table (student = a model directory)"
                        .into(),
                ));
            }
            _ => {}
        }
        if let Some(p) = &self.preference {
            p.validate(path)?;
        }
        if let Some(sft) = &self.sft {
            sft.validate().map_err(|m| invalid("sft", m))?;
        }
        if let Some(rejection) = &self.rejection {
            rejection.validate().map_err(|m| invalid("rejection", m))?;
        }
        if let Some(eval) = &self.eval {
            eval.validate().map_err(|m| invalid("eval", m))?;
            for (name, data) in &eval.datasets {
                check_data(data).map_err(|m| invalid(&format!("eval.datasets.{name}"), m))?;
            }
        }
        limits::check_sizes(self).map_err(|(key, message)| invalid(&key, message))?;
        self.devices
            .validate()
            .map_err(|e| invalid(&e.key, e.message))?;
        if self.checkpoint.every_steps == 0 {
            return Err(invalid(
                "checkpoint.every_steps",
                "must be at least 1".into(),
            ));
        }
        if let Some(t) = &self.model.tokenizer {
            if t != "byte" {
                return Err(invalid("model.tokenizer", format!("`{t}` is not a tokenizer r1 builds in (byte); leave it out to use the model's tokenizer.json")));
            }
        }
        check_data(&self.data).map_err(|m| {
            let key = if matches!(self.data, DataConfig::Builtin { .. }) {
                "data.task"
            } else {
                "data"
            };
            invalid(key, m)
        })?;
        Ok(())
    }

    /// The run's identity and output for a stage; `config_hash` identifies the config text (its
    /// checkpoints are refused under another), `stop_at` ends it early.
    pub fn run_spec(&self, config_hash: String, stop_at: Option<u64>) -> RunSpec {
        RunSpec {
            seed: self.run.seed,
            output_dir: self.run.output_dir.clone(),
            checkpoint: self.checkpoint,
            config_hash,
            stop_at,
            devices: self.devices,
        }
    }

    /// Makes every relative path of the config (model, data, SFT set, rejection output, distill
    /// student, eval datasets, general prompts, reward models, output directory) relative to
    /// `base` — what r1d does with the folder `r1ctl start` ran in.
    pub fn resolve_paths(&mut self, base: &Path) {
        let at = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        let data = |d: &mut DataConfig| {
            if let DataConfig::Jsonl { path, .. } | DataConfig::Parquet { path, .. } = d {
                at(path);
            }
        };
        at(&mut self.run.output_dir);
        at(&mut self.model.path);
        data(&mut self.data);
        if let Some(p) = self.sft.as_mut().and_then(|s| s.data.as_mut()) {
            at(p);
        }
        if let Some(p) = self.rejection.as_mut().and_then(|r| r.output.as_mut()) {
            at(p);
        }
        if let Some(d) = self.distill.as_mut() {
            at(&mut d.student);
        }
        if let Some(e) = self.eval.as_mut() {
            e.datasets.values_mut().for_each(data);
        }
        if let Some(p) = self.preference.as_mut() {
            at(&mut p.general_prompts);
            for m in &mut p.reward_models {
                at(&mut m.path);
            }
        }
    }

    /// The `[model]` section as the stages take it.
    pub fn model_spec(&self) -> ModelSpec {
        ModelSpec {
            path: self.model.path.clone(),
            template: self.model.template,
            tokenizer: self.model.tokenizer.clone(),
        }
    }

    /// The GRPO stage's job (`None` without a `[grpo]` table).
    pub fn grpo_job(&self, run: RunSpec) -> Option<GrpoJob> {
        Some(GrpoJob {
            run,
            model: self.model_spec(),
            data: self.data.clone(),
            sampling: self.sampling.clone(),
            rules: self.rewards,
            learner: self.learner.clone(),
            grpo: self.grpo.clone()?,
        })
    }

    /// The preference stage's job (`None` without `[grpo]` and `[preference]` tables).
    pub fn preference_job(&self, run: RunSpec) -> Option<PreferenceJob> {
        let p = self.preference.as_ref()?;
        Some(PreferenceJob {
            run,
            model: self.model_spec(),
            data: self.data.clone(),
            general: GeneralPrompts {
                path: p.general_prompts.clone(),
                field: p.general_prompt_field.clone(),
            },
            sampling: self.sampling.clone(),
            rules: self.rewards,
            learner: self.learner.clone(),
            grpo: self.grpo.clone()?,
            reward_models: p
                .reward_models
                .iter()
                .map(|m| RewardModelSpec {
                    name: m.name.clone(),
                    path: m.path.clone(),
                    tokenizer: m.tokenizer.clone(),
                    view: m.view,
                    weight: m.weight,
                    max_batch: m.max_batch,
                    max_tokens: m.max_tokens,
                })
                .collect(),
            normalisation: p.normalisation,
            preference_from_step: p.preference_from_step,
            general_share: p.general_share,
        })
    }

    /// The SFT stage's job (`None` without an `[sft]` table).
    pub fn sft_job(&self, run: RunSpec) -> Option<SftJob> {
        Some(SftJob {
            run,
            model: self.model_spec(),
            sft: self.sft.clone()?,
        })
    }

    /// The rejection stage's job (`[rejection]` defaults when absent).
    pub fn rejection_job(&self, run: RunSpec) -> RejectionJob {
        RejectionJob {
            run,
            model: self.model_spec(),
            data: self.data.clone(),
            sampling: self.sampling.clone(),
            rules: self.rewards,
            rejection: self.rejection.clone().unwrap_or_default(),
        }
    }

    /// The distill stage's job (`None` without a `[distill]` table).
    pub fn distill_job(&self, run: RunSpec) -> Option<DistillJob> {
        Some(DistillJob {
            run,
            teacher: self.model_spec(),
            distill: self.distill.clone()?,
            data: self.data.clone(),
            sampling: self.sampling.clone(),
            rules: self.rewards,
            rejection: self.rejection.clone().unwrap_or_default(),
            sft: self.sft.clone().unwrap_or_default(),
        })
    }

    /// The evaluation stage's job (`[eval]` defaults when absent; its datasets, else `[data]`).
    pub fn eval_job(&self, run: RunSpec) -> EvalJob {
        let eval = self.eval.clone().unwrap_or_default();
        let datasets = if eval.datasets.is_empty() {
            vec![(self.data.name(), self.data.clone())]
        } else {
            eval.datasets
                .iter()
                .map(|(name, data)| (name.clone(), data.clone()))
                .collect()
        };
        EvalJob {
            run,
            model: self.model_spec(),
            datasets,
            sampling: self.sampling.clone(),
            rules: self.rewards,
            eval,
        }
    }
}

/// Checks what can be checked of a data source without reading it.
/// The most problems a built-in task generates per split (10x the default training pool).
pub const MAX_BUILTIN_PROBLEMS: usize = 100_000;

fn check_data(data: &DataConfig) -> Result<(), String> {
    match data {
        DataConfig::Builtin { task, .. } if task != "countdown" && task != "arithmetic" => Err(
            format!("unknown built-in task `{task}` (countdown, arithmetic)"),
        ),
        // Generated up front when a run starts: a size far past any sensible split would hold the
        // start for minutes (found by fuzzing: countdown's `test_size = 1000000`).
        DataConfig::Builtin {
            train_size,
            test_size,
            ..
        } if (*train_size).max(*test_size) > MAX_BUILTIN_PROBLEMS => Err(format!(
            "train_size = {train_size}, test_size = {test_size}: a built-in task generates at most \
             {MAX_BUILTIN_PROBLEMS} problems per split"
        )),
        DataConfig::Jsonl { path, .. } | DataConfig::Parquet { path, .. }
            if path.as_os_str().is_empty() =>
        {
            Err("path must not be empty".into())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[run]
name = "t"
stage = "grpo"
output_dir = "runs/t"

[model]
path = "models/m"

[data]
kind = "builtin"
task = "countdown"

[grpo]
steps = 10
prompts_per_step = 4
"#;

    /// Found by fuzzing: `test_size = 1000000` for countdown passed validation and then held the
    /// start (r1d's planner generates the split) for minutes.
    #[test]
    fn built_in_split_sizes_are_capped() {
        let path = Path::new("job.toml");
        let ok = MINIMAL.replace(
            "task = \"countdown\"",
            "task = \"countdown\"\ntest_size = 100000",
        );
        assert!(JobConfig::from_toml(&ok, path).is_ok());
        for key in ["train_size", "test_size"] {
            let text = MINIMAL.replace(
                "task = \"countdown\"",
                &format!("task = \"countdown\"\n{key} = 1000000"),
            );
            let message = JobConfig::from_toml(&text, path).unwrap_err().to_string();
            assert!(
                message.contains("job.toml")
                    && message.contains("data.task")
                    && message.contains("at most 100000"),
                "{message}"
            );
        }
    }

    fn parse(text: &str) -> Result<JobConfig, ConfigError> {
        JobConfig::from_toml(text, Path::new("job.toml"))
    }

    #[test]
    fn a_minimal_config_gets_the_paper_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.learner.group_size, 16);
        assert_eq!(c.learner.grpo.beta, 0.001);
        assert_eq!(c.learner.schedule.peak_lr, 3e-6);
        assert_eq!(c.learner.ref_refresh_steps, 400);
        assert!(c.learner.share_prompts);
        assert_eq!(c.grpo.as_ref().unwrap().max_batch, 64);
        let off = parse(&format!("{MINIMAL}\n[learner]\nshare_prompts = false\n")).unwrap();
        assert!(!off.learner.share_prompts);
    }

    #[test]
    fn a_bf16_sampler_and_its_correction_are_read_and_checked() {
        let c = parse(&format!(
            "{MINIMAL}\n[devices]\nsampler_precision = \"bf16\"\n\n[learner.grpo]\nsampler_is_mode = \"sequence-mask\"\nsampler_is_max = 3.0\n"
        ))
        .unwrap();
        assert_eq!(
            c.devices.sampler_precision,
            r1_kernels::device::Precision::Bf16
        );
        assert_eq!(
            c.learner.grpo.sampler_is_mode,
            r1_kernels::train::SamplerIsMode::SequenceMask
        );
        assert_eq!(c.learner.grpo.sampler_is_max, 3.0);
        // The defaults: the device's own precision, truncated per-token weights at 2 (TIS).
        let d = parse(MINIMAL).unwrap();
        assert_eq!(
            d.devices.sampler_precision,
            r1_kernels::device::Precision::Auto
        );
        assert_eq!(
            d.learner.grpo.sampler_is_mode,
            r1_kernels::train::SamplerIsMode::TokenTruncate
        );
        let err = parse(&format!(
            "{MINIMAL}\n[devices]\nsampler_precision = \"fp8\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("sampler_precision") && err.contains("fp8"),
            "{err}"
        );
        let err = parse(&format!(
            "{MINIMAL}\n[learner.grpo]\nsampler_is_min = 2.0\nsampler_is_max = 1.0\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("learner.grpo") && err.contains("sampler_is_min"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_wrong_types_and_bad_values_name_the_key_and_line() {
        let err = parse(&format!("{MINIMAL}\n[learner.grpo]\nbetta = 0.1\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("job.toml:") && err.contains("betta"),
            "{err}"
        );
        assert!(err.contains(":19:1:"), "the line of the bad key: {err}");

        let err = parse(&MINIMAL.replace("steps = 10", "steps = \"ten\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("grpo.steps") && err.contains(":15:"), "{err}");

        let err = parse(&format!("{MINIMAL}\n[learner]\ngroup_size = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("learner.group_size") && err.contains("at least 2"),
            "{err}"
        );

        let err = parse(&MINIMAL.replace("countdown", "sudoku"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("data.task") && err.contains("sudoku"), "{err}");

        let err = parse(&format!("{MINIMAL}\n[sampling]\ntop_p = 2.0\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sampling") && err.contains("top_p"), "{err}");

        let err = parse("[run\nname = 1").unwrap_err().to_string();
        assert!(err.starts_with("job.toml:1:"), "{err}");

        let err = parse(&MINIMAL.replace("[grpo]\nsteps = 10\nprompts_per_step = 4\n", ""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("[grpo]"), "{err}");
    }

    /// The header of a config for `stage`, with a built-in task as data.
    fn header(stage: &str) -> String {
        format!(
            "[run]\nname = \"t\"\nstage = \"{stage}\"\noutput_dir = \"runs/t\"\n\n[model]\npath = \"models/m\"\n\n[data]\nkind = \"builtin\"\ntask = \"arithmetic\"\n"
        )
    }

    #[test]
    fn every_stage_has_its_table_and_located_errors() {
        // sft: the table and its data are required; unknown keys are located.
        let sft = format!(
            "{}\n[sft]\ndata = \"d.jsonl\"\nepochs = 2\npack_length = 64\n",
            header("sft")
        );
        let c = parse(&sft).unwrap();
        let s = c.sft.as_ref().unwrap();
        assert_eq!((s.epochs, s.pack_length, s.batch_size), (2, 64, 8));
        let err = parse(&header("sft")).unwrap_err().to_string();
        assert!(err.contains("[sft]"), "{err}");
        let err = parse(&format!("{}\n[sft]\nepochs = 2\n", header("sft")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sft.data"), "{err}");
        let err = parse(&format!("{sft}lr_peak = 1.0\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("job.toml:17:1: sft.lr_peak: unknown field"),
            "{err}"
        );
        let err = parse(&sft.replace("epochs = 2", "epochs = 0"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("job.toml: sft: epochs"), "{err}");

        // rejection: defaults without a table; the filter nests.
        let c = parse(&header("rejection")).unwrap();
        assert!(c.rejection.is_none());
        let c = parse(&format!(
            "{}\n[rejection]\nsamples_per_prompt = 8\n\n[rejection.filter]\nmax_repeats = 5\n",
            header("rejection")
        ))
        .unwrap();
        let r = c.rejection.unwrap();
        assert_eq!((r.samples_per_prompt, r.filter.max_repeats), (8, 5));
        let err = parse(&format!(
            "{}\n[rejection.filter]\nmax_repeat = 5\n",
            header("rejection")
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains(":14:1: rejection.filter.max_repeat"), "{err}");

        // distill: needs its student.
        let err = parse(&header("distill")).unwrap_err().to_string();
        assert!(err.contains("[distill]"), "{err}");
        let c = parse(&format!(
            "{}\n[distill]\nstudent = \"s\"\n",
            header("distill")
        ))
        .unwrap();
        assert_eq!(c.distill.unwrap().student, PathBuf::from("s"));

        // eval: the paper's sampling by default, named datasets of any kind.
        let c = parse(&header("eval")).unwrap();
        let job = c.eval_job(c.run_spec(String::new(), None));
        assert_eq!(
            (job.eval.temperature, job.eval.top_p, job.eval.samples),
            (0.6, 0.95, 4)
        );
        assert_eq!(job.datasets.len(), 1);
        let c = parse(&format!(
            "{}\n[eval]\ngreedy = true\n\n[eval.datasets.gsm]\nkind = \"parquet\"\npath = \"gsm.parquet\"\nfields = {{ prompt = \"question\" }}\n\n[eval.datasets.count]\nkind = \"builtin\"\ntask = \"countdown\"\n",
            header("eval")
        ))
        .unwrap();
        let job = c.eval_job(c.run_spec(String::new(), None));
        let names: Vec<&str> = job.datasets.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["count", "gsm"]);
        assert!(job.eval.greedy);
        let err = parse(&format!(
            "{}\n[eval.datasets.x]\nkind = \"builtin\"\ntask = \"chess\"\n",
            header("eval")
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("eval.datasets.x") && err.contains("chess"),
            "{err}"
        );
        let err = parse(&format!("{}\n[eval]\ntop_p = 0.0\n", header("eval")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("eval: top_p"), "{err}");

        // grpo: dynamic sampling off by default; parquet data.
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.grpo.as_ref().unwrap().dynamic_sampling, 0);
        let c = parse(&MINIMAL.replace(
            "kind = \"builtin\"\ntask = \"countdown\"",
            "kind = \"parquet\"\npath = \"m.parquet\"",
        ))
        .unwrap();
        assert!(matches!(c.data, DataConfig::Parquet { .. }));
        let err = parse(&MINIMAL.replace(
            "kind = \"builtin\"\ntask = \"countdown\"",
            "kind = \"parquet\"\npath = \"m.parquet\"\ncolumns = 3",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("data") && err.contains("columns"), "{err}");
    }

    #[test]
    fn every_example_preset_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                JobConfig::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
                seen += 1;
            }
        }
        assert!(seen >= 8, "presets in {}", dir.display());
        let zero = JobConfig::from_file(&dir.join("r1-zero.toml")).unwrap();
        // The paper's R1-Zero settings.
        assert_eq!(zero.learner.schedule.peak_lr, 3e-6);
        assert_eq!(zero.learner.grpo.beta, 0.001);
        assert_eq!(zero.learner.group_size, 16);
        assert_eq!(zero.grpo.as_ref().unwrap().prompts_per_step, 32);
        assert_eq!(zero.sampling.temperature, 1.0);
        assert_eq!(zero.learner.ref_refresh_steps, 400);
        assert_eq!(zero.learner.minibatches, 16);
        assert_eq!(zero.learner.epochs, 1);
        let reasoning = JobConfig::from_file(&dir.join("reasoning-rl.toml")).unwrap();
        assert_eq!(reasoning.learner.grpo.epsilon_high, 10.0);
        assert_eq!(reasoning.rewards.weights.language, 1.0);
    }
}
