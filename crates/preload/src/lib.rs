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

pub mod record;

#[path = "../../capi/src/runtime.rs"]
#[allow(dead_code)]
mod runtime;

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_ulong, CStr};
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
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
    /// The module parameter `dma_entry_limit`: what is written is read back at close.
    EntryLimit,
    /// Record mode: a real /dev/vfio descriptor (`group`: its number; `None`: a container),
    /// and for a container the groups set on it.
    Recorded {
        group: Option<String>,
        groups: Vec<String>,
    },
}

/// The module parameter's file: the kernel copies its value into each container at SET_IOMMU.
const ENTRY_LIMIT_PATH: &[u8] = b"/sys/module/vfio_iommu_type1/parameters/dma_entry_limit";

/// The served `dma_entry_limit` (0: not written yet, the options' value holds).
static ENTRY_LIMIT: AtomicU32 = AtomicU32::new(0);

/// Pages the containers of this process charged: the part of `mm->locked_vm` the model adds,
/// shown in the `VmLck` of a served `/proc/self/status`.
static CHARGED: AtomicI64 = AtomicI64::new(0);

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
    EntryLimit,
    Status,
    /// Record mode: open the real file, watch its ioctls.
    Record(Option<String>),
}

/// # Safety
/// `path` is NULL or a NUL-terminated string.
unsafe fn target(path: *const c_char) -> Option<Target> {
    if path.is_null() {
        return None;
    }
    // SAFETY: the caller passes a NUL-terminated path.
    let p = unsafe { CStr::from_ptr(path) }.to_bytes();
    if recorder().is_some() {
        let rest = p.strip_prefix(b"/dev/vfio/")?;
        let name = std::str::from_utf8(rest).ok()?;
        return match name {
            "vfio" => Some(Target::Record(None)),
            n if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                Some(Target::Record(Some(n.to_string())))
            }
            _ => None,
        };
    }
    if groups().is_empty() {
        return None;
    }
    if p == ENTRY_LIMIT_PATH {
        return Some(Target::EntryLimit);
    }
    if p == b"/proc/self/status" {
        return Some(Target::Status);
    }
    let rest = p.strip_prefix(b"/dev/vfio/")?;
    if rest == b"vfio" {
        return Some(Target::Container);
    }
    let name = std::str::from_utf8(rest).ok()?;
    groups()
        .iter()
        .any(|g| g == name)
        .then(|| Target::Group(name.to_string()))
}

/// A memfd holding `bytes`, positioned at its start.
fn memfd_with(bytes: &[u8], flags: c_int) -> c_int {
    let mfd_flags = if flags & libc::O_CLOEXEC != 0 {
        libc::MFD_CLOEXEC
    } else {
        0
    };
    // SAFETY: a NUL-terminated name and valid flags.
    let fd = unsafe { libc::memfd_create(c"type1-vfio".as_ptr(), mfd_flags) };
    if fd >= 0 && !bytes.is_empty() {
        // SAFETY: `bytes` is a valid buffer of its length; fd is ours.
        unsafe { libc::pwrite(fd, bytes.as_ptr().cast(), bytes.len(), 0) };
    }
    fd
}

/// The whole of a file read with the C library's own `open` (not through the shim).
fn read_real(path: &CStr) -> Vec<u8> {
    let Some(open) = real!(c"open", OpenFn) else {
        return Vec::new();
    };
    // SAFETY: a NUL-terminated path, read-only.
    let fd = unsafe { open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC, 0) };
    if fd < 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
    if let Some(close) = real!(c"close", CloseFn) {
        // SAFETY: closing the descriptor opened above.
        unsafe { close(fd) };
    }
    out
}

/// `/proc/self/status` with the model's charge added to `VmLck` (the kernel's
/// `vfio_lock_acct` adds to `mm->locked_vm`, which `VmLck` shows).
fn status_text() -> Vec<u8> {
    let real = String::from_utf8_lossy(&read_real(c"/proc/self/status")).into_owned();
    let extra = CHARGED.load(Ordering::Relaxed).max(0) as u64 * 4;
    let mut out = String::with_capacity(real.len());
    for line in real.lines() {
        match line.strip_prefix("VmLck:") {
            Some(rest) => {
                let kb: u64 = rest
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .unwrap_or(0);
                out.push_str(&format!("VmLck:\t{:>8} kB\n", kb + extra));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out.into_bytes()
}

/// A real descriptor to serve: a memfd (close-on-exec if asked).
fn serve(t: Target, flags: c_int) -> c_int {
    let served = match t {
        Target::Status => return memfd_with(&status_text(), flags),
        Target::Record(_) => return -1,
        Target::EntryLimit => {
            let now = match ENTRY_LIMIT.load(Ordering::Relaxed) {
                0 => options().map_or(u32::from(u16::MAX), |o| o.cfg.dma_entry_limit),
                n => n,
            };
            let text = if flags & libc::O_TRUNC != 0 {
                String::new()
            } else {
                format!("{now}\n")
            };
            let fd = memfd_with(text.as_bytes(), flags);
            if fd >= 0 {
                table().insert(fd, Served::EntryLimit);
            }
            return fd;
        }
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
    let fd = memfd_with(&[], flags);
    if fd >= 0 {
        table().insert(fd, served);
    }
    fd
}

/// # Safety
/// As `open(2)`.
unsafe fn do_open(path: *const c_char, flags: c_int, mode: c_ulong) -> c_int {
    // SAFETY: forwarded from the caller.
    let t = unsafe { target(path) };
    let t = match t {
        Some(Target::Record(g)) => Some(Target::Record(g)),
        Some(other) => return serve(other, flags),
        None => None,
    };
    match real!(c"open", OpenFn) {
        // SAFETY: the C library's open with the caller's arguments.
        Some(f) => {
            // SAFETY: as above.
            let fd = unsafe { f(path, flags, mode) };
            watch(fd, t);
            fd
        }
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
    let t = unsafe { target(path) };
    let t = match t {
        Some(Target::Record(g)) => Some(Target::Record(g)),
        Some(other) => return serve(other, flags),
        None => None,
    };
    match real!(c"openat", OpenatFn) {
        // SAFETY: the C library's openat with the caller's arguments.
        Some(f) => {
            // SAFETY: as above.
            let fd = unsafe { f(dirfd, path, flags, mode) };
            watch(fd, t);
            fd
        }
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
        Served::EntryLimit | Served::Recorded { .. } => None,
    }
}

/// Record mode (`TYPE1_RECORD=FILE`): the trace being written and its file.
fn recorder() -> Option<&'static Mutex<(record::Recorder, std::path::PathBuf)>> {
    static R: OnceLock<Option<Mutex<(record::Recorder, std::path::PathBuf)>>> = OnceLock::new();
    R.get_or_init(|| {
        let path = std::env::var_os("TYPE1_RECORD").filter(|p| !p.is_empty())?;
        Some(Mutex::new((record::Recorder::new(), path.into())))
    })
    .as_ref()
}

/// Record mode: remember a real /dev/vfio descriptor just opened.
fn watch(fd: c_int, t: Option<Target>) {
    if let (true, Some(Target::Record(group))) = (fd >= 0, t) {
        table().insert(
            fd,
            Served::Recorded {
                group,
                groups: Vec::new(),
            },
        );
    }
}

/// `VmLck` in pages, from the real `/proc/self/status`.
fn vmlck_pages() -> Option<i64> {
    let text = String::from_utf8_lossy(&read_real(c"/proc/self/status")).into_owned();
    let kb: i64 = text
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 4)
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

/// Record mode: pass the ioctl to the kernel untouched, and write what it saw.
fn record_ioctl(fd: c_int, group: Option<String>, request: c_ulong, arg: c_ulong) -> c_int {
    use type1::uapi::dispatch as d;
    let Some(f) = real!(c"ioctl", IoctlFn) else {
        set_errno(libc::ENOSYS);
        return -1;
    };
    let cmd = request as u32;
    let mut mem = ProcMem;
    let mut before = [0u8; 48];
    let want = match cmd {
        d::VFIO_IOMMU_MAP_DMA => 32,
        d::VFIO_IOMMU_UNMAP_DMA => 24,
        d::VFIO_IOMMU_GET_INFO => 4,
        d::VFIO_IOMMU_DIRTY_PAGES => 48,
        d::VFIO_GROUP_SET_CONTAINER => 4,
        _ => 0,
    };
    let readable = group.is_some() && cmd != d::VFIO_GROUP_SET_CONTAINER
        || mem.read(arg, &mut before[..want]).is_ok()
        || (cmd == d::VFIO_IOMMU_DIRTY_PAGES && mem.read(arg, &mut before[..8]).is_ok());
    let counted = matches!(cmd, d::VFIO_IOMMU_MAP_DMA | d::VFIO_IOMMU_UNMAP_DMA);
    let locked_before = if counted { vmlck_pages() } else { None };
    // SAFETY: the C library's ioctl with the caller's arguments, untouched.
    let r = unsafe { f(fd, request, arg) };
    let result: Result<i64, i32> = if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(i64::from(r))
    };
    let locked = match (locked_before, if counted { vmlck_pages() } else { None }) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    if let Some(g) = &group {
        if cmd == d::VFIO_GROUP_SET_CONTAINER && result.is_ok() && readable {
            let cfd = c_int::from_le_bytes(before[..4].try_into().expect("4 bytes"));
            if let Some(Served::Recorded { groups, .. }) = table().get_mut(&cfd) {
                groups.push(g.clone());
            }
        }
        if let Err(e) = result {
            set_errno(e);
        }
        return r;
    }
    let Some(rec) = recorder() else { return r };
    let groups = match table().get(&fd) {
        Some(Served::Recorded { groups, .. }) => groups.clone(),
        _ => Vec::new(),
    };
    {
        let mut g = rec.lock().unwrap_or_else(|p| p.into_inner());
        let (rec, path) = &mut *g;
        match cmd {
            _ if !readable => rec.comment(&format!(
                "ioctl {cmd:#x} with an unreadable argument at {arg:#x} -> {result:?}"
            )),
            d::VFIO_SET_IOMMU => rec.set_iommu(arg, &groups, result),
            d::VFIO_IOMMU_MAP_DMA => {
                let b = &before;
                let maps =
                    record::parse_maps(&String::from_utf8_lossy(&read_real(c"/proc/self/maps")));
                let req = (
                    u32_at(b, 0),
                    u32_at(b, 4),
                    u64_at(b, 8),
                    u64_at(b, 16),
                    u64_at(b, 24),
                );
                rec.map(req, &maps, result, locked);
            }
            d::VFIO_IOMMU_UNMAP_DMA => {
                let b = &before;
                let mut after = [0u8; 8];
                let out = if mem.read(arg.wrapping_add(16), &mut after).is_ok() {
                    u64::from_le_bytes(after)
                } else {
                    0
                };
                let req = (u32_at(b, 0), u32_at(b, 4), u64_at(b, 8), u64_at(b, 16));
                rec.unmap(req, out, result, locked);
            }
            d::VFIO_IOMMU_GET_INFO => rec.info(u32_at(&before, 0), result),
            d::VFIO_IOMMU_DIRTY_PAGES => {
                let (argsz, flags) = (u32_at(&before, 0), u32_at(&before, 4));
                let get = (flags == 4)
                    .then(|| (u64_at(&before, 8), u64_at(&before, 16), u64_at(&before, 24)));
                rec.dirty(argsz, flags, get, result);
            }
            d::VFIO_GET_API_VERSION | d::VFIO_CHECK_EXTENSION => {}
            _ => rec.comment(&format!("ioctl {cmd:#x} on the container -> {result:?}")),
        }
        let _ = std::fs::write(&*path, rec.text());
    }
    if let Err(e) = result {
        set_errno(e);
    }
    r
}

/// Runs `f` on the container and adds what it changed in locked pages to `CHARGED`.
fn charged<R>(c: &Shared, f: impl FnOnce(&mut SoftContainer) -> R) -> R {
    let mut g = lock(c);
    let before = g.locked_pages();
    let r = f(&mut g);
    let after = g.locked_pages();
    CHARGED.fetch_add(after as i64 - before as i64, Ordering::Relaxed);
    r
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
            charged(&c, |sc| sc.remove_group(name));
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
    if recorder().is_some() {
        let watched = match table().get(&fd) {
            Some(Served::Recorded { group, .. }) => Some(group.clone()),
            _ => None,
        };
        if let Some(group) = watched {
            return record_ioctl(fd, group, request, arg);
        }
    }
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
                charged(&c, |sc| {
                    let limit = ENTRY_LIMIT.load(Ordering::Relaxed);
                    if limit != 0 && sc.iommu.is_none() {
                        // The module parameter as it is now, copied at SET_IOMMU.
                        sc.opts.cfg.dma_entry_limit = limit;
                    }
                    sc.ioctl(request, arg)
                })
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

/// With `TYPE1_VIRTUAL_MEMLOCK=1`: RLIMIT_MEMLOCK as the program set it, kept here (`None`:
/// not virtual). For machines where raising the hard limit is refused (no CAP_SYS_RESOURCE):
/// `setrlimit` of RLIMIT_MEMLOCK then always takes effect for the model, and `getrlimit`
/// (which the model reads at each map) answers with it; nothing reaches the kernel.
fn virtual_memlock() -> Option<&'static Mutex<libc::rlimit>> {
    static V: OnceLock<Option<Mutex<libc::rlimit>>> = OnceLock::new();
    V.get_or_init(|| {
        if std::env::var("TYPE1_VIRTUAL_MEMLOCK").ok().as_deref() != Some("1") {
            return None;
        }
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let get = real!(c"getrlimit", GetrlimitFn)?;
        // SAFETY: the C library's getrlimit filling a live local.
        unsafe { get(libc::RLIMIT_MEMLOCK as c_int, &mut r) };
        Some(Mutex::new(r))
    })
    .as_ref()
}

type GetrlimitFn = unsafe extern "C" fn(c_int, *mut libc::rlimit) -> c_int;
type SetrlimitFn = unsafe extern "C" fn(c_int, *const libc::rlimit) -> c_int;

/// # Safety
/// As `getrlimit(2)`.
unsafe fn do_getrlimit(res: c_int, r: *mut libc::rlimit) -> c_int {
    if res == libc::RLIMIT_MEMLOCK as c_int {
        if let Some(v) = virtual_memlock() {
            // SAFETY: the caller passes a writable rlimit (checked for NULL).
            return match unsafe { r.as_mut() } {
                Some(out) => {
                    *out = *v.lock().unwrap_or_else(|p| p.into_inner());
                    0
                }
                None => {
                    set_errno(libc::EFAULT);
                    -1
                }
            };
        }
    }
    match real!(c"getrlimit", GetrlimitFn) {
        // SAFETY: the C library's getrlimit with the caller's arguments.
        Some(f) => unsafe { f(res, r) },
        None => {
            set_errno(libc::ENOSYS);
            -1
        }
    }
}

/// # Safety
/// As `setrlimit(2)`.
unsafe fn do_setrlimit(res: c_int, r: *const libc::rlimit) -> c_int {
    if res == libc::RLIMIT_MEMLOCK as c_int {
        if let Some(v) = virtual_memlock() {
            // SAFETY: the caller passes a readable rlimit (checked for NULL).
            let Some(new) = (unsafe { r.as_ref() }) else {
                set_errno(libc::EFAULT);
                return -1;
            };
            if new.rlim_cur > new.rlim_max {
                set_errno(libc::EINVAL);
                return -1;
            }
            *v.lock().unwrap_or_else(|p| p.into_inner()) = *new;
            return 0;
        }
    }
    match real!(c"setrlimit", SetrlimitFn) {
        // SAFETY: the C library's setrlimit with the caller's arguments.
        Some(f) => unsafe { f(res, r) },
        None => {
            set_errno(libc::ENOSYS);
            -1
        }
    }
}

/// `getrlimit(2)`, interposed (RLIMIT_MEMLOCK is virtual with `TYPE1_VIRTUAL_MEMLOCK=1`).
///
/// # Safety
/// As `getrlimit(2)`.
#[no_mangle]
pub unsafe extern "C" fn getrlimit(res: c_int, r: *mut libc::rlimit) -> c_int {
    // SAFETY: forwarded.
    unsafe { do_getrlimit(res, r) }
}

/// `getrlimit64`, interposed.
///
/// # Safety
/// As `getrlimit(2)`.
#[no_mangle]
pub unsafe extern "C" fn getrlimit64(res: c_int, r: *mut libc::rlimit) -> c_int {
    // SAFETY: forwarded (the structures are the same on 64-bit targets).
    unsafe { do_getrlimit(res, r) }
}

/// `setrlimit(2)`, interposed (RLIMIT_MEMLOCK is virtual with `TYPE1_VIRTUAL_MEMLOCK=1`).
///
/// # Safety
/// As `setrlimit(2)`.
#[no_mangle]
pub unsafe extern "C" fn setrlimit(res: c_int, r: *const libc::rlimit) -> c_int {
    // SAFETY: forwarded.
    unsafe { do_setrlimit(res, r) }
}

/// `setrlimit64`, interposed.
///
/// # Safety
/// As `setrlimit(2)`.
#[no_mangle]
pub unsafe extern "C" fn setrlimit64(res: c_int, r: *const libc::rlimit) -> c_int {
    // SAFETY: forwarded.
    unsafe { do_setrlimit(res, r) }
}

/// `close(2)`, interposed: a served group leaves its container (the last one releases the
/// backend); a served container's descriptor drops its reference.
///
/// # Safety
/// As `close(2)`.
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    let gone = table().remove(&fd);
    match &gone {
        Some(Served::Group {
            name,
            container: Some(c),
        }) => charged(c, |sc| sc.remove_group(name)),
        Some(Served::EntryLimit) => {
            let mut buf = [0u8; 32];
            // SAFETY: `buf` is writable for its length; fd is the memfd served for the file.
            let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            let text = std::str::from_utf8(&buf[..n.max(0) as usize]).unwrap_or("");
            if let Some(Ok(v)) = text.lines().next().map(|l| l.trim().parse::<u32>()) {
                ENTRY_LIMIT.store(v, Ordering::Relaxed);
            }
        }
        _ => {}
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
