//! Datasets: JSONL files with a configurable field mapping, and the built-in generated tasks.
//!
//! A line is one JSON object. `FieldMap` says which key holds the prompt, the gold answer, code
//! tests and the target language; keys may be dotted paths into nested objects (`meta.answer`).
//! A malformed line is an error naming the file and line number, so a bad dataset is found
//! before a run starts, not hours into it. Parquet is not read yet (convert to JSONL).

use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::judge::tasks::{arithmetic, countdown, GenerateError, Split, TaskExample};

/// Where a dataset line keeps each field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FieldMap {
    /// Key of the prompt (required in every line).
    pub prompt: String,
    /// Key of the gold answer (optional per line).
    pub answer: String,
    /// Key of code tests (optional per line).
    pub tests: String,
    /// Key of the target language (optional per line).
    pub language: String,
}

impl Default for FieldMap {
    fn default() -> Self {
        FieldMap {
            prompt: "prompt".into(),
            answer: "answer".into(),
            tests: "tests".into(),
            language: "language".into(),
        }
    }
}

/// One dataset item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetItem {
    /// The question.
    pub prompt: String,
    /// The gold answer, when the line has one.
    pub answer: Option<String>,
    /// Code tests, as found (the judge interprets them).
    pub tests: Option<Value>,
    /// Target language name or code, when given.
    pub language: Option<String>,
    /// 1-based line number in its file (provenance for reports and errors).
    pub line: usize,
}

/// Why a dataset could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A line is not what the field map expects.
    #[error("{path}:{line}: {message}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A built-in task could not generate the requested problems.
    #[error("built-in task: {0}")]
    Generate(#[from] GenerateError),
    /// The built-in task name is unknown.
    #[error("unknown built-in task `{0}` (countdown, arithmetic)")]
    UnknownTask(String),
}

/// Follows a dotted key path (`meta.answer`) into a JSON object.
fn lookup<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.')
        .try_fold(value, |v, key| v.get(key))
        .filter(|v| !v.is_null())
}

/// A scalar field as text: strings as they are, numbers and booleans printed.
fn text_field(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Parses one JSONL line (`line` is 1-based, for errors).
pub fn parse_line(
    text: &str,
    line: usize,
    fields: &FieldMap,
    path: &Path,
) -> Result<DatasetItem, DataError> {
    let bad = |message: String| DataError::Line {
        path: path.to_path_buf(),
        line,
        message,
    };
    let value: Value = serde_json::from_str(text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    if !value.is_object() {
        return Err(bad("expected a JSON object".into()));
    }
    let prompt = match lookup(&value, &fields.prompt) {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) => return Err(bad(format!("`{}` is empty", fields.prompt))),
        Some(other) => {
            return Err(bad(format!(
                "`{}` must be a string, found {other}",
                fields.prompt
            )))
        }
        None => return Err(bad(format!("no `{}` field (the prompt)", fields.prompt))),
    };
    let answer = match lookup(&value, &fields.answer) {
        None => None,
        Some(v) => Some(text_field(v).ok_or_else(|| {
            bad(format!(
                "`{}` must be a string or number, found {v}",
                fields.answer
            ))
        })?),
    };
    let language = match lookup(&value, &fields.language) {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(bad(format!(
                "`{}` must be a string, found {other}",
                fields.language
            )))
        }
    };
    Ok(DatasetItem {
        prompt,
        answer,
        tests: lookup(&value, &fields.tests).cloned(),
        language,
        line,
    })
}

/// Reads a JSONL dataset. Blank lines are skipped; the first malformed line is an error naming
/// its number.
pub fn load_jsonl(path: &Path, fields: &FieldMap) -> Result<Vec<DatasetItem>, DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let mut items = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line_no = i + 1;
        let text = line.map_err(|e| DataError::Line {
            path: path.to_path_buf(),
            line: line_no,
            message: e.to_string(),
        })?;
        if text.trim().is_empty() {
            continue;
        }
        items.push(parse_line(&text, line_no, fields, path)?);
    }
    Ok(items)
}

/// `n` problems of a built-in task (`countdown` or `arithmetic`) from its seeded split.
pub fn builtin_task(
    name: &str,
    seed: u64,
    split: Split,
    n: usize,
) -> Result<Vec<TaskExample>, DataError> {
    match name {
        "countdown" => Ok(countdown::generate(seed, split, n)?),
        "arithmetic" => Ok(arithmetic::generate(seed, split, n)?),
        other => Err(DataError::UnknownTask(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mapped_fields_and_names_the_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("set.jsonl");
        std::fs::write(
            &path,
            "{\"question\": \"1+1?\", \"meta\": {\"gold\": 2}, \"lang\": \"en\"}\n\n{\"question\": \"2+2?\", \"meta\": {\"gold\": \"4\"}}\n{\"question\": 5}\n",
        )
        .unwrap();
        let fields = FieldMap {
            prompt: "question".into(),
            answer: "meta.gold".into(),
            language: "lang".into(),
            ..FieldMap::default()
        };
        let err = load_jsonl(&path, &fields).unwrap_err().to_string();
        assert!(
            err.contains("set.jsonl:4") && err.contains("`question` must be a string"),
            "{err}"
        );
        std::fs::write(&path, "{\"question\": \"1+1?\", \"meta\": {\"gold\": 2}, \"lang\": \"en\"}\n\n{\"question\": \"2+2?\", \"meta\": {\"gold\": \"4\"}}\n").unwrap();
        let items = load_jsonl(&path, &fields).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(
            (
                items[0].answer.as_deref(),
                items[0].language.as_deref(),
                items[0].line
            ),
            (Some("2"), Some("en"), 1)
        );
        assert_eq!((items[1].answer.as_deref(), items[1].line), (Some("4"), 3));
    }

    #[test]
    fn malformed_lines_are_errors_with_their_number() {
        let path = Path::new("d.jsonl");
        let f = FieldMap::default();
        assert!(parse_line("{oops", 7, &f, path)
            .unwrap_err()
            .to_string()
            .starts_with("d.jsonl:7: invalid JSON"));
        assert!(parse_line("[1]", 2, &f, path)
            .unwrap_err()
            .to_string()
            .contains("JSON object"));
        assert!(parse_line("{\"answer\": \"1\"}", 3, &f, path)
            .unwrap_err()
            .to_string()
            .contains("no `prompt` field"));
        assert!(parse_line("{\"prompt\": \" \"}", 4, &f, path)
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert!(
            parse_line("{\"prompt\": \"q\", \"answer\": [1]}", 5, &f, path)
                .unwrap_err()
                .to_string()
                .contains("`answer`")
        );
        let missing = load_jsonl(Path::new("/nonexistent/x.jsonl"), &f)
            .unwrap_err()
            .to_string();
        assert!(missing.contains("/nonexistent/x.jsonl"));
    }

    #[test]
    fn builtin_tasks_are_seeded_and_named() {
        let a = builtin_task("arithmetic", 1, Split::Test, 5).unwrap();
        assert_eq!(a, builtin_task("arithmetic", 1, Split::Test, 5).unwrap());
        assert_eq!(
            builtin_task("countdown", 2, Split::Train, 3).unwrap().len(),
            3
        );
        assert!(builtin_task("chess", 0, Split::Train, 1)
            .unwrap_err()
            .to_string()
            .contains("chess"));
    }
}
