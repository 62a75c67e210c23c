//! What a run leaves for people to read besides its checkpoints: charts of its step history and
//! evaluations, written beside `report.json`.

pub mod charts;

pub use charts::{write_run_charts, ChartError, EvalBars, StepPoint};
