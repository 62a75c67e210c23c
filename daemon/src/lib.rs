//! r1d's library: the pieces of the training daemon that the binary wires together.
//!
//! - `api`: the HTTP API's JSON bodies (shared with `r1ctl`);
//! - `error`: the API's error (code, HTTP status, JSON body), shared by `server` and `runs`;
//! - `server`: the actix-web routes, bearer-token check, body limits;
//! - `runs`: the hub actor that owns the runs (one `Director` each) and records their events;
//! - `store`: the sled state store;
//! - `metrics`: the Prometheus registry behind `/metrics` (`device_metrics`: its per-device
//!   series);
//! - `notify`: systemd's notify protocol (readiness, stopping, status, watchdog);
//! - `inputs`: the files a job config names, checked before anything reads them;
//! - `exposure`: who can reach r1d and what it shares (listen address, token file, state
//!   folder, descriptor limit).

pub use r1_api as api;
pub mod device_metrics;
pub mod error;
pub mod exposure;
pub mod inputs;
pub mod metrics;
pub mod notify;
pub mod runs;
mod series;
pub mod server;
pub mod store;
