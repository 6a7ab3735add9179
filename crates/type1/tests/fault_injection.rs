//! Fault injection (spec §8.3 row 35; issue acceptance 3): for map, unmap, attach (replay into a
//! second domain and into a first domain), detach and release, fail the Nth injectable point
//! (pin, IOMMU map_pages, page-table allocation, locked-memory charge) for N = 1, 2, … until the
//! call succeeds. After every failure the whole state equals the state before the call, the
//! invariants hold, and no pin leaks.

mod common;

use common::*;
use iommu::{Domain, DomainConfig, FaultPoint, Format};
use type1::mm::sim::SimMm;
use type1::mm::Backing;
use type1::mm::PageSource;
use type1::{Config, Container, MapDma, UnmapDma};

fn x86() -> Domain {
    Domain::new(DomainConfig::new(Format::X86_64 { levels: 4 })).unwrap()
}

fn arm() -> Domain {
    Domain::new(DomainConfig::new(Format::Arm64 {
        granule: iommu::Granule::K4,
    }))
    .unwrap()
}

/// Memory: THP 4M, scattered 4K ×64, a 64K BAR, hugetlb 2M ×2; with `domains` attached and
/// two mappings already in place. Every mmap is wired to the shared injector.
fn scenario(domains: usize) -> (C, [u64; 4]) {
    let mut c = Container::new(Config::default(), SimMm::new());
    let f = c.faults();
    c.mm_mut().set_faults(Some(f));
    let thp = mmap(&mut c, "thp", 4 << 20, Backing::Thp);
    let sc = mmap_spec(&mut c, scattered("sc", 64 * K4, Backing::Page4k, 5));
    let bar = mmap(&mut c, "bar", 64 << 10, Backing::Pfnmap);
    let htlb = mmap(&mut c, "htlb", 4 << 20, Backing::Hugetlb2m);
    if domains >= 1 {
        c.attach("d0", x86(), vec![]).unwrap();
    }
    if domains >= 2 {
        c.attach("d1", arm(), vec![]).unwrap();
    }
    c.map_dma(&MapDma::rw(htlb, 0x8000_0000, 4 << 20)).unwrap();
    c.map_dma(&MapDma::rw(sc, 0x9000_0000, 16 * K4)).unwrap();
    (c, [thp, sc, bar, htlb])
}

/// Run `op` on a fresh scenario with the Nth point failing, N = 1, 2, …; returns how many
/// failures were injected before the call succeeded.
fn fail_nth(
    domains: usize,
    name: &str,
    op: impl Fn(&mut C, [u64; 4]) -> Result<(), type1::Error>,
) -> u64 {
    for n in 1..10_000 {
        let (mut c, v) = scenario(domains);
        let before = c.snapshot();
        let pins = c.mm().pinned_pages();
        c.faults().arm(n, &FaultPoint::ALL);
        let r = op(&mut c, v);
        let fired = c.faults().fired();
        c.faults().disarm();
        if !fired {
            assert!(r.is_ok(), "{name}: failed without an injected fault: {r:?}");
            invariants(&c);
            finish(&mut c);
            return n - 1;
        }
        assert!(r.is_err(), "{name}: N={n} fired but the call succeeded");
        assert_eq!(
            c.snapshot(),
            before,
            "{name}: N={n} changed the state ({r:?})"
        );
        assert_eq!(c.mm().pinned_pages(), pins, "{name}: N={n} leaked pins");
        invariants(&c);
        finish(&mut c);
    }
    panic!("{name}: still failing after 10000 points");
}

#[test]
fn map_thp_into_two_domains_survives_every_failure() {
    let n = fail_nth(2, "map thp", |c, v| {
        c.map_dma(&MapDma::rw(v[0], 0x4000_0000, 4 << 20))
    });
    assert!(
        n >= 6,
        "pins, charges, map_pages and table allocations in two domains: {n} points"
    );
}

#[test]
fn map_scattered_survives_every_failure() {
    let n = fail_nth(1, "map scattered", |c, v| {
        c.map_dma(&MapDma::rw(v[1] + 16 * K4, 0xa000_0000, 48 * K4))
    });
    assert!(n >= 48, "one run per page: {n} points");
}

#[test]
fn map_bar_survives_every_failure() {
    let n = fail_nth(2, "map bar", |c, v| {
        c.map_dma(&MapDma::rw(v[2], 0xb000_0000, 64 << 10))
    });
    assert!(n >= 2, "{n}");
}

#[test]
fn attach_second_domain_replay_survives_every_failure() {
    let n = fail_nth(1, "attach replay", |c, _| c.attach("d1", arm(), vec![]));
    assert!(n >= 2, "{n}");
}

#[test]
fn attach_first_domain_pins_and_survives_every_failure() {
    let n = fail_nth(0, "attach first", |c, _| c.attach("d0", x86(), vec![]));
    assert!(n >= 4, "{n}");
}

#[test]
fn unmap_detach_and_release_have_no_failure_points() {
    // The unmap path never allocates, pins or charges: the first attempt succeeds.
    assert_eq!(
        fail_nth(2, "unmap", |c, _| c
            .unmap_dma(&UnmapDma::range(0x8000_0000, 4 << 20))
            .map(|_| ())),
        0
    );
    assert_eq!(fail_nth(2, "detach", |c, _| c.detach("d1")), 0);
    assert_eq!(
        fail_nth(2, "detach last", |c, _| c
            .detach("d1")
            .and_then(|_| c.detach("d0"))),
        0
    );
    assert_eq!(
        fail_nth(2, "release", |c, _| c
            .unmap_dma(&UnmapDma::all())
            .map(|_| ())),
        0
    );
}
