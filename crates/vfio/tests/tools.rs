//! The host-tools check `type1 kernel-check` makes before it fetches or boots anything: one
//! line naming what is missing and the `apt-get install` that brings it, found through a fake
//! `$PATH` (so the test does not depend on what this machine has).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use vfio_backend::qemu::{is_static_elf, missing_tools};

/// A fresh empty directory under the system's temp dir.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("type1-tools-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An executable file `dir/name`.
fn program(dir: &Path, name: &str) {
    let p = dir.join(name);
    std::fs::write(&p, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A 64-bit little-endian ELF header with no program header (static) or one `PT_INTERP`.
fn elf(path: &Path, interp: bool) {
    let mut b = vec![0u8; 64 + 56];
    b[..6].copy_from_slice(b"\x7fELF\x02\x01");
    b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    b[0x38..0x3a].copy_from_slice(&u16::from(interp).to_le_bytes()); // e_phnum
    b[64..68].copy_from_slice(&3u32.to_le_bytes()); // PT_INTERP
    std::fs::write(path, b).unwrap();
}

#[test]
fn a_missing_qemu_is_one_line_with_the_install_command() {
    let bin = scratch("noqemu");
    program(&bin, "cpio");
    let busybox = bin.join("busybox");
    elf(&busybox, false);
    let t0 = std::time::Instant::now();
    let line = missing_tools(bin.as_os_str(), std::slice::from_ref(&busybox), false);
    assert!(t0.elapsed().as_millis() < 500);
    assert_eq!(
        line.as_deref(),
        Some("missing qemu-system-x86_64; install with: apt-get install qemu-system-x86")
    );
    // With QEMU there, nothing is missing.
    program(&bin, "qemu-system-x86_64");
    assert_eq!(missing_tools(bin.as_os_str(), &[busybox], false), None);
    let _ = std::fs::remove_dir_all(&bin);
}

#[test]
fn fetching_a_kernel_also_needs_apt_dpkg_kmod_and_the_decompressors() {
    let bin = scratch("fetch");
    for p in ["apt-get", "dpkg-deb", "xz"] {
        program(&bin, p);
    }
    let dynamic = bin.join("busybox");
    elf(&dynamic, true);
    assert!(!is_static_elf(&dynamic));
    assert_eq!(
        missing_tools(bin.as_os_str(), std::slice::from_ref(&dynamic), true).as_deref(),
        Some(
            "missing qemu-system-x86_64, cpio, modinfo, zstd, a static busybox; \
             install with: apt-get install qemu-system-x86 cpio kmod zstd busybox-static"
        )
    );
    // Without a fetch only the boot's tools count.
    assert_eq!(
        missing_tools(bin.as_os_str(), &[dynamic], false).as_deref(),
        Some(
            "missing qemu-system-x86_64, cpio, a static busybox; \
             install with: apt-get install qemu-system-x86 cpio busybox-static"
        )
    );
    let _ = std::fs::remove_dir_all(&bin);
}
