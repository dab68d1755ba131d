//! Fault injection at durable steps, for the tests that prove a run survives a crash
//! or a full disk at any write.
//!
//! Every durable step ([`crate::durable`]: a file written, a rename, a directory
//! published; the run directory's own steps) calls [`point`]. With neither variable
//! set (normal use) a point is one atomic increment.
//!
//! - `GRAFT_FAULT_ABORT_AT=N` aborts the process at the N-th point (1-based): no
//!   destructor runs, no buffer is flushed, as with a SIGKILL or a power cut.
//! - `GRAFT_FAULT_ENOSPC_AT=N` makes the N-th point fail with "No space left on device"
//!   (`ENOSPC`), as a full disk fails a write.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static PASSED: AtomicU64 = AtomicU64::new(0);

struct Plan {
    abort_at: Option<u64>,
    enospc_at: Option<u64>,
}

fn plan() -> &'static Plan {
    static PLAN: OnceLock<Plan> = OnceLock::new();
    PLAN.get_or_init(|| {
        let n = |v: &str| std::env::var(v).ok().and_then(|s| s.trim().parse::<u64>().ok());
        Plan { abort_at: n("GRAFT_FAULT_ABORT_AT"), enospc_at: n("GRAFT_FAULT_ENOSPC_AT") }
    })
}

/// One durable step (`what` names it in the abort message).
#[allow(clippy::print_stderr)] // the last words of a deliberately killed process, for the test's log
pub fn point(what: &str) -> std::io::Result<()> {
    let n = PASSED.fetch_add(1, Ordering::SeqCst) + 1;
    let p = plan();
    if p.abort_at == Some(n) {
        eprintln!("fault injection: aborting at durable step {n} ({what})");
        std::process::abort();
    }
    if p.enospc_at == Some(n) {
        // ENOSPC on Linux and macOS.
        return Err(std::io::Error::from_raw_os_error(28));
    }
    Ok(())
}

/// Durable steps passed so far in this process.
pub fn passed() -> u64 {
    PASSED.load(Ordering::SeqCst)
}
