//! Reward-model data: JSONL preference pairs (prompt, chosen, rejected) and labelled responses
//! (prompt, response, safe), with field mappings and errors that name the file and line.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::{read_records, DataError};

/// Where a preference line keeps each field (dotted paths into nested objects, as `FieldMap`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PairFields {
    /// Key of the prompt.
    pub prompt: String,
    /// Key of the preferred response.
    pub chosen: String,
    /// Key of the other response.
    pub rejected: String,
}

impl Default for PairFields {
    fn default() -> Self {
        PairFields {
            prompt: "prompt".into(),
            chosen: "chosen".into(),
            rejected: "rejected".into(),
        }
    }
}

/// Where a point-wise (safety) line keeps each field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelFields {
    /// Key of the prompt.
    pub prompt: String,
    /// Key of the response.
    pub response: String,
    /// Key of the label: true/1 safe (good), false/0 unsafe (bad); a number in [0, 1] is a soft label.
    pub label: String,
}

impl Default for LabelFields {
    fn default() -> Self {
        LabelFields {
            prompt: "prompt".into(),
            response: "response".into(),
            label: "safe".into(),
        }
    }
}

/// One preference pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreferencePair {
    /// The prompt both responses answer.
    pub prompt: String,
    /// The preferred response.
    pub chosen: String,
    /// The other response.
    pub rejected: String,
    /// 1-based line in its file (0 when generated), for errors.
    pub line: usize,
}

/// One labelled response (safety data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabeledResponse {
    /// The prompt.
    pub prompt: String,
    /// The response.
    pub response: String,
    /// 1 good/safe, 0 bad/unsafe.
    pub label: f32,
    /// 1-based line in its file (0 when generated).
    pub line: usize,
}

/// A reward model's training data: pairs for the Bradley–Terry loss, labels for the point-wise one.
#[derive(Debug, Clone, PartialEq)]
pub enum RewardData {
    /// Preference pairs.
    Pairs(Vec<PreferencePair>),
    /// Labelled responses.
    Labels(Vec<LabeledResponse>),
}

impl RewardData {
    /// Items in the set.
    pub fn len(&self) -> usize {
        match self {
            RewardData::Pairs(p) => p.len(),
            RewardData::Labels(l) => l.len(),
        }
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The last `fraction` of the items as a validation split (at least one when `fraction > 0`
    /// and there are two or more items); returns (train, validation).
    pub fn split_off(self, fraction: f64) -> (RewardData, RewardData) {
        let n = self.len();
        let k = if fraction > 0.0 && n >= 2 {
            ((n as f64 * fraction).round() as usize).clamp(1, n - 1)
        } else {
            0
        };
        match self {
            RewardData::Pairs(mut p) => {
                let v = p.split_off(n - k);
                (RewardData::Pairs(p), RewardData::Pairs(v))
            }
            RewardData::Labels(mut l) => {
                let v = l.split_off(n - k);
                (RewardData::Labels(l), RewardData::Labels(v))
            }
        }
    }
}

/// Follows a dotted key path into a JSON object (as `data::FieldMap` does).
fn lookup<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.')
        .try_fold(value, |v, key| v.get(key))
        .filter(|v| !v.is_null())
}

/// A required string field; `allow_empty` for responses (an empty answer is a valid rejected one).
fn string_field(value: &Value, key: &str, what: &str, allow_empty: bool) -> Result<String, String> {
    match lookup(value, key) {
        Some(Value::String(s)) if allow_empty || !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(format!("`{key}` ({what}) is empty")),
        Some(other) => Err(format!("`{key}` ({what}) must be a string, found {other}")),
        None => Err(format!("no `{key}` field ({what})")),
    }
}

/// Reads preference pairs from JSONL, or Parquet for a `.parquet` file. Errors name the file and
/// the line or row: invalid JSON, a missing or non-string field, or a pair whose chosen and
/// rejected responses are identical (it carries no preference).
pub fn load_pairs(path: &Path, fields: &PairFields) -> Result<Vec<PreferencePair>, DataError> {
    read_records(path, "preference pairs", |value, line| {
        let prompt = string_field(value, &fields.prompt, "the prompt", false)?;
        let chosen = string_field(value, &fields.chosen, "the chosen response", true)?;
        let rejected = string_field(value, &fields.rejected, "the rejected response", true)?;
        if chosen == rejected {
            return Err(format!(
                "`{}` and `{}` are identical: the pair states no preference",
                fields.chosen, fields.rejected
            ));
        }
        Ok(PreferencePair {
            prompt,
            chosen,
            rejected,
            line,
        })
    })
}

/// Reads labelled responses (safety data) from JSONL, or Parquet for a `.parquet` file. The label
/// is true/false or a number in [0, 1].
pub fn load_labels(path: &Path, fields: &LabelFields) -> Result<Vec<LabeledResponse>, DataError> {
    read_records(path, "labelled responses", |value, line| {
        let prompt = string_field(value, &fields.prompt, "the prompt", false)?;
        let response = string_field(value, &fields.response, "the response", true)?;
        let label = match lookup(value, &fields.label) {
            Some(Value::Bool(b)) => f32::from(u8::from(*b)),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(x) if (0.0..=1.0).contains(&x) => x as f32,
                _ => return Err(format!("`{}` must be in [0, 1], found {n}", fields.label)),
            },
            Some(other) => {
                return Err(format!(
                    "`{}` (the label) must be true/false or a number in [0, 1], found {other}",
                    fields.label
                ))
            }
            None => return Err(format!("no `{}` field (the label)", fields.label)),
        };
        Ok(LabeledResponse {
            prompt,
            response,
            label,
            line,
        })
    })
}
