//! Distillation (the paper's small dense models): a teacher checkpoint generates samples, the
//! rejection filter keeps the correct readable ones, and a student model is fine-tuned on them.
//! The two halves are `run_rejection` (into `<output_dir>/teacher/`) and `run_sft` (into
//! `<output_dir>/student/`); a finished teacher half is not redone when the stage is run again,
//! and the student half resumes from its own checkpoints.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use r1_kernels::sample::SamplingParams;

use crate::data::DataSource;
use crate::judge::reward::RewardRules;
use crate::stages::job::{ModelSpec, RunError, RunSpec, StageEvent};
use crate::stages::rejection_stage::{
    run_rejection, summary_path, RejectionConfig, RejectionJob, RejectionRunReport,
};
use crate::stages::sft::{run_sft, SftConfig, SftJob, SftRunReport};

/// The distill stage's own settings (the job config's `[distill]` table); the teacher is the
/// job's `[model]`, sampling and filtering come from `[rejection]`, training from `[sft]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillConfig {
    /// The student's model directory (same tokenizer and template as the teacher).
    pub student: PathBuf,
}

/// Everything the distill stage needs.
#[derive(Debug, Clone)]
pub struct DistillJob {
    /// Seed, output, checkpoints (of the student).
    pub run: RunSpec,
    /// The teacher.
    pub teacher: ModelSpec,
    /// The student directory.
    pub distill: DistillConfig,
    /// The prompts.
    pub data: DataSource,
    /// The teacher's sampling.
    pub sampling: SamplingParams,
    /// Reward rules (accuracy decides what is kept).
    pub rules: RewardRules,
    /// Samples per prompt, filter.
    pub rejection: RejectionConfig,
    /// The student's training (its `data` is replaced by the teacher's set).
    pub sft: SftConfig,
}

/// What the distill stage did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistillRunReport {
    /// The teacher's half.
    pub teacher: RejectionRunReport,
    /// The student's half (`None` when the teacher's half was stopped).
    pub student: Option<SftRunReport>,
    /// Whether the stop flag ended it early.
    pub stopped: bool,
}

/// Runs (or continues) the distill stage; see the module doc.
pub fn run_distill(
    job: &DistillJob,
    progress: &mut dyn FnMut(StageEvent),
    stop: &AtomicBool,
) -> Result<DistillRunReport, RunError> {
    let teacher_dir = job.run.output_dir.join("teacher");
    let set = teacher_dir.join("sft.jsonl");
    let summary = summary_path(&set);
    let finished: Option<RejectionRunReport> = std::fs::read_to_string(&summary)
        .ok()
        .and_then(|text| serde_json::from_str::<RejectionRunReport>(&text).ok())
        .filter(|r| !r.stopped && set.exists());
    let teacher = match finished {
        Some(report) => {
            progress(StageEvent::Note {
                message: format!("teacher samples already in {}", set.display()),
            });
            report
        }
        None => run_rejection(
            &RejectionJob {
                run: RunSpec {
                    output_dir: teacher_dir.clone(),
                    ..job.run.clone()
                },
                model: job.teacher.clone(),
                data: job.data.clone(),
                sampling: job.sampling.clone(),
                rules: job.rules,
                rejection: RejectionConfig {
                    output: Some(set.clone()),
                    ..job.rejection.clone()
                },
            },
            progress,
            stop,
        )?,
    };
    if teacher.stopped {
        return Ok(DistillRunReport {
            teacher,
            student: None,
            stopped: true,
        });
    }
    if teacher.summary.kept == 0 {
        return Err(RunError::Invalid(format!(
            "the teacher {} kept no samples ({} seen, {} incorrect): nothing to distill",
            job.teacher.path.display(),
            teacher.summary.seen,
            teacher.summary.incorrect
        )));
    }
    let student = run_sft(
        &SftJob {
            run: RunSpec {
                output_dir: job.run.output_dir.join("student"),
                ..job.run.clone()
            },
            model: ModelSpec {
                path: job.distill.student.clone(),
                ..job.teacher.clone()
            },
            sft: SftConfig {
                data: Some(set),
                prompt_key: "prompt".into(),
                response_key: "response".into(),
                ..job.sft.clone()
            },
        },
        progress,
        stop,
    )?;
    let stopped = student.stopped;
    Ok(DistillRunReport {
        teacher,
        student: Some(student),
        stopped,
    })
}
