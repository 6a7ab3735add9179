//! The text after each subcommand's `--help`: examples that run as written (from the
//! workspace root) and the exit codes.
//!
//! Invariant owned here: every subcommand's text ends with the codes all of them share, 3 (the
//! output could not be written, `output::WRITE_FAILED`) and 141 (the reader went away,
//! `output::BROKEN_PIPE`), so no help omits them.

/// The exit codes every subcommand shares, after its own.
macro_rules! common_exits {
    () => {
        "  3    the output could not be written (a full disk, > /dev/full); one line on stderr\n  \
         141  the output's reader went away (a closed pipe, as in `| head`); nothing more printed"
    };
}

/// `type1 replay --help`.
pub const REPLAY: &str = concat!(
    "Examples:
  type1 replay examples/vm-boot.trace
  type1 replay --json tests/traces/*.trace
  type1 replay --strategy per-page --no-expect examples/vm-boot.trace
  type1 replay --compare strategy=per-page,contiguous,folio examples/vm-boot.trace
  type1 replay --compare kernel=6.1,7.2 tests/traces/profile-7.2-zero-page.trace
  type1 replay --kernel 6.1 examples/dpdk-hugepages.trace
  type1 demo --print | type1 replay -

Exit codes:
  0    every statement met its expectation and the invariants hold
  1    a failed expectation or a broken invariant (each named on stderr)
  2    a malformed trace, a trace error (the trace asks for something the model cannot do),
       an unreadable file or a bad command line
",
    common_exits!()
);

/// `type1 kernel-check --help`.
pub const KERNEL_CHECK: &str = concat!(
    "Examples:
  type1 kernel-check tests/kernel/*.trace
  type1 kernel-check --kernel 6.1,7.2 --json examples/vm-boot.trace

Exit codes:
  0    the engine and the kernel agree on every compared statement
  1    they differ somewhere (each difference on its own line)
  2    a harness error (no QEMU, no kernel image, a trace that cannot be read)
",
    common_exits!()
);

/// `type1 inspect --help`.
pub const INSPECT: &str = concat!(
    "Examples:
  type1 inspect --demo
  sudo type1 inspect --pid $(pidof qemu-system-x86_64) --name [anon] --min-size 1G
  sudo type1 inspect --pid 1234 --range 7f0000000000+2G --iova 0 --json

Exit codes:
  0    the report was printed
  2    no --pid or --demo, a process that cannot be read (gone, a kernel thread, /proc denied),
       or a bad argument
",
    common_exits!()
);

/// `type1 bench --help`.
pub const BENCH: &str = concat!(
    "Examples:
  type1 bench                                   every workload on the model (a few minutes)
  type1 bench --workload pagetable              one workload, in seconds
  type1 bench --workload map-unmap --size 64M --json
  type1 bench --workload growth --plot growth.svg   also writes growth-per-page.svg
  sudo type1 bench --memory host --workload map-unmap --size 256M
  sudo type1 bench --memory host --workload inspect --size 16G   inspect vs. pagemap, 16G THP

Exit codes:
  0    every measurement was made and printed
  1    a measurement failed (named on stderr); the others are printed
  2    a bad argument, refused before anything runs: an unknown workload, one that needs the
       other memory (inspect reads real memory: --memory host), a size that is 0, not
       page-aligned or too large, a --plot name not ending in .svg or not writable
",
    common_exits!()
);

/// `type1 iotlb --help`.
pub const IOTLB: &str = concat!(
    "Examples:
  type1 iotlb examples/vm-boot.trace
  type1 iotlb --pattern ring --compare-strategies examples/dpdk-hugepages.trace
  type1 iotlb --entries 64 --ways 4 --plot miss.svg examples/vm-boot.trace
  type1 iotlb --preset agilex7-tbu --compare-strategies examples/vm-boot.trace
  type1 iotlb --entries 512 --unified --micro-entries 32 examples/vm-boot.trace
  type1 iotlb --list-presets

Presets: plain (no particular part: 64 entries per page size, fully associative), and the
geometries public documents give for real parts, each with its source (--list-presets).

Exit codes:
  0    the report (or the preset list) was printed
  2    an unreadable or malformed trace, a trace error, or a bad argument (an unknown preset
       is named with every known one)
",
    common_exits!()
);

/// `type1 plan --help`.
pub const PLAN: &str = concat!(
    "Examples:
  type1 plan --ram 16G
  type1 plan --ram 64G --backing hugetlb-1g --devices 2 --memlock 64G
  type1 plan --ram 16G --viommu --registrations 2M --json

Exit codes:
  0    the VM fits (locked memory, DMA entries, address width)
  1    it does not fit: what to change is printed
  2    a bad argument
",
    common_exits!()
);

/// `type1 demo --help`.
pub const DEMO: &str = concat!(
    "Examples:
  type1 demo
  type1 demo --json
  type1 demo --print > vm.trace && type1 replay vm.trace

Exit codes:
  0    both designs replayed as the built-in trace expects
  1    a failed expectation or a broken invariant
",
    common_exits!()
);

/// `type1 completions --help`.
pub const COMPLETIONS: &str = concat!(
    "Examples:
  type1 completions bash > ~/.local/share/bash-completion/completions/type1
  type1 completions zsh > ~/.zfunc/_type1        # with fpath+=(~/.zfunc) in ~/.zshrc
  type1 completions fish > ~/.config/fish/completions/type1.fish

Exit codes:
  0    the script was printed
  2    an unknown shell
",
    common_exits!()
);

/// `type1 man --help`.
pub const MAN: &str = concat!(
    "Examples:
  type1 man > ~/.local/share/man/man1/type1.1 && man type1

Exit codes:
  0    the page was printed
",
    common_exits!()
);

/// `type1 --help`.
pub const TOP: &str = concat!(
    "Each subcommand's --help has examples and its exit codes. Every subcommand exits with\n",
    common_exits!()
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{BROKEN_PIPE, WRITE_FAILED};

    #[test]
    fn every_text_names_the_shared_codes_output_uses() {
        for t in [
            TOP,
            REPLAY,
            KERNEL_CHECK,
            INSPECT,
            BENCH,
            IOTLB,
            PLAN,
            DEMO,
            COMPLETIONS,
            MAN,
        ] {
            assert!(t.contains(&format!(
                "\n  {WRITE_FAILED}    the output could not be written"
            )));
            assert!(t.contains(&format!("\n  {BROKEN_PIPE}  the output's reader went away")));
        }
    }
}
