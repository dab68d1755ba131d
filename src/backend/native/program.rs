//! What the native backend executes: a [`Program`], the plan specialised to concrete
//! input shapes and to which optional inputs are present, as a list of [`Step`]s over
//! views into one arena, the parameters and integer buffers.
//!
//! A [`View`] is a tensor whose rows (all dims but the last) are uniformly strided, so
//! a head's columns of a fused qkv buffer, a selected token or a reshape cost nothing.
//! Values produced by a patch-embedding convolution stay token-major
//! ([`View::token_major`]) until a consumer needs another layout.

use super::ew::{EwBroadcast, EwKernel};
use super::rows::ConvGeom;
use std::sync::Arc;

/// Which storage a view addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// A buffer of the arena (index into [`Program::buffers`]).
    Arena(usize),
    /// A parameter, read-only.
    Param(usize),
}

/// A float tensor: `shape`, stored as rows of its last dim starting at `offset`, one
/// row every `rs` elements.
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    pub store: Store,
    pub offset: usize,
    pub rs: usize,
    pub shape: Vec<usize>,
    /// The logical `[B, C, s…]` is stored `[B, Π s, C]` (a convolution's output before
    /// `flatten_tokens`); `offset`/`rs` then describe that physical matrix.
    pub token_major: bool,
}

impl View {
    pub fn plain(store: Store, offset: usize, shape: Vec<usize>) -> View {
        let rs = shape.last().copied().unwrap_or(1);
        View { store, offset, rs, shape, token_major: false }
    }
    pub fn cols(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }
    pub fn rows(&self) -> usize {
        self.numel() / self.cols().max(1)
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Stored as one dense row-major block.
    pub fn contiguous(&self) -> bool {
        !self.token_major && (self.rs == self.cols() || self.rows() <= 1)
    }
    /// Element strides of the logical tensor, dim by dim.
    pub fn strides(&self) -> Vec<usize> {
        let r = self.shape.len();
        let mut st = vec![0usize; r];
        if self.token_major {
            // [B, C, s…] stored as [B, Πs, C] with row stride rs.
            let c = self.shape[1];
            st[0] = self.rs * self.shape[2..].iter().product::<usize>();
            st[1] = 1;
            let mut acc = self.rs;
            for i in (2..r).rev() {
                st[i] = acc;
                acc *= self.shape[i];
            }
            debug_assert!(c <= self.rs);
            return st;
        }
        if r == 0 {
            return st;
        }
        st[r - 1] = 1;
        let mut acc = self.rs;
        for i in (0..r - 1).rev() {
            st[i] = acc;
            acc *= self.shape[i];
        }
        st
    }
    /// Elements from `offset` to one past the last addressed element.
    pub fn span(&self) -> usize {
        if self.numel() == 0 {
            return 0;
        }
        1 + self.shape.iter().zip(self.strides()).map(|(&d, s)| (d - 1) * s).sum::<usize>()
    }
}

/// A general strided tensor (for copies): any strides, 0 for a broadcast dim.
#[derive(Clone, Debug, PartialEq)]
pub struct Strided {
    pub store: Store,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub strides: Vec<usize>,
}

impl Strided {
    pub fn of(v: &View) -> Strided {
        Strided { store: v.store, offset: v.offset, shape: v.shape.clone(), strides: v.strides() }
    }
}

/// Where an attention mask comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Mask {
    Float(View),
    Ids(usize),
}

/// What a linear step applies to its output elements after the product and bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epilogue {
    None,
    /// Exact-erf GELU, the very function the elementwise kernels call
    /// ([`super::math::gelu_erf_inplace`]), so the result has the same bits as a
    /// linear step followed by a GELU group.
    Gelu,
}

/// The kernel one attention step runs: what [`super::attention::AttentionPath`] comes to for its keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionKernel {
    /// [`super::attention::head`].
    Plain,
    /// [`super::attention::head_blocked`].
    Blocked,
    /// [`super::attention::head_packed`].
    Packed,
}

/// One step of a forward. Shapes are concrete; every step partitions itself over the
/// threads of a region (GEMMs by output columns, attention by (batch, head), the rest
/// by rows), and no result depends on the partition.
#[derive(Clone)]
pub enum Step {
    /// Copy float input `input` (converted to f32) into `dst` (contiguous).
    LoadInput {
        input: usize,
        dst: View,
    },
    /// Copy integer input `input` into integer buffer `dst`.
    LoadIds {
        input: usize,
        dst: usize,
    },
    /// Zero-fill `dst` (an absent `= zeros` input).
    Zero {
        dst: View,
    },
    /// The fixed sine-cosine position table `[1, T, D]` into `dst`: `table`, computed
    /// once at lowering (in f64, rounded to f32, as the LibTorch backend does).
    Sinusoid {
        dst: View,
        table: Arc<[f32]>,
    },
    /// `dst = src` element by element (permutes, broadcasts, concat parts, layouts).
    Copy {
        src: Strided,
        dst: Strided,
    },
    /// Per group: `y[m, n/g] = x[m, k/g] · w[n/g, k/g]ᵀ (+ bias)`, the bias broadcast
    /// into `y` first and the product accumulated onto it; then `epilogue` on each
    /// output element while its tile is in cache.
    Linear {
        x: View,
        w: View,
        bias: Option<View>,
        y: View,
        groups: usize,
        epilogue: Epilogue,
    },
    /// Token-major patches of a convolution input.
    Im2col {
        x: View,
        geom: ConvGeom,
        dst: View,
    },
    /// Layer norm of `x` into `out`; with `add`, `x` is first written as `a + b`.
    LayerNorm {
        x: View,
        gamma: View,
        beta: View,
        eps: f32,
        out: View,
        add: Option<(View, View)>,
    },
    /// A fused elementwise group over `[rows, cols]`.
    Ew {
        kernel: EwKernel,
        rows: usize,
        cols: usize,
        inputs: Vec<(View, EwBroadcast)>,
        outputs: Vec<View>,
    },
    /// Multi-head attention by `kernel`; `scratch` holds one head's scratch of it per
    /// thread ([`super::attention::AttentionPath::scratch`]).
    Attention {
        q: View,
        k: View,
        v: View,
        mask: Option<Mask>,
        out: View,
        heads: usize,
        scale: f32,
        scratch: View,
        kernel: AttentionKernel,
    },
    /// `out[i] = table[ids[i]]`; an id outside the table is a [`KernelError`].
    Embedding {
        ids: usize,
        table: View,
        out: View,
    },
    MeanTokens {
        x: View,
        out: View,
    },
    /// `out = a · w` of `[m, k]` and `[k, n]` (weight-level; no threads).
    MatMul {
        a: View,
        w: View,
        out: View,
    },
}

impl Step {
    /// The weight this step may read in packed form, as `(parameter, n, k)`: a
    /// single-group linear whose weight is a whole parameter (offset 0) of `n` rows of
    /// `k`. The one statement of the rule: `prepare` packs these weights, the
    /// executor looks up the packed form the same way ([`super::exec`]).
    pub fn packable_weight(&self) -> Option<(usize, usize, usize)> {
        let Step::Linear { w, groups: 1, y, x, .. } = self else { return None };
        let Store::Param(p) = w.store else { return None };
        (w.offset == 0).then_some((p, y.cols(), x.cols()))
    }

    /// The storage this step reads and writes: its declaration, from which the arena
    /// lifetimes are computed ([`super::arena::lifetimes`]). Every pattern names every
    /// field, so a field added to a step does not compile until it is declared here
    /// (or bound to `_` as holding no storage); and the executor checks each access a
    /// kernel makes against this ([`super::exec`]), so a kernel cannot touch storage
    /// its step does not declare.
    pub fn access(&self) -> Access {
        let mut a = Access::default();
        match self {
            Step::LoadInput { input: _, dst } | Step::Zero { dst } | Step::Sinusoid { dst, .. } => a.write(dst.store),
            Step::LoadIds { input: _, dst } => a.write(Res::Ids(*dst)),
            Step::Copy { src, dst } => {
                a.read(src.store);
                a.write(dst.store);
            }
            Step::Linear { x, w, bias, y, groups: _, epilogue: _ } => {
                for v in [x, w].into_iter().chain(bias) {
                    a.read(v.store);
                }
                a.write(y.store);
            }
            Step::Im2col { x, geom: _, dst } => {
                a.read(x.store);
                a.write(dst.store);
            }
            Step::LayerNorm { x, gamma, beta, eps: _, out, add } => {
                match add {
                    // `x` receives `p + q` and is normalised from registers.
                    Some((p, q)) => {
                        a.read(p.store);
                        a.read(q.store);
                        a.write(x.store);
                    }
                    None => a.read(x.store),
                }
                a.read(gamma.store);
                a.read(beta.store);
                a.write(out.store);
            }
            Step::Ew { kernel: _, rows: _, cols: _, inputs, outputs } => {
                for (v, _) in inputs {
                    a.read(v.store);
                }
                for v in outputs {
                    a.write(v.store);
                }
            }
            Step::Attention { q, k, v, mask, out, heads: _, scale: _, scratch, kernel: _ } => {
                for t in [q, k, v] {
                    a.read(t.store);
                }
                match mask {
                    Some(Mask::Float(m)) => a.read(m.store),
                    Some(Mask::Ids(b)) => a.read(Res::Ids(*b)),
                    None => {}
                }
                a.write(out.store);
                a.write(scratch.store);
            }
            Step::Embedding { ids, table, out } => {
                a.read(Res::Ids(*ids));
                a.read(table.store);
                a.write(out.store);
            }
            Step::MeanTokens { x, out } => {
                a.read(x.store);
                a.write(out.store);
            }
            Step::MatMul { a: x, w, out } => {
                a.read(x.store);
                a.read(w.store);
                a.write(out.store);
            }
        }
        a
    }
}

/// Storage a step can touch: an arena buffer, a parameter, an integer buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Res {
    Arena(usize),
    Param(usize),
    Ids(usize),
}

impl From<Store> for Res {
    fn from(s: Store) -> Res {
        match s {
            Store::Arena(b) => Res::Arena(b),
            Store::Param(p) => Res::Param(p),
        }
    }
}

/// What one step reads and writes ([`Step::access`]). A step never reads what it
/// writes (checked when the program is laid out).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access {
    pub reads: Vec<Res>,
    pub writes: Vec<Res>,
}

impl Access {
    fn read(&mut self, r: impl Into<Res>) {
        let r = r.into();
        if !self.reads.contains(&r) {
            self.reads.push(r);
        }
    }
    fn write(&mut self, r: impl Into<Res>) {
        let r = r.into();
        if !self.writes.contains(&r) {
            self.writes.push(r);
        }
    }
    /// The arena buffers among `rs`.
    pub fn arena(rs: &[Res]) -> impl Iterator<Item = usize> + '_ {
        rs.iter().filter_map(|r| match r {
            Res::Arena(b) => Some(*b),
            _ => None,
        })
    }
}

/// An arena buffer: `len` f32 elements at `offset` (elements) once laid out. A buffer
/// no step touches (a fusion group output kept in registers) takes no arena space.
#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    pub len: usize,
    pub offset: usize,
}

/// An output of the program.
#[derive(Clone, Debug)]
pub enum OutVal {
    Float(View),
    Ids { buf: usize, shape: Vec<usize> },
}

/// The plan instruction a step comes from, for errors: its instance path and op.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    pub path: String,
    pub op: &'static str,
}

/// A step with its declaration and where it comes from.
pub struct Scheduled {
    pub step: Step,
    /// [`Step::access`], computed once.
    pub access: Access,
    /// Index into [`Program::sites`].
    pub site: usize,
}

/// The plan for one set of input shapes and present inputs.
pub struct Program {
    pub steps: Vec<Scheduled>,
    pub sites: Vec<Site>,
    pub buffers: Vec<Buffer>,
    /// Integer buffers: ids inputs (filled per run) and constant positions.
    pub ids: Vec<Vec<i64>>,
    pub outputs: Vec<(String, OutVal)>,
    /// Arena size in f32 elements, and the most bytes live at once.
    pub arena_len: usize,
    pub peak_live_bytes: usize,
}
