//! Configuration of reward models and the preference-RL stage.
//!
//! - [`RewardModelJob`]: a whole `r1ctl rm train` file (`config/examples/rm/*.toml`): where the
//!   reward model starts (a causal LM's weights, an existing reward model, or a tiny built-in
//!   shape), the preference data, and the trainer's settings (`r1_actors::reward_model::RmTrainConfig`).
//! - [`PreferenceStageSection`]: the `[preference]` table of a job config for the last RL stage:
//!   the reward models (directory, response view, weight), normalisation, from which step
//!   preference rewards count, and where the general prompts come from.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use r1_actors::reward_model::RmTrainConfig;
/// The `[model]` and `[data]` tables of a reward-model job belong to the trainer that reads them.
pub use r1_actors::reward_model::{RmDataSection, RmInit, RmModelSection};
use r1_actors::stages::preference::{Normalisation, ResponseView};

use crate::ConfigError;

/// A whole `r1ctl rm train` config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardModelJob {
    /// A name for people.
    pub name: String,
    /// Where the trained model (a Hugging Face directory) and report.json go.
    pub output_dir: PathBuf,
    /// The model.
    pub model: RmModelSection,
    /// The data.
    pub data: RmDataSection,
    /// The trainer.
    #[serde(default)]
    pub train: RmTrainConfig,
}

impl RewardModelJob {
    /// Reads, parses and validates a TOML file; errors name the file, line and key.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Parses and validates TOML text; `path` only names the file in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let job: RewardModelJob = parse_toml(text, path)?;
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.into(),
            message,
        };
        job.train
            .validate()
            .map_err(|e| invalid("train", e.to_string()))?;
        let fraction = match &job.data {
            RmDataSection::Pairs {
                validation_fraction,
                ..
            }
            | RmDataSection::Labels {
                validation_fraction,
                ..
            } => *validation_fraction,
        };
        if !(0.0..1.0).contains(&fraction) {
            return Err(invalid(
                "data.validation_fraction",
                format!("must be in [0, 1), got {fraction}"),
            ));
        }
        if let RmInit::Tiny {
            hidden_size,
            num_layers,
        } = job.model.init
        {
            if hidden_size == 0 || hidden_size % 8 != 0 || num_layers == 0 {
                return Err(invalid(
                    "model.init",
                    format!("a tiny model needs hidden_size a positive multiple of 8 and num_layers >= 1, got {hidden_size} and {num_layers}"),
                ));
            }
        }
        if let Some(t) = &job.model.tokenizer {
            if t != "byte" {
                return Err(invalid(
                    "model.tokenizer",
                    format!("`{t}` is not a built-in tokenizer (byte)"),
                ));
            }
        }
        if matches!(job.model.init, RmInit::Tiny { .. }) && job.model.tokenizer.is_none() {
            return Err(invalid(
                "model.tokenizer",
                "a tiny built-in model has no tokenizer.json: set tokenizer = \"byte\"".into(),
            ));
        }
        Ok(job)
    }
}

/// One reward model in the preference stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardModelEntry {
    /// A name for metrics (`helpfulness`).
    pub name: String,
    /// Its directory (Qwen2/LlamaForSequenceClassification).
    pub path: PathBuf,
    /// What part of each completion it reads.
    pub view: ResponseView,
    /// Its weight after normalisation.
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// `"byte"` for r1's byte tokenizer (tiny built-in models); absent: the directory's
    /// tokenizer.json.
    #[serde(default)]
    pub tokenizer: Option<String>,
    /// Most sequences per forward pass.
    #[serde(default = "default_rm_batch")]
    pub max_batch: usize,
    /// Longest scored sequence in tokens (longer ones keep their end).
    #[serde(default = "default_rm_tokens")]
    pub max_tokens: usize,
}

fn default_weight() -> f64 {
    1.0
}

fn default_rm_batch() -> usize {
    16
}

fn default_rm_tokens() -> usize {
    4096
}

/// The `[preference]` table: the last RL stage's reward models and schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferenceStageSection {
    /// The reward models.
    pub reward_models: Vec<RewardModelEntry>,
    /// How scores are normalised before weighting.
    #[serde(default = "default_normalisation")]
    pub normalisation: Normalisation,
    /// First step at which preference rewards count (the paper: the last 400 steps).
    pub preference_from_step: u64,
    /// The general prompts: JSONL, or Parquet for a `.parquet` file; the job's `[data]` holds
    /// the reasoning prompts.
    pub general_prompts: PathBuf,
    /// The dotted key of each general prompt in its line or row.
    #[serde(default = "default_prompt_field")]
    pub general_prompt_field: String,
    /// Share of each step's prompts that are general.
    #[serde(default = "default_general_share")]
    pub general_share: f64,
}

fn default_prompt_field() -> String {
    "prompt".into()
}

fn default_normalisation() -> Normalisation {
    Normalisation::Running { momentum: 0.9 }
}

fn default_general_share() -> f64 {
    0.25
}

impl PreferenceStageSection {
    /// Range checks; errors name the key under `[preference]`.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: format!("preference.{key}"),
            message,
        };
        if self.reward_models.is_empty() {
            return Err(invalid("reward_models", "name at least one".into()));
        }
        for (i, m) in self.reward_models.iter().enumerate() {
            if !m.weight.is_finite() || m.max_batch == 0 || m.max_tokens == 0 {
                return Err(invalid(
                    &format!("reward_models[{i}]"),
                    "weight must be finite, max_batch and max_tokens at least 1".into(),
                ));
            }
            if let Some(t) = m.tokenizer.as_deref().filter(|t| *t != "byte") {
                return Err(invalid(
                    &format!("reward_models[{i}].tokenizer"),
                    format!("`{t}` is not a tokenizer r1 builds in (byte)"),
                ));
            }
            if m.name.is_empty()
                || !m
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(invalid(
                    &format!("reward_models[{i}].name"),
                    format!(
                        "`{}`: use letters, digits, `_` or `-` (it labels metrics)",
                        m.name
                    ),
                ));
            }
            if self.reward_models[..i].iter().any(|o| o.name == m.name) {
                return Err(invalid(
                    &format!("reward_models[{i}].name"),
                    format!("`{}` is used twice", m.name),
                ));
            }
        }
        if let Normalisation::Running { momentum } = self.normalisation {
            if !(0.0..1.0).contains(&momentum) {
                return Err(invalid(
                    "normalisation.momentum",
                    format!("must be in [0, 1), got {momentum}"),
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.general_share) {
            return Err(invalid(
                "general_share",
                format!("must be in [0, 1], got {}", self.general_share),
            ));
        }
        Ok(())
    }

    /// Reads a file holding just a `[preference]` table (or a job config that has one).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        #[derive(Deserialize)]
        struct Wrapper {
            preference: PreferenceStageSection,
        }
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // Other tables of a job config are allowed beside it.
        let parsed: Wrapper = parse_toml(&text, path)?;
        parsed.preference.validate(path)?;
        Ok(parsed.preference)
    }
}

/// Deserializes TOML with errors that name the file, line, column and key path.
fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    let syntax = |span: Option<std::ops::Range<usize>>, key: String, message: String| {
        let before = &text[..span.as_ref().map_or(0, |s| s.start).min(text.len())];
        let (line, column) = if span.is_some() {
            (
                before.matches('\n').count() + 1,
                before
                    .rfind('\n')
                    .map_or(before.len(), |nl| before.len() - nl - 1)
                    + 1,
            )
        } else {
            (0, 0)
        };
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
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." || key.is_empty() {
            String::new()
        } else {
            format!("{key}: ")
        };
        let inner = e.into_inner();
        syntax(inner.span(), key, inner.message().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
    }

    #[test]
    fn the_example_configs_load() {
        let job = RewardModelJob::from_file(&examples().join("rm/tiny-pairs.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(job.data, RmDataSection::Pairs { .. }));
        assert_eq!(job.model.tokenizer.as_deref(), Some("byte"));
        let stage = PreferenceStageSection::from_file(&examples().join("preference-rl.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stage.reward_models.len(), 2);
        assert_eq!(stage.reward_models[0].view, ResponseView::Summary);
        assert_eq!(stage.reward_models[1].view, ResponseView::Whole);
    }

    #[test]
    fn bad_values_name_the_key_and_line() {
        let text = std::fs::read_to_string(examples().join("rm/tiny-pairs.toml")).unwrap();
        let err = RewardModelJob::from_toml(
            &text.replace("epochs = ", "epochz = "),
            Path::new("rm.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("rm.toml:") && err.contains("epochz"),
            "{err}"
        );
        let err = RewardModelJob::from_toml(
            &text.replace("batch_size = 16", "batch_size = 0"),
            Path::new("rm.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("batch_size"), "{err}");

        let stage = std::fs::read_to_string(examples().join("preference-rl.toml")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, stage.replace("momentum = 0.9", "momentum = 1.5")).unwrap();
        let err = PreferenceStageSection::from_file(&path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("preference.normalisation.momentum"), "{err}");
        std::fs::write(&path, stage.replace("view = \"whole\"", "view = \"all\"")).unwrap();
        let err = PreferenceStageSection::from_file(&path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("view") && err.contains(":"), "{err}");
    }
}
