//! Checkpoints: exact round trip, bit-identical resume of GRPO training, damaged checkpoints
//! detected and skipped, a damaged one replaced by a new save of its step, transient I/O errors
//! retried, pruning.

use r1_actors::keeper::{
    checkpoint_dir, latest_good, list_checkpoints, load_checkpoint, prune, retry_transient,
    save_checkpoint, CheckpointError, TrainerState,
};
use r1_actors::learner::{GrpoLearner, LearnerConfig, Rollout};
use r1_kernels::bench::builtin_config;
use r1_kernels::model::Model;
use r1_kernels::train::{GrpoConfig, LrSchedule};

fn config() -> LearnerConfig {
    LearnerConfig {
        grpo: GrpoConfig {
            beta: 0.04,
            max_completion_length: 8,
            ..GrpoConfig::default()
        },
        group_size: 4,
        minibatches: 2,
        schedule: LrSchedule {
            peak_lr: 1e-2,
            warmup_steps: 2,
            total_steps: 6,
            min_lr_ratio: 0.1,
        },
        ref_refresh_steps: 2,
        ..LearnerConfig::default()
    }
}

/// Rollouts that differ per step, as a real run's do.
fn rollouts(step: u64) -> Vec<Rollout> {
    (0..8)
        .map(|i| Rollout {
            prompt_ids: vec![1 + (step as u32 % 5), 2, 3],
            completion_ids: vec![40 + i as u32, 41, 42 + (step as u32 % 3)],
            reward: ((i as u64 + step) % 3) as f64,
            truncated: false,
            sampler_logp: Vec::new(),
        })
        .collect()
}

fn state(learner: &GrpoLearner) -> TrainerState {
    TrainerState {
        step: learner.step,
        optimizer_step: learner.optimizer_step,
        data_cursor: learner.step * 2,
        seed: 7,
        config_hash: "test".into(),
        reward_normaliser: None,
    }
}

fn restore(dir: &std::path::Path) -> GrpoLearner {
    GrpoLearner::resume(load_checkpoint(dir).unwrap(), config())
}

#[test]
fn a_resumed_run_ends_bit_identical_to_an_uninterrupted_one() {
    let model = Model::random(builtin_config("tiny-qwen2").unwrap(), 5, 0.05);
    let mut straight = GrpoLearner::new(model.clone(), config());
    for step in 0..5 {
        straight.step(&rollouts(step)).unwrap();
    }

    let root = tempfile::tempdir().unwrap();
    let mut first = GrpoLearner::new(model, config());
    for step in 0..3 {
        first.step(&rollouts(step)).unwrap();
    }
    let dir = checkpoint_dir(root.path(), first.step);
    save_checkpoint(
        &dir,
        &first.policy,
        first.reference.as_ref(),
        &first.optimizer,
        &state(&first),
    )
    .unwrap();
    drop(first);
    let mut resumed = restore(&dir);
    assert_eq!(resumed.step, 3);
    for step in 3..5 {
        resumed.step(&rollouts(step)).unwrap();
    }
    let same = straight
        .policy
        .params
        .iter()
        .zip(&resumed.policy.params)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(
        same,
        "weights after resume differ from the uninterrupted run"
    );
    assert_eq!(straight.optimizer.m, resumed.optimizer.m);
    assert_eq!(straight.optimizer.v, resumed.optimizer.v);
}

#[test]
fn damaged_checkpoints_are_detected_and_skipped() {
    let model = Model::random(builtin_config("tiny-qwen2").unwrap(), 1, 0.05);
    let learner = GrpoLearner::new(model, config());
    let root = tempfile::tempdir().unwrap();
    let mut s = state(&learner);
    for step in [10, 20] {
        s.step = step;
        save_checkpoint(
            &checkpoint_dir(root.path(), step),
            &learner.policy,
            learner.reference.as_ref(),
            &learner.optimizer,
            &s,
        )
        .unwrap();
    }
    assert_eq!(
        list_checkpoints(root.path())
            .unwrap()
            .iter()
            .map(|c| c.0)
            .collect::<Vec<_>>(),
        vec![10, 20]
    );

    // Flip one byte of the newest checkpoint's weights.
    let newest = checkpoint_dir(root.path(), 20);
    let weights = newest.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&weights, &bytes).unwrap();
    let err = load_checkpoint(&newest).unwrap_err().to_string();
    assert!(
        err.contains("checksum mismatch") && err.contains("model.safetensors"),
        "{err}"
    );
    let (good, skipped) = latest_good(root.path()).unwrap();
    assert_eq!(good.unwrap().state.step, 10);
    assert_eq!(skipped.len(), 1);

    // A half-written checkpoint (no trainer.json) is not a checkpoint either.
    std::fs::remove_file(checkpoint_dir(root.path(), 10).join("trainer.json")).unwrap();
    let (none, skipped) = latest_good(root.path()).unwrap();
    assert!(none.is_none() && skipped.len() == 2);
}

#[test]
fn prune_keeps_the_newest_and_the_best() {
    let model = Model::random(builtin_config("tiny-qwen2").unwrap(), 1, 0.05);
    let learner = GrpoLearner::new(
        model,
        LearnerConfig {
            grpo: GrpoConfig {
                beta: 0.0,
                ..GrpoConfig::default()
            },
            ..config()
        },
    );
    let root = tempfile::tempdir().unwrap();
    let mut s = state(&learner);
    for step in 1..=5 {
        s.step = step;
        save_checkpoint(
            &checkpoint_dir(root.path(), step),
            &learner.policy,
            None,
            &learner.optimizer,
            &s,
        )
        .unwrap();
    }
    std::fs::create_dir(root.path().join("step-00000006.tmp")).unwrap();
    let best = checkpoint_dir(root.path(), 2);
    prune(root.path(), 2, Some(&best)).unwrap();
    let left: Vec<u64> = list_checkpoints(root.path())
        .unwrap()
        .iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(left, vec![2, 4, 5]);
    assert!(!root.path().join("step-00000006.tmp").exists());
    assert!(load_checkpoint(&checkpoint_dir(root.path(), 5))
        .unwrap()
        .reference
        .is_none());
}

#[test]
fn a_save_replaces_a_damaged_checkpoint_of_the_same_step() {
    // A resume skipped the damaged step-20 and took steps 11..=20 again: saving step 20 must
    // replace the damaged folder (rename(2) alone fails with "Directory not empty").
    let model = Model::random(builtin_config("tiny-qwen2").unwrap(), 3, 0.05);
    let learner = GrpoLearner::new(model, config());
    let root = tempfile::tempdir().unwrap();
    let mut s = state(&learner);
    s.step = 20;
    let dir = checkpoint_dir(root.path(), 20);
    save_checkpoint(
        &dir,
        &learner.policy,
        learner.reference.as_ref(),
        &learner.optimizer,
        &s,
    )
    .unwrap();
    let weights = dir.join("model.safetensors");
    let len = std::fs::metadata(&weights).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&weights)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    assert!(load_checkpoint(&dir).is_err());

    s.data_cursor = 99;
    save_checkpoint(
        &dir,
        &learner.policy,
        learner.reference.as_ref(),
        &learner.optimizer,
        &s,
    )
    .unwrap();
    let loaded = load_checkpoint(&dir).unwrap();
    assert_eq!((loaded.state.step, loaded.state.data_cursor), (20, 99));
    assert_eq!(loaded.model.params, learner.policy.params);
    let names: Vec<String> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["step-00000020"], "no .tmp or .old left behind");

    // A leftover of a crash between the two renames (the old copy moved aside) is cleaned up.
    std::fs::create_dir(root.path().join("step-00000020.old")).unwrap();
    prune(root.path(), 3, None).unwrap();
    assert!(!root.path().join("step-00000020.old").exists());
    assert!(load_checkpoint(&dir).is_ok());
}

#[test]
fn transient_io_errors_are_retried_a_bounded_number_of_times() {
    let transient = |errno| CheckpointError::Io {
        path: "x".into(),
        source: std::io::Error::from_raw_os_error(errno),
    };
    let wait = std::time::Duration::from_millis(1);
    // EMFILE twice, then success: the write succeeds on the third attempt.
    let mut calls = 0;
    let result = retry_transient(5, wait, || {
        calls += 1;
        if calls < 3 {
            Err(transient(libc::EMFILE))
        } else {
            Ok(calls)
        }
    });
    assert_eq!(result.unwrap(), 3);
    // ENOSPC for ever: it gives up after the bound, with the last error.
    let mut calls = 0;
    let result: Result<(), _> = retry_transient(4, wait, || {
        calls += 1;
        Err(transient(libc::ENOSPC))
    });
    assert_eq!(calls, 4);
    assert!(result.unwrap_err().is_transient());
    // A permanent error (EACCES) is not retried.
    let mut calls = 0;
    let result: Result<(), _> = retry_transient(4, wait, || {
        calls += 1;
        Err(transient(libc::EACCES))
    });
    assert_eq!(calls, 1);
    assert!(!result.unwrap_err().is_transient());
    for errno in [
        libc::EMFILE,
        libc::ENFILE,
        libc::ENOSPC,
        libc::EIO,
        libc::EINTR,
    ] {
        assert!(transient(errno).is_transient(), "errno {errno}");
    }
}
