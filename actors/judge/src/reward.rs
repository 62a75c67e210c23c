//! Every reward component of one scored item: the function the judge actor calls per rollout, and
//! what `r1ctl judge` prints so a user can see why a completion earned what it earned.
//!
//! An item ([`RewardItem`], one JSON object) is a completion plus what it is judged against. The
//! rules themselves live in their own modules; this one only decides which rule applies, feeds it,
//! and explains every 0:
//!
//! - **accuracy** ([`TaskKind`]): `math` compares the extracted answer with the gold `answer`
//!   ([`crate::math`]); `countdown` and `arithmetic` check it with the task verifiers
//!   ([`crate::tasks`]); `code` runs the last ```` ```python ```` block of the completion
//!   against `tests` in the bubblewrap sandbox ([`crate::sandbox`]). Binary: 0 or 1.
//! - **format** ([`crate::format`]): the `<think>`/`<answer>` shape, 0 or 1.
//! - **language** ([`crate::lang`]): the share of chain-of-thought words in the target language,
//!   in [0, 1].
//! - **total**: the [`RewardWeights`]-weighted sum of the three.
//!
//! # Decisions worth knowing
//! - **The task** is `task` when given; otherwise it follows from the data: a `problem` or
//!   `numbers`/`target` make a Countdown or arithmetic item, `tests` a code item, an `answer` a math
//!   item. With none of them there is nothing to check against: accuracy scores 0 and says so.
//! - **Accuracy scores nothing a malformed completion says** (the contract of
//!   [`crate::format`]): when the format check fails, accuracy is 0 and says so, though the
//!   answer that would have been read is still shown. Otherwise an answer hidden in the reasoning
//!   (`<think>… <answer>42</answer></think>`) would still collect the accuracy reward. Evaluation
//!   of a model trained without the template turns this off ([`RewardRules::accuracy_needs_format`]).
//! - **The answer** is extracted with `extract` (an [`ExtractMode`]); by default it is read where
//!   the format style puts it (`<answer>` tag or `\boxed{}`), so accuracy and format read the same
//!   answer.
//! - **Arithmetic** may be given as a `problem` or as just the gold `answer` (an integer): both
//!   compare exact integer values, with the arithmetic task's integer syntax.
//! - **Code** is the content of the last closed fenced block whose info string is `python`, `py`
//!   or `python3` (any case), anywhere in the completion; an unclosed block (a truncated
//!   generation) does not count. A code item needs a sandbox: when bubblewrap is missing or fails
//!   its self-test the component scores 0 with the reason (fail closed), it never panics and never
//!   runs code outside the sandbox.
//! - **Language**: the target is `language` (a name or ISO code), else the language detected in
//!   `prompt`. With no target the component is absent, unless its weight is non-zero: then it
//!   scores 0 and says why, because a run that asked for a language reward must not silently get
//!   none.
//!
//! Inconsistent items (a `task` that contradicts the data, a math item with no `answer`, a
//! Countdown item with `numbers` but no `target`, an arithmetic gold answer that is no integer) are
//! errors ([`RewardError`]), not zeros: a dataset bug must be seen, not trained on.

use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize};

use crate::format::{check_format, FormatConfig, FormatStyle};
use crate::lang::{chain_of_thought, count_words, detect_language, Language, WordCounts};
use crate::math::{equivalent, extract_answer, ExtractMode};
use crate::sandbox::{CodeJob, CodeJudge, CodeOutcome, CodeVerdict, SandboxConfig, TestCase};
use crate::tasks::{
    self, arithmetic, ArithmeticFailure, CountdownProblem, Problem, TaskExample, VerifyFailure,
};

/// Longest piece of model text quoted in a `why`, in characters: enough to recognise it.
const MAX_QUOTED_CHARS: usize = 60;

/// What kind of check the accuracy reward runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// A gold answer compared by mathematical equivalence.
    Math,
    /// An expression over given numbers that must reach a target.
    Countdown,
    /// One exact integer.
    Arithmetic,
    /// A Python program run against tests in the sandbox.
    Code,
}

impl TaskKind {
    /// The name used in items and tables.
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Math => "math",
            TaskKind::Countdown => "countdown",
            TaskKind::Arithmetic => "arithmetic",
            TaskKind::Code => "code",
        }
    }
}

impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The tests of a code item: stdin/stdout cases, assert-style Python, or both.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeTests {
    /// Each case is one sandboxed run: `input` on stdin, stdout must equal `expected_output`.
    #[serde(default)]
    pub cases: Vec<TestCase>,
    /// Python tests, run in a sandbox of their own that calls the candidate's top-level functions
    /// through proxies (plain data only); a test fails by raising.
    #[serde(default)]
    pub asserts: String,
}

impl CodeTests {
    /// Whether there is anything to run.
    fn is_empty(&self) -> bool {
        self.cases.is_empty() && self.asserts.trim().is_empty()
    }
}

/// One item to score: a completion and what it is judged against. One JSON object, unknown keys
/// rejected so a misspelt key is an error rather than a silently unjudged component. A task
/// dataset line ([`TaskExample`]: `prompt`, `answer`, `problem`) plus a `completion` is an item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardItem {
    /// The model's output, as sampled (after the prompt).
    pub completion: String,
    /// The gold answer: required for math, optional (unused) for Countdown, the exact result for
    /// arithmetic without a `problem`.
    #[serde(default)]
    pub answer: Option<String>,
    /// Which accuracy check runs; inferred from the other fields when absent.
    #[serde(default)]
    pub task: Option<TaskKind>,
    /// The language the chain of thought should be in (a name or code: `english`, `zh`, `ru-RU`).
    #[serde(default, deserialize_with = "language_by_name")]
    pub language: Option<Language>,
    /// The question; only read to detect the target language when `language` is absent.
    #[serde(default)]
    pub prompt: Option<String>,
    /// The tests of a code item.
    #[serde(default)]
    pub tests: Option<CodeTests>,
    /// Where the final answer is read; defaults to the rules' mode (see [`RewardRules::extract`]).
    #[serde(default)]
    pub extract: Option<ExtractMode>,
    /// The format rules for this item, replacing the rules' whole (see [`RewardRules::format`]):
    /// its missing keys take their defaults, so an item is read the same under every run.
    #[serde(default)]
    pub format: Option<FormatConfig>,
    /// A Countdown or arithmetic problem, as the task generators write it.
    #[serde(default)]
    pub problem: Option<Problem>,
    /// Countdown shorthand: the numbers to use, each once (with `target`).
    #[serde(default)]
    pub numbers: Option<Vec<u32>>,
    /// Countdown shorthand: the value to reach (with `numbers`).
    #[serde(default)]
    pub target: Option<u32>,
}

/// Reads a language by name or ISO code, as [`Language`]'s `FromStr` does, so items may say `en`.
impl RewardItem {
    /// An item for a completion of a built-in task problem: its gold answer and verifier data.
    pub fn for_task(completion: String, example: &TaskExample, with_prompt: bool) -> Self {
        RewardItem {
            completion,
            answer: Some(example.answer.clone()),
            task: None,
            language: None,
            prompt: with_prompt.then(|| example.prompt.clone()),
            tests: None,
            extract: None,
            format: None,
            problem: Some(example.problem.clone()),
            numbers: None,
            target: None,
        }
    }
}

fn language_by_name<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Language>, D::Error> {
    Option::<String>::deserialize(de)?
        .map(|name| name.parse().map_err(serde::de::Error::custom))
        .transpose()
}

/// How much each component counts in the total. The default is the paper's R1-Zero reward,
/// accuracy + format; reasoning RL (stage 3) sums accuracy and language consistency.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardWeights {
    /// Weight of the accuracy reward.
    pub accuracy: f32,
    /// Weight of the format reward.
    pub format: f32,
    /// Weight of the language-consistency share.
    pub language: f32,
}

impl RewardWeights {
    /// R1-Zero (paper, stage 1): accuracy + format, no language reward.
    pub const R1_ZERO: RewardWeights = RewardWeights {
        accuracy: 1.0,
        format: 1.0,
        language: 0.0,
    };

    /// Reasoning RL (paper, stage 3): accuracy + language consistency.
    pub const REASONING_RL: RewardWeights = RewardWeights {
        accuracy: 1.0,
        format: 0.0,
        language: 1.0,
    };

    /// Checks every weight is a finite number: a NaN would poison every advantage of a group.
    pub fn validate(&self) -> Result<(), RewardError> {
        for (name, value) in [
            ("accuracy", self.accuracy),
            ("format", self.format),
            ("language", self.language),
        ] {
            if !value.is_finite() {
                return Err(RewardError::BadWeight { name, value });
            }
        }
        Ok(())
    }
}

impl Default for RewardWeights {
    fn default() -> Self {
        Self::R1_ZERO
    }
}

/// The run-wide rules an item is scored under; an item's own `extract` and `format` win.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RewardRules {
    /// How the components add up.
    pub weights: RewardWeights,
    /// The format every item is checked against unless it names its own.
    pub format: FormatConfig,
    /// Where answers are read. `None`: where the format style puts them (`answer_tag` for the
    /// answer-tags style, `boxed` for the boxed style).
    pub extract: Option<ExtractMode>,
    /// Accuracy is 0 when the format check fails (the default, for training with the template);
    /// `false` scores the answer of any completion (evaluating a model trained without it).
    pub accuracy_needs_format: bool,
}

impl Default for RewardRules {
    fn default() -> Self {
        RewardRules {
            weights: RewardWeights::default(),
            format: FormatConfig::default(),
            extract: None,
            accuracy_needs_format: true,
        }
    }
}

/// An item that cannot be scored as given: a dataset bug to fix, not a zero to train on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RewardError {
    /// The task needs a field the item lacks.
    #[error("a {task} item needs `{field}`: {hint}")]
    MissingField {
        /// The item's task.
        task: TaskKind,
        /// The missing key.
        field: &'static str,
        /// What to write.
        hint: &'static str,
    },
    /// `task` names one kind of check and the data describes another.
    #[error("`task` is {given}, but `{field}` describes a {implied} item")]
    TaskConflict {
        /// The `task` written.
        given: TaskKind,
        /// The field that implies another task.
        field: &'static str,
        /// The task that field implies.
        implied: TaskKind,
    },
    /// The same problem given twice.
    #[error("give either `problem` or `numbers`/`target`, not both")]
    TwoProblems,
    /// An arithmetic gold answer that is not an integer.
    #[error("the gold answer {answer:?} of an arithmetic item is not an integer: {reason}")]
    BadGold {
        /// The gold answer as written.
        answer: String,
        /// Why it does not parse.
        reason: ArithmeticFailure,
    },
    /// A weight that is not a finite number.
    #[error("the {name} weight is {value}; weights must be finite numbers")]
    BadWeight {
        /// Which weight.
        name: &'static str,
        /// Its value.
        value: f32,
    },
}

/// A binary component: its reward and, when it is 0, why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// 1.0 or 0.0.
    pub reward: f32,
    /// Why the reward is 0; `None` when it is 1.
    pub why: Option<String>,
}

impl Score {
    /// A component that passed.
    pub fn pass() -> Self {
        Score {
            reward: 1.0,
            why: None,
        }
    }

    /// A component that failed, and why.
    pub fn fail(why: impl Into<String>) -> Self {
        Score {
            reward: 0.0,
            why: Some(why.into()),
        }
    }
}

/// The language-consistency component, with the word counts behind the share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LanguageScore {
    /// The target language; `None` when the item gave none and its prompt named none.
    pub target: Option<Language>,
    /// Whether the target was detected from the prompt rather than given.
    pub detected: bool,
    /// Share of chain-of-thought words in the target language, in [0, 1].
    pub share: f32,
    /// Chain-of-thought words per script: what the chain of thought mixed.
    pub words: WordCounts,
    /// Why the share is below 1; `None` when it is 1.
    pub why: Option<String>,
}

/// Every reward component of one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardReport {
    /// The accuracy check that ran; `None` when there was nothing to check against.
    pub task: Option<TaskKind>,
    /// The answer the accuracy check read (the Python source, for code); `None` when none was
    /// found.
    pub extracted: Option<String>,
    /// The accuracy reward.
    pub accuracy: Score,
    /// The format reward.
    pub format: Score,
    /// The language-consistency share; `None` when no target is known and its weight is 0.
    pub language: Option<LanguageScore>,
    /// The sandbox's verdict, for code items that reached it (or found it unavailable).
    pub code: Option<CodeVerdict>,
    /// The weighted sum of accuracy, format and language share.
    pub total: f32,
}

impl RewardReport {
    /// The report of an item nobody could judge (its judge did not answer): every component 0.
    pub fn unjudged(why: &str) -> Self {
        RewardReport {
            task: None,
            extracted: None,
            accuracy: Score::fail(why),
            format: Score::fail(why),
            language: None,
            code: None,
            total: 0.0,
        }
    }

    /// Sets the language component (scored apart, by the language scorer) and the weighted total.
    pub fn set_language(&mut self, language: Option<LanguageScore>, weights: &RewardWeights) {
        let share = language.as_ref().map_or(0.0, |l| l.share);
        self.language = language;
        self.total = weights.accuracy * self.accuracy.reward
            + weights.format * self.format.reward
            + weights.language * share;
    }

    /// One line per component that fell short, prefixed with its name, for people.
    pub fn reasons(&self) -> Vec<String> {
        let language = self.language.as_ref().and_then(|l| l.why.as_deref());
        [
            ("accuracy", self.accuracy.why.as_deref()),
            ("format", self.format.why.as_deref()),
            ("language", language),
        ]
        .into_iter()
        .filter_map(|(name, why)| why.map(|why| format!("{name}: {why}")))
        .collect()
    }
}

/// Where code items are judged: a bubblewrap judge started on first use (math-only runs never
/// need bubblewrap), or the reason there is none.
pub struct CodeSandbox {
    /// How to start the judge.
    config: SandboxConfig,
    /// The started judge, or why it could not start; set once.
    judge: OnceLock<Result<CodeJudge, String>>,
}

impl CodeSandbox {
    /// A sandbox started with `config` the first time a code item needs it.
    pub fn lazy(config: SandboxConfig) -> Self {
        CodeSandbox {
            config,
            judge: OnceLock::new(),
        }
    }

    /// A sandbox around a judge already started (the daemon starts it at boot to fail early).
    pub fn started(judge: CodeJudge) -> Self {
        let config = judge.config().clone();
        CodeSandbox {
            config,
            judge: OnceLock::from(Ok(judge)),
        }
    }

    /// No sandbox: every code item scores 0 with `reason`.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        CodeSandbox {
            config: SandboxConfig::default(),
            judge: OnceLock::from(Err(reason.into())),
        }
    }

    /// The judge if it has been started (by a code item), without starting it.
    pub fn running(&self) -> Option<&CodeJudge> {
        self.judge.get().and_then(|r| r.as_ref().ok())
    }

    /// The judge, starting it on first call; the error is why it is unavailable.
    pub fn judge(&self) -> Result<&CodeJudge, &str> {
        self.judge
            .get_or_init(|| CodeJudge::new(self.config.clone()).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(String::as_str)
    }
}

/// Scores one item under `rules`: every component, its reason when it falls short, and the total.
/// Code items are judged in `sandbox`. Never panics; an item that cannot be scored as given is an
/// error naming what is wrong with it.
pub fn score_item(
    item: &RewardItem,
    rules: &RewardRules,
    sandbox: &CodeSandbox,
) -> Result<RewardReport, RewardError> {
    rules.weights.validate()?;
    let check = accuracy_check(item)?;
    let format_config = item.format.unwrap_or(rules.format);
    let mode = item
        .extract
        .or(rules.extract)
        .unwrap_or(match format_config.style {
            FormatStyle::AnswerTags => ExtractMode::AnswerTag,
            FormatStyle::Boxed => ExtractMode::Boxed,
        });

    let verdict = check_format(&item.completion, &format_config);
    let format = match &verdict.failure {
        None => Score::pass(),
        Some(failure) => Score::fail(failure.to_string()),
    };
    let gated = rules.accuracy_needs_format && !verdict.passed();
    let (accuracy, extracted, code) = if gated && check != AccuracyCheck::Nothing {
        let extracted = match &check {
            AccuracyCheck::Code(_) => last_python_block(&item.completion).map(str::to_string),
            _ => extract_answer(&item.completion, mode),
        };
        let why = "not scored because the format check failed";
        (Score::fail(why), extracted, None)
    } else {
        score_accuracy(&item.completion, &check, mode, sandbox)
    };
    let language = score_language(item, rules.weights.language != 0.0);
    let mut report = RewardReport {
        task: check.kind(),
        extracted,
        accuracy,
        format,
        language: None,
        code,
        total: 0.0,
    };
    report.set_language(language, &rules.weights);
    Ok(report)
}

/// What the accuracy reward checks against, resolved from an item.
#[derive(Debug, Clone, PartialEq)]
enum AccuracyCheck {
    /// Nothing: the item gave no gold answer, problem or tests.
    Nothing,
    /// An extracted answer, checked by a rule.
    Answer(AnswerCheck),
    /// Tests in the sandbox.
    Code(CodeTests),
}

/// The rule an extracted answer is checked with.
#[derive(Debug, Clone, PartialEq)]
enum AnswerCheck {
    /// Equivalence with a gold answer.
    Math { gold: String },
    /// A task verifier.
    Task(Problem),
    /// Equality with an integer.
    Integer { gold: i128 },
}

impl AccuracyCheck {
    fn kind(&self) -> Option<TaskKind> {
        match self {
            AccuracyCheck::Nothing => None,
            AccuracyCheck::Answer(AnswerCheck::Math { .. }) => Some(TaskKind::Math),
            AccuracyCheck::Answer(AnswerCheck::Task(Problem::Countdown(_))) => {
                Some(TaskKind::Countdown)
            }
            AccuracyCheck::Answer(
                AnswerCheck::Task(Problem::Arithmetic(_)) | AnswerCheck::Integer { .. },
            ) => Some(TaskKind::Arithmetic),
            AccuracyCheck::Code(_) => Some(TaskKind::Code),
        }
    }
}

/// Decides the accuracy check from `task` and the data (see the module docs for the order).
fn accuracy_check(item: &RewardItem) -> Result<AccuracyCheck, RewardError> {
    let problem = item_problem(item)?;
    let (implied, field) = match (&problem, &item.tests, &item.answer) {
        (Some((Problem::Countdown(_), field)), _, _) => (Some(TaskKind::Countdown), *field),
        (Some((Problem::Arithmetic(_), field)), _, _) => (Some(TaskKind::Arithmetic), *field),
        (None, Some(_), _) => (Some(TaskKind::Code), "tests"),
        (None, None, Some(_)) => (Some(TaskKind::Math), "answer"),
        (None, None, None) => (None, ""),
    };
    let Some(task) = item.task.or(implied) else {
        return Ok(AccuracyCheck::Nothing);
    };
    // A gold answer fits every task, and so do tests nowhere but code: only problems and tests
    // contradict a given task.
    if let Some(implied) = implied {
        if implied != task && field != "answer" {
            return Err(RewardError::TaskConflict {
                given: task,
                field,
                implied,
            });
        }
    }
    match task {
        TaskKind::Math => item
            .answer
            .clone()
            .map(|gold| AccuracyCheck::Answer(AnswerCheck::Math { gold }))
            .ok_or(RewardError::MissingField {
                task,
                field: "answer",
                hint: "the gold answer the extracted one must equal",
            }),
        TaskKind::Countdown => match problem {
            Some((problem, _)) => Ok(AccuracyCheck::Answer(AnswerCheck::Task(problem))),
            None => Err(RewardError::MissingField {
                task,
                field: "numbers",
                hint: "`numbers` and `target`, or a `problem`",
            }),
        },
        TaskKind::Arithmetic => match (problem, &item.answer) {
            (Some((problem, _)), _) => Ok(AccuracyCheck::Answer(AnswerCheck::Task(problem))),
            (None, Some(answer)) => arithmetic::parse_integer(answer)
                .map(|gold| AccuracyCheck::Answer(AnswerCheck::Integer { gold }))
                .map_err(|reason| RewardError::BadGold {
                    answer: answer.clone(),
                    reason,
                }),
            (None, None) => Err(RewardError::MissingField {
                task,
                field: "answer",
                hint: "the exact integer result, or a `problem`",
            }),
        },
        TaskKind::Code => match &item.tests {
            Some(tests) if !tests.is_empty() => Ok(AccuracyCheck::Code(tests.clone())),
            _ => Err(RewardError::MissingField {
                task,
                field: "tests",
                hint: "`cases` ({input, expected_output}) and/or `asserts` (Python)",
            }),
        },
    }
}

/// The item's Countdown or arithmetic problem, from `problem` or the `numbers`/`target` shorthand,
/// with the field it came from.
fn item_problem(item: &RewardItem) -> Result<Option<(Problem, &'static str)>, RewardError> {
    let shorthand = item.numbers.is_some() || item.target.is_some();
    match (&item.problem, shorthand) {
        (Some(_), true) => Err(RewardError::TwoProblems),
        (Some(problem), false) => Ok(Some((problem.clone(), "problem"))),
        (None, false) => Ok(None),
        (None, true) => match (&item.numbers, item.target) {
            (Some(numbers), Some(target)) => Ok(Some((
                Problem::Countdown(CountdownProblem {
                    numbers: numbers.clone(),
                    target,
                }),
                "numbers",
            ))),
            (None, _) => Err(RewardError::MissingField {
                task: TaskKind::Countdown,
                field: "numbers",
                hint: "the numbers to use, each once",
            }),
            (_, None) => Err(RewardError::MissingField {
                task: TaskKind::Countdown,
                field: "target",
                hint: "the value the expression must reach",
            }),
        },
    }
}

/// The accuracy component, the answer it read, and the sandbox verdict for code.
fn score_accuracy(
    completion: &str,
    check: &AccuracyCheck,
    mode: ExtractMode,
    sandbox: &CodeSandbox,
) -> (Score, Option<String>, Option<CodeVerdict>) {
    let extracted = extract_answer(completion, mode);
    let score = match (check, &extracted) {
        (AccuracyCheck::Code(tests), _) => return score_code(completion, tests, sandbox),
        (AccuracyCheck::Nothing, _) => Score::fail(
            "nothing to check against: give `answer`, `problem`, `numbers`/`target` or `tests`",
        ),
        (AccuracyCheck::Answer(_), None) => Score::fail(no_answer_reason(mode)),
        (AccuracyCheck::Answer(rule), Some(answer)) => check_answer(answer, rule),
    };
    (score, extracted, None)
}

/// Checks an extracted answer with its rule.
fn check_answer(answer: &str, rule: &AnswerCheck) -> Score {
    match rule {
        AnswerCheck::Math { gold } if equivalent(answer, gold) => Score::pass(),
        AnswerCheck::Math { gold } => Score::fail(format!(
            "{} is not equivalent to the gold answer {}",
            quote(answer),
            quote(gold)
        )),
        AnswerCheck::Task(problem) => {
            let example = TaskExample {
                prompt: String::new(),
                answer: String::new(),
                problem: problem.clone(),
            };
            match tasks::verify(&example, answer).failure {
                None => Score::pass(),
                Some(failure) => Score::fail(failure.to_string()),
            }
        }
        AnswerCheck::Integer { gold } => match arithmetic::parse_integer(answer) {
            Ok(given) if given == *gold => Score::pass(),
            Ok(given) => Score::fail(
                VerifyFailure::from(ArithmeticFailure::WrongValue {
                    given,
                    expected: *gold,
                })
                .to_string(),
            ),
            Err(failure) => Score::fail(VerifyFailure::from(failure).to_string()),
        },
    }
}

/// Why no answer was extracted, in the terms of the mode.
fn no_answer_reason(mode: ExtractMode) -> String {
    let looked_for = match mode {
        ExtractMode::AnswerTag => "a closed <answer>…</answer>",
        ExtractMode::Boxed => "a closed \\boxed{…}",
        ExtractMode::FreeText => "a stated answer or a number",
        ExtractMode::Auto => "an <answer> tag, a \\boxed{…}, a stated answer or a number",
    };
    format!("no answer found (extract mode {mode} looks for {looked_for})")
}

/// Runs the completion's last Python block against the tests; 0 with the reason when there is no
/// block or no sandbox.
fn score_code(
    completion: &str,
    tests: &CodeTests,
    sandbox: &CodeSandbox,
) -> (Score, Option<String>, Option<CodeVerdict>) {
    let Some(source) = last_python_block(completion) else {
        return (
            Score::fail("no closed ```python block in the completion"),
            None,
            None,
        );
    };
    let job = CodeJob {
        source: source.to_string(),
        cases: tests.cases.clone(),
        tests: tests.asserts.clone(),
    };
    let verdict = match sandbox.judge() {
        Ok(judge) => judge.run(job),
        Err(reason) => CodeVerdict::zero(
            CodeOutcome::SandboxError,
            job.checks_total(),
            format!("code sandbox unavailable: {reason}"),
        ),
    };
    let score = if verdict.outcome == CodeOutcome::Passed {
        Score::pass()
    } else {
        Score::fail(format!(
            "{:?} after {}/{} checks: {}",
            verdict.outcome, verdict.checks_passed, verdict.checks_total, verdict.detail
        ))
    };
    (score, Some(source.to_string()), Some(verdict))
}

/// The body of the last closed fenced block tagged `python`, `py` or `python3` (any case). Fences
/// may sit mid-line (`<answer>```python`); a fence opened and closed on one line is inline code.
pub fn last_python_block(completion: &str) -> Option<&str> {
    const FENCE: &str = "```";
    let mut last = None;
    let mut from = 0;
    while let Some(open) = completion[from..].find(FENCE).map(|i| from + i) {
        let info_start = open + FENCE.len();
        let Some(line_len) = completion[info_start..].find('\n') else {
            break;
        };
        let info = &completion[info_start..info_start + line_len];
        if let Some(inline_close) = info.find(FENCE) {
            from = info_start + inline_close + FENCE.len();
            continue;
        }
        let body_start = info_start + line_len + 1;
        let Some(close) = completion[body_start..].find(FENCE).map(|i| body_start + i) else {
            break;
        };
        let lang = info.split_whitespace().next().unwrap_or_default();
        if ["python", "py", "python3"]
            .iter()
            .any(|name| lang.eq_ignore_ascii_case(name))
        {
            last = Some(&completion[body_start..close]);
        }
        from = close + FENCE.len();
    }
    last
}

/// The language component: `None` when no target is known and nobody asked for it.
/// The language-consistency component of one item alone (the language scorer's work); `weighted`
/// says the rules give it weight, so a missing target is reported rather than skipped.
pub fn score_language(item: &RewardItem, weighted: bool) -> Option<LanguageScore> {
    let detected_target = || item.prompt.as_deref().and_then(detect_language);
    let (target, detected) = match item.language {
        Some(language) => (Some(language), false),
        None => (detected_target(), true),
    };
    let words = count_words(chain_of_thought(&item.completion));
    let Some(target) = target else {
        if !weighted {
            return None;
        }
        let why = if item.prompt.is_some() {
            "no target language: the prompt's language is not english, chinese, russian or korean; set `language`"
        } else {
            "no target language: set `language` or give the `prompt`"
        };
        return Some(LanguageScore {
            target: None,
            detected: false,
            share: 0.0,
            words,
            why: Some(why.to_string()),
        });
    };
    let share = words.share(target);
    let why = (share < 1.0).then(|| language_reason(&words, target));
    Some(LanguageScore {
        target: Some(target),
        detected,
        share,
        words,
        why,
    })
}

/// "3 of 10 chain-of-thought words are english (7 chinese)", or why there are no words.
fn language_reason(words: &WordCounts, target: Language) -> String {
    let total = words.total();
    if total == 0 {
        return "no words in the chain of thought (code and math do not count)".to_string();
    }
    let others: Vec<String> = Language::ALL
        .into_iter()
        .filter(|&l| l != target)
        .map(|l| (l.name(), words.of(l.script())))
        .chain([("other-script", words.other)])
        .filter(|&(_, n)| n > 0)
        .map(|(name, n)| format!("{n} {name}"))
        .collect();
    format!(
        "{} of {total} chain-of-thought words are {target} ({})",
        words.of(target.script()),
        others.join(", ")
    )
}

/// Model text quoted in a reason: in double quotes, control characters escaped (LaTeX
/// backslashes kept as written), cut after [`MAX_QUOTED_CHARS`] characters.
fn quote(text: &str) -> String {
    let mut body = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == MAX_QUOTED_CHARS {
            return format!("\"{body}\"…");
        }
        if c.is_control() {
            body.extend(c.escape_default());
        } else {
            body.push(c);
        }
    }
    format!("\"{body}\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::FormatStyle;
    use crate::tasks::{countdown, Split};

    /// Parses a JSON item; a test item that does not parse is a broken test.
    fn item(json: &str) -> RewardItem {
        match serde_json::from_str(json) {
            Ok(item) => item,
            Err(e) => panic!("test item {json} does not parse: {e}"),
        }
    }

    fn no_sandbox() -> CodeSandbox {
        CodeSandbox::unavailable("not needed by this test")
    }

    fn score(json: &str) -> RewardReport {
        score_with(json, &RewardRules::default())
    }

    fn score_with(json: &str, rules: &RewardRules) -> RewardReport {
        match score_item(&item(json), rules, &no_sandbox()) {
            Ok(report) => report,
            Err(e) => panic!("{json} did not score: {e}"),
        }
    }

    fn error(json: &str) -> RewardError {
        match score_item(&item(json), &RewardRules::default(), &no_sandbox()) {
            Ok(report) => panic!("{json} scored {report:?}, expected an error"),
            Err(e) => e,
        }
    }

    fn why(score: &Score) -> &str {
        score.why.as_deref().unwrap_or("")
    }

    #[test]
    fn a_right_math_answer_in_the_right_format_earns_both() {
        let r = score(
            r#"{"completion": "<think>6 times 7</think><answer>\\frac{84}{2}</answer>", "answer": "42"}"#,
        );
        assert_eq!(r.task, Some(TaskKind::Math));
        assert_eq!(r.extracted.as_deref(), Some("\\frac{84}{2}"));
        assert_eq!(
            (r.accuracy.reward, r.format.reward, r.total),
            (1.0, 1.0, 2.0)
        );
        assert!(r.reasons().is_empty(), "{:?}", r.reasons());
        assert_eq!(r.language, None, "no target and weight 0: not scored");
        assert_eq!(r.code, None);
    }

    #[test]
    fn a_wrong_math_answer_says_what_was_compared() {
        let r =
            score(r#"{"completion": "<think>guess</think><answer>41</answer>", "answer": "42"}"#);
        assert_eq!(
            (r.accuracy.reward, r.format.reward, r.total),
            (0.0, 1.0, 1.0)
        );
        assert_eq!(
            why(&r.accuracy),
            "\"41\" is not equivalent to the gold answer \"42\""
        );
        assert_eq!(r.reasons(), vec![format!("accuracy: {}", why(&r.accuracy))]);
    }

    #[test]
    fn no_extracted_answer_names_the_mode() {
        let r = score(
            r#"{"completion": "<think>hmm</think><answer>42</answer>", "answer": "42", "extract": "boxed"}"#,
        );
        assert_eq!(r.extracted, None);
        assert_eq!((r.accuracy.reward, r.format.reward), (0.0, 1.0));
        assert_eq!(
            why(&r.accuracy),
            "no answer found (extract mode boxed looks for a closed \\boxed{…})"
        );
    }

    #[test]
    fn a_malformed_completion_earns_no_accuracy_unless_the_rules_say_so() {
        let json = r#"{"completion": "<think>It is <answer>42</answer></think>", "answer": "42"}"#;
        let r = score(json);
        assert_eq!(
            (r.accuracy.reward, r.format.reward, r.total),
            (0.0, 0.0, 0.0)
        );
        assert_eq!(
            r.extracted.as_deref(),
            Some("42"),
            "still shown, for debugging"
        );
        assert!(why(&r.accuracy).starts_with("not scored because the format check failed"));
        assert_eq!(why(&r.format), "<answer> inside the think block at byte 13");
        let rules = RewardRules {
            accuracy_needs_format: false,
            ..RewardRules::default()
        };
        let r = score_with(json, &rules);
        assert_eq!(
            (r.accuracy.reward, r.format.reward, r.total),
            (1.0, 0.0, 1.0)
        );
    }

    #[test]
    fn the_answer_is_read_where_the_format_style_puts_it() {
        let completion = r#""<think>6*7</think>The result is \\boxed{42}.""#;
        let rules = RewardRules {
            format: FormatConfig {
                style: FormatStyle::Boxed,
                prefilled_think: false,
            },
            ..RewardRules::default()
        };
        let r = score_with(
            &format!(r#"{{"completion": {completion}, "answer": "42"}}"#),
            &rules,
        );
        assert_eq!((r.accuracy.reward, r.format.reward), (1.0, 1.0));
        // The item's own format and extract mode win over the rules'.
        let r = score(&format!(
            r#"{{"completion": {completion}, "answer": "42", "format": {{"style": "boxed"}}}}"#
        ));
        assert_eq!((r.accuracy.reward, r.format.reward), (1.0, 1.0));
        let r = score(&format!(
            r#"{{"completion": {completion}, "answer": "42", "format": {{"style": "boxed"}}, "extract": "free_text"}}"#
        ));
        assert_eq!((r.accuracy.reward, r.format.reward), (1.0, 1.0));
        assert_eq!(r.extracted.as_deref(), Some("42"));
        // Under the rules' answer-tags format the same completion fails, and so does accuracy.
        let r = score(&format!(
            r#"{{"completion": {completion}, "answer": "42"}}"#
        ));
        assert_eq!((r.accuracy.reward, r.format.reward), (0.0, 0.0));
    }

    #[test]
    fn prefilled_think_is_passed_to_the_format_check() {
        let json = r#"{"completion": "ok</think><answer>1</answer>", "answer": "1", "format": {"prefilled_think": true}}"#;
        let r = score(json);
        assert_eq!((r.accuracy.reward, r.format.reward), (1.0, 1.0));
        let r = score(r#"{"completion": "ok</think><answer>1</answer>", "answer": "1"}"#);
        assert_eq!(
            why(&r.format),
            "</think> at byte 2 where <think> was expected"
        );
    }

    #[test]
    fn countdown_from_the_shorthand() {
        let ok = score(
            r#"{"completion": "<think>try</think><answer>(6 - 2) * 6</answer>", "numbers": [6, 2, 6], "target": 24}"#,
        );
        assert_eq!(ok.task, Some(TaskKind::Countdown));
        assert_eq!((ok.accuracy.reward, ok.total), (1.0, 2.0));
        let wrong = score(
            r#"{"completion": "<think>try</think><answer>6 + 2 + 6</answer>", "numbers": [6, 2, 6], "target": 24}"#,
        );
        assert_eq!(why(&wrong.accuracy), "countdown: evaluates to 14, not 24");
        let reused = score(
            r#"{"completion": "<think>try</think><answer>6 * 2 * 2</answer>", "numbers": [6, 2, 6], "target": 24}"#,
        );
        assert!(
            why(&reused.accuracy).starts_with("countdown: uses the numbers [2, 2, 6]"),
            "{:?}",
            reused.accuracy
        );
    }

    #[test]
    fn a_generated_task_line_plus_a_completion_is_an_item() {
        let example = countdown::generate(7, Split::Train, 1)
            .ok()
            .and_then(|mut v| v.pop());
        let Some(example) = example else {
            panic!("countdown generation failed");
        };
        let mut line = serde_json::to_value(&example).unwrap_or_default();
        line["completion"] = format!(
            "<think>I found it.</think><answer>{}</answer>",
            example.answer
        )
        .into();
        let r = score(&line.to_string());
        assert_eq!(r.task, Some(TaskKind::Countdown));
        assert_eq!((r.accuracy.reward, r.format.reward), (1.0, 1.0));
        // The prompt is English, so the language is detected from it and reported, though at
        // weight 0 it does not count.
        let language = r.language.map(|l| (l.target, l.detected, l.share));
        assert_eq!(language, Some((Some(Language::English), true, 1.0)));
        assert_eq!(r.total, 2.0);
        let rules = RewardRules {
            weights: RewardWeights::REASONING_RL,
            ..RewardRules::default()
        };
        let r = score_with(&line.to_string(), &rules);
        assert_eq!(r.total, 2.0, "accuracy + language, no format");
    }

    #[test]
    fn arithmetic_from_a_problem_or_a_gold_integer() {
        let r = score(
            r#"{"completion": "<think>carry</think><answer>1,000,000</answer>", "problem": {"task": "arithmetic", "left": 999999, "op": "add", "right": 1}}"#,
        );
        assert_eq!(
            (r.task, r.accuracy.reward),
            (Some(TaskKind::Arithmetic), 1.0)
        );
        let r = score(
            r#"{"completion": "<think>carry</think><answer>-12</answer>", "task": "arithmetic", "answer": "−12"}"#,
        );
        assert_eq!(
            (r.task, r.accuracy.reward),
            (Some(TaskKind::Arithmetic), 1.0)
        );
        let r = score(
            r#"{"completion": "<think>carry</think><answer>12</answer>", "task": "arithmetic", "answer": "13"}"#,
        );
        assert_eq!(why(&r.accuracy), "arithmetic: 12 is not 13");
        let r = score(
            r#"{"completion": "<think>carry</think><answer>1.5</answer>", "task": "arithmetic", "answer": "13"}"#,
        );
        assert_eq!(
            why(&r.accuracy),
            "arithmetic: '.' at byte 1 is not part of an integer"
        );
    }

    #[test]
    fn the_language_share_says_what_was_mixed() {
        let r = score(
            r#"{"completion": "<think>we add 这个 数</think><answer>3</answer>", "answer": "3", "language": "en"}"#,
        );
        let language = r.language.unwrap_or_else(|| panic!("target given"));
        assert_eq!(
            (language.target, language.detected),
            (Some(Language::English), false)
        );
        assert_eq!(language.share, 0.4);
        assert_eq!(
            language.why.as_deref(),
            Some("2 of 5 chain-of-thought words are english (3 chinese)")
        );
    }

    #[test]
    fn a_weighted_language_without_a_target_scores_zero_and_says_why() {
        let rules = RewardRules {
            weights: RewardWeights {
                accuracy: 1.0,
                format: 1.0,
                language: 0.5,
            },
            ..RewardRules::default()
        };
        let r = score_with(
            r#"{"completion": "<think>a b</think><answer>1</answer>", "answer": "1"}"#,
            &rules,
        );
        let language = r.language.clone().unwrap_or_else(|| panic!("weighted"));
        assert_eq!((language.target, language.share), (None, 0.0));
        assert_eq!(r.total, 2.0);
        assert!(r.reasons()[0].starts_with("language: no target language"));
        // Detected from a Chinese prompt: an English chain of thought scores 0, weighted by 0.5.
        let r = score_with(
            r#"{"completion": "<think>a b</think><answer>1</answer>", "answer": "1", "prompt": "一加零是多少"}"#,
            &rules,
        );
        let language = r.language.unwrap_or_else(|| panic!("detected"));
        assert_eq!(
            (language.target, language.detected),
            (Some(Language::Chinese), true)
        );
        assert_eq!(
            language.why.as_deref(),
            Some("0 of 2 chain-of-thought words are chinese (2 english)")
        );
        let r = score_with(
            r#"{"completion": "<think>一加零</think><answer>1</answer>", "answer": "1", "language": "zh-CN"}"#,
            &rules,
        );
        assert_eq!(r.total, 2.5);
        let r = score_with(
            r#"{"completion": "<think>$1+0$</think><answer>1</answer>", "answer": "1", "language": "zh"}"#,
            &rules,
        );
        assert_eq!(
            r.language.and_then(|l| l.why).as_deref(),
            Some("no words in the chain of thought (code and math do not count)")
        );
    }

    #[test]
    fn nothing_to_check_against_scores_zero_accuracy() {
        let r = score(r#"{"completion": "<think>x</think><answer>5</answer>"}"#);
        assert_eq!(r.task, None);
        assert_eq!(r.extracted.as_deref(), Some("5"));
        assert_eq!((r.accuracy.reward, r.format.reward), (0.0, 1.0));
        assert!(why(&r.accuracy).starts_with("nothing to check against"));
    }

    #[test]
    fn format_hacks_lose_the_format_reward_with_the_reason() {
        let cases = [
            (
                "<think></think><answer>4</answer>",
                "the think block is empty",
            ),
            (
                "<think>x <answer>4</answer></think>",
                "<answer> inside the think block at byte 9",
            ),
            (
                "<think>x</think><answer>4</answer><answer>5</answer>",
                "<answer> repeated at byte 34",
            ),
            ("<think>x</think><answer> </answer>", "the answer is empty"),
        ];
        for (completion, expected) in cases {
            let json = serde_json::json!({"completion": completion, "answer": "4"}).to_string();
            let r = score(&json);
            assert_eq!(
                (r.format.reward, why(&r.format)),
                (0.0, expected),
                "{completion}"
            );
        }
    }

    #[test]
    fn inconsistent_items_are_errors() {
        let cases = [
            (r#"{"completion": "", "task": "math"}"#, "a math item needs `answer`"),
            (r#"{"completion": "", "task": "countdown"}"#, "a countdown item needs `numbers`"),
            (r#"{"completion": "", "numbers": [1, 2]}"#, "a countdown item needs `target`"),
            (r#"{"completion": "", "target": 3}"#, "a countdown item needs `numbers`"),
            (r#"{"completion": "", "task": "arithmetic"}"#, "a arithmetic item needs `answer`"),
            (r#"{"completion": "", "task": "code"}"#, "a code item needs `tests`"),
            (r#"{"completion": "", "tests": {}}"#, "a code item needs `tests`"),
            (
                r#"{"completion": "", "task": "math", "numbers": [1], "target": 1}"#,
                "`task` is math, but `numbers` describes a countdown item",
            ),
            (
                r#"{"completion": "", "task": "countdown", "tests": {"asserts": "pass"}}"#,
                "`task` is countdown, but `tests` describes a code item",
            ),
            (
                r#"{"completion": "", "numbers": [1], "target": 1, "problem": {"task": "countdown", "numbers": [1], "target": 1}}"#,
                "give either `problem` or `numbers`/`target`, not both",
            ),
            (
                r#"{"completion": "", "task": "arithmetic", "answer": "twelve"}"#,
                "the gold answer \"twelve\" of an arithmetic item is not an integer: 't' at byte 0 is not part of an integer",
            ),
        ];
        for (json, expected) in cases {
            let message = error(json).to_string();
            assert!(message.starts_with(expected), "{json}: {message}");
        }
        let rules = RewardRules {
            weights: RewardWeights {
                format: f32::NAN,
                ..RewardWeights::R1_ZERO
            },
            ..RewardRules::default()
        };
        let err = score_item(&item(r#"{"completion": ""}"#), &rules, &no_sandbox());
        assert!(
            matches!(err, Err(RewardError::BadWeight { name: "format", .. })),
            "{err:?}"
        );
    }

    #[test]
    fn malformed_items_do_not_parse() {
        let cases = [
            (r#"{"answer": "1"}"#, "missing field `completion`"),
            (
                r#"{"completion": "x", "anwser": "1"}"#,
                "unknown field `anwser`",
            ),
            (
                r#"{"completion": 5}"#,
                "invalid type: integer `5`, expected a string",
            ),
            (
                r#"{"completion": "x", "language": "klingon"}"#,
                "unknown language \"klingon\"",
            ),
            (
                r#"{"completion": "x", "task": "poetry"}"#,
                "unknown variant `poetry`",
            ),
            (
                r#"{"completion": "x", "numbers": [-1], "target": 1}"#,
                "invalid value: integer `-1`",
            ),
            (
                r#"{"completion": "x", "tests": {"asserts": "pass", "stdin": ""}}"#,
                "unknown field `stdin`",
            ),
        ];
        for (json, expected) in cases {
            match serde_json::from_str::<RewardItem>(json) {
                Ok(item) => panic!("{json} parsed as {item:?}"),
                Err(e) => assert!(e.to_string().contains(expected), "{json}: {e}"),
            }
        }
    }

    #[test]
    fn python_blocks_are_found_last_closed_first() {
        let text = "draft:\n```python\nprint(1)\n```\nnot this:\n```bash\nls\n```\nfinal <answer>```Python\nprint(2)\n```</answer>";
        assert_eq!(last_python_block(text), Some("print(2)\n"));
        assert_eq!(
            last_python_block("```py\nx = 1\n```\n```python\nunclosed"),
            Some("x = 1\n")
        );
        assert_eq!(last_python_block("inline ```python``` only\n"), None);
        assert_eq!(last_python_block("```\nprint(3)\n```"), None, "untagged");
        assert_eq!(last_python_block("```python"), None);
        assert_eq!(last_python_block(""), None);
    }

    #[test]
    fn code_without_a_sandbox_fails_closed() {
        let json = r#"{"completion": "<think>add</think><answer>```python\nprint(sum(map(int, input().split())))\n```</answer>", "tests": {"cases": [{"input": "2 3", "expected_output": "5"}]}}"#;
        let sandbox = CodeSandbox::unavailable("bubblewrap not found");
        let r = score_item(&item(json), &RewardRules::default(), &sandbox);
        let r = r.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.task, Some(TaskKind::Code));
        assert_eq!((r.accuracy.reward, r.format.reward), (0.0, 1.0));
        let verdict = r.code.unwrap_or_else(|| panic!("a verdict"));
        assert_eq!(verdict.outcome, CodeOutcome::SandboxError);
        assert_eq!(
            why(&r.accuracy),
            "SandboxError after 0/1 checks: code sandbox unavailable: bubblewrap not found"
        );
        let no_block = r#"{"completion": "<think>x</think><answer>print(5)</answer>", "tests": {"asserts": "assert True"}}"#;
        let r = score_item(&item(no_block), &RewardRules::default(), &sandbox);
        let r = r.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            why(&r.accuracy),
            "no closed ```python block in the completion"
        );
        assert_eq!(r.code, None);
    }

    #[test]
    fn code_runs_in_the_sandbox() {
        let sandbox = CodeSandbox::lazy(SandboxConfig::for_tests());
        if let Err(reason) = sandbox.judge() {
            // The sandbox tests (tests/sandbox_attacks.rs) own the "must start in CI" check; a
            // missing bubblewrap outside CI only skips the code half of this test.
            if std::env::var_os("CI").is_none() && reason.contains("bubblewrap not found") {
                eprintln!("SKIPPED: {reason}");
                return;
            }
            panic!("the code judge did not start: {reason}");
        }
        let passing = r#"{"completion": "<think>add</think><answer>```python\nimport sys\ndef add(a, b):\n    return a + b\nnumbers = sys.stdin.read().split()\nif numbers:\n    print(add(*map(int, numbers)))\n```</answer>", "tests": {"cases": [{"input": "2 3", "expected_output": "5"}], "asserts": "assert add(1, 2) == 3"}}"#;
        let r = score_item(&item(passing), &RewardRules::default(), &sandbox);
        let r = r.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((r.accuracy.reward, r.total), (1.0, 2.0), "{:?}", r.code);
        let failing = passing.replace("a + b", "a - b");
        let r = score_item(&item(&failing), &RewardRules::default(), &sandbox);
        let r = r.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.accuracy.reward, 0.0);
        assert!(
            why(&r.accuracy).starts_with("WrongAnswer after 0/2 checks"),
            "{:?}",
            r.accuracy
        );
    }

    #[test]
    fn quotes_keep_latex_and_escape_control_characters() {
        assert_eq!(quote("\\frac{1}{2}"), "\"\\frac{1}{2}\"");
        assert_eq!(quote("a\nb\u{0}"), "\"a\\nb\\u{0}\"");
        assert_eq!(quote(&"数".repeat(61)), format!("\"{}\"…", "数".repeat(60)));
    }

    /// Pieces random completions are built from: tags, boxes, fences, numbers, scripts.
    const FUZZ_PIECES: &[&str] = &[
        "<think>",
        "</think>",
        "<answer>",
        "</answer>",
        "<Think>",
        "\\boxed{",
        "}",
        "{",
        "$",
        "```python\n",
        "```",
        "\n",
        " ",
        "1",
        "2",
        "6",
        "24",
        "-",
        "*",
        "(",
        ")",
        "/",
        "0",
        ",",
        "é",
        "数",
        "ж",
        "\u{0}",
        "\u{202e}",
        "99999999999999999999999999",
        "the answer is",
        "x",
    ];

    #[test]
    fn random_completions_never_panic_and_add_up() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4242);
        let rules = RewardRules {
            weights: RewardWeights {
                accuracy: 1.0,
                format: 0.5,
                language: 0.25,
            },
            ..RewardRules::default()
        };
        let golds = [
            serde_json::json!({"answer": "24"}),
            serde_json::json!({"numbers": [6, 2, 6], "target": 24}),
            serde_json::json!({"task": "arithmetic", "answer": "-12"}),
            serde_json::json!({"language": "zh", "format": {"style": "boxed", "prefilled_think": true}}),
            serde_json::json!({"extract": "auto", "answer": "2", "prompt": "Сколько?"}),
        ];
        for i in 0..4_000 {
            let len = rng.random_range(0..20);
            let completion: String = (0..len)
                .map(|_| FUZZ_PIECES[rng.random_range(0..FUZZ_PIECES.len())])
                .collect();
            let mut line = golds[i % golds.len()].clone();
            line["completion"] = completion.clone().into();
            let r = score_with(&line.to_string(), &rules);
            let share = r.language.as_ref().map_or(0.0, |l| l.share);
            assert!((0.0..=1.0).contains(&share), "{completion:?}");
            let expected = r.accuracy.reward + 0.5 * r.format.reward + 0.25 * share;
            assert_eq!(r.total, expected, "{completion:?}");
            for score in [&r.accuracy, &r.format] {
                assert!(score.reward == 0.0 || score.reward == 1.0);
                assert_eq!(
                    score.reward == 0.0,
                    score.why.is_some(),
                    "{completion:?}: {r:?}"
                );
            }
        }
    }
}
