//! The `[devices]` table of a job config and the start-time check built on it: device strings
//! parsed and refused naming the key, a GPU the machine lacks refused before a run exists, `auto`
//! falling back to the CPU with a note, the learner arena estimate against the arena the
//! learner really plans, and an over-size run refused with its figures by category.

use std::path::Path;

use r1_actors::learner::{GrpoLearner, LearnerConfig, Rollout};
use r1_config::JobConfig;
use r1_kernels::bench::builtin_config;
use r1_kernels::device::memory::{cpu_activations_bytes, cpu_arena_floats, cpu_head_chunk_floats};
use r1_kernels::device::{Device, DeviceInfo, DeviceList};
use r1_kernels::model::limits::MemoryAvailable;
use r1_kernels::model::{save_model_dir, Model};

/// A GRPO config on a tiny model and a one-line data file written into `dir`, with `extra`
/// appended (a `[devices]` table).
fn config(dir: &Path, extra: &str) -> Result<JobConfig, String> {
    let model = dir.join("model");
    if !model.exists() {
        save_model_dir(
            &Model::random(builtin_config("tiny-qwen2").unwrap(), 1, 0.05),
            &model,
        )
        .unwrap();
        std::fs::write(
            dir.join("d.jsonl"),
            "{\"prompt\": \"1+1\", \"answer\": \"2\"}\n",
        )
        .unwrap();
    }
    let text = format!(
        "[run]\nname = \"t\"\nstage = \"grpo\"\noutput_dir = \"{out}\"\n\n[model]\npath = \"{model}\"\ntokenizer = \"byte\"\n\n[data]\nkind = \"jsonl\"\npath = \"{data}\"\n\n[learner]\ngroup_size = 4\nminibatches = 2\n\n[sampling]\nmax_new_tokens = 64\n\n[grpo]\nsteps = 2\nprompts_per_step = 2\nmax_batch = 8\n{extra}",
        out = dir.join("out").display(),
        model = model.display(),
        data = dir.join("d.jsonl").display(),
    );
    JobConfig::from_toml(&text, Path::new("job.toml")).map_err(|e| e.to_string())
}

/// A machine with only a CPU, and why it has no GPU.
fn cpu_only() -> DeviceList {
    DeviceList {
        devices: vec![DeviceInfo {
            device: Device::Cpu,
            name: "test CPU".into(),
            total_bytes: 64 << 30,
            free_bytes: 32 << 30,
        }],
        cuda_unavailable: Some("no CUDA driver (libcuda.so not found)".into()),
        nccl_unavailable: Some("no CUDA device".into()),
    }
}

#[test]
fn device_strings_parse_and_bad_ones_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), "").unwrap();
    assert_eq!(
        c.devices,
        r1_config::DevicesConfig::default(),
        "no table: all auto"
    );
    let c = config(
        dir.path(),
        "\n[devices]\nsampler = \"cuda:1\"\nlearner = \"cpu\"\nlearners = 2\nshard_optimizer = true\n",
    )
    .unwrap();
    assert_eq!(c.devices.sampler.to_string(), "cuda:1");
    assert_eq!((c.devices.learners, c.devices.shard_optimizer), (2, true));
    let err = config(dir.path(), "\n[devices]\nsampler = \"gpu:0\"\n").unwrap_err();
    assert!(
        err.starts_with("job.toml:")
            && err.contains("devices.sampler")
            && err.contains("`gpu:0` is not a device"),
        "{err}"
    );
    let err = config(dir.path(), "\n[devices]\nreward_model = \"cpu\"\n").unwrap_err();
    assert!(
        err.contains("reward_model") && err.contains("unknown field"),
        "{err}"
    );
    let err = config(dir.path(), "\n[devices]\nlearners = 0\n").unwrap_err();
    assert!(
        err.contains("job.toml: devices.learners: must be between 1 and"),
        "{err}"
    );
}

#[test]
fn a_gpu_the_machine_lacks_is_refused_and_auto_falls_back_to_the_cpu_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let plenty = MemoryAvailable {
        bytes: 32 << 30,
        source: "MemAvailable".into(),
    };
    let c = config(dir.path(), "\n[devices]\nlearner = \"cuda:0\"\n").unwrap();
    let err = c
        .check_resources_on(Path::new("job.toml"), &cpu_only(), Some(&plenty), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("job.toml: devices.learner: cuda:0 was asked for, but this machine has no usable GPU (no CUDA driver"),
        "{err}"
    );
    // Refused even for a queued run (no memory check): the device does not depend on what runs.
    assert!(c
        .check_resources_on(Path::new("job.toml"), &cpu_only(), None, None)
        .is_err());
    let err = config(
        dir.path(),
        "\n[devices]\nlearner = \"cpu\"\nlearners = 3\nsampler = \"cuda:0\"\n",
    )
    .unwrap()
    .check_resources_on(Path::new("job.toml"), &cpu_only(), None, None)
    .unwrap_err()
    .to_string();
    assert!(err.contains("devices.sampler"), "{err}");
    // NCCL where there is no GPU: refused naming the key; `auto` is host memory, silently.
    let err = config(
        dir.path(),
        "\n[devices]\nlearner = \"cpu\"\nlearners = 2\nall_reduce = \"nccl\"\n",
    )
    .unwrap()
    .check_resources_on(Path::new("job.toml"), &cpu_only(), None, None)
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("job.toml: devices.all_reduce: nccl needs every learner replica on a GPU"),
        "{err}"
    );
    let c = config(dir.path(), "\n[devices]\nlearners = 2\n").unwrap();
    let check = c
        .check_resources_on(Path::new("job.toml"), &cpu_only(), None, None)
        .unwrap();
    assert_eq!(
        check.placement.all_reduce,
        r1_kernels::device::AllReduce::Host
    );

    let c = config(dir.path(), "").unwrap();
    let check = c
        .check_resources_on(Path::new("job.toml"), &cpu_only(), Some(&plenty), None)
        .unwrap();
    assert_eq!(check.placement.devices(), [Device::Cpu]);
    assert!(
        check
            .placement
            .notes
            .iter()
            .any(|n| n.contains("no GPU found") && n.contains("running on the CPU")),
        "{:?}",
        check.placement.notes
    );
    let names: Vec<&str> = check.estimate.devices[0]
        .parts
        .iter()
        .map(|p| p.category.as_str())
        .collect();
    for category in [
        "weights",
        "gradients",
        "AdamW moments",
        "reference model",
        "activations",
        "KV cache",
        "decoding buffers",
    ] {
        assert!(names.contains(&category), "{category} in {names:?}");
    }
    // The sampler decodes the learner's weights on its device: no copy of its own.
    assert!(
        !names.contains(&"sampler's copy of the weights"),
        "{names:?}"
    );
}

#[test]
fn an_over_size_run_is_refused_with_its_figures_by_category() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), "").unwrap();
    let plenty = MemoryAvailable {
        bytes: 32 << 30,
        source: "MemAvailable".into(),
    };
    // R1_DEVICE_MEMORY_LIMIT = 1 MiB: the tiny run needs more.
    let err = c
        .check_resources_on(
            Path::new("job.toml"),
            &cpu_only(),
            Some(&plenty),
            Some(1 << 20),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.path: a grpo run on")
            && err.contains("does not fit on cpu: needs")
            && err.contains("weights ")
            && err.contains("AdamW moments ")
            && err.contains("activations ")
            && err.contains("KV cache ")
            && err.contains("1.0 MiB available (R1_DEVICE_MEMORY_LIMIT)"),
        "{err}"
    );
    // Without the cap it fits.
    c.check_resources_on(Path::new("job.toml"), &cpu_only(), Some(&plenty), None)
        .unwrap();
}

#[test]
fn the_learner_arena_estimate_is_the_arena_the_learner_plans() {
    let cfg = builtin_config("tiny-qwen2").unwrap();
    let config = LearnerConfig {
        group_size: 4,
        minibatches: 2,
        ..LearnerConfig::default()
    };
    let mut learner = GrpoLearner::new(Model::random(cfg.clone(), 7, 0.05), config);
    // Two groups of four: prompts of 10 tokens, completions of up to 20; two minibatches of
    // four rows of T = 10 + 20 - 1 positions.
    let rollouts: Vec<Rollout> = (0..8)
        .map(|i| Rollout {
            prompt_ids: (0..10).map(|k| (k * 7 + i) as u32 % 200).collect(),
            completion_ids: (0..(12 + i)).map(|k| (k * 3 + i) as u32 % 200).collect(),
            reward: (i % 2) as f64,
            truncated: false,
            sampler_logp: Vec::new(),
        })
        .collect();
    learner.step(&rollouts).unwrap();
    let (b, t) = (4, 10 + 19 - 1);
    let arena = learner.arena_bytes() as f64;
    // Exactly the f32 buffers and the head chunk the learner allocated: the head of the last
    // minibatch scored its completion tokens, 16 + 17 + 18 + 19.
    assert_eq!(
        (cpu_arena_floats(&cfg, b, t, false) + cpu_head_chunk_floats(&cfg, 16 + 17 + 18 + 19))
            * 4.0,
        arena
    );
    // The estimate takes every row's completion at its longest (19 tokens) and adds the u32
    // position tables and the RoPE table: within 2% above.
    let estimate = cpu_activations_bytes(&cfg, b, t, b * 19, false);
    assert!(
        estimate >= arena && estimate <= arena * 1.02,
        "estimate {estimate} vs arena {arena}"
    );
}
