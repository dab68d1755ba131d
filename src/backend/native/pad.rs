//! Row padding of values that only linear layers read: a buffer that one linear or
//! layer-norm step writes and only linear steps read, as their input, whose rows are a
//! multiple of [`ALIAS`] floats long, gets rows one cache line ([`PAD`] floats) longer.
//!
//! The packed kernels broadcast `x` from a tile's rows in place (14 rows at AVX-512, 6
//! at AVX2). Rows 4 KiB apart fall into one set of a 64-set L1 (Intel's and AMD's alike),
//! so a 3072-wide input (a transformer's fc2 reading fc1's output) keeps all fourteen
//! rows' lines in one 12-way set: they evict each other every reduction step and every
//! broadcast comes from L2. With rows of 3088 floats the same lines spread over the sets.
//! Measured on a 2-core Sapphire Rapids, one process, rounds alternated: VideoMAE-B's fc2
//! (1568 × 768 × 3072) took 0.94–0.95 of its time on the padded rows (medians of 25
//! rounds, two runs). Copying `x` into padded rows before the product cost as much as it
//! saved, so the producer writes the padded rows itself: the packed kernel and the
//! general GEMM both take any output row stride, and a layer norm writes row by row.
//! A layer norm's output at 1024 wide (ViT-L's, BERT-large's: the input of qkv and of
//! fc1) has the same 4 KiB rows.
//!
//! The pass runs on the finished steps (after fusion groups, so fc1's GELU epilogue has
//! taken its output buffer) and changes only row strides and buffer lengths; every
//! element keeps its value and bits.

use super::program::{Res, Step, Store, View};

/// Row lengths (floats) that are multiples of this put a tile's rows in one L1 set
/// (4 KiB: 64 sets of 64-byte lines).
pub const ALIAS: usize = 1024;

/// Floats added to such a row: one cache line, so rows stay 64-byte aligned.
pub const PAD: usize = 16;

/// Pad the rows of every buffer that qualifies (see the module doc); `lens` are the
/// arena buffers' lengths in floats, `live_out` the buffers the model outputs.
pub(super) fn pad_rows(steps: &mut [(Step, usize)], lens: &mut [usize], live_out: &[usize]) {
    let access: Vec<_> = steps.iter().map(|(s, _)| s.access()).collect();
    for i in 0..steps.len() {
        let y = match &steps[i].0 {
            Step::Linear { y, .. } => y,
            // A layer norm's own operands dense: only its output changes layout.
            Step::LayerNorm { x, gamma, beta, out, add, .. }
                if [x, gamma, beta]
                    .into_iter()
                    .chain(add.iter().flat_map(|(p, q)| [p, q]))
                    .all(|v| v.store != out.store) =>
            {
                out
            }
            _ => continue,
        };
        let Store::Arena(b) = y.store else { continue };
        let whole = y.offset == 0 && y.contiguous() && y.numel() == lens[b];
        if !whole || y.cols() % ALIAS != 0 || y.rows() < 2 || live_out.contains(&b) {
            continue;
        }
        let (cols, numel) = (y.cols(), y.numel());
        let touches = |j: usize| {
            let r = Res::Arena(b);
            access[j].reads.contains(&r) || access[j].writes.contains(&r)
        };
        // Every other step that touches the buffer reads it whole, as a linear's input
        // and nothing else.
        let reader = |s: &Step| match s {
            Step::Linear { x, w, bias, y: out, .. } => {
                whole_rows(x, b, cols, numel)
                    && [Some(w), bias.as_ref(), Some(out)].into_iter().flatten().all(|v| v.store != Store::Arena(b))
            }
            _ => false,
        };
        let others: Vec<usize> = (0..steps.len()).filter(|&j| j != i && touches(j)).collect();
        if others.is_empty()
            || !others.iter().all(|&j| reader(&steps[j].0) && !access[j].writes.contains(&Res::Arena(b)))
        {
            continue;
        }
        let rs = cols + PAD;
        match &mut steps[i].0 {
            Step::Linear { y, .. } | Step::LayerNorm { out: y, .. } => y.rs = rs,
            _ => unreachable!("the writer is a linear or a layer norm"),
        }
        for j in others {
            if let Step::Linear { x, .. } = &mut steps[j].0 {
                x.rs = rs;
            }
        }
        lens[b] = numel / cols * rs;
    }
}

/// `v` is all of arena buffer `b` (`numel` floats in rows of `cols`), dense.
fn whole_rows(v: &View, b: usize, cols: usize, numel: usize) -> bool {
    v.store == Store::Arena(b) && v.offset == 0 && v.contiguous() && v.cols() == cols && v.numel() == numel
}

#[cfg(test)]
mod tests {
    use super::super::attention::AttentionPath;
    use super::super::ew::{EwCompiler, EwStrategy};
    use super::super::math;
    use super::super::program::Store;
    use super::super::program::{Program, Step};
    use super::super::Native;
    use super::PAD;
    use crate::backend::native::lower::{lower, InputSig};
    use crate::backend::{run_named, Backend, Options, Plan};
    use crate::ir::DType;
    use crate::params::init::random_values;
    use crate::pipeline::Mode;
    use crate::tensor::HostTensor;

    /// An MLP `width` wide whose hidden value is also an output when `keep`.
    fn mlp(width: usize, keep: bool) -> String {
        format!(
            "module act() {{\n  in x\n  fc1 = linear(24, {width})(x)\n  out gelu(fc1)\n}}\n\
             model m {{\n  input x: f32[B, 24]\n  encoder h = act()(x)\n  encoder fc2 = linear({width}, 20)(h)\n  \
             output y = fc2\n{}}}\n",
            if keep { "  output g = h\n" } else { "" }
        )
    }

    fn plan(spec: &str) -> Plan {
        let c = crate::api::compile_str("m.graft", None, spec, Mode::Infer)
            .unwrap_or_else(|e| panic!("{}", crate::api::render_failure(&e, false)));
        Plan::new(&c.graph)
    }

    fn program(spec: &str, batch: usize) -> Program {
        let sigs = [Some(InputSig { shape: vec![batch, 24], int: false })];
        let mut ew = EwCompiler::new(EwStrategy::Jit).unwrap();
        lower(&plan(spec), &sigs, 2, (AttentionPath::Auto, math::best()), &mut ew).unwrap()
    }

    /// The row strides of the program's two linear steps: (fc1's output, fc2's input).
    fn strides(p: &Program) -> (usize, usize) {
        let linears: Vec<&Step> =
            p.steps.iter().map(|s| &s.step).filter(|s| matches!(s, Step::Linear { .. })).collect();
        match linears[..] {
            [Step::Linear { y, .. }, Step::Linear { x, .. }] => (y.rs, x.rs),
            _ => panic!("two linear steps"),
        }
    }

    #[test]
    fn only_a_value_passed_between_linears_at_a_4_kib_multiple_gets_padded_rows() {
        let p = program(&mlp(1024, false), 7);
        assert_eq!(strides(&p), (1024 + PAD, 1024 + PAD), "fc1 writes and fc2 reads rows of 1040");
        let Some(Step::Linear { y, .. }) = p.steps.iter().map(|s| &s.step).find(|s| matches!(s, Step::Linear { .. }))
        else {
            unreachable!()
        };
        let Store::Arena(b) = y.store else { panic!("fc1 writes the arena") };
        assert_eq!(p.buffers[b].len, 7 * (1024 + PAD), "the buffer holds the padded rows");
        // A model output stays dense; so do rows off a 4 KiB multiple, and a single row.
        assert_eq!(strides(&program(&mlp(1024, true), 7)), (1024, 1024));
        assert_eq!(strides(&program(&mlp(1000, false), 7)), (1000, 1000));
        assert_eq!(strides(&program(&mlp(2048, false), 1)), (2048, 2048));
    }

    /// The bits of output `y` of `spec` on the native backend (random parameters and
    /// inputs, seeded) at `threads` threads and batch `batch`.
    fn output_bits(spec: &str, threads: usize, batch: i64) -> Vec<u32> {
        let plan = plan(spec);
        let params: Vec<HostTensor> = plan.params().iter().map(|p| random_values(p, 0)).collect();
        let given = crate::backend::inputs::random(&plan, batch, 7).unwrap();
        let native = Native { threads, ..Native::default() };
        let mut exe = native.prepare(&plan, params, &Options::default()).unwrap();
        let out = run_named(exe.as_mut(), &plan, given, DType::F32).unwrap();
        let y = out.into_iter().find(|(n, _)| n == "y").unwrap().1;
        y.as_f32().unwrap().iter().map(|v| v.to_bits()).collect()
    }

    /// A layer norm `width` wide between two linear layers, its output also a model
    /// output when `keep`.
    fn normed(width: usize, keep: bool) -> String {
        format!(
            "model m {{\n  input x: f32[B, 24]\n  encoder up = linear(24, {width})(x)\n  \
             encoder n = layernorm({width})(up)\n  encoder fc = linear({width}, 20)(n)\n  output y = fc\n{}}}\n",
            if keep { "  output g = n\n" } else { "" }
        )
    }

    /// The layer norm's output row stride and the second linear's input row stride.
    fn norm_strides(p: &Program) -> (usize, usize) {
        let out = p.steps.iter().find_map(|s| match &s.step {
            Step::LayerNorm { out, .. } => Some(out.rs),
            _ => None,
        });
        let mut x = p.steps.iter().filter_map(|s| match &s.step {
            Step::Linear { x, .. } => Some(x.rs),
            _ => None,
        });
        (out.expect("a layer norm step"), x.next_back().expect("a linear step"))
    }

    #[test]
    fn a_layer_norms_output_read_only_by_linears_gets_padded_rows_too() {
        assert_eq!(norm_strides(&program(&normed(1024, false), 7)), (1024 + PAD, 1024 + PAD));
        assert_eq!(norm_strides(&program(&normed(1024, true), 7)), (1024, 1024));
        assert_eq!(norm_strides(&program(&normed(768, false), 7)), (768, 768));
        let run = |keep: bool, threads: usize, batch: i64| output_bits(&normed(2048, keep), threads, batch);
        for batch in [2, 15, 33] {
            let dense = run(true, 1, batch);
            for threads in [1, 2] {
                assert_eq!(run(false, threads, batch), dense, "batch {batch}, {threads} threads");
            }
        }
    }

    #[test]
    fn padded_rows_give_the_dense_programs_bits() {
        let run = |keep: bool, threads: usize, batch: i64| output_bits(&mlp(2048, keep), threads, batch);
        for batch in [2, 15, 33] {
            let dense = run(true, 1, batch);
            for threads in [1, 2] {
                assert_eq!(run(false, threads, batch), dense, "batch {batch}, {threads} threads");
            }
        }
    }
}
