//! `r1ctl judge`: every reward component of completions in a JSONL file, offline, with the reason
//! for every 0. The rules are `r1_judge::reward`, the same code the judge actor runs, so
//! what this prints is what training would have rewarded.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use r1_judge::format::{FormatConfig, FormatStyle};
use r1_judge::math::ExtractMode;
use r1_judge::reward::{
    score_item, CodeSandbox, RewardItem, RewardReport, RewardRules, RewardWeights,
};
use r1_judge::sandbox::SandboxConfig;
use serde::Serialize;

use crate::terminal::printable;

/// Output format.
#[derive(Clone, Copy, ValueEnum)]
pub enum Output {
    /// One row per line, for people.
    Table,
    /// One JSON object per line with every component, for scripts.
    Json,
}

/// The format style, as a command-line value.
#[derive(Clone, Copy, ValueEnum)]
pub enum StyleArg {
    /// `<think>…</think><answer>…</answer>` (the paper's R1-Zero template).
    AnswerTags,
    /// `<think>…</think>` then a final answer with one `\boxed{…}`.
    Boxed,
}

/// Arguments of `r1ctl judge`.
#[derive(Args)]
#[command(after_help = "\
Each line is one JSON object: {\"completion\": …} plus what it is judged against: \"answer\" (math; \
arithmetic with \"task\"), \
\"numbers\"+\"target\" or \"problem\" (countdown, arithmetic), \"tests\" (code), and optionally \
\"task\", \"language\", \"prompt\", \"extract\", \"format\". Blank lines are skipped. See docs/rewards.md \
and config/examples/judge.jsonl.

A line that cannot be scored (invalid JSON, a missing or unknown key, a wrong type, an inconsistent \
item) is reported on stderr with its line number; the other lines are still scored.

Exit status: 0 every line was scored; 2 some line could not be scored, or the input could not be read.")]
pub struct JudgeArgs {
    /// The JSONL file to score; `-` reads standard input.
    #[arg(default_value = "-", value_name = "FILE|-")]
    input: String,
    /// Where answers are read (answer_tag, boxed, free_text, auto); default: where the format
    /// style puts them. A line's own "extract" wins.
    #[arg(long, value_name = "MODE")]
    extract: Option<ExtractMode>,
    /// The format rewarded. A line's own "format" wins, whole: its missing keys take their
    /// defaults, not these options.
    #[arg(long, value_enum, default_value_t = StyleArg::AnswerTags)]
    format_style: StyleArg,
    /// The prompt template already ends in <think>: completions start inside the think block.
    #[arg(long)]
    prefilled_think: bool,
    /// Score the answer even when the format check fails (evaluating a model trained without the
    /// template); by default a malformed completion earns no accuracy.
    #[arg(long)]
    accuracy_without_format: bool,
    /// Weight of the accuracy reward in the total.
    #[arg(long, default_value_t = RewardWeights::R1_ZERO.accuracy, value_name = "W")]
    accuracy_weight: f32,
    /// Weight of the format reward in the total.
    #[arg(long, default_value_t = RewardWeights::R1_ZERO.format, value_name = "W")]
    format_weight: f32,
    /// Weight of the language-consistency share in the total (the paper's stage 3 uses 1).
    #[arg(long, default_value_t = RewardWeights::R1_ZERO.language, value_name = "W")]
    language_weight: f32,
    /// Wall-clock and CPU-time limit of each sandboxed code run, in seconds.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    code_timeout: u64,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

/// Widths of the table's columns, in characters; `why` is last and never cut.
const LINE_WIDTH: usize = 5;
const TASK_WIDTH: usize = 10;
const EXTRACTED_WIDTH: usize = 24;
const NUMBER_WIDTH: usize = 5;

/// Scores every line and prints it; returns the exit code (0, or 2 when a line was bad).
pub fn run(args: JudgeArgs) -> anyhow::Result<i32> {
    let rules = rules(&args);
    rules.weights.validate().context("checking the weights")?;
    if args.code_timeout == 0 {
        bail!("--code-timeout must be at least 1 second");
    }
    // Lines are scored one at a time, so one sandbox worker is enough; it starts only when a
    // code line comes.
    let sandbox = CodeSandbox::lazy(SandboxConfig {
        workers: 1,
        wall_timeout: Duration::from_secs(args.code_timeout),
        cpu_seconds: args.code_timeout,
        ..SandboxConfig::default()
    });

    let (source, mut reader): (&str, Box<dyn BufRead>) = if args.input == "-" {
        ("<stdin>", Box::new(io::stdin().lock()))
    } else {
        let file = File::open(&args.input).with_context(|| format!("opening {}", args.input))?;
        (args.input.as_str(), Box::new(BufReader::new(file)))
    };
    let mut out = io::stdout().lock();
    if let Output::Table = args.output {
        if !write_line(&mut out, &table_header())? {
            return Ok(0);
        }
    }

    let (mut scored, mut bad) = (0usize, 0usize);
    let mut bytes = Vec::new();
    for number in 1.. {
        bytes.clear();
        let read = reader
            .read_until(b'\n', &mut bytes)
            .with_context(|| format!("{source}: reading line {number}"))?;
        if read == 0 {
            break;
        }
        // The line ending is not part of the item: inside an unclosed string it would be
        // reported as a control character rather than as the line ending too early.
        let report = match std::str::from_utf8(&bytes) {
            Err(_) => Err("the line is not valid UTF-8".to_string()),
            Ok(line) if line.trim().is_empty() => continue,
            Ok(line) => judge_line(line.trim_end_matches(['\n', '\r']), &rules, &sandbox),
        };
        match report {
            Ok(report) => {
                scored += 1;
                let row = match args.output {
                    Output::Table => table_row(number, &report),
                    Output::Json => json_row(number, &report)?,
                };
                if !write_line(&mut out, &row)? {
                    return Ok(exit_code(bad));
                }
            }
            Err(message) => {
                bad += 1;
                eprintln!("r1ctl judge: {source}:{number}: {message}");
            }
        }
    }
    if bad > 0 {
        eprintln!(
            "r1ctl judge: {bad} of {} lines could not be scored",
            bad + scored
        );
    }
    Ok(exit_code(bad))
}

/// The rules the command line asks for.
fn rules(args: &JudgeArgs) -> RewardRules {
    RewardRules {
        weights: RewardWeights {
            accuracy: args.accuracy_weight,
            format: args.format_weight,
            language: args.language_weight,
        },
        format: FormatConfig {
            style: match args.format_style {
                StyleArg::AnswerTags => FormatStyle::AnswerTags,
                StyleArg::Boxed => FormatStyle::Boxed,
            },
            prefilled_think: args.prefilled_think,
        },
        extract: args.extract,
        accuracy_needs_format: !args.accuracy_without_format,
    }
}

/// 0 when every line was scored, 2 when some line was bad.
fn exit_code(bad: usize) -> i32 {
    if bad > 0 {
        2
    } else {
        0
    }
}

/// Writes one line of output and flushes it, so rows and the errors on stderr interleave in
/// order. `false` when the reader has gone (`r1ctl judge … | head`): stop quietly, as `cat` does.
fn write_line(out: &mut impl Write, line: &str) -> anyhow::Result<bool> {
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing to stdout"),
    }
}

/// Parses and scores one line; the error is a message for the user, without the file and line.
fn judge_line(
    line: &str,
    rules: &RewardRules,
    sandbox: &CodeSandbox,
) -> Result<RewardReport, String> {
    let item: RewardItem = serde_json::from_str(line).map_err(|e| describe_json_error(&e))?;
    score_item(&item, rules, sandbox).map_err(|e| e.to_string())
}

/// serde_json's message with its position moved to the front ("column 12: unknown field …"):
/// its own "at line 1" would contradict the file's line number printed before it.
fn describe_json_error(error: &serde_json::Error) -> String {
    let message = error.to_string();
    let message = message
        .rfind(" at line ")
        .map_or(message.as_str(), |at| &message[..at]);
    let kind = match error.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "invalid JSON: ",
        serde_json::error::Category::Data | serde_json::error::Category::Io => "",
    };
    format!("column {}: {kind}{message}", error.column())
}

fn table_header() -> String {
    format!(
        "{:>LINE_WIDTH$}  {:<TASK_WIDTH$}  {:<EXTRACTED_WIDTH$}  {:>NUMBER_WIDTH$}  {:>NUMBER_WIDTH$}  {:>NUMBER_WIDTH$}  {:>NUMBER_WIDTH$}  why",
        "line", "task", "extracted", "acc", "fmt", "lang", "total"
    )
}

fn table_row(number: usize, report: &RewardReport) -> String {
    let task = report.task.map_or("-", |t| t.name());
    let extracted = cell(report.extracted.as_deref().unwrap_or("-"), EXTRACTED_WIDTH);
    let language = report
        .language
        .as_ref()
        .map_or("-".to_string(), |l| format!("{:.2}", l.share));
    let reasons = report.reasons();
    // The reasons quote the candidate (a code test's output, say): escaped, never raw.
    let why = if reasons.is_empty() {
        "-".to_string()
    } else {
        printable(&reasons.join("; "), false)
    };
    format!(
        "{number:>LINE_WIDTH$}  {task:<TASK_WIDTH$}  {extracted:<EXTRACTED_WIDTH$}  {:>NUMBER_WIDTH$.2}  {:>NUMBER_WIDTH$.2}  {language:>NUMBER_WIDTH$}  {:>NUMBER_WIDTH$.2}  {why}",
        report.accuracy.reward, report.format.reward, report.total
    )
}

/// Model text fit for one table cell: line breaks and tabs shown as spaces, other control
/// characters escaped (a raw ESC or BEL would reach the terminal), cut to `width` characters
/// with an ellipsis.
fn cell(text: &str, width: usize) -> String {
    let flat = printable(text.trim(), false);
    if flat.chars().count() <= width {
        return flat;
    }
    let mut cut: String = flat.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// One JSON object per line: the line number, then every field of the report.
#[derive(Serialize)]
struct JsonRow<'a> {
    /// The line of the input the report is about.
    line: usize,
    /// Every component.
    #[serde(flatten)]
    report: &'a RewardReport,
    /// The reasons of the components that fell short, as the table shows them.
    why: Vec<String>,
}

fn json_row(number: usize, report: &RewardReport) -> anyhow::Result<String> {
    let row = JsonRow {
        line: number,
        report,
        why: report.reasons(),
    };
    serde_json::to_string(&row).with_context(|| format!("encoding the report of line {number}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_flat_and_cut() {
        assert_eq!(cell("a\nb\tc", 10), "a b c");
        assert_eq!(cell("abcdefgh", 5), "abcd…");
        assert_eq!(cell("数数数数数数", 4), "数数数…");
        assert_eq!(cell("  x  ", 3), "x");
    }

    #[test]
    fn a_candidates_escape_sequences_never_reach_the_table_raw() {
        // An answer and a wrong result that carry ESC, BEL and CSI sequences.
        let line = r#"{"completion": "<think>\u001b[2J</think><answer>\u001b]0;pwned\u0007 41\u001b[8m</answer>", "answer": "42"}"#;
        let sandbox = CodeSandbox::lazy(SandboxConfig::default());
        let rules = RewardRules::default();
        let report = judge_line(line, &rules, &sandbox).unwrap();
        let row = table_row(1, &report);
        assert!(
            !row.chars().any(|c| c.is_control()),
            "raw control characters in {row:?}"
        );
        assert!(row.contains("\\u{1b}"), "{row}");
        assert!(cell("a\u{1b}[31mb\u{7}", 40).contains("a\\u{1b}[31mb\\u{7}"));
    }

    #[test]
    fn json_errors_lose_serdes_line_number() {
        let error = serde_json::from_str::<RewardItem>(r#"{"completion": "x", "anwser": 1}"#)
            .err()
            .map(|e| describe_json_error(&e));
        let message = error.unwrap_or_default();
        assert!(
            message.starts_with("column 28: unknown field `anwser`"),
            "{message}"
        );
        assert!(!message.contains("line"), "{message}");
        let error = serde_json::from_str::<RewardItem>(r#"{"completion": "#)
            .err()
            .map(|e| describe_json_error(&e));
        assert_eq!(
            error.as_deref(),
            Some("column 15: invalid JSON: EOF while parsing a value")
        );
    }
}
