//! The safetensors container: the one reader and writer for the crate (datasets,
//! weights files, checkpoints, `graft run`'s inputs and outputs), without a tensor
//! library and without trusting the file.
//!
//! Layout: an 8-byte little-endian header length `n`, `n` bytes of JSON
//! (`{"name": {"dtype": "F32", "shape": [..], "data_offsets": [a, b]}, "__metadata__": {..}}`),
//! then the data section. Every length and offset is checked before any data is read:
//! the header length against the file size, each tensor's byte count against its dtype
//! size × element count, and the tensors must tile the data section (no gaps, no
//! overlaps) and fit in the file. A truncated or foreign file is an error naming the
//! file (and the tensor), never a panic. [`SafeFile`] reads a tensor at a time, so a
//! large checkpoint is never held in memory twice. Writing goes through
//! [`crate::durable::write_atomic`]. [`crc`]: each tensor's CRC-32 recorded in the
//! metadata and checked against the bytes.

use crate::durable::WriteError;
use crate::ir::DType;
use crate::tensor::{dtype_of_tag, elem_size, numel, st_tag, type_text, HostTensor};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

mod crc;
pub use crc::{tensor_crc32, TENSOR_CRC32};

/// Headers above this size are not plausible (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100 << 20;

/// What can go wrong with a safetensors file.
#[derive(Debug, thiserror::Error)]
pub enum SafetensorsError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a safetensors file{}: {reason}", path.display(), key_suffix(key))]
    NotSafetensors { path: PathBuf, key: Option<String>, reason: String },
    #[error("{}: truncated{}: needs {expected} bytes, the file has {actual}", path.display(), key_suffix(key))]
    Truncated { path: PathBuf, key: Option<String>, expected: u64, actual: u64 },
    /// A tensor whose dtype graft has no type for (`U8`, `F8_E4M3`…), when its values
    /// are asked for.
    #[error("{}: tensor `{key}` has dtype {tag}, which graft cannot load", path.display())]
    Unsupported { path: PathBuf, key: String, tag: String },
    #[error("{}: no tensor `{key}`", path.display())]
    NoTensor { path: PathBuf, key: String },
    /// A tensor whose bytes no longer have the CRC-32 its writer recorded
    /// ([`TENSOR_CRC32`]).
    #[error("{}: tensor `{key}` has CRC-32 {actual}, its writer recorded {recorded}: the file was damaged or changed after it was written", path.display())]
    Damaged { path: PathBuf, key: String, recorded: String, actual: String },
    /// A [`TENSOR_CRC32`] record that is not one for the file's tensors.
    #[error("{}: {reason}: its header was changed after it was written", path.display())]
    BadRecord { path: PathBuf, reason: String },
    /// Tensors that cannot be written (a repeated or reserved name, bytes that do not
    /// match the shape).
    #[error("cannot write safetensors: {0}")]
    Encode(String),
    #[error(transparent)]
    Write(#[from] WriteError),
}

fn key_suffix(key: &Option<String>) -> String {
    key.as_ref().map(|k| format!(" (tensor `{k}`)")).unwrap_or_default()
}

/// Bytes per element of a tag, for every tag of the format (graft loads fewer).
fn tag_size(tag: &str) -> Option<u64> {
    Some(match tag {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => 1,
        _ => return None,
    })
}

/// One tensor's header entry; `start..end` is its byte range in the data section.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The file's tag (`F32`, `I64`, …); `dtype` is `None` for tags graft lacks (`U8`).
    pub tag: String,
    pub dtype: Option<DType>,
    pub shape: Vec<i64>,
    pub start: u64,
    pub end: u64,
}

impl Entry {
    /// `f32[768, 2304]`, or with the file's tag for types graft lacks.
    pub fn type_text(&self) -> String {
        match self.dtype {
            Some(d) => type_text(d, &self.shape),
            None => {
                let dims: Vec<String> = self.shape.iter().map(|d| d.to_string()).collect();
                format!("{}[{}]", self.tag.to_lowercase(), dims.join(", "))
            }
        }
    }

    /// Integer and boolean tensors (buffers such as `position_ids`).
    pub fn is_integer(&self) -> bool {
        !matches!(self.tag.as_str(), "F64" | "F32" | "F16" | "BF16" | "F8_E4M3" | "F8_E5M2")
    }
}

/// A parsed header: entries by name and where the data section starts in the file.
#[derive(Clone, Debug)]
pub struct Header {
    pub entries: BTreeMap<String, Entry>,
    /// `__metadata__`, string to string.
    pub metadata: BTreeMap<String, String>,
    pub data_start: u64,
    /// Bytes the data section has (the tensors end to end).
    pub data_len: u64,
}

fn not_st(path: &Path, key: Option<&str>, reason: impl Into<String>) -> SafetensorsError {
    SafetensorsError::NotSafetensors { path: path.to_path_buf(), key: key.map(str::to_owned), reason: reason.into() }
}

fn io(path: &Path, source: std::io::Error) -> SafetensorsError {
    SafetensorsError::Io { path: path.to_path_buf(), source }
}

/// Read and check the header of the file at `path`.
pub fn read_header(path: &Path) -> Result<Header, SafetensorsError> {
    let mut f = crate::input_file::open_regular(path).map_err(|e| io(path, e))?;
    read_header_from(path, &mut f)
}

fn read_header_from(path: &Path, f: &mut File) -> Result<Header, SafetensorsError> {
    let file_len = f.metadata().map_err(|e| io(path, e))?.len();
    let mut first = [0u8; 8];
    let got = read_up_to(f, &mut first).map_err(|e| io(path, e))?;
    let n = header_len(path, &first[..got], file_len)?;
    let mut head = vec![0u8; n as usize];
    f.read_exact(&mut head).map_err(|e| io(path, e))?;
    parse_header(path, &head, file_len)
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

/// The header length from the first bytes, checked against the file size.
fn header_len(path: &Path, first: &[u8], file_len: u64) -> Result<u64, SafetensorsError> {
    if first.len() < 8 {
        // Shorter than the header length every safetensors file starts with.
        return Err(SafetensorsError::Truncated { path: path.to_path_buf(), key: None, expected: 8, actual: file_len });
    }
    let n = u64::from_le_bytes(first[..8].try_into().expect("8 bytes"));
    if !(2..=MAX_HEADER).contains(&n) {
        return Err(not_st(path, None, format!("its first 8 bytes give a header length of {n} bytes")));
    }
    if 8 + n > file_len {
        return Err(SafetensorsError::Truncated {
            path: path.to_path_buf(),
            key: None,
            expected: 8 + n,
            actual: file_len,
        });
    }
    Ok(n)
}

/// Check a header's JSON against a file of `file_len` bytes.
fn parse_header(path: &Path, head: &[u8], file_len: u64) -> Result<Header, SafetensorsError> {
    if head.first() != Some(&b'{') {
        return Err(not_st(path, None, "the header does not start with `{`"));
    }
    let Members(obj) =
        serde_json::from_slice(head).map_err(|e| not_st(path, None, format!("header is not JSON: {e}")))?;
    // A name given twice is refused, as the reference implementation does (a JSON
    // parser would keep one of the two silently).
    let mut seen = std::collections::BTreeSet::new();
    if let Some((name, _)) = obj.iter().find(|(n, _)| !seen.insert(n.as_str())) {
        return Err(not_st(path, Some(name), "the name appears twice in the header"));
    }
    let mut entries = BTreeMap::new();
    let mut metadata = BTreeMap::new();
    for (name, v) in &obj {
        if name == "__metadata__" {
            let m = v.as_object().ok_or_else(|| not_st(path, None, "`__metadata__` is not an object"))?;
            for (k, v) in m {
                let s = v.as_str().ok_or_else(|| not_st(path, None, format!("`__metadata__.{k}` is not a string")))?;
                metadata.insert(k.clone(), s.to_string());
            }
            continue;
        }
        entries.insert(name.clone(), parse_entry(path, name, v)?);
    }
    // The data section is the entries laid end to end, without gaps or overlaps.
    let mut ranges: Vec<(&String, &Entry)> = entries.iter().collect();
    ranges.sort_by_key(|(_, e)| (e.start, e.end));
    let mut at = 0;
    for (name, e) in &ranges {
        if e.start != at {
            let what = if e.start < at { "overlaps the tensor before it" } else { "leaves a gap before it" };
            return Err(not_st(path, Some(name), format!("data starts at byte {}, expected {at} ({what})", e.start)));
        }
        at = e.end;
    }
    let data_start = 8 + head.len() as u64;
    if let Some((name, e)) = ranges.iter().find(|(_, e)| data_start + e.end > file_len) {
        return Err(SafetensorsError::Truncated {
            path: path.to_path_buf(),
            key: Some(name.to_string()),
            expected: data_start + e.end,
            actual: file_len,
        });
    }
    Ok(Header { entries, metadata, data_start, data_len: at })
}

/// A JSON object's members in file order, duplicates kept.
struct Members(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Members, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Members, A::Error> {
                let mut v = Vec::new();
                while let Some(kv) = m.next_entry::<String, serde_json::Value>()? {
                    v.push(kv);
                }
                Ok(Members(v))
            }
        }
        d.deserialize_map(V)
    }
}

fn parse_entry(path: &Path, name: &str, v: &serde_json::Value) -> Result<Entry, SafetensorsError> {
    let bad = |why: &str| not_st(path, Some(name), why.to_string());
    let tag = v.get("dtype").and_then(|d| d.as_str()).ok_or_else(|| bad("no string `dtype`"))?;
    let shape: Vec<i64> = v
        .get("shape")
        .and_then(|s| s.as_array())
        .ok_or_else(|| bad("no `shape` array"))?
        .iter()
        .map(|d| d.as_u64().and_then(|d| i64::try_from(d).ok()))
        .collect::<Option<_>>()
        .ok_or_else(|| bad("`shape` holds a value that is not a non-negative integer"))?;
    let offs = v.get("data_offsets").and_then(|o| o.as_array()).ok_or_else(|| bad("no `data_offsets` array"))?;
    let (start, end) = match offs.as_slice() {
        [a, b] => (a.as_u64(), b.as_u64()),
        _ => (None, None),
    };
    let (Some(start), Some(end)) = (start, end) else {
        return Err(bad("`data_offsets` is not [start, end]"));
    };
    if end < start {
        return Err(bad("`data_offsets` end before start"));
    }
    let size = tag_size(tag).ok_or_else(|| bad(&format!("unknown dtype {tag}")))?;
    let need = numel(&shape).and_then(|n| (n as u64).checked_mul(size)).ok_or_else(|| bad("shape overflows"))?;
    if need != end - start {
        return Err(bad(&format!("{tag}{shape:?} needs {need} bytes, its data_offsets span {}", end - start)));
    }
    Ok(Entry { tag: tag.to_string(), dtype: dtype_of_tag(tag), shape, start, end })
}

/// Read the whole data section (from `data_start`).
pub fn read_data(path: &Path, header: &Header) -> Result<Vec<u8>, SafetensorsError> {
    let mut f = crate::input_file::open_regular(path).map_err(|e| io(path, e))?;
    f.seek(SeekFrom::Start(header.data_start)).map_err(|e| io(path, e))?;
    let mut data = Vec::new();
    f.take(header.data_len).read_to_end(&mut data).map_err(|e| io(path, e))?;
    if (data.len() as u64) < header.data_len {
        // The file shrank after its header was checked.
        let key = header.entries.iter().find(|(_, e)| e.end > data.len() as u64).map(|(k, _)| k.clone());
        return Err(SafetensorsError::Truncated {
            path: path.to_path_buf(),
            key,
            expected: header.data_start + header.data_len,
            actual: header.data_start + data.len() as u64,
        });
    }
    Ok(data)
}

/// Where a [`SafeFile`]'s data section is read from.
enum Source {
    Bytes(Vec<u8>),
    /// Tensors are read one at a time, so loading never holds the whole file twice.
    File(Mutex<File>),
}

/// A safetensors file: its checked header, and its data read on demand.
pub struct SafeFile {
    pub path: PathBuf,
    pub header: Header,
    source: Source,
}

impl SafeFile {
    /// Open a file and check its header; no tensor data is read yet.
    pub fn open(path: &Path) -> Result<SafeFile, SafetensorsError> {
        let mut f = crate::input_file::open_regular(path).map_err(|e| io(path, e))?;
        let header = read_header_from(path, &mut f)?;
        Ok(SafeFile { path: path.to_path_buf(), header, source: Source::File(Mutex::new(f)) })
    }

    /// A file held in memory (`path` names it in messages).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<SafeFile, SafetensorsError> {
        let total = bytes.len() as u64;
        let n = header_len(path, &bytes[..bytes.len().min(8)], total)?;
        let header = parse_header(path, &bytes[8..8 + n as usize], total)?;
        Ok(SafeFile { path: path.to_path_buf(), header, source: Source::Bytes(bytes) })
    }

    /// Entries by name (sorted).
    pub fn entries(&self) -> &BTreeMap<String, Entry> {
        &self.header.entries
    }

    /// The tensor `name`, in the file's dtype.
    pub fn tensor(&self, name: &str) -> Result<HostTensor, SafetensorsError> {
        let path = &self.path;
        let e = self
            .header
            .entries
            .get(name)
            .ok_or_else(|| SafetensorsError::NoTensor { path: path.clone(), key: name.to_string() })?;
        let dtype = e.dtype.ok_or_else(|| SafetensorsError::Unsupported {
            path: path.clone(),
            key: name.to_string(),
            tag: e.tag.clone(),
        })?;
        Ok(HostTensor { dtype, shape: e.shape.clone(), data: self.bytes(name, e)? })
    }

    /// The bytes of entry `e` (named `name`), whatever its dtype.
    fn bytes(&self, name: &str, e: &Entry) -> Result<Vec<u8>, SafetensorsError> {
        let path = &self.path;
        let (a, b) = (self.header.data_start + e.start, self.header.data_start + e.end);
        // The header check guarantees the byte range holds exactly numel elements.
        let data = match &self.source {
            Source::Bytes(bytes) => bytes[a as usize..b as usize].to_vec(),
            Source::File(f) => {
                let mut data = vec![0u8; (b - a) as usize];
                let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
                f.seek(SeekFrom::Start(a)).and_then(|_| f.read_exact(&mut data)).map_err(|source| {
                    let what = format!("reading tensor `{name}` (was the file changed while loading?): {source}");
                    io(path, std::io::Error::new(source.kind(), what))
                })?;
                data
            }
        };
        Ok(data)
    }

    /// Every tensor, in name order.
    pub fn tensors(&self) -> Result<Vec<(String, HostTensor)>, SafetensorsError> {
        self.header.entries.keys().map(|k| Ok((k.clone(), self.tensor(k)?))).collect()
    }
}

/// Encode tensors (in the order given) with string metadata. The header is padded
/// with spaces to a multiple of 8 bytes, as the reference implementation does.
pub fn encode<'a>(
    tensors: impl IntoIterator<Item = (&'a String, &'a HostTensor)>,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, SafetensorsError> {
    let mut raw = Vec::new();
    for (name, t) in tensors {
        if Some(t.data.len()) != numel(&t.shape).map(|n| n * elem_size(t.dtype)) {
            return Err(SafetensorsError::Encode(format!("`{name}`: {} bytes for {}", t.data.len(), t.type_text())));
        }
        raw.push(RawTensor { name, tag: st_tag(t.dtype), shape: &t.shape, data: &t.data });
    }
    encode_raw(&raw, metadata)
}

/// A tensor given by its safetensors tag, for types graft's [`DType`] lacks (`U8`).
pub struct RawTensor<'a> {
    pub name: &'a str,
    pub tag: &'a str,
    pub shape: &'a [i64],
    pub data: &'a [u8],
}

/// [`encode`] for tensors given by tag (the data length is checked against the shape).
pub fn encode_raw(tensors: &[RawTensor], metadata: &BTreeMap<String, String>) -> Result<Vec<u8>, SafetensorsError> {
    let mut parts = Vec::new();
    if !metadata.is_empty() {
        parts.push(format!("\"__metadata__\":{}", serde_json::to_string(metadata).unwrap_or_default()));
    }
    let mut names = std::collections::BTreeSet::new();
    let mut at = 0u64;
    for t in tensors {
        let name = t.name;
        if name == "__metadata__" || !names.insert(name) {
            return Err(SafetensorsError::Encode(format!("tensor name `{name}` twice or reserved")));
        }
        let size =
            tag_size(t.tag).ok_or_else(|| SafetensorsError::Encode(format!("`{name}`: unknown tag {}", t.tag)))?;
        if Some(t.data.len()) != numel(t.shape).map(|n| n * size as usize) {
            return Err(SafetensorsError::Encode(format!(
                "`{name}`: {} bytes for {}{:?}",
                t.data.len(),
                t.tag,
                t.shape
            )));
        }
        let end = at + t.data.len() as u64;
        parts.push(format!(
            "{}:{{\"dtype\":\"{}\",\"shape\":{:?},\"data_offsets\":[{at},{end}]}}",
            serde_json::to_string(name).unwrap_or_default(),
            t.tag,
            t.shape
        ));
        at = end;
    }
    let mut header = format!("{{{}}}", parts.join(",")).into_bytes();
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + at as usize);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    for t in tensors {
        out.extend_from_slice(t.data);
    }
    Ok(out)
}

/// Write named tensors (in the order given) and metadata, atomically and durably.
pub fn write(
    path: &Path,
    tensors: &[(String, HostTensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<(), SafetensorsError> {
    let bytes = encode(tensors.iter().map(|(n, t)| (n, t)), metadata)?;
    Ok(crate::durable::write_atomic(path, &bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn sample() -> Vec<(String, HostTensor)> {
        vec![
            ("a.weight".to_string(), HostTensor::from_f32(&[2, 3], &[1., 2., 3., 4., 5., 6.]).unwrap()),
            ("b".to_string(), HostTensor::from_i64(&[2], &[7, 8]).unwrap()),
            ("c".to_string(), HostTensor::from_f32(&[2], &[0.5, -1.0]).unwrap().to_dtype(DType::BF16)),
        ]
    }

    pub(super) fn bytes() -> Vec<u8> {
        let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        encode(sample().iter().map(|(n, t)| (n, t)), &meta).unwrap()
    }

    fn raw(header: &str, data: usize) -> Vec<u8> {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.extend(std::iter::repeat_n(0u8, data));
        b
    }

    #[test]
    fn round_trip_in_memory_and_on_disk() {
        let b = bytes();
        assert_eq!(u64::from_le_bytes(b[..8].try_into().unwrap()) % 8, 0);
        let f = SafeFile::from_bytes(Path::new("x.safetensors"), b).unwrap();
        assert_eq!(f.entries()["a.weight"].type_text(), "f32[2, 3]");
        assert_eq!(f.entries()["c"].type_text(), "bf16[2]");
        assert!(f.entries()["b"].is_integer() && !f.entries()["c"].is_integer());
        assert_eq!(f.header.metadata["format"], "pt");
        assert_eq!(f.tensors().unwrap(), sample());
        let dir = tempfile::Builder::new().prefix("graft-st-").tempdir().unwrap();
        let dir = dir.path();
        let path = dir.join("t.safetensors");
        write(&path, &sample(), &BTreeMap::new()).unwrap();
        let f = SafeFile::open(&path).unwrap();
        assert_eq!(f.tensor("a.weight").unwrap(), sample()[0].1);
        assert_eq!(read_data(&path, &f.header).unwrap().len(), 24 + 16 + 4);
        let e = f.tensor("zz").unwrap_err().to_string();
        assert!(e.contains("no tensor `zz`"), "{e}");
        // Cut into the data: the tensor that no longer fits is named.
        let good = bytes();
        std::fs::write(&path, &good[..good.len() - 3]).unwrap();
        match SafeFile::open(&path) {
            Err(SafetensorsError::Truncated { key: Some(k), .. }) => assert_eq!(k, "c"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("truncated file opened"),
        }
        std::fs::write(&path, &good[..5]).unwrap();
        let e = SafeFile::open(&path).err().unwrap().to_string();
        assert!(e.contains("truncated: needs 8 bytes, the file has 5"), "{e}");
    }

    #[test]
    fn foreign_lying_and_overlapping_headers_are_errors() {
        let p = Path::new("w.safetensors");
        let err = |b: Vec<u8>| SafeFile::from_bytes(p, b).err().expect("must fail").to_string();
        assert!(err(vec![1, 2, 3]).contains("truncated"));
        assert!(err(b"PK\x03\x04 this is a zip archive, not safetensors".to_vec()).contains("not a safetensors file"));
        let good = bytes();
        assert!(err(good[..good.len() - 5].to_vec()).contains("truncated"));
        assert!(err(good[..20].to_vec()).contains("truncated"));
        // A header that lies about a tensor's size.
        let e = err(raw(r#"{"x":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}"#, 8));
        assert!(e.contains("needs 16 bytes"), "{e}");
        // Two tensors over the same bytes; a gap between tensors.
        let h = r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
        assert!(err(raw(h, 8)).contains("overlaps"));
        let h = r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"y":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
        assert!(err(raw(h, 12)).contains("gap"));
        assert!(err(raw(r#"{"x":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}}"#, 1)).contains("unknown dtype Q4"));
        // A dtype graft cannot hold is an error when loaded, not when listed.
        let f = SafeFile::from_bytes(p, raw(r#"{"x":{"dtype":"U16","shape":[2],"data_offsets":[0,4]}}"#, 4)).unwrap();
        assert_eq!(f.entries()["x"].type_text(), "u16[2]");
        assert!(f.tensor("x").unwrap_err().to_string().contains("cannot load"));
        // Writing refuses what it could not read back.
        let t = HostTensor::from_f32(&[1], &[1.0]).unwrap();
        let twice = [("a".to_string(), t.clone()), ("a".to_string(), t)];
        assert!(encode(twice.iter().map(|(n, t)| (n, t)), &BTreeMap::new()).is_err());
    }
}
