//! The plan: a verified graph → a flat, backend-neutral instruction list over value
//! slots, what every backend executes.
//!
//! One topological schedule ([`Graph::topo_order`]) is computed once. Inputs and
//! computed values live in numbered slots; parameters are read from the parameter
//! table by index and never occupy a slot. Each instruction lists the slots whose
//! last reader it is, so the executor drops those tensors straight after it runs, and
//! freed slot numbers are reused. Running the plan never touches the graph.
//!
//! A plan is built only from a [`Verified`] graph: acyclic, typed, no `unbound`
//! input, every output fed, so building one cannot fail. Each instruction also says
//! which of its operands are computed from a model input ([`Instr::data`]), which the
//! op's rule for absent operands needs ([`Op::on_absent`]: an `add` passes a present
//! operand through when the other is absent).

use crate::ir::{Graph, NodeId, Op, ParamInfo, TensorType, Verified};
use std::collections::HashMap;

/// Where an instruction reads an operand.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Src {
    Slot(usize),
    /// Index into [`Plan::params`].
    Param(usize),
}

/// What an instruction computes: the IR op with its configuration, minus the graph.
#[derive(Clone, Debug, PartialEq)]
pub enum Kernel {
    Linear,
    GroupedLinear { groups: i64 },
    Conv { stride: Vec<i64> },
    LayerNorm { eps: f64 },
    Gelu,
    Relu,
    Tanh,
    Sigmoid,
    SinusoidPositions,
    Attention { heads: i64 },
    Add,
    Mul,
    Scale { factor: f64 },
    Reshape { dims: Vec<i64> },
    Permute { perm: Vec<i64> },
    Split { axis: i64, parts: i64, index: i64 },
    Concat { axis: i64 },
    Embedding,
    TokenSelect { index: i64 },
    MeanTokens,
    Positions,
    MatMul,
}

impl Kernel {
    fn of(op: &Op) -> Option<Kernel> {
        Some(match op {
            Op::Linear => Kernel::Linear,
            Op::GroupedLinear { groups } => Kernel::GroupedLinear { groups: *groups },
            Op::Conv2d { stride } => Kernel::Conv { stride: stride.to_vec() },
            Op::Conv3d { stride } => Kernel::Conv { stride: stride.to_vec() },
            Op::LayerNorm { eps } => Kernel::LayerNorm { eps: *eps },
            Op::Gelu => Kernel::Gelu,
            Op::Relu => Kernel::Relu,
            Op::Tanh => Kernel::Tanh,
            Op::Sigmoid => Kernel::Sigmoid,
            Op::SinusoidPositions => Kernel::SinusoidPositions,
            Op::Attention { heads } => Kernel::Attention { heads: *heads },
            Op::Add => Kernel::Add,
            Op::Mul => Kernel::Mul,
            Op::Scale { factor } => Kernel::Scale { factor: *factor },
            Op::Reshape { dims } => Kernel::Reshape { dims: dims.clone() },
            Op::Permute { perm } => Kernel::Permute { perm: perm.iter().map(|&p| p as i64).collect() },
            Op::Split { axis, parts, index } => Kernel::Split { axis: *axis, parts: *parts, index: *index },
            Op::Concat { axis } => Kernel::Concat { axis: *axis },
            Op::Embedding => Kernel::Embedding,
            Op::TokenSelect { index } => Kernel::TokenSelect { index: *index },
            Op::MeanTokens => Kernel::MeanTokens,
            Op::Positions => Kernel::Positions,
            Op::MatMul => Kernel::MatMul,
            Op::Input { .. } | Op::Output { .. } | Op::Parameter(_) | Op::Unbound => return None,
        })
    }
}

#[derive(Clone, Debug)]
pub struct Instr {
    pub kernel: Kernel,
    pub args: Vec<Src>,
    pub out: usize,
    /// Slots whose last reader this is: dropped once it has run.
    pub free: Vec<usize>,
    /// Per operand: computed from some model input (not from parameters alone), what
    /// [`Op::on_absent`] needs when an operand is absent.
    pub data: Vec<bool>,
    /// The node's instance path, for error messages.
    pub path: String,
    /// The IR op: its name, its shape rule ([`Op::infer`]) and its rule for absent
    /// operands ([`Op::on_absent`]).
    pub op: Op,
}

#[derive(Clone, Debug)]
pub struct InputSlot {
    pub name: String,
    pub ty: TensorType,
    pub optional: bool,
    pub default_zeros: bool,
    /// Declared `normalized`: raw `u8` pixels are accepted too, normalised as placed.
    pub norm: Option<crate::ir::PixelNorm>,
    /// `None` when nothing reads the input.
    pub slot: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct OutputSlot {
    pub name: String,
    pub src: Src,
}

/// A lowered model. Made only by [`Plan::new`] from a [`Verified`] graph and read-only
/// afterwards (its fields are private), so every plan a backend receives holds what the
/// verifier established.
#[derive(Clone, Debug)]
pub struct Plan {
    inputs: Vec<InputSlot>,
    params: Vec<ParamInfo>,
    instrs: Vec<Instr>,
    outputs: Vec<OutputSlot>,
    slots: usize,
}

impl Plan {
    /// The plan of a verified graph.
    pub fn new(v: &Verified) -> Plan {
        build(v.graph())
    }

    /// Every declared input, in declaration order (the order [`super::Executable::run`]
    /// takes them in).
    pub fn inputs(&self) -> &[InputSlot] {
        &self.inputs
    }

    /// Parameters in graph id order; [`Src::Param`] indexes this.
    pub fn params(&self) -> &[ParamInfo] {
        &self.params
    }

    /// The instructions, in execution order.
    pub fn instrs(&self) -> &[Instr] {
        &self.instrs
    }

    /// Every output, in declaration order.
    pub fn outputs(&self) -> &[OutputSlot] {
        &self.outputs
    }

    /// Slots needed at once (the slot vector's length).
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// The plan of a hand-made graph that never went through the verifier, for kernel
    /// tests (absent inputs, kernel errors) that do not type their graphs.
    #[cfg(all(test, feature = "torch"))]
    pub(crate) fn unverified(g: &Graph) -> Plan {
        build(g)
    }

    /// The fewest rows among the embedding tables that input `idx` indexes directly
    /// (so random ids stay in range), if any.
    pub fn embedding_rows(&self, idx: usize) -> Option<i64> {
        let slot = self.inputs.get(idx)?.slot?;
        let mut rows: Option<i64> = None;
        for ins in &self.instrs {
            if ins.kernel == Kernel::Embedding && ins.args[0] == Src::Slot(slot) {
                if let Src::Param(p) = ins.args[1] {
                    let n = self.params[p].shape[0];
                    rows = Some(rows.map_or(n, |r| r.min(n)));
                }
            }
            // The slot is reused once freed: later readers see another value.
            if ins.free.contains(&slot) || ins.out == slot {
                break;
            }
        }
        rows
    }
}

/// The verifier guarantees what the `expect`s below rely on: the graph is acyclic, no
/// `unbound` input survives, every operand is scheduled before its reader.
fn build(g: &Graph) -> Plan {
    let order = g.topo_order().expect("a verified graph is acyclic");
    let mut params = Vec::new();
    let mut src: HashMap<NodeId, Src> = HashMap::new();
    for (id, p) in g.params() {
        src.insert(id, Src::Param(params.len()));
        params.push(p.clone());
    }
    // The position in the schedule of each value's last reader (usize::MAX: an output).
    let pos: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut last: HashMap<NodeId, usize> = HashMap::new();
    for &n in &order {
        let reader = if matches!(g.node(n).op, Op::Output { .. }) { usize::MAX } else { pos[&n] };
        for o in g.operands(n) {
            let e = last.entry(o).or_insert(0);
            *e = (*e).max(reader);
        }
    }
    let data = g.computed_from_inputs();
    let mut pool: Vec<usize> = Vec::new();
    let mut slots = 0usize;
    let mut alloc = |pool: &mut Vec<usize>| {
        pool.pop().unwrap_or_else(|| {
            slots += 1;
            slots - 1
        })
    };
    let (mut inputs, mut instrs, mut outputs) = (Vec::new(), Vec::new(), Vec::new());
    for &n in &order {
        let node = g.node(n);
        match &node.op {
            Op::Parameter(_) | Op::Unbound => {}
            Op::Input { name, ty, optional, default_zeros, norm } => {
                let slot = last.contains_key(&n).then(|| alloc(&mut pool));
                if let Some(s) = slot {
                    src.insert(n, Src::Slot(s));
                }
                inputs.push(InputSlot {
                    name: name.clone(),
                    ty: ty.clone(),
                    optional: *optional,
                    default_zeros: *default_zeros,
                    norm: norm.clone(),
                    slot,
                });
            }
            Op::Output { name } => {
                let from = g.operands(n).first().map(|o| src[o]).expect("a verified output has its operand");
                outputs.push(OutputSlot { name: name.clone(), src: from });
            }
            op => {
                let kernel = Kernel::of(op).expect("compute op");
                if !last.contains_key(&n) {
                    continue; // Nothing reads it: dead code is not run.
                }
                let operands = g.operands(n);
                let mut args = Vec::with_capacity(operands.len());
                let mut free = Vec::new();
                for o in &operands {
                    let s = src[o];
                    args.push(s);
                    if let Src::Slot(s) = s {
                        if last[o] == pos[&n] && !free.contains(&s) {
                            free.push(s);
                        }
                    }
                }
                pool.extend(free.iter().copied());
                let out = alloc(&mut pool);
                src.insert(n, Src::Slot(out));
                let data = operands.iter().map(|o| data.contains(o)).collect();
                instrs.push(Instr { kernel, args, out, free, data, path: node.path.clone(), op: op.clone() });
            }
        }
    }
    // An instruction whose output slot it also frees keeps the value: it is stored
    // after the frees.
    for i in &mut instrs {
        let out = i.out;
        i.free.retain(|&f| f != out);
    }
    Plan { inputs, params, instrs, outputs, slots }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{DType, Init, ParamSource};

    fn input(g: &mut Graph, name: &str, dims: &[i64]) -> NodeId {
        let ty = TensorType::fixed(DType::F32, dims);
        g.add(Op::Input { name: name.into(), ty, optional: false, default_zeros: false, norm: None }, name, None, &[])
    }

    #[test]
    fn slots_are_freed_after_last_use_and_reused() {
        let mut g = Graph::new();
        let x = input(&mut g, "x", &[2, 4]);
        let w = g.add(
            Op::Parameter(ParamInfo {
                path: "w".into(),
                shape: vec![4, 4],
                dtype: DType::F32,
                trainable: false,
                component: "m".into(),
                source: ParamSource::Init { init: Init::Ones },
            }),
            "w",
            None,
            &[],
        );
        let a = g.add(Op::Linear, "a", None, &[x, w]);
        let b = g.add(Op::Relu, "b", None, &[a]);
        let c = g.add(Op::Gelu, "c", None, &[b]);
        let d = g.add(Op::Add, "d", None, &[c, x]);
        g.add(Op::Output { name: "y".into() }, "y", None, &[d]);
        g.add(Op::Output { name: "z".into() }, "z", None, &[b]);
        let p = build(&g);
        assert_eq!(p.params.len(), 1);
        assert_eq!(p.instrs.len(), 4);
        assert_eq!(p.instrs[0].args, vec![Src::Slot(0), Src::Param(0)]);
        // Simulate the slots: every read finds the value it needs, and slots are reused.
        let mut held: HashMap<usize, &str> = HashMap::from([(0, "x")]);
        let reads = [vec!["x"], vec!["a"], vec!["b"], vec!["c", "x"]];
        for (ins, want) in p.instrs.iter().zip(reads) {
            let got: Vec<&str> = ins
                .args
                .iter()
                .filter_map(|a| match a {
                    Src::Slot(s) => Some(held[s]),
                    Src::Param(_) => None,
                })
                .collect();
            assert_eq!(got, want, "{}", ins.path);
            for f in &ins.free {
                held.remove(f);
            }
            held.insert(ins.out, ins.path.as_str());
        }
        assert_eq!(held.len(), 2, "only the outputs stay alive: {held:?}");
        assert!(p.slots <= 3, "{} slots", p.slots);
        assert_eq!(p.outputs.len(), 2);
        assert_eq!(p.outputs[1].src, p.instrs[1].args.first().map(|_| Src::Slot(p.instrs[1].out)).unwrap());
    }

    #[test]
    fn unread_inputs_get_no_slot() {
        let mut g = Graph::new();
        let x = input(&mut g, "x", &[2]);
        let _unused = input(&mut g, "u", &[2]);
        let r = g.add(Op::Relu, "r", None, &[x]);
        g.add(Op::Output { name: "y".into() }, "y", None, &[r]);
        let p = build(&g);
        assert_eq!(p.inputs.len(), 2);
        assert!(p.inputs[1].slot.is_none());
    }
}
