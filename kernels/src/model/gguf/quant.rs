//! ggml tensor types and their dequantisation to f32.
//!
//! GGUF stores each tensor in one ggml type: plain floats (F32, F16, BF16) or blocks of 32 elements
//! sharing a scale (Q8_0: f16 d + 32 i8; Q4_0: f16 d + 16 bytes of nibbles; Q4_1: f16 d, f16 m + 16
//! bytes). In the 4-bit blocks the low nibbles of the 16 bytes are elements 0..15 and the high
//! nibbles elements 16..31, as ggml's `dequantize_row_q4_0` reads them. The engine computes in f32,
//! so import widens every tensor once; other types are named in the error so the user knows what
//! to re-quantise to.

/// A ggml tensor type id as stored in a GGUF tensor info.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgmlType(pub u32);

impl GgmlType {
    /// 32-bit floats.
    pub const F32: GgmlType = GgmlType(0);
    /// IEEE half floats.
    pub const F16: GgmlType = GgmlType(1);
    /// 4-bit blocks, scale only.
    pub const Q4_0: GgmlType = GgmlType(2);
    /// 4-bit blocks, scale and minimum.
    pub const Q4_1: GgmlType = GgmlType(3);
    /// 8-bit blocks, scale only.
    pub const Q8_0: GgmlType = GgmlType(8);
    /// bfloat16.
    pub const BF16: GgmlType = GgmlType(30);

    /// The name ggml gives the type (for error messages), or `None` for an id ggml does not define.
    pub fn name(self) -> Option<&'static str> {
        const NAMES: [&str; 40] = [
            "F32",
            "F16",
            "Q4_0",
            "Q4_1",
            "Q4_2",
            "Q4_3",
            "Q5_0",
            "Q5_1",
            "Q8_0",
            "Q8_1",
            "Q2_K",
            "Q3_K",
            "Q4_K",
            "Q5_K",
            "Q6_K",
            "Q8_K",
            "IQ2_XXS",
            "IQ2_XS",
            "IQ3_XXS",
            "IQ1_S",
            "IQ4_NL",
            "IQ3_S",
            "IQ2_S",
            "IQ4_XS",
            "I8",
            "I16",
            "I32",
            "I64",
            "F64",
            "IQ1_M",
            "BF16",
            "Q4_0_4_4",
            "Q4_0_4_8",
            "Q4_0_8_8",
            "TQ1_0",
            "TQ2_0",
            "IQ4_NL_4_4",
            "IQ4_NL_4_8",
            "IQ4_NL_8_8",
            "MXFP4",
        ];
        NAMES.get(self.0 as usize).copied()
    }

    /// (elements per block, bytes per block) for the types r1 can dequantise; `None` otherwise.
    pub fn block_layout(self) -> Option<(usize, usize)> {
        match self {
            GgmlType::F32 => Some((1, 4)),
            GgmlType::F16 | GgmlType::BF16 => Some((1, 2)),
            GgmlType::Q4_0 => Some((32, 18)),
            GgmlType::Q4_1 => Some((32, 20)),
            GgmlType::Q8_0 => Some((32, 34)),
            _ => None,
        }
    }

    /// Bytes that `n` elements take, or `None` when the type is unsupported, `n` is not a whole
    /// number of blocks, or the size overflows.
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        let (block, bytes) = self.block_layout()?;
        if !n.is_multiple_of(block as u64) {
            return None;
        }
        (n / block as u64).checked_mul(bytes as u64)
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}"),
            None => write!(f, "unknown ggml type {}", self.0),
        }
    }
}

/// Widens `data` (whole blocks of `ty`) into `out`. The caller has checked that `data` is exactly
/// `ty.bytes_for(out.len())` bytes; a mismatch or an unsupported type returns `false` and leaves
/// `out` partly written.
pub fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) -> bool {
    if ty.bytes_for(out.len() as u64) != Some(data.len() as u64) {
        return false;
    }
    let f16_at = |b: &[u8], i: usize| half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
    match ty {
        GgmlType::F32 => {
            for (o, b) in out.iter_mut().zip(data.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, b) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = f16_at(b, 0);
            }
        }
        GgmlType::BF16 => {
            for (o, b) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = half::bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        GgmlType::Q8_0 => {
            for (o, b) in out.chunks_exact_mut(32).zip(data.chunks_exact(34)) {
                let d = f16_at(b, 0);
                for (x, &q) in o.iter_mut().zip(&b[2..]) {
                    *x = d * f32::from(q as i8);
                }
            }
        }
        GgmlType::Q4_0 => {
            for (o, b) in out.chunks_exact_mut(32).zip(data.chunks_exact(18)) {
                let d = f16_at(b, 0);
                let (lo, hi) = o.split_at_mut(16);
                for (j, &q) in b[2..].iter().enumerate() {
                    lo[j] = d * (f32::from(q & 0x0F) - 8.0);
                    hi[j] = d * (f32::from(q >> 4) - 8.0);
                }
            }
        }
        GgmlType::Q4_1 => {
            for (o, b) in out.chunks_exact_mut(32).zip(data.chunks_exact(20)) {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                let (lo, hi) = o.split_at_mut(16);
                for (j, &q) in b[4..].iter().enumerate() {
                    lo[j] = d * f32::from(q & 0x0F) + m;
                    hi[j] = d * f32::from(q >> 4) + m;
                }
            }
        }
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16(x: f32) -> [u8; 2] {
        half::f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn four_bit_blocks_put_low_nibbles_first() {
        // Byte j holds element j in its low nibble and element j + 16 in its high nibble.
        let mut q4_0 = f16(0.5).to_vec();
        q4_0.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let mut out = [0f32; 32];
        assert!(dequantize(GgmlType::Q4_0, &q4_0, &mut out));
        for j in 0..16 {
            assert_eq!(out[j], 0.5 * (j as f32 - 8.0));
            assert_eq!(out[j + 16], 0.5 * ((15 - j) as f32 - 8.0));
        }

        let mut q4_1 = f16(0.25).to_vec();
        q4_1.extend(f16(-1.0));
        q4_1.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        assert!(dequantize(GgmlType::Q4_1, &q4_1, &mut out));
        for j in 0..16 {
            assert_eq!(out[j], 0.25 * j as f32 - 1.0);
            assert_eq!(out[j + 16], 0.25 * (15 - j) as f32 - 1.0);
        }
    }

    #[test]
    fn q8_0_is_signed() {
        let mut block = f16(2.0).to_vec();
        block.extend((0..32).map(|j: i32| (j - 16) as i8 as u8));
        let mut out = [0f32; 32];
        assert!(dequantize(GgmlType::Q8_0, &block, &mut out));
        assert_eq!(out[0], -32.0);
        assert_eq!(out[31], 30.0);
    }

    #[test]
    fn wrong_sizes_and_other_types_are_refused() {
        let mut out = [0f32; 32];
        assert!(!dequantize(GgmlType::Q8_0, &[0; 33], &mut out));
        assert!(!dequantize(GgmlType(12), &[0; 144], &mut out));
        assert_eq!(GgmlType(12).to_string(), "Q4_K");
        assert_eq!(GgmlType(999).to_string(), "unknown ggml type 999");
        assert_eq!(GgmlType::Q4_0.bytes_for(33), None);
    }
}
