//! Hostile input through the runner: the messages name the real problem (a bitmap page size
//! that is not a power of two, a negative address, the v1 unmap rule, the smallest mock page,
//! frames another region holds), and binary files end at once.

use std::path::Path;

use type1_cli::runner::{replay, Options, Outcome, Replay};
use type1_cli::trace::{parse, read_trace, ReadError};

fn run(src: &str) -> Replay {
    let t = parse(src).unwrap_or_else(|e| panic!("{e}"));
    replay(&t, &Options::default(), &mut |_| {})
}

#[test]
fn a_bitmap_page_size_of_3_is_not_a_power_of_two() {
    // spec §6: GET_BITMAP with a bitmap page size other than the IOMMU page size is EINVAL;
    // 3 can be no page size at all, and the message says so.
    let r = run("container\n\
         domain d0\n\
         mmap ram size=2M\n\
         map vaddr=ram iova=0 size=2M\n\
         dirty start\n\
         dirty get iova=0 size=2M pgsize=3 => EINVAL\n");
    let last = r.records.last().unwrap();
    assert_eq!(last.outcome.errno(), Some("EINVAL"));
    assert_eq!(
        last.outcome.message().unwrap(),
        "dirty tracking: the bitmap's page size is not a power of two (it must be the IOMMU \
         page size)"
    );
    assert!(last.mismatches.is_empty());
}

#[test]
fn a_negative_address_is_printed_as_a_negative_number() {
    let r = run("container\n\
         domain d0\n\
         mmap ram size=2M\n\
         map vaddr=ram-0x10000000000000 iova=0 size=4K\n");
    let e = r.error.expect("a trace error");
    assert_eq!(e.line, 4);
    assert!(
        e.message
            .starts_with("vaddr=ram-0x10000000000000: the region starts at 0x7f"),
        "{}",
        e.message
    );
    assert!(e.message.contains("so the address -0x"), "{}", e.message);
    assert!(e.message.contains("is below 0"), "{}", e.message);
    // Not the two's complement of a 128-bit number.
    assert!(!e.message.contains("0xffffffff"), "{}", e.message);
}

#[test]
fn the_v1_unmap_warning_gives_v1s_reason() {
    // spec §8.6 rows 59-61: on v1, an unmap that starts inside a mapping removes nothing (the
    // walk stops at a mapping that begins before iova), although the range is mapped.
    let r = run("container type1\n\
         domain d0\n\
         mmap ram size=2M\n\
         map vaddr=ram iova=1G size=2M\n\
         unmap iova=1G+4K size=4K => ok size=0\n\
         unmap iova=2G size=4K => ok size=0\n\
         unmap iova=1G size=4K => ok size=2M\n");
    assert!(r.failures().is_empty(), "{:?}", r.failures());
    assert_eq!(
        r.records[4].warnings,
        vec![
            "unmap of 4K at iova 0x40001000 removed 0 (less than asked: the range starts inside \
             the mapping at 0x40000000, and type1 (v1) removes only whole mappings from the \
             first that starts inside the range, stopping at one that starts before it)"
                .to_string()
        ]
    );
    // A range that is simply not mapped keeps the plain reason; more than asked, v1's other.
    assert_eq!(
        r.records[5].warnings,
        vec![
            "unmap of 4K at iova 0x80000000 removed 0 (less than asked: part of the range was \
             not mapped)"
                .to_string()
        ]
    );
    assert!(r.records[6].warnings[0].contains("more than asked: whole mappings were removed"));
}

#[test]
fn one_byte_mock_pages_are_a_trace_error() {
    let r = run("container\ndomain d0 format=mock pgsizes=1\n");
    let e = r.error.expect("a trace error");
    assert_eq!(e.line, 2);
    assert!(
        e.message
            .contains("page size 0x1 is below 0x800 (2 KiB), the smallest page format mock models"),
        "{}",
        e.message
    );
    assert!(run("container\ndomain d0 format=mock pgsizes=2K\n")
        .error
        .is_none());
}

#[test]
fn phys_on_a_bars_frames_is_a_trace_error_and_nothing_breaks() {
    let r = run("container\n\
         domain d0\n\
         mmap bar size=2M backing=pfnmap phys=0x200000000\n\
         mmap ram size=2M backing=hugetlb-2m phys=0x200000000\n");
    let e = r.error.expect("a trace error");
    assert_eq!(e.line, 4);
    assert!(
        e.message.contains(
            "phys=0x200000000 of \"ram\": the physical range [0x200000000, 0x200200000) \
             overlaps region \"bar\" at [0x200000000, 0x200200000)"
        ),
        "{}",
        e.message
    );
    let c = r.container.unwrap();
    assert!(c.check_invariants().is_ok());
}

#[test]
fn a_check_over_many_bars_and_4k_leaves_holds() {
    // 500 one-page BARs and 64 MiB of 4K pages, checked: every RAM page pinned once, no BAR
    // page pinned.
    let mut src = String::from("container\ndomain d0\nmmap ram size=64M\n");
    for i in 0..500 {
        src += &format!("mmap bar{i} size=4K backing=pfnmap\n");
        src += &format!(
            "map vaddr=bar{i} iova={:#x} size=4K\n",
            (1u64 << 40) + i * 4096
        );
    }
    src += "map vaddr=ram iova=1G size=64M\ncheck => pinned=16384 dmas=501 leaves.d0.4K=16884\n";
    let r = run(&src);
    assert!(r.failures().is_empty(), "{:?}", r.failures());
    assert!(matches!(r.records.last().unwrap().outcome, Outcome::Ok));
}

#[test]
fn binary_files_end_at_once_with_their_position() {
    let e = read_trace(Path::new("/dev/zero")).unwrap_err();
    assert!(
        matches!(
            e,
            ReadError::Binary {
                line: 1,
                col: 1,
                ..
            }
        ),
        "{e}"
    );
    let e = read_trace(Path::new("/dev/urandom")).unwrap_err();
    // A NUL or a byte that is not UTF-8 comes within the first few hundred bytes.
    assert!(
        matches!(e, ReadError::Binary { line, .. } if line < 100),
        "{e}"
    );
    assert!(e.to_string().contains("not a trace"), "{e}");
}
