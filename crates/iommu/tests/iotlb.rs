//! The IOTLB model attached to a domain: its knee at entries × page size over real layouts,
//! and invalidation through `unmap` and through the gather and `iotlb_sync`.

mod common;

use common::{x86, G1, K4, M2};
use iommu::dma_pattern::{self, Extents, Pattern, PatternConfig};
use iommu::{Access, Domain, Gather, IotlbConfig, Prot};

/// A VT-d domain with `size` bytes mapped from IOVA 0 in leaves of `leaf` bytes, and a cold
/// IOTLB of 64 entries per page size (fully associative).
fn layout(size: u64, leaf: u64) -> Domain {
    let mut d = x86();
    for at in (0..size).step_by(leaf as usize) {
        d.map(at, G1 + at, leaf, Prot::RW).unwrap();
    }
    d.set_iotlb(Some(&IotlbConfig::split(K4 | M2, 64, 64)))
        .unwrap();
    d
}

fn random_miss_rate(d: &mut Domain, window: u64) -> f64 {
    let space = Extents::of_domain(d);
    let cfg = PatternConfig::new(Pattern::Random, window);
    dma_pattern::replay(d, &space, &cfg, 4000, 4000).miss_rate()
}

#[test]
fn four_k_leaves_miss_past_a_256k_window_two_m_leaves_past_128m() {
    for (leaf, mapped, knee) in [(K4, 2 << 20, 256 << 10), (M2, 512 << 20, 128 << 20)] {
        let d = layout(mapped, leaf);
        let reach: u64 = d.iotlb().unwrap().reach(leaf).iter().map(|r| r.1).sum();
        assert_eq!(reach, knee);
        for window in [knee / 4, knee] {
            let rate = random_miss_rate(&mut layout(mapped, leaf), window);
            assert_eq!(rate, 0.0, "{leaf:#x} leaves, window {window:#x}");
        }
        for (window, at_least) in [(2 * knee, 0.4), (4 * knee, 0.7)] {
            let rate = random_miss_rate(&mut layout(mapped, leaf), window);
            assert!(
                rate > at_least,
                "{leaf:#x} leaves, window {window:#x}: {rate}"
            );
        }
    }
}

#[test]
fn the_same_window_hits_on_2m_leaves_and_misses_on_4k() {
    let window = 1 << 20;
    let small = random_miss_rate(&mut layout(2 << 20, K4), window);
    let large = random_miss_rate(&mut layout(2 << 20, M2), window);
    assert!(small > 0.7 && large == 0.0, "{small} vs {large}");
}

/// Touches pages 0..8 of a 4K layout; returns the domain.
fn warm() -> Domain {
    let mut d = layout(8 * K4, K4);
    for p in 0..8 {
        assert!(matches!(d.access(p * K4), Access::Miss(_)));
    }
    assert_eq!(d.iotlb().unwrap().len(), 8);
    d
}

fn cached(d: &Domain) -> Vec<u64> {
    let t = d.iotlb().unwrap();
    (0..8).filter(|&p| t.holds(p * K4)).collect()
}

#[test]
fn unmap_drops_exactly_the_entries_it_covers() {
    let mut d = warm();
    assert_eq!(d.unmap(2 * K4, 3 * K4), 3 * K4);
    assert_eq!(cached(&d), [0, 1, 5, 6, 7]);
    assert_eq!(d.access(3 * K4), Access::Fault);
    assert!(matches!(d.access(K4), Access::Hit(_)));
}

#[test]
fn unmap_fast_keeps_stale_entries_until_iotlb_sync() {
    let mut d = warm();
    let mut g = Gather::new();
    d.unmap_fast(K4, K4, &mut g);
    d.unmap_fast(6 * K4, K4, &mut g);
    // Not flushed yet: the device still translates through the stale entries.
    assert_eq!(cached(&d), (0..8).collect::<Vec<_>>());
    assert_eq!(d.access(K4), Access::Hit(G1 + K4));
    d.iotlb_sync(&mut g);
    // The gather's span [1, 6] is flushed whole, mapped pages inside it included.
    assert_eq!(cached(&d), [0, 7]);
    assert_eq!(d.access(K4), Access::Fault);
}

#[test]
fn a_disabled_iotlb_walks_every_time() {
    let mut d = x86();
    d.map(0, G1, K4, Prot::RW).unwrap();
    assert!(d.iotlb().is_none());
    assert_eq!(d.access(0x10), Access::Miss(G1 + 0x10));
    assert_eq!(d.access(0x10), Access::Miss(G1 + 0x10));
    assert_eq!(d.access(K4), Access::Fault);
    d.set_iotlb(Some(&IotlbConfig::unified(K4, 4, 2))).unwrap();
    d.access(0);
    assert!(matches!(d.access(0), Access::Hit(_)));
    d.set_iotlb(None).unwrap();
    assert!(d.iotlb().is_none());
}
