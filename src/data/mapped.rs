//! A shard's data section in memory: the file mapped (`memmap2`), so the reader only
//! touches the bytes of the samples it reads — a video clip's 16 frames, not the
//! shard's every frame — and never copies them; read into a buffer where mapping
//! fails (a file system without it).
//!
//! Shard files are written once (temp file, fsync, rename) and never changed in
//! place, so the mapping holds the bytes the header describes. A shard truncated in
//! place while a reader maps it would fault; the length is checked when it is mapped.

use super::error::DataError;
use super::safetensors::{read_data, Header};
use std::path::Path;

pub(crate) enum ShardData {
    Mapped { map: memmap2::Mmap, start: usize, len: usize },
    Read(Vec<u8>),
}

impl ShardData {
    /// The data section of the shard at `path` with the checked `header`.
    pub fn open(path: &Path, header: &Header) -> Result<ShardData, DataError> {
        let file = crate::input_file::open_regular(path).map_err(|e| DataError::io(path, e))?;
        let have = file.metadata().map_err(|e| DataError::io(path, e))?.len();
        let want = header.data_start + header.data_len;
        if have < want {
            let key = header.entries.iter().find(|(_, e)| header.data_start + e.end > have).map(|(k, _)| k.clone());
            return Err(DataError::Truncated { path: path.to_path_buf(), key, expected: want, actual: have });
        }
        // SAFETY: the file is a finished shard (see the module doc): nothing writes it
        // while it is mapped, and its length covers the data section.
        match unsafe { memmap2::Mmap::map(&file) } {
            Ok(map) => Ok(ShardData::Mapped { map, start: header.data_start as usize, len: header.data_len as usize }),
            Err(_) => Ok(ShardData::Read(read_data(path, header)?)),
        }
    }
}

impl std::ops::Deref for ShardData {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            ShardData::Mapped { map, start, len } => &map[*start..*start + *len],
            ShardData::Read(v) => v,
        }
    }
}
