//! What a run leaves for people to read besides its checkpoints: charts of its step history and
//! evaluations, written beside `report.json`, and the step and sample records (`steps.jsonl`,
//! `samples.jsonl`) of in-process runs.

pub mod charts;
pub mod records;

pub use charts::{write_run_charts, ChartError, EvalBars, StepPoint};
pub use records::{
    read_samples, read_steps, step_points, write_step_charts, RecordsError, RunRecords,
    SAMPLES_FILE, STEPS_FILE,
};
