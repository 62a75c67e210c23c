//! Sizes a job config may ask for, checked at validation, and the resources a run needs, checked
//! before it starts (`r1ctl train`, and `r1d` before it answers a start: a refusal is a 400).
//!
//! A `group_size` of 1e12 is a typo or an attack, never a run: every count that sizes a buffer
//! (samples, prompts, batch rows, tokens) has an upper bound far above any real recipe, and the
//! error names the key. Then [`JobConfig::check_resources`] reads what the run will read — the
//! model's config.json and weight headers, the data files — and estimates the memory the stage
//! needs against what this process may allocate, so that a run too big for the machine is refused
//! with the figures ("needs 64.0 GiB, 11.3 GiB available") instead of aborting the process that
//! hosts it.

use std::path::Path;

use r1_kernels::device::memory::{
    self, memory_limit_override, LearnerShape, MemoryEstimate, RewardModelShape, RunShape,
    SamplerShape,
};
use r1_kernels::device::{self, DeviceList, Placement};
use r1_kernels::model::check_model_dir;
use r1_kernels::model::limits::{available_memory, MemoryAvailable};
use r1_kernels::model::sequence_classification::read_config as read_reward_model_config;
use r1_kernels::model::ModelConfig;

use crate::{ConfigError, DataConfig, JobConfig, Stage};

/// Most completions per prompt (`learner.group_size`, `rejection.samples_per_prompt`,
/// `eval.samples`); the paper uses 16, DAPO 16, some recipes 64.
pub const MAX_SAMPLES_PER_PROMPT: usize = 1024;
/// Most prompts in one step or batch.
pub const MAX_PROMPTS_PER_STEP: usize = 65_536;
/// Most rollouts (prompts × group) in one GRPO step.
pub const MAX_ROLLOUTS_PER_STEP: usize = 1 << 20;
/// Most sequences decoded or trained together (`max_batch`, `sft.batch_size`).
pub const MAX_BATCH: usize = 4096;
/// Most tokens in one completion, packed row or scored sequence.
pub const MAX_TOKENS: usize = 1 << 20;
/// Most passes over a set.
pub const MAX_EPOCHS: usize = 1 << 16;
/// Most problems a built-in task generates per split.
pub const MAX_TASK_PROBLEMS: usize = 1_000_000;
/// Most extra sampling rounds of dynamic sampling per step.
pub const MAX_DYNAMIC_ROUNDS: usize = 1024;
/// Prompt tokens assumed when sizing the sampler's KV cache before the prompts are read.
const PROMPT_TOKENS_ASSUMED: usize = 1024;

/// Refuses counts beyond the bounds above, and values no run can use (`min_lr_ratio = nan`,
/// `max_completion_length = 0`). Returns the key path and the message.
pub(crate) fn check_sizes(config: &JobConfig) -> Result<(), (String, String)> {
    let at_most = |key: &str, value: usize, max: usize| -> Result<(), (String, String)> {
        if value > max {
            Err((
                key.to_string(),
                format!("{value} is more than r1 accepts ({max})"),
            ))
        } else {
            Ok(())
        }
    };
    let l = &config.learner;
    at_most("learner.group_size", l.group_size, MAX_SAMPLES_PER_PROMPT)?;
    at_most("learner.minibatches", l.minibatches, MAX_ROLLOUTS_PER_STEP)?;
    at_most("learner.epochs", l.epochs, MAX_EPOCHS)?;
    let completion = l.grpo.max_completion_length;
    if completion == 0 {
        return Err((
            "learner.grpo.max_completion_length".into(),
            "must be at least 1 (it normalises the loss and bounds a completion)".into(),
        ));
    }
    at_most("learner.grpo.max_completion_length", completion, MAX_TOKENS)?;
    let ratio = l.schedule.min_lr_ratio;
    if !(0.0..=1.0).contains(&ratio) {
        return Err((
            "learner.schedule.min_lr_ratio".into(),
            format!("must be a number in [0, 1], got {ratio}"),
        ));
    }
    if !(l.max_grad_norm >= 0.0 && l.max_grad_norm.is_finite()) {
        return Err((
            "learner.max_grad_norm".into(),
            format!(
                "must be a number >= 0 (0 disables), got {}",
                l.max_grad_norm
            ),
        ));
    }
    at_most(
        "sampling.max_new_tokens",
        config.sampling.max_new_tokens,
        MAX_TOKENS,
    )?;
    if let Some(g) = &config.grpo {
        at_most(
            "grpo.prompts_per_step",
            g.prompts_per_step,
            MAX_PROMPTS_PER_STEP,
        )?;
        at_most("grpo.max_batch", g.max_batch, MAX_BATCH)?;
        at_most(
            "grpo.dynamic_sampling",
            g.dynamic_sampling,
            MAX_DYNAMIC_ROUNDS,
        )?;
        let rollouts = g.prompts_per_step.saturating_mul(l.group_size);
        if rollouts > MAX_ROLLOUTS_PER_STEP {
            return Err((
                "grpo.prompts_per_step".into(),
                format!(
                    "{} prompts × learner.group_size {} = {rollouts} rollouts per step, more than r1 accepts ({MAX_ROLLOUTS_PER_STEP})",
                    g.prompts_per_step, l.group_size
                ),
            ));
        }
    }
    if let Some(s) = &config.sft {
        at_most("sft.batch_size", s.batch_size, MAX_BATCH)?;
        at_most("sft.pack_length", s.pack_length, MAX_TOKENS)?;
        at_most("sft.epochs", s.epochs, MAX_EPOCHS)?;
    }
    if let Some(r) = &config.rejection {
        at_most(
            "rejection.samples_per_prompt",
            r.samples_per_prompt,
            MAX_SAMPLES_PER_PROMPT,
        )?;
        at_most(
            "rejection.keep_per_prompt",
            r.keep_per_prompt,
            MAX_SAMPLES_PER_PROMPT,
        )?;
        at_most(
            "rejection.prompts_per_batch",
            r.prompts_per_batch,
            MAX_PROMPTS_PER_STEP,
        )?;
        at_most("rejection.max_batch", r.max_batch, MAX_BATCH)?;
    }
    if let Some(e) = &config.eval {
        at_most("eval.samples", e.samples, MAX_SAMPLES_PER_PROMPT)?;
        at_most("eval.max_batch", e.max_batch, MAX_BATCH)?;
        for (name, data) in &e.datasets {
            check_task_sizes(&format!("eval.datasets.{name}"), data)?;
        }
    }
    check_task_sizes("data", &config.data)?;
    if let Some(p) = &config.preference {
        for (i, m) in p.reward_models.iter().enumerate() {
            at_most(
                &format!("preference.reward_models[{i}].max_batch"),
                m.max_batch,
                MAX_BATCH,
            )?;
            at_most(
                &format!("preference.reward_models[{i}].max_tokens"),
                m.max_tokens,
                MAX_TOKENS,
            )?;
        }
    }
    Ok(())
}

/// A built-in task's split sizes (generated in memory at start).
fn check_task_sizes(key: &str, data: &DataConfig) -> Result<(), (String, String)> {
    if let DataConfig::Builtin {
        train_size,
        test_size,
        ..
    } = data
    {
        for (field, n) in [("train_size", train_size), ("test_size", test_size)] {
            if *n > MAX_TASK_PROBLEMS {
                return Err((
                    format!("{key}.{field}"),
                    format!("{n} is more than r1 accepts ({MAX_TASK_PROBLEMS})"),
                ));
            }
        }
    }
    Ok(())
}

/// What the start-time check found: where each worker runs and what each device must hold.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceCheck {
    /// The `[devices]` table resolved against this machine (its `auto` notes included).
    pub placement: Placement,
    /// The run's memory on each of its devices, by category.
    pub estimate: MemoryEstimate,
}

impl JobConfig {
    /// What a run of this config will read and need, checked before it starts: every data file
    /// it reads is a non-empty regular file, every model directory's config.json is within
    /// bounds and its weights hold every tensor it implies, the `[devices]` it asks for exist
    /// on this machine, and the memory each device must hold fits what it has (the CPU: what
    /// this process may allocate; a GPU: its free memory; both capped by
    /// `R1_DEVICE_MEMORY_LIMIT` when set). Paths must already be resolved (relative ones
    /// resolve against the current folder). Errors name the key, the file and the figures.
    pub fn check_resources(&self, path: &Path) -> Result<ResourceCheck, ConfigError> {
        self.check_resources_against(path, available_memory().as_ref())
    }

    /// [`JobConfig::check_resources`] with a given CPU memory limit (`None`: memory is not
    /// checked — a queued run waits for the memory the active one holds; devices still are).
    pub fn check_resources_against(
        &self,
        path: &Path,
        available: Option<&MemoryAvailable>,
    ) -> Result<ResourceCheck, ConfigError> {
        let limit = memory_limit_override().map_err(|m| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: "devices".into(),
            message: m,
        })?;
        self.check_resources_on(path, &device::list(), available, limit)
    }

    /// [`JobConfig::check_resources_against`] on a given machine (`devices`) with a given cap on
    /// every device's memory (`limit`, what `R1_DEVICE_MEMORY_LIMIT` sets).
    pub fn check_resources_on(
        &self,
        path: &Path,
        devices: &DeviceList,
        available: Option<&MemoryAvailable>,
        limit: Option<u64>,
    ) -> Result<ResourceCheck, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.into(),
            message,
        };
        for (key, file) in self.files_read() {
            check_data_file(file).map_err(|m| invalid(key, m))?;
        }
        let placement = self
            .devices
            .resolve(devices)
            .map_err(|e| invalid(&e.key, e.message))?;
        let model =
            check_model_dir(&self.model.path).map_err(|e| invalid("model.path", e.to_string()))?;
        let place = |shape: &RunShape| {
            memory::estimate(
                shape,
                &placement.learners,
                placement.sampler,
                placement.reward_models,
            )
        };
        let shape = |model: &ModelConfig| RunShape {
            model: model.clone(),
            learner: None,
            sampler: None,
            reward_models: Vec::new(),
            learners: self.devices.learners,
            shard_optimizer: self.devices.shard_optimizer,
        };
        let max_new = self.sampling.max_new_tokens;
        let estimate = match self.run.stage {
            Stage::Grpo | Stage::Preference => {
                let max_batch = self.grpo.as_ref().map_or(64, |g| g.max_batch);
                let mut run = shape(&model);
                run.learner = Some(self.grpo_learner_shape(&model));
                run.sampler = Some(sampler_shape(
                    &model,
                    max_batch,
                    max_new,
                    true,
                    self.devices.sampler_precision,
                ));
                if self.run.stage == Stage::Preference {
                    run.reward_models = self.reward_model_shapes(path)?;
                }
                place(&run)
            }
            Stage::Sft => {
                let mut run = shape(&model);
                run.learner = Some(sft_learner_shape(self, &model));
                place(&run)
            }
            Stage::Rejection | Stage::Eval => {
                let max_batch = match self.run.stage {
                    Stage::Eval => self.eval.as_ref().map_or(64, |e| e.max_batch),
                    _ => self.rejection.as_ref().map_or(64, |r| r.max_batch),
                };
                let mut run = shape(&model);
                run.sampler = Some(sampler_shape(
                    &model,
                    max_batch,
                    max_new,
                    false,
                    self.devices.sampler_precision,
                ));
                place(&run)
            }
            Stage::Distill => {
                // The teacher samples, then the student trains: the larger phase counts.
                let max_batch = self.rejection.as_ref().map_or(64, |r| r.max_batch);
                let mut teacher = shape(&model);
                teacher.sampler = Some(sampler_shape(
                    &model,
                    max_batch,
                    max_new,
                    false,
                    self.devices.sampler_precision,
                ));
                let teacher = place(&teacher);
                match self.distill.as_ref().map(|d| d.student.as_path()) {
                    Some(dir) => {
                        let student_model = check_model_dir(dir)
                            .map_err(|e| invalid("distill.student", e.to_string()))?;
                        let mut student = shape(&student_model);
                        student.learner = Some(sft_learner_shape(self, &student_model));
                        let student = place(&student);
                        let total = |e: &MemoryEstimate| -> f64 {
                            e.devices.iter().map(|d| d.total()).sum()
                        };
                        if total(&student) > total(&teacher) {
                            student
                        } else {
                            teacher
                        }
                    }
                    None => teacher,
                }
            }
        };
        if available.is_some() {
            estimate
                .check(
                    &format!(
                        "a {} run on {}",
                        self.run.stage.name(),
                        self.model.path.display()
                    ),
                    devices,
                    available,
                    limit,
                )
                .map_err(|e| invalid("model.path", e.to_string()))?;
        }
        Ok(ResourceCheck {
            placement,
            estimate,
        })
    }

    /// One learner replica's minibatch: the step's rollouts split into `learner.minibatches`
    /// and over the replicas, each row a prompt ([`PROMPT_TOKENS_ASSUMED`]) and a completion.
    fn grpo_learner_shape(&self, model: &ModelConfig) -> LearnerShape {
        let l = &self.learner;
        let prompts = self.grpo.as_ref().map_or(1, |g| g.prompts_per_step);
        let rollouts = prompts.saturating_mul(l.group_size);
        let per_minibatch = rollouts.div_ceil(l.minibatches.max(1));
        LearnerShape {
            rows: per_minibatch.div_ceil(self.devices.learners.max(1)).max(1),
            tokens: context(model, self.sampling.max_new_tokens),
            loss_tokens: self.sampling.max_new_tokens,
            reference: l.grpo.beta > 0.0,
            checkpointed: l.activation_checkpointing,
        }
    }

    /// Each reward model's shape from its config.json, at its batch and token limit.
    fn reward_model_shapes(&self, path: &Path) -> Result<Vec<RewardModelShape>, ConfigError> {
        let Some(p) = &self.preference else {
            return Ok(Vec::new());
        };
        p.reward_models
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let (config, _, _) = read_reward_model_config(&m.path.join("config.json"))
                    .map_err(|e| ConfigError::Invalid {
                        path: path.to_path_buf(),
                        key: format!("preference.reward_models[{i}]"),
                        message: format!("reward model `{}`: {e}", m.name),
                    })?;
                Ok(RewardModelShape {
                    name: m.name.clone(),
                    config,
                    rows: m.max_batch,
                    tokens: m.max_tokens,
                })
            })
            .collect()
    }

    /// The data files the stage reads, with the key that names each.
    fn files_read(&self) -> Vec<(&'static str, &Path)> {
        let mut files = Vec::new();
        let uses_data = match self.run.stage {
            Stage::Grpo | Stage::Preference | Stage::Rejection | Stage::Distill => true,
            Stage::Eval => self.eval.as_ref().is_none_or(|e| e.datasets.is_empty()),
            Stage::Sft => false,
        };
        if uses_data {
            if let DataConfig::Jsonl { path, .. } | DataConfig::Parquet { path, .. } = &self.data {
                files.push(("data.path", path.as_path()));
            }
        }
        if self.run.stage == Stage::Eval {
            for data in self.eval.iter().flat_map(|e| e.datasets.values()) {
                if let DataConfig::Jsonl { path, .. } | DataConfig::Parquet { path, .. } = data {
                    files.push(("eval.datasets", path.as_path()));
                }
            }
        }
        if self.run.stage == Stage::Sft {
            if let Some(p) = self.sft.as_ref().and_then(|s| s.data.as_ref()) {
                files.push(("sft.data", p.as_path()));
            }
        }
        if self.run.stage == Stage::Preference {
            if let Some(p) = &self.preference {
                files.push(("preference.general_prompts", p.general_prompts.as_path()));
            }
        }
        files
    }
}

/// A data file must be a regular file (a FIFO would block the reader, a device never end) and
/// not empty (an empty set would fail the run at its first step instead of now).
fn check_data_file(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if meta.len() == 0 {
        return Err(format!("{} is empty: it holds no records", path.display()));
    }
    Ok(())
}

/// Positions of a row: a prompt of [`PROMPT_TOKENS_ASSUMED`] and `new_tokens`, within the
/// model's context.
fn context(model: &ModelConfig, new_tokens: usize) -> usize {
    new_tokens
        .saturating_add(PROMPT_TOKENS_ASSUMED)
        .min(model.max_position_embeddings.max(1))
}

/// The sampler of `max_batch` sequences of a prompt and up to `max_new_tokens`.
fn sampler_shape(
    model: &ModelConfig,
    max_batch: usize,
    max_new_tokens: usize,
    own_copy: bool,
    precision: r1_kernels::device::Precision,
) -> SamplerShape {
    SamplerShape {
        slots: max_batch,
        max_len: context(model, max_new_tokens),
        own_copy,
        precision,
    }
}

/// SFT's minibatch: `sft.batch_size` rows of `pack_length` positions when packing, else of
/// the model's context (the longest example is not known before the set is read).
fn sft_learner_shape(config: &JobConfig, model: &ModelConfig) -> LearnerShape {
    let sft = config.sft.clone().unwrap_or_default();
    let tokens = if sft.pack_length > 0 {
        sft.pack_length
    } else {
        context(model, PROMPT_TOKENS_ASSUMED)
    };
    let tokens = tokens.min(model.max_position_embeddings.max(1));
    LearnerShape {
        rows: sft
            .batch_size
            .div_ceil(config.devices.learners.max(1))
            .max(1),
        tokens,
        loss_tokens: tokens,
        reference: false,
        checkpointed: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use r1_kernels::bench::builtin_config;
    use r1_kernels::model::{save_model_dir, Model};

    const GRPO: &str = r#"
[run]
name = "t"
stage = "grpo"
output_dir = "runs/t"

[model]
path = "MODEL"
tokenizer = "byte"

[data]
kind = "jsonl"
path = "DATA"

[learner]
group_size = 2

[grpo]
steps = 10
prompts_per_step = 4
"#;

    fn parse(text: &str) -> Result<JobConfig, ConfigError> {
        JobConfig::from_toml(text, Path::new("job.toml"))
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn absurd_counts_are_refused_naming_the_key() {
        for (from, to, key) in [
            (
                "group_size = 2",
                "group_size = 1000000000000",
                "learner.group_size",
            ),
            (
                "prompts_per_step = 4",
                "prompts_per_step = 1000000000",
                "grpo.prompts_per_step",
            ),
            (
                "prompts_per_step = 4",
                "prompts_per_step = 4\nmax_batch = 100000000",
                "grpo.max_batch",
            ),
        ] {
            let message = error(&GRPO.replace(from, to));
            assert!(message.contains(key), "{key}: {message}");
        }
        // Each within its bound, the product beyond the rollouts a step may take.
        let message = error(
            &GRPO
                .replace("group_size = 2", "group_size = 1024")
                .replace("prompts_per_step = 4", "prompts_per_step = 65536"),
        );
        assert!(
            message.contains("grpo.prompts_per_step") && message.contains("rollouts per step"),
            "{message}"
        );
        for (table, key) in [
            (
                "[sampling]\nmax_new_tokens = 1000000000000",
                "sampling.max_new_tokens",
            ),
            (
                "[learner.grpo]\nmax_completion_length = 1000000000",
                "learner.grpo.max_completion_length",
            ),
            (
                "[sft]\ndata = \"d\"\nbatch_size = 100000000",
                "sft.batch_size",
            ),
            (
                "[sft]\ndata = \"d\"\npack_length = 100000000000",
                "sft.pack_length",
            ),
            (
                "[rejection]\nsamples_per_prompt = 1000000000",
                "rejection.samples_per_prompt",
            ),
            ("[eval]\nsamples = 1000000000", "eval.samples"),
        ] {
            let message = error(&format!("{GRPO}\n{table}\n"));
            assert!(
                message.contains(key) && message.contains("more than r1 accepts"),
                "{key}: {message}"
            );
        }
        let message = error(&GRPO.replace(
            "kind = \"jsonl\"\npath = \"DATA\"",
            "kind = \"builtin\"\ntask = \"arithmetic\"\ntrain_size = 1000000000000",
        ));
        assert!(message.contains("data.train_size"), "{message}");
    }

    #[test]
    fn nan_ratio_and_zero_completion_length_are_refused_naming_the_key() {
        let message = error(&format!(
            "{GRPO}\n[learner.schedule]\npeak_lr = 1e-3\nwarmup_steps = 0\ntotal_steps = 10\nmin_lr_ratio = nan\n"
        ));
        assert!(
            message.contains("learner.schedule.min_lr_ratio"),
            "{message}"
        );
        let message = error(&format!(
            "{GRPO}\n[learner.grpo]\nmax_completion_length = 0\n"
        ));
        assert!(
            message.contains("learner.grpo.max_completion_length")
                && message.contains("at least 1"),
            "{message}"
        );
    }

    /// A tiny model directory and a data file with `data` in `dir`; the GRPO config on them.
    fn workspace(dir: &Path, data: &str) -> JobConfig {
        let model = dir.join("model");
        save_model_dir(
            &Model::random(builtin_config("tiny-qwen2").unwrap(), 1, 0.05),
            &model,
        )
        .unwrap();
        std::fs::write(dir.join("d.jsonl"), data).unwrap();
        parse(
            &GRPO
                .replace("MODEL", &model.display().to_string())
                .replace("DATA", &dir.join("d.jsonl").display().to_string()),
        )
        .unwrap()
    }

    #[test]
    fn an_empty_data_file_is_refused_before_the_run_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = workspace(dir.path(), "");
        let message = config
            .check_resources(Path::new("job.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("data.path")
                && message.contains("d.jsonl")
                && message.contains("empty"),
            "{message}"
        );
        let config = workspace(dir.path(), "{\"prompt\": \"1+1\", \"answer\": \"2\"}\n");
        config.check_resources(Path::new("job.toml")).unwrap();
    }

    #[test]
    fn a_model_too_big_for_memory_is_refused_with_the_figures() {
        let dir = tempfile::tempdir().unwrap();
        let config = workspace(dir.path(), "{\"prompt\": \"1+1\", \"answer\": \"2\"}\n");
        let tight = MemoryAvailable {
            bytes: 4096,
            source: "RLIMIT_AS (ulimit -v)".into(),
        };
        let message = config
            .check_resources_against(Path::new("job.toml"), Some(&tight))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("model.path")
                && message.contains("needs ")
                && message.contains("4.0 KiB available")
                && message.contains("AdamW moments")
                && message.contains("reference model")
                && message.contains("KV cache"),
            "{message}"
        );
    }

    #[test]
    fn activation_checkpointing_on_a_gpu_learner_is_taken_and_shrinks_its_activations() {
        use r1_kernels::device::{Device, DeviceInfo};
        let dir = tempfile::tempdir().unwrap();
        let base = workspace(dir.path(), "{\"prompt\": \"1+1\", \"answer\": \"2\"}\n");
        let info = |device, name: &str| DeviceInfo {
            device,
            name: name.into(),
            total_bytes: 80 << 30,
            free_bytes: 64 << 30,
        };
        // From JSON: the fields a machine's list has beyond its devices take their defaults.
        let machine: DeviceList = serde_json::from_value(serde_json::json!({
            "devices": [info(Device::Cpu, "test CPU"), info(Device::Cuda(0), "test GPU")],
            "cuda_unavailable": null,
        }))
        .unwrap();
        let activations = |checkpointing: bool| -> f64 {
            let text = GRPO
                .replace("MODEL", &base.model.path.display().to_string())
                .replace("DATA", &dir.path().join("d.jsonl").display().to_string())
                .replace(
                    "group_size = 2",
                    &format!("group_size = 2\nactivation_checkpointing = {checkpointing}"),
                );
            let config = parse(&format!("{text}\n[devices]\nlearner = \"cuda:0\"\n")).unwrap();
            let check = config
                .check_resources_on(Path::new("job.toml"), &machine, None, None)
                .unwrap();
            let gpu = check
                .estimate
                .devices
                .iter()
                .find(|d| d.device == Device::Cuda(0))
                .expect("the learner's GPU is in the estimate");
            gpu.parts
                .iter()
                .filter(|p| p.category == "activations")
                .map(|p| p.bytes)
                .sum()
        };
        let (kept, checkpointed) = (activations(false), activations(true));
        assert!(
            checkpointed > 0.0 && checkpointed < kept,
            "checkpointed {checkpointed} vs {kept}"
        );
    }

    #[test]
    fn absurd_sizes_in_the_model_config_are_refused_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let config = workspace(dir.path(), "{\"prompt\": \"1+1\", \"answer\": \"2\"}\n");
        let path = dir.path().join("model/config.json");
        let good: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for (key, value) in [
            ("vocab_size", serde_json::json!(1_000_000_000_000u64)),
            ("num_hidden_layers", serde_json::json!(1_000_000_000u64)),
            ("intermediate_size", serde_json::json!(1_000_000_000_000u64)),
            ("head_dim", serde_json::json!(1_000_000u64)),
        ] {
            let mut bad = good.clone();
            bad[key] = value;
            std::fs::write(&path, serde_json::to_vec(&bad).unwrap()).unwrap();
            let message = config
                .check_resources(Path::new("job.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                message.contains(key) && message.contains("would need"),
                "{key}: {message}"
            );
        }
    }
}
