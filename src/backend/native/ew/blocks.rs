//! The rustc strategy: a group run one instruction at a time over blocks of the
//! iteration space, each instruction a runtime-dispatched SIMD loop (AVX-512 / AVX2 /
//! portable, the level of [`math::level`]).
//!
//! A block is `nr` whole rows (when a row is shorter than the block size) or a chunk of
//! one row, so its part of every `Full` buffer is one contiguous slice. Intermediates live
//! in a per-thread scratch area, one slot per instruction; an instruction that is an
//! output is written straight into the output. With a block of the whole space this is
//! the unfused strategy (`unfused.rs`).

use super::{EwBroadcast, EwInstr, EwValue, Program};
use crate::backend::native::math::{self, SimdLevel};
use std::cell::RefCell;

thread_local! {
    /// Intermediates of the group being run on this thread; grows, never shrinks.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Rows and columns of a block of at most `block` elements (at least one element).
pub(super) fn block_shape(block: usize, rows: usize, cols: usize) -> (usize, usize) {
    if cols >= block {
        (1, block.max(1))
    } else {
        ((block / cols.max(1)).clamp(1, rows.max(1)), cols)
    }
}

/// Where an instruction's value is kept within a block.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Loc {
    Output(usize),
    Scratch(usize),
}

/// The block being computed: rows `r0..r0+nr`, columns `c0..c0+nc` of a `cols`-wide space.
#[derive(Clone, Copy)]
struct Blk {
    r0: usize,
    nr: usize,
    c0: usize,
    nc: usize,
    cols: usize,
}

impl Blk {
    /// Start of the block's contiguous region in a `Full` buffer.
    fn start(&self) -> usize {
        self.r0 * self.cols + self.c0
    }
    fn len(&self) -> usize {
        self.nr * self.nc
    }
}

/// One row of an operand within a block.
#[derive(Clone, Copy)]
enum Seg<'a> {
    Slice(&'a [f32]),
    Splat(f32),
}

/// Operand lookup for one block.
struct Env<'a> {
    prog: &'a Program,
    loc: &'a [Loc],
    inputs: &'a [&'a [f32]],
    outputs: &'a [&'a mut [f32]],
    scratch: &'a [f32],
    slot: usize,
    blk: Blk,
}

impl Env<'_> {
    /// Row `i` of the block of `v`.
    fn seg(&self, v: EwValue, i: usize) -> Seg<'_> {
        let (b, n) = (self.blk, self.blk.nc);
        match v {
            EwValue::Const(c) => Seg::Splat(c),
            EwValue::Input(k) => {
                let x = self.inputs[k];
                match self.prog.group.inputs[k] {
                    EwBroadcast::Full => Seg::Slice(&x[b.start() + i * n..][..n]),
                    EwBroadcast::Row => Seg::Slice(&x[b.c0..b.c0 + n]),
                    EwBroadcast::Col => Seg::Splat(x[b.r0 + i]),
                    EwBroadcast::Scalar => Seg::Splat(x[0]),
                }
            }
            EwValue::Instr(j) => match self.loc[j] {
                Loc::Output(o) => Seg::Slice(&self.outputs[o][b.start() + i * n..][..n]),
                Loc::Scratch(s) => Seg::Slice(&self.scratch[s * self.slot + i * n..][..n]),
            },
        }
    }

    /// `dst` (the block's region) ← the value of instruction `ins`.
    fn compute(&self, ins: &EwInstr, dst: &mut [f32]) {
        let level = math::level();
        let n = self.blk.nc;
        let helper: Option<fn(&mut [f32])> = match ins {
            EwInstr::Tanh(_) => Some(math::tanh_inplace),
            EwInstr::Gelu(_) => Some(math::gelu_erf_inplace),
            EwInstr::Sigmoid(_) => Some(math::sigmoid_inplace),
            EwInstr::Exp(_) => Some(math::exp_inplace),
            _ => None,
        };
        for (i, d) in dst.chunks_exact_mut(n).enumerate() {
            let op = match *ins {
                EwInstr::Add(a, b) => (Op::Add, self.seg(a, i), self.seg(b, i)),
                EwInstr::Sub(a, b) => (Op::Sub, self.seg(a, i), self.seg(b, i)),
                EwInstr::Mul(a, b) => (Op::Mul, self.seg(a, i), self.seg(b, i)),
                EwInstr::Scale(a, f) => (Op::Mul, self.seg(a, i), Seg::Splat(f)),
                EwInstr::Relu(a) => (Op::Relu, self.seg(a, i), Seg::Splat(0.0)),
                EwInstr::Tanh(a) | EwInstr::Gelu(a) | EwInstr::Sigmoid(a) | EwInstr::Exp(a) => {
                    (Op::Copy, self.seg(a, i), Seg::Splat(0.0))
                }
            };
            apply(level, op.0, op.1, op.2, d);
        }
        if let Some(f) = helper {
            f(dst);
        }
    }
}

/// Where each instruction's value is kept, and how many scratch slots that takes.
fn locations(prog: &Program) -> (Vec<Loc>, usize) {
    let g = &prog.group;
    let mut loc = Vec::with_capacity(g.body.len());
    let mut slots = 0;
    for i in 0..g.body.len() {
        match g.outputs.iter().position(|v| *v == EwValue::Instr(i)) {
            Some(j) => loc.push(Loc::Output(j)),
            None if prog.live[i] => {
                loc.push(Loc::Scratch(slots));
                slots += 1;
            }
            None => loc.push(Loc::Scratch(usize::MAX)),
        }
    }
    (loc, slots)
}

/// Scratch slots `run` uses for `prog` (each one block long).
pub(super) fn scratch_slots(prog: &Program) -> usize {
    locations(prog).1
}

/// Runs `prog` over `[rows, cols]` in blocks of at most `block` elements.
pub(super) fn run(
    prog: &Program,
    block: usize,
    rows: usize,
    cols: usize,
    inputs: &[&[f32]],
    outputs: &mut [&mut [f32]],
) {
    let (loc, slots) = locations(prog);
    let (br, bc) = block_shape(block, rows, cols);
    let slot = br * bc;
    SCRATCH.with_borrow_mut(|scratch| {
        if scratch.len() < slots * slot {
            scratch.resize(slots * slot, 0.0);
        }
        for r0 in (0..rows).step_by(br) {
            for c0 in (0..cols).step_by(bc) {
                let blk = Blk { r0, nr: br.min(rows - r0), c0, nc: bc.min(cols - c0), cols };
                run_block(prog, &loc, scratch, slot, blk, inputs, outputs);
            }
        }
    });
}

fn run_block(
    prog: &Program,
    loc: &[Loc],
    scratch: &mut [f32],
    slot: usize,
    blk: Blk,
    inputs: &[&[f32]],
    outputs: &mut [&mut [f32]],
) {
    let (start, n) = (blk.start(), blk.len());
    for (i, ins) in prog.group.body.iter().enumerate() {
        if !prog.live[i] {
            continue;
        }
        match loc[i] {
            Loc::Output(j) => {
                let out = std::mem::take(&mut outputs[j]);
                let env = Env { prog, loc, inputs, outputs, scratch, slot, blk };
                env.compute(ins, &mut out[start..start + n]);
                outputs[j] = out;
            }
            Loc::Scratch(s) => {
                let (before, rest) = scratch.split_at_mut(s * slot);
                let env = Env { prog, loc, inputs, outputs, scratch: before, slot, blk };
                env.compute(ins, &mut rest[..n]);
            }
        }
    }
    // Outputs that are not the home of an instruction: copies of inputs, constants or
    // of a value another output holds.
    for (j, v) in prog.group.outputs.iter().enumerate() {
        if let EwValue::Instr(i) = v {
            if loc[*i] == Loc::Output(j) {
                continue;
            }
        }
        let out = std::mem::take(&mut outputs[j]);
        let env = Env { prog, loc, inputs, outputs, scratch, slot, blk };
        for (r, d) in out[start..start + n].chunks_exact_mut(blk.nc).enumerate() {
            apply(math::level(), Op::Copy, env.seg(*v, r), Seg::Splat(0.0), d);
        }
        outputs[j] = out;
    }
}

#[derive(Clone, Copy)]
enum Op {
    Add,
    Sub,
    Mul,
    Relu,
    Copy,
}

/// `dst[k] ← op(a[k], b[k])` over one row segment, at `level`.
fn apply(level: SimdLevel, op: Op, a: Seg, b: Seg, dst: &mut [f32]) {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `math::level` only returns levels the CPU has.
        SimdLevel::Avx512 => unsafe { apply_avx512(op, a, b, dst) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        SimdLevel::Avx2Fma => unsafe { apply_avx2(op, a, b, dst) },
        _ => apply_generic(op, a, b, dst),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn apply_avx512(op: Op, a: Seg, b: Seg, dst: &mut [f32]) {
    apply_generic(op, a, b, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn apply_avx2(op: Op, a: Seg, b: Seg, dst: &mut [f32]) {
    apply_generic(op, a, b, dst)
}

#[inline(always)]
fn apply_generic(op: Op, a: Seg, b: Seg, dst: &mut [f32]) {
    match op {
        Op::Add => zip(a, b, dst, |x, y| x + y),
        Op::Sub => zip(a, b, dst, |x, y| x - y),
        Op::Mul => zip(a, b, dst, |x, y| x * y),
        Op::Relu => zip(a, b, dst, |x, _| if x < 0.0 { 0.0 } else { x }),
        Op::Copy => match a {
            Seg::Slice(a) => dst.copy_from_slice(a),
            Seg::Splat(x) => dst.fill(x),
        },
    }
}

#[inline(always)]
fn zip(a: Seg, b: Seg, dst: &mut [f32], f: impl Fn(f32, f32) -> f32) {
    match (a, b) {
        (Seg::Slice(a), Seg::Slice(b)) => {
            for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
                *d = f(x, y);
            }
        }
        (Seg::Slice(a), Seg::Splat(y)) => {
            for (d, &x) in dst.iter_mut().zip(a) {
                *d = f(x, y);
            }
        }
        (Seg::Splat(x), Seg::Slice(b)) => {
            for (d, &y) in dst.iter_mut().zip(b) {
                *d = f(x, y);
            }
        }
        (Seg::Splat(x), Seg::Splat(y)) => dst.fill(f(x, y)),
    }
}
