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
pub fn try_filled<T: Clone>(len: usize, value: T) -> Result<Vec<T>, String> {
    let mut out = Vec::new();
    out.try_reserve_exact(len)
        .map_err(|_| format_bytes(len as f64 * std::mem::size_of::<T>() as f64))?;
    out.resize(len, value);
    Ok(out)
}
