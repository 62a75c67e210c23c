//! Fallible allocation and byte counts as people read them: the leaf the engine's modules share
//! (it imports nothing of the crate, so the error types and the GGUF reader can both use it).

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
