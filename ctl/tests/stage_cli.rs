//! `r1ctl train` runs every stage from a config on a tiny byte model: sft → rejection → distill →
//! eval, and GRPO on a Parquet dataset; bad stage tables are refused with the file, line and key.

use std::path::Path;
use std::process::{Command, Output};

use r1_config::testkit::JobToml;
use r1_kernels::model::tiny::TinyModel;

fn tiny_model(dir: &Path, seed: u64) {
    TinyModel::byte().seed(seed).save(dir).unwrap();
}

fn train(config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_r1ctl"))
        .arg("train")
        .arg(config)
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A config for `stage` on `model`, writing to `dir/name`, `data` as the `[data]` table's lines,
/// with `tables` appended.
fn config(
    dir: &Path,
    name: &str,
    stage: &str,
    model: &Path,
    data: &str,
    tables: &str,
) -> std::path::PathBuf {
    JobToml::stage(stage, model)
        .set("run", "name", name)
        .set("run", "seed", 1)
        .set_path("run", "output_dir", &dir.join(name))
        .lines("data", data)
        .set("sampling", "temperature", 0.0)
        .set("sampling", "max_new_tokens", 40)
        .append(tables)
        .write(&dir.join(format!("{name}.toml")))
        .unwrap()
}

#[test]
fn every_stage_runs_from_a_config() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = d.join("base");
    tiny_model(&base, 3);
    let line = r#"{"prompt": "7?", "response": "<think>7</think><answer>7</answer>"}"#;
    std::fs::write(d.join("sft.jsonl"), format!("{line}\n").repeat(8)).unwrap();
    std::fs::write(
        d.join("q.jsonl"),
        "{\"prompt\": \"7?\", \"answer\": \"7\"}\n{\"prompt\": \"7?\", \"answer\": \"8\"}\n",
    )
    .unwrap();
    let data = format!(
        "kind = \"jsonl\"\npath = \"{}\"",
        d.join("q.jsonl").display()
    );

    // sft: the teacher memorises "7?" → 7.
    let sft = config(
        d,
        "sft",
        "sft",
        &base,
        &data,
        &format!(
            "[sft]\ndata = \"{}\"\nepochs = 6\nbatch_size = 4\npack_length = 128\nlr = 3e-3\nwarmup_steps = 2\n\n[checkpoint]\nevery_steps = 5\nkeep_last = 1\n",
            d.join("sft.jsonl").display()
        ),
    );
    let out = ok(train(&sft));
    assert_eq!(
        out.lines().filter(|l| l.starts_with("step")).count(),
        12,
        "{out}"
    );
    assert!(out.contains("final model:"), "{out}");
    let teacher = d.join("sft/final");
    assert!(teacher.join("model.safetensors").exists());

    // rejection: the JSONL set with provenance, and its summary.
    let rejection = config(
        d,
        "rejection",
        "rejection",
        &teacher,
        &data,
        "[rejection]\nsamples_per_prompt = 2\nkeep_per_prompt = 1\n",
    );
    let out = ok(train(&rejection));
    assert!(out.contains("1 kept, 2 incorrect"), "{out}");
    let set = std::fs::read_to_string(d.join("rejection/sft.jsonl")).unwrap();
    let record: serde_json::Value = serde_json::from_str(set.lines().next().unwrap()).unwrap();
    assert_eq!(record["source_line"], 1);
    assert_eq!(record["source_checkpoint"], teacher.display().to_string());
    assert!(d.join("rejection/sft.summary.json").exists());

    // distill: teacher samples → a fresh student.
    let student = d.join("student");
    tiny_model(&student, 9);
    let distill = config(
        d,
        "distill",
        "distill",
        &teacher,
        &data,
        &format!(
            "[distill]\nstudent = \"{}\"\n\n[rejection]\nsamples_per_prompt = 2\n\n[sft]\nepochs = 30\nbatch_size = 1\nlr = 3e-3\n",
            student.display()
        ),
    );
    let out = ok(train(&distill));
    assert!(out.contains("teacher kept 1 of 4"), "{out}");
    assert!(
        d.join("distill/student/final/model.safetensors").exists(),
        "{out}"
    );

    // eval: greedy, the table and the JSON report.
    let eval = config(
        d,
        "eval",
        "eval",
        &d.join("distill/student/final"),
        &data,
        "[eval]\ngreedy = true\n",
    );
    let out = ok(train(&eval));
    assert!(out.contains("pass@1") && out.contains("greedy"), "{out}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("eval/eval.json")).unwrap()).unwrap();
    assert_eq!(report["datasets"][0]["scores"]["pass_at_1"], 0.5);
}

#[test]
fn grpo_runs_on_a_parquet_dataset() {
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = d.join("model");
    tiny_model(&model, 4);
    let path = d.join("math.parquet");
    let schema = Arc::new(
        parse_message_type(
            "message m { REQUIRED BYTE_ARRAY problem (UTF8); REQUIRED BYTE_ARRAY solution (UTF8); }",
        )
        .unwrap(),
    );
    let mut writer = SerializedFileWriter::new(
        std::fs::File::create(&path).unwrap(),
        schema,
        Arc::new(WriterProperties::builder().build()),
    )
    .unwrap();
    let mut group = writer.next_row_group().unwrap();
    for values in [["1+1?", "2+2?", "3+3?"], ["2", "4", "6"]] {
        let mut col = group.next_column().unwrap().unwrap();
        let values: Vec<ByteArray> = values.iter().map(|v| ByteArray::from(*v)).collect();
        col.typed::<ByteArrayType>()
            .write_batch(&values, None, None)
            .unwrap();
        col.close().unwrap();
    }
    group.close().unwrap();
    writer.close().unwrap();
    let grpo = config(
        d,
        "grpo",
        "grpo",
        &model,
        &format!(
            "kind = \"parquet\"\npath = \"{}\"\nfields = {{ prompt = \"problem\", answer = \"solution\" }}",
            path.display()
        ),
        "[learner]\ngroup_size = 2\nminibatches = 1\n\n[learner.schedule]\npeak_lr = 1e-3\nwarmup_steps = 0\ntotal_steps = 0\nmin_lr_ratio = 1.0\n\n[grpo]\nsteps = 2\nprompts_per_step = 2\nmax_batch = 4\ndynamic_sampling = 1\n\n[checkpoint]\nevery_steps = 1\nkeep_last = 1\n",
    );
    // Greedy samples are all alike: every group is flat, so dynamic sampling resamples.
    std::fs::write(
        &grpo,
        std::fs::read_to_string(&grpo).unwrap().replace(
            "temperature = 0.0\nmax_new_tokens = 40",
            "temperature = 1.0\nmax_new_tokens = 8",
        ),
    )
    .unwrap();
    let out = ok(train(&grpo));
    assert_eq!(
        out.lines().filter(|l| l.starts_with("step")).count(),
        2,
        "{out}"
    );
    assert!(out.contains("resampled"), "{out}");
    assert!(d.join("grpo/final/model.safetensors").exists());
}

#[test]
fn bad_stage_tables_are_refused_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = d.join("model");
    let data = "kind = \"builtin\"\ntask = \"arithmetic\"";
    let bad = config(
        d,
        "bad",
        "sft",
        &model,
        data,
        "[sft]\ndata = \"x.jsonl\"\nepoch = 2\n",
    );
    let out = train(&bad);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:22:1: sft.epoch"), "{err}");

    let bad = config(d, "bad2", "distill", &model, data, "");
    let out = train(&bad);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("[distill]"));

    // A dataset line with nothing to judge against is named by file and line.
    std::fs::write(d.join("q.jsonl"), "{\"prompt\": \"a\"}\n").unwrap();
    tiny_model(&model, 1);
    let bad = config(
        d,
        "bad3",
        "rejection",
        &model,
        &format!(
            "kind = \"jsonl\"\npath = \"{}\"",
            d.join("q.jsonl").display()
        ),
        "",
    );
    let out = train(&bad);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("q.jsonl:1") && err.contains("neither"),
        "{err}"
    );
}

#[test]
fn the_preference_stage_runs_from_a_config_with_a_reward_model_r1ctl_trained() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = d.join("base");
    tiny_model(&base, 3);

    // A reward model trained by `r1ctl rm train` from the shipped example (paths made absolute).
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/rm");
    let rm_config = d.join("rm.toml");
    std::fs::write(
        &rm_config,
        std::fs::read_to_string(examples.join("tiny-pairs.toml"))
            .unwrap()
            .replace(
                "\"runs/rm-tiny\"",
                &format!("\"{}\"", d.join("rm").display()),
            )
            .replace(
                "\"config/examples/rm/tiny-pairs.jsonl\"",
                &format!("\"{}\"", examples.join("tiny-pairs.jsonl").display()),
            )
            .replace("epochs = 4", "epochs = 1"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_r1ctl"))
        .args(["rm", "train"])
        .arg(&rm_config)
        .output()
        .unwrap();
    ok(out);
    assert!(d.join("rm/final/config.json").exists());

    std::fs::write(
        d.join("q.jsonl"),
        "{\"prompt\": \"2+3\", \"answer\": \"5\"}\n{\"prompt\": \"4+4\", \"answer\": \"8\"}\n",
    )
    .unwrap();
    std::fs::write(
        d.join("general.jsonl"),
        "{\"request\": {\"text\": \"greet Ada\"}}\n{\"request\": {\"text\": \"greet Bo\"}}\n",
    )
    .unwrap();
    let data = format!(
        "kind = \"jsonl\"\npath = \"{}\"",
        d.join("q.jsonl").display()
    );
    let tables = format!(
        "[learner]\ngroup_size = 2\nminibatches = 1\n\n[grpo]\nsteps = 3\nprompts_per_step = 4\nmax_batch = 8\n\n\
         [preference]\npreference_from_step = 1\ngeneral_prompts = \"{general}\"\ngeneral_prompt_field = \"request.text\"\n\
         general_share = 0.5\n\n[[preference.reward_models]]\nname = \"helpfulness\"\npath = \"{rm}\"\n\
         tokenizer = \"byte\"\nview = \"whole\"\nmax_tokens = 128\n",
        general = d.join("general.jsonl").display(),
        rm = d.join("rm/final").display(),
    );
    let pref = config(d, "pref", "preference", &base, &data, &tables);
    let out = ok(train(&pref));
    let steps: Vec<&str> = out.lines().filter(|l| l.starts_with("step")).collect();
    assert_eq!(steps.len(), 3, "{out}");
    assert!(
        steps[0].contains("(off)") && steps[2].contains("(on)"),
        "{out}"
    );
    assert!(steps.iter().all(|l| l.contains("helpfulness")), "{out}");
    assert!(d.join("pref/final/model.safetensors").exists(), "{out}");

    // A reward model that is not there: the error names it and its directory.
    let missing = config(
        d,
        "pref-missing",
        "preference",
        &base,
        &data,
        &tables.replace(&d.join("rm/final").display().to_string(), "/no/such/rm"),
    );
    let out = train(&missing);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("reward model `helpfulness`") && err.contains("/no/such/rm"),
        "{err}"
    );
}
