//! A 1 TiB simulated region backed by 1 GiB pages maps and unmaps without the process growing by
//! more than 64 MiB (issue acceptance 4): the model stores nothing per page, pins are ranges, and
//! the IOMMU holds 1024 1G leaves in 3 table pages. One test in its own binary, so that the peak
//! resident size (VmHWM) is this test's alone.

mod common;

use common::*;
use type1::mm::Backing;
use type1::mm::PageSource;
use type1::{Config, Container, Strategy};

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn one_tib_of_1g_pages_maps_and_unmaps_in_little_memory() {
    const TIB: u64 = 1 << 40;
    let hwm_before = status_kib("VmHWM:");
    for strategy in [Strategy::Contiguous, Strategy::Folio] {
        let cfg = Config {
            strategy,
            check_unpin_order: true,
            ..Config::default()
        };
        let mut c = Container::sim_x86(cfg);
        let v = mmap(&mut c, "ram", TIB, Backing::Hugetlb1g);
        map(&mut c, v, 1 << 40, TIB).unwrap();
        let d = c.domain("d0").unwrap();
        assert_eq!(d.leaves_of(G1), 1024);
        assert_eq!(d.table_pages(), 3, "root + 2 level-3 tables");
        assert_eq!(c.locked_pages(), TIB / K4);
        assert_eq!(c.mm().pinned_pages(), TIB / K4);
        assert!(c.mm().pin_ranges().len() <= 2, "pins are ranges, not pages");
        assert_eq!(unmap(&mut c, 1 << 40, TIB), Ok(TIB));
        assert_eq!((c.locked_pages(), c.mm().pinned_pages()), (0, 0));
        assert_eq!(c.domain("d0").unwrap().table_pages(), 1);
    }
    let grown = status_kib("VmHWM:").saturating_sub(hwm_before);
    assert!(grown <= 64 * 1024, "peak resident size grew by {grown} KiB");
}
