//! `graft bench --paced`: single forwards on request, so that a driver process can
//! interleave them one by one with another runtime's (`benches/python/paced.py` times
//! ONNX Runtime in its own process this way). Alternating whole processes leaves each
//! ratio at the mercy of whatever else the host ran during one of them; alternating
//! single forwards, a few milliseconds apart, pairs every measurement with one taken
//! under nearly the same conditions.
//!
//! The protocol, line by line: after compiling the one spec, preparing it on the one
//! backend and warming up every `--batch` size (`--warmup` forwards each), the process
//! prints `ready`; then for each line read from stdin, a batch size of `--batch`, it
//! runs one forward at that size and prints its latency in milliseconds. End of input
//! ends the process (exit 0); a line that is not one of the batch sizes is an error
//! (exit 1) naming the line.

use super::bench::{executables, weights_for, BenchArgs};
use crate::api::compile_file;
use crate::backend::{inputs, Plan};
use anyhow::{anyhow, bail, Context, Result};
use std::io::{BufRead, Write};

/// `graft bench --paced`.
pub fn run(a: &BenchArgs) -> Result<()> {
    let [spec] = a.specs.as_slice() else {
        bail!("--paced times one spec; got {} (hint: one process per spec)", a.specs.len());
    };
    if a.backend.len() != 1 {
        bail!("--paced times forwards on one backend; got {} (hint: one process per backend)", a.backend.len());
    }
    let c = compile_file(spec, a.mode.into()).map_err(|f| anyhow!("{}", crate::api::render_failure(&f, false)))?;
    let plan = Plan::new(&c.graph);
    let (mut exes, _) = executables(spec, &weights_for(a, 0)?, a, &c, &plan)?;
    let (_, float, mut exe) = exes.pop().context("one backend prepared")?;
    let mut bound = Vec::new();
    for &b in &a.batch {
        let values = inputs::bind(&plan, inputs::random(&plan, b, 0)?, float)?.values;
        exe.time_forward(&values, a.warmup, 0)?;
        bound.push((b, values));
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    let sizes = || a.batch.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(", ");
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("reading stdin")?;
        let values = line
            .trim()
            .parse::<i64>()
            .ok()
            .and_then(|b| bound.iter().find(|(size, _)| *size == b))
            .map(|(_, v)| v)
            .ok_or_else(|| {
                anyhow!(
                    "stdin line {}: expected one of the batch sizes {}; got `{}` (hint: --batch lists the sizes --paced prepares)",
                    n + 1,
                    sizes(),
                    line.trim()
                )
            })?;
        let ms = exe.time_forward(values, 0, 1)?;
        writeln!(out, "{:.4}", ms[0])?;
        out.flush()?;
    }
    Ok(())
}
