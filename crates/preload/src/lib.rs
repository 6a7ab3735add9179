//! `libtype1_preload.so`: an LD_PRELOAD shim that serves `/dev/vfio/vfio` and `/dev/vfio/GROUP`
//! from a software type1 container, so an unmodified VFIO program (QEMU, DPDK, a test) runs
//! without an IOMMU or a device.
//!
//! With `TYPE1_GROUPS=42[,43...]`, `open`/`openat` (and their `64` and fortified `__*_2`
//! forms) of `/dev/vfio/vfio` and of `/dev/vfio/N` for a listed N return real descriptors
//! (`memfd_create`) that this shim serves in `ioctl` and releases in `close`; every other file
//! and every other descriptor's ioctl goes to the C library's own function (`dlsym(RTLD_NEXT)`).
//! `TYPE1_OPTIONS` holds the container's options (the trace language's container and domain
//! arguments: `dma_entry_limit=`, `kernel=`, `domain NAME format=...`).
//!
//! Invariants owned here:
//! - The table of served descriptors is locked only to look up, insert or remove an entry,
//!   never across a call that may open or close files (the engine reads /proc), so the shim
//!   never re-enters its own lock.
//! - A group holds its container (as the kernel's `group->container`): closing the container's
//!   descriptor with a group still set keeps the container; the last group leaving (UNSET, or
//!   its close) releases the backend: every mapping unmapped, unpinned and uncharged.
//! - A group file is open at most once (a second open is EBUSY, as vfio's).
//! - `open` and `ioctl` are variadic in C; they are defined here with the extra argument as a
//!   plain machine word, which the x86_64 and aarch64 Linux calling conventions pass in the same
//!   register either way (the value is only used where the C caller passed one).

#[path = "../../capi/src/runtime.rs"]
#[allow(dead_code)]
mod runtime;

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_ulong, CStr};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use runtime::{Options, ProcMem, SoftContainer};
use type1::uapi::dispatch::{
    BadAddress, UserMem, VFIO_GROUP_FLAGS_CONTAINER_SET, VFIO_GROUP_FLAGS_VIABLE,
    VFIO_GROUP_GET_STATUS, VFIO_GROUP_SET_CONTAINER, VFIO_GROUP_UNSET_CONTAINER,
};

type Shared = Arc<Mutex<SoftContainer>>;

/// What a served descriptor is.
enum Served {
    /// `/dev/vfio/vfio`.
    Container(Shared),
    /// `/dev/vfio/N`, and the container it is set on.
    Group {
        name: String,
        container: Option<Shared>,
    },
}

fn table() -> MutexGuard<'static, HashMap<c_int, Served>> {
    static T: OnceLock<Mutex<HashMap<c_int, Served>>> = OnceLock::new();
    let m = T.get_or_init(|| Mutex::new(HashMap::new()));
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn lock(c: &Shared) -> MutexGuard<'_, SoftContainer> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

/// `TYPE1_GROUPS`: the group numbers served.
fn groups() -> &'static [String] {
    static G: OnceLock<Vec<String>> = OnceLock::new();
    G.get_or_init(|| {
        std::env::var("TYPE1_GROUPS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_string)
            .collect()
    })
}

/// `TYPE1_OPTIONS`, parsed once (the error is printed once, and every container open fails).
fn options() -> Result<Options, ()> {
    static O: OnceLock<Result<Options, ()>> = OnceLock::new();
    O.get_or_init(|| {
        let text = std::env::var("TYPE1_OPTIONS").unwrap_or_default();
        Options::parse(&text).map_err(|e| {
            let msg = format!("libtype1_preload: TYPE1_OPTIONS: {e}\n");
            // SAFETY: writing a buffer we own to stderr.
            unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
        })
    })
    .clone()
}

/// The C library's own function `name`, found once.
fn next(name: &'static CStr, slot: &'static OnceLock<usize>) -> usize {
    // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name has no other precondition.
    *slot.get_or_init(|| unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize)
}

macro_rules! real {
    ($name:literal, $ty:ty) => {{
        static SLOT: OnceLock<usize> = OnceLock::new();
        let f = next($name, &SLOT);
        if f == 0 {
            None
        } else {
            // SAFETY: the symbol of this name in the C library has this C signature.
            Some(unsafe { std::mem::transmute::<usize, $ty>(f) })
        }
    }};
}

type OpenFn = unsafe extern "C" fn(*const c_char, c_int, c_ulong) -> c_int;
type OpenatFn = unsafe extern "C" fn(c_int, *const c_char, c_int, c_ulong) -> c_int;
type IoctlFn = unsafe extern "C" fn(c_int, c_ulong, c_ulong) -> c_int;
type CloseFn = unsafe extern "C" fn(c_int) -> c_int;

fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() = e };
}

/// What a path names, if the shim serves it.
enum Target {
    Container,
    Group(String),
}

/// # Safety
/// `path` is NULL or a NUL-terminated string.
unsafe fn target(path: *const c_char) -> Option<Target> {
    if path.is_null() {
        return None;
    }
    // SAFETY: the caller passes a NUL-terminated path.
    let p = unsafe { CStr::from_ptr(path) }.to_bytes();
    let rest = p.strip_prefix(b"/dev/vfio/")?;
    if groups().is_empty() {
        return None;
    }
    if rest == b"vfio" {
        return Some(Target::Container);
    }
    let name = std::str::from_utf8(rest).ok()?;
    groups()
        .iter()
        .any(|g| g == name)
        .then(|| Target::Group(name.to_string()))
}

/// A real descriptor to serve: a memfd (close-on-exec if asked).
fn serve(t: Target, flags: c_int) -> c_int {
    let served = match t {
        Target::Container => match options() {
            Ok(o) => Served::Container(Arc::new(Mutex::new(SoftContainer::new(o)))),
            Err(()) => {
                set_errno(libc::EINVAL);
                return -1;
            }
        },
        Target::Group(name) => {
            let busy = table()
                .values()
                .any(|s| matches!(s, Served::Group { name: n, .. } if *n == name));
            if busy {
                set_errno(libc::EBUSY);
                return -1;
            }
            Served::Group {
                name,
                container: None,
            }
        }
    };
    let mfd_flags = if flags & libc::O_CLOEXEC != 0 {
        libc::MFD_CLOEXEC
    } else {
        0
    };
    // SAFETY: a NUL-terminated name and valid flags.
    let fd = unsafe { libc::memfd_create(c"type1-vfio".as_ptr(), mfd_flags) };
    if fd >= 0 {
        table().insert(fd, served);
    }
    fd
}

/// # Safety
/// As `open(2)`.
unsafe fn do_open(path: *const c_char, flags: c_int, mode: c_ulong) -> c_int {
    // SAFETY: forwarded from the caller.
    if let Some(t) = unsafe { target(path) } {
        return serve(t, flags);
    }
    match real!(c"open", OpenFn) {
        // SAFETY: the C library's open with the caller's arguments.
        Some(f) => unsafe { f(path, flags, mode) },
        None => {
            set_errno(libc::ENOSYS);
            -1
        }
    }
}

/// # Safety
/// As `openat(2)`.
unsafe fn do_openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_ulong) -> c_int {
    // SAFETY: forwarded from the caller (an absolute path ignores dirfd).
    if let Some(t) = unsafe { target(path) } {
        return serve(t, flags);
    }
    match real!(c"openat", OpenatFn) {
        // SAFETY: the C library's openat with the caller's arguments.
        Some(f) => unsafe { f(dirfd, path, flags, mode) },
        None => {
            set_errno(libc::ENOSYS);
            -1
        }
    }
}

/// `open(2)`, interposed.
///
/// # Safety
/// As `open(2)`.
#[no_mangle]
pub unsafe extern "C" fn open(path: *const c_char, flags: c_int, mode: c_ulong) -> c_int {
    // SAFETY: forwarded.
    unsafe { do_open(path, flags, mode) }
}

/// `open64`, interposed.
///
/// # Safety
/// As `open(2)`.
#[no_mangle]
pub unsafe extern "C" fn open64(path: *const c_char, flags: c_int, mode: c_ulong) -> c_int {
    // SAFETY: forwarded.
    unsafe { do_open(path, flags, mode) }
}

/// `__open_2` (the fortified open), interposed.
///
/// # Safety
/// As `open(2)`.
#[no_mangle]
pub unsafe extern "C" fn __open_2(path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: forwarded; without O_CREAT there is no mode.
    unsafe { do_open(path, flags, 0) }
}

/// `__open64_2`, interposed.
///
/// # Safety
/// As `open(2)`.
#[no_mangle]
pub unsafe extern "C" fn __open64_2(path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: forwarded.
    unsafe { do_open(path, flags, 0) }
}

/// `openat(2)`, interposed.
///
/// # Safety
/// As `openat(2)`.
#[no_mangle]
pub unsafe extern "C" fn openat(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mode: c_ulong,
) -> c_int {
    // SAFETY: forwarded.
    unsafe { do_openat(dirfd, path, flags, mode) }
}

/// `openat64`, interposed.
///
/// # Safety
/// As `openat(2)`.
#[no_mangle]
pub unsafe extern "C" fn openat64(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mode: c_ulong,
) -> c_int {
    // SAFETY: forwarded.
    unsafe { do_openat(dirfd, path, flags, mode) }
}

/// The served entry of `fd`, cloned out of the table.
enum Lookup {
    Container(Shared),
    Group(String, Option<Shared>),
}

fn lookup(fd: c_int) -> Option<Lookup> {
    match table().get(&fd)? {
        Served::Container(c) => Some(Lookup::Container(c.clone())),
        Served::Group { name, container } => Some(Lookup::Group(name.clone(), container.clone())),
    }
}

/// A group ioctl (vfio's `vfio_group_fops_unl_ioctl`).
fn group_ioctl(
    fd: c_int,
    name: &str,
    set: Option<Shared>,
    cmd: c_ulong,
    arg: c_ulong,
) -> Result<c_int, c_int> {
    let mut mem = ProcMem;
    match cmd as u32 {
        VFIO_GROUP_GET_STATUS => {
            let mut b = [0u8; 8];
            mem.read(arg, &mut b).map_err(|BadAddress| libc::EFAULT)?;
            let argsz = u32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
            if argsz < 8 {
                return Err(libc::EINVAL);
            }
            let mut flags = VFIO_GROUP_FLAGS_VIABLE;
            if set.is_some() {
                flags |= VFIO_GROUP_FLAGS_CONTAINER_SET;
            }
            b[4..].copy_from_slice(&flags.to_le_bytes());
            mem.write(arg, &b).map_err(|BadAddress| libc::EFAULT)?;
            Ok(0)
        }
        VFIO_GROUP_SET_CONTAINER => {
            let mut b = [0u8; 4];
            mem.read(arg, &mut b).map_err(|BadAddress| libc::EFAULT)?;
            let cfd = c_int::from_le_bytes(b);
            if cfd < 0 {
                return Err(libc::EINVAL);
            }
            let target = match lookup(cfd) {
                Some(Lookup::Container(c)) => Some(c),
                _ => None,
            };
            if target.is_none() {
                // SAFETY: F_GETFD on any number only reads the descriptor table.
                if unsafe { libc::fcntl(cfd, libc::F_GETFD) } < 0 {
                    return Err(libc::EBADF);
                }
            }
            if set.is_some() {
                return Err(libc::EINVAL);
            }
            // Not a container: what iommufd_ctx_from_file answers.
            let c = target.ok_or(libc::EBADFD)?;
            lock(&c).add_group(name).map_err(|e| e.code())?;
            if let Some(Served::Group { container, .. }) = table().get_mut(&fd) {
                *container = Some(c);
            }
            Ok(0)
        }
        VFIO_GROUP_UNSET_CONTAINER => {
            let c = set.ok_or(libc::EINVAL)?;
            lock(&c).remove_group(name);
            if let Some(Served::Group { container, .. }) = table().get_mut(&fd) {
                *container = None;
            }
            Ok(0)
        }
        _ => Err(libc::ENOTTY),
    }
}

/// `ioctl(2)`, interposed.
///
/// # Safety
/// As `ioctl(2)`.
#[no_mangle]
pub unsafe extern "C" fn ioctl(fd: c_int, request: c_ulong, arg: c_ulong) -> c_int {
    let r = match lookup(fd) {
        None => {
            return match real!(c"ioctl", IoctlFn) {
                // SAFETY: the C library's ioctl with the caller's arguments.
                Some(f) => unsafe { f(fd, request, arg) },
                None => {
                    set_errno(libc::ENOSYS);
                    -1
                }
            };
        }
        Some(Lookup::Container(c)) => {
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                lock(&c).ioctl(request, arg)
            }));
            match res {
                Ok(r) => r.map(|v| v as c_int).map_err(|e| e.code()),
                Err(_) => Err(libc::EIO),
            }
        }
        Some(Lookup::Group(name, set)) => group_ioctl(fd, &name, set, request, arg),
    };
    match r {
        Ok(v) => v,
        Err(e) => {
            set_errno(e);
            -1
        }
    }
}

/// `close(2)`, interposed: a served group leaves its container (the last one releases the
/// backend); a served container's descriptor drops its reference.
///
/// # Safety
/// As `close(2)`.
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    let gone = table().remove(&fd);
    if let Some(Served::Group {
        name,
        container: Some(c),
    }) = &gone
    {
        lock(c).remove_group(name);
    }
    drop(gone);
    match real!(c"close", CloseFn) {
        // SAFETY: the C library's close.
        Some(f) => unsafe { f(fd) },
        None => {
            set_errno(libc::ENOSYS);
            -1
        }
    }
}
