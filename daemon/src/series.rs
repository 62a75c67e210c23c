//! Helpers over Prometheus metric vectors shared by the daemon's metric families
//! (`metrics.rs`, `device_metrics.rs`).

use std::collections::HashMap;

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};

/// Removes every series of `vec` whose `run` label is `run`.
pub(crate) fn remove_run<B: MetricVecBuilder>(vec: &MetricVec<B>, run: &str) {
    for family in vec.collect() {
        for metric in family.get_metric() {
            let labels: HashMap<&str, &str> = metric
                .get_label()
                .iter()
                .map(|pair| (pair.name(), pair.value()))
                .collect();
            if labels.get("run") == Some(&run) {
                // Cannot fail: the labels were just read from this very vector.
                let _ = vec.remove(&labels);
            }
        }
    }
}
