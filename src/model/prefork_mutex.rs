//! `prefork-mutex`: prefork where a worker takes a `pthread_mutex` before
//! accept and lets it go after (UNP row 4). The mutex lives in a
//! `MAP_SHARED` anonymous mapping the parent makes before the fork, and is
//! `PTHREAD_PROCESS_SHARED`, so every worker locks the same one; an
//! uncontended lock is a compare-and-swap in user space, where the file
//! lock of row 3 is a system call each time.
//!
//! What the book leaves out: a worker killed while holding a plain mutex
//! would hold it for ever, and every other worker would wait behind it.
//! This one is `PTHREAD_MUTEX_ROBUST`: the kernel marks it when its owner
//! dies, the next worker's lock returns `EOWNERDEAD`, and that worker
//! declares it consistent (`pthread_mutex_consistent`) and goes on.

use std::sync::Arc;

use super::prefork::{serve_with_lock, AcceptLock};
use super::shared_memory::SharedMapping;
use super::ServerConfig;
use crate::net::Listener;
use crate::service::Service;
use crate::shutdown::Shutdown;

pub fn serve(
    listener: Listener,
    service: Arc<Service>,
    config: &ServerConfig,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let lock = SharedMutex::new()?;
    serve_with_lock(listener, service, config, shutdown, &lock)
}

/// A robust, process-shared mutex in memory that forked children share.
struct SharedMutex {
    memory: SharedMapping,
}

// SAFETY: the mutex is made to be locked from any thread of any process
// that maps it; it lives until drop.
unsafe impl Send for SharedMutex {}
// SAFETY: as above; every use goes through the pthread calls.
unsafe impl Sync for SharedMutex {}

/// A pthread call's result as an error.
fn check(what: &str, code: libc::c_int) -> std::io::Result<()> {
    if code == 0 {
        return Ok(());
    }
    let e = std::io::Error::from_raw_os_error(code);
    Err(std::io::Error::new(e.kind(), format!("{what}: {e}")))
}

impl SharedMutex {
    fn new() -> std::io::Result<Self> {
        let memory = SharedMapping::new(std::mem::size_of::<libc::pthread_mutex_t>())?;
        // SAFETY: the mapping is big enough and page-aligned, and no child
        // can see it yet.
        unsafe { init_robust_shared(memory.as_ptr()) }?;
        Ok(SharedMutex { memory })
    }

    fn mutex(&self) -> *mut libc::pthread_mutex_t {
        self.memory.as_ptr()
    }
}

/// Initialises `mutex` as process-shared and robust.
///
/// # Safety
/// `mutex` points to writable memory for a `pthread_mutex_t` that no other
/// thread or process uses yet.
unsafe fn init_robust_shared(mutex: *mut libc::pthread_mutex_t) -> std::io::Result<()> {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    let attr = attr.as_mut_ptr();
    check("pthread_mutexattr_init", libc::pthread_mutexattr_init(attr))?;
    let made = check(
        "PTHREAD_PROCESS_SHARED",
        libc::pthread_mutexattr_setpshared(attr, libc::PTHREAD_PROCESS_SHARED),
    )
    .and_then(|()| {
        check(
            "PTHREAD_MUTEX_ROBUST",
            libc::pthread_mutexattr_setrobust(attr, libc::PTHREAD_MUTEX_ROBUST),
        )
    })
    .and_then(|()| check("pthread_mutex_init", libc::pthread_mutex_init(mutex, attr)));
    // The mutex keeps what it needs; the attributes can go.
    libc::pthread_mutexattr_destroy(attr);
    made
}

impl AcceptLock for SharedMutex {
    fn lock(&self) -> std::io::Result<()> {
        // SAFETY: an initialised mutex, alive until drop.
        match unsafe { libc::pthread_mutex_lock(self.mutex()) } {
            libc::EOWNERDEAD => {
                // We hold it now; whatever its owner guarded is ours to
                // vouch for, and accept guards nothing but its turn.
                tracing::warn!("a worker died holding the accept mutex (EOWNERDEAD); made it consistent");
                // SAFETY: we own the mutex, as EOWNERDEAD says.
                check("pthread_mutex_consistent", unsafe {
                    libc::pthread_mutex_consistent(self.mutex())
                })
            }
            code => check("pthread_mutex_lock", code),
        }
    }

    fn unlock(&self) {
        // SAFETY: called by the owner, once after each successful lock.
        let code = unsafe { libc::pthread_mutex_unlock(self.mutex()) };
        if let Err(e) = check("pthread_mutex_unlock", code) {
            tracing::error!("cannot release the accept mutex: {e}");
        }
    }
}

impl Drop for SharedMutex {
    fn drop(&mut self) {
        // SAFETY: the parent drops it after every worker has exited (the
        // workers leave through `_exit` and never drop their copy); nobody
        // holds it. The mapping goes after.
        unsafe {
            libc::pthread_mutex_destroy(self.mutex());
        }
    }
}
