//! Rejection sampling (the paper's stage 4): of the k samples per prompt, keep the correct ones
//! whose chain of thought is readable, and write them as an SFT set with provenance.
//!
//! Readable, as the paper describes it: no language mixing (language-consistency share at least
//! `min_language_share` when a target language is known), no endless repetition (no word n-gram
//! of `repeat_ngram` words occurring more than `max_repeats` times), no huge paragraphs (none
//! longer than `max_paragraph_chars`) and no huge code blocks (none longer than
//! `max_code_block_lines`).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::lang::{chain_of_thought, language_consistency, Language};

/// The readability thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReadabilityFilter {
    /// Least share of chain-of-thought words in the target language.
    pub min_language_share: f32,
    /// Words per n-gram when looking for repetition.
    pub repeat_ngram: usize,
    /// Most occurrences of any such n-gram.
    pub max_repeats: usize,
    /// Longest paragraph (text between blank lines), in characters.
    pub max_paragraph_chars: usize,
    /// Longest fenced code block, in lines.
    pub max_code_block_lines: usize,
}

impl Default for ReadabilityFilter {
    fn default() -> Self {
        ReadabilityFilter {
            min_language_share: 0.95,
            repeat_ngram: 8,
            max_repeats: 3,
            max_paragraph_chars: 2000,
            max_code_block_lines: 60,
        }
    }
}

/// Why a completion is not readable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum Unreadable {
    /// Too few chain-of-thought words in the target language.
    LanguageMixing {
        /// The share found.
        share: f32,
    },
    /// An n-gram repeats too often.
    Repetition {
        /// The repeated words.
        ngram: String,
        /// How often.
        count: usize,
    },
    /// A paragraph is too long.
    LongParagraph {
        /// Its length in characters.
        chars: usize,
    },
    /// A code block is too long.
    LongCodeBlock {
        /// Its length in lines.
        lines: usize,
    },
}

/// Checks a completion against the filter; `target` enables the language rule.
pub fn readability(
    completion: &str,
    target: Option<Language>,
    filter: &ReadabilityFilter,
) -> Result<(), Unreadable> {
    if let Some(language) = target {
        let share = language_consistency(completion, language);
        if share < filter.min_language_share {
            return Err(Unreadable::LanguageMixing { share });
        }
    }
    let cot = chain_of_thought(completion);
    let words: Vec<String> = cot.split_whitespace().map(str::to_lowercase).collect();
    let n = filter.repeat_ngram.max(1);
    if words.len() >= n {
        let mut counts: HashMap<&[String], usize> = HashMap::new();
        for window in words.windows(n) {
            let count = counts.entry(window).or_insert(0);
            *count += 1;
            if *count > filter.max_repeats {
                return Err(Unreadable::Repetition {
                    ngram: window.join(" "),
                    count: *count,
                });
            }
        }
    }
    let mut in_code = false;
    let mut code_lines = 0;
    for line in completion.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            code_lines = 0;
            continue;
        }
        if in_code {
            code_lines += 1;
            if code_lines > filter.max_code_block_lines {
                return Err(Unreadable::LongCodeBlock { lines: code_lines });
            }
        }
    }
    if let Some(chars) = completion.split("\n\n").map(|p| p.chars().count()).max() {
        if chars > filter.max_paragraph_chars {
            return Err(Unreadable::LongParagraph { chars });
        }
    }
    Ok(())
}

/// One kept sample of the SFT set, with where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftRecord {
    /// The prompt as the dataset gave it.
    pub prompt: String,
    /// The kept completion (named as the SFT stage reads it by default).
    pub response: String,
    /// The gold answer it matched.
    pub answer: Option<String>,
    /// Provenance: the checkpoint that sampled it.
    pub source_checkpoint: String,
    /// Provenance: the dataset of the prompt (a file path or a built-in task name).
    pub source_dataset: String,
    /// Provenance: the dataset line (or generated problem index) of the prompt.
    pub source_line: usize,
    /// Provenance: which of the k samples it was.
    pub sample: usize,
    /// Its total reward.
    pub reward: f32,
}

/// A judged sample offered to the rejection stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The prompt.
    pub prompt: String,
    /// The completion text.
    pub completion: String,
    /// Gold answer.
    pub answer: Option<String>,
    /// Judged correct (accuracy reward 1).
    pub correct: bool,
    /// Total reward.
    pub reward: f32,
    /// Target language, if any.
    pub language: Option<Language>,
    /// Dataset line of the prompt.
    pub line: usize,
    /// Sample index.
    pub sample: usize,
}

/// What the stage kept and dropped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RejectionSummary {
    /// Candidates seen.
    pub seen: usize,
    /// Kept (correct and readable).
    pub kept: usize,
    /// Dropped as incorrect.
    pub incorrect: usize,
    /// Dropped as unreadable, by reason.
    pub unreadable: BTreeMap<String, usize>,
}

impl RejectionSummary {
    /// Adds another batch's counts.
    pub fn merge(&mut self, other: &RejectionSummary) {
        self.seen += other.seen;
        self.kept += other.kept;
        self.incorrect += other.incorrect;
        for (reason, n) in &other.unreadable {
            *self.unreadable.entry(reason.clone()).or_insert(0) += n;
        }
    }
}

/// Keeps the correct, readable candidates (at most `per_prompt` per dataset line) and returns them
/// with a summary; `checkpoint` and `dataset` are written into each record as provenance.
pub fn select(
    candidates: &[Candidate],
    filter: &ReadabilityFilter,
    per_prompt: usize,
    checkpoint: &str,
    dataset: &str,
) -> (Vec<SftRecord>, RejectionSummary) {
    let mut summary = RejectionSummary {
        seen: candidates.len(),
        ..Default::default()
    };
    let mut kept_per_line: HashMap<usize, usize> = HashMap::new();
    let mut out = Vec::new();
    for c in candidates {
        if !c.correct {
            summary.incorrect += 1;
            continue;
        }
        if let Err(reason) = readability(&c.completion, c.language, filter) {
            let name = match reason {
                Unreadable::LanguageMixing { .. } => "language_mixing",
                Unreadable::Repetition { .. } => "repetition",
                Unreadable::LongParagraph { .. } => "long_paragraph",
                Unreadable::LongCodeBlock { .. } => "long_code_block",
            };
            *summary.unreadable.entry(name.into()).or_insert(0) += 1;
            continue;
        }
        let kept = kept_per_line.entry(c.line).or_insert(0);
        if *kept >= per_prompt {
            continue;
        }
        *kept += 1;
        out.push(SftRecord {
            prompt: c.prompt.clone(),
            response: c.completion.clone(),
            answer: c.answer.clone(),
            source_checkpoint: checkpoint.to_string(),
            source_dataset: dataset.to_string(),
            source_line: c.line,
            sample: c.sample,
            reward: c.reward,
        });
    }
    summary.kept = out.len();
    (out, summary)
}

/// Writes the SFT set as JSONL (written to a temporary file, fsynced, then renamed into place).
pub fn write_sft_set(path: &Path, records: &[SftRecord]) -> std::io::Result<()> {
    let tmp = path.with_extension("jsonl.tmp");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        for r in records {
            serde_json::to_writer(&mut file, r)?;
            file.write_all(b"\n")?;
        }
        file.flush()?;
        file.get_ref().sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Appends records to a JSONL set, flushed and fsynced before returning.
pub fn append_sft_records(path: &Path, records: &[SftRecord]) -> std::io::Result<()> {
    let mut file = std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)?,
    );
    for r in records {
        serde_json::to_writer(&mut file, r)?;
        file.write_all(b"\n")?;
    }
    file.flush()?;
    file.get_ref().sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(completion: &str, correct: bool, line: usize) -> Candidate {
        Candidate {
            prompt: "q".into(),
            completion: completion.into(),
            answer: Some("4".into()),
            correct,
            reward: if correct { 2.0 } else { 0.0 },
            language: Some(Language::English),
            line,
            sample: 0,
        }
    }

    #[test]
    fn readability_rules_name_what_they_reject() {
        let f = ReadabilityFilter::default();
        assert_eq!(
            readability(
                "<think>two plus two is four</think><answer>4</answer>",
                Some(Language::English),
                &f
            ),
            Ok(())
        );
        let mixed = "<think>two plus two 等于 四 因为 二 加 二</think><answer>4</answer>";
        assert!(matches!(
            readability(mixed, Some(Language::English), &f),
            Err(Unreadable::LanguageMixing { .. })
        ));
        let looping = format!(
            "<think>{}</think><answer>4</answer>",
            "let me add the numbers again to be sure. ".repeat(5)
        );
        assert!(matches!(
            readability(&looping, None, &f),
            Err(Unreadable::Repetition { count: 4, .. })
        ));
        let wall = format!("<think>{}</think><answer>4</answer>", "word ".repeat(500));
        assert!(matches!(
            readability(
                &wall,
                None,
                &ReadabilityFilter {
                    max_repeats: 1000,
                    ..f
                }
            ),
            Err(Unreadable::LongParagraph { .. })
        ));
        let code = format!(
            "<think>\n```\n{}```\n</think><answer>4</answer>",
            "x = 1\n".repeat(70)
        );
        assert!(matches!(
            readability(
                &code,
                None,
                &ReadabilityFilter {
                    max_repeats: 1000,
                    ..f
                }
            ),
            Err(Unreadable::LongCodeBlock { .. })
        ));
    }

    #[test]
    fn select_keeps_correct_readable_samples_with_provenance() {
        let good = "<think>two plus two is four</think><answer>4</answer>";
        let candidates = vec![
            candidate(good, true, 1),
            candidate(good, false, 1),
            candidate("<think>二 加 二 等于 四</think><answer>4</answer>", true, 1),
            candidate(good, true, 1),
            candidate(good, true, 2),
        ];
        let (kept, summary) = select(
            &candidates,
            &ReadabilityFilter::default(),
            1,
            "ckpt-7",
            "math.jsonl",
        );
        assert_eq!(kept.len(), 2, "one per prompt line");
        assert_eq!((summary.seen, summary.kept, summary.incorrect), (5, 2, 1));
        assert_eq!(summary.unreadable.get("language_mixing"), Some(&1));
        assert_eq!(kept[0].source_checkpoint, "ckpt-7");
        assert_eq!(kept[0].source_dataset, "math.jsonl");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sft.jsonl");
        write_sft_set(&path, &kept).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let back: Vec<SftRecord> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(back, kept);
    }
}
