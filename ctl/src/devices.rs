//! `r1ctl devices`: the devices of this machine a `[devices]` table can name (`cpu`, `cuda:N`),
//! with their memory, and why CUDA is unavailable when it is — the list r1d answers at
//! `GET /v1/devices` and checks a run's placement against. A table, or JSON with `-o json`.

use clap::{Args, ValueEnum};

use r1_kernels::device::{self, DeviceList};
use r1_kernels::model::limits::format_bytes;

/// How the list is printed.
#[derive(Clone, Copy, ValueEnum)]
pub enum Output {
    /// One line per device.
    Table,
    /// The list as JSON (the shape of `GET /v1/devices`).
    Json,
}

/// Arguments of `r1ctl devices`.
#[derive(Args)]
#[command(
    after_help = "Exit status: 0 the list was printed (a machine without a GPU lists \
its CPU and says why there is no GPU); 2 an error."
)]
pub struct DevicesArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    output: Output,
}

/// The table: device, total and free memory, name; then why no GPU is listed, if none is.
fn table(list: &DeviceList) -> String {
    let mut text = format!("{:<8} {:>10} {:>10}  NAME\n", "DEVICE", "TOTAL", "FREE");
    for d in &list.devices {
        text += &format!(
            "{:<8} {:>10} {:>10}  {}\n",
            d.device.to_string(),
            format_bytes(d.total_bytes as f64),
            format_bytes(d.free_bytes as f64),
            d.name
        );
    }
    if let Some(why) = &list.cuda_unavailable {
        text += &format!("no CUDA device: {why}\n");
    } else if let Some(why) = &list.nccl_unavailable {
        text += &format!("no NCCL (GPU learner replicas all-reduce through host memory): {why}\n");
    }
    text
}

/// Prints the list; returns the exit code.
pub fn run(args: DevicesArgs) -> anyhow::Result<i32> {
    let list = device::list();
    match args.output {
        Output::Table => print!("{}", table(&list)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&list)?),
    }
    Ok(0)
}
