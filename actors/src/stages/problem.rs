//! What a stage prompts with and judges against: a built-in task problem ([`TaskExample`]) or a
//! dataset item turned into a [`StageProblem`] — the user turn plus a reward-item template (gold
//! answer, code tests, target language) that each sampled completion is slotted into.
//!
//! The phase functions of `grpo.rs` and `evaluate` are generic over [`PromptProblem`], so the
//! built-in path keeps its exact reward items (and so its numbers) while datasets share the code.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::{builtin_task, load_jsonl, load_parquet, DataError, DataSource, DatasetItem};
use crate::judge::reward::{CodeTests, RewardItem, TaskKind};
use crate::judge::sandbox::TestCase;
use crate::judge::tasks::{Split, TaskExample};

/// Anything a stage can prompt with and judge: the user turn and the reward item of a completion.
pub trait PromptProblem {
    /// The question (the user turn; the template wraps it).
    fn prompt(&self) -> &str;
    /// The reward item that judges `completion` as an answer to this problem.
    fn reward_item(&self, completion: String) -> RewardItem;
    /// Where the problem came from: its dataset line or row, or its index in a generated split.
    fn source(&self) -> usize;
}

impl PromptProblem for TaskExample {
    fn prompt(&self) -> &str {
        &self.prompt
    }

    fn reward_item(&self, completion: String) -> RewardItem {
        RewardItem::for_task(completion, self, true)
    }

    fn source(&self) -> usize {
        0
    }
}

/// A problem from any source, ready for a stage: prompt, judging template and provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageProblem {
    /// The user turn.
    pub prompt: String,
    /// The reward item with an empty completion; each sample's text is put in its place.
    pub judge: RewardItem,
    /// 1-based dataset line or row, or the index in a generated split (provenance).
    pub source: usize,
}

impl PromptProblem for StageProblem {
    fn prompt(&self) -> &str {
        &self.prompt
    }

    fn reward_item(&self, completion: String) -> RewardItem {
        RewardItem {
            completion,
            ..self.judge.clone()
        }
    }

    fn source(&self) -> usize {
        self.source
    }
}

impl StageProblem {
    /// A built-in task problem; judged exactly as the `TaskExample` itself would be.
    pub fn from_task(example: &TaskExample, index: usize) -> Self {
        StageProblem {
            prompt: example.prompt.clone(),
            judge: RewardItem::for_task(String::new(), example, true),
            source: index,
        }
    }

    /// A dataset item: `tests` make it a code problem (judged in the sandbox), else its `answer`
    /// makes it a math problem. The error says what the item lacks or what is wrong with it.
    pub fn from_item(item: &DatasetItem) -> Result<Self, String> {
        let language = item
            .language
            .as_deref()
            .map(|l| l.parse().map_err(|e| format!("language: {e}")))
            .transpose()?;
        let tests = item.tests.as_ref().map(code_tests).transpose()?;
        let task = match (&tests, &item.answer) {
            (Some(_), _) => TaskKind::Code,
            (None, Some(_)) => TaskKind::Math,
            (None, None) => {
                return Err("has neither an answer nor tests: nothing to judge it against".into())
            }
        };
        Ok(StageProblem {
            prompt: item.prompt.clone(),
            judge: RewardItem {
                completion: String::new(),
                answer: item.answer.clone(),
                task: Some(task),
                language,
                prompt: Some(item.prompt.clone()),
                tests,
                extract: None,
                format: None,
                problem: None,
                numbers: None,
                target: None,
            },
            source: item.line,
        })
    }
}

/// Problems of a `[data]` source: here rather than in `data.rs`, which reads files and knows
/// nothing of stages.
impl DataSource {
    /// The problems a stage trains on (`split = Train`) or evaluates on (`Test`): a built-in
    /// task's seeded split (`train_size` or `test_size` problems), or every item of a file, each
    /// of which must have an answer or tests (the error names the line or row that has neither).
    pub fn problems(&self, seed: u64, split: Split) -> Result<Vec<StageProblem>, DataError> {
        if let DataSource::Builtin {
            task,
            train_size,
            test_size,
        } = self
        {
            let n = if split == Split::Train {
                *train_size
            } else {
                *test_size
            };
            return Ok(builtin_task(task, seed, split, n)?
                .iter()
                .enumerate()
                .map(|(i, ex)| StageProblem::from_task(ex, i))
                .collect());
        }
        let (items, path, parquet) = match self {
            DataSource::Jsonl { path, fields } => (load_jsonl(path, fields)?, path, false),
            DataSource::Parquet { path, fields } => (load_parquet(path, fields)?, path, true),
            DataSource::Builtin { .. } => return Ok(Vec::new()),
        };
        items
            .iter()
            .map(|item| {
                StageProblem::from_item(item).map_err(|message| {
                    if parquet {
                        DataError::Row {
                            path: path.clone(),
                            row: item.line,
                            message,
                        }
                    } else {
                        DataError::Line {
                            path: path.clone(),
                            line: item.line,
                            message,
                        }
                    }
                })
            })
            .collect()
    }
}

/// Code tests as a dataset writes them: a string of assert-style Python, a list of
/// `{input, expected_output}` cases, or an object with `cases` and/or `asserts`.
pub fn code_tests(value: &Value) -> Result<CodeTests, String> {
    let tests = match value {
        Value::String(asserts) => CodeTests {
            cases: Vec::new(),
            asserts: asserts.clone(),
        },
        Value::Array(_) => CodeTests {
            cases: serde_json::from_value::<Vec<TestCase>>(value.clone())
                .map_err(|e| format!("tests: {e}"))?,
            asserts: String::new(),
        },
        Value::Object(_) => {
            serde_json::from_value(value.clone()).map_err(|e| format!("tests: {e}"))?
        }
        other => {
            return Err(format!(
                "tests must be a string, a list of cases or an object, found {other}"
            ))
        }
    };
    if tests.cases.is_empty() && tests.asserts.trim().is_empty() {
        return Err("tests are empty".into());
    }
    Ok(tests)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::FieldMap;
    use crate::judge::reward::{score_item, CodeSandbox, RewardRules};
    use crate::judge::tasks::arithmetic;

    fn item(answer: Option<&str>, tests: Option<Value>) -> DatasetItem {
        DatasetItem {
            prompt: "What is 6*7?".into(),
            answer: answer.map(String::from),
            tests,
            language: Some("en".into()),
            line: 9,
        }
    }

    #[test]
    fn a_task_problem_is_judged_as_the_task_itself() {
        let ex = &arithmetic::generate(1, Split::Test, 1).unwrap()[0];
        let p = StageProblem::from_task(ex, 0);
        let text = format!("<think>x</think><answer>{}</answer>", ex.answer);
        assert_eq!(p.reward_item(text.clone()), ex.reward_item(text));
    }

    #[test]
    fn dataset_items_become_math_or_code_problems() {
        let math = StageProblem::from_item(&item(Some("42"), None)).unwrap();
        assert_eq!((math.judge.task, math.source), (Some(TaskKind::Math), 9));
        let rules = RewardRules::default();
        let sandbox = CodeSandbox::unavailable("no code here");
        let right = math.reward_item("<think>6*7</think> <answer>42</answer>".into());
        assert_eq!(
            score_item(&right, &rules, &sandbox)
                .unwrap()
                .accuracy
                .reward,
            1.0
        );
        let wrong = math.reward_item("<think>6*7</think> <answer>41</answer>".into());
        assert_eq!(
            score_item(&wrong, &rules, &sandbox)
                .unwrap()
                .accuracy
                .reward,
            0.0
        );

        let code = StageProblem::from_item(&item(
            None,
            Some(serde_json::json!([{"input": "1\n", "expected_output": "2\n"}])),
        ))
        .unwrap();
        assert_eq!(code.judge.task, Some(TaskKind::Code));
        assert_eq!(code.judge.tests.as_ref().unwrap().cases.len(), 1);
        let asserts =
            StageProblem::from_item(&item(None, Some(Value::String("assert f(1) == 2".into()))))
                .unwrap();
        assert!(asserts.judge.tests.unwrap().asserts.contains("assert"));

        let err = StageProblem::from_item(&item(None, None)).unwrap_err();
        assert!(err.contains("neither an answer nor tests"), "{err}");
        let err = StageProblem::from_item(&item(None, Some(serde_json::json!(3)))).unwrap_err();
        assert!(err.contains("tests must be"), "{err}");
        let mut bad_lang = item(Some("1"), None);
        bad_lang.language = Some("klingon".into());
        assert!(StageProblem::from_item(&bad_lang)
            .unwrap_err()
            .contains("language"));
    }

    #[test]
    fn data_sources_give_judgeable_problems() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        std::fs::write(&path, "{\"prompt\": \"1+1?\", \"answer\": 2}\n").unwrap();
        let source = DataSource::Jsonl {
            path,
            fields: FieldMap::default(),
        };
        let problems = source.problems(0, Split::Train).unwrap();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].judge.answer.as_deref(), Some("2"));
        let builtin = DataSource::Builtin {
            task: "arithmetic".into(),
            train_size: 5,
            test_size: 3,
        };
        assert_eq!(builtin.problems(1, Split::Train).unwrap().len(), 5);
        let test = builtin.problems(1, Split::Test).unwrap();
        assert_eq!(test.len(), 3);
        let direct = builtin_task("arithmetic", 1, Split::Test, 3).unwrap();
        assert_eq!(test[2], StageProblem::from_task(&direct[2], 2));
    }
}
