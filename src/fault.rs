//! Fault injection at durable steps, for the tests that prove a run survives a crash
//! or a full disk at any write. Compiled in only with the cargo feature
//! `fault-injection`, which only the durability tests enable (`tests/durability.rs`,
//! run by `scripts/test.sh`); in every other build a point is an inlined `Ok(())`:
//! a release binary neither reads these variables nor can abort here.
//!
//! Every durable step ([`crate::durable`]: a file written, a rename, a directory
//! published; the run directory's own steps) calls [`point`]. With the feature:
//!
//! - `GRAFT_FAULT_ABORT_AT=N` aborts the process at the N-th point (1-based): no
//!   destructor runs, no buffer is flushed, as with a SIGKILL or a power cut.
//! - `GRAFT_FAULT_ENOSPC_AT=N` makes the N-th point fail with "No space left on device"
//!   (`ENOSPC`), as a full disk fails a write.
//!
//! With neither variable set a point is one atomic increment.

#[cfg(feature = "fault-injection")]
mod inject {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    static PASSED: AtomicU64 = AtomicU64::new(0);

    struct Faults {
        abort_at: Option<u64>,
        enospc_at: Option<u64>,
    }

    fn faults() -> &'static Faults {
        static FAULTS: OnceLock<Faults> = OnceLock::new();
        FAULTS.get_or_init(|| {
            let n = |v: &str| std::env::var(v).ok().and_then(|s| s.trim().parse::<u64>().ok());
            Faults { abort_at: n("GRAFT_FAULT_ABORT_AT"), enospc_at: n("GRAFT_FAULT_ENOSPC_AT") }
        })
    }

    #[allow(clippy::print_stderr)] // the last words of a deliberately killed process, for the test's log
    pub fn point(what: &str) -> std::io::Result<()> {
        let n = PASSED.fetch_add(1, Ordering::SeqCst) + 1;
        let f = faults();
        if f.abort_at == Some(n) {
            eprintln!("fault injection: aborting at durable step {n} ({what})");
            std::process::abort();
        }
        if f.enospc_at == Some(n) {
            // ENOSPC on Linux and macOS.
            return Err(std::io::Error::from_raw_os_error(28));
        }
        Ok(())
    }
}

/// One durable step (`what` names it in the abort message).
#[cfg(feature = "fault-injection")]
pub fn point(what: &str) -> std::io::Result<()> {
    inject::point(what)
}

/// One durable step: nothing to inject in this build.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_what: &str) -> std::io::Result<()> {
    Ok(())
}
