//! Fallible allocation of the backends' large buffers (the native arena, outputs,
//! generated inputs): a request the system refuses is a [`BackendError`] naming what
//! was being allocated, the bytes wanted and the limit in force, never an abort.
//!
//! Refusal is what the allocator reports: an address-space limit (`ulimit -v`) or a
//! request beyond what the kernel's overcommit rule allows. A request the kernel grants
//! but cannot back later is outside any process's control.

use super::error::BackendError;

/// `n` copies of `fill`, or an error naming `what`.
pub fn try_filled<T: Clone>(n: usize, fill: T, what: &str) -> Result<Vec<T>, BackendError> {
    let mut v = Vec::new();
    reserve(&mut v, n, what)?;
    v.resize(n, fill);
    Ok(v)
}

/// Room for `n` more elements in `v`, or an error naming `what`.
pub fn reserve<T>(v: &mut Vec<T>, n: usize, what: &str) -> Result<(), BackendError> {
    v.try_reserve_exact(n).map_err(|_| refused(n.saturating_mul(std::mem::size_of::<T>()), what))
}

/// Whether `bytes` could be allocated now (allocated and released at once); an error
/// naming `what` if not.
pub fn probe(bytes: usize, what: &str) -> Result<(), BackendError> {
    reserve(&mut Vec::<u8>::new(), bytes, what)
}

/// A transparent huge page (x86-64).
pub const HUGE_PAGE: usize = 2 << 20;

/// `bytes` of zeroed anonymous memory for `what` (the pages come from the system as it
/// is touched): the mapping and the byte offset in it where the room starts. From
/// [`HUGE_PAGE`] on the room starts on a huge-page boundary, spans whole huge pages and
/// on Linux is advised for transparent huge pages (where the system has none it keeps
/// ordinary pages); smaller room starts at 0.
pub fn zeroed_map(bytes: usize, what: &str) -> Result<(memmap2::MmapMut, usize), BackendError> {
    let huge = bytes >= HUGE_PAGE;
    let room = if huge { bytes.next_multiple_of(HUGE_PAGE) } else { bytes.max(1) };
    let map = memmap2::MmapMut::map_anon(room + if huge { HUGE_PAGE } else { 0 }).map_err(|_| refused(room, what))?;
    let start = if huge { map.as_ptr().align_offset(HUGE_PAGE) } else { 0 };
    #[cfg(target_os = "linux")]
    if huge {
        let _ = map.advise_range(memmap2::Advice::HugePage, start, room);
    }
    Ok((map, start))
}

/// The error for `bytes` the system would not give for `what`.
pub fn refused(bytes: usize, what: &str) -> BackendError {
    BackendError::Runtime {
        what: format!("allocating {what}"),
        message: format!("{} wanted, and {}; use a smaller batch or input", size(bytes), limit()),
    }
}

/// Drop `v`, first handing the whole pages inside its buffer back to the system
/// ([`discard_pages`]), so its memory leaves the resident set at once. glibc keeps a
/// freed block below its mmap threshold for reuse, and that threshold rises (up to 32
/// MiB) as large blocks are freed, so a parameter's plain copy stayed resident after
/// its packed form was made elsewhere (a mapping of its own): CLIP ViT-B/32's peak grew
/// by ~300 MB until this.
pub fn release(mut v: Vec<f32>) {
    discard_pages(&mut v);
    drop(v);
}

/// Hand the whole pages inside `v`'s buffer, clear of the allocator's own words at
/// either end, back to the system (Linux: `madvise(MADV_DONTNEED)`); they then read as
/// zeros. Elsewhere nothing happens.
fn discard_pages(v: &mut Vec<f32>) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let start = v.as_mut_ptr() as usize;
        let end = start + v.capacity() * 4;
        let (a, b) = ((start + 64).next_multiple_of(page), end.saturating_sub(64) / page * page);
        if b > a {
            // SAFETY: the pages lie inside `v`'s own anonymous allocation, borrowed
            // mutably here; after the advice they read as zeros, a valid f32 each.
            unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_DONTNEED) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}

/// A byte count for people.
fn size(bytes: usize) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else {
        format!("{:.1} MB", b / 1e6)
    }
}

/// The limit in force: the address-space limit when one is set, else the machine's
/// memory.
fn limit() -> String {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the limits into `r`.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut r) } == 0;
    if ok && r.rlim_cur != libc::RLIM_INFINITY {
        return format!("the address-space limit (ulimit -v) is {}", size(r.rlim_cur as usize));
    }
    match mem_total() {
        Some(m) => format!("the machine has {} of memory", size(m)),
        None => "the system refused it".to_string(),
    }
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn mem_total() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb.saturating_mul(1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn discarded_pages_read_as_zeros_and_the_block_edges_keep_their_values() {
        let mut v = vec![1.5f32; 1 << 20];
        discard_pages(&mut v);
        let zeros = v.iter().filter(|&&x| x == 0.0).count();
        // All but at most a page at each end of 4 MiB (pages of 4 to 64 KiB).
        assert!(zeros >= v.len() / 2, "{zeros} of {} discarded", v.len());
        assert_eq!((v[0], v[v.len() - 1]), (1.5, 1.5), "the edges are kept");
        assert!(v.iter().all(|&x| x == 0.0 || x == 1.5));
    }

    #[test]
    fn a_request_the_system_refuses_is_an_error_with_the_bytes_and_the_limit() {
        let e = try_filled::<u64>(usize::MAX / 16, 0, "a test buffer").unwrap_err().to_string();
        assert!(e.starts_with("allocating a test buffer: "), "{e}");
        assert!(e.contains("GB wanted, and "), "{e}");
        assert!(e.contains("ulimit -v") || e.contains("of memory") || e.contains("refused"), "{e}");
        let e = probe(usize::MAX, "an input").unwrap_err().to_string();
        assert!(e.starts_with("allocating an input: "), "{e}");
        assert_eq!(try_filled(3, 7u8, "x").unwrap(), vec![7, 7, 7]);
        assert!(probe(1 << 10, "a small buffer").is_ok());
    }
}
