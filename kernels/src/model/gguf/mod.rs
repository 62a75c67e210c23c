//! GGUF files (llama.cpp's single-file model format): the reader, dequantisation, and the import of a
//! Llama- or Qwen3-architecture GGUF into r1's model, tokenizer and a Hugging Face directory.
//!
//! Layout of a GGUF v2/v3 file (all little-endian): magic `GGUF`, u32 version, u64 tensor count,
//! u64 metadata count, the metadata (string key, u32 value type, value), the tensor infos (name,
//! u32 n_dims, u64 dims with the fastest-varying first, u32 ggml type, u64 offset into the data),
//! padding to `general.alignment` (32 by default), then the tensor data.
//!
//! Every length and offset comes from the file, so each one is checked against what is left before
//! it is used: a truncated or corrupt file is an error naming the file and the key or tensor being
//! read, never a panic or a huge allocation.

mod llama;
mod quant;
mod tokenizer;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub use llama::{import_to_dir, llama_config, load_llama};
pub use quant::{dequantize, GgmlType};
pub use tokenizer::{tokenizer_config_json, tokenizer_json};

use crate::alloc::{format_bytes, try_filled};

/// Fewest bytes a metadata entry takes: key length (8), value type (4), one byte of value.
const KV_MIN_BYTES: u64 = 13;
/// Fewest bytes a tensor info takes: name length (8), n_dims (4), type (4), offset (8).
const TENSOR_INFO_MIN_BYTES: u64 = 24;
/// Most array items in all of a file's metadata together. A parsed item costs 32 bytes however
/// small it was in the file (a 64 MB array of u8 would cost 2 GiB); the largest real vocabularies
/// (262k tokens, with scores, types and merges) hold about 1M.
pub const MAX_METADATA_ITEMS: u64 = 1 << 22;

/// Everything that can go wrong reading or importing a GGUF file. Each variant names the file and
/// the key or tensor concerned.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be read or an output file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with `GGUF`.
    #[error("{path}: not a GGUF file (magic {found:02x?}, expected \"GGUF\")")]
    Magic {
        /// The file.
        path: PathBuf,
        /// The first bytes found.
        found: Vec<u8>,
    },
    /// A GGUF version this reader does not know (v1 had 32-bit counts).
    #[error("{path}: GGUF version {version} is not supported (2 and 3 are)")]
    Version {
        /// The file.
        path: PathBuf,
        /// The version in the header.
        version: u32,
    },
    /// The header, metadata or tensor infos end early or hold something impossible.
    #[error("{path}: {what}: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What was being read: `header`, `key general.name`, `tensor info 3`, ...
        what: String,
        /// What is wrong.
        message: String,
    },
    /// A metadata key the import needs is absent.
    #[error("{path}: metadata key `{key}` is missing")]
    MissingKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// A metadata key has a value of the wrong type or a value the engine cannot use.
    #[error("{path}: metadata key `{key}`: {message}")]
    Metadata {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// A tensor the architecture needs is not in the file.
    #[error("{path}: tensor `{tensor}` is missing")]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// Its GGUF name.
        tensor: String,
    },
    /// A tensor's stored shape does not match what the metadata implies.
    #[error("{path}: tensor `{tensor}` has shape {found:?}, the metadata implies {expected:?}")]
    Shape {
        /// The file.
        path: PathBuf,
        /// Its GGUF name.
        tensor: String,
        /// Row-major shape the metadata implies.
        expected: Vec<usize>,
        /// Row-major shape stored.
        found: Vec<usize>,
    },
    /// A tensor is stored in a ggml type r1 cannot dequantise.
    #[error("{path}: tensor `{tensor}` has type {ggml_type}; r1 reads F32, F16, BF16, Q8_0, Q4_0 and Q4_1")]
    UnsupportedType {
        /// The file.
        path: PathBuf,
        /// Its GGUF name.
        tensor: String,
        /// The type found.
        ggml_type: GgmlType,
    },
    /// A tensor's data lies (partly) outside the file or its size does not fit its type.
    #[error("{path}: tensor `{tensor}`: {message}")]
    TensorData {
        /// The file.
        path: PathBuf,
        /// Its GGUF name.
        tensor: String,
        /// What is wrong.
        message: String,
    },
    /// The file's architecture is not one r1 can import.
    #[error("{path}: general.architecture `{architecture}` is not supported (r1 imports llama and qwen3)")]
    Architecture {
        /// The file.
        path: PathBuf,
        /// The architecture named in the file.
        architecture: String,
    },
    /// The model fits the file but not this machine's memory (or the allocator refused it).
    #[error("{path}: {message}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// What it needs and what is available.
        message: String,
    },
    /// Saving the imported model or loading the rebuilt tokenizer failed.
    #[error("{path}: {message}")]
    Export {
        /// The output file or directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Shorthand for GGUF results.
pub type Result<T> = std::result::Result<T, GgufError>;

/// One metadata value. Arrays keep their items as values; the largest (a 150k-token vocabulary)
/// costs a few MiB, read once at import.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// Type 0.
    U8(u8),
    /// Type 1.
    I8(i8),
    /// Type 2.
    U16(u16),
    /// Type 3.
    I16(i16),
    /// Type 4.
    U32(u32),
    /// Type 5.
    I32(i32),
    /// Type 6.
    F32(f32),
    /// Type 7.
    Bool(bool),
    /// Type 8 (UTF-8; invalid bytes are an error naming the key).
    String(String),
    /// Type 9: items of one type.
    Array(Vec<GgufValue>),
    /// Type 10.
    U64(u64),
    /// Type 11.
    I64(i64),
    /// Type 12.
    F64(f64),
}

impl GgufValue {
    /// The value as an unsigned integer, when it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer, when it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::I8(v) => Some(v.into()),
            GgufValue::I16(v) => Some(v.into()),
            GgufValue::I32(v) => Some(v.into()),
            GgufValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// The value as a float, when it is a float or an integer. An f32 becomes the shortest decimal
    /// that reads back as it (1e-5, not 9.999999747378752e-6): GGUF stores config floats as f32
    /// because llama.cpp computes in f32, and the exported config.json should say what the original
    /// one said.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => v.to_string().parse().ok(),
            GgufValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The string, when it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The items, when it is an array.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The value type's name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            GgufValue::U8(_) => "u8",
            GgufValue::I8(_) => "i8",
            GgufValue::U16(_) => "u16",
            GgufValue::I16(_) => "i16",
            GgufValue::U32(_) => "u32",
            GgufValue::I32(_) => "i32",
            GgufValue::F32(_) => "f32",
            GgufValue::Bool(_) => "bool",
            GgufValue::String(_) => "string",
            GgufValue::Array(_) => "array",
            GgufValue::U64(_) => "u64",
            GgufValue::I64(_) => "i64",
            GgufValue::F64(_) => "f64",
        }
    }
}

/// Where one tensor lies in the file and how it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    /// Its GGUF name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions as GGUF stores them: the fastest-varying (ggml's ne0) first.
    pub dims: Vec<u64>,
    /// Storage type.
    pub ggml_type: GgmlType,
    /// Offset of its data from the start of the data section.
    pub offset: u64,
}

impl GgufTensorInfo {
    /// The row-major (PyTorch) shape: GGUF's dims reversed.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// Number of elements (the reader has checked it does not overflow).
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// The bytes of a GGUF file: mapped from disk, or owned (tests, in-memory files).
enum Storage {
    /// A file on disk: only the tensors read are paged in.
    Mapped(memmap2::Mmap),
    /// Bytes already in memory.
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// An opened GGUF file: its metadata and tensor index parsed, its tensor data left in place until
/// a tensor is asked for.
pub struct GgufFile {
    /// The file, for error messages.
    path: PathBuf,
    /// Format version (2 or 3).
    pub version: u32,
    /// Every metadata key and value.
    pub metadata: BTreeMap<String, GgufValue>,
    /// Every tensor, in file order.
    pub tensors: Vec<GgufTensorInfo>,
    /// Position in `tensors` of each name: lookups in constant time.
    index: HashMap<String, usize>,
    /// Where the data section starts.
    data_start: usize,
    /// The whole file, kept so tensors are read (and dequantised) only when asked for.
    storage: Storage,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Opens and parses a GGUF file (memory-mapped).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: read-only map; a concurrent writer to a model file is outside what r1 supports
        // (the safetensors loader makes the same choice). Every read below is bounds-checked.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::parse(path.to_path_buf(), Storage::Mapped(map))
    }

    /// Parses a GGUF file held in memory; `path` only names it in errors.
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self> {
        Self::parse(path.into(), Storage::Owned(bytes))
    }

    fn parse(path: PathBuf, storage: Storage) -> Result<Self> {
        let bytes = storage.bytes();
        let mut r = Cursor {
            bytes,
            pos: 0,
            path: &path,
            items: 0,
        };
        let magic = r.take(4, "header")?;
        if magic != b"GGUF" {
            return Err(GgufError::Magic {
                path: path.clone(),
                found: magic.to_vec(),
            });
        }
        let version = r.u32("header")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::Version {
                path: path.clone(),
                version,
            });
        }
        let tensor_count = r.u64("header")?;
        let kv_count = r.u64("header")?;
        // Every count is checked against the bytes left before it drives a loop or an
        // allocation: a metadata entry takes at least 13 bytes (key length, type, one byte of
        // value), a tensor info at least 24 (name length, n_dims, type, offset).
        for (count, min_bytes, what) in [
            (kv_count, KV_MIN_BYTES, "metadata entries"),
            (tensor_count, TENSOR_INFO_MIN_BYTES, "tensor infos"),
        ] {
            if count
                .checked_mul(min_bytes)
                .is_none_or(|b| b > r.remaining() as u64)
            {
                return Err(r.malformed(
                    "header",
                    format!(
                        "{count} {what} of at least {min_bytes} bytes each cannot fit in the {} bytes of the file",
                        bytes.len()
                    ),
                ));
            }
        }

        let mut metadata = BTreeMap::new();
        for i in 0..kv_count {
            let key = r.string(&format!("metadata entry {i}"))?;
            let what = format!("metadata key `{key}`");
            let ty = r.u32(&what)?;
            let value = r.value(ty, &what, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(r.malformed(&what, "appears twice".into()));
            }
        }

        // Bounded by the file's length just above; a HashMap finds duplicates (and, later, each
        // tensor by name) in constant time where a scan made 100k tensors take seconds.
        let mut tensors: Vec<GgufTensorInfo> = Vec::with_capacity(tensor_count as usize);
        let mut index: HashMap<String, usize> = HashMap::with_capacity(tensor_count as usize);
        for i in 0..tensor_count {
            let name = r.string(&format!("tensor info {i}"))?;
            let what = format!("tensor info `{name}`");
            let n_dims = r.u32(&what)?;
            if n_dims > 4 {
                return Err(r.malformed(&what, format!("{n_dims} dimensions (ggml has at most 4)")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(r.u64(&what)?);
            }
            if dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .is_none_or(|n| n > isize::MAX as u64 / 4)
            {
                return Err(r.malformed(&what, format!("dimensions {dims:?} are too large")));
            }
            let ggml_type = GgmlType(r.u32(&what)?);
            let offset = r.u64(&what)?;
            if index.insert(name.clone(), tensors.len()).is_some() {
                return Err(r.malformed(&what, "appears twice".into()));
            }
            tensors.push(GgufTensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }

        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a as usize,
                _ => {
                    return Err(GgufError::Metadata {
                        path: path.clone(),
                        key: "general.alignment".into(),
                        message: format!("expected a power of two, found {v:?}"),
                    })
                }
            },
        };
        let data_start = r.pos.div_ceil(alignment) * alignment;
        if data_start > bytes.len() && !tensors.is_empty() {
            return Err(r.malformed("data section", "the file ends before it starts".into()));
        }
        // Each tensor of a type r1 reads must lie inside the file: its element count and offset
        // are the file's word, checked here rather than when the tensor is first read.
        let data_len = bytes.len().saturating_sub(data_start) as u64;
        for t in &tensors {
            if let Some(len) = t.ggml_type.bytes_for(t.elements()) {
                if t.offset.checked_add(len).is_none_or(|end| end > data_len) {
                    return Err(GgufError::TensorData {
                        path: path.clone(),
                        tensor: t.name.clone(),
                        message: format!(
                            "data at offset {} + {len} bytes lies past the end of the file ({data_len} bytes of data)",
                            t.offset
                        ),
                    });
                }
            }
        }
        Ok(GgufFile {
            path,
            version,
            metadata,
            tensors,
            index,
            data_start,
            storage,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The value of a metadata key, if present.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// The tensor info of `name`, if present.
    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw stored bytes of a tensor, checked to lie inside the file and to be exactly what its
    /// type and dims need.
    pub fn tensor_bytes(&self, info: &GgufTensorInfo) -> Result<&[u8]> {
        let err = |message: String| GgufError::TensorData {
            path: self.path.clone(),
            tensor: info.name.clone(),
            message,
        };
        let Some(len) = info.ggml_type.bytes_for(info.elements()) else {
            if info.ggml_type.block_layout().is_none() {
                return Err(GgufError::UnsupportedType {
                    path: self.path.clone(),
                    tensor: info.name.clone(),
                    ggml_type: info.ggml_type,
                });
            }
            return Err(err(format!(
                "{} elements are not whole {} blocks",
                info.elements(),
                info.ggml_type
            )));
        };
        let bytes = self.storage.bytes();
        let start = (self.data_start as u64).checked_add(info.offset);
        let end = start.and_then(|s| s.checked_add(len));
        match (start, end) {
            (Some(s), Some(e)) if e <= bytes.len() as u64 => Ok(&bytes[s as usize..e as usize]),
            _ => Err(err(format!(
                "data at offset {} + {len} bytes lies past the end of the file ({} bytes of data)",
                info.offset,
                bytes.len().saturating_sub(self.data_start)
            ))),
        }
    }

    /// A tensor widened to f32, in row-major order of [`GgufTensorInfo::shape`].
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| GgufError::MissingTensor {
                path: self.path.clone(),
                tensor: name.to_string(),
            })?;
        let data = self.tensor_bytes(info)?;
        let mut out = try_filled(info.elements() as usize, 0.0f32).map_err(|bytes| {
            GgufError::TensorData {
                path: self.path.clone(),
                tensor: name.to_string(),
                message: format!("could not allocate {bytes} for tensor `{name}`"),
            }
        })?;
        if !dequantize(info.ggml_type, data, &mut out) {
            // tensor_bytes checked type and size; this is unreachable but must not panic.
            return Err(GgufError::UnsupportedType {
                path: self.path.clone(),
                tensor: name.to_string(),
                ggml_type: info.ggml_type,
            });
        }
        Ok(out)
    }

    /// A required metadata value.
    pub fn require(&self, key: &str) -> Result<&GgufValue> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            path: self.path.clone(),
            key: key.to_string(),
        })
    }

    /// An error about the value of `key`.
    pub fn metadata_error(&self, key: &str, message: String) -> GgufError {
        GgufError::Metadata {
            path: self.path.clone(),
            key: key.to_string(),
            message,
        }
    }

    /// An optional non-negative integer key that fits a `usize`.
    pub fn usize_optional(&self, key: &str) -> Result<Option<usize>> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        self.metadata_error(
                            key,
                            format!("expected a non-negative integer, found {}", v.type_name()),
                        )
                    })
            })
            .transpose()
    }

    /// A required non-negative integer key.
    pub fn usize_required(&self, key: &str) -> Result<usize> {
        self.require(key)?;
        self.usize_optional(key)?
            .ok_or_else(|| self.metadata_error(key, "missing".into()))
    }

    /// An optional float key.
    pub fn f64_optional(&self, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| {
                v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| {
                    self.metadata_error(key, format!("expected a number, found {}", v.type_name()))
                })
            })
            .transpose()
    }

    /// An optional string key.
    pub fn str_optional(&self, key: &str) -> Result<Option<&str>> {
        self.get(key)
            .map(|v| {
                v.as_str().ok_or_else(|| {
                    self.metadata_error(key, format!("expected a string, found {}", v.type_name()))
                })
            })
            .transpose()
    }

    /// A required string key.
    pub fn str_required(&self, key: &str) -> Result<&str> {
        self.require(key)?;
        self.str_optional(key)?
            .ok_or_else(|| self.metadata_error(key, "missing".into()))
    }
}

/// Arrays inside arrays are legal GGUF but no real file nests deeper than this; the bound keeps a
/// hostile file from recursing the reader off its stack.
const MAX_ARRAY_DEPTH: usize = 4;

/// A bounds-checked little-endian reader over the file's bytes.
struct Cursor<'a> {
    /// The whole file.
    bytes: &'a [u8],
    /// The next byte to read.
    pos: usize,
    /// The file's path, for errors.
    path: &'a Path,
    /// Array items read so far, in all metadata values.
    items: u64,
}

/// Fewest bytes a value of type `ty` takes in the file (unknown types: 1, refused when read).
fn min_value_bytes(ty: u32) -> u64 {
    match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        // A string or an array is at least its 8-byte length (and an array its item type).
        8 => 8,
        9 => 12,
        10..=12 => 8,
        _ => 1,
    }
}

impl<'a> Cursor<'a> {
    fn malformed(&self, what: &str, message: String) -> GgufError {
        GgufError::Malformed {
            path: self.path.to_path_buf(),
            what: what.to_string(),
            message,
        }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.malformed(
                what,
                format!(
                    "the file ends at byte {} but {n} more bytes are needed at byte {} (truncated?)",
                    self.bytes.len(),
                    self.pos
                ),
            ));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= self.remaining())
            .ok_or_else(|| {
                self.malformed(
                    what,
                    format!(
                        "a string of {len} bytes at byte {} runs past the end of the file",
                        self.pos
                    ),
                )
            })?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| self.malformed(what, format!("string is not UTF-8: {e}")))
    }

    fn value(&mut self, ty: u32, what: &str, depth: usize) -> Result<GgufValue> {
        Ok(match ty {
            0 => GgufValue::U8(self.array::<1>(what)?[0]),
            1 => GgufValue::I8(self.array::<1>(what)?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(what)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(what)?)),
            4 => GgufValue::U32(self.u32(what)?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(what)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(self.malformed(what, format!("bool byte {b} is neither 0 nor 1"))),
            },
            8 => GgufValue::String(self.string(what)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.malformed(what, "arrays nested too deeply".into()));
                }
                let item_ty = self.u32(what)?;
                let n = self.u64(what)?;
                // Every item takes at least its type's smallest size, so a count whose items
                // cannot fit in what is left is a lie to be refused before it becomes an
                // allocation; and all arrays together stay under MAX_METADATA_ITEMS, because
                // a parsed item costs far more memory than its bytes in the file.
                let min_bytes = min_value_bytes(item_ty);
                if n.checked_mul(min_bytes)
                    .is_none_or(|b| b > self.remaining() as u64)
                {
                    return Err(self.malformed(
                        what,
                        format!(
                            "an array of {n} items of at least {min_bytes} bytes at byte {} cannot fit in the {} bytes left",
                            self.pos,
                            self.remaining()
                        ),
                    ));
                }
                self.items = self.items.saturating_add(n);
                if self.items > MAX_METADATA_ITEMS {
                    return Err(self.malformed(
                        what,
                        format!(
                            "an array of {n} items takes the metadata past {MAX_METADATA_ITEMS} array items in all (about {} in memory)",
                            format_bytes(
                                self.items as f64 * std::mem::size_of::<GgufValue>() as f64
                            )
                        ),
                    ));
                }
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(item_ty, what, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64(what)?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(what)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(what)?)),
            other => return Err(self.malformed(what, format!("unknown value type {other}"))),
        })
    }
}
