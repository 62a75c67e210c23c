//! GGUF import: a synthetic Llama GGUF written here (every supported type, permuted q/k, a byte-level
//! BPE vocabulary) round-trips into the engine and a Hugging Face directory; corrupt, truncated and
//! inconsistent files give errors naming the file and key or tensor; and, when
//! `scripts/fetch-smollm2.sh` has fetched it, the real SmolLM2-135M-Instruct Q4_1 GGUF matches the
//! logits `transformers` computes from the same file (`scripts/gguf_reference.py`) and answers a chat
//! prompt.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use r1_kernels::cpu::{self, Activations};
use r1_kernels::model::gguf::{
    import_to_dir, load_llama, tokenizer_json, GgmlType, GgufError, GgufFile,
};
use r1_kernels::model::tiny::TinyModel;
use r1_kernels::model::{load_model_dir, Architecture, Model, ModelConfig};
use r1_kernels::sample::{GenerationRequest, Sampler, SamplingParams};
use r1_kernels::template::{Message, PromptTemplate, TemplateKind};
use r1_kernels::tokenizer::Tokenizer;
use r1_kernels::train::{AdamW, AdamWConfig, WeightedCrossEntropy};

// ---------------------------------------------------------------------------------------------
// A tiny GGUF writer.

/// One metadata value to write.
#[derive(Clone)]
enum Val {
    U32(u32),
    F32(f32),
    Bool(bool),
    Str(String),
    Strs(Vec<String>),
    I32s(Vec<i32>),
    /// A value type id and its raw bytes, for writing things a reader must refuse.
    Raw(u32, Vec<u8>),
}

/// One tensor to write: GGUF dims (fastest first), ggml type id and its stored bytes.
#[derive(Clone)]
struct RawTensor {
    name: String,
    dims: Vec<u64>,
    ty: u32,
    data: Vec<u8>,
}

/// Metadata and tensors, serialised by `bytes` as GGUF v3.
#[derive(Clone, Default)]
struct GgufWriter {
    kvs: Vec<(String, Val)>,
    tensors: Vec<RawTensor>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

impl GgufWriter {
    fn set(&mut self, key: &str, val: Val) {
        self.kvs.retain(|(k, _)| k != key);
        self.kvs.push((key.to_string(), val));
    }

    fn remove(&mut self, key: &str) {
        self.kvs.retain(|(k, _)| k != key);
    }

    fn tensor_mut(&mut self, name: &str) -> &mut RawTensor {
        self.tensors.iter_mut().find(|t| t.name == name).unwrap()
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kvs.len() as u64).to_le_bytes());
        for (key, val) in &self.kvs {
            put_str(&mut out, key);
            match val {
                Val::U32(v) => {
                    out.extend(4u32.to_le_bytes());
                    out.extend(v.to_le_bytes());
                }
                Val::F32(v) => {
                    out.extend(6u32.to_le_bytes());
                    out.extend(v.to_le_bytes());
                }
                Val::Bool(v) => {
                    out.extend(7u32.to_le_bytes());
                    out.push(u8::from(*v));
                }
                Val::Str(s) => {
                    out.extend(8u32.to_le_bytes());
                    put_str(&mut out, s);
                }
                Val::Strs(items) => {
                    out.extend(9u32.to_le_bytes());
                    out.extend(8u32.to_le_bytes());
                    out.extend((items.len() as u64).to_le_bytes());
                    for s in items {
                        put_str(&mut out, s);
                    }
                }
                Val::I32s(items) => {
                    out.extend(9u32.to_le_bytes());
                    out.extend(5u32.to_le_bytes());
                    out.extend((items.len() as u64).to_le_bytes());
                    for v in items {
                        out.extend(v.to_le_bytes());
                    }
                }
                Val::Raw(ty, bytes) => {
                    out.extend(ty.to_le_bytes());
                    out.extend(bytes);
                }
            }
        }
        // Each tensor's data starts on a 32-byte boundary (the default `general.alignment`).
        let mut offset = 0u64;
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend((t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(t.ty.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offset += (t.data.len() as u64).div_ceil(32) * 32;
        }
        for t in &self.tensors {
            out.resize(out.len().div_ceil(32) * 32, 0);
            out.extend(&t.data);
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Quantisers written from the format description, independent of the reader: each returns the
// stored bytes and the values a correct reader must give back.

fn f16_bytes(x: f32) -> ([u8; 2], f32) {
    let h = half::f16::from_f32(x);
    (h.to_le_bytes(), h.to_f32())
}

fn quantise(ty: GgmlType, xs: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let mut bytes = Vec::new();
    let mut back = Vec::new();
    match ty {
        GgmlType::F32 => {
            for &x in xs {
                bytes.extend(x.to_le_bytes());
                back.push(x);
            }
        }
        GgmlType::F16 => {
            for &x in xs {
                let (b, y) = f16_bytes(x);
                bytes.extend(b);
                back.push(y);
            }
        }
        GgmlType::BF16 => {
            for &x in xs {
                let h = half::bf16::from_f32(x);
                bytes.extend(h.to_le_bytes());
                back.push(h.to_f32());
            }
        }
        GgmlType::Q8_0 => {
            for block in xs.chunks(32) {
                let amax = block.iter().fold(0f32, |m, x| m.max(x.abs()));
                let (db, d) = f16_bytes(amax / 127.0);
                bytes.extend(db);
                for &x in block {
                    let q = if d == 0.0 {
                        0
                    } else {
                        (x / d).round().clamp(-127.0, 127.0) as i8
                    };
                    bytes.push(q as u8);
                    back.push(d * f32::from(q));
                }
            }
        }
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            for block in xs.chunks(32) {
                let (lo, hi) = block
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
                let (d, m) = if ty == GgmlType::Q4_0 {
                    let (db, d) = f16_bytes(lo.abs().max(hi.abs()) / 8.0);
                    bytes.extend(db);
                    (d, None)
                } else {
                    let (db, d) = f16_bytes((hi - lo) / 15.0);
                    let (mb, m) = f16_bytes(lo);
                    bytes.extend(db);
                    bytes.extend(mb);
                    (d, Some(m))
                };
                let q = |x: f32| -> u8 {
                    if d == 0.0 {
                        return 0;
                    }
                    match m {
                        None => ((x / d).round() + 8.0).clamp(0.0, 15.0) as u8,
                        Some(m) => ((x - m) / d).round().clamp(0.0, 15.0) as u8,
                    }
                };
                let value = |q: u8| match m {
                    None => d * (f32::from(q) - 8.0),
                    Some(m) => d * f32::from(q) + m,
                };
                let qs: Vec<u8> = block.iter().map(|&x| q(x)).collect();
                for j in 0..16 {
                    bytes.push(qs[j] | (qs[j + 16] << 4));
                }
                back.extend(qs.iter().map(|&q| value(q)));
            }
        }
        other => panic!("no quantiser for {other}"),
    }
    (bytes, back)
}

// ---------------------------------------------------------------------------------------------
// A synthetic Llama GGUF.

/// GPT-2's byte → printable character map (what byte-level BPE vocabularies are written in).
fn byte_chars() -> Vec<char> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut extra = 0;
    (0..256u32)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap()
            } else {
                extra += 1;
                char::from_u32(255 + extra).unwrap()
            }
        })
        .collect()
}

const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

fn tiny_vocab() -> (Vec<String>, Vec<i32>, Vec<String>) {
    let mut tokens: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    let mut types = vec![3; SPECIALS.len()];
    tokens.extend(byte_chars().into_iter().map(String::from));
    types.resize(tokens.len(), 1);
    let merges = vec!["h i".to_string(), "Ġ hi".to_string()];
    tokens.extend(["hi".to_string(), "Ġhi".to_string()]);
    types.extend([1, 1]);
    (tokens, types, merges)
}

fn tiny_config(vocab_size: usize) -> ModelConfig {
    TinyModel::engine(Architecture::Llama)
        .vocab(vocab_size)
        .special(2, Some(1))
        .with(|c| {
            c.rms_norm_eps = 1e-5;
            c.tie_word_embeddings = true;
        })
        .into_config()
}

/// llama.cpp's `permute` (convert_hf_to_gguf.py): reshape(heads, 2, hd/2, C).swapaxes(1, 2).
fn permute_rows(w: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    let hd = w.len() / (heads * cols);
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for two in 0..2 {
            for j in 0..hd / 2 {
                let src = (h * hd + two * hd / 2 + j) * cols;
                let dst = (h * hd + 2 * j + two) * cols;
                out[dst..dst + cols].copy_from_slice(&w[src..src + cols]);
            }
        }
    }
    out
}

/// A random tiny Llama written as GGUF with every supported type, and the parameters a correct
/// import must produce (the quantised values where a tensor is quantised).
fn synthetic() -> (GgufWriter, Model) {
    let (tokens, types, merges) = tiny_vocab();
    let config = tiny_config(tokens.len());
    let mut model = Model::random(config.clone(), 7, 0.1);
    let mut w = GgufWriter::default();
    w.set("general.architecture", Val::Str("llama".into()));
    w.set("general.name", Val::Str("synthetic".into()));
    w.set("llama.context_length", Val::U32(128));
    w.set("llama.embedding_length", Val::U32(32));
    w.set("llama.block_count", Val::U32(2));
    w.set("llama.feed_forward_length", Val::U32(64));
    w.set("llama.attention.head_count", Val::U32(4));
    w.set("llama.attention.head_count_kv", Val::U32(2));
    w.set("llama.rope.freq_base", Val::F32(10_000.0));
    w.set("llama.attention.layer_norm_rms_epsilon", Val::F32(1e-5));
    w.set("tokenizer.ggml.model", Val::Str("gpt2".into()));
    w.set("tokenizer.ggml.pre", Val::Str("smollm".into()));
    w.set("tokenizer.ggml.tokens", Val::Strs(tokens));
    w.set("tokenizer.ggml.token_type", Val::I32s(types));
    w.set("tokenizer.ggml.merges", Val::Strs(merges));
    w.set("tokenizer.ggml.bos_token_id", Val::U32(1));
    w.set("tokenizer.ggml.eos_token_id", Val::U32(2));
    w.set("tokenizer.ggml.add_bos_token", Val::Bool(false));

    let c = config.hidden_size;
    let add = |w: &mut GgufWriter,
               model: &mut Model,
               hf: &str,
               gguf: String,
               ty: GgmlType,
               heads: Option<usize>| {
        let slot = model.layout.slot(hf).unwrap().clone();
        let hf_values = model.params[slot.range()].to_vec();
        let stored = match heads {
            Some(h) => permute_rows(&hf_values, h, c),
            None => hf_values,
        };
        let (bytes, back) = quantise(ty, &stored);
        // What the import must give: the stored values, rows put back in Hugging Face order.
        let expected = match heads {
            Some(h) => {
                let mut out = vec![0f32; back.len()];
                let hd = back.len() / (h * c);
                for hh in 0..h {
                    for two in 0..2 {
                        for j in 0..hd / 2 {
                            let dst = (hh * hd + two * hd / 2 + j) * c;
                            let src = (hh * hd + 2 * j + two) * c;
                            out[dst..dst + c].copy_from_slice(&back[src..src + c]);
                        }
                    }
                }
                out
            }
            None => back,
        };
        model.params[slot.range()].copy_from_slice(&expected);
        w.tensors.push(RawTensor {
            name: gguf,
            dims: slot.shape.iter().rev().map(|&d| d as u64).collect(),
            ty: ty.0,
            data: bytes,
        });
    };
    add(
        &mut w,
        &mut model,
        "model.embed_tokens.weight",
        "token_embd.weight".into(),
        GgmlType::Q8_0,
        None,
    );
    for l in 0..config.num_layers {
        let hf = |s: &str| format!("model.layers.{l}.{s}");
        let g = |s: &str| format!("blk.{l}.{s}");
        add(
            &mut w,
            &mut model,
            &hf("input_layernorm.weight"),
            g("attn_norm.weight"),
            GgmlType::F32,
            None,
        );
        add(
            &mut w,
            &mut model,
            &hf("self_attn.q_proj.weight"),
            g("attn_q.weight"),
            GgmlType::F32,
            Some(4),
        );
        add(
            &mut w,
            &mut model,
            &hf("self_attn.k_proj.weight"),
            g("attn_k.weight"),
            GgmlType::F16,
            Some(2),
        );
        add(
            &mut w,
            &mut model,
            &hf("self_attn.v_proj.weight"),
            g("attn_v.weight"),
            GgmlType::BF16,
            None,
        );
        add(
            &mut w,
            &mut model,
            &hf("self_attn.o_proj.weight"),
            g("attn_output.weight"),
            GgmlType::Q4_1,
            None,
        );
        add(
            &mut w,
            &mut model,
            &hf("post_attention_layernorm.weight"),
            g("ffn_norm.weight"),
            GgmlType::F32,
            None,
        );
        add(
            &mut w,
            &mut model,
            &hf("mlp.gate_proj.weight"),
            g("ffn_gate.weight"),
            GgmlType::Q4_0,
            None,
        );
        add(
            &mut w,
            &mut model,
            &hf("mlp.up_proj.weight"),
            g("ffn_up.weight"),
            GgmlType::Q8_0,
            None,
        );
        add(
            &mut w,
            &mut model,
            &hf("mlp.down_proj.weight"),
            g("ffn_down.weight"),
            GgmlType::Q4_1,
            None,
        );
    }
    add(
        &mut w,
        &mut model,
        "model.norm.weight",
        "output_norm.weight".into(),
        GgmlType::F32,
        None,
    );
    (w, model)
}

const NAME: &str = "synthetic.gguf";

fn parse(w: &GgufWriter) -> Result<GgufFile, GgufError> {
    GgufFile::from_bytes(NAME, w.bytes())
}

fn import_error(bytes: Vec<u8>) -> Option<String> {
    let file = match GgufFile::from_bytes(NAME, bytes) {
        Ok(f) => f,
        Err(e) => return Some(e.to_string()),
    };
    if let Err(e) = load_llama(&file) {
        return Some(e.to_string());
    }
    tokenizer_json(&file).err().map(|e| e.to_string())
}

#[test]
fn a_synthetic_llama_imports_exactly_with_every_supported_type() {
    let (w, expected) = synthetic();
    let file = parse(&w).unwrap();
    assert_eq!(file.version, 3);
    assert_eq!(file.tensors.len(), 1 + 9 * 2 + 1);
    let model = load_llama(&file).unwrap();
    assert_eq!(model.config, expected.config);
    for slot in &model.layout.slots {
        assert_eq!(
            model.tensor(&slot.name),
            expected.tensor(&slot.name),
            "{}",
            slot.name
        );
    }
}

#[test]
fn the_exported_directory_loads_back_in_r1_with_its_tokenizer() {
    let (w, expected) = synthetic();
    let tmp = tempfile::tempdir().unwrap();
    let gguf = tmp.path().join(NAME);
    std::fs::write(&gguf, w.bytes()).unwrap();
    let out = tmp.path().join("hf");
    import_to_dir(&gguf, &out).unwrap();
    let reloaded = load_model_dir(&out).unwrap();
    assert_eq!(reloaded.config, expected.config);
    assert_eq!(reloaded.params, expected.params);

    let tokenizer = Tokenizer::from_model_dir(&out).unwrap();
    assert_eq!(tokenizer.vocab_size(), expected.config.vocab_size);
    assert_eq!(tokenizer.eos_ids(), &[2]);
    assert_eq!(tokenizer.bos_id(), Some(1));
    let (tokens, _, _) = tiny_vocab();
    let id = |t: &str| tokens.iter().position(|x| x == t).unwrap() as u32;
    // Merges apply ("hi", "Ġhi"), control tokens are single ids, digits split one by one.
    let ids = tokenizer
        .encode("<|im_start|>hi hi 42<|im_end|>", false)
        .unwrap();
    assert_eq!(
        ids,
        vec![1, id("hi"), id("Ġhi"), id("Ġ"), id("4"), id("2"), 2]
    );
    assert_eq!(
        tokenizer.decode(&ids, false).unwrap(),
        "<|im_start|>hi hi 42<|im_end|>"
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("tokenizer_config.json")).unwrap()).unwrap();
    assert!(config["chat_template"]
        .as_str()
        .unwrap()
        .contains("<|im_start|>"));
    assert_eq!(config["eos_token"], "<|im_end|>");
}

#[test]
fn truncated_files_are_errors_naming_the_file_at_every_length() {
    let (w, _) = synthetic();
    let bytes = w.bytes();
    let data_start = bytes.len()
        - w.tensors
            .iter()
            .map(|t| t.data.len().div_ceil(32) * 32)
            .sum::<usize>();
    // Every cut inside the header, metadata and tensor index, then a stride through the data.
    let cuts = (0..data_start + 64).chain((data_start + 64..bytes.len()).step_by(61));
    for cut in cuts {
        let message = import_error(bytes[..cut].to_vec())
            .unwrap_or_else(|| panic!("a file cut at {cut} of {} bytes imported", bytes.len()));
        assert!(message.contains(NAME), "cut {cut}: {message}");
    }
    let message = import_error(bytes[..bytes.len() - 1].to_vec()).unwrap();
    assert!(
        message.contains("blk.1.ffn_down.weight") || message.contains("output_norm.weight"),
        "{message}"
    );
}

#[test]
fn corrupted_bytes_never_panic() {
    let (w, _) = synthetic();
    let bytes = w.bytes();
    let header = 4096.min(bytes.len());
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..2000 {
        let mut corrupt = bytes.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % header as u64) as usize;
            corrupt[at] = next() as u8;
        }
        // Either outcome is fine; a panic or an abort on a huge allocation is not.
        let _ = import_error(corrupt);
    }
}

#[test]
fn header_errors_name_what_is_wrong() {
    let (w, _) = synthetic();
    let mut bytes = w.bytes();
    bytes[..4].copy_from_slice(b"GGML");
    let e = GgufFile::from_bytes(NAME, bytes.clone()).unwrap_err();
    assert!(matches!(e, GgufError::Magic { .. }), "{e}");
    assert!(e.to_string().contains(NAME));
    bytes[..4].copy_from_slice(b"GGUF");
    bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
    let e = GgufFile::from_bytes(NAME, bytes).unwrap_err();
    assert!(e.to_string().contains("version 1"), "{e}");

    // An array that claims more items than the file could hold is refused before allocating.
    let mut lie = GgufWriter::default();
    let mut raw = 0u32.to_le_bytes().to_vec();
    raw.extend((1u64 << 40).to_le_bytes());
    lie.set("general.huge", Val::Raw(9, raw));
    let e = parse(&lie).unwrap_err().to_string();
    assert!(
        e.contains("general.huge") && e.contains("cannot fit"),
        "{e}"
    );

    let mut bad = GgufWriter::default();
    bad.set("general.odd", Val::Raw(77, vec![0; 8]));
    let e = parse(&bad).unwrap_err().to_string();
    assert!(
        e.contains("general.odd") && e.contains("unknown value type 77"),
        "{e}"
    );
}

#[test]
fn unsupported_tensor_types_are_named_with_the_tensor() {
    for (ty, shown) in [(12u32, "Q4_K"), (99, "unknown ggml type 99")] {
        let (mut w, _) = synthetic();
        w.tensor_mut("blk.1.ffn_up.weight").ty = ty;
        let e = load_llama(&parse(&w).unwrap()).unwrap_err();
        assert!(matches!(e, GgufError::UnsupportedType { .. }), "{e}");
        let message = e.to_string();
        assert!(
            message.contains("blk.1.ffn_up.weight")
                && message.contains(shown)
                && message.contains(NAME),
            "{message}"
        );
    }
}

#[test]
fn metadata_that_disagrees_with_the_tensors_is_an_error_naming_it() {
    let expect = |w: &GgufWriter, needle: &str| {
        let message = import_error(w.bytes()).expect("import should fail");
        assert!(
            message.contains(needle) && message.contains(NAME),
            "wanted {needle}: {message}"
        );
    };
    let (base, _) = synthetic();

    let mut w = base.clone();
    w.set("llama.embedding_length", Val::U32(64));
    expect(&w, "token_embd.weight");

    let mut w = base.clone();
    w.set("llama.block_count", Val::U32(3));
    expect(&w, "blk.2.attn_norm.weight");

    let mut w = base.clone();
    w.remove("llama.feed_forward_length");
    expect(&w, "llama.feed_forward_length");

    let mut w = base.clone();
    w.set("llama.attention.head_count", Val::Str("four".into()));
    expect(&w, "llama.attention.head_count");

    let mut w = base.clone();
    w.set("llama.attention.head_count_kv", Val::U32(3));
    expect(&w, "llama.attention.head_count_kv");

    let mut w = base.clone();
    w.set("general.architecture", Val::Str("gpt2".into()));
    expect(&w, "gpt2");

    let mut w = base.clone();
    w.set("tokenizer.ggml.model", Val::Str("llama".into()));
    expect(&w, "tokenizer.ggml.model");

    let mut w = base.clone();
    w.set("tokenizer.ggml.eos_token_id", Val::U32(100_000));
    expect(&w, "tokenizer.ggml.eos_token_id");

    let mut w = base.clone();
    w.set("tokenizer.ggml.merges", Val::Strs(vec!["nospace".into()]));
    expect(&w, "tokenizer.ggml.merges");

    let mut w = base.clone();
    w.tensor_mut("blk.0.attn_q.weight").dims = vec![32, 33];
    expect(&w, "blk.0.attn_q.weight");

    // Q8_0 needs more bytes than the Q4_1 data stored: the read would run past the end.
    let mut w = base;
    w.tensor_mut("blk.1.ffn_down.weight").ty = GgmlType::Q8_0.0;
    expect(&w, "blk.1.ffn_down.weight");
}

// ---------------------------------------------------------------------------------------------
// Qwen3: the tiny-qwen3 fixture written as llama.cpp's converter writes a Qwen3 (`qwen3.*` keys,
// `attn_{q,k}_norm`, q/k rows NOT permuted: llama.cpp rotates Qwen halves as Hugging Face does).

fn tiny_qwen3_dir() -> PathBuf {
    std::env::var_os("R1_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"))
        .join("models/tiny-qwen3")
}

/// The fixture as an F32 Qwen3 GGUF (every tensor under its llama.cpp name), and the fixture.
fn qwen3_gguf() -> (GgufWriter, Model) {
    let model = load_model_dir(&tiny_qwen3_dir()).unwrap();
    let cfg = &model.config;
    let mut w = GgufWriter::default();
    w.set("general.architecture", Val::Str("qwen3".into()));
    for (key, value) in [
        ("context_length", cfg.max_position_embeddings),
        ("embedding_length", cfg.hidden_size),
        ("block_count", cfg.num_layers),
        ("feed_forward_length", cfg.intermediate_size),
        ("attention.head_count", cfg.num_heads),
        ("attention.head_count_kv", cfg.num_kv_heads),
        ("attention.key_length", cfg.head_dim),
        ("attention.value_length", cfg.head_dim),
    ] {
        w.set(&format!("qwen3.{key}"), Val::U32(value as u32));
    }
    w.set("qwen3.rope.freq_base", Val::F32(cfg.rope_theta as f32));
    w.set(
        "qwen3.attention.layer_norm_rms_epsilon",
        Val::F32(cfg.rms_norm_eps as f32),
    );
    w.set("tokenizer.ggml.model", Val::Str("gpt2".into()));
    w.set("tokenizer.ggml.pre", Val::Str("qwen2".into()));
    w.set(
        "tokenizer.ggml.tokens",
        Val::Strs(byte_chars().into_iter().map(String::from).collect()),
    );
    w.set("tokenizer.ggml.token_type", Val::I32s(vec![1; 256]));
    w.set("tokenizer.ggml.merges", Val::Strs(Vec::new()));
    w.set("tokenizer.ggml.bos_token_id", Val::U32(0));
    w.set("tokenizer.ggml.eos_token_id", Val::U32(1));
    let gguf_name = |hf: &str| -> String {
        let fixed = [
            ("model.embed_tokens.weight", "token_embd.weight"),
            ("model.norm.weight", "output_norm.weight"),
        ];
        if let Some((_, g)) = fixed.iter().find(|(h, _)| *h == hf) {
            return g.to_string();
        }
        let rest = hf.strip_prefix("model.layers.").unwrap();
        let (layer, tensor) = rest.split_once('.').unwrap();
        let suffix = match tensor {
            "input_layernorm.weight" => "attn_norm.weight",
            "self_attn.q_proj.weight" => "attn_q.weight",
            "self_attn.k_proj.weight" => "attn_k.weight",
            "self_attn.v_proj.weight" => "attn_v.weight",
            "self_attn.o_proj.weight" => "attn_output.weight",
            "self_attn.q_norm.weight" => "attn_q_norm.weight",
            "self_attn.k_norm.weight" => "attn_k_norm.weight",
            "post_attention_layernorm.weight" => "ffn_norm.weight",
            "mlp.gate_proj.weight" => "ffn_gate.weight",
            "mlp.up_proj.weight" => "ffn_up.weight",
            "mlp.down_proj.weight" => "ffn_down.weight",
            other => panic!("no GGUF name for {other}"),
        };
        format!("blk.{layer}.{suffix}")
    };
    for slot in &model.layout.slots {
        let (bytes, _) = quantise(GgmlType::F32, &model.params[slot.range()]);
        w.tensors.push(RawTensor {
            name: gguf_name(&slot.name),
            dims: slot.shape.iter().rev().map(|&d| d as u64).collect(),
            ty: GgmlType::F32.0,
            data: bytes,
        });
    }
    (w, model)
}

#[test]
fn a_qwen3_gguf_imports_as_the_hugging_face_model_with_the_same_logits() {
    let (w, fixture) = qwen3_gguf();
    let tmp = tempfile::tempdir().unwrap();
    let gguf = tmp.path().join("tiny-qwen3.gguf");
    std::fs::write(&gguf, w.bytes()).unwrap();
    let out = tmp.path().join("hf");
    let imported = import_to_dir(&gguf, &out).unwrap();
    assert_eq!(imported.config.architecture, Architecture::Qwen3);
    // head_dim 32 is not hidden/heads (16): it comes from qwen3.attention.key_length.
    assert_eq!(imported.config.head_dim, 32);
    // f32 rope_theta and eps in GGUF: the rest of the config is the fixture's.
    assert_eq!(
        ModelConfig {
            rope_theta: fixture.config.rope_theta,
            rms_norm_eps: fixture.config.rms_norm_eps,
            ..imported.config.clone()
        },
        fixture.config
    );
    assert_eq!(imported.params, fixture.params, "weights differ");
    let reloaded = load_model_dir(&out).unwrap();
    assert_eq!(reloaded.params, fixture.params);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "Qwen3ForCausalLM");

    // Same logits as the fixture itself (which tests/fixtures.rs checks against transformers).
    let ids: Vec<u32> = (0..12).map(|i| (i * 37 + 5) % 256).collect();
    let logits = |m: &Model| {
        let mut acts = Activations::new(m, 1, ids.len());
        cpu::forward(m, &mut acts, &ids).unwrap();
        cpu::logits(m, &acts)
    };
    let (a, b) = (logits(&reloaded), logits(&fixture));
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-5, "logits differ by {worst}");
}

#[test]
fn a_qwen3_gguf_without_its_q_norm_is_an_error_naming_the_tensor() {
    let (mut w, _) = qwen3_gguf();
    w.tensors.retain(|t| t.name != "blk.1.attn_q_norm.weight");
    let message = import_error(w.bytes()).expect("import should fail");
    assert!(message.contains("blk.1.attn_q_norm.weight"), "{message}");
    let (mut w, _) = qwen3_gguf();
    w.set("qwen3.attention.head_count_kv", Val::U32(3));
    let message = import_error(w.bytes()).expect("import should fail");
    assert!(
        message.contains("qwen3.attention.head_count_kv"),
        "{message}"
    );
}

// ---------------------------------------------------------------------------------------------
// The real model, when fetched.

const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn smollm2_path() -> Option<PathBuf> {
    let cache = std::env::var_os("R1_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/models"));
    let path = cache.join(SMOLLM2);
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "skipping: {} is absent; run scripts/fetch-smollm2.sh to fetch it",
            path.display()
        );
        None
    }
}

/// The real model imported once (to a temporary directory) and shared by the tests below.
struct Imported {
    dir: tempfile::TempDir,
    model: Model,
}

fn smollm2() -> Option<&'static Imported> {
    static IMPORTED: OnceLock<Option<Imported>> = OnceLock::new();
    IMPORTED
        .get_or_init(|| {
            let path = smollm2_path()?;
            let dir = tempfile::tempdir().unwrap();
            let model = import_to_dir(&path, dir.path()).unwrap();
            Some(Imported { dir, model })
        })
        .as_ref()
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn reference_json() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(data("smollm2_gguf_reference.json")).unwrap()).unwrap()
}

fn id_list(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn smollm2_logits_match_transformers_loading_the_same_gguf() {
    let Some(imported) = smollm2() else { return };
    let model = &imported.model;
    assert_eq!(
        (
            model.config.num_layers,
            model.config.hidden_size,
            model.config.num_heads,
            model.config.num_kv_heads,
            model.config.vocab_size
        ),
        (30, 576, 9, 3, 49152)
    );
    assert!(model.config.tie_word_embeddings);
    let bytes = std::fs::read(data("smollm2_gguf_reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ints = |name: &str| -> Vec<i64> {
        st.tensor(name)
            .unwrap()
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    let prompt: Vec<u32> = ints("prompt_ids").iter().map(|&i| i as u32).collect();
    let vocab_ids = ints("vocab_ids");
    let want: Vec<f32> = st
        .tensor("logits")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(want.len(), prompt.len() * vocab_ids.len());

    let mut acts = Activations::new(model, 1, prompt.len());
    cpu::forward(model, &mut acts, &prompt).unwrap();
    let logits = cpu::logits(model, &acts);
    let v = model.config.vocab_size;
    let mut max_err = 0f32;
    for t in 0..prompt.len() {
        for (k, &id) in vocab_ids.iter().enumerate() {
            let err = (logits[t * v + id as usize] - want[t * vocab_ids.len() + k]).abs();
            max_err = max_err.max(err);
        }
    }
    eprintln!(
        "SmolLM2 GGUF logits vs transformers: max abs error {max_err:e} over {} positions × {} ids",
        prompt.len(),
        vocab_ids.len()
    );
    assert!(max_err <= 1e-3, "max abs error {max_err}");

    // The exported directory holds exactly the imported parameters.
    let reloaded = load_model_dir(imported.dir.path()).unwrap();
    assert_eq!(reloaded.config, model.config);
    assert!(reloaded.params == model.params);
}

#[test]
fn smollm2_tokenizer_from_gguf_metadata_matches_transformers() {
    let Some(imported) = smollm2() else { return };
    let tokenizer = Tokenizer::from_model_dir(imported.dir.path()).unwrap();
    let reference = reference_json();
    assert_eq!(tokenizer.eos_ids(), &[2]);
    assert_eq!(tokenizer.bos_id(), Some(1));
    let prompt = reference["prompt"].as_str().unwrap();
    assert_eq!(
        tokenizer.encode(prompt, false).unwrap(),
        id_list(&reference["prompt_ids"])
    );
    for case in reference["tokenizer"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let ids = tokenizer.encode(text, false).unwrap();
        assert_eq!(ids, id_list(&case["ids"]), "{text:?}");
        assert_eq!(tokenizer.decode(&ids, false).unwrap(), text);
    }
}

#[test]
fn smollm2_answers_seven_times_eight_greedily() {
    let Some(imported) = smollm2() else { return };
    let tokenizer = Tokenizer::from_model_dir(imported.dir.path()).unwrap();
    let template = PromptTemplate::new(TemplateKind::ChatMl);
    let rendered = template
        .render(
            &[
                Message::system(
                    "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
                ),
                Message::user("What is 7 multiplied by 8?"),
            ],
            true,
        )
        .unwrap();
    let reference = reference_json();
    assert_eq!(rendered.text, reference["prompt"].as_str().unwrap());
    let prompt_ids = rendered.encode(&tokenizer).unwrap();
    let request = GenerationRequest {
        prompt_ids,
        samples: 1,
        seed: 0,
        params: SamplingParams {
            temperature: 0.0,
            max_new_tokens: 96,
            stop_token_ids: tokenizer.eos_ids().to_vec(),
            ..Default::default()
        },
    };
    let out = Sampler::new(&imported.model, 1)
        .generate(&[request], Some(&tokenizer))
        .unwrap();
    let text = out[0].text.clone().unwrap();
    eprintln!("SmolLM2 (imported GGUF, greedy): What is 7 multiplied by 8? → {text:?}");
    assert!(text.contains("56"), "{text}");
    // transformers' greedy continuation from the same GGUF, as far as it was recorded.
    let theirs = id_list(&reference["greedy_new_ids"]);
    let n = theirs.len().min(out[0].token_ids.len());
    assert_eq!(out[0].token_ids[..n], theirs[..n]);
}

#[test]
fn absurd_sizes_in_the_metadata_are_errors_not_allocations() {
    let (base, _) = synthetic();
    for (key, value) in [
        ("llama.embedding_length", u32::MAX - 3),
        ("llama.feed_forward_length", u32::MAX),
        ("llama.block_count", u32::MAX),
        ("llama.attention.key_length", u32::MAX - 1),
    ] {
        let mut w = base.clone();
        w.set(key, Val::U32(value));
        let message = import_error(w.bytes()).expect("import should fail");
        assert!(message.contains(NAME), "{key}: {message}");
    }
}

/// A header-only GGUF v3 (no metadata) claiming `tensors` tensor infos and `kvs` entries, followed
/// by `body`.
fn header(tensors: u64, kvs: u64, body: &[u8]) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(tensors.to_le_bytes());
    out.extend(kvs.to_le_bytes());
    out.extend(body);
    out
}

#[test]
fn a_billion_blocks_in_a_small_file_is_a_named_error_not_an_allocation() {
    // The crafted file of the report: block_count 1e9, and the one tensor the old check looked
    // for (the last block's attn_norm) present, so only the layout's 1e9 × 9 slots were left
    // to abort the import.
    let (mut w, _) = synthetic();
    w.set("llama.block_count", Val::U32(1_000_000_000));
    let mut last = w.tensor_mut("blk.1.attn_norm.weight").clone();
    last.name = "blk.999999999.attn_norm.weight".into();
    w.tensors.push(last);
    let message = import_error(w.bytes()).expect("import should fail");
    assert!(
        message.contains("llama.block_count")
            && message.contains("1000000000 is more than r1 accepts")
            && message.contains("would need")
            && message.contains(NAME),
        "{message}"
    );
    // Within the engine's bound but more blocks than the file has tensors for.
    let (mut w, _) = synthetic();
    w.set("llama.block_count", Val::U32(1000));
    let mut last = w.tensor_mut("blk.1.attn_norm.weight").clone();
    last.name = "blk.999.attn_norm.weight".into();
    w.tensors.push(last);
    let message = import_error(w.bytes()).expect("import should fail");
    assert!(
        message.contains("llama.block_count")
            && message.contains("1000 blocks need at least 9002 tensors"),
        "{message}"
    );
}

#[test]
fn counts_in_the_header_are_checked_against_the_file_length() {
    for (tensors, kvs, what) in [
        (0, u64::MAX, "metadata entries"),
        (1 << 40, 0, "tensor infos"),
        (1000, 0, "tensor infos"),
    ] {
        let message = GgufFile::from_bytes(NAME, header(tensors, kvs, &[0; 64]))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains(what) && message.contains("cannot fit") && message.contains(NAME),
            "{message}"
        );
    }
    // An array of strings counts at least 8 bytes per item, not 1.
    let mut lie = GgufWriter::default();
    let mut raw = 8u32.to_le_bytes().to_vec();
    raw.extend(64u64.to_le_bytes());
    raw.extend([0u8; 100]);
    lie.set("general.strings", Val::Raw(9, raw));
    let message = parse(&lie).unwrap_err().to_string();
    assert!(
        message.contains("general.strings") && message.contains("at least 8 bytes"),
        "{message}"
    );
}

#[test]
fn a_huge_metadata_array_is_refused_before_it_costs_gigabytes() {
    // 64 Mi u8 items: 64 MiB in the file, 2 GiB once each item is a parsed value.
    let n = 64usize << 20;
    let mut raw = 0u32.to_le_bytes().to_vec();
    raw.extend((n as u64).to_le_bytes());
    raw.resize(raw.len() + n, 7);
    let mut w = GgufWriter::default();
    w.set("general.blob", Val::Raw(9, raw));
    let message = parse(&w).unwrap_err().to_string();
    assert!(
        message.contains("general.blob") && message.contains("array items in all"),
        "{message}"
    );
}

#[test]
fn tensor_data_past_the_end_is_refused_when_the_file_is_opened() {
    let (mut w, _) = synthetic();
    let bytes = {
        w.tensor_mut("blk.0.ffn_up.weight").dims = vec![32, 1 << 40];
        w.bytes()
    };
    let message = GgufFile::from_bytes(NAME, bytes).unwrap_err().to_string();
    assert!(
        message.contains("blk.0.ffn_up.weight") && message.contains("past the end"),
        "{message}"
    );
}

#[test]
fn duplicate_names_among_many_tensors_are_found_in_linear_time() {
    // 200k tensor infos (no data) and a duplicate at the end: the old pairwise scan took
    // minutes here (13 s for 100k in the report); a set takes milliseconds. The generous bound
    // below only separates linear from quadratic, it is not a benchmark.
    let n = 200_000;
    let mut body = Vec::new();
    for i in 0..=n {
        let name = format!("t.{}", if i == n { 0 } else { i });
        body.extend((name.len() as u64).to_le_bytes());
        body.extend(name.as_bytes());
        body.extend(0u32.to_le_bytes()); // n_dims 0: one element
        body.extend(0u32.to_le_bytes()); // F32
        body.extend(0u64.to_le_bytes());
    }
    let began = std::time::Instant::now();
    let message = GgufFile::from_bytes(NAME, header(n as u64 + 1, 0, &body))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("tensor info `t.0`") && message.contains("appears twice"),
        "{message}"
    );
    assert!(
        began.elapsed() < std::time::Duration::from_secs(10),
        "{:?} for {n} tensors",
        began.elapsed()
    );
}

#[test]
fn smollm2_imported_directory_trains() {
    let Some(imported) = smollm2() else { return };
    // What training loads: the exported directory, not the in-memory import.
    let mut model = load_model_dir(imported.dir.path()).unwrap();
    let reference = reference_json();
    let prompt = id_list(&reference["prompt_ids"]);
    let answer = id_list(&reference["greedy_new_ids"]);
    let ids: Vec<u32> = prompt.iter().chain(&answer).copied().collect();
    let (inputs, targets) = (&ids[..ids.len() - 1], &ids[1..]);
    // Supervised on the answer tokens only, as SFT does.
    let mask: Vec<f32> = (0..targets.len())
        .map(|t| if t + 1 >= prompt.len() { 1.0 } else { 0.0 })
        .collect();
    let weights = WeightedCrossEntropy::mean_weights(&mask);
    let objective = WeightedCrossEntropy { weights: &weights };
    let mut opt = AdamW::new(
        AdamWConfig {
            weight_decay: 0.0,
            ..AdamWConfig::default()
        },
        model.layout.total,
    );
    let mut losses = Vec::new();
    for _ in 0..3 {
        let mut acts = Activations::new(&model, 1, inputs.len());
        cpu::forward(&model, &mut acts, inputs).unwrap();
        let mut grads = vec![0f32; model.layout.total];
        let out = cpu::head(
            &model,
            &mut acts,
            targets,
            Some(&objective),
            Some(&mut grads),
            false,
        )
        .unwrap();
        cpu::backward(&model, &mut acts, inputs, &mut grads).unwrap();
        assert!(grads.iter().all(|g| g.is_finite()));
        losses.push(out.loss);
        let layout = model.layout.clone();
        opt.update(&mut model.params, &grads, &layout, 1e-5);
    }
    eprintln!("SmolLM2 SFT on its own answer, 3 AdamW steps: losses {losses:?}");
    assert!(losses[2] < losses[0], "{losses:?}");
}
