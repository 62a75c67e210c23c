//! A run directory read here rather than through r1d: `r1ctl samples DIR` and `r1ctl steps DIR`
//! print an in-process run's `samples.jsonl` and `steps.jsonl` as they print a daemon run's
//! records, and `r1ctl report DIR` (re)writes its charts from `steps.jsonl`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;

use r1_actors::report::{
    read_samples, read_steps, write_step_charts, RecordsError, SAMPLES_FILE, STEPS_FILE,
};

use crate::remote::{print_samples, print_steps, CallError, Output, Remote};
use crate::terminal::printable;

/// `r1ctl report RUN_DIR`.
#[derive(Args)]
pub struct ReportArgs {
    /// The output directory of an in-process RL run (`r1ctl train` grpo or preference): its
    /// charts are (re)written there from its steps.jsonl.
    run_dir: PathBuf,
}

/// `RUN` names a run directory rather than a daemon run id: it has a path separator, or is a
/// directory here.
pub fn run_dir(run: &str) -> Option<PathBuf> {
    let path = Path::new(run);
    (run.contains(std::path::MAIN_SEPARATOR) || run.contains('/') || path.is_dir())
        .then(|| path.to_path_buf())
}

/// Whether run directory `dir` has the records file `name`; says why not on stderr (the caller
/// exits 1), and refuses a directory that is not there.
fn has_records(dir: &Path, name: &str) -> Result<bool, CallError> {
    let shown = printable(&dir.display().to_string(), false);
    if !dir.is_dir() {
        return Err(CallError::Usage(format!(
            "{shown}: no such run directory (give the output directory of an `r1ctl train` run, \
             or a daemon run id such as run-0001)"
        )));
    }
    if dir.join(name).is_file() {
        return Ok(true);
    }
    eprintln!(
        "r1ctl: {shown} has no {name}: grpo and preference runs of `r1ctl train` write \
         steps.jsonl and samples.jsonl into their output directory as they go, and an eval run \
         writes samples.jsonl beside eval.json; other stages record no samples"
    );
    Ok(false)
}

fn records_error(e: RecordsError) -> CallError {
    CallError::Other(e.to_string())
}

/// `r1ctl samples DIR`: the newest `limit` samples of `DIR/samples.jsonl`, newest last.
pub fn local_samples(dir: &Path, limit: usize, output: Output) -> Result<i32, CallError> {
    if !has_records(dir, SAMPLES_FILE)? {
        return Ok(1);
    }
    let samples = read_samples(dir).map_err(records_error)?;
    let newest = &samples[samples.len().saturating_sub(limit)..];
    if newest.is_empty() && output == Output::Table {
        eprintln!(
            "r1ctl: {} has recorded no samples yet",
            printable(&dir.display().to_string(), false)
        );
        return Ok(1);
    }
    print_samples(newest, output);
    Ok(0)
}

/// `r1ctl steps DIR`: at most `limit` records of `DIR/steps.jsonl` after step `after`.
pub fn local_steps(dir: &Path, after: u64, limit: usize, output: Output) -> Result<i32, CallError> {
    if !has_records(dir, STEPS_FILE)? {
        return Ok(1);
    }
    let steps: Vec<_> = read_steps(dir)
        .map_err(records_error)?
        .into_iter()
        .filter(|s| s.step > after)
        .take(limit)
        .collect();
    if steps.is_empty() && output == Output::Table {
        eprintln!(
            "r1ctl: {} has no step records after step {after}",
            printable(&dir.display().to_string(), false)
        );
        return Ok(1);
    }
    print_steps(&steps, output);
    Ok(0)
}

/// `r1ctl report DIR`: rewrites the step charts from `DIR/steps.jsonl` and prints their paths.
pub fn run(args: ReportArgs) -> anyhow::Result<i32> {
    let dir = &args.run_dir;
    if !has_records(dir, STEPS_FILE)? {
        return Ok(1);
    }
    let steps = read_steps(dir)?.len();
    let written = write_step_charts(dir, &[])
        .with_context(|| format!("writing the charts of {}", dir.display()))?;
    eprintln!(
        "r1ctl: {} charts of {steps} steps from {}",
        written.len(),
        dir.join(STEPS_FILE).display()
    );
    for path in written {
        println!("{}", path.display());
    }
    Ok(0)
}

/// `r1ctl samples|steps DIR` where DIR is a run's output directory: its records are read here,
/// not asked of r1d. `None` for every other command, and for a daemon run id.
pub fn local(command: &Remote) -> Option<anyhow::Result<i32>> {
    let result = match command {
        Remote::Steps {
            run,
            after,
            limit,
            conn,
        } => local_steps(&run_dir(run)?, *after, *limit, conn.output),
        Remote::Samples { run, limit, conn } => local_samples(&run_dir(run)?, *limit, conn.output),
        _ => return None,
    };
    Some(Ok(result.unwrap_or_else(|e| {
        eprintln!("r1ctl: {e}");
        e.exit_code()
    })))
}
