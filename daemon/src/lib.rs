//! r1d's library: the pieces of the training daemon that the binary wires together.
//!
//! - `api`: the HTTP API's JSON bodies (shared with `r1ctl`);
//! - `server`: the actix-web routes, bearer-token check, JSON errors;
//! - `runs`: the hub actor that owns the runs (one `Director` each) and records their events;
//! - `store`: the sled state store;
//! - `metrics`: the Prometheus registry behind `/metrics`;
//! - `notify`: systemd's notify protocol (readiness, stopping, status, watchdog).

pub mod api;
pub mod metrics;
pub mod notify;
pub mod runs;
pub mod server;
pub mod store;
