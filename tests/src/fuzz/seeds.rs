//! The generated part of the seed corpus (`r1-fuzz seed CORPUS`): tiny model directories
//! (safetensors, single and sharded, causal LM and reward model), tiny Llama GGUF files and the
//! tokenizer directories imported from them, Parquet datasets, and raw HTTP requests for every
//! route. Hand-written seeds (configs from `config/examples/`, JSONL lines, LaTeX answers) are
//! committed as they are; this only writes what is binary or derived.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use r1_kernels::model::tiny::TinyModel;
use r1_kernels::model::{
    save_model_dir, save_reward_model_dir, Architecture, Model, ModelConfig, RewardModel,
};

use super::http::{job_toml, raw_request, TOKEN, WORK};

type Result<T> = std::result::Result<T, String>;

/// The byte-level tiny Qwen2 the HTTP target trains for two steps (not a corpus seed: it is
/// written fresh for each run).
pub fn tiny_model(dir: &Path) -> Result<()> {
    TinyModel::byte()
        .save(dir)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A model small enough to keep in git (a few KB): width 8, one or two layers, vocabulary 24.
fn small_config(architecture: Architecture, layers: usize, tie: bool) -> ModelConfig {
    TinyModel::engine(architecture)
        .heads(2, 1)
        .hidden(8)
        .intermediate(16)
        .layers(layers)
        .vocab(24)
        .positions(64)
        .with(|c| c.tie_word_embeddings = tie)
        .into_config()
}

/// Writes every generated seed under `corpus/<target>/`.
pub fn write_generated(corpus: &Path) -> Result<()> {
    model_dirs(&corpus.join("model_dir"))?;
    let gguf_dir = corpus.join("gguf");
    std::fs::create_dir_all(&gguf_dir).map_err(|e| e.to_string())?;
    for (name, tie, quantised) in [
        ("tiny-llama-f32.gguf", true, false),
        ("tiny-llama-q8.gguf", false, true),
    ] {
        std::fs::write(gguf_dir.join(name), tiny_gguf(tie, quantised))
            .map_err(|e| e.to_string())?;
    }
    tokenizer_dirs(
        &gguf_dir.join("tiny-llama-f32.gguf"),
        &corpus.join("tokenizer"),
    )?;
    parquet_sets(&corpus.join("data"))?;
    http_requests(&corpus.join("http"))
}

/// A tensor bound for a shard: name, shape, little-endian f32 bytes.
type ShardTensor = (String, Vec<usize>, Vec<u8>);

fn model_dirs(out: &Path) -> Result<()> {
    let save = |name: &str, model: &Model| {
        save_model_dir(model, &out.join(name)).map_err(|e| format!("{name}: {e}"))
    };
    let qwen = Model::random(small_config(Architecture::Qwen2, 1, true), 1, 0.1);
    save("qwen2-tied", &qwen)?;
    save(
        "llama-untied-2layers",
        &Model::random(small_config(Architecture::Llama, 2, false), 2, 0.1),
    )?;
    let rm = RewardModel::from_causal_lm(&qwen, Some(1), 3, 0.1);
    save_reward_model_dir(&rm, &out.join("reward-qwen2")).map_err(|e| e.to_string())?;
    // The same Llama sharded in two files with an index, as large checkpoints come.
    let llama = Model::random(small_config(Architecture::Llama, 1, true), 4, 0.1);
    let dir = out.join("llama-sharded");
    save_model_dir(&llama, &dir).map_err(|e| e.to_string())?;
    std::fs::remove_file(dir.join("model.safetensors")).map_err(|e| e.to_string())?;
    let mut shards: [Vec<ShardTensor>; 2] = [Vec::new(), Vec::new()];
    let mut weight_map = serde_json::Map::new();
    for (i, slot) in llama.layout.slots.iter().enumerate() {
        let bytes: Vec<u8> = llama.params[slot.range()]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let shard = i % 2;
        shards[shard].push((slot.name.clone(), slot.shape.clone(), bytes));
        weight_map.insert(
            slot.name.clone(),
            serde_json::Value::String(format!("model-0000{}-of-00002.safetensors", shard + 1)),
        );
    }
    for (i, tensors) in shards.iter().enumerate() {
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .map(|(name, shape, bytes)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_>>()?;
        let bytes = safetensors::serialize(views, None).map_err(|e| e.to_string())?;
        std::fs::write(
            dir.join(format!("model-0000{}-of-00002.safetensors", i + 1)),
            bytes,
        )
        .map_err(|e| e.to_string())?;
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::to_vec_pretty(&index).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------
// A tiny GGUF v3 writer (the format as llama.cpp's gguf.py writes it).

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// One metadata value.
enum Meta {
    U32(u32),
    F32(f32),
    Bool(bool),
    Str(String),
    Strs(Vec<String>),
    I32s(Vec<i32>),
}

fn put_meta(out: &mut Vec<u8>, key: &str, value: &Meta) {
    put_str(out, key);
    match value {
        Meta::U32(v) => {
            out.extend(4u32.to_le_bytes());
            out.extend(v.to_le_bytes());
        }
        Meta::F32(v) => {
            out.extend(6u32.to_le_bytes());
            out.extend(v.to_le_bytes());
        }
        Meta::Bool(v) => {
            out.extend(7u32.to_le_bytes());
            out.push(u8::from(*v));
        }
        Meta::Str(s) => {
            out.extend(8u32.to_le_bytes());
            put_str(out, s);
        }
        Meta::Strs(items) => {
            out.extend(9u32.to_le_bytes());
            out.extend(8u32.to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            for s in items {
                put_str(out, s);
            }
        }
        Meta::I32s(items) => {
            out.extend(9u32.to_le_bytes());
            out.extend(5u32.to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            for v in items {
                out.extend(v.to_le_bytes());
            }
        }
    }
}

/// Q8_0 blocks of 32: an f16 scale and 32 signed bytes.
fn q8_0(xs: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for block in xs.chunks(32) {
        let amax = block.iter().fold(0f32, |m, x| m.max(x.abs()));
        let d = half::f16::from_f32(amax / 127.0);
        out.extend(d.to_le_bytes());
        let d = d.to_f32();
        for &x in block {
            let q = if d == 0.0 {
                0
            } else {
                (x / d).round().clamp(-127.0, 127.0) as i8
            };
            out.push(q as u8);
        }
    }
    out
}

/// A byte-level BPE vocabulary: three specials, the 256 byte characters, two merges.
fn vocabulary() -> (Vec<String>, Vec<i32>, Vec<String>) {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut extra = 0;
    let bytes: Vec<String> = (0..256u32)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).map(String::from).unwrap_or_default()
            } else {
                extra += 1;
                char::from_u32(255 + extra)
                    .map(String::from)
                    .unwrap_or_default()
            }
        })
        .collect();
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut types = vec![3; tokens.len()];
    tokens.extend(bytes);
    types.resize(tokens.len(), 1);
    tokens.extend(["hi".to_string(), "Ġhi".to_string()]);
    types.extend([1, 1]);
    (tokens, types, vec!["h i".into(), "Ġ hi".into()])
}

/// A tiny Llama GGUF: width 32 (Q8_0 needs rows of 32), one layer, the BPE vocabulary above;
/// `quantised` stores the matrices as Q8_0, else every tensor is F32.
pub fn tiny_gguf(tie: bool, quantised: bool) -> Vec<u8> {
    let (tokens, types, merges) = vocabulary();
    let config = ModelConfig {
        hidden_size: 32,
        intermediate_size: 32,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 8,
        vocab_size: tokens.len(),
        ..small_config(Architecture::Llama, 1, tie)
    };
    let model = Model::random(config, 9, 0.1);
    let meta = vec![
        ("general.architecture", Meta::Str("llama".into())),
        ("general.name", Meta::Str("fuzz-seed".into())),
        ("llama.context_length", Meta::U32(64)),
        ("llama.embedding_length", Meta::U32(32)),
        ("llama.block_count", Meta::U32(1)),
        ("llama.feed_forward_length", Meta::U32(32)),
        ("llama.attention.head_count", Meta::U32(4)),
        ("llama.attention.head_count_kv", Meta::U32(2)),
        ("llama.rope.freq_base", Meta::F32(10_000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Meta::F32(1e-5)),
        ("tokenizer.ggml.model", Meta::Str("gpt2".into())),
        ("tokenizer.ggml.pre", Meta::Str("smollm".into())),
        ("tokenizer.ggml.tokens", Meta::Strs(tokens)),
        ("tokenizer.ggml.token_type", Meta::I32s(types)),
        ("tokenizer.ggml.merges", Meta::Strs(merges)),
        ("tokenizer.ggml.bos_token_id", Meta::U32(1)),
        ("tokenizer.ggml.eos_token_id", Meta::U32(2)),
        ("tokenizer.ggml.add_bos_token", Meta::Bool(false)),
        (
            "tokenizer.chat_template",
            Meta::Str("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}".into()),
        ),
    ];
    let names: HashMap<&str, &str> = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ]
    .into_iter()
    .collect();
    let layer_names = [
        ("input_layernorm.weight", "attn_norm.weight"),
        ("self_attn.q_proj.weight", "attn_q.weight"),
        ("self_attn.k_proj.weight", "attn_k.weight"),
        ("self_attn.v_proj.weight", "attn_v.weight"),
        ("self_attn.o_proj.weight", "attn_output.weight"),
        ("post_attention_layernorm.weight", "ffn_norm.weight"),
        ("mlp.gate_proj.weight", "ffn_gate.weight"),
        ("mlp.up_proj.weight", "ffn_up.weight"),
        ("mlp.down_proj.weight", "ffn_down.weight"),
    ];
    // (name, GGUF dims fastest first, ggml type, bytes)
    let mut tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)> = Vec::new();
    for slot in &model.layout.slots {
        let name = names
            .get(slot.name.as_str())
            .map(|s| s.to_string())
            .or_else(|| {
                let rest = slot.name.strip_prefix("model.layers.")?;
                let (layer, tensor) = rest.split_once('.')?;
                let suffix = layer_names.iter().find(|(hf, _)| *hf == tensor)?.1;
                Some(format!("blk.{layer}.{suffix}"))
            });
        let Some(name) = name else { continue };
        let data = &model.params[slot.range()];
        let dims: Vec<u64> = slot.shape.iter().rev().map(|&d| d as u64).collect();
        let (ty, bytes) = if quantised && slot.shape.len() == 2 {
            (8u32, q8_0(data))
        } else {
            (0u32, data.iter().flat_map(|x| x.to_le_bytes()).collect())
        };
        tensors.push((name, dims, ty, bytes));
    }
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((meta.len() as u64).to_le_bytes());
    for (key, value) in &meta {
        put_meta(&mut out, key, value);
    }
    let mut offset = 0u64;
    for (name, dims, ty, bytes) in &tensors {
        put_str(&mut out, name);
        out.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            out.extend(d.to_le_bytes());
        }
        out.extend(ty.to_le_bytes());
        out.extend(offset.to_le_bytes());
        offset += (bytes.len() as u64).div_ceil(32) * 32;
    }
    for (_, _, _, bytes) in &tensors {
        out.resize(out.len().div_ceil(32) * 32, 0);
        out.extend(bytes);
    }
    out
}

/// Tokenizer directories: the JSON files `r1ctl model import` writes for the GGUF seed (its
/// weights left out), and a word-level one without a chat template.
fn tokenizer_dirs(gguf: &Path, out: &Path) -> Result<()> {
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let imported = scratch.path().join("imported");
    r1_kernels::model::gguf::import_to_dir(gguf, &imported).map_err(|e| e.to_string())?;
    let bpe = out.join("bpe-imported");
    std::fs::create_dir_all(&bpe).map_err(|e| e.to_string())?;
    for name in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "config.json",
    ] {
        std::fs::copy(imported.join(name), bpe.join(name)).map_err(|e| format!("{name}: {e}"))?;
    }
    let word = out.join("wordlevel");
    std::fs::create_dir_all(&word).map_err(|e| e.to_string())?;
    let tokenizer = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [
            {"id": 4, "content": "<|im_end|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
        ],
        "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "hello": 1, "world": 2, "!": 3, "<|im_end|>": 4}, "unk_token": "[UNK]"}
    });
    std::fs::write(
        word.join("tokenizer.json"),
        serde_json::to_vec_pretty(&tokenizer).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(
        word.join("tokenizer_config.json"),
        r#"{"eos_token": "<|im_end|>", "bos_token": null}"#,
    )
    .map_err(|e| e.to_string())
}

/// Parquet datasets: prompt/answer rows (one row group and two), preference pairs, labelled
/// responses (a boolean and a double column), and a nested group.
fn parquet_sets(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    let strings = |cols: &[&str]| -> String {
        cols.iter()
            .map(|c| format!("OPTIONAL BYTE_ARRAY {c} (UTF8); "))
            .collect()
    };
    write_parquet(
        &out.join("prompts.parquet"),
        &format!(
            "message set {{ {}}}",
            strings(&["prompt", "answer", "language"])
        ),
        &[
            vec![Cell::S("What is 2+2?"), Cell::S("4"), Cell::S("en")],
            vec![Cell::S("Compute 7*6."), Cell::S("42"), Cell::Null],
            vec![Cell::S("Solve x+1=3"), Cell::Null, Cell::S("fr")],
        ],
        2,
    )?;
    write_parquet(
        &out.join("pairs.parquet"),
        &format!(
            "message set {{ {}}}",
            strings(&["prompt", "chosen", "rejected"])
        ),
        &[
            vec![Cell::S("Say hi"), Cell::S("Hi!"), Cell::S("No.")],
            vec![Cell::S("Add 1+1"), Cell::S("2"), Cell::S("")],
        ],
        8,
    )?;
    write_parquet(
        &out.join("labels.parquet"),
        "message set { OPTIONAL BYTE_ARRAY prompt (UTF8); OPTIONAL BYTE_ARRAY response (UTF8); OPTIONAL BOOLEAN label; OPTIONAL DOUBLE score; OPTIONAL INT64 n; }",
        &[
            vec![Cell::S("q"), Cell::S("safe answer"), Cell::B(true), Cell::D(0.5), Cell::I(3)],
            vec![Cell::S("q2"), Cell::S("bad answer"), Cell::B(false), Cell::D(1e300), Cell::I(i64::MIN)],
        ],
        8,
    )?;
    write_parquet(
        &out.join("sft.parquet"),
        &format!("message set {{ {}}}", strings(&["prompt", "response"])),
        &[
            vec![
                Cell::S("1+1?"),
                Cell::S("<think>one and one</think><answer>2</answer>"),
            ],
            vec![Cell::S("ünï"), Cell::S("数学 🙂")],
        ],
        8,
    )
}

/// One Parquet cell.
enum Cell {
    S(&'static str),
    B(bool),
    D(f64),
    I(i64),
    Null,
}

/// Writes `rows` under `schema` (every column optional, one of the [`Cell`] types), `per_group`
/// rows per row group.
fn write_parquet(path: &Path, schema: &str, rows: &[Vec<Cell>], per_group: usize) -> Result<()> {
    use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    let e = |e: parquet::errors::ParquetError| format!("{}: {e}", path.display());
    let schema = Arc::new(parse_message_type(schema).map_err(e)?);
    let columns = rows.first().map_or(0, Vec::len);
    let file = std::fs::File::create(path).map_err(|err| format!("{}: {err}", path.display()))?;
    let mut writer =
        SerializedFileWriter::new(file, schema, Arc::new(WriterProperties::builder().build()))
            .map_err(e)?;
    for group_rows in rows.chunks(per_group) {
        let mut group = writer.next_row_group().map_err(e)?;
        for c in 0..columns {
            let levels: Vec<i16> = group_rows
                .iter()
                .map(|r| i16::from(!matches!(r[c], Cell::Null)))
                .collect();
            let mut col = group
                .next_column()
                .map_err(e)?
                .ok_or("fewer columns than cells")?;
            match group_rows
                .iter()
                .find(|r| !matches!(r[c], Cell::Null))
                .map(|r| &r[c])
            {
                Some(Cell::B(_)) => {
                    let values: Vec<bool> = group_rows
                        .iter()
                        .filter_map(|r| match r[c] {
                            Cell::B(b) => Some(b),
                            _ => None,
                        })
                        .collect();
                    col.typed::<BoolType>()
                        .write_batch(&values, Some(&levels), None)
                        .map_err(e)?;
                }
                Some(Cell::D(_)) => {
                    let values: Vec<f64> = group_rows
                        .iter()
                        .filter_map(|r| match r[c] {
                            Cell::D(d) => Some(d),
                            _ => None,
                        })
                        .collect();
                    col.typed::<DoubleType>()
                        .write_batch(&values, Some(&levels), None)
                        .map_err(e)?;
                }
                Some(Cell::I(_)) => {
                    let values: Vec<i64> = group_rows
                        .iter()
                        .filter_map(|r| match r[c] {
                            Cell::I(i) => Some(i),
                            _ => None,
                        })
                        .collect();
                    col.typed::<Int64Type>()
                        .write_batch(&values, Some(&levels), None)
                        .map_err(e)?;
                }
                _ => {
                    let values: Vec<ByteArray> = group_rows
                        .iter()
                        .filter_map(|r| match r[c] {
                            Cell::S(s) => Some(ByteArray::from(s)),
                            _ => None,
                        })
                        .collect();
                    col.typed::<ByteArrayType>()
                        .write_batch(&values, Some(&levels), None)
                        .map_err(e)?;
                }
            }
            col.close().map_err(e)?;
        }
        group.close().map_err(e)?;
    }
    writer.close().map_err(e)?;
    Ok(())
}

/// One raw request per route and method r1d serves, with the token, without, and wrong; bodies
/// for start (the tiny model's config, broken TOML, queueing), eval and controls.
fn http_requests(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    let start =
        serde_json::json!({"config_toml": job_toml(1), "source": "fuzz.toml", "base_dir": WORK})
            .to_string();
    let queued = serde_json::json!({"config_toml": job_toml(1), "base_dir": WORK, "queue": true})
        .to_string();
    let broken = serde_json::json!({"config_toml": "[run]\nname = \"x\"\nstage = \"grpo\"\nbogus = 1\n", "source": "bad.toml"}).to_string();
    let eval = serde_json::json!({"k": 1, "problems": 2, "greedy": true, "temperature": 0.6, "top_p": 0.95, "seed": 1}).to_string();
    let eval_step = serde_json::json!({"step": 1, "k": 2, "problems": 1}).to_string();
    let t = Some(TOKEN);
    let requests: Vec<(&str, String)> = vec![
        ("healthz", raw_request("GET", "/healthz", None, None)),
        ("metrics", raw_request("GET", "/metrics", t, None)),
        ("metrics-no-token", raw_request("GET", "/metrics", None, None)),
        ("runs", raw_request("GET", "/v1/runs", t, None)),
        ("runs-wrong-token", raw_request("GET", "/v1/runs", Some("wrong"), None)),
        ("start", raw_request("POST", "/v1/runs", t, Some(&start))),
        ("start-queued", raw_request("POST", "/v1/runs", t, Some(&queued))),
        ("start-bad-toml", raw_request("POST", "/v1/runs", t, Some(&broken))),
        ("start-no-token", raw_request("POST", "/v1/runs", None, Some(&start))),
        ("start-not-json", raw_request("POST", "/v1/runs", t, Some("{not json"))),
        ("run", raw_request("GET", "/v1/runs/run-0001", t, None)),
        ("run-unknown", raw_request("GET", "/v1/runs/run-9999", t, None)),
        ("steps", raw_request("GET", "/v1/runs/run-0001/steps?after=0&limit=10", t, None)),
        ("samples", raw_request("GET", "/v1/runs/run-0001/samples?limit=2", t, None)),
        ("checkpoints", raw_request("GET", "/v1/runs/run-0001/checkpoints", t, None)),
        ("checkpoint-config", raw_request("GET", "/v1/runs/run-0001/checkpoints/1/files/config.json", t, None)),
        ("checkpoint-trainer", raw_request("GET", "/v1/runs/run-0001/checkpoints/2/files/trainer.json", t, None)),
        ("checkpoint-traversal", raw_request("GET", "/v1/runs/run-0001/checkpoints/1/files/..%2f..%2ftoken", t, None)),
        ("eval", raw_request("POST", "/v1/runs/run-0001/eval", t, Some(&eval))),
        ("eval-step", raw_request("POST", "/v1/runs/run-0001/eval", t, Some(&eval_step))),
        ("evals", raw_request("GET", "/v1/runs/run-0001/evals", t, None)),
        ("pause", raw_request("POST", "/v1/runs/run-0001/pause", t, None)),
        ("resume", raw_request("POST", "/v1/runs/run-0001/resume", t, None)),
        ("stop", raw_request("POST", "/v1/runs/run-0001/stop", t, None)),
        ("control-unknown", raw_request("POST", "/v1/runs/run-0001/explode", t, None)),
        ("no-route", raw_request("DELETE", "/v1/nothing", t, None)),
        ("chunked", format!("POST /v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{{\"a\":\r\n0\r\n\r\n")),
        ("pipelined", format!("{}{}", raw_request("GET", "/healthz", None, None), raw_request("GET", "/v1/runs", t, None))),
    ];
    for (name, text) in requests {
        std::fs::write(out.join(format!("{name}.http")), text).map_err(|e| e.to_string())?;
    }
    Ok(())
}
