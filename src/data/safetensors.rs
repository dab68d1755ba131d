//! The safetensors container, read and written without a tensor library and without
//! trusting the file.
//!
//! Layout: an 8-byte little-endian header length `n`, `n` bytes of JSON
//! (`{"name": {"dtype": "F32", "shape": [..], "data_offsets": [a, b]}, "__metadata__": {..}}`),
//! then the data section. Every length and offset is checked against the file's size
//! before any data is read, so reading a header costs one small read and a truncated or
//! foreign file is an error that names the file (and the tensor), never a panic.

use super::error::DataError;
use super::tensor::{dtype_of_tag, elem_size, numel, st_tag, HostTensor};
use crate::ir::DType;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

/// Headers above this size are not plausible (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100 << 20;

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

/// A parsed header: entries by name and where the data section starts in the file.
#[derive(Clone, Debug)]
pub struct Header {
    pub entries: BTreeMap<String, Entry>,
    pub data_start: u64,
    /// Bytes the data section must have (the largest `end`).
    pub data_len: u64,
}

fn not_st(path: &Path, key: Option<&str>, reason: impl Into<String>) -> DataError {
    DataError::NotSafetensors { path: path.to_path_buf(), key: key.map(str::to_owned), reason: reason.into() }
}

/// Read and check the header of the file at `path`.
pub fn read_header(path: &Path) -> Result<Header, DataError> {
    let mut f = File::open(path).map_err(|e| DataError::io(path, e))?;
    let file_len = f.metadata().map_err(|e| DataError::io(path, e))?.len();
    if file_len < 8 {
        return Err(DataError::Truncated { path: path.to_path_buf(), key: None, expected: 8, actual: file_len });
    }
    let mut len8 = [0u8; 8];
    f.read_exact(&mut len8).map_err(|e| DataError::io(path, e))?;
    let n = u64::from_le_bytes(len8);
    if !(2..=MAX_HEADER).contains(&n) {
        return Err(not_st(path, None, format!("header length {n} is implausible")));
    }
    let avail = n.min(file_len - 8);
    let mut head = vec![0u8; avail as usize];
    f.read_exact(&mut head).map_err(|e| DataError::io(path, e))?;
    if head.first() != Some(&b'{') {
        return Err(not_st(path, None, "the header does not start with `{`"));
    }
    if avail < n {
        return Err(DataError::Truncated { path: path.to_path_buf(), key: None, expected: 8 + n, actual: file_len });
    }
    let json: serde_json::Value =
        serde_json::from_slice(&head).map_err(|e| not_st(path, None, format!("header is not JSON: {e}")))?;
    let obj = json.as_object().ok_or_else(|| not_st(path, None, "header is not a JSON object"))?;
    let mut entries = BTreeMap::new();
    for (name, v) in obj {
        if name == "__metadata__" {
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
            return Err(not_st(path, Some(name), format!("data starts at byte {}, expected {at}", e.start)));
        }
        at = e.end;
    }
    let data_start = 8 + n;
    if let Some((name, e)) = ranges.iter().find(|(_, e)| data_start + e.end > file_len) {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            key: Some(name.to_string()),
            expected: data_start + e.end,
            actual: file_len,
        });
    }
    Ok(Header { entries, data_start, data_len: at })
}

fn parse_entry(path: &Path, name: &str, v: &serde_json::Value) -> Result<Entry, DataError> {
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
    let dtype = dtype_of_tag(tag);
    if let Some(dt) = dtype {
        let need = numel(&shape).and_then(|n| n.checked_mul(elem_size(dt))).ok_or_else(|| bad("shape overflows"))?;
        if need as u64 != end - start {
            return Err(bad(&format!("{} data bytes for {} of shape {shape:?}, expected {need}", end - start, tag)));
        }
    }
    Ok(Entry { tag: tag.to_string(), dtype, shape, start, end })
}

/// Read `len` bytes of the data section (from `data_start`).
pub fn read_data(path: &Path, header: &Header) -> Result<Vec<u8>, DataError> {
    use std::io::{Seek, SeekFrom};
    let mut f = File::open(path).map_err(|e| DataError::io(path, e))?;
    f.seek(SeekFrom::Start(header.data_start)).map_err(|e| DataError::io(path, e))?;
    let mut data = Vec::new();
    f.take(header.data_len).read_to_end(&mut data).map_err(|e| DataError::io(path, e))?;
    if (data.len() as u64) < header.data_len {
        // The file shrank after its header was checked.
        let actual = header.data_start + data.len() as u64;
        let key = header.entries.iter().find(|(_, e)| e.end > data.len() as u64).map(|(k, _)| k.clone());
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            key,
            expected: header.data_start + header.data_len,
            actual,
        });
    }
    Ok(data)
}

/// Encode tensors (in name order) with optional string metadata. The header is padded
/// with spaces to a multiple of 8 bytes, as the reference implementation does.
pub fn encode(tensors: &BTreeMap<String, HostTensor>, metadata: &BTreeMap<String, String>) -> Vec<u8> {
    let mut parts = Vec::new();
    if !metadata.is_empty() {
        parts.push(format!("\"__metadata__\":{}", serde_json::to_string(metadata).unwrap_or_default()));
    }
    let mut at = 0u64;
    for (name, t) in tensors {
        let end = at + t.data.len() as u64;
        parts.push(format!(
            "{}:{{\"dtype\":\"{}\",\"shape\":{:?},\"data_offsets\":[{at},{end}]}}",
            serde_json::to_string(name).unwrap_or_default(),
            st_tag(t.dtype),
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
    for t in tensors.values() {
        out.extend_from_slice(&t.data);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("graft-data-st-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d.join("t.safetensors")
    }

    #[test]
    fn encode_then_read_header() {
        let mut ts = BTreeMap::new();
        ts.insert("label".to_string(), HostTensor::from_i64(&[3], &[0, 1, 2]).unwrap());
        ts.insert("x".to_string(), HostTensor::from_f32(&[3, 2], &[0.5; 6]).unwrap());
        let meta = BTreeMap::from([("format".to_string(), "test".to_string())]);
        let bytes = encode(&ts, &meta);
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        assert_eq!(n % 8, 0);
        let p = tmp("rt");
        crate::durable::write_atomic(&p, &bytes).unwrap();
        let h = read_header(&p).unwrap();
        assert_eq!(h.entries["x"].shape, vec![3, 2]);
        assert_eq!(h.entries["label"].dtype, Some(DType::I64));
        assert_eq!(h.data_len, 24 + 24);
        let data = read_data(&p, &h).unwrap();
        let e = &h.entries["x"];
        assert_eq!(&data[e.start as usize..e.end as usize], &ts["x"].data[..]);
        // Cut into the data: the tensor that no longer fits is named.
        std::fs::write(&p, &bytes[..bytes.len() - 5]).unwrap();
        match read_header(&p) {
            Err(DataError::Truncated { key: Some(k), .. }) => assert_eq!(k, "x"),
            other => panic!("{other:?}"),
        }
        std::fs::write(&p, b"\x05\0\0\0\0\0\0\0{\"a\":").unwrap();
        assert!(matches!(read_header(&p), Err(DataError::NotSafetensors { .. })));
        std::fs::write(&p, [0xFFu8; 64]).unwrap();
        assert!(matches!(read_header(&p), Err(DataError::NotSafetensors { .. })));
        std::fs::write(&p, [1u8; 3]).unwrap();
        assert!(matches!(read_header(&p), Err(DataError::Truncated { .. })));
    }
}
