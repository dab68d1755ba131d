//! Safe handles over the C++ shim `csrc/dist.cpp`: a c10d key-value [`Store`]
//! (TCPStore behind a PrefixStore), a process [`Group`] (Gloo or NCCL) and the
//! [`Work`] of an asynchronous collective. Without the `distributed` feature every
//! constructor fails with a message saying so, so callers need no `cfg`.
//!
//! Errors cross the FFI as a return code and a message (the C++ exception's first
//! line), never as an exception.

use anyhow::{bail, Result};
use std::ffi::{c_char, c_int, c_void, CString};
use std::marker::PhantomData;
use std::time::Duration;
use tch::Tensor;

/// Whether this build has the shim.
pub const BUILT: bool = cfg!(feature = "distributed");

/// The message for a build without the feature.
pub const NOT_BUILT: &str = "this graft was built without the `distributed` feature (rebuild with `cargo build --release --features distributed`, or `nccl` for GPUs)";

#[cfg(feature = "distributed")]
mod sys {
    use std::ffi::{c_char, c_int, c_void};
    extern "C" {
        pub fn graft_dist_has_nccl() -> c_int;
        pub fn graft_store_new(
            host: *const c_char,
            port: c_int,
            is_server: c_int,
            world: c_int,
            timeout_ms: i64,
            prefix: *const c_char,
            out: *mut *mut c_void,
            err: *mut c_char,
            len: usize,
        ) -> c_int;
        pub fn graft_store_free(s: *mut c_void);
        pub fn graft_store_set(
            s: *mut c_void,
            key: *const c_char,
            data: *const u8,
            n: usize,
            err: *mut c_char,
            len: usize,
        ) -> c_int;
        pub fn graft_store_get(
            s: *mut c_void,
            key: *const c_char,
            buf: *mut u8,
            cap: usize,
            n: *mut usize,
            err: *mut c_char,
            len: usize,
        ) -> c_int;
        pub fn graft_store_check(
            s: *mut c_void,
            key: *const c_char,
            present: *mut c_int,
            err: *mut c_char,
            len: usize,
        ) -> c_int;
        pub fn graft_store_add(
            s: *mut c_void,
            key: *const c_char,
            delta: i64,
            out: *mut i64,
            err: *mut c_char,
            len: usize,
        ) -> c_int;
        pub fn graft_store_wait(
            s: *mut c_void,
            keys: *const *const c_char,
            n: usize,
            timeout_ms: i64,
            err: *mut c_char,
            len: usize,
        ) -> c_int;
        #[allow(clippy::too_many_arguments)]
        pub fn graft_pg_new(
            store: *mut c_void,
            backend: *const c_char,
            rank: c_int,
            world: c_int,
            timeout_ms: i64,
            cuda_device: c_int,
            out: *mut *mut c_void,
            err: *mut c_char,
            len: usize,
        ) -> c_int;
        pub fn graft_pg_free(pg: *mut c_void);
        pub fn graft_pg_broadcast(pg: *mut c_void, t: *mut c_void, root: c_int, err: *mut c_char, len: usize) -> c_int;
        pub fn graft_pg_allreduce(
            pg: *mut c_void,
            t: *mut c_void,
            op: c_int,
            work: *mut *mut c_void,
            err: *mut c_char,
            len: usize,
        ) -> c_int;
        pub fn graft_work_wait(work: *mut c_void, err: *mut c_char, len: usize) -> c_int;
        pub fn graft_work_free(work: *mut c_void);
        pub fn graft_pg_barrier(pg: *mut c_void, err: *mut c_char, len: usize) -> c_int;
    }
}

/// Stand-ins with the shim's signatures: every call fails (constructors check
/// [`BUILT`] first, so no handle exists to call the others with).
#[cfg(not(feature = "distributed"))]
#[allow(clippy::missing_safety_doc, clippy::too_many_arguments)]
mod sys {
    use std::ffi::{c_char, c_int, c_void};
    pub unsafe fn graft_dist_has_nccl() -> c_int {
        0
    }
    pub unsafe fn graft_store_new(
        _: *const c_char,
        _: c_int,
        _: c_int,
        _: c_int,
        _: i64,
        _: *const c_char,
        _: *mut *mut c_void,
        _: *mut c_char,
        _: usize,
    ) -> c_int {
        1
    }
    pub unsafe fn graft_store_free(_: *mut c_void) {}
    pub unsafe fn graft_store_set(
        _: *mut c_void,
        _: *const c_char,
        _: *const u8,
        _: usize,
        _: *mut c_char,
        _: usize,
    ) -> c_int {
        1
    }
    pub unsafe fn graft_store_get(
        _: *mut c_void,
        _: *const c_char,
        _: *mut u8,
        _: usize,
        _: *mut usize,
        _: *mut c_char,
        _: usize,
    ) -> c_int {
        1
    }
    pub unsafe fn graft_store_check(
        _: *mut c_void,
        _: *const c_char,
        _: *mut c_int,
        _: *mut c_char,
        _: usize,
    ) -> c_int {
        1
    }
    pub unsafe fn graft_store_add(
        _: *mut c_void,
        _: *const c_char,
        _: i64,
        _: *mut i64,
        _: *mut c_char,
        _: usize,
    ) -> c_int {
        1
    }
    pub unsafe fn graft_store_wait(
        _: *mut c_void,
        _: *const *const c_char,
        _: usize,
        _: i64,
        _: *mut c_char,
        _: usize,
    ) -> c_int {
        1
    }
    pub unsafe fn graft_pg_new(
        _: *mut c_void,
        _: *const c_char,
        _: c_int,
        _: c_int,
        _: i64,
        _: c_int,
        _: *mut *mut c_void,
        _: *mut c_char,
        _: usize,
    ) -> c_int {
        1
    }
    pub unsafe fn graft_pg_free(_: *mut c_void) {}
    pub unsafe fn graft_pg_broadcast(_: *mut c_void, _: *mut c_void, _: c_int, _: *mut c_char, _: usize) -> c_int {
        1
    }
    pub unsafe fn graft_pg_allreduce(
        _: *mut c_void,
        _: *mut c_void,
        _: c_int,
        _: *mut *mut c_void,
        _: *mut c_char,
        _: usize,
    ) -> c_int {
        1
    }
    pub unsafe fn graft_work_wait(_: *mut c_void, _: *mut c_char, _: usize) -> c_int {
        1
    }
    pub unsafe fn graft_work_free(_: *mut c_void) {}
    pub unsafe fn graft_pg_barrier(_: *mut c_void, _: *mut c_char, _: usize) -> c_int {
        1
    }
}

/// Call a shim function with a message buffer; non-zero → the shim's message.
fn call(f: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<()> {
    if !BUILT {
        bail!("{NOT_BUILT}");
    }
    crate::backend::torch::shim_call(f).map_err(anyhow::Error::msg)
}

fn cstr(s: &str) -> Result<CString> {
    Ok(CString::new(s)?)
}

fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// True when this build can create NCCL groups.
pub fn has_nccl() -> bool {
    // SAFETY: takes no arguments and never throws.
    BUILT && unsafe { sys::graft_dist_has_nccl() } != 0
}

/// A client (or, with `serve`, the server) of a c10d TCPStore, every key under `prefix`.
pub struct Store {
    raw: *mut c_void,
}

// SAFETY: c10d's TCPStore serializes its client operations internally; a handle is
// used by one thread at a time here anyway (each thread makes its own connection).
unsafe impl Send for Store {}

impl Store {
    /// Connect to (or serve) `host:port`; connecting retries until `timeout`.
    pub fn connect(host: &str, port: u16, serve: bool, world: usize, timeout: Duration, prefix: &str) -> Result<Store> {
        let (h, p) = (cstr(host)?, cstr(prefix)?);
        let mut raw = std::ptr::null_mut();
        // SAFETY: valid C strings and out-pointer; the shim sets `raw` only on success.
        call(|e, n| unsafe {
            sys::graft_store_new(
                h.as_ptr(),
                port as c_int,
                serve as c_int,
                world as c_int,
                millis(timeout),
                p.as_ptr(),
                &mut raw,
                e,
                n,
            )
        })?;
        if raw.is_null() {
            bail!("the store shim returned no handle");
        }
        Ok(Store { raw })
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        let k = cstr(key)?;
        // SAFETY: `raw` is live; `value` outlives the call.
        call(|e, n| unsafe { sys::graft_store_set(self.raw, k.as_ptr(), value.as_ptr(), value.len(), e, n) })
    }

    /// The value of `key`, waiting for it up to the store's timeout.
    pub fn get(&self, key: &str) -> Result<Vec<u8>> {
        let k = cstr(key)?;
        let mut buf = vec![0u8; 4096];
        loop {
            let mut len = 0usize;
            let cap = buf.len();
            // SAFETY: `buf` holds `cap` writable bytes; the shim writes at most that.
            call(|e, n| unsafe { sys::graft_store_get(self.raw, k.as_ptr(), buf.as_mut_ptr(), cap, &mut len, e, n) })?;
            if len <= cap {
                buf.truncate(len);
                return Ok(buf);
            }
            buf = vec![0u8; len];
        }
    }

    pub fn check(&self, key: &str) -> Result<bool> {
        let k = cstr(key)?;
        let mut present = 0;
        // SAFETY: `raw` is live; out-pointer valid.
        call(|e, n| unsafe { sys::graft_store_check(self.raw, k.as_ptr(), &mut present, e, n) })?;
        Ok(present != 0)
    }

    /// Add `delta` to the counter `key` (created at 0) and return the new value.
    pub fn add(&self, key: &str, delta: i64) -> Result<i64> {
        let k = cstr(key)?;
        let mut v = 0i64;
        // SAFETY: `raw` is live; out-pointer valid.
        call(|e, n| unsafe { sys::graft_store_add(self.raw, k.as_ptr(), delta, &mut v, e, n) })?;
        Ok(v)
    }

    /// Wait until every key exists, up to `timeout`.
    pub fn wait(&self, keys: &[String], timeout: Duration) -> Result<()> {
        let ks = keys.iter().map(|k| cstr(k)).collect::<Result<Vec<_>>>()?;
        let ptrs: Vec<*const c_char> = ks.iter().map(|k| k.as_ptr()).collect();
        // SAFETY: `ptrs` point into `ks`, which outlives the call.
        call(|e, n| unsafe { sys::graft_store_wait(self.raw, ptrs.as_ptr(), ptrs.len(), millis(timeout), e, n) })
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: `raw` came from graft_store_new and is freed once.
        unsafe { sys::graft_store_free(self.raw) }
    }
}

/// A c10d process group (the backend object: ProcessGroupGloo or ProcessGroupNCCL).
pub struct Group {
    raw: *mut c_void,
}

/// Reduction of an all-reduce.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Sum = 0,
    Min = 1,
    Max = 2,
}

impl Group {
    /// `backend` is "gloo" or "nccl"; `cuda_device` is the GPU an NCCL group uses.
    pub fn new(
        store: &Store,
        backend: &str,
        rank: usize,
        world: usize,
        timeout: Duration,
        cuda_device: Option<usize>,
    ) -> Result<Group> {
        let b = cstr(backend)?;
        let dev = cuda_device.map_or(-1, |d| d as c_int);
        let mut raw = std::ptr::null_mut();
        // SAFETY: `store.raw` is live; out-pointer valid; set only on success.
        call(|e, n| unsafe {
            sys::graft_pg_new(
                store.raw,
                b.as_ptr(),
                rank as c_int,
                world as c_int,
                millis(timeout),
                dev,
                &mut raw,
                e,
                n,
            )
        })?;
        if raw.is_null() {
            bail!("the process-group shim returned no handle");
        }
        Ok(Group { raw })
    }

    /// Broadcast `t` in place from `root` and wait.
    pub fn broadcast(&self, t: &Tensor, root: usize) -> Result<()> {
        // SAFETY: `t` is a live tensor (tch's C_tensor is an at::Tensor*), `raw` is live.
        call(|e, n| unsafe { sys::graft_pg_broadcast(self.raw, t.as_ptr() as *mut c_void, root as c_int, e, n) })
    }

    /// Launch an in-place all-reduce of `t`. The returned work borrows `t` exclusively
    /// until it is waited on (or dropped, which waits), so the tensor can be neither
    /// read nor written through this handle while the collective runs.
    pub fn allreduce<'t>(&self, t: &'t mut Tensor, op: Op) -> Result<Work<'t>> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: as in `broadcast`; the shim keeps its own reference to the tensor.
        call(|e, n| unsafe {
            sys::graft_pg_allreduce(self.raw, t.as_ptr() as *mut c_void, op as c_int, &mut raw, e, n)
        })?;
        if raw.is_null() {
            bail!("the all-reduce shim returned no work handle");
        }
        Ok(Work { raw, waited: false, _tensor: PhantomData })
    }

    pub fn barrier(&self) -> Result<()> {
        // SAFETY: `raw` is live.
        call(|e, n| unsafe { sys::graft_pg_barrier(self.raw, e, n) })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: `raw` came from graft_pg_new and is freed once.
        unsafe { sys::graft_pg_free(self.raw) }
    }
}

/// An asynchronous collective in flight over a tensor borrowed for `'t`.
///
/// Dropping it without [`Work::wait`] still waits (ignoring the error), so the borrow
/// never ends while the collective runs. (Leaking it with `std::mem::forget` would end
/// the borrow early, as with any guard; graft never does.)
pub struct Work<'t> {
    raw: *mut c_void,
    waited: bool,
    _tensor: PhantomData<&'t mut Tensor>,
}

impl Work<'_> {
    /// Block until the collective is done (Gloo), or until the current CUDA stream is
    /// ordered after it (NCCL).
    pub fn wait(mut self) -> Result<()> {
        self.waited = true;
        // SAFETY: `raw` is live until drop.
        call(|e, n| unsafe { sys::graft_work_wait(self.raw, e, n) })
    }
}

impl Drop for Work<'_> {
    fn drop(&mut self) {
        if !self.waited {
            // SAFETY: `raw` is live until freed below. An error here has no caller to
            // reach; the collective is over either way.
            let _ = call(|e, n| unsafe { sys::graft_work_wait(self.raw, e, n) });
        }
        // SAFETY: `raw` came from graft_pg_allreduce and is freed once.
        unsafe { sys::graft_work_free(self.raw) }
    }
}
