//! What the GPUs this process computes on hold now, for r1d's `r1_device_memory_in_use_bytes`.
//!
//! Every CUDA backend notes its context here when it opens ([`note_context`]); a reading asks the
//! driver (`cuMemGetInfo`) through the contexts still alive, and only those: a device no engine
//! holds is not read, so a scrape never creates a context (which would itself take hundreds of
//! MiB of the GPU and a fraction of a second).

use std::sync::{Arc, Mutex, Weak};

use cudarc::driver::CudaContext;

/// The contexts engines opened, by ordinal (dead ones are dropped as they are found).
static CONTEXTS: Mutex<Vec<(usize, Weak<CudaContext>)>> = Mutex::new(Vec::new());

/// One GPU's memory as its driver reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuMemory {
    /// The device's ordinal (`cuda:N`).
    pub ordinal: usize,
    /// Bytes in use on the device, by every process (total − free).
    pub used_bytes: u64,
    /// The device's memory.
    pub total_bytes: u64,
}

/// Records that an engine holds `ctx` on device `ordinal` (the CUDA backend calls it).
pub(crate) fn note_context(ordinal: usize, ctx: &Arc<CudaContext>) {
    let mut contexts = CONTEXTS.lock().unwrap_or_else(|p| p.into_inner());
    contexts.retain(|(_, weak)| weak.strong_count() > 0);
    if !contexts
        .iter()
        .any(|(o, weak)| *o == ordinal && weak.upgrade().is_some_and(|c| Arc::ptr_eq(&c, ctx)))
    {
        contexts.push((ordinal, Arc::downgrade(ctx)));
    }
}

/// Memory in use on each GPU an engine of this process holds a context on now, by ordinal; empty
/// on a machine without one. A device whose query fails is left out.
pub fn gpu_memory_in_use() -> Vec<GpuMemory> {
    let live: Vec<(usize, Arc<CudaContext>)> = {
        let mut contexts = CONTEXTS.lock().unwrap_or_else(|p| p.into_inner());
        contexts.retain(|(_, weak)| weak.strong_count() > 0);
        contexts
            .iter()
            .filter_map(|(o, weak)| weak.upgrade().map(|c| (*o, c)))
            .collect()
    };
    let mut out: Vec<GpuMemory> = Vec::new();
    for (ordinal, ctx) in live {
        if out.iter().any(|m| m.ordinal == ordinal) {
            continue;
        }
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ctx.mem_get_info()));
        if let Ok(Ok((free, total))) = read {
            out.push(GpuMemory {
                ordinal,
                used_bytes: total.saturating_sub(free) as u64,
                total_bytes: total as u64,
            });
        }
    }
    out.sort_by_key(|m| m.ordinal);
    out
}
