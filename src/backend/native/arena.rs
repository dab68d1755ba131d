//! The static arena: byte offsets for every buffer of a forward, assigned once at plan
//! time from the buffers' lifetimes (greedy by size: largest first, each at the lowest
//! offset that overlaps no already-placed buffer whose lifetime intersects its own).
//!
//! A lifetime is the inclusive range of step indices from the first writer to the
//! last reader, derived from what each step declares it reads and writes
//! ([`lifetimes`], [`Step::access`](super::program::Step::access)): nothing keeps
//! lifetimes by hand. Model outputs live to the end. Running a forward then allocates
//! nothing: every buffer is a fixed range of one allocation kept across runs.

use super::program::Access;
use crate::backend::BackendError;

/// Offsets are multiples of this (a cache line, and AVX-512 aligned).
pub const ALIGN: usize = 64;

/// One buffer to place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub bytes: usize,
    /// First and last instruction (inclusive) that touch it.
    pub first: usize,
    pub last: usize,
}

/// Placed buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Byte offset per request, in request order.
    pub offsets: Vec<usize>,
    /// Arena size in bytes.
    pub size: usize,
    /// The most bytes live at one instruction (a lower bound for `size`).
    pub peak_live: usize,
}

fn round(b: usize) -> usize {
    b.div_ceil(ALIGN) * ALIGN
}

/// Place `reqs` (greedy by size, ties in request order).
pub fn plan(reqs: &[Request]) -> Layout {
    let mut order: Vec<usize> = (0..reqs.len()).collect();
    order.sort_by(|&a, &b| reqs[b].bytes.cmp(&reqs[a].bytes).then(a.cmp(&b)));
    let mut offsets = vec![0usize; reqs.len()];
    // Placed so far, as (offset, end, index), sorted by offset.
    let mut placed: Vec<(usize, usize, usize)> = Vec::new();
    let mut size = 0usize;
    for i in order {
        let r = reqs[i];
        let need = round(r.bytes);
        let mut at = 0usize;
        for &(lo, hi, j) in &placed {
            let q = reqs[j];
            if q.last < r.first || r.last < q.first {
                continue; // lifetimes disjoint: may share bytes
            }
            if lo >= at + need {
                break; // the gap before this one fits
            }
            at = at.max(hi);
        }
        offsets[i] = at;
        size = size.max(at + need);
        let pos = placed.partition_point(|&(lo, _, _)| lo <= at);
        placed.insert(pos, (at, at + need, i));
    }
    let end = reqs.iter().map(|r| r.last + 1).max().unwrap_or(0);
    let mut live = vec![0usize; end];
    for r in reqs {
        for l in &mut live[r.first..=r.last] {
            *l += round(r.bytes);
        }
    }
    Layout { offsets, size, peak_live: live.into_iter().max().unwrap_or(0) }
}

/// Each arena buffer's lifetime `(first, last)` from the steps' declarations, in step
/// order: from the step that first writes it to the last step that reads or writes
/// it; buffers in `live_out` (model outputs) live to `steps` (one past the last).
/// `None`: no step touches the buffer. A buffer read before any step writes it, or a
/// step that reads a buffer it writes, is an error (a lowering bug).
pub fn lifetimes<'a>(
    access: impl IntoIterator<Item = &'a Access>,
    buffers: usize,
    live_out: &[usize],
) -> Result<Vec<Option<(usize, usize)>>, String> {
    let mut life: Vec<Option<(usize, usize)>> = vec![None; buffers];
    let mut steps = 0;
    for (i, a) in access.into_iter().enumerate() {
        steps = i + 1;
        for b in Access::arena(&a.writes) {
            if Access::arena(&a.reads).any(|r| r == b) {
                return Err(format!("step {i} reads buffer {b}, which it writes"));
            }
            let l = life[b].get_or_insert((i, i));
            l.1 = i;
        }
        for b in Access::arena(&a.reads) {
            match &mut life[b] {
                Some(l) => l.1 = i,
                None => return Err(format!("step {i} reads buffer {b} before any step writes it")),
            }
        }
    }
    for &b in live_out {
        if let Some(l) = &mut life[b] {
            l.1 = steps;
        }
    }
    Ok(life)
}

/// An arena allocation: `ALIGN`-aligned f32 storage, zeroed once: an anonymous mapping
/// (zero pages from the system), on transparent huge pages where it spans one (a
/// forward streams its activations, tens of MB for a long sequence, through 4 KiB
/// pages otherwise: a TLB miss every 1024 floats of each row a tile reads or writes).
pub struct Arena {
    map: memmap2::MmapMut,
    start: usize,
    bytes: usize,
}

impl Arena {
    /// `bytes` of zeroed storage, or the allocation error (bytes wanted, the limit).
    pub fn new(bytes: usize) -> Result<Arena, BackendError> {
        let bytes = bytes.div_ceil(ALIGN) * ALIGN;
        let (map, start) = crate::backend::alloc::zeroed_map(bytes, "the native arena")?;
        Ok(Arena { map, start, bytes })
    }
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    pub fn as_mut_f32(&mut self) -> &mut [f32] {
        let p = self.map[self.start..].as_mut_ptr();
        // SAFETY: `bytes` bytes from `start` lie in the mapping, page-aligned (so
        // f32-aligned), and any bytes are a valid f32.
        unsafe { std::slice::from_raw_parts_mut(p as *mut f32, self.bytes / 4) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::native::program::Res;

    fn acc(reads: &[usize], writes: &[usize]) -> Access {
        Access {
            reads: reads.iter().map(|&b| Res::Arena(b)).collect(),
            writes: writes.iter().map(|&b| Res::Arena(b)).collect(),
        }
    }

    #[test]
    fn lifetimes_run_from_the_first_write_to_the_last_read() {
        // 0 writes b0; 1 reads b0, writes b1; 2 writes b2 (a param read); 3 reads b1, b2.
        let steps = [acc(&[], &[0]), acc(&[0], &[1]), acc(&[], &[2]), acc(&[1, 2], &[3])];
        let life = lifetimes(&steps, 5, &[3]).unwrap();
        assert_eq!(life, vec![Some((0, 1)), Some((1, 3)), Some((2, 3)), Some((3, 4)), None]);
    }

    #[test]
    fn a_read_before_any_write_or_of_its_own_output_is_refused() {
        let e = lifetimes(&[acc(&[], &[0]), acc(&[1], &[2])], 3, &[]).unwrap_err();
        assert_eq!(e, "step 1 reads buffer 1 before any step writes it");
        let e = lifetimes(&[acc(&[], &[0]), acc(&[0], &[0])], 1, &[]).unwrap_err();
        assert_eq!(e, "step 1 reads buffer 0, which it writes");
    }

    fn overlaps(a: (usize, usize), b: (usize, usize)) -> bool {
        a.0 < b.1 && b.0 < a.1
    }

    #[test]
    fn live_buffers_never_share_bytes_and_dead_ones_are_reused() {
        let reqs = [
            Request { bytes: 1000, first: 0, last: 1 },
            Request { bytes: 400, first: 1, last: 2 },
            Request { bytes: 1000, first: 2, last: 3 }, // can take the first one's place
            Request { bytes: 100, first: 0, last: 3 },
            Request { bytes: 300, first: 3, last: 4 },
        ];
        let l = plan(&reqs);
        for i in 0..reqs.len() {
            for j in 0..i {
                let (a, b) = (reqs[i], reqs[j]);
                if a.last < b.first || b.last < a.first {
                    continue;
                }
                let ra = (l.offsets[i], l.offsets[i] + round(a.bytes));
                let rb = (l.offsets[j], l.offsets[j] + round(b.bytes));
                assert!(!overlaps(ra, rb), "{i} and {j} overlap: {l:?}");
            }
            assert_eq!(l.offsets[i] % ALIGN, 0);
        }
        assert_eq!(l.offsets[2], l.offsets[0], "{l:?}");
        assert!(l.size < reqs.iter().map(|r| round(r.bytes)).sum::<usize>());
        assert!(l.size >= l.peak_live);
        assert_eq!(l.peak_live, round(1000) + round(400) + round(100));
    }

    #[test]
    fn an_arena_is_zeroed_and_a_large_one_lies_on_huge_page_advised_memory() {
        let mut small = Arena::new(1000).unwrap();
        assert_eq!(small.bytes(), 1024);
        assert!(small.as_mut_f32().iter().all(|&v| v == 0.0));
        let mut big = Arena::new(5 << 20).unwrap();
        assert_eq!(big.bytes(), 5 << 20);
        let f = big.as_mut_f32();
        assert_eq!(f.len(), 5 << 18);
        assert!(f.iter().all(|&v| v == 0.0));
        assert_eq!(f.as_ptr() as usize % crate::backend::alloc::HUGE_PAGE, 0, "a large arena starts on a huge page");
        #[cfg(target_os = "linux")]
        {
            // The mapping holding the arena carries the advice (`hg` in its flags),
            // whatever the system then does with it.
            let at = f.as_ptr() as usize;
            let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
            // A mapping's header line (`start-end perms …`), then its fields.
            let range = |line: &str| {
                let (a, b) = line.split_once(' ')?.0.split_once('-')?;
                Some((usize::from_str_radix(a, 16).ok()?, usize::from_str_radix(b, 16).ok()?))
            };
            let mut inside = false;
            let flags = smaps.lines().find_map(|line| match range(line) {
                Some((a, b)) => {
                    inside = a <= at && at < b;
                    None
                }
                None => {
                    line.strip_prefix("VmFlags:").filter(|_| inside).map(|f| f.split_whitespace().collect::<Vec<_>>())
                }
            });
            let flags = flags.expect("the arena's mapping in /proc/self/smaps");
            assert!(flags.contains(&"hg"), "flags {flags:?}");
        }
    }
}
