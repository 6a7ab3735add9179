//! `libtype1.so`: the C interface of a software VFIO type1 container (include/type1.h).
//!
//! Invariants owned here: every entry point checks its pointers for NULL and never unwinds a
//! panic into C (a panic becomes -1 with EIO); a container is created by
//! `type1_container_new`, used through `type1_ioctl_raw`, and freed once by
//! `type1_container_free`, which releases everything it pinned and charged.

#[allow(dead_code)] // The group calls are the shim's (it includes this module too).
mod runtime;

use std::ffi::{c_char, c_int, c_long, c_ulong, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use runtime::{Options, SoftContainer};
use type1::uapi::dispatch::ContainerCore;

/// The container C sees (opaque).
pub struct Type1Container {
    inner: SoftContainer,
}

fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() = e };
}

/// Writes `msg` to the caller's `err` buffer, truncated and NUL-terminated.
///
/// # Safety
/// `err` is NULL or points to `len` writable bytes.
unsafe fn put_err(err: *mut c_char, len: usize, msg: &str) {
    if err.is_null() || len == 0 {
        return;
    }
    let n = msg.len().min(len - 1);
    // SAFETY: the caller guarantees `len` writable bytes at `err`; n + 1 <= len.
    unsafe {
        std::ptr::copy_nonoverlapping(msg.as_ptr(), err.cast::<u8>(), n);
        *err.add(n) = 0;
    }
}

/// See type1.h.
///
/// # Safety
/// `options` is NULL or a NUL-terminated string; `err` is NULL or `errlen` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn type1_container_new(
    options: *const c_char,
    err: *mut c_char,
    errlen: usize,
) -> *mut Type1Container {
    let text = if options.is_null() {
        String::new()
    } else {
        // SAFETY: the caller passes a NUL-terminated string.
        unsafe { CStr::from_ptr(options) }
            .to_string_lossy()
            .into_owned()
    };
    let made = catch_unwind(|| -> Result<SoftContainer, String> {
        let opts = Options::parse(&text)?;
        let names: Vec<String> = if opts.domains.is_empty() {
            vec!["d0".to_string()]
        } else {
            opts.domains.iter().map(|(n, _)| n.clone()).collect()
        };
        let v2 = opts.cfg.v2;
        let mut c = SoftContainer::new(opts);
        c.groups = names;
        c.open_iommu(v2)
            .map_err(|e| format!("attaching the domains: {e}"))?;
        Ok(c)
    });
    match made {
        Ok(Ok(inner)) => Box::into_raw(Box::new(Type1Container { inner })),
        Ok(Err(msg)) => {
            // SAFETY: forwarded from the caller's contract.
            unsafe { put_err(err, errlen, &msg) };
            set_errno(libc::EINVAL);
            std::ptr::null_mut()
        }
        Err(_) => {
            set_errno(libc::EIO);
            std::ptr::null_mut()
        }
    }
}

/// See type1.h.
///
/// # Safety
/// `c` is NULL or a container from `type1_container_new` not yet freed, used by one thread at
/// a time.
#[no_mangle]
pub unsafe extern "C" fn type1_ioctl_raw(
    c: *mut Type1Container,
    request: c_ulong,
    arg: c_ulong,
) -> c_int {
    // SAFETY: the caller passes a live container or NULL.
    let Some(c) = (unsafe { c.as_mut() }) else {
        set_errno(libc::EBADF);
        return -1;
    };
    match catch_unwind(AssertUnwindSafe(|| c.inner.ioctl(request, arg))) {
        Ok(Ok(v)) => v as c_int,
        Ok(Err(e)) => {
            set_errno(e.code());
            -1
        }
        Err(_) => {
            set_errno(libc::EIO);
            -1
        }
    }
}

/// See type1.h.
///
/// # Safety
/// `c` is NULL or a live container.
#[no_mangle]
pub unsafe extern "C" fn type1_locked_pages(c: *const Type1Container) -> c_long {
    // SAFETY: the caller passes a live container or NULL.
    match unsafe { c.as_ref() } {
        Some(c) => c
            .inner
            .iommu
            .as_ref()
            .map_or(0, |i| i.locked_pages() as c_long),
        None => -1,
    }
}

/// See type1.h.
///
/// # Safety
/// `c` is NULL or a live container, freed only once.
#[no_mangle]
pub unsafe extern "C" fn type1_container_free(c: *mut Type1Container) {
    if c.is_null() {
        return;
    }
    // SAFETY: `c` came from Box::into_raw in type1_container_new and is freed once.
    let b = unsafe { Box::from_raw(c) };
    let _ = catch_unwind(AssertUnwindSafe(move || drop(b)));
}
