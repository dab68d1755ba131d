//! One training batch: forward (autocast to bf16 when asked), cross-entropy of the
//! first output, and the gradients with respect to the trainable parameters, either
//! eagerly or replayed from a CUDA graph captured at the first batch of each shape.

use super::model::{cross_entropy, Model};
use crate::backend::torch::cuda_graph::{Autocast, GraphedStep, LossAndGrads};
use anyhow::Result;
use tch::{Kind, Tensor};

/// Forward (autocast to bf16 when asked), cross-entropy, and the gradients of
/// `loss / accumulate` with respect to `params`, without a host synchronization, so a
/// CUDA graph can capture it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn loss_and_grads(
    model: &Model,
    params: &[Tensor],
    ins: Vec<Option<Tensor>>,
    labels: &Tensor,
    n: usize,
    accumulate: usize,
    autocast: bool,
) -> Result<LossAndGrads> {
    let loss = {
        let _autocast = Autocast::bf16_if(autocast)?;
        let logits = model.logits_of(ins, n)?;
        let logits = if autocast { logits.f_to_kind(Kind::Float)? } else { logits };
        cross_entropy(&logits, labels, false)?
    };
    if !loss.requires_grad() {
        return Ok((loss, Vec::new()));
    }
    let scaled = if accumulate > 1 { loss.f_div_scalar(accumulate as f64)? } else { loss.shallow_clone() };
    let grads = Tensor::f_run_backward(&[&scaled], params, false, false)?;
    Ok((loss, grads))
}

/// One batch's loss and gradients with `--cuda-graph`: captured at the first batch,
/// replayed for every batch of the same shapes and inputs; any other batch (a short
/// last one, one without an optional input) runs eagerly. With `accumulate > 1` the
/// gradients are copied out of the graph's buffers, which the next replay overwrites.
/// `ran_eager` is set when the batch did not fit the graph. `ins` and `labels` are
/// the batch's placed inputs and labels, `n` its samples.
pub fn graphed_batch(
    graph: &mut Option<GraphedStep>,
    model: &Model,
    params: &[Tensor],
    (ins, labels, n): (Vec<Option<Tensor>>, Tensor, usize),
    accumulate: usize,
    autocast: bool,
    ran_eager: &mut bool,
) -> Result<LossAndGrads> {
    let step =
        |ins: Vec<Option<Tensor>>, labels: &Tensor| loss_and_grads(model, params, ins, labels, n, accumulate, autocast);
    let g = match graph {
        Some(g) => g,
        None => graph.insert(GraphedStep::capture(&ins, &labels, &step)?),
    };
    if !g.fits(&ins, &labels) {
        *ran_eager = true;
        return step(ins, &labels);
    }
    let (loss, grads) = g.run(&ins, &labels)?;
    if accumulate == 1 {
        return Ok((loss, grads));
    }
    let owned = |t: &Tensor| -> Result<Tensor> {
        if !t.defined() {
            return Ok(Tensor::new());
        }
        let mut c = t.f_empty_like()?;
        c.f_copy_(t)?;
        Ok(c)
    };
    Ok((loss, grads.iter().map(owned).collect::<Result<_>>()?))
}
