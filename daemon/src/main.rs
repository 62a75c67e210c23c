//! r1d: the r1 training daemon.
//!
//! The daemon (actors, sled state, HTTP API, metrics) is not built yet. Until it is, `r1d` says so
//! plainly and exits with status 2 instead of pretending to run.

fn main() {
    eprintln!(
        "r1d {}: the training daemon is not implemented yet; today r1 provides the CPU engine \
         (r1-kernels) and `r1ctl bench`. See README.md.",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
