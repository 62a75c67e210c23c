//! r1d's library: the pieces of the training daemon that the binary wires together.
//!
//! `metrics` owns the Prometheus registry behind `/metrics`; `notify` speaks systemd's notify
//! protocol (readiness, stopping, status, watchdog).

pub mod metrics;
pub mod notify;
