//! The safetensors format, read and written here without trusting the file.
//!
//! Layout: an 8-byte little-endian header length `n`, `n` bytes of JSON
//! (`{"name": {"dtype": "F32", "shape": [..], "data_offsets": [a, b]}, "__metadata__": {..}}`),
//! then the data section. Every length and offset is checked against the file size
//! before any data is read, so a truncated or foreign file is a clear error, never a
//! panic. Tensors are read from disk one at a time, on demand, so a file's header can
//! be checked against a spec before anything is allocated and a large checkpoint is
//! never held in memory twice.

use super::{kind_name, type_text};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tch::{Device, Kind, Tensor};

/// Headers above this size are not plausible (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100 << 20;

/// One tensor's header entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The file's dtype tag (`F32`, `BF16`, `I64`, ...).
    pub dtype: String,
    pub shape: Vec<i64>,
    /// Byte range within the data section.
    pub start: usize,
    pub end: usize,
}

impl Entry {
    /// The LibTorch element type, if LibTorch has one.
    pub fn kind(&self) -> Option<Kind> {
        kind_of_tag(&self.dtype)
    }

    /// `f32[768, 2304]`, or the file's tag for types LibTorch lacks.
    pub fn type_text(&self) -> String {
        let k = self.kind().map(kind_name).unwrap_or_else(|| self.dtype.clone());
        type_text(&k, &self.shape)
    }

    /// Integer and boolean tensors (buffers such as `position_ids`).
    pub fn is_integer(&self) -> bool {
        matches!(self.dtype.as_str(), "I64" | "I32" | "I16" | "I8" | "U8" | "U16" | "U32" | "U64" | "BOOL")
    }
}

pub fn kind_of_tag(tag: &str) -> Option<Kind> {
    Some(match tag {
        "F64" => Kind::Double,
        "F32" => Kind::Float,
        "F16" => Kind::Half,
        "BF16" => Kind::BFloat16,
        "I64" => Kind::Int64,
        "I32" => Kind::Int,
        "I16" => Kind::Int16,
        "I8" => Kind::Int8,
        "U8" => Kind::Uint8,
        "BOOL" => Kind::Bool,
        _ => return None,
    })
}

pub fn tag_of_kind(k: Kind) -> Result<&'static str> {
    Ok(match k {
        Kind::Double => "F64",
        Kind::Float => "F32",
        Kind::Half => "F16",
        Kind::BFloat16 => "BF16",
        Kind::Int64 => "I64",
        Kind::Int => "I32",
        Kind::Int16 => "I16",
        Kind::Int8 => "I8",
        Kind::Uint8 => "U8",
        Kind::Bool => "BOOL",
        other => bail!("cannot store a {other:?} tensor in safetensors"),
    })
}

fn tag_size(tag: &str) -> Option<usize> {
    Some(match tag {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => 1,
        _ => return None,
    })
}

/// Where a file's data section is read from.
enum Source {
    Bytes(Vec<u8>),
    /// Tensors are read one at a time, so loading never holds the whole file twice.
    File(Mutex<File>),
}

/// A safetensors file: its checked header, and its data read on demand.
pub struct SafeFile {
    pub path: PathBuf,
    source: Source,
    data_start: usize,
    /// Entries by name (sorted).
    pub entries: BTreeMap<String, Entry>,
}

impl SafeFile {
    /// Open a file and check its header; no tensor data is read yet.
    pub fn open(path: &Path) -> Result<SafeFile> {
        let ctx = || format!("reading {}", path.display());
        let mut f = File::open(path).with_context(ctx)?;
        let total = f.metadata().with_context(ctx)?.len();
        let mut first = [0u8; 8];
        let got = read_up_to(&mut f, &mut first).with_context(ctx)?;
        let n = header_len(&first[..got], total).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let mut header = vec![0u8; n];
        f.read_exact(&mut header).with_context(ctx)?;
        let entries = parse_entries(&header, total - 8 - n as u64).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        Ok(SafeFile { path: path.to_path_buf(), source: Source::File(Mutex::new(f)), data_start: 8 + n, entries })
    }

    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<SafeFile> {
        let total = bytes.len() as u64;
        let n = header_len(&bytes[..bytes.len().min(8)], total).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let entries =
            parse_entries(&bytes[8..8 + n], total - 8 - n as u64).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        Ok(SafeFile { path: path.to_path_buf(), source: Source::Bytes(bytes), data_start: 8 + n, entries })
    }

    /// The tensor `name` on the CPU, in the file's dtype.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let e = self.entries.get(name).ok_or_else(|| anyhow!("{}: no tensor `{name}`", self.path.display()))?;
        let kind = e.kind().ok_or_else(|| {
            anyhow!("{}: tensor `{name}` has dtype {}, which LibTorch cannot load", self.path.display(), e.dtype)
        })?;
        let (a, b) = (self.data_start + e.start, self.data_start + e.end);
        // The header check guarantees the byte range holds exactly numel elements.
        let make = |data: &[u8]| {
            Tensor::f_from_data_size(data, &e.shape, kind)
                .map_err(|err| anyhow!("{}: tensor `{name}`: {err}", self.path.display()))
        };
        match &self.source {
            Source::Bytes(bytes) => make(&bytes[a..b]),
            Source::File(f) => {
                let mut data = vec![0u8; b - a];
                let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
                f.seek(SeekFrom::Start(a as u64)).and_then(|_| f.read_exact(&mut data)).with_context(|| {
                    format!("{}: reading tensor `{name}` (was the file changed while loading?)", self.path.display())
                })?;
                make(&data)
            }
        }
    }

    /// Every tensor, in name order.
    pub fn tensors(&self) -> Result<Vec<(String, Tensor)>> {
        self.entries.keys().map(|k| Ok((k.clone(), self.tensor(k)?))).collect()
    }
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..])? {
            0 => break,
            k => got += k,
        }
    }
    Ok(got)
}

const NOT: &str = "not a safetensors file";

/// The header length from the first 8 bytes, checked against the file size.
fn header_len(first: &[u8], total: u64) -> std::result::Result<usize, String> {
    if first.len() < 8 {
        return Err(format!("{NOT} ({total} bytes; a safetensors file starts with an 8-byte header length)"));
    }
    let n = u64::from_le_bytes(first[..8].try_into().expect("8 bytes"));
    if n > MAX_HEADER {
        return Err(format!("{NOT} (its first 8 bytes give a header length of {n} bytes)"));
    }
    if 8 + n > total {
        return Err(format!(
            "truncated or {NOT}: the header needs {n} bytes, the file has {} after the length",
            total - 8
        ));
    }
    Ok(n as usize)
}

/// Check the JSON header against a data section of `data_len` bytes.
fn parse_entries(header: &[u8], data_len: u64) -> std::result::Result<BTreeMap<String, Entry>, String> {
    let text = std::str::from_utf8(header).map_err(|_| format!("{NOT} (the header is not UTF-8)"))?;
    let json: serde_json::Value =
        serde_json::from_str(text.trim_end()).map_err(|e| format!("{NOT} (bad JSON header: {e})"))?;
    let obj = json.as_object().ok_or_else(|| format!("{NOT} (the header is not a JSON object)"))?;
    let mut entries = BTreeMap::new();
    for (name, v) in obj {
        if name == "__metadata__" {
            continue;
        }
        let bad = |what: &str| format!("bad header entry for `{name}`: {what}");
        let o = v.as_object().ok_or_else(|| bad("not an object"))?;
        let dtype = o.get("dtype").and_then(|d| d.as_str()).ok_or_else(|| bad("no dtype"))?.to_string();
        let shape: Vec<i64> = o
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad("no shape"))?
            .iter()
            .map(|d| d.as_u64().filter(|&d| d <= i64::MAX as u64).map(|d| d as i64))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("shape must be a list of non-negative integers"))?;
        let offs: Vec<u64> = o
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad("no data_offsets"))?
            .iter()
            .map(|d| d.as_u64())
            .collect::<Option<_>>()
            .ok_or_else(|| bad("data_offsets must be two non-negative integers"))?;
        let [start, end] = offs[..] else { return Err(bad("data_offsets must be two integers")) };
        if start > end {
            return Err(bad("data_offsets run backwards"));
        }
        if end > data_len {
            return Err(format!(
                "truncated: tensor `{name}` needs bytes {start}..{end} of the data section, which has {data_len}"
            ));
        }
        let size = tag_size(&dtype).ok_or_else(|| bad(&format!("unknown dtype {dtype}")))?;
        let numel = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64));
        let want = numel.and_then(|n| n.checked_mul(size as u64));
        if want != Some(end - start) {
            return Err(bad(&format!(
                "{} needs {} bytes, its data_offsets span {}",
                type_text(&dtype, &shape),
                want.map_or("too many".to_string(), |w| w.to_string()),
                end - start
            )));
        }
        entries.insert(name.clone(), Entry { dtype, shape, start: start as usize, end: end as usize });
    }
    Ok(entries)
}

/// Serialise named tensors (any device, any layout) to safetensors bytes.
pub fn to_bytes(tensors: &[(String, Tensor)]) -> Result<Vec<u8>> {
    let mut header = serde_json::Map::new();
    let mut datas: Vec<Vec<u8>> = Vec::with_capacity(tensors.len());
    let mut offset = 0usize;
    for (name, t) in tensors {
        if name == "__metadata__" || header.contains_key(name) {
            bail!("cannot write tensor name `{name}` twice or as `__metadata__`");
        }
        let t = t.f_to_device(Device::Cpu)?.f_contiguous()?;
        let kind = t.f_kind()?;
        let tag = tag_of_kind(kind)?;
        let numel = t.numel();
        let mut data = vec![0u8; numel * kind.elt_size_in_bytes()];
        if numel > 0 {
            t.f_copy_data_u8(&mut data, numel)?;
        }
        let end = offset + data.len();
        header.insert(
            name.clone(),
            serde_json::json!({ "dtype": tag, "shape": t.size(), "data_offsets": [offset, end] }),
        );
        offset = end;
        datas.push(data);
    }
    let mut text = serde_json::to_string(&serde_json::Value::Object(header))?;
    while (8 + text.len()) % 8 != 0 {
        text.push(' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + offset);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    for d in datas {
        out.extend_from_slice(&d);
    }
    Ok(out)
}

/// Write named tensors atomically and durably ([`crate::durable::write_atomic`]).
pub fn write(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let bytes = to_bytes(tensors)?;
    Ok(crate::durable::write_atomic(path, &bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<(String, Tensor)> {
        vec![
            ("a.weight".to_string(), Tensor::from_slice(&[1f32, 2., 3., 4., 5., 6.]).reshape([2, 3])),
            ("b".to_string(), Tensor::from_slice(&[7i64, 8])),
            ("c".to_string(), Tensor::from_slice(&[0.5f32, -1.0]).to_kind(Kind::BFloat16)),
        ]
    }

    #[test]
    fn round_trip() {
        let bytes = to_bytes(&sample()).unwrap();
        assert_eq!((u64::from_le_bytes(bytes[..8].try_into().unwrap()) + 8) % 8, 0);
        let f = SafeFile::from_bytes(Path::new("x.safetensors"), bytes).unwrap();
        assert_eq!(f.entries["a.weight"].type_text(), "f32[2, 3]");
        assert_eq!(f.entries["c"].type_text(), "bf16[2]");
        assert!(f.entries["b"].is_integer());
        for (name, t) in sample() {
            let back = f.tensor(&name).unwrap();
            assert_eq!(back.kind(), t.kind());
            assert!(back.equal(&t), "{name}");
        }
    }

    #[test]
    fn foreign_and_truncated_files_are_errors() {
        let p = Path::new("w.safetensors");
        let err = |b: Vec<u8>| SafeFile::from_bytes(p, b).err().expect("must fail").to_string();
        assert!(err(vec![1, 2, 3]).contains("not a safetensors file"));
        assert!(err(b"PK\x03\x04 this is a zip archive, not safetensors".to_vec()).contains("not a safetensors file"));
        let good = to_bytes(&sample()).unwrap();
        let e = err(good[..good.len() - 5].to_vec());
        assert!(e.contains("truncated"), "{e}");
        let e = err(good[..20].to_vec());
        assert!(e.contains("truncated"), "{e}");
        // The same checks on disk, where tensors are read one by one.
        let dir = std::env::temp_dir().join(format!("graft-st-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.safetensors");
        write(&path, &sample()).unwrap();
        let f = SafeFile::open(&path).unwrap();
        assert!(f.tensor("a.weight").unwrap().equal(&sample()[0].1));
        std::fs::write(&path, &good[..good.len() - 3]).unwrap();
        let e = SafeFile::open(&path).err().expect("truncated").to_string();
        assert!(e.contains("truncated"), "{e}");
        std::fs::write(&path, &good[..5]).unwrap();
        let e = SafeFile::open(&path).err().expect("short").to_string();
        assert!(e.contains("not a safetensors file"), "{e}");
        // A header that lies about a tensor's size.
        let h = r#"{"x":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}"#;
        let mut b = (h.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(h.as_bytes());
        b.extend_from_slice(&[0; 8]);
        assert!(err(b).contains("needs 16 bytes"));
        // A dtype LibTorch cannot hold is an error when loaded, not when listed.
        let h = r#"{"x":{"dtype":"U16","shape":[2],"data_offsets":[0,4]}}"#;
        let mut b = (h.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(h.as_bytes());
        b.extend_from_slice(&[0; 4]);
        let f = SafeFile::from_bytes(p, b).unwrap();
        assert!(f.tensor("x").unwrap_err().to_string().contains("cannot load"));
    }
}
