//! The host side: run statements against a real kernel inside a QEMU guest.
//!
//! 1. Fetch the Debian kernel's packages with `apt-get download` (a private sources list for
//!    trixie, trixie-backports and bookworm; the host's apt configuration is not touched) and
//!    unpack them with `dpkg-deb -x` into the cache (`$TYPE1_KERNEL_CACHE`, else
//!    `$XDG_CACHE_HOME/type1/kernels`, else `~/.cache/type1/kernels`). Decompress the VFIO
//!    modules, ordered so that each comes after what it depends on.
//! 2. Build an initramfs: busybox (from `busybox-static`), the modules, the static
//!    `vfio-replay` binary, the statements as JSON lines, and `kernel/init.sh` as `/init`.
//! 3. Boot `qemu-system-x86_64` (TCG, q35, one CPU, `intel-iommu,caching-mode=on`, an `edu`
//!    device), with the monitor on a unix socket. At each `@@CHECKPOINT line=N` read the VT-d
//!    tables through the monitor (`xp`), then send a newline to let the guest go on. Collect the
//!    `@@R` records until `@@END`.
//!
//! [`record_in_guest`] boots the same guest to run a dynamically linked VFIO program under the
//! LD_PRELOAD shim in record mode against the real group (its loader and libraries copied from
//! this host) and brings the recorded trace back; no statements are replayed in that boot.
//!
//! Every trace given runs in ONE boot per kernel ([`run_traces_in_guest`]): the guest program
//! runs each in a fresh process, container and group and the host takes each trace's answer as
//! it comes; a trace that hangs or crashes the guest is that trace's error, and the guest boots
//! again at the next one.
//!
//! Needs the host packages `qemu-system-x86 cpio busybox-static`, and to fetch a kernel `apt
//! dpkg kmod xz-utils zstd`; [`missing_tools`] names what is missing before anything starts.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::vtd::{self, PhysRead, Walk};
use type1_trace::{Record, Stmt};

/// The `/init` of the guest.
pub const INIT_SCRIPT: &str = include_str!("../../../kernel/init.sh");

/// The kernel used when none is named: the trixie-backports 7.2 the oracle recorded.
pub const DEFAULT_KERNEL: &str = "7.2.12+deb13-cloud-amd64";

/// The full Debian version of a short name (`7.2`, `6.12`, `6.1`); a full version is kept.
pub fn resolve_kernel(name: &str) -> String {
    match name {
        "7.2" | "" => DEFAULT_KERNEL.to_string(),
        "6.12" => "6.12.117+deb13-cloud-amd64".to_string(),
        "6.1" => "6.1.0-56-cloud-amd64".to_string(),
        full => full.to_string(),
    }
}

/// The edu device: bus 0, device 1, function 0.
pub const EDU_BUS: u8 = 0;
/// The `edu` device's PCI devfn in the guest.
pub const EDU_DEVFN: u8 = 0x08;

/// How to run the guest.
#[derive(Clone, Debug)]
pub struct GuestOptions {
    /// `7.2`, `6.12`, `6.1` or a full Debian kernel version.
    pub kernel: String,
    /// Where kernels are cached; `None`: [`default_cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// A static `vfio-replay` to put in the guest; `None`: `$TYPE1_VFIO_REPLAY`, else build it
    /// with cargo from this workspace (into `target/guest`).
    pub replay_bin: Option<PathBuf>,
    /// Gives up on a trace (and kills QEMU) after this long without its end, or on a boot
    /// without its first trace.
    pub timeout: Duration,
    /// intel-iommu `aw-bits` (48 widens the IOVA space); `None` keeps QEMU's 39 bits.
    pub aw_bits: Option<u32>,
    /// The QEMU program (`qemu-system-x86_64`, found on `$PATH`).
    pub qemu: PathBuf,
}

impl Default for GuestOptions {
    fn default() -> Self {
        GuestOptions {
            kernel: DEFAULT_KERNEL.to_string(),
            cache_dir: None,
            replay_bin: None,
            timeout: Duration::from_secs(300),
            aw_bits: None,
            qemu: PathBuf::from("qemu-system-x86_64"),
        }
    }
}

/// Seconds spent in each step.
#[derive(Clone, Debug, Default)]
pub struct Timings {
    /// Seconds fetching the kernel.
    pub fetch: f64,
    /// Seconds building the guest program and initramfs.
    pub build: f64,
    /// QEMU start to the first record marker.
    pub boot: f64,
    /// First marker to `@@END`.
    pub run: f64,
    /// Seconds in all.
    pub total: f64,
}

/// What the guest answered.
#[derive(Clone, Debug)]
pub struct GuestRun {
    /// The kernel's `uname -r`.
    pub kernel: String,
    /// One record per statement, in order; `check` records carry the leaves read at that point.
    pub records: Vec<Record>,
    /// The table walk made at each `check`, by line.
    pub walks: BTreeMap<usize, Walk>,
    /// The whole console output.
    pub console: String,
    /// What the monitor answered at the checkpoints (`# checkpoint line=N`, then each `xp`
    /// command and its words as `ADDR: VALUE` lines).
    pub monitor_log: String,
    /// How long each phase took.
    pub timings: Timings,
}

/// Why a guest run failed.
#[derive(Clone, Debug)]
pub enum HarnessError {
    /// A host tool is missing or failed (which one, and what it said).
    Tool(String),
    /// Getting the kernel failed.
    Fetch(String),
    /// Building the initramfs or the guest program failed.
    Build(String),
    /// The guest did not finish: what happened, and the console's last lines.
    Guest {
        /// What happened.
        what: String,
        /// The console's last lines.
        console_tail: String,
    },
}

impl std::fmt::Display for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HarnessError::Tool(s) => write!(f, "host tool: {s}"),
            HarnessError::Fetch(s) => write!(f, "fetching the kernel: {s}"),
            HarnessError::Build(s) => write!(f, "building the guest: {s}"),
            HarnessError::Guest { what, console_tail } => {
                write!(
                    f,
                    "guest: {what}\n--- console (last lines) ---\n{console_tail}"
                )
            }
        }
    }
}

impl std::error::Error for HarnessError {}

/// The kernel cache: `$TYPE1_KERNEL_CACHE`, `$XDG_CACHE_HOME/type1/kernels` or
/// `~/.cache/type1/kernels`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TYPE1_KERNEL_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("type1/kernels");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/type1/kernels")
}

/// Writes a progress line on stderr (a ready-made `progress` callback).
pub fn stderr_progress(msg: &str) {
    eprintln!("kernel-check: {msg}");
}

fn run_tool(cmd: &mut Command, what: &str) -> Result<String, HarnessError> {
    let out = cmd
        .output()
        .map_err(|e| HarnessError::Tool(format!("{what}: cannot run: {e}")))?;
    if !out.status.success() {
        return Err(HarnessError::Tool(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The host tools a boot needs: (program, Debian package).
pub const BOOT_TOOLS: [(&str, &str); 2] =
    [("qemu-system-x86_64", "qemu-system-x86"), ("cpio", "cpio")];

/// The host tools fetching a kernel needs (only when one is not cached): (program, Debian
/// package).
pub const FETCH_TOOLS: [(&str, &str); 5] = [
    ("apt-get", "apt"),
    ("dpkg-deb", "dpkg"),
    ("modinfo", "kmod"),
    ("xz", "xz-utils"),
    ("zstd", "zstd"),
];

/// Where the static busybox put in the guest is looked for.
pub const BUSYBOX_PATHS: [&str; 2] = ["/bin/busybox", "/usr/bin/busybox"];

/// Whether `program` is an executable file in one of the directories of `path` (a `$PATH`).
fn on_path(program: &str, path: &std::ffi::OsStr) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path).any(|d| {
        std::fs::metadata(d.join(program))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Whether `file` is a static ELF executable (no `PT_INTERP` program header).
pub fn is_static_elf(file: &Path) -> bool {
    let Ok(b) = std::fs::read(file) else {
        return false;
    };
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(b[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).all(|i| {
        let at = phoff + i * size;
        // PT_INTERP is 3: a dynamic program names its loader.
        b.get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().expect("4 bytes")) != 3)
    })
}

/// The check made before anything is fetched or booted: `None` when every tool is there, else
/// ONE line naming what is missing and the command that installs it. `path` is the `$PATH` to
/// search, `busybox` where a static busybox may be, `fetching` whether a kernel must be fetched.
pub fn missing_tools(
    path: &std::ffi::OsStr,
    busybox: &[PathBuf],
    fetching: bool,
) -> Option<String> {
    let mut missing: Vec<&str> = Vec::new();
    let mut packages: Vec<&str> = Vec::new();
    let tools = BOOT_TOOLS
        .iter()
        .chain(FETCH_TOOLS.iter().filter(|_| fetching));
    for (program, package) in tools {
        if !on_path(program, path) {
            missing.push(program);
            packages.push(package);
        }
    }
    if !busybox.iter().any(|b| is_static_elf(b)) {
        missing.push("a static busybox");
        packages.push("busybox-static");
    }
    if missing.is_empty() {
        return None;
    }
    Some(format!(
        "missing {}; install with: apt-get install {}",
        missing.join(", "),
        packages.join(" ")
    ))
}

/// Whether kernel `version` (full or short) is unpacked in `cache` (no fetch needed).
pub fn kernel_cached(version: &str, cache: &Path) -> bool {
    cache
        .join(resolve_kernel(version))
        .join("ready.json")
        .exists()
}

/// [`missing_tools`] for this host: its `$PATH` and busybox, fetching when one of `kernels` is
/// not in the cache.
pub fn check_host_tools(kernels: &[String], cache: &Path) -> Option<String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let busybox: Vec<PathBuf> = BUSYBOX_PATHS.iter().map(PathBuf::from).collect();
    let fetching = kernels.iter().any(|k| !kernel_cached(k, cache));
    missing_tools(&path, &busybox, fetching)
}

/// A kernel ready to boot.
#[derive(Clone, Debug)]
pub struct KernelFiles {
    /// The Debian kernel version.
    pub version: String,
    /// The kernel image.
    pub vmlinuz: PathBuf,
    /// Decompressed modules, in load order.
    pub modules: Vec<(String, PathBuf)>,
}

const SOURCES: &str = "\
deb http://deb.debian.org/debian trixie main
deb http://deb.debian.org/debian trixie-backports main
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
";

/// apt with a private sources list, lists and package cache under `dir`.
fn apt(dir: &Path, tool: &str) -> Command {
    let mut c = Command::new(tool);
    for (k, v) in [
        ("Dir::Etc::SourceList", dir.join("sources.list")),
        ("Dir::Etc::SourceParts", PathBuf::from("/dev/null")),
        ("Dir::State::Lists", dir.join("lists")),
        ("Dir::Cache", dir.join("cache")),
    ] {
        c.arg("-o").arg(format!("{k}={}", v.display()));
    }
    c.arg("-o").arg("APT::Sandbox::User=root");
    c.arg("-q");
    c
}

fn apt_update(dir: &Path) -> Result<(), HarnessError> {
    std::fs::create_dir_all(dir.join("lists/partial")).map_err(fetch_io)?;
    std::fs::create_dir_all(dir.join("cache/archives/partial")).map_err(fetch_io)?;
    std::fs::write(dir.join("sources.list"), SOURCES).map_err(fetch_io)?;
    run_tool(apt(dir, "apt-get").arg("update"), "apt-get update").map(|_| ())
}

fn fetch_io(e: std::io::Error) -> HarnessError {
    HarnessError::Fetch(e.to_string())
}

fn apt_has(dir: &Path, pkg: &str) -> bool {
    apt(dir, "apt-cache")
        .args(["show", "--no-all-versions", pkg])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The packages that hold kernel `version`: the split `linux-binary-V` + `linux-modules-V` +
/// `linux-base-V` (7.x), or `linux-image-V` (6.1, 6.12).
fn kernel_packages(apt_dir: &Path, version: &str) -> Option<Vec<String>> {
    // 7.x: `linux-image-V` is then only a meta-package over the split ones.
    let split: Vec<String> = ["binary", "modules", "base"]
        .iter()
        .map(|p| format!("linux-{p}-{version}"))
        .collect();
    if split.iter().all(|p| apt_has(apt_dir, p)) {
        return Some(split);
    }
    let image = format!("linux-image-{version}");
    if apt_has(apt_dir, &image) {
        return Some(vec![image]);
    }
    None
}

/// Makes sure kernel `version` (full or short) is unpacked in `cache`; returns its files.
pub fn ensure_kernel(
    version: &str,
    cache: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<KernelFiles, HarnessError> {
    let version = resolve_kernel(version);
    let kdir = cache.join(&version);
    let ready = kdir.join("ready.json");
    if let Ok(text) = std::fs::read_to_string(&ready) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
            let vmlinuz = PathBuf::from(v["vmlinuz"].as_str().unwrap_or_default());
            let modules: Vec<(String, PathBuf)> = v["modules"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| Some((m[0].as_str()?.to_string(), PathBuf::from(m[1].as_str()?))))
                .collect();
            if vmlinuz.exists() && modules.iter().all(|(_, p)| p.exists()) {
                progress(&format!("kernel {version}: cached in {}", kdir.display()));
                return Ok(KernelFiles {
                    version,
                    vmlinuz,
                    modules,
                });
            }
        }
    }
    progress(&format!("fetching kernel {version} (apt-get download)…"));
    let apt_dir = cache.join("apt");
    let mut pkgs = if apt_dir.join("lists").exists() {
        kernel_packages(&apt_dir, &version)
    } else {
        None
    };
    if pkgs.is_none() {
        apt_update(&apt_dir)?;
        pkgs = kernel_packages(&apt_dir, &version);
    }
    let pkgs = pkgs.ok_or_else(|| {
        HarnessError::Fetch(format!(
            "no Debian package holds kernel {version} (tried linux-image-{version} and linux-{{binary,modules,base}}-{version} in trixie, trixie-backports, bookworm)"
        ))
    })?;
    let debs = kdir.join("debs");
    let _ = std::fs::remove_dir_all(&kdir);
    std::fs::create_dir_all(&debs).map_err(fetch_io)?;
    run_tool(
        apt(&apt_dir, "apt-get")
            .arg("download")
            .args(&pkgs)
            .current_dir(&debs),
        "apt-get download",
    )?;
    let root = kdir.join("root");
    std::fs::create_dir_all(&root).map_err(fetch_io)?;
    for e in std::fs::read_dir(&debs).map_err(fetch_io)? {
        let p = e.map_err(fetch_io)?.path();
        if p.extension().is_some_and(|x| x == "deb") {
            run_tool(
                Command::new("dpkg-deb").arg("-x").arg(&p).arg(&root),
                "dpkg-deb -x",
            )?;
        }
    }
    let moddir = ["usr/lib/modules", "lib/modules"]
        .iter()
        .map(|d| root.join(d).join(&version))
        .find(|p| p.join("kernel").is_dir())
        .ok_or_else(|| HarnessError::Fetch(format!("no modules directory for {version}")))?;
    let vmlinuz = [
        root.join(format!("boot/vmlinuz-{version}")),
        moddir.join("vmlinuz"),
    ]
    .into_iter()
    .find(|p| p.exists())
    .ok_or_else(|| HarnessError::Fetch(format!("no vmlinuz in the packages of {version}")))?;
    let modules = prepare_modules(&moddir.join("kernel"), &kdir.join("modules"))?;
    // Keep only what boots: the kernel image and the decompressed modules.
    let kept = kdir.join("vmlinuz");
    std::fs::copy(&vmlinuz, &kept).map_err(fetch_io)?;
    let vmlinuz = kept;
    let _ = std::fs::remove_dir_all(&debs);
    let _ = std::fs::remove_dir_all(&root);
    let v = serde_json::json!({
        "version": version,
        "vmlinuz": vmlinuz,
        "modules": modules.iter().map(|(n, p)| serde_json::json!([n, p])).collect::<Vec<_>>(),
    });
    std::fs::write(&ready, v.to_string()).map_err(fetch_io)?;
    Ok(KernelFiles {
        version,
        vmlinuz,
        modules,
    })
}

/// The module name of a file (`vfio-pci.ko.xz` → `vfio_pci`).
fn module_name(file: &str) -> Option<String> {
    let i = file.find(".ko")?;
    Some(file[..i].replace('-', "_"))
}

fn find_modules(dir: &Path, out: &mut BTreeMap<String, PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            find_modules(&p, out)?;
        } else if let Some(n) = p.file_name().and_then(|n| n.to_str()).and_then(module_name) {
            out.insert(n, p);
        }
    }
    Ok(())
}

/// Decompresses `vfio_iommu_type1`, `vfio_pci` and what they depend on (per `modinfo`) into
/// `out`, and returns them in load order (each after its dependencies).
fn prepare_modules(kernel: &Path, out: &Path) -> Result<Vec<(String, PathBuf)>, HarnessError> {
    let mut index = BTreeMap::new();
    find_modules(kernel, &mut index).map_err(fetch_io)?;
    std::fs::create_dir_all(out).map_err(fetch_io)?;
    let mut order: Vec<(String, PathBuf)> = Vec::new();
    let mut state: BTreeMap<String, bool> = BTreeMap::new(); // false: visiting, true: done
    fn visit(
        name: &str,
        index: &BTreeMap<String, PathBuf>,
        out: &Path,
        state: &mut BTreeMap<String, bool>,
        order: &mut Vec<(String, PathBuf)>,
    ) -> Result<(), HarnessError> {
        match state.get(name) {
            Some(true) => return Ok(()),
            Some(false) => {
                return Err(HarnessError::Fetch(format!(
                    "module dependency cycle at {name}"
                )))
            }
            None => {}
        }
        state.insert(name.to_string(), false);
        let src = index
            .get(name)
            .ok_or_else(|| HarnessError::Fetch(format!("module {name} not in the package")))?;
        let dst = out.join(format!("{name}.ko"));
        let s = src.to_string_lossy();
        let tool = if s.ends_with(".xz") {
            Some("xz")
        } else if s.ends_with(".zst") {
            Some("zstd")
        } else if s.ends_with(".gz") {
            Some("gzip")
        } else {
            None
        };
        match tool {
            Some(t) => {
                let bytes = Command::new(t)
                    .arg("-dc")
                    .arg(src)
                    .output()
                    .map_err(|e| HarnessError::Tool(format!("{t}: {e}")))?;
                if !bytes.status.success() {
                    return Err(HarnessError::Tool(format!("{t} -dc {s} failed")));
                }
                std::fs::write(&dst, bytes.stdout).map_err(fetch_io)?;
            }
            None => {
                std::fs::copy(src, &dst).map_err(fetch_io)?;
            }
        }
        let deps = run_tool(
            Command::new("modinfo").args(["-F", "depends"]).arg(&dst),
            "modinfo (package kmod)",
        )?;
        for d in deps.trim().split(',').filter(|d| !d.is_empty()) {
            visit(&d.replace('-', "_"), index, out, state, order)?;
        }
        state.insert(name.to_string(), true);
        order.push((name.to_string(), dst));
        Ok(())
    }
    for want in ["vfio_iommu_type1", "vfio_pci"] {
        visit(want, &index, out, &mut state, &mut order)?;
    }
    Ok(order)
}

/// The workspace this crate belongs to (for building the guest program).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Finds or builds the static `vfio-replay`.
pub fn guest_program(
    opts: &GuestOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, HarnessError> {
    if let Some(p) = &opts.replay_bin {
        return Ok(p.clone());
    }
    if let Some(p) = std::env::var_os("TYPE1_VFIO_REPLAY") {
        return Ok(PathBuf::from(p));
    }
    let ws = workspace_dir();
    let target = ws.join("target/guest");
    progress("building the static guest program vfio-replay (cargo, release)…");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(&ws)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_TARGET_DIR", &target)
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
        .args([
            "build",
            "--release",
            "--target",
            "x86_64-unknown-linux-gnu",
            "-p",
            "vfio-backend",
            "--bin",
            "vfio-replay",
        ])
        .output()
        .map_err(|e| HarnessError::Build(format!("cargo: {e}")))?;
    if !out.status.success() {
        return Err(HarnessError::Build(format!(
            "cargo build of vfio-replay failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(target.join("x86_64-unknown-linux-gnu/release/vfio-replay"))
}

fn busybox() -> Result<PathBuf, HarnessError> {
    BUSYBOX_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| HarnessError::Tool("busybox not found: install busybox-static".into()))
}

/// Builds the initramfs (an uncompressed newc cpio) at `dir/initrd.cpio`.
pub fn build_initramfs(
    dir: &Path,
    kernel: &KernelFiles,
    replay_bin: &Path,
    traces: &[&[Stmt]],
) -> Result<PathBuf, HarnessError> {
    build_initramfs_with(dir, kernel, Some(replay_bin), traces, &[])
}

/// [`build_initramfs`] (without `vfio-replay` when `replay_bin` is `None`) plus `extra` files:
/// (host file, absolute path in the guest), copied with their symlinks followed and made
/// executable.
fn build_initramfs_with(
    dir: &Path,
    kernel: &KernelFiles,
    replay_bin: Option<&Path>,
    traces: &[&[Stmt]],
    extra: &[(PathBuf, String)],
) -> Result<PathBuf, HarnessError> {
    let io = |e: std::io::Error| HarnessError::Build(e.to_string());
    let stage = dir.join("stage");
    let _ = std::fs::remove_dir_all(&stage);
    for d in ["bin", "dev", "proc", "sys", "tmp", "lib/modules"] {
        std::fs::create_dir_all(stage.join(d)).map_err(io)?;
    }
    std::fs::copy(busybox()?, stage.join("bin/busybox")).map_err(io)?;
    let mut list = String::new();
    for (name, path) in &kernel.modules {
        std::fs::copy(path, stage.join(format!("lib/modules/{name}.ko"))).map_err(io)?;
        list.push_str(name);
        list.push('\n');
    }
    std::fs::write(stage.join("modules.list"), list).map_err(io)?;
    if let Some(replay_bin) = replay_bin {
        std::fs::copy(replay_bin, stage.join("vfio-replay"))
            .map_err(|e| HarnessError::Build(format!("copying {}: {e}", replay_bin.display())))?;
    }
    // Every trace in one file, each after a separator line: the guest runs them one by one.
    let all = crate::replay::join_traces(traces);
    std::fs::write(stage.join("stmts.jsonl"), all).map_err(io)?;
    std::fs::write(stage.join("init"), INIT_SCRIPT).map_err(io)?;
    use std::os::unix::fs::PermissionsExt;
    for (src, dst) in extra {
        let to = stage.join(dst.trim_start_matches('/'));
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::copy(src, &to)
            .map_err(|e| HarnessError::Build(format!("copying {}: {e}", src.display())))?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
    }
    for f in ["init", "vfio-replay", "bin/busybox"] {
        if f == "vfio-replay" && replay_bin.is_none() {
            continue;
        }
        std::fs::set_permissions(stage.join(f), std::fs::Permissions::from_mode(0o755))
            .map_err(io)?;
    }
    let cpio = dir.join("initrd.cpio");
    let status = Command::new("sh")
        .arg("-c")
        .arg("find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet > \"$1\"")
        .arg("sh")
        .arg(&cpio)
        .current_dir(&stage)
        .status()
        .map_err(|e| HarnessError::Tool(format!("sh/cpio: {e}")))?;
    if !status.success() {
        return Err(HarnessError::Tool("cpio failed (install cpio)".into()));
    }
    Ok(cpio)
}

/// The QEMU monitor on a unix socket.
pub struct Monitor {
    s: UnixStream,
    /// Every `xp` command and its output, in order.
    pub log: String,
}

impl Monitor {
    /// Connects to the monitor's socket.
    pub fn connect(path: &Path) -> Result<Self, String> {
        let mut last = String::new();
        for _ in 0..50 {
            match UnixStream::connect(path) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(20)))
                        .map_err(|e| e.to_string())?;
                    let mut m = Monitor {
                        s,
                        log: String::new(),
                    };
                    m.read_prompt()?;
                    return Ok(m);
                }
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("monitor {}: {last}", path.display()))
    }

    fn read_prompt(&mut self) -> Result<String, String> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        loop {
            let n = self
                .s
                .read(&mut chunk)
                .map_err(|e| format!("monitor read: {e}"))?;
            if n == 0 {
                return Err("monitor closed".into());
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.ends_with(b"(qemu) ") {
                return Ok(String::from_utf8_lossy(&buf).into_owned());
            }
        }
    }

    /// Runs one monitor command and returns its output.
    pub fn command(&mut self, cmd: &str) -> Result<String, String> {
        self.s
            .write_all(format!("{cmd}\n").as_bytes())
            .map_err(|e| format!("monitor write: {e}"))?;
        self.read_prompt()
    }
}

impl PhysRead for Monitor {
    fn read_qwords(&mut self, addr: u64, n: usize) -> Result<Vec<u64>, String> {
        let cmd = format!("xp /{n}gx {addr:#x}");
        let text = self.command(&cmd)?;
        self.log.push_str(&format!("# {cmd}\n"));
        for (a, v) in vtd::parse_xp(&text) {
            self.log.push_str(&format!("{a:016x}: {v:#018x}\n"));
        }
        let end = addr + 8 * n as u64;
        let words: Vec<u64> = vtd::parse_xp(&text)
            .into_iter()
            .filter(|&(a, _)| a >= addr && a < end)
            .map(|(_, v)| v)
            .collect();
        if words.len() != n {
            return Err(format!(
                "xp /{n}gx {addr:#x}: read {} words of {n}: {}",
                words.len(),
                text.lines().take(3).collect::<Vec<_>>().join(" | ")
            ));
        }
        Ok(words)
    }
}

fn tail(console: &str, n: usize) -> String {
    let lines: Vec<&str> = console.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Runs `stmts` in a guest booted with `opts.kernel`, reading the IOMMU tables at each `check`.
/// `progress` gets one line per step (fetching, building, booting, replaying).
pub fn run_in_guest(
    stmts: &[Stmt],
    opts: &GuestOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<GuestRun, HarnessError> {
    let mut out = None;
    run_traces_in_guest(&[stmts], opts, progress, &mut |_, r| out = Some(r))?;
    out.unwrap_or_else(|| Err(HarnessError::Tool("the guest gave no answer".into())))
}

/// What one trace's answer is made of, while it runs.
struct Answer {
    index: usize,
    records: Vec<Record>,
    walks: BTreeMap<usize, Walk>,
    console: String,
    began: Instant,
    boot: f64,
    ended: bool,
}

impl Answer {
    /// The guest's run of this trace: the leaves read at each checkpoint go into that check's
    /// record.
    fn finish(mut self, kernel: &str, monitor_log: String) -> GuestRun {
        for r in self.records.iter_mut().filter(|r| r.op == "check") {
            let Some(w) = self.walks.get(&r.line) else {
                continue;
            };
            if let Some(state) = r.state.as_mut() {
                for leaves in state.domains.values_mut() {
                    *leaves = w.leaves_by_size();
                }
            }
        }
        let run = self.began.elapsed().as_secs_f64();
        GuestRun {
            kernel: kernel.to_string(),
            records: self.records,
            walks: self.walks,
            console: self.console,
            monitor_log,
            timings: Timings {
                boot: self.boot,
                run,
                total: self.boot + run,
                ..Timings::default()
            },
        }
    }
}

/// Runs each of `traces` in turn in ONE guest booted with `opts.kernel` (each trace in a fresh
/// guest process, container and group) and hands each answer to `on_trace(index, answer)` as
/// soon as it is complete. A trace that hangs longer than `opts.timeout` or crashes the guest
/// gets its harness error, and the guest boots again at the next trace. `Err` only when nothing
/// could be booted at all (fetching the kernel, building the guest); a boot that never reaches
/// the first trace gives its error to every trace left.
pub fn run_traces_in_guest(
    traces: &[&[Stmt]],
    opts: &GuestOptions,
    progress: &mut dyn FnMut(&str),
    on_trace: &mut dyn FnMut(usize, Result<GuestRun, HarnessError>),
) -> Result<Timings, HarnessError> {
    let t0 = Instant::now();
    let mut timings = Timings::default();
    let cache = opts.cache_dir.clone().unwrap_or_else(default_cache_dir);
    // One fetch and one cargo build at a time within this process (parallel tests).
    static SETUP: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let guard = SETUP.lock().unwrap_or_else(|e| e.into_inner());
    let kernel = ensure_kernel(&opts.kernel, &cache, progress)?;
    timings.fetch = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    let replay_bin = guest_program(opts, progress)?;
    drop(guard);
    progress("building initramfs…");
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let run_dir =
        std::env::temp_dir().join(format!("type1-kernel-check-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&run_dir).map_err(|e| HarnessError::Build(e.to_string()))?;
    let result = (|| {
        let initrd = build_initramfs(&run_dir, &kernel, &replay_bin, traces)?;
        timings.build = t1.elapsed().as_secs_f64();
        let tr = Instant::now();
        let mut first = 0;
        while first < traces.len() {
            match boot(
                traces, first, opts, &kernel, &initrd, &run_dir, progress, on_trace,
            ) {
                Ok(next) => first = next.max(first + 1),
                Err(e) => {
                    for i in first..traces.len() {
                        on_trace(i, Err(e.clone()));
                    }
                    break;
                }
            }
        }
        timings.run = tr.elapsed().as_secs_f64();
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&run_dir);
    result?;
    timings.total = t0.elapsed().as_secs_f64();
    Ok(timings)
}

/// The QEMU command line of a boot (serial console on stdio, monitor on `sock`).
fn qemu_command(
    opts: &GuestOptions,
    iommu: &str,
    big: bool,
    kernel: &KernelFiles,
    initrd: &Path,
    append: &str,
    sock: &Path,
) -> Command {
    let mut cmd = Command::new(&opts.qemu);
    cmd.args([
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",
        "-machine",
        "q35",
    ])
    .args(["-smp", "1", "-m", if big { "6G" } else { "2G" }])
    .args(["-device", iommu, "-device", "edu"])
    .args([
        "-display",
        "none",
        "-no-reboot",
        "-nodefaults",
        "-serial",
        "stdio",
    ])
    .arg("-monitor")
    .arg(format!("unix:{},server=on,wait=off", sock.display()))
    .arg("-kernel")
    .arg(&kernel.vmlinuz)
    .arg("-initrd")
    .arg(initrd)
    .arg("-append")
    .arg(append)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

/// The kernel command line every boot starts with (serial console, VT-d on).
const APPEND: &str = "console=ttyS0 intel_iommu=on panic=-1 quiet loglevel=4 ";
/// QEMU's emulated VT-d, as every boot configures it.
const VTD: &str = "intel-iommu,intremap=on,caching-mode=on";

/// The guest's serial console, line by line, from a reader thread: `Some(line)` (without its
/// line ending) per line, then `None` once at the end of the output.
fn console_lines(stdout: std::process::ChildStdout) -> mpsc::Receiver<Option<String>> {
    let (tx, rx) = mpsc::channel::<Option<String>>();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(None);
                    return;
                }
                Ok(_) => {
                    let s = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\r', '\n'])
                        .to_string();
                    if tx.send(Some(s)).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// One boot, from trace `first` on. Returns the index to boot again at (the trace after the one
/// that hung or crashed the guest), or the error of a boot that never reached a trace.
#[allow(clippy::too_many_arguments)]
fn boot(
    traces: &[&[Stmt]],
    first: usize,
    opts: &GuestOptions,
    kernel: &KernelFiles,
    initrd: &Path,
    run_dir: &Path,
    progress: &mut dyn FnMut(&str),
    on_trace: &mut dyn FnMut(usize, Result<GuestRun, HarnessError>),
) -> Result<usize, HarnessError> {
    let big = traces.iter().any(|t| crate::replay::needs_1g(t));
    let mut append = String::from(APPEND);
    append.push_str(if big {
        "hugepagesz=1G hugepages=1 hugepagesz=2M hugepages=64 default_hugepagesz=2M"
    } else {
        "hugepages=64"
    });
    append.push_str(&format!(" type1.first={first}"));
    let sock = run_dir.join("monitor.sock");
    let _ = std::fs::remove_file(&sock);
    let iommu = match opts.aw_bits {
        Some(b) => format!("{VTD},aw-bits={b}"),
        None => VTD.to_string(),
    };
    let mut cmd = qemu_command(opts, &iommu, big, kernel, initrd, &append, &sock);
    let short = kernel.version.split('+').next().unwrap_or(&kernel.version);
    progress(&format!(
        "booting {short} in QEMU (TCG, emulated VT-d, edu device; ~10 s) for traces {}..{} of {}…",
        first + 1,
        traces.len(),
        traces.len()
    ));
    let tb = Instant::now();
    let child = cmd.spawn().map_err(|e| {
        HarnessError::Tool(format!("qemu-system-x86_64: {e} (install qemu-system-x86)"))
    })?;
    let mut child = KillOnDrop(child);
    let mut stdin = child.0.stdin.take().expect("piped stdin");
    let stdout = child.0.stdout.take().expect("piped stdout");
    let mut stderr = child.0.stderr.take().expect("piped stderr");
    let rx = console_lines(stdout);
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    // The timeout runs from the boot, then from the start of each trace.
    let mut deadline = Instant::now() + opts.timeout;
    let mut boot_console = String::new();
    let mut monitor: Option<Monitor> = None;
    let mut uname = String::new();
    let mut cur: Option<Answer> = None;
    let mut next = first;
    let mut started = false;
    let guest_err = |what: String, console: &str| HarnessError::Guest {
        what,
        console_tail: tail(console, 40),
    };
    // How the boot ended when it did not end with `@@EXIT`: `Some(what)`.
    let mut broke: Option<String> = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(Some(l)) => l,
            Ok(None) => {
                broke = Some("the guest stopped (panic or oops?)".to_string());
                break;
            }
            Err(_) => {
                broke = Some(format!(
                    "no answer after {} s: gave up",
                    opts.timeout.as_secs()
                ));
                break;
            }
        };
        let console = match cur.as_mut() {
            Some(a) => &mut a.console,
            None => &mut boot_console,
        };
        console.push_str(&line);
        console.push('\n');
        // Markers may follow console noise on the same line.
        let Some(at) = line.find("@@") else { continue };
        let m = &line[at..];
        if let Some(rest) = m.strip_prefix("@@INFO ") {
            if let Some(k) = rest.strip_prefix("kernel=") {
                uname = k.trim().to_string();
            }
        } else if let Some(rest) = m.strip_prefix("@@TRACE ") {
            let index: usize = rest.trim().parse().unwrap_or(next);
            let boot_secs = if started {
                0.0
            } else {
                let b = tb.elapsed().as_secs_f64();
                progress(&format!("booted {uname} in {b:.1} s"));
                b
            };
            started = true;
            deadline = Instant::now() + opts.timeout;
            cur = Some(Answer {
                index,
                records: Vec::new(),
                walks: BTreeMap::new(),
                console: std::mem::take(&mut boot_console),
                began: Instant::now(),
                boot: boot_secs,
                ended: false,
            });
        } else if let Some(rest) = m.strip_prefix("@@R ") {
            let Some(a) = cur.as_mut() else { continue };
            match serde_json::from_str(rest) {
                Ok(r) => a.records.push(r),
                Err(e) => {
                    let what = format!("unreadable record ({e}): {rest}");
                    broke = Some(what);
                    break;
                }
            }
        } else if let Some(rest) = m.strip_prefix("@@CHECKPOINT line=") {
            let line_no: usize = rest.trim().parse().unwrap_or(0);
            if monitor.is_none() {
                match Monitor::connect(&sock) {
                    Ok(mo) => monitor = Some(mo),
                    Err(e) => {
                        broke = Some(e);
                        break;
                    }
                }
            }
            let mon = monitor.as_mut().expect("monitor connected");
            mon.log.push_str(&format!("# checkpoint line={line_no}\n"));
            match vtd::walk(mon, EDU_BUS, EDU_DEVFN) {
                Ok(w) => {
                    if let Some(a) = cur.as_mut() {
                        a.walks.insert(line_no, w);
                    }
                }
                Err(e) => progress(&format!("line {line_no}: reading the VT-d tables: {e}")),
            }
            if let Err(e) = stdin.write_all(b"\n").and_then(|_| stdin.flush()) {
                broke = Some(format!("answering the checkpoint: {e}"));
                break;
            }
        } else if m.starts_with("@@END") {
            if let Some(a) = cur.as_mut() {
                a.ended = true;
            }
        } else if let Some(rest) = m.strip_prefix("@@DONE ") {
            let Some(a) = cur.take() else { continue };
            let log = monitor
                .as_mut()
                .map(|mo| std::mem::take(&mut mo.log))
                .unwrap_or_default();
            next = a.index + 1;
            let index = a.index;
            let status = rest.split_once(' ').map_or("", |(_, s)| s).trim();
            let answer = if a.ended {
                Ok(a.finish(&uname, log))
            } else {
                Err(guest_err(
                    format!("vfio-replay stopped early ({status})"),
                    &a.console,
                ))
            };
            on_trace(index, answer);
            deadline = Instant::now() + opts.timeout;
        } else if m.starts_with("@@EXIT") {
            break;
        } else if m.starts_with("@@ERROR") {
            progress(m.trim());
        }
    }
    drop(stdin);
    if broke.is_some() {
        drop(child);
    } else {
        // Give QEMU a moment to power off, then make sure it is gone.
        let stop = Instant::now() + Duration::from_secs(20);
        while Instant::now() < stop {
            if let Ok(Some(_)) = child.0.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(child);
    }
    let qemu_err = err_thread.join().unwrap_or_default();
    let with_qemu = |mut what: String| {
        if !qemu_err.trim().is_empty() {
            what.push_str(&format!("; QEMU said: {}", qemu_err.trim()));
        }
        what
    };
    match cur {
        // The trace under way when the guest hung, crashed or stopped is this trace's error.
        Some(a) => {
            let what = broke.unwrap_or_else(|| "the guest stopped before the end marker".into());
            on_trace(a.index, Err(guest_err(with_qemu(what), &a.console)));
            Ok(a.index + 1)
        }
        None if !started => Err(guest_err(
            with_qemu(broke.unwrap_or_else(|| "no trace started in the guest".into())),
            &boot_console,
        )),
        None => Ok(next),
    }
}

/// What [`record_in_guest`] brought back.
#[derive(Clone, Debug)]
pub struct RecordRun {
    /// The guest kernel's `uname -r`.
    pub kernel: String,
    /// The program's exit status in the guest.
    pub status: i32,
    /// The trace the shim wrote (`TYPE1_RECORD`), as streamed back.
    pub trace: String,
    /// The whole console output.
    pub console: String,
}

/// The shared libraries `ldd` names for `file`: the loader and every `=> /path` (absolute host
/// paths; the vDSO has none).
pub fn shared_libraries(file: &Path) -> Result<Vec<PathBuf>, HarnessError> {
    let text = run_tool(Command::new("ldd").arg(file), "ldd")?;
    let mut out = Vec::new();
    for l in text.lines() {
        let l = l.trim();
        let path = match l.split_once("=>") {
            Some((_, rest)) => rest.trim(),
            None => l,
        };
        let path = path.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            out.push(PathBuf::from(path));
        }
    }
    Ok(out)
}

/// Record mode in the guest: boots `opts.kernel` with `program` (a dynamically linked VFIO
/// program, run as `program GROUP`) and `preload` (`libtype1_preload.so`) in the initramfs,
/// together with the loader and the shared libraries `ldd` names for both (at their host
/// paths). `/init` runs it with `TYPE1_RECORD` and `LD_PRELOAD` against the real group of the
/// `edu` device and streams the recorded trace back over the console. The usual vfio-replay
/// flow is not run in such a boot.
pub fn record_in_guest(
    program: &Path,
    preload: &Path,
    opts: &GuestOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<RecordRun, HarnessError> {
    let cache = opts.cache_dir.clone().unwrap_or_else(default_cache_dir);
    let kernel = ensure_kernel(&opts.kernel, &cache, progress)?;
    let mut extra = vec![
        (program.to_path_buf(), "/record/run".to_string()),
        (
            preload.to_path_buf(),
            "/record/libtype1_preload.so".to_string(),
        ),
    ];
    let mut dirs: Vec<String> = Vec::new();
    for f in [program, preload] {
        for lib in shared_libraries(f)? {
            let guest = lib.display().to_string();
            if let Some(d) = lib.parent().map(|d| d.display().to_string()) {
                if !dirs.contains(&d) {
                    dirs.push(d);
                }
            }
            if !extra.iter().any(|(_, g)| *g == guest) {
                extra.push((lib, guest));
            }
        }
    }
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let run_dir =
        std::env::temp_dir().join(format!("type1-record-guest-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&run_dir).map_err(|e| HarnessError::Build(e.to_string()))?;
    let libpath = run_dir.join("libpath");
    std::fs::write(&libpath, dirs.join(":")).map_err(|e| HarnessError::Build(e.to_string()))?;
    extra.push((libpath, "/record/libpath".to_string()));
    progress("building the record-mode initramfs…");
    let result = build_initramfs_with(&run_dir, &kernel, None, &[], &extra)
        .and_then(|initrd| record_boot(opts, &kernel, &initrd, &run_dir, progress));
    let _ = std::fs::remove_dir_all(&run_dir);
    result
}

fn record_boot(
    opts: &GuestOptions,
    kernel: &KernelFiles,
    initrd: &Path,
    run_dir: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<RecordRun, HarnessError> {
    let sock = run_dir.join("monitor.sock");
    let append = format!("{APPEND}hugepages=64");
    let mut cmd = qemu_command(opts, VTD, false, kernel, initrd, &append, &sock);
    progress(&format!("booting {} in QEMU to record…", kernel.version));
    let mut child = KillOnDrop(cmd.spawn().map_err(|e| {
        HarnessError::Tool(format!("qemu-system-x86_64: {e} (install qemu-system-x86)"))
    })?);
    let stdin = child.0.stdin.take().expect("piped stdin");
    let stdout = child.0.stdout.take().expect("piped stdout");
    let rx = console_lines(stdout);
    let deadline = Instant::now() + opts.timeout;
    let mut run = RecordRun {
        kernel: String::new(),
        status: -1,
        trace: String::new(),
        console: String::new(),
    };
    let mut recorded = false;
    let what = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(Some(l)) => l,
            Ok(None) => break "the guest stopped (panic or oops?)".to_string(),
            Err(_) => break format!("no answer after {} s: gave up", opts.timeout.as_secs()),
        };
        run.console.push_str(&line);
        run.console.push('\n');
        let Some(at) = line.find("@@") else { continue };
        let m = &line[at..];
        if let Some(k) = m.strip_prefix("@@INFO kernel=") {
            run.kernel = k.trim().to_string();
        } else if let Some(rest) = m.strip_prefix("@@RECORDED ") {
            run.status = rest.trim().parse().unwrap_or(-1);
            recorded = true;
        } else if let Some(rest) = m.strip_prefix("@@T ") {
            run.trace.push_str(rest);
            run.trace.push('\n');
        } else if m == "@@T" {
            run.trace.push('\n');
        } else if m.starts_with("@@EXIT") {
            if recorded {
                drop(stdin);
                return Ok(run);
            }
            break "the guest ended without running the record program".to_string();
        } else if m.starts_with("@@ERROR") {
            progress(m.trim());
        }
    };
    Err(HarnessError::Guest {
        what,
        console_tail: tail(&run.console, 40),
    })
}
