//! Layout ops: `reshape`, `permute`, `split`, `token_select` and `concat`, as free
//! views where the source layout allows and as copies otherwise. Result shapes come
//! from the op's shape rule (the caller passes them); these only decide layouts.

use super::lowering::{copy_to_fresh, float, internal, norm_axis, Lowering, Val};
use super::program::{Step, Strided, View};
use crate::backend::BackendError;

/// A reshape to `to`: free when the last dim stays and rows stay uniformly strided,
/// or when the value is contiguous.
pub(super) fn reshape(l: &mut Lowering, v: Val, to: Vec<usize>) -> Result<Val, BackendError> {
    let v = match v {
        Val::I(b, _) => return Ok(Val::I(b, to)),
        Val::F(v) => v,
        Val::Absent => return Err(internal("absent reshape")),
    };
    if v.contiguous() {
        return Ok(Val::F(View::plain(v.store, v.offset, to)));
    }
    // [B, C, s1, s2] token-major flattened to [B, C, s1·s2] stays token-major.
    if v.token_major && to.len() >= 2 && to[..2] == v.shape[..2] {
        return Ok(Val::F(View { shape: to, ..v }));
    }
    if !v.token_major && to.last() == v.shape.last() {
        return Ok(Val::F(View { shape: to, ..v }));
    }
    let d = l.dense(v);
    Ok(Val::F(View::plain(d.store, d.offset, to)))
}

/// A permutation of the dims into `shape`.
pub(super) fn permute(l: &mut Lowering, v: View, perm: &[i64], shape: Vec<usize>) -> Result<Val, BackendError> {
    let perm: Vec<usize> = perm.iter().map(|&p| norm_axis(p, v.shape.len())).collect();
    // [B, C, T] token-major permuted to [B, T, C] is the stored matrix itself.
    if v.token_major && v.shape.len() == 3 && perm == [0, 2, 1] {
        return Ok(Val::F(View { store: v.store, offset: v.offset, rs: v.rs, shape, token_major: false }));
    }
    let st = v.strides();
    let src = Strided { store: v.store, offset: v.offset, shape, strides: perm.iter().map(|&p| st[p]).collect() };
    Ok(Val::F(copy_to_fresh(l, src)))
}

/// Part `index` along `axis`, of size `shape[axis]`.
pub(super) fn split(l: &mut Lowering, v: View, axis: i64, index: i64, shape: Vec<usize>) -> Result<Val, BackendError> {
    let ax = norm_axis(axis, v.shape.len());
    let st = v.strides();
    let offset = v.offset + index as usize * shape[ax] * st[ax];
    Ok(Val::F(if !v.token_major && ax + 1 == v.shape.len() {
        View { store: v.store, offset, rs: v.rs, shape, token_major: false }
    } else if v.contiguous() && v.shape[..ax].iter().all(|&d| d == 1) {
        View::plain(v.store, offset, shape)
    } else {
        copy_to_fresh(l, Strided { store: v.store, offset, shape, strides: st })
    }))
}

/// `x[:, index]` of `[B, T, D]`: a view of every `T`-th row.
pub(super) fn token_select(l: &mut Lowering, v: View, index: i64, shape: Vec<usize>) -> Result<Val, BackendError> {
    let v = l.rowwise(v);
    let t = v.shape[1];
    // The shape rule checked the index against `t`.
    let idx = if index < 0 { index + t as i64 } else { index } as usize;
    Ok(Val::F(View { store: v.store, offset: v.offset + idx * v.rs, rs: v.rs * t, shape, token_major: false }))
}

/// Concat along `axis` into `target`: each part copied into its slice of one buffer,
/// size-1 dims off the axis broadcast (a class token against the patches).
pub(super) fn concat(l: &mut Lowering, axis: i64, a: Vec<Val>, target: Vec<usize>) -> Result<Val, BackendError> {
    let parts: Vec<View> = a.into_iter().map(|v| float(l, v)).collect::<Result<_, _>>()?;
    let rank = target.len();
    let ax = norm_axis(axis, rank);
    let out = l.fresh(target.clone());
    let ost = out.strides();
    let mut at = 0usize;
    for p in &parts {
        let mut shape = target.clone();
        shape[ax] = p.shape[ax];
        let pst = p.strides();
        let strides = (0..rank).map(|i| if p.shape[i] == 1 && shape[i] != 1 { 0 } else { pst[i] }).collect();
        let src = Strided { store: p.store, offset: p.offset, shape: shape.clone(), strides };
        let dst = Strided { store: out.store, offset: at * ost[ax], shape, strides: ost.clone() };
        l.push(Step::Copy { src, dst });
        at += p.shape[ax];
    }
    Ok(Val::F(out))
}
