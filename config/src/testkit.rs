//! Job configs for tests (feature `testkit`): the one builder of the TOML every crate's tests,
//! the fuzz harness and the end-to-end tests write. It lives beside the schema it writes, so a
//! change to a key fails this module's own test instead of a dozen copies drifting apart.
//!
//! Start from [`JobToml::grpo`] (a few-second GRPO run on a tiny byte model) or
//! [`JobToml::stage`] (`[run]` and `[model]` only), change what the test is about with
//! [`JobToml::set`], add whole tables with [`JobToml::table`] or [`JobToml::append`], then
//! [`JobToml::write`] it.
//!
//! ```
//! # use std::path::Path;
//! use r1_config::testkit::JobToml;
//! let text = JobToml::grpo(Path::new("model"), 3).set("grpo", "prompts_per_step", 4).text();
//! assert!(text.contains("[grpo]\nsteps = 3\nprompts_per_step = 4\n"));
//! ```

use std::path::{Path, PathBuf};

use toml::Value;

/// One `[table]` (or `[[array.table]]`) with its keys in the order they were set.
#[derive(Debug, Clone, PartialEq)]
struct Table {
    /// The header line without brackets (`learner.grpo`).
    name: String,
    /// An element of an array of tables (`[[name]]`).
    array: bool,
    /// `key = value` pairs, values already written as TOML.
    entries: Vec<(String, String)>,
    /// Lines written verbatim after the entries (a table body a test spells out itself).
    verbatim: String,
}

/// A job config under construction; tables are written in the order they were first named.
#[derive(Debug, Clone, PartialEq)]
pub struct JobToml {
    tables: Vec<Table>,
    /// Text appended verbatim after the tables (a deliberate mistake, a comment).
    tail: String,
}

impl JobToml {
    /// `[run]` (name `tiny`, seed 3, output `out`) and `[model]` (ChatML, byte tokenizer) for
    /// `stage` on the model directory `model`. A path written relative resolves against the
    /// folder the config is run from.
    pub fn stage(stage: &str, model: &Path) -> Self {
        JobToml {
            tables: Vec::new(),
            tail: String::new(),
        }
        .set("run", "name", "tiny")
        .set("run", "stage", stage)
        .set("run", "seed", 3)
        .set("run", "output_dir", "out")
        .set("model", "path", path(model))
        .set("model", "template", "chatml")
        .set("model", "tokenizer", "byte")
    }

    /// A GRPO run of `steps` steps on `model`: the built-in arithmetic task (32 train, 8 test
    /// problems), 2 prompts per step in groups of 2, 8 new tokens, β 0.01, a constant learning
    /// rate of 1e-3, a checkpoint every step keeping 2.
    pub fn grpo(model: &Path, steps: u64) -> Self {
        JobToml::stage("grpo", model)
            .set("data", "kind", "builtin")
            .set("data", "task", "arithmetic")
            .set("data", "train_size", 32)
            .set("data", "test_size", 8)
            .set("sampling", "temperature", 1.0)
            .set("sampling", "max_new_tokens", 8)
            .set("learner", "group_size", 2)
            .set("learner", "minibatches", 1)
            .set("learner.grpo", "beta", 0.01)
            .set("learner.grpo", "max_completion_length", 8)
            .set("learner.schedule", "peak_lr", 1e-3)
            .set("learner.schedule", "warmup_steps", 0)
            .set("learner.schedule", "total_steps", 0)
            .set("learner.schedule", "min_lr_ratio", 1.0)
            .set("grpo", "steps", steps as i64)
            .set("grpo", "prompts_per_step", 2)
            .set("grpo", "max_batch", 4)
            .set("checkpoint", "every_steps", 1)
            .set("checkpoint", "keep_last", 2)
    }

    /// Sets `key` in `table` (adding the table at the end when it is new), replacing its value.
    pub fn set(mut self, table: &str, key: &str, value: impl Into<Value>) -> Self {
        let value = value.into().to_string();
        self = self.set_table(table);
        let Some(t) = self.tables.iter_mut().find(|t| t.name == table && !t.array) else {
            return self;
        };
        let entries = &mut t.entries;
        match entries.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => entries.push((key.to_string(), value)),
        }
        self
    }

    /// Sets a path (written as it is given, relative or not).
    pub fn set_path(self, table: &str, key: &str, value: &Path) -> Self {
        self.set(table, key, path(value))
    }

    /// Both token limits: the sampler's `max_new_tokens` and the learner's
    /// `max_completion_length`, which a GRPO config keeps equal.
    pub fn tokens(self, tokens: usize) -> Self {
        self.set("sampling", "max_new_tokens", tokens as i64).set(
            "learner.grpo",
            "max_completion_length",
            tokens as i64,
        )
    }

    /// Removes `key` from `table` (nothing when it is not there).
    pub fn unset(mut self, table: &str, key: &str) -> Self {
        for t in self.tables.iter_mut().filter(|t| t.name == table) {
            t.entries.retain(|(k, _)| k != key);
        }
        self
    }

    /// Removes the whole table `table`.
    pub fn without(mut self, table: &str) -> Self {
        self.tables.retain(|t| t.name != table);
        self
    }

    /// A table given whole; `[[name]]` when `array` (one more element each call).
    pub fn table(mut self, name: &str, array: bool, entries: Vec<(&str, Value)>) -> Self {
        self.tables.push(Table {
            name: name.to_string(),
            array,
            entries: entries
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            verbatim: String::new(),
        });
        self
    }

    /// Adds `lines` verbatim to the body of table `name` (adding the table when it is new).
    pub fn lines(mut self, name: &str, lines: &str) -> Self {
        self = self.set_table(name);
        if let Some(t) = self.tables.iter_mut().find(|t| t.name == name && !t.array) {
            t.verbatim.push_str(lines.trim_end_matches('\n'));
            t.verbatim.push('\n');
        }
        self
    }

    /// Makes sure the (non-array) table `name` exists, empty if it is new.
    fn set_table(mut self, name: &str) -> Self {
        if !self.tables.iter().any(|t| t.name == name && !t.array) {
            self.tables.push(Table {
                name: name.to_string(),
                array: false,
                entries: Vec::new(),
                verbatim: String::new(),
            });
        }
        self
    }

    /// Text written verbatim after the tables: tables a test spells out itself.
    pub fn append(mut self, text: &str) -> Self {
        self.tail.push_str(text);
        self
    }

    /// The config as TOML.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for table in &self.tables {
            if !out.is_empty() {
                out.push('\n');
            }
            if table.array {
                out.push_str(&format!("[[{}]]\n", table.name));
            } else {
                out.push_str(&format!("[{}]\n", table.name));
            }
            for (key, value) in &table.entries {
                out.push_str(&format!("{key} = {value}\n"));
            }
            out.push_str(&table.verbatim);
        }
        if !self.tail.is_empty() {
            out.push('\n');
            out.push_str(&self.tail);
        }
        out
    }

    /// Writes the config to `path` and returns `path`.
    pub fn write(&self, path: &Path) -> std::io::Result<PathBuf> {
        std::fs::write(path, self.text())?;
        Ok(path.to_path_buf())
    }
}

/// A path as a TOML string, as given.
fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{JobConfig, Stage};

    #[test]
    fn the_grpo_job_parses_and_says_what_it_was_built_with() {
        let text = JobToml::grpo(Path::new("/m"), 5)
            .set("grpo", "prompts_per_step", 4)
            .tokens(16)
            .set("checkpoint", "every_steps", 2)
            .text();
        let config = JobConfig::from_toml(&text, Path::new("job.toml")).unwrap();
        assert_eq!(config.run.stage, Stage::Grpo);
        assert_eq!(config.model.path, Path::new("/m"));
        let grpo = config.grpo.as_ref().unwrap();
        assert_eq!((grpo.steps, grpo.prompts_per_step), (5, 4));
        assert_eq!(config.sampling.max_new_tokens, 16);
        assert_eq!(config.learner.grpo.max_completion_length, 16);
        assert_eq!(config.checkpoint.every_steps, 2);
    }

    #[test]
    fn unset_keys_and_tables_go_and_array_tables_repeat() {
        let text = JobToml::grpo(Path::new("m"), 1)
            .without("learner.schedule")
            .unset("data", "test_size")
            .table("preference.reward_models", true, vec![("name", "a".into())])
            .table("preference.reward_models", true, vec![("name", "b".into())])
            .lines("data", "# a comment\n")
            .append("# the end\n")
            .text();
        assert!(!text.contains("learner.schedule"), "{text}");
        assert!(!text.contains("test_size"), "{text}");
        assert_eq!(text.matches("[[preference.reward_models]]").count(), 2);
        assert!(text.ends_with("\n# the end\n"), "{text}");
        assert!(text.contains("train_size = 32\n# a comment\n\n"), "{text}");
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(
            parsed["preference"]["reward_models"][1]["name"].as_str(),
            Some("b")
        );
    }
}
