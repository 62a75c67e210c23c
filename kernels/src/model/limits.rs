//! Sizes checked before they become allocations: the bounds a model's `config.json` must stay
//! within, the memory a load or a training run needs, what this process may still allocate, and
//! fallible allocation for the big buffers.
//!
//! Every size in a model directory or a job config comes from a file someone else wrote. An
//! `intermediate_size` of 1e12 must be an error naming the key and what it would need, not
//! `memory allocation of N bytes failed` and an abort that takes a daemon (and every run in it)
//! down. The order of defence is: sane bounds per key (cheap, exact message), then the bytes the
//! plan needs against the memory available (`MemAvailable`, the cgroup's `memory.max`,
//! `RLIMIT_AS`), then `Vec::try_reserve_exact` on the buffers themselves, so that an allocation
//! that still fails is an error too.

use std::path::Path;

use crate::error::{EngineError, Result};

/// Largest `vocab_size` accepted. Real vocabularies reach 262k (Gemma); 4M leaves room.
pub const MAX_VOCAB_SIZE: usize = 1 << 22;
/// Largest `hidden_size` (the biggest open models use 16k-18k).
pub const MAX_HIDDEN_SIZE: usize = 1 << 16;
/// Largest `intermediate_size` (the biggest dense models use ~53k).
pub const MAX_INTERMEDIATE_SIZE: usize = 1 << 19;
/// Most decoder layers (the biggest models have ~126).
pub const MAX_LAYERS: usize = 1024;
/// Most attention heads (query or key/value).
pub const MAX_HEADS: usize = 1024;
/// Widest attention head (real models use 64-256).
pub const MAX_HEAD_DIM: usize = 2048;
/// Longest context a config may declare; the sampler sizes its KV cache from it.
pub const MAX_POSITIONS: usize = 1 << 24;

pub use crate::alloc::format_bytes;

/// How much more memory this process may allocate, and which limit said so.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryAvailable {
    /// Bytes.
    pub bytes: u64,
    /// The binding limit, for messages: `MemAvailable`, a cgroup's limit, `RLIMIT_AS`.
    pub source: String,
}

/// The smallest of what the machine has free (`/proc/meminfo` MemAvailable), what the cgroup
/// still allows (`memory.max` − `memory.current`, this cgroup and its ancestors) and what the
/// address-space limit leaves (`RLIMIT_AS` − the current `VmSize`). `None` where none can be read
/// (not Linux): then only the per-key bounds and fallible allocation protect.
pub fn available_memory() -> Option<MemoryAvailable> {
    let mut best: Option<MemoryAvailable> = None;
    let mut offer = |bytes: u64, source: String| {
        if best.as_ref().is_none_or(|b| bytes < b.bytes) {
            best = Some(MemoryAvailable { bytes, source });
        }
    };
    if let Some(kb) = proc_kib("/proc/meminfo", "MemAvailable:") {
        offer(kb.saturating_mul(1024), "MemAvailable".into());
    }
    if let Some((bytes, dir)) = cgroup_headroom() {
        offer(bytes, format!("the memory limit of cgroup {dir}"));
    }
    if let Some(bytes) = address_space_headroom() {
        offer(bytes, "RLIMIT_AS (ulimit -v)".into());
    }
    best
}

/// A `Key:   123 kB` line of a /proc file, in KiB.
fn proc_kib(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The tightest `memory.max − memory.current` of this process's cgroup (v2) and its ancestors,
/// or `memory.limit_in_bytes − memory.usage_in_bytes` under cgroup v1's memory controller.
fn cgroup_headroom() -> Option<(u64, String)> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut tightest: Option<(u64, String)> = None;
    for line in own.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, relative) = (fields.next()?, fields.next()?, fields.next()?);
        let (root, max_file, current_file) = if controllers.is_empty() {
            ("/sys/fs/cgroup", "memory.max", "memory.current")
        } else if controllers.split(',').any(|c| c == "memory") {
            (
                "/sys/fs/cgroup/memory",
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
            )
        } else {
            continue;
        };
        let root = Path::new(root);
        let mut dir = root.join(relative.trim().trim_start_matches('/'));
        loop {
            let read = |name: &str| {
                std::fs::read_to_string(dir.join(name))
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
            };
            // "max" (v2) does not parse; v1 writes a huge number for "no limit".
            if let Some(max) = read(max_file).filter(|&m| m < 1 << 60) {
                let left = max.saturating_sub(read(current_file).unwrap_or(0));
                if tightest.as_ref().is_none_or(|(b, _)| left < *b) {
                    tightest = Some((left, dir.display().to_string()));
                }
            }
            if dir == root || !dir.pop() || !dir.starts_with(root) {
                break;
            }
        }
    }
    tightest
}

/// `RLIMIT_AS` minus the address space already mapped, when a limit is set.
fn address_space_headroom() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } != 0
        || limit.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    let mapped = proc_kib("/proc/self/status", "VmSize:").map_or(0, |kb| kb.saturating_mul(1024));
    let cur: u64 = limit.rlim_cur;
    Some(cur.saturating_sub(mapped))
}

/// What a load or a run needs, part by part, so a refusal can say where the bytes go.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryPlan {
    /// (what, bytes), in the order added.
    pub parts: Vec<(String, f64)>,
}

impl MemoryPlan {
    /// Adds a part (bytes as f64: absurd configs must not overflow the estimate itself).
    pub fn add(&mut self, what: impl Into<String>, bytes: f64) -> &mut Self {
        self.parts.push((what.into(), bytes));
        self
    }

    /// Total bytes.
    pub fn total(&self) -> f64 {
        self.parts.iter().map(|(_, b)| b).sum()
    }

    /// `weights 1.0 GiB, gradients 1.0 GiB, ...`
    pub fn describe(&self) -> String {
        self.parts
            .iter()
            .map(|(what, b)| format!("{what} {}", format_bytes(*b)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Refuses the plan when it needs more than `available` (when known): the error says what
    /// for, the total, its parts and what is available.
    pub fn check_against(&self, what_for: &str, available: Option<&MemoryAvailable>) -> Result<()> {
        let Some(available) = available else {
            return Ok(());
        };
        let total = self.total();
        if total > available.bytes as f64 {
            return Err(EngineError::Memory {
                what: what_for.to_string(),
                figures: format!(
                    "needs {} ({}), {} available ({})",
                    format_bytes(total),
                    self.describe(),
                    format_bytes(available.bytes as f64),
                    available.source
                ),
            });
        }
        Ok(())
    }

    /// [`MemoryPlan::check_against`] the memory available now.
    pub fn check(&self, what_for: &str) -> Result<()> {
        self.check_against(what_for, available_memory().as_ref())
    }
}

/// A zeroed `Vec<f32>` of `len`, or an error naming `what` when the allocator refuses: the last
/// line of defence after the bounds and the memory check.
pub fn try_zeroed(len: usize, what: &str) -> Result<Vec<f32>> {
    try_filled(len, 0.0, what)
}

/// [`try_filled`] reusing a spare buffer of about that size when there is one
/// (`alloc::try_recycled`; give it back with `alloc::give_back` when done).
pub fn try_recycled<T: crate::alloc::Spare>(len: usize, value: T, what: &str) -> Result<Vec<T>> {
    crate::alloc::try_recycled(len, value).map_err(|bytes| EngineError::Allocation {
        what: what.to_string(),
        bytes,
    })
}

/// A `Vec<T>` of `len` copies of `value`, or an error naming `what` when the allocator refuses.
pub fn try_filled<T: Clone>(len: usize, value: T, what: &str) -> Result<Vec<T>> {
    crate::alloc::try_filled(len, value).map_err(|bytes| EngineError::Allocation {
        what: what.to_string(),
        bytes,
    })
}

/// The process's peak resident set so far (VmHWM in /proc/self/status), bytes; 0 where unknown.
pub fn peak_resident_bytes() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_as_people_read_them() {
        assert_eq!(format_bytes(100.0), "100 B");
        assert_eq!(format_bytes(64.0 * 1024.0 * 1024.0 * 1024.0), "64.0 GiB");
        assert_eq!(format_bytes(1.5 * 1024.0 * 1024.0), "1.5 MiB");
    }

    #[test]
    fn a_plan_over_the_limit_is_refused_with_the_figures() {
        let gib = 1024.0 * 1024.0 * 1024.0;
        let mut plan = MemoryPlan::default();
        plan.add("weights", 16.0 * gib)
            .add("gradients", 16.0 * gib)
            .add("AdamW moments", 32.0 * gib);
        let available = MemoryAvailable {
            bytes: (11.3 * gib) as u64,
            source: "MemAvailable".into(),
        };
        let message = plan
            .check_against("training m", Some(&available))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("needs 64.0 GiB")
                && message.contains("11.3 GiB available")
                && message.contains("AdamW moments 32.0 GiB")
                && message.contains("MemAvailable"),
            "{message}"
        );
        plan.check_against("training m", None).unwrap();
        let plenty = MemoryAvailable {
            bytes: (100.0 * gib) as u64,
            source: "MemAvailable".into(),
        };
        plan.check_against("training m", Some(&plenty)).unwrap();
    }

    #[test]
    fn this_process_sees_some_memory_and_an_impossible_allocation_is_an_error() {
        let available = available_memory().expect("Linux reports MemAvailable");
        assert!(available.bytes > 0, "{available:?}");
        let message = try_zeroed(usize::MAX / 8, "test buffer")
            .unwrap_err()
            .to_string();
        assert!(message.contains("test buffer"), "{message}");
        assert_eq!(try_zeroed(3, "small").unwrap(), vec![0.0; 3]);
    }
}
