//! Memory that forked children share with their parent: an anonymous
//! `MAP_SHARED` mapping, zero-filled by the kernel, unmapped on drop. What
//! a child writes there, the parent and its other children see, which is
//! how prefork's workers count into one accept spread and lock one mutex.

use std::ffi::c_void;
use std::num::NonZeroUsize;
use std::ptr::NonNull;

use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};

pub struct SharedMapping {
    start: NonNull<c_void>,
    len: NonZeroUsize,
}

impl SharedMapping {
    /// Maps `len` bytes (at least one), page-aligned and all zero.
    pub fn new(len: usize) -> std::io::Result<Self> {
        let len = NonZeroUsize::new(len).ok_or_else(|| std::io::Error::other("an empty mapping"))?;
        // SAFETY: a fresh anonymous mapping, owned by this value alone.
        let start = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }?;
        Ok(SharedMapping { start, len })
    }

    /// The mapping's start as a `T`: page-aligned, so aligned for any `T`;
    /// the caller keeps within `len` bytes.
    pub fn as_ptr<T>(&self) -> *mut T {
        self.start.as_ptr().cast()
    }
}

impl Drop for SharedMapping {
    fn drop(&mut self) {
        // SAFETY: mapped in `new` with this length, unmapped once; the
        // owners of what lives in it drop it before the mapping.
        unsafe {
            let _ = munmap(self.start, self.len.get());
        }
    }
}
