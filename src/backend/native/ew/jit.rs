//! The Cranelift strategy: one machine-code function per group structure.
//!
//! The function walks the same blocks as `blocks.rs` (`nr` rows × `nc` columns, at most
//! [`BLOCK`] elements). Within a block the group is cut into *phases* at its
//! transcendental instructions: phase `p` computes, in f32x4 registers (a scalar loop
//! for the last `nc mod 4` columns), every cheap instruction (`add`, `sub`, `mul`,
//! `scale`, `relu`) whose operands are ready by then, writes the operand of each
//! `tanh`/`gelu`/`sigmoid`/`exp` of phase `p+1` into that instruction's scratch slot (or
//! straight into its output when it is one), and stores the outputs it can; between
//! phases the slots are transformed in place by a call to [`math`]'s vectorised block
//! functions (registered with `JITBuilder::symbol`). Only values crossing a phase
//! boundary touch the scratch area.
//!
//! Constants are loaded from a table passed at run time (hoisted out of all loops), so a
//! compiled function serves every group of the same structure.

use super::blocks::block_shape;
use super::{EwBroadcast, EwError, EwInstr, EwValue, Program, BLOCK, MAX_OPERANDS};
use crate::backend::native::math;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, I64};
use cranelift_codegen::ir::{
    AbiParam, BlockArg, Endianness, FuncRef, InstBuilder, MemFlagsData, Type, UserFuncName, Value,
};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Mutex;

/// `(inputs, outputs, consts, scratch, rows, cols, block_rows, block_cols, slot_len)`.
type Entry = unsafe extern "C" fn(*const *const f32, *const *mut f32, *const f32, *mut f32, i64, i64, i64, i64, i64);

thread_local! {
    /// Scratch slots of the group being run on this thread; grows, never shrinks.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

macro_rules! helpers {
    ($($name:ident => $f:path),* $(,)?) => {
        $(
            /// Called by generated code on one scratch slot.
            extern "C" fn $name(ptr: *mut f32, len: usize) {
                // SAFETY: the generated code passes a slot of its thread's scratch area
                // or the current block of an output (`len <= slot_len` elements, both),
                // not aliased while the call runs.
                $f(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
            }
        )*
        /// Every function generated code may call, by symbol name.
        const HELPERS: &[(&str, extern "C" fn(*mut f32, usize))] = &[$((stringify!($name), $name)),*];
    };
}

helpers! {
    graft_ew_tanh => math::tanh_inplace,
    graft_ew_gelu => math::gelu_erf_inplace,
    graft_ew_sigmoid => math::sigmoid_inplace,
    graft_ew_exp => math::exp_inplace,
}

fn helper_of(ins: &EwInstr) -> Option<usize> {
    match ins {
        EwInstr::Tanh(_) => Some(0),
        EwInstr::Gelu(_) => Some(1),
        EwInstr::Sigmoid(_) => Some(2),
        EwInstr::Exp(_) => Some(3),
        _ => None,
    }
}

/// Cranelift set up for the host CPU.
pub(super) struct Jit {
    isa: OwnedTargetIsa,
}

/// A finalised function and the module that owns its memory.
pub(super) struct JitCode {
    module: Mutex<Option<JITModule>>,
    entry: Entry,
    slots: usize,
}

impl Drop for JitCode {
    fn drop(&mut self) {
        if let Some(module) = self.module.get_mut().ok().and_then(Option::take) {
            // SAFETY: the last kernel holding this code is gone, so `entry` is neither
            // running nor reachable any more.
            unsafe { module.free_memory() }
        }
    }
}

impl JitCode {
    /// Scratch slots the function uses (each one block long).
    pub(super) fn slots(&self) -> usize {
        self.slots
    }

    pub(super) fn run(&self, prog: &Program, rows: usize, cols: usize, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) {
        let mut ins = [std::ptr::null::<f32>(); MAX_OPERANDS];
        let mut outs = [std::ptr::null_mut::<f32>(); MAX_OPERANDS];
        for (p, x) in ins.iter_mut().zip(inputs) {
            *p = x.as_ptr();
        }
        for (p, y) in outs.iter_mut().zip(outputs.iter_mut()) {
            *p = y.as_mut_ptr();
        }
        let (br, bc) = block_shape(BLOCK, rows, cols);
        let slot_len = br * bc;
        SCRATCH.with_borrow_mut(|scratch| {
            if scratch.len() < self.slots * slot_len {
                scratch.resize(self.slots * slot_len, 0.0);
            }
            // SAFETY: `EwKernel::run` checked every buffer's length against its broadcast
            // and `[rows, cols]`; the code was generated for this program's structure
            // (inputs, outputs, constant count) and touches `self.slots * slot_len`
            // scratch elements at most.
            unsafe {
                (self.entry)(
                    ins.as_ptr(),
                    outs.as_ptr(),
                    prog.consts.as_ptr(),
                    scratch.as_mut_ptr(),
                    rows as i64,
                    cols as i64,
                    br as i64,
                    bc as i64,
                    slot_len as i64,
                )
            }
        });
    }
}

impl Jit {
    pub(super) fn new() -> Result<Jit, EwError> {
        let host = |e: &dyn std::fmt::Display| EwError::UnsupportedHost(e.to_string());
        let mut flags = settings::builder();
        for (k, v) in [("opt_level", "speed"), ("is_pic", "false"), ("use_colocated_libcalls", "false")] {
            flags.set(k, v).map_err(|e| host(&e))?;
        }
        let isa = cranelift_native::builder()
            .map_err(|e| host(&e))?
            .finish(settings::Flags::new(flags))
            .map_err(|e| host(&e))?;
        Ok(Jit { isa })
    }

    /// Generates, compiles and links the function for `prog`'s structure; with `clif`,
    /// also writes the generated function's CLIF text there (before optimisation).
    pub(super) fn compile(&self, prog: &Program, clif: Option<&mut String>) -> Result<JitCode, EwError> {
        let err = |e: &dyn std::fmt::Display| EwError::Codegen(e.to_string());
        let mut jb = JITBuilder::with_isa(self.isa.clone(), cranelift_module::default_libcall_names());
        for (name, f) in HELPERS {
            jb.symbol(*name, *f as *const u8);
        }
        let mut module = JITModule::new(jb);
        let ptr = module.target_config().pointer_type();
        let mut helper_sig = module.make_signature();
        helper_sig.params.extend([AbiParam::new(ptr), AbiParam::new(ptr)]);
        let mut helper_ids = Vec::new();
        for (name, _) in HELPERS {
            helper_ids.push(module.declare_function(name, Linkage::Import, &helper_sig).map_err(|e| err(&e))?);
        }
        let mut sig = module.make_signature();
        sig.params.extend([AbiParam::new(ptr); 4]);
        sig.params.extend([AbiParam::new(I64); 5]);
        let id = module.declare_function("graft_ew_group", Linkage::Local, &sig).map_err(|e| err(&e))?;
        let mut ctx = module.make_context();
        ctx.func.signature = sig;
        ctx.func.name = UserFuncName::user(0, id.as_u32());
        let sched = Schedule::new(prog);
        let mut fctx = FunctionBuilderContext::new();
        let target = module.target_config();
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let helpers: Vec<FuncRef> = helper_ids.iter().map(|h| module.declare_func_in_func(*h, b.func)).collect();
            Gen { prog, sched: &sched, helpers }.emit(&mut b);
            b.seal_all_blocks();
            b.finalize(target);
        }
        if let Some(text) = clif {
            *text = ctx.func.display().to_string();
        }
        module.define_function(id, &mut ctx).map_err(|e| err(&format!("{e:?}")))?;
        module.clear_context(&mut ctx);
        module.finalize_definitions().map_err(|e| err(&e))?;
        let code = module.get_finalized_function(id);
        // SAFETY: `code` is the function just defined with exactly `Entry`'s signature
        // (the host's default C calling convention).
        let entry = unsafe { std::mem::transmute::<*const u8, Entry>(code) };
        Ok(JitCode { module: Mutex::new(Some(module)), entry, slots: sched.slots })
    }
}

/// Phases and scratch slots of a program.
struct Schedule {
    /// Phase in which each live instruction's value becomes available.
    level: Vec<usize>,
    /// Scratch slot of each instruction kept across a phase boundary.
    slot: Vec<Option<usize>>,
    /// The output a transcendental instruction is computed in, in place, when it is one
    /// (then it has no slot, and the output needs no copy).
    home_out: Vec<Option<usize>>,
    slots: usize,
    phases: usize,
}

impl Schedule {
    fn new(prog: &Program) -> Schedule {
        let body = &prog.group.body;
        let lv = |level: &[usize], v: EwValue| if let EwValue::Instr(j) = v { level[j] } else { 0 };
        let mut level = vec![0; body.len()];
        for (i, ins) in body.iter().enumerate() {
            let m = super::operands(ins).map(|v| lv(&level, v)).max().unwrap_or(0);
            level[i] = m + helper_of(ins).is_some() as usize;
        }
        let mut slot = vec![None; body.len()];
        let mut home_out = vec![None; body.len()];
        let mut slots = 0;
        for (i, ins) in body.iter().enumerate() {
            if !prog.live[i] {
                continue;
            }
            if helper_of(ins).is_some() {
                home_out[i] = prog.group.outputs.iter().position(|v| *v == EwValue::Instr(i));
                if home_out[i].is_some() {
                    continue;
                }
            }
            let spilled = helper_of(ins).is_some()
                || body.iter().enumerate().any(|(k, user)| {
                    prog.live[k]
                        && helper_of(user).is_none()
                        && level[k] > level[i]
                        && super::operands(user).any(|v| v == EwValue::Instr(i))
                });
            if spilled {
                slot[i] = Some(slots);
                slots += 1;
            }
        }
        let phases = 1 + (0..body.len()).filter(|&i| prog.live[i]).map(|i| level[i]).max().unwrap_or(0);
        Schedule { level, slot, home_out, slots, phases }
    }

    /// Whether output `j` is where its own value was computed (nothing to store).
    fn is_home(&self, j: usize, v: EwValue) -> bool {
        matches!(v, EwValue::Instr(i) if self.home_out[i] == Some(j))
    }

    /// Address of instruction `i`'s value in the current block row.
    fn row_home(&self, row: &Row, i: usize) -> Value {
        match self.home_out[i] {
            Some(j) => row.outputs[j],
            None => row.slots[self.slot[i].expect("a value kept across phases has a slot")],
        }
    }

    fn value_level(&self, v: EwValue) -> usize {
        if let EwValue::Instr(j) = v {
            self.level[j]
        } else {
            0
        }
    }
}

/// Function parameters and hoisted values, available everywhere in the function.
struct Hoisted {
    inputs: Vec<Value>,
    outputs: Vec<Value>,
    scratch: Value,
    cols: Value,
    slot_len: Value,
    /// Scalar and splatted constants, by index into `Program::consts`.
    consts: Vec<(Value, Value)>,
    /// Scalar and splatted value of each `Scalar` input.
    scalars: HashMap<usize, (Value, Value)>,
    zero: (Value, Value),
}

/// Per-row values of one phase: base addresses and per-row broadcasts.
struct Row {
    /// Address of the block row in each `Full`/`Row` input.
    inputs: HashMap<usize, Value>,
    /// Scalar and splatted value of each `Col` input for this row.
    cols: HashMap<usize, (Value, Value)>,
    outputs: Vec<Value>,
    /// Address of the block row in each scratch slot.
    slots: Vec<Value>,
}

struct Gen<'a> {
    prog: &'a Program,
    sched: &'a Schedule,
    helpers: Vec<FuncRef>,
}

fn notrap() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// `for i in (start..end).step_by(step) { body(i) }`, as CLIF blocks.
fn counted_loop(
    b: &mut FunctionBuilder,
    start: Value,
    end: Value,
    step: Value,
    body: impl FnOnce(&mut FunctionBuilder, Value),
) {
    let (header, inner, exit) = (b.create_block(), b.create_block(), b.create_block());
    b.append_block_param(header, I64);
    b.ins().jump(header, &[BlockArg::Value(start)]);
    b.switch_to_block(header);
    let i = b.block_params(header)[0];
    let more = b.ins().icmp(IntCC::SignedLessThan, i, end);
    b.ins().brif(more, inner, &[], exit, &[]);
    b.switch_to_block(inner);
    body(b, i);
    let next = b.ins().iadd(i, step);
    b.ins().jump(header, &[BlockArg::Value(next)]);
    b.switch_to_block(exit);
}

fn min(b: &mut FunctionBuilder, x: Value, y: Value) -> Value {
    let lt = b.ins().icmp(IntCC::SignedLessThan, x, y);
    b.ins().select(lt, x, y)
}

impl Gen<'_> {
    fn emit(&self, b: &mut FunctionBuilder) {
        let g = &self.prog.group;
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let p = b.block_params(entry).to_vec();
        let (rows, cols, br, bc) = (p[4], p[5], p[6], p[7]);
        let load_ptrs = |b: &mut FunctionBuilder, table: Value, n: usize| -> Vec<Value> {
            (0..n).map(|k| b.ins().load(I64, notrap(), table, (8 * k) as i32)).collect()
        };
        let inputs = load_ptrs(b, p[0], g.inputs.len());
        let outputs = load_ptrs(b, p[1], g.outputs.len());
        let both = |b: &mut FunctionBuilder, s: Value| (s, b.ins().splat(F32X4, s));
        let consts = (0..self.prog.consts.len())
            .map(|m| {
                let s = b.ins().load(F32, notrap(), p[2], (4 * m) as i32);
                both(b, s)
            })
            .collect();
        let mut scalars = HashMap::new();
        for (k, kind) in g.inputs.iter().enumerate() {
            if *kind == EwBroadcast::Scalar {
                let s = b.ins().load(F32, notrap(), inputs[k], 0);
                scalars.insert(k, both(b, s));
            }
        }
        let z = b.ins().f32const(0.0);
        let zero = both(b, z);
        let e = Hoisted { inputs, outputs, scratch: p[3], cols, slot_len: p[8], consts, scalars, zero };
        let zero_i = b.ins().iconst(I64, 0);
        counted_loop(b, zero_i, rows, br, |b, r0| {
            let left = b.ins().isub(rows, r0);
            let nr = min(b, br, left);
            counted_loop(b, zero_i, cols, bc, |b, c0| {
                let left = b.ins().isub(cols, c0);
                let nc = min(b, bc, left);
                for phase in 0..self.sched.phases {
                    self.emit_phase(b, &e, phase, [r0, nr, c0, nc]);
                }
            });
        });
        b.ins().return_(&[]);
    }

    /// Whether the per-element code of `phase` reads `v`.
    fn phase_reads(&self, phase: usize, v: EwValue) -> bool {
        let (g, s) = (&self.prog.group, self.sched);
        let body = g.body.iter().enumerate().any(|(i, ins)| {
            let here = if helper_of(ins).is_some() { s.level[i] == phase + 1 } else { s.level[i] == phase };
            self.prog.live[i] && here && super::operands(ins).any(|o| o == v)
        });
        body || g.outputs.iter().enumerate().any(|(j, o)| *o == v && s.value_level(*o) == phase && !s.is_home(j, *o))
    }

    /// Whether `phase` has anything to do per element.
    fn phase_work(&self, phase: usize) -> bool {
        let (g, s) = (&self.prog.group, self.sched);
        let body = g.body.iter().enumerate().any(|(i, ins)| {
            self.prog.live[i]
                && ((helper_of(ins).is_none() && s.level[i] == phase)
                    || (helper_of(ins).is_some() && s.level[i] == phase + 1))
        });
        body || g.outputs.iter().enumerate().any(|(j, v)| s.value_level(*v) == phase && !s.is_home(j, *v))
    }

    /// One phase over the block `[r0, r0+nr) × [c0, c0+nc)`, then the helper calls that
    /// make the next phase's transcendental values.
    fn emit_phase(&self, b: &mut FunctionBuilder, e: &Hoisted, phase: usize, [r0, nr, c0, nc]: [Value; 4]) {
        let g = &self.prog.group;
        if self.phase_work(phase) {
            let zero = b.ins().iconst(I64, 0);
            let one = b.ins().iconst(I64, 1);
            counted_loop(b, zero, nr, one, |b, i| {
                let r = b.ins().iadd(r0, i);
                let rc = b.ins().imul(r, e.cols);
                let full = b.ins().iadd(rc, c0);
                let full = b.ins().ishl_imm_u(full, 2);
                let part = b.ins().ishl_imm_u(c0, 2);
                let mut row =
                    Row { inputs: HashMap::new(), cols: HashMap::new(), outputs: Vec::new(), slots: Vec::new() };
                for (k, kind) in g.inputs.iter().enumerate() {
                    if !self.phase_reads(phase, EwValue::Input(k)) {
                        continue;
                    }
                    match kind {
                        EwBroadcast::Full => _ = row.inputs.insert(k, b.ins().iadd(e.inputs[k], full)),
                        EwBroadcast::Row => _ = row.inputs.insert(k, b.ins().iadd(e.inputs[k], part)),
                        EwBroadcast::Col => {
                            let at = b.ins().ishl_imm_u(r, 2);
                            let at = b.ins().iadd(e.inputs[k], at);
                            let s = b.ins().load(F32, notrap(), at, 0);
                            let v = b.ins().splat(F32X4, s);
                            row.cols.insert(k, (s, v));
                        }
                        EwBroadcast::Scalar => {}
                    }
                }
                row.outputs = e.outputs.iter().map(|o| b.ins().iadd(*o, full)).collect();
                let within = b.ins().imul(i, nc);
                for s in 0..self.sched.slots {
                    let at = b.ins().imul_imm_s(e.slot_len, s as i64);
                    let at = b.ins().iadd(at, within);
                    let at = b.ins().ishl_imm_u(at, 2);
                    row.slots.push(b.ins().iadd(e.scratch, at));
                }
                // Byte offsets: 4 vectors per iteration, then single vectors, then a
                // scalar tail. Unrolling lets the four bodies share hoisted values.
                let nc16 = b.ins().band_imm_s(nc, !15);
                let end_u = b.ins().ishl_imm_u(nc16, 2);
                let nc4 = b.ins().band_imm_s(nc, !3);
                let end_v = b.ins().ishl_imm_u(nc4, 2);
                let end_s = b.ins().ishl_imm_u(nc, 2);
                let zero = b.ins().iconst(I64, 0);
                let (sixty_four, sixteen, four) =
                    (b.ins().iconst(I64, 64), b.ins().iconst(I64, 16), b.ins().iconst(I64, 4));
                counted_loop(b, zero, end_u, sixty_four, |b, off| {
                    for k in 0..4 {
                        let at = b.ins().iadd_imm_s(off, 16 * k);
                        self.emit_body(b, e, &row, phase, F32X4, at);
                    }
                });
                counted_loop(b, end_u, end_v, sixteen, |b, off| self.emit_body(b, e, &row, phase, F32X4, off));
                counted_loop(b, end_v, end_s, four, |b, off| self.emit_body(b, e, &row, phase, F32, off));
            });
        }
        for (i, ins) in g.body.iter().enumerate() {
            if let (true, Some(h)) = (self.prog.live[i] && self.sched.level[i] == phase + 1, helper_of(ins)) {
                let ptr = match self.sched.home_out[i] {
                    Some(j) => {
                        let rc = b.ins().imul(r0, e.cols);
                        let at = b.ins().iadd(rc, c0);
                        let at = b.ins().ishl_imm_u(at, 2);
                        b.ins().iadd(e.outputs[j], at)
                    }
                    None => {
                        let slot = self.sched.slot[i].expect("a transcendental value has a slot");
                        let at = b.ins().imul_imm_s(e.slot_len, 4 * slot as i64);
                        b.ins().iadd(e.scratch, at)
                    }
                };
                let n = b.ins().imul(nr, nc);
                b.ins().call(self.helpers[h], &[ptr, n]);
            }
        }
    }

    /// The per-element code of `phase` at byte offset `off` of the block row, on vectors
    /// (`F32X4`) or single values (`F32`).
    fn emit_body(&self, b: &mut FunctionBuilder, e: &Hoisted, row: &Row, phase: usize, ty: Type, off: Value) {
        let (g, s, prog) = (&self.prog.group, self.sched, self.prog);
        let pick = |pair: &(Value, Value)| if ty == F32X4 { pair.1 } else { pair.0 };
        let mut memo: HashMap<Elem, Value> = HashMap::new();
        let value = |b: &mut FunctionBuilder, memo: &mut HashMap<Elem, Value>, v: EwValue, cidx: Option<usize>| {
            let key = match v {
                EwValue::Const(_) => return pick(&e.consts[cidx.expect("a constant has an index")]),
                EwValue::Input(k) => match g.inputs[k] {
                    EwBroadcast::Col => return pick(&row.cols[&k]),
                    EwBroadcast::Scalar => return pick(&e.scalars[&k]),
                    _ => Elem::Input(k),
                },
                EwValue::Instr(j) => Elem::Instr(j),
            };
            if let Some(x) = memo.get(&key) {
                return *x;
            }
            let base = match key {
                Elem::Input(k) => row.inputs[&k],
                Elem::Instr(j) => s.row_home(row, j),
            };
            let at = b.ins().iadd(base, off);
            let x = b.ins().load(ty, notrap(), at, 0);
            memo.insert(key, x);
            x
        };
        let store = |b: &mut FunctionBuilder, x: Value, base: Value| {
            let at = b.ins().iadd(base, off);
            b.ins().store(notrap(), x, at, 0);
        };
        for (i, ins) in g.body.iter().enumerate() {
            if !prog.live[i] {
                continue;
            }
            let ops: Vec<EwValue> = super::operands(ins).collect();
            let c = prog.const_at[i];
            if helper_of(ins).is_some() {
                if s.level[i] == phase + 1 {
                    let x = value(b, &mut memo, ops[0], c[0]);
                    store(b, x, s.row_home(row, i));
                }
                continue;
            }
            if s.level[i] != phase {
                continue;
            }
            let x = value(b, &mut memo, ops[0], c[0]);
            let y = match ins {
                EwInstr::Add(..) | EwInstr::Sub(..) | EwInstr::Mul(..) => Some(value(b, &mut memo, ops[1], c[1])),
                _ => None,
            };
            let r = match ins {
                EwInstr::Add(..) => b.ins().fadd(x, y.expect("binary")),
                EwInstr::Sub(..) => b.ins().fsub(x, y.expect("binary")),
                EwInstr::Mul(..) => b.ins().fmul(x, y.expect("binary")),
                EwInstr::Scale(..) => b.ins().fmul(x, pick(&e.consts[c[2].expect("a scale has a factor")])),
                _ => {
                    // relu: `x < 0 ? 0 : x` (NaN stays NaN); `bitselect` over the compare
                    // mask lowers to one `maxps`-like blend on x86.
                    let zero = pick(&e.zero);
                    let lt = b.ins().fcmp(FloatCC::LessThan, x, zero);
                    if ty == F32X4 {
                        let le = MemFlagsData::new().with_endianness(Endianness::Little);
                        let mask = b.ins().bitcast(F32X4, le, lt);
                        b.ins().bitselect(mask, zero, x)
                    } else {
                        b.ins().select(lt, zero, x)
                    }
                }
            };
            memo.insert(Elem::Instr(i), r);
            if let Some(slot) = s.slot[i] {
                store(b, r, row.slots[slot]);
            }
        }
        for (j, v) in g.outputs.iter().enumerate() {
            if s.value_level(*v) == phase && !s.is_home(j, *v) {
                let x = value(b, &mut memo, *v, prog.out_const[j]);
                store(b, x, row.outputs[j]);
            }
        }
    }
}

/// A memoisable per-element value: a loaded input or an instruction's result.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Elem {
    Input(usize),
    Instr(usize),
}
