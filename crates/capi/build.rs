//! Puts `type1.h` and `type1.pc` next to `libtype1.so` (target/PROFILE/), so a C program
//! builds against the library straight from the target directory.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let header = manifest.join("include/type1.h");
    println!("cargo:rerun-if-changed={}", header.display());
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    // OUT_DIR is target/PROFILE/build/NAME-HASH/out.
    let Some(dir) = out.ancestors().nth(3) else {
        return;
    };
    let _ = std::fs::create_dir_all(dir.join("include"));
    let _ = std::fs::copy(&header, dir.join("include/type1.h"));
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let pc = format!(
        "prefix={dir}\nlibdir=${{prefix}}\nincludedir=${{prefix}}/include\n\n\
         Name: type1\nDescription: software VFIO type1 container (libtype1.so)\n\
         Version: {version}\nLibs: -L${{libdir}} -Wl,-rpath,${{libdir}} -ltype1\n\
         Cflags: -I${{includedir}}\n",
        dir = dir.display()
    );
    let _ = std::fs::write(dir.join("type1.pc"), pc);
}
