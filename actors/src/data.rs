//! Datasets: JSONL and Parquet files with a configurable field mapping, and the built-in
//! generated tasks.
//!
//! A JSONL line is one JSON object; a Parquet row is read through the crate's row API and seen as
//! the same JSON object (nested groups become nested objects, lists arrays). `FieldMap` says which
//! key holds the prompt, the gold answer, code tests and the target language; keys may be dotted
//! paths into nested objects (`meta.answer`). A malformed line or row is an error naming the file
//! and its number, so a bad dataset is found before a run starts, not hours into it.
//! [`DataSource`] is the job config's `[data]` table and turns into a stage's problems.

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
    /// 1-based line number (JSONL) or row number (Parquet) in its file: provenance for reports
    /// and errors.
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
    /// A Parquet row is not what the field map expects, or the file is not valid Parquet.
    #[error("{path}: row {row}: {message}")]
    Row {
        /// The file.
        path: PathBuf,
        /// 1-based row number (0: the file itself).
        row: usize,
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
    let value: Value = serde_json::from_str(text).map_err(|e| DataError::Line {
        path: path.to_path_buf(),
        line,
        message: format!("invalid JSON: {e}"),
    })?;
    parse_value(&value, line, fields).map_err(|message| DataError::Line {
        path: path.to_path_buf(),
        line,
        message,
    })
}

/// Reads one record (a JSONL line's object or a Parquet row) through the field map; `number` is
/// the item's 1-based line or row. The error is the message alone; callers add file and place.
pub fn parse_value(value: &Value, number: usize, fields: &FieldMap) -> Result<DatasetItem, String> {
    if !value.is_object() {
        return Err("expected a JSON object".into());
    }
    let prompt = match lookup(value, &fields.prompt) {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) => return Err(format!("`{}` is empty", fields.prompt)),
        Some(other) => {
            return Err(format!(
                "`{}` must be a string, found {other}",
                fields.prompt
            ))
        }
        None => return Err(format!("no `{}` field (the prompt)", fields.prompt)),
    };
    let answer =
        match lookup(value, &fields.answer) {
            None => None,
            Some(v) => Some(text_field(v).ok_or_else(|| {
                format!("`{}` must be a string or number, found {v}", fields.answer)
            })?),
        };
    let language = match lookup(value, &fields.language) {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(format!(
                "`{}` must be a string, found {other}",
                fields.language
            ))
        }
    };
    Ok(DatasetItem {
        prompt,
        answer,
        tests: lookup(value, &fields.tests).cloned(),
        language,
        line: number,
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
    if items.is_empty() {
        // Refused where it is read, before a run starts, not at the step that finds no prompts.
        return Err(DataError::Line {
            path: path.to_path_buf(),
            line: 0,
            message: "the file holds no records".into(),
        });
    }
    Ok(items)
}

/// Reads a Parquet dataset row by row (row groups in order); a row is seen as the JSON object of
/// its columns and read through `fields` like a JSONL line. Errors name the file and the row.
pub fn load_parquet(path: &Path, fields: &FieldMap) -> Result<Vec<DatasetItem>, DataError> {
    use parquet::file::reader::SerializedFileReader;
    let file = std::fs::File::open(path).map_err(|e| DataError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let bad = |row: usize, message: String| DataError::Row {
        path: path.to_path_buf(),
        row,
        message,
    };
    let reader = parquet_step(|| SerializedFileReader::new(file))
        .map_err(|m| bad(0, m))?
        .map_err(|e| bad(0, format!("not a readable Parquet file: {e}")))?;
    let mut rows = parquet_step(|| reader.into_iter()).map_err(|m| bad(0, m))?;
    let mut items = Vec::new();
    for i in 1usize.. {
        let Some(row) = parquet_step(|| rows.next()).map_err(|m| bad(i, m))? else {
            break;
        };
        let row = row.map_err(|e| bad(i, e.to_string()))?;
        let value = parquet_step(|| row.to_json_value()).map_err(|m| bad(i, m))?;
        items.push(parse_value(&value, i, fields).map_err(|m| bad(i, m))?);
    }
    if items.is_empty() {
        return Err(bad(0, "the file holds no records".into()));
    }
    Ok(items)
}

/// Runs one call into the parquet crate, which panics on some corrupt files instead of returning
/// an error (found by fuzzing: a negative column-chunk offset asserts in
/// `ColumnChunkMetaData::byte_range` while reading rows). The panic becomes an error message, so a
/// damaged file is refused with its name and row like any other bad file.
fn parquet_step<T>(step: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)).map_err(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        format!("not a readable Parquet file: corrupt metadata ({what})")
    })
}

/// Reads a JSONL file, or a Parquet file (a `.parquet` name) whose rows are seen as the JSON
/// objects of their columns, handing each record and its 1-based line or row number to `parse`.
/// Blank JSONL lines are skipped. Every error names the file and the line or row; a file with no
/// records is an error (`what` names what it should hold).
pub fn read_records<T>(
    path: &Path,
    what: &str,
    mut parse: impl FnMut(&Value, usize) -> Result<T, String>,
) -> Result<Vec<T>, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    let parquet = path.extension().is_some_and(|e| e == "parquet");
    if parquet {
        use parquet::file::reader::SerializedFileReader;
        let bad = |row: usize, message: String| DataError::Row {
            path: path.to_path_buf(),
            row,
            message,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let reader = parquet_step(|| SerializedFileReader::new(file))
            .map_err(|m| bad(0, m))?
            .map_err(|e| bad(0, format!("not a readable Parquet file: {e}")))?;
        let mut rows = parquet_step(|| reader.into_iter()).map_err(|m| bad(0, m))?;
        for i in 1usize.. {
            let Some(row) = parquet_step(|| rows.next()).map_err(|m| bad(i, m))? else {
                break;
            };
            let row = row.map_err(|e| bad(i, e.to_string()))?;
            let value = parquet_step(|| row.to_json_value()).map_err(|m| bad(i, m))?;
            out.push(parse(&value, i).map_err(|m| bad(i, m))?);
        }
    } else {
        let file = std::fs::File::open(path).map_err(io)?;
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let bad = |message: String| DataError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                message,
            };
            let text = line.map_err(|e| bad(e.to_string()))?;
            if text.trim().is_empty() {
                continue;
            }
            let value: Value =
                serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
            if !value.is_object() {
                return Err(bad("expected a JSON object".into()));
            }
            out.push(parse(&value, i + 1).map_err(bad)?);
        }
    }
    if out.is_empty() {
        let message = format!("the file holds no {what}");
        return Err(if parquet {
            DataError::Row {
                path: path.to_path_buf(),
                row: 0,
                message,
            }
        } else {
            DataError::Line {
                path: path.to_path_buf(),
                line: 0,
                message,
            }
        });
    }
    Ok(out)
}

/// Reads prompts alone (the preference stage's general prompts): one non-empty string per JSONL
/// line or Parquet row at the dotted key `field` (see [`read_records`]).
pub fn load_prompts(path: &Path, field: &str) -> Result<Vec<String>, DataError> {
    read_records(path, "prompts", |value, _| match lookup(value, field) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(format!("`{field}` (the prompt) is empty")),
        Some(other) => Err(format!(
            "`{field}` (the prompt) must be a string, found {other}"
        )),
        None => Err(format!("no `{field}` field (the prompt)")),
    })
}

/// Where a stage's prompts come from: the job config's `[data]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum DataSource {
    /// A generated task (countdown, arithmetic) with seeded train/test splits.
    Builtin {
        /// Task name.
        task: String,
        /// Problems in the training pool.
        #[serde(default = "default_pool")]
        train_size: usize,
        /// Held-out problems for evaluation.
        #[serde(default = "default_eval_size")]
        test_size: usize,
    },
    /// A JSONL file and where each field is in its lines.
    Jsonl {
        /// The file.
        path: PathBuf,
        /// Field mapping.
        #[serde(default)]
        fields: FieldMap,
    },
    /// A Parquet file and where each field is in its rows.
    Parquet {
        /// The file.
        path: PathBuf,
        /// Field mapping.
        #[serde(default)]
        fields: FieldMap,
    },
}

fn default_pool() -> usize {
    10_000
}

fn default_eval_size() -> usize {
    200
}

impl DataSource {
    /// A short name for tables and provenance: the task name or the file's path.
    pub fn name(&self) -> String {
        match self {
            DataSource::Builtin { task, .. } => task.clone(),
            DataSource::Jsonl { path, .. } | DataSource::Parquet { path, .. } => {
                path.display().to_string()
            }
        }
    }

    /// The items of a file source (`None` for a built-in task).
    pub fn items(&self) -> Result<Option<Vec<DatasetItem>>, DataError> {
        match self {
            DataSource::Builtin { .. } => Ok(None),
            DataSource::Jsonl { path, fields } => load_jsonl(path, fields).map(Some),
            DataSource::Parquet { path, fields } => load_parquet(path, fields).map(Some),
        }
    }
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

    /// Found by fuzzing: one byte changed in a Parquet footer (a column chunk's offset made
    /// negative) made the parquet crate panic while reading rows; every reader now refuses the
    /// file, naming it and the row.
    #[test]
    fn a_parquet_file_that_panics_the_parquet_crate_is_refused_by_every_reader() {
        let bytes =
            include_bytes!("../../tests/fuzz/corpus/data/regress-negative-column-offset.parquet");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels.parquet");
        std::fs::write(&path, bytes).unwrap();
        let source = DataSource::Parquet {
            path: path.clone(),
            fields: FieldMap::default(),
        };
        let errors = [
            source.items().map(drop).unwrap_err(),
            load_prompts(&path, "prompt").map(drop).unwrap_err(),
        ];
        for error in errors {
            let message = error.to_string();
            assert!(
                message.contains("labels.parquet: row 1: not a readable Parquet file"),
                "{message}"
            );
        }
    }

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
    fn an_empty_or_blank_data_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [("empty.jsonl", ""), ("blank.jsonl", "\n  \n")] {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            let source = DataSource::Jsonl {
                path: path.clone(),
                fields: FieldMap::default(),
            };
            let err = source.problems(0, Split::Train).unwrap_err().to_string();
            assert!(
                err.contains(name) && err.contains("holds no records"),
                "{err}"
            );
        }
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

    /// Writes rows of (question, gold) with the parquet crate itself, snappy-compressed; `None`
    /// is a null.
    fn write_parquet(path: &Path, rows: &[(Option<&str>, Option<i64>)]) {
        use parquet::basic::Compression;
        use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
        use parquet::file::properties::WriterProperties;
        use parquet::file::writer::SerializedFileWriter;
        use parquet::schema::parser::parse_message_type;
        use std::sync::Arc;
        let schema = Arc::new(
            parse_message_type(
                "message item { OPTIONAL BYTE_ARRAY question (UTF8); OPTIONAL INT64 gold; }",
            )
            .unwrap(),
        );
        let props = Arc::new(
            WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .build(),
        );
        let file = std::fs::File::create(path).unwrap();
        let mut writer = SerializedFileWriter::new(file, schema, props).unwrap();
        let mut group = writer.next_row_group().unwrap();
        let levels = |present: Vec<bool>| present.iter().map(|&p| i16::from(p)).collect::<Vec<_>>();
        let questions: Vec<ByteArray> = rows
            .iter()
            .filter_map(|r| r.0)
            .map(ByteArray::from)
            .collect();
        let mut col = group.next_column().unwrap().unwrap();
        col.typed::<ByteArrayType>()
            .write_batch(
                &questions,
                Some(&levels(rows.iter().map(|r| r.0.is_some()).collect())),
                None,
            )
            .unwrap();
        col.close().unwrap();
        let golds: Vec<i64> = rows.iter().filter_map(|r| r.1).collect();
        let mut col = group.next_column().unwrap().unwrap();
        col.typed::<Int64Type>()
            .write_batch(
                &golds,
                Some(&levels(rows.iter().map(|r| r.1.is_some()).collect())),
                None,
            )
            .unwrap();
        col.close().unwrap();
        group.close().unwrap();
        writer.close().unwrap();
    }

    #[test]
    fn parquet_rows_read_like_jsonl_lines_and_bad_rows_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("set.parquet");
        let fields = FieldMap {
            prompt: "question".into(),
            answer: "gold".into(),
            ..FieldMap::default()
        };
        write_parquet(&path, &[(Some("1+1?"), Some(2)), (Some("2+2?"), None)]);
        let items = load_parquet(&path, &fields).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(
            (
                items[0].prompt.as_str(),
                items[0].answer.as_deref(),
                items[0].line
            ),
            ("1+1?", Some("2"), 1)
        );
        assert_eq!((items[1].answer.as_deref(), items[1].line), (None, 2));

        // A row without a prompt is an error naming the file and the row.
        write_parquet(
            &path,
            &[
                (Some("1+1?"), Some(2)),
                (Some("q"), Some(1)),
                (None, Some(3)),
            ],
        );
        let err = load_parquet(&path, &fields).unwrap_err().to_string();
        assert!(
            err.contains("set.parquet: row 3: no `question` field"),
            "{err}"
        );

        // As a data source, a row with nothing to judge against is named too.
        write_parquet(&path, &[(Some("1+1?"), Some(2)), (Some("2+2?"), None)]);
        let source = DataSource::Parquet {
            path: path.clone(),
            fields,
        };
        let err = source.problems(0, Split::Train).unwrap_err().to_string();
        assert!(
            err.contains("row 2") && err.contains("neither an answer"),
            "{err}"
        );

        // Not Parquet at all.
        std::fs::write(&path, "{\"prompt\": \"x\"}\n").unwrap();
        let err = load_parquet(&path, &FieldMap::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("set.parquet") && err.contains("Parquet"),
            "{err}"
        );
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
