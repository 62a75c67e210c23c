//! `r1ctl generate` as a user runs it: greedy decoding of the transformers fixtures gives their
//! reference continuation, the embedded default's tiny byte model completes prompts from the
//! argument or stdin with any template, seeded sampling repeats, and bad input is exit 2 with a
//! message naming it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use r1_actors::stages::default_run::DefaultRunConfig;
use r1_kernels::model::{save_model_dir, Model};
use r1_kernels::tokenizer::Tokenizer;

/// Exit code, stdout and stderr of `r1ctl generate ARGS`, with `stdin` as its input.
fn generate(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_r1ctl"))
        .arg("generate")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("r1ctl did not start: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn fixture(name: &str) -> PathBuf {
    std::env::var_os("R1_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"))
        .join("models")
        .join(name)
}

/// The embedded default's tiny byte model (its shape, random weights), as `r1ctl run` saves it.
fn tiny_byte_model(dir: &Path) -> String {
    let config = DefaultRunConfig::default().model_config().unwrap();
    save_model_dir(&Model::random(config, 5, 0.05), dir).unwrap();
    dir.to_string_lossy().into_owned()
}

#[test]
fn greedy_output_is_the_fixtures_reference_continuation() {
    for name in ["tiny-qwen2", "tiny-qwen3"] {
        let dir = fixture(name);
        let dir_arg = dir.to_string_lossy().into_owned();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
        let ids = |key: &str| -> Vec<u32> {
            json["greedy"][key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        };
        let prompt: Vec<String> = ids("prompt_ids").iter().map(u32::to_string).collect();
        let want = ids("new_ids");
        let (code, stdout, stderr) = generate(
            &[
                dir_arg.as_str(),
                "--tokenizer",
                "byte",
                "--prompt-ids",
                &prompt.join(","),
                "--temperature",
                "0",
                "--max-new-tokens",
                &want.len().to_string(),
                "--ignore-eos",
            ],
            "",
        );
        assert_eq!(code, 0, "{name}: {stderr}");
        // The fixtures' 256 ids are bytes of the byte tokenizer; the streamed text adds up to the
        // decode of transformers' greedy ids.
        let text = Tokenizer::byte().decode(&want, false).unwrap();
        assert_eq!(stdout, format!("{text}\n"), "{name}");
        assert!(
            stderr.contains(&format!(
                "{} tokens, stopped at the length limit",
                want.len()
            )),
            "{stderr}"
        );
    }
}

#[test]
fn the_tiny_byte_model_completes_prompts_and_seeded_sampling_repeats() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_byte_model(&tmp.path().join("final"));
    let sampled = |seed: &str, template: &str| {
        let (code, stdout, stderr) = generate(
            &[
                model.as_str(),
                "--tokenizer",
                "byte",
                "--template",
                template,
                "--temperature",
                "1",
                "--seed",
                seed,
                "-n",
                "3",
                "--max-new-tokens",
                "24",
                "What is 2 + 3?",
            ],
            "",
        );
        assert_eq!(code, 0, "{stderr}");
        for sample in 0..3 {
            assert!(stderr.contains(&format!("sample {sample}: ")), "{stderr}");
        }
        stdout
    };
    // (The R1-Zero preamble alone is longer than this model's 128-token context.)
    let first = sampled("7", "chatml");
    assert!(!first.trim().is_empty(), "no text generated");
    assert_eq!(first, sampled("7", "chatml"), "same seed, same samples");
    assert_ne!(first, sampled("8", "chatml"), "another seed, other samples");
    assert_ne!(
        first,
        sampled("7", "plain"),
        "the template changes the prompt"
    );

    // The prompt from stdin is the prompt from the argument (a trailing newline dropped); without
    // a chat template the default is plain text.
    let greedy = |prompt_arg: Option<&str>, stdin: &str| {
        let mut args = vec![
            model.as_str(),
            "--tokenizer",
            "byte",
            "--temperature",
            "0",
            "--max-new-tokens",
            "12",
        ];
        args.extend(prompt_arg);
        let (code, stdout, stderr) = generate(&args, stdin);
        assert_eq!(code, 0, "{stderr}");
        assert!(stderr.contains("template: plain"), "{stderr}");
        stdout
    };
    assert_eq!(
        greedy(Some("Hello there"), ""),
        greedy(None, "Hello there\n")
    );
}

#[test]
fn bad_input_is_exit_2_with_a_message_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_byte_model(&tmp.path().join("m"));
    let model = model.as_str();
    let missing = tmp.path().join("no-such-model");
    let missing = missing.to_string_lossy().into_owned();
    let missing = missing.as_str();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![missing, "--tokenizer", "byte", "hi"], "no-such-model"),
        (vec![model, "--tokenizer", "byte"], "no prompt"),
        (
            vec![model, "--tokenizer", "byte", "--template", "alpaca", "hi"],
            "unknown prompt template `alpaca`",
        ),
        (
            vec![model, "--tokenizer", "sentencepiece", "hi"],
            "is not one r1 builds in",
        ),
        (
            vec![model, "--tokenizer", "byte", "--top-p", "0", "hi"],
            "top_p",
        ),
        (
            vec![model, "--tokenizer", "byte", "--prompt-ids", "5,99999"],
            "99999",
        ),
    ];
    for (args, needle) in cases {
        let (code, stdout, stderr) = generate(&args, "");
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: wanted `{needle}` in {stderr}"
        );
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
    }
}
