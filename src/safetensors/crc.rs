//! Each tensor's CRC-32 in a file's metadata: written with checkpoints, so that bytes
//! damaged or changed after the write are found before a run is resumed or evaluated,
//! and named by file and tensor.

use super::{HostTensor, SafeFile, SafetensorsError};
use std::collections::BTreeMap;

/// The metadata key under which a writer records each tensor's CRC-32 (a JSON object
/// of names to 8 hex digits, [`tensor_crc32`]), so that damage to the data after it was
/// written is found, and named, by [`SafeFile::check_crc32`].
pub const TENSOR_CRC32: &str = "tensor_crc32";

/// [`TENSOR_CRC32`]'s value for `tensors`.
pub fn tensor_crc32(tensors: &[(String, HostTensor)]) -> String {
    let map: BTreeMap<&str, String> = tensors.iter().map(|(n, t)| (n.as_str(), crc32_hex(&t.data))).collect();
    serde_json::to_string(&map).unwrap_or_default()
}

fn crc32_hex(bytes: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(bytes))
}

impl SafeFile {
    /// Check every tensor against the CRC-32 its writer recorded ([`TENSOR_CRC32`]),
    /// reading one tensor at a time: `Ok(false)` where the writer recorded none (a file
    /// graft did not write with them); an error naming the first tensor whose bytes
    /// differ, or a record that does not list exactly the file's tensors.
    pub fn check_crc32(&self) -> Result<bool, SafetensorsError> {
        let Some(text) = self.header.metadata.get(TENSOR_CRC32) else { return Ok(false) };
        let bad = |reason: String| SafetensorsError::BadRecord { path: self.path.clone(), reason };
        let recorded: BTreeMap<String, String> = serde_json::from_str(text)
            .map_err(|_| bad(format!("its metadata `{TENSOR_CRC32}` is not an object of tensor names to CRC-32s")))?;
        if let Some(k) = recorded.keys().find(|k| !self.header.entries.contains_key(*k)) {
            return Err(bad(format!("its metadata `{TENSOR_CRC32}` lists `{k}`, which the file does not hold")));
        }
        for (name, e) in &self.header.entries {
            let Some(want) = recorded.get(name) else {
                return Err(bad(format!("its metadata `{TENSOR_CRC32}` has no CRC-32 for tensor `{name}`")));
            };
            let actual = crc32_hex(&self.bytes(name, e)?);
            if actual != *want {
                return Err(SafetensorsError::Damaged {
                    path: self.path.clone(),
                    key: name.clone(),
                    recorded: want.clone(),
                    actual,
                });
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::super::encode;
    use super::super::tests::{bytes, sample};
    use super::*;
    use std::path::Path;

    #[test]
    fn recorded_crcs_find_and_name_a_damaged_tensor() {
        let p = Path::new("ckpt.safetensors");
        let t = sample();
        let meta = BTreeMap::from([(TENSOR_CRC32.to_string(), tensor_crc32(&t))]);
        let good = encode(t.iter().map(|(n, t)| (n, t)), &meta).unwrap();
        assert!(SafeFile::from_bytes(p, good.clone()).unwrap().check_crc32().unwrap());
        // One bit of `b` flipped (its 16 bytes come after `a.weight`'s 24).
        let f = SafeFile::from_bytes(p, good.clone()).unwrap();
        let at = (f.header.data_start + f.header.entries["b"].start + 3) as usize;
        let mut bad = good.clone();
        bad[at] ^= 0x10;
        let e = SafeFile::from_bytes(p, bad).unwrap().check_crc32().unwrap_err().to_string();
        assert!(e.starts_with("ckpt.safetensors: tensor `b` has CRC-32 ") && e.contains("damaged or changed"), "{e}");
        // No record: nothing to check. A record that is not the file's tensors: refused.
        assert!(!SafeFile::from_bytes(p, bytes()).unwrap().check_crc32().unwrap());
        let with = |v: &str| {
            let meta = BTreeMap::from([(TENSOR_CRC32.to_string(), v.to_string())]);
            let b = encode(t.iter().map(|(n, t)| (n, t)), &meta).unwrap();
            SafeFile::from_bytes(p, b).unwrap().check_crc32().unwrap_err().to_string()
        };
        assert!(with("[1, 2]").contains("not an object of tensor names to CRC-32s"));
        let short = tensor_crc32(&t[..2]);
        assert!(with(&short).contains("no CRC-32 for tensor `c`"), "{}", with(&short));
        let extra = tensor_crc32(&[t.clone(), vec![("d".to_string(), t[0].1.clone())]].concat());
        assert!(with(&extra).contains("lists `d`, which the file does not hold"));
    }
}
