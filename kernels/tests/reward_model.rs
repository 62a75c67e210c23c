//! The reward model (sequence classification, scalar head): gradients by finite differences for
//! both architectures, batched scores equal to one-at-a-time scores, and scores equal to what
//! `transformers` computes from the directory r1 saved (kernels/tests/data/rm_reference.json,
//! written by scripts/rm_reference.py; run live too when `transformers` is importable).
//!
//! Regenerate the reference after a deliberate change to the model or its files:
//! `R1_WRITE_RM_REFERENCE=1 cargo test -p r1-kernels --test reward_model`.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use r1_kernels::cpu::Activations;
use r1_kernels::model::tiny::TinyModel;
use r1_kernels::model::{
    load_reward_model_dir, save_reward_model_dir, Architecture, ModelConfig, RewardModel,
};
use r1_kernels::tokenizer::ByteTokenizer;
use r1_kernels::train::reward::{pad_rows, reward_backward, reward_forward, score_positions};
use r1_kernels::train::{bradley_terry, pointwise_bce};

fn config(architecture: Architecture, hidden: usize, layers: usize, vocab: usize) -> ModelConfig {
    TinyModel::engine(architecture)
        .hidden(hidden)
        .intermediate(2 * hidden)
        .layers(layers)
        .vocab(vocab)
        .positions(256)
        .special(ByteTokenizer::EOS, Some(ByteTokenizer::BOS))
        .into_config()
}

/// Rewards of unpadded sequences, batched.
fn scores(rm: &RewardModel, rows: &[&[u32]]) -> Vec<f32> {
    let (ids, t) = pad_rows(rows, rm.pad_token_id);
    let positions = score_positions(rows, rm.pad_token_id);
    let mut acts = Activations::new(&rm.model, rows.len(), t);
    reward_forward(rm, &mut acts, &ids, &positions).unwrap()
}

/// A Bradley–Terry loss over (chosen, rejected) = rows (0, 1) and (2, 3) plus a point-wise loss
/// on row 4: every path of the head is exercised.
fn loss_and_grads(rm: &RewardModel, rows: &[&[u32]], grads: Option<&mut [f32]>) -> f64 {
    let (ids, t) = pad_rows(rows, rm.pad_token_id);
    let positions = score_positions(rows, rm.pad_token_id);
    let mut acts = Activations::new(&rm.model, rows.len(), t);
    let r = reward_forward(rm, &mut acts, &ids, &positions).unwrap();
    let bt = bradley_terry(&[r[0], r[2]], &[r[1], r[3]]);
    let pw = pointwise_bce(&[r[4]], &[0.0]);
    if let Some(grads) = grads {
        let d = [
            bt.d_first[0],
            bt.d_second[0],
            bt.d_first[1],
            bt.d_second[1],
            pw.d_first[0],
        ];
        reward_backward(rm, &mut acts, &ids, &positions, &d, grads).unwrap();
    }
    bt.loss + pw.loss
}

fn check_gradients(architecture: Architecture) {
    let mut rm = RewardModel::random(config(architecture, 32, 2, 64), Some(0), 11, 0.2);
    for slot in rm.model.layout.slots.clone() {
        if slot.name.ends_with("norm.weight") {
            for (i, p) in rm.model.params[slot.range()].iter_mut().enumerate() {
                *p = 0.8 + 0.01 * i as f32;
            }
        }
    }
    // Different lengths (one over the 64-row attention block), trailing pads on two rows.
    let long: Vec<u32> = (0..70).map(|i| (i * 7 + 3) % 63 + 1).collect();
    let rows: Vec<&[u32]> = vec![
        long.as_slice(),
        &[5, 9, 12, 0, 0],
        &[3, 4, 5, 6, 7, 8, 9],
        &[3, 4, 5, 6, 7, 8, 10],
        &[30, 31, 0],
    ];
    let mut grads = vec![0.0; rm.model.layout.total];
    loss_and_grads(&rm, &rows, Some(&mut grads));
    let eps = 1e-3f32;
    for slot in rm.model.layout.slots.clone() {
        let g = grads[slot.range()].to_vec();
        let norm = g.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        assert!(norm > 0.0, "{}: zero gradient", slot.name);
        let original = rm.model.params[slot.range()].to_vec();
        let at = |sign: f32, rm: &mut RewardModel| {
            for ((p, o), gi) in rm.model.params[slot.range()]
                .iter_mut()
                .zip(&original)
                .zip(&g)
            {
                *p = o + sign * eps * (*gi as f64 / norm) as f32;
            }
            loss_and_grads(rm, &rows, None)
        };
        let plus = at(1.0, &mut rm);
        let minus = at(-1.0, &mut rm);
        rm.model.params[slot.range()].copy_from_slice(&original);
        let numeric = (plus - minus) / (2.0 * eps as f64);
        let rel = (numeric - norm).abs() / norm;
        assert!(
            rel < 3e-2,
            "{architecture:?} {}: directional derivative {numeric}, |gradient| {norm}",
            slot.name
        );
    }
}

#[test]
fn qwen2_reward_gradients_match_finite_differences() {
    check_gradients(Architecture::Qwen2);
}

#[test]
fn llama_reward_gradients_match_finite_differences() {
    check_gradients(Architecture::Llama);
}

#[test]
fn a_padded_batch_scores_each_sequence_as_if_alone() {
    let rm = RewardModel::random(config(Architecture::Llama, 32, 2, 64), Some(0), 5, 0.2);
    let rows: Vec<&[u32]> = vec![&[1, 2, 3], &[4, 5, 6, 7, 8, 9, 10, 11], &[12, 13, 0]];
    let batched = scores(&rm, &rows);
    for (row, b) in rows.iter().zip(&batched) {
        let alone = scores(&rm, &[row])[0];
        assert!((alone - b).abs() < 1e-5, "alone {alone}, batched {b}");
    }
}

/// The reference model: Qwen2, hidden 64, 2 layers, the byte vocabulary, pad = EOS.
fn reference_model() -> RewardModel {
    RewardModel::random(
        config(Architecture::Qwen2, 64, 2, ByteTokenizer::VOCAB_SIZE),
        Some(ByteTokenizer::EOS),
        2024,
        0.1,
    )
}

fn sha256_hex(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn python_has_transformers() -> bool {
    Command::new("python3")
        .args(["-c", "import transformers, torch"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Compares r1's scores of the reference items with the JSON's, returns the worst difference.
fn compare(rm: &RewardModel, reference: &serde_json::Value) -> f32 {
    let items = reference["items"].as_array().expect("items");
    assert!(items.len() >= 5);
    let ids: Vec<Vec<u32>> = items
        .iter()
        .map(|item| {
            let text = item["text"].as_str().unwrap();
            let ids = ByteTokenizer.encode(text, false);
            let want: Vec<u32> = item["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(ids, want, "the script's byte encoding of {text:?}");
            ids
        })
        .collect();
    let rows: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let batched = scores(rm, &rows);
    let mut worst = 0f32;
    for ((item, row), b) in items.iter().zip(&rows).zip(&batched) {
        let alone = scores(rm, &[row])[0];
        for key in ["score", "score_batched"] {
            let want = item[key].as_f64().unwrap() as f32;
            worst = worst.max((alone - want).abs()).max((b - want).abs());
        }
    }
    worst
}

#[test]
fn transformers_loads_an_r1_reward_model_and_computes_the_same_scores() {
    let rm = reference_model();
    let dir = tempfile::tempdir().unwrap();
    save_reward_model_dir(&rm, dir.path()).unwrap();
    let reloaded = load_reward_model_dir(dir.path()).unwrap();
    assert!(reloaded.model.params == rm.model.params);

    let data = root().join("kernels/tests/data/rm_reference.json");
    let live = python_has_transformers();
    if live {
        let out = Command::new("python3")
            .arg(root().join("scripts/rm_reference.py"))
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "rm_reference.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if std::env::var_os("R1_WRITE_RM_REFERENCE").is_some() {
            std::fs::write(&data, &out.stdout).unwrap();
        }
        let reference: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let worst = compare(&rm, &reference);
        eprintln!("live transformers: worst |r1 - transformers| = {worst:e}");
        assert!(worst <= 1e-4, "live transformers differs by {worst}");
    } else {
        eprintln!("transformers is not importable: comparing with the committed reference only");
    }

    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&data).unwrap()).unwrap();
    for name in ["config.json", "model.safetensors"] {
        assert_eq!(
            reference["files"][name].as_str().unwrap(),
            sha256_hex(&dir.path().join(name)),
            "{name}: the committed reference was computed from other bytes than r1 saves now"
        );
    }
    let worst = compare(&rm, &reference);
    eprintln!("committed reference: worst |r1 - transformers| = {worst:e}");
    assert!(worst <= 1e-4, "committed reference differs by {worst}");
}
