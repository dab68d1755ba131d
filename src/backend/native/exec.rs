//! Running a [`Program`]: each step is one parallel region of the worker pool, every
//! participant computing its own part (GEMMs by output columns, attention by
//! (batch, head), the rest by rows). No allocation happens here: every buffer is a
//! range of the arena laid out at plan time, and a step's operand lists live on the
//! stack.
//!
//! A kernel reaches memory only through [`StepMem`], the step's declaration
//! ([`Step::access`]) over [`Mem`]: reading or writing storage the step does not
//! declare panics (in every build; a bug in graft). The arena lifetimes are computed
//! from the same declarations, so a kernel cannot use a buffer whose lifetime does
//! not cover it.

use super::attention::{self, Head};
use super::ew::{EwBroadcast, EwKernel, MAX_OPERANDS};
use super::gemm::{gemm_raw, part, Operand};
use super::math;
use super::packed::{self, Packed};
use super::pool::{Pool, SharedMut};
use super::program::{Access, AttentionKernel, Buffer, Epilogue, Mask, Program, Res, Step, Store, Strided, View};
use super::rows;
use crate::backend::KernelError;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where a step's views point: the arena (borrowed for `'a`), the program's buffer
/// offsets, the parameters and the id buffers.
pub(crate) struct Mem<'a> {
    arena: SharedMut<'a>,
    buffers: &'a [Buffer],
    params: &'a [Vec<f32>],
    /// Per parameter: its packed form, for the weights of linear layers.
    packed: &'a [Option<Packed>],
    ids: &'a [Vec<i64>],
}

impl<'a> Mem<'a> {
    /// # Safety
    /// While this `Mem` is used, no step may read a range of the arena that a
    /// participant writes at the same time, and the participants of a region must write
    /// disjoint ranges: what the lowering guarantees for the [`Program`] whose
    /// `buffers` these are (it never has a step write a buffer it reads, and every step
    /// partitions its output). Reads and writes are bounds-checked against the arena.
    pub(crate) unsafe fn new(
        arena: SharedMut<'a>,
        buffers: &'a [Buffer],
        params: &'a [Vec<f32>],
        packed: &'a [Option<Packed>],
        ids: &'a [Vec<i64>],
    ) -> Self {
        Mem { arena, buffers, params, packed, ids }
    }

    /// The packed form of the weight `step` reads, when `prepare` packed it
    /// ([`Step::packable_weight`]).
    fn packed(&self, step: &Step) -> Option<&'a Packed> {
        let (p, n, k) = step.packable_weight()?;
        self.packed.get(p)?.as_ref().filter(|pk| pk.fits(n, k))
    }

    fn base(&self, store: Store, offset: usize) -> (*const f32, usize) {
        match store {
            Store::Arena(b) => {
                let start = self.buffers[b].offset + offset;
                assert!(start <= self.arena.len(), "view outside the arena");
                (self.arena.ptr(start, self.arena.len()) as *const f32, self.arena.len() - start)
            }
            Store::Param(p) => {
                let d = &self.params[p];
                assert!(offset <= d.len(), "view outside its parameter");
                (d[offset..].as_ptr(), d.len() - offset)
            }
        }
    }

    /// The elements `v` spans, read-only.
    pub fn read(&self, v: &View) -> &[f32] {
        self.read_at(v.store, v.offset, v.span())
    }

    fn read_at(&self, store: Store, offset: usize, len: usize) -> &[f32] {
        let (p, avail) = self.base(store, offset);
        assert!(len <= avail, "view longer than its storage");
        // SAFETY: in bounds; no participant writes it meanwhile (the contract of
        // `Mem::new`).
        unsafe { std::slice::from_raw_parts(p, len) }
    }

    /// Elements `[lo, hi)` past `v`'s offset, writable.
    ///
    /// # Safety
    /// Participants of a region must ask for disjoint ranges of arena views.
    #[allow(clippy::mut_from_ref)]
    unsafe fn write(&self, v: &View, lo: usize, hi: usize) -> &mut [f32] {
        let Store::Arena(b) = v.store else { panic!("a step writes a parameter") };
        self.arena.slice(self.buffers[b].offset + v.offset + lo, self.buffers[b].offset + v.offset + hi)
    }

    /// A raw window `[lo, hi)` past `v`'s offset, for writers of interleaved columns.
    fn window(&self, v: &View, lo: usize, hi: usize) -> (*mut f32, usize) {
        let Store::Arena(b) = v.store else { panic!("a step writes a parameter") };
        let base = self.buffers[b].offset + v.offset;
        (self.arena.ptr(base + lo, base + hi), hi - lo)
    }
}

/// [`Mem`] as one step may use it: every access checked against the step's
/// declaration.
pub(crate) struct StepMem<'m, 'a> {
    mem: &'m Mem<'a>,
    access: &'m Access,
}

impl<'m> StepMem<'m, '_> {
    pub(crate) fn new<'a>(mem: &'m Mem<'a>, access: &'m Access) -> StepMem<'m, 'a> {
        StepMem { mem, access }
    }

    fn check_read(&self, r: Res) {
        assert!(self.access.reads.contains(&r), "a step reads {r:?}, which it does not declare");
    }

    fn check_write(&self, r: Res) {
        assert!(self.access.writes.contains(&r), "a step writes {r:?}, which it does not declare");
    }

    /// The elements `v` spans, read-only.
    fn read(&self, v: &View) -> &'m [f32] {
        self.read_at(v.store, v.offset, v.span())
    }

    fn read_at(&self, store: Store, offset: usize, len: usize) -> &'m [f32] {
        self.check_read(store.into());
        self.mem.read_at(store, offset, len)
    }

    /// The packed form of the weight `step` reads, if it has one.
    fn packed(&self, step: &Step) -> Option<&'m Packed> {
        let pk = self.mem.packed(step)?;
        if let Step::Linear { w, .. } = step {
            self.check_read(w.store.into());
        }
        Some(pk)
    }

    fn ids(&self, b: usize) -> &'m [i64] {
        self.check_read(Res::Ids(b));
        &self.mem.ids[b]
    }

    /// Elements `[lo, hi)` past `v`'s offset, writable.
    ///
    /// # Safety
    /// As [`Mem::write`].
    #[allow(clippy::mut_from_ref)]
    unsafe fn write(&self, v: &View, lo: usize, hi: usize) -> &'m mut [f32] {
        self.check_write(v.store.into());
        self.mem.write(v, lo, hi)
    }

    /// Elements `[lo, hi)` past `offset` of arena `store`, writable.
    ///
    /// # Safety
    /// As [`Mem::write`].
    #[allow(clippy::mut_from_ref)]
    unsafe fn write_at(&self, store: Store, offset: usize, lo: usize, hi: usize) -> &'m mut [f32] {
        self.check_write(store.into());
        let Store::Arena(b) = store else { panic!("a step writes a parameter") };
        let base = self.mem.buffers[b].offset + offset;
        self.mem.arena.slice(base + lo, base + hi)
    }

    /// A raw window `[lo, hi)` past `v`'s offset, for writers of interleaved columns.
    fn window(&self, v: &View, lo: usize, hi: usize) -> (*mut f32, usize) {
        self.check_write(v.store.into());
        self.mem.window(v, lo, hi)
    }
}

/// Run every step after the loads. A kernel's error (an embedding id out of range)
/// comes back with the index of the step that failed.
/// With `ew_time` (a timed forward of `graft bench`), the time spent in fused
/// elementwise groups is added to it; otherwise no clock is read.
pub fn run(
    prog: &Program,
    mem: &Mem,
    pool: &Pool,
    mut ew_time: Option<&mut Duration>,
) -> Result<(), (usize, KernelError)> {
    let failed: Mutex<Option<KernelError>> = Mutex::new(None);
    for (i, s) in prog.steps.iter().enumerate() {
        if matches!(s.step, Step::LoadInput { .. } | Step::LoadIds { .. }) {
            continue;
        }
        let started = (ew_time.is_some() && matches!(s.step, Step::Ew { .. })).then(Instant::now);
        let m = StepMem::new(mem, &s.access);
        let job = |c: usize, n: usize, who: usize| {
            if let Err(e) = step(&s.step, &m, Part { c, n, who }) {
                *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            }
        };
        if worth_splitting(&s.step) {
            pool.run(pool.chunks(), &job);
        } else {
            job(0, 1, 0);
        }
        if let (Some(t), Some(total)) = (started, ew_time.as_deref_mut()) {
            *total += t.elapsed();
        }
        if let Some(e) = failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err((i, e));
        }
    }
    Ok(())
}

/// Small steps run on the caller alone (a region costs microseconds).
fn worth_splitting(s: &Step) -> bool {
    let work = match s {
        Step::Linear { x, y, .. } => x.numel() * y.cols(),
        Step::MatMul { a, w, .. } => a.numel() * w.shape[1],
        Step::Attention { q, k, heads, .. } => q.numel() * k.shape[1] * 2 / (*heads).max(1),
        Step::Ew { rows, cols, .. } => rows * cols * 4,
        Step::LayerNorm { x, .. } => x.numel() * 8,
        Step::Copy { dst, .. } => dst.shape.iter().product(),
        Step::Im2col { dst, .. } => dst.numel(),
        _ => 0,
    };
    work >= 1 << 15
}

/// Which part of a step a call computes: chunk `c` of `n` (every kernel partitions its
/// output by these), run by participant `who` (which selects per-thread scratch only).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Part {
    pub c: usize,
    pub n: usize,
    pub who: usize,
}

fn step(s: &Step, m: &StepMem, part_: Part) -> Result<(), KernelError> {
    let Part { c: t, n, who } = part_;
    match s {
        Step::LoadInput { .. } | Step::LoadIds { .. } => {}
        Step::Zero { dst } => {
            let (lo, hi) = part(dst.numel(), t, n, 64);
            // SAFETY: disjoint parts per participant.
            unsafe { m.write(dst, lo, hi) }.fill(0.0);
        }
        Step::Sinusoid { dst, table } => {
            let (lo, hi) = part(dst.numel(), t, n, 64);
            // SAFETY: disjoint parts per participant.
            unsafe { m.write(dst, lo, hi) }.copy_from_slice(&table[lo..hi]);
        }
        Step::Copy { src, dst } => copy(m, src, dst, t, n),
        Step::Linear { x, w, bias, y, groups, epilogue } => {
            linear(m, m.packed(s), [x, w], bias.as_ref(), (y, *epilogue), *groups, t, n)
        }
        Step::Im2col { x, geom, dst } => {
            let patch = geom.patch();
            let (lo, hi) = part(dst.rows(), t, n, 1);
            // SAFETY: disjoint rows per participant.
            let out = unsafe { m.write(dst, lo * patch, hi * patch) };
            rows::im2col(m.read(x), geom, lo, out);
        }
        Step::LayerNorm { x, gamma, beta, eps, out, add } => {
            let (d, rs) = (x.cols(), out.rs);
            let (lo, hi) = part(x.rows(), t, n, 1);
            if lo == hi {
                return Ok(());
            }
            let (g, b) = (m.read(gamma), m.read(beta));
            // SAFETY: disjoint rows per participant; `x` is written only when `add`.
            // The output's rows are `rs` apart (longer than `d` where `pad.rs` padded them).
            let o = unsafe { m.write(out, lo * rs, (hi - 1) * rs + d) };
            match add {
                Some((p, q)) => {
                    let sum = unsafe { m.write(x, lo * d, hi * d) };
                    let (p, q) = (&m.read(p)[lo * d..hi * d], &m.read(q)[lo * d..hi * d]);
                    rows::add_layernorm(p, q, sum, g, b, *eps, (o, rs))
                }
                None => rows::layernorm(&m.read(x)[lo * d..hi * d], g, b, *eps, o, rs),
            }
        }
        Step::Ew { kernel, rows, cols, inputs, outputs } => ew(m, kernel, *rows, *cols, inputs, outputs, t, n),
        Step::Attention { q, k, v, mask, out, heads, scale, scratch, kernel } => {
            let b = q.shape[0];
            let (lo, hi) = part(b * heads, t, n, 1);
            let per = scratch.cols();
            // SAFETY: one scratch row per participant.
            let sc = unsafe { m.write(scratch, who * per, (who + 1) * per) };
            for item in lo..hi {
                let at = (item / heads, item % heads);
                attend(m, [q, k, v], mask.as_ref(), out, at, (*heads, *scale, *kernel), sc);
            }
        }
        Step::Embedding { ids, table, out } => {
            let d = table.cols();
            let idv = m.ids(*ids);
            let (lo, hi) = part(idv.len(), t, n, 1);
            // SAFETY: disjoint rows per participant.
            let o = unsafe { m.write(out, lo * d, hi * d) };
            rows::embedding(&idv[lo..hi], m.read(table), d, o)?;
        }
        Step::MeanTokens { x, out } => {
            let (tt, d) = (x.shape[1], x.shape[2]);
            let (lo, hi) = part(x.shape[0], t, n, 1);
            // SAFETY: disjoint batch rows per participant.
            let o = unsafe { m.write(out, lo * d, hi * d) };
            rows::mean_tokens(&m.read(x)[lo * tt * d..hi * tt * d], tt, d, o);
        }
        Step::MatMul { a, w, out } => {
            // By output columns, as a linear layer.
            let (mm, kk, nn) = (a.shape[0], a.shape[1], w.shape[1]);
            let (c0, c1) = part(nn, t, n, 16);
            if mm == 0 || c0 >= c1 {
                return Ok(());
            }
            let (av, wv) = (m.read(a), m.read(w));
            let (dst, len) = m.window(out, c0, (mm - 1) * nn + c1);
            // SAFETY: this participant's columns [c0, c1) of every row are its alone.
            unsafe {
                gemm_raw(mm, c1 - c0, kk, 1.0, Operand::rows(av, kk), Operand::rows(&wv[c0..], nn), dst, len, nn, false)
            };
        }
    }
    Ok(())
}

/// This participant's rows of a fused elementwise group.
#[allow(clippy::too_many_arguments)]
fn ew(
    m: &StepMem,
    kernel: &EwKernel,
    rows: usize,
    cols: usize,
    inputs: &[(View, EwBroadcast)],
    outputs: &[View],
    t: usize,
    n: usize,
) {
    let (lo, hi) = part(rows, t, n, 1);
    if lo == hi {
        return;
    }
    // The compiler refuses groups of more than MAX_OPERANDS operands.
    let mut ins: [&[f32]; MAX_OPERANDS] = [&[]; MAX_OPERANDS];
    let mut outs: [&mut [f32]; MAX_OPERANDS] = std::array::from_fn(|_| <&mut [f32]>::default());
    for ((v, k), slot) in inputs.iter().zip(&mut ins) {
        let all = m.read_at(v.store, v.offset, v.numel());
        *slot = match k {
            EwBroadcast::Full => &all[lo * cols..hi * cols],
            EwBroadcast::Col => &all[lo..hi],
            EwBroadcast::Row | EwBroadcast::Scalar => all,
        };
    }
    for (o, slot) in outputs.iter().zip(&mut outs) {
        // SAFETY: disjoint rows per participant.
        *slot = unsafe { m.write(o, lo * cols, hi * cols) };
    }
    kernel.run(hi - lo, cols, &ins[..inputs.len()], &mut outs[..outputs.len()]);
}

/// One (batch, head) of attention into its columns of `out`; `sc` is this
/// participant's score scratch.
#[allow(clippy::too_many_arguments)]
fn attend(
    m: &StepMem,
    [q, k, v]: [&View; 3],
    mask: Option<&Mask>,
    out: &View,
    (bi, h): (usize, usize),
    (heads, scale, kernel): (usize, f32, AttentionKernel),
    sc: &mut [f32],
) {
    let (tq, tk) = (q.shape[1], k.shape[1]);
    let (dh, dvh, dv) = (q.shape[2] / heads, v.shape[2] / heads, v.shape[2]);
    let keep_f;
    let keep_i;
    let keep: Option<&dyn Fn(usize) -> bool> = match mask {
        None => None,
        Some(Mask::Float(mv)) => {
            let row = &m.read(mv)[bi * tk..(bi + 1) * tk];
            keep_f = move |j: usize| row[j] != 0.0;
            Some(&keep_f)
        }
        Some(Mask::Ids(buf)) => {
            let row = &m.ids(*buf)[bi * tk..(bi + 1) * tk];
            keep_i = move |j: usize| row[j] != 0;
            Some(&keep_i)
        }
    };
    let hd = Head {
        q: &m.read(q)[bi * tq * q.rs + h * dh..],
        ldq: q.rs,
        k: &m.read(k)[bi * tk * k.rs + h * dh..],
        ldk: k.rs,
        v: &m.read(v)[bi * tk * v.rs + h * dvh..],
        ldv: v.rs,
        keep,
    };
    let (o, len) = m.window(out, bi * tq * dv + h * dvh, (bi + 1) * tq * dv);
    // SAFETY: each (batch, head) writes only its own columns of its rows.
    unsafe {
        match kernel {
            AttentionKernel::Plain => attention::head(&hd, tq, tk, dh, dvh, scale, sc, o, len, dv),
            AttentionKernel::Blocked => attention::head_blocked(&hd, tq, tk, dh, dvh, scale, sc, o, len, dv),
            AttentionKernel::Packed => {
                attention::head_packed(&hd, math::level(), (tq, tk, dh, dvh), scale, sc, o, len, dv)
            }
        }
    };
}

#[allow(clippy::too_many_arguments)]
fn linear(
    m: &StepMem,
    pk: Option<&Packed>,
    [x, w]: [&View; 2],
    bias: Option<&View>,
    (y, epilogue): (&View, Epilogue),
    groups: usize,
    t: usize,
    n: usize,
) {
    let (rows_, kin, nout) = (x.rows(), x.cols(), y.cols());
    let (kg, ng) = (kin / groups, nout / groups);
    let level = math::level();
    if packed::available(level) {
        if let Some(pk) = pk {
            // The bias starts the accumulators. Every element is the same sum in the
            // same order however the output is split, so the split only decides what
            // each chunk reads (see `packed::split`).
            let ((r0, r1), (c0, c1)) = packed::split(level, rows_, nout, kin, t, n);
            if r0 >= r1 || c0 >= c1 {
                return;
            }
            let xa = &m.read(x)[r0 * x.rs..];
            let ba = bias.map(|b| m.read(b));
            let (dst, len) = m.window(y, r0 * y.rs + c0, (rows_ - 1) * y.rs + c1);
            // SAFETY: this chunk's rows [r0, r1) × columns [c0, c1) are its alone.
            unsafe { packed::linear(level, r1 - r0, xa, x.rs, pk.panels(), (c0, c1), ba, (dst, len, y.rs), epilogue) };
            return;
        }
    }
    let (xa, wa) = (m.read(x), m.read(w));
    let ba = bias.map(|b| m.read(b));
    // Work items: (group, column range); one group's columns split when groups are few.
    let (glo, ghi, clo, chi) = if groups >= n {
        let (a, b) = part(groups, t, n, 1);
        (a, b, 0, ng)
    } else {
        let (a, b) = part(ng, t, n, 16);
        (0, groups, a, b)
    };
    if glo >= ghi || clo >= chi {
        return;
    }
    let ldy = y.rs;
    for g in glo..ghi {
        let (c0, c1) = (g * ng + clo, g * ng + chi);
        // This participant's columns [c0, c1) of every row; others write other columns.
        let (dst, len) = m.window(y, c0, (rows_ - 1) * ldy + c1);
        if let Some(b) = ba {
            for r in 0..rows_ {
                // SAFETY: row r's columns [c0, c1) are this participant's alone.
                unsafe { std::slice::from_raw_parts_mut(dst.add(r * ldy), c1 - c0) }.copy_from_slice(&b[c0..c1]);
            }
        }
        let lhs = Operand::rows(&xa[g * kg..], x.rs);
        let rhs = Operand::transposed(&wa[c0 * kg..], kg);
        // SAFETY: as above; the operands are other buffers (the plan never aliases them).
        unsafe { gemm_raw(rows_, c1 - c0, kg, 1.0, lhs, rhs, dst, len, ldy, ba.is_some()) };
        if epilogue == Epilogue::Gelu {
            for r in 0..rows_ {
                // SAFETY: as above.
                math::gelu_erf_inplace_at(level, unsafe { std::slice::from_raw_parts_mut(dst.add(r * ldy), c1 - c0) });
            }
        }
    }
}

/// `dst = src` over the outer rows of this participant.
fn copy(m: &StepMem, src: &Strided, dst: &Strided, t: usize, n: usize) {
    let r = dst.shape.len();
    let total: usize = dst.shape.iter().product();
    if total == 0 {
        return;
    }
    let inner = if r == 0 { 1 } else { dst.shape[r - 1] };
    let outer = total / inner;
    let (lo, hi) = part(outer, t, n, 1);
    let span = |s: &Strided| 1 + s.shape.iter().zip(&s.strides).map(|(&d, &st)| (d - 1) * st).sum::<usize>();
    let sv = m.read_at(src.store, src.offset, span(src));
    let (sin, din) = (if r == 0 { 1 } else { src.strides[r - 1] }, if r == 0 { 1 } else { dst.strides[r - 1] });
    for row in lo..hi {
        // The row's index over the outer dims, innermost first, as source and
        // destination offsets.
        let (mut rem, mut so, mut doff) = (row, 0usize, 0usize);
        for i in (0..r.saturating_sub(1)).rev() {
            let k = rem % dst.shape[i];
            rem /= dst.shape[i];
            so += k * src.strides[i];
            doff += k * dst.strides[i];
        }
        // SAFETY: each outer row of `dst` belongs to one participant; rows of a
        // destination never overlap (its strides come from a dense layout).
        let d = unsafe { m.write_at(dst.store, dst.offset, doff, doff + (inner - 1) * din + 1) };
        if sin == 1 && din == 1 {
            d.copy_from_slice(&sv[so..so + inner]);
        } else {
            for j in 0..inner {
                d[j * din] = sv[so + j * sin];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two arena buffers of 4 elements: `[0, 1, 2, 3]` and zeros.
    fn with_mem(f: impl FnOnce(&Mem)) -> Vec<f32> {
        let mut arena: Vec<f32> = (0..8).map(|i| if i < 4 { i as f32 } else { 0.0 }).collect();
        let buffers = [Buffer { len: 4, offset: 0 }, Buffer { len: 4, offset: 4 }];
        let mem = Mem { arena: SharedMut::new(&mut arena), buffers: &buffers, params: &[], packed: &[], ids: &[] };
        f(&mem);
        arena
    }

    fn copy_step() -> Step {
        let v = |b| View::plain(Store::Arena(b), 0, vec![4]);
        Step::Copy { src: Strided::of(&v(0)), dst: Strided::of(&v(1)) }
    }

    #[test]
    fn a_step_runs_within_its_declaration() {
        let s = copy_step();
        let arena = with_mem(|m| step(&s, &StepMem::new(m, &s.access()), Part { c: 0, n: 1, who: 0 }).unwrap());
        assert_eq!(arena[4..], [0.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    #[should_panic(expected = "a step reads Arena(0), which it does not declare")]
    fn a_kernel_reading_storage_its_step_does_not_declare_panics() {
        let s = copy_step();
        let undeclared = Access { reads: vec![], writes: vec![Res::Arena(1)] };
        with_mem(|m| step(&s, &StepMem::new(m, &undeclared), Part { c: 0, n: 1, who: 0 }).unwrap());
    }

    #[test]
    #[should_panic(expected = "a step writes Arena(1), which it does not declare")]
    fn a_kernel_writing_storage_its_step_does_not_declare_panics() {
        let s = copy_step();
        let undeclared = Access { reads: vec![Res::Arena(0)], writes: vec![] };
        with_mem(|m| step(&s, &StepMem::new(m, &undeclared), Part { c: 0, n: 1, who: 0 }).unwrap());
    }
}
