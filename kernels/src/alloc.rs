//! Fallible allocation and byte counts as people read them: the leaf the engine's modules share
//! (it imports nothing of the crate, so the error types and the GGUF reader can both use it).

/// One category of memory: of one device's estimate, or of what a step held.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MemoryPart {
    /// `weights`, `gradients`, `AdamW moments`, `reference model`, `sampler's copy of the
    /// weights`, `KV cache`, `decoding buffers`, `activations`, `reward model NAME`.
    pub category: String,
    /// Bytes (f64: an absurd config must not overflow the figure that explains its refusal).
    pub bytes: f64,
}

/// Bytes as people read them: `64.0 GiB`, `512.0 MiB`, `100 B`.
pub fn format_bytes(bytes: f64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024.0 {
        return format!("{bytes:.0} B");
    }
    let mut value = bytes / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A `Vec<T>` of `len` copies of `value`, or the size that could not be allocated, formatted.
/// A large one is backed by huge pages where the system allows it ([`advise_huge`]).
pub fn try_filled<T: Clone>(len: usize, value: T) -> Result<Vec<T>, String> {
    let mut out = Vec::new();
    out.try_reserve_exact(len)
        .map_err(|_| format_bytes(len as f64 * std::mem::size_of::<T>() as f64))?;
    advise_huge(out.spare_capacity_mut());
    out.resize(len, value);
    Ok(out)
}

/// `len` zeros, not yet touched (the allocator's zeroed pages), backed by huge pages where the
/// system allows it: what the engine's large buffers use instead of `vec![0.0; len]`.
pub fn zeroed_f32(len: usize) -> Vec<f32> {
    let out = vec![0.0f32; len];
    advise_huge(&out);
    out
}

/// Smallest buffer worth huge pages: a few 2 MiB pages.
const HUGE_MIN_BYTES: usize = 8 << 20;

/// Asks Linux to back the whole 2 MiB pages inside `memory` with transparent huge pages
/// (`madvise(MADV_HUGEPAGE)`; the system setting `madvise` honours it, `always` does it anyway,
/// `never` ignores it). Call before the memory is first touched: every first touch of a 4 KiB
/// page is a fault in which the kernel zeroes the page, and on a virtual machine those faults
/// cost more than a GRPO step's matrix products take to stream the same bytes; a 2 MiB page is
/// one fault instead of 512 (and fewer TLB misses for the products). Small buffers and other
/// systems are left alone. Never fails: the advice is only advice.
pub fn advise_huge<T>(memory: &[T]) {
    let bytes = std::mem::size_of_val(memory);
    if bytes < HUGE_MIN_BYTES {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = memory.as_ptr() as usize;
        let aligned = start.next_multiple_of(PAGE);
        let end = (start + bytes) / PAGE * PAGE;
        if end > aligned {
            // SAFETY: the range lies within `memory`, which this process owns; MADV_HUGEPAGE
            // changes how future faults are served, never the contents.
            unsafe {
                libc::madvise(
                    aligned as *mut libc::c_void,
                    end - aligned,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
}

/// A buffer element the spare-buffer pool keeps (f32 and bf16).
pub trait Spare: Copy + Send + 'static {
    /// This element type's pool.
    fn spares() -> &'static std::sync::Mutex<Vec<Vec<Self>>>;
}

static SPARE_F32: std::sync::Mutex<Vec<Vec<f32>>> = std::sync::Mutex::new(Vec::new());
static SPARE_BF16: std::sync::Mutex<Vec<Vec<half::bf16>>> = std::sync::Mutex::new(Vec::new());

impl Spare for f32 {
    fn spares() -> &'static std::sync::Mutex<Vec<Vec<f32>>> {
        &SPARE_F32
    }
}

impl Spare for half::bf16 {
    fn spares() -> &'static std::sync::Mutex<Vec<Vec<half::bf16>>> {
        &SPARE_BF16
    }
}

/// Most bytes the pool keeps, over both element types.
const SPARE_MAX_BYTES: usize = 2 << 30;

/// A `Vec<T>` of `len` copies of `value`: a buffer given back by [`give_back`] when one of
/// about that size is there (refilled), else a new one ([`try_filled`]). The sampler makes its
/// KV cache, decoding buffers and bf16 copy for every generation and drops them after it; on a
/// machine where the first touch of fresh memory is slow (a virtual machine: half a second for
/// SmolLM2's 300 MB) reusing them saves that time every RL step, at the price of keeping them
/// while the learner runs ([`spare_bytes`] reports how much).
pub fn try_recycled<T: Spare>(len: usize, value: T) -> Result<Vec<T>, String> {
    if len * std::mem::size_of::<T>() >= HUGE_MIN_BYTES {
        let found = {
            let mut spares = T::spares().lock().unwrap_or_else(|e| e.into_inner());
            // The smallest that holds `len`, and not far larger.
            let best = spares
                .iter()
                .enumerate()
                .filter(|(_, v)| v.capacity() >= len && v.capacity() <= len + len / 4)
                .min_by_key(|(_, v)| v.capacity())
                .map(|(i, _)| i);
            best.map(|i| spares.swap_remove(i))
        };
        if let Some(mut v) = found {
            v.clear();
            v.resize(len, value);
            return Ok(v);
        }
    }
    try_filled(len, value)
}

/// Keeps `buffer` for the next [`try_recycled`] of about its size; small buffers, and any beyond
/// the pool's bound (the oldest go first), are freed.
pub fn give_back<T: Spare>(buffer: Vec<T>) {
    if buffer.capacity() * std::mem::size_of::<T>() < HUGE_MIN_BYTES {
        return;
    }
    let mut spares = T::spares().lock().unwrap_or_else(|e| e.into_inner());
    spares.push(buffer);
    while spare_bytes_of(&spares) + other_spare_bytes::<T>() > SPARE_MAX_BYTES && !spares.is_empty()
    {
        spares.remove(0);
    }
}

fn spare_bytes_of<T>(spares: &[Vec<T>]) -> usize {
    spares
        .iter()
        .map(|v| v.capacity() * std::mem::size_of::<T>())
        .sum()
}

/// Bytes kept by the pool of the element type that is not `T`.
fn other_spare_bytes<T: 'static>() -> usize {
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
        spare_bytes_of(&SPARE_BF16.lock().unwrap_or_else(|e| e.into_inner()))
    } else {
        spare_bytes_of(&SPARE_F32.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Bytes the spare-buffer pool holds now (resident: they were in use before).
pub fn spare_bytes() -> usize {
    spare_bytes_of(&SPARE_F32.lock().unwrap_or_else(|e| e.into_inner()))
        + spare_bytes_of(&SPARE_BF16.lock().unwrap_or_else(|e| e.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_the_next_one_of_about_its_size_refilled_and_the_pool_is_bounded() {
        // One test touches the pool (tests of a binary share it): sizes no other test uses.
        let len = (HUGE_MIN_BYTES / 4) + 1234;
        let mut first = try_recycled(len, 0.0f32).unwrap();
        first[7] = 3.0;
        let at = first.as_ptr() as usize;
        give_back(first);
        assert!(spare_bytes() >= len * 4);
        // A little smaller still fits the same buffer; it comes back filled with the value.
        let again = try_recycled(len - 1000, 1.5f32).unwrap();
        assert_eq!(again.as_ptr() as usize, at, "the spare buffer was reused");
        assert_eq!(again.len(), len - 1000);
        assert!(again.iter().all(|&x| x == 1.5));
        // Much smaller does not take it (it would hold memory it does not use).
        give_back(again);
        let small = try_recycled(len / 2, 0.0f32).unwrap();
        assert_ne!(small.as_ptr() as usize, at);
        // Small buffers are not kept.
        let before = spare_bytes();
        give_back(vec![0.0f32; 16]);
        assert_eq!(spare_bytes(), before);
        // The pool never holds more than its bound.
        for _ in 0..(SPARE_MAX_BYTES / (len * 4) + 2) {
            give_back(vec![0.0f32; len]);
        }
        assert!(spare_bytes() <= SPARE_MAX_BYTES);
        // bf16 buffers have their own pool.
        let h = try_recycled(HUGE_MIN_BYTES / 2 + 77, half::bf16::ONE).unwrap();
        let at = h.as_ptr() as usize;
        give_back(h);
        let reused = try_recycled(HUGE_MIN_BYTES / 2 + 77, half::bf16::ZERO).unwrap();
        assert_eq!(reused.as_ptr() as usize, at);
    }
}
