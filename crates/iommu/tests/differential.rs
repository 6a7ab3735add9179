//! The radix formats against the mock (a sorted map of leaves with the same page sizes): random
//! sequences of map/unmap must give the same results, the same leaves and the same unmapped byte
//! counts (spec §3.4 split, §4.3 whole-leaf unmap), and table pages must all be freed at the end.

mod common;

use common::{G1, K4, M2};
use iommu::pgsize::split;
use iommu::{Domain, DomainConfig, Format, Granule, Leaf, Prot};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Map { iova: u64, paddr: u64, size: u64 },
    Unmap { iova: u64, size: u64 },
}

/// Addresses in a 8 GiB window, aligned to 4K, often to 2M or 1G, sizes of a few pages/blocks.
fn addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        (0u64..2048).prop_map(|x| x * K4),
        (0u64..4096).prop_map(|x| x * M2),
        (0u64..8).prop_map(|x| x * G1),
    ]
}

fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        (1u64..600).prop_map(|x| x * K4),
        (1u64..8).prop_map(|x| x * M2),
        (1u64..3).prop_map(|x| x * G1),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (addr(), addr(), size()).prop_map(|(iova, paddr, size)| Op::Map { iova, paddr, size }),
        (addr(), size()).prop_map(|(iova, size)| Op::Unmap { iova, size }),
    ]
}

fn leaves(d: &Domain) -> Vec<Leaf> {
    let mut v = Vec::new();
    d.for_each_leaf(&mut |l| v.push(l));
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn radix_formats_agree_with_the_mock(ops in proptest::collection::vec(op(), 1..24)) {
        let bitmap = K4 | M2 | G1;
        let mut mock = Domain::new(DomainConfig { format: Format::Mock, pgsize_bitmap: Some(bitmap), aperture: None }).unwrap();
        let mut radix: Vec<Domain> = [Format::X86_64 { levels: 4 }, Format::X86_64 { levels: 3 }, Format::Arm64 { granule: Granule::K4 }]
            .into_iter()
            .map(|f| Domain::new(DomainConfig::new(f)).unwrap())
            .collect();
        for op in &ops {
            match *op {
                Op::Map { iova, paddr, size } => {
                    // Keep the case small: skip maps of more than 4096 leaves (non-congruent GiBs).
                    let n: u64 = split(bitmap, iova, paddr, size).unwrap().iter().map(|c| c.3).sum();
                    if n > 4096 {
                        continue;
                    }
                    let want = mock.map(iova, paddr, size, Prot::RW).map_err(|e| e.errno());
                    for d in &mut radix {
                        prop_assert_eq!(d.map(iova, paddr, size, Prot::RW).map_err(|e| e.errno()), want, "{:?} {:?}", d.format(), op);
                    }
                }
                Op::Unmap { iova, size } => {
                    let want = mock.unmap(iova, size);
                    for d in &mut radix {
                        prop_assert_eq!(d.unmap(iova, size), want, "{:?} {:?}", d.format(), op);
                    }
                }
            }
            let want = leaves(&mock);
            for d in &radix {
                prop_assert_eq!(&leaves(d), &want);
                prop_assert_eq!(d.leaves_by_size(), mock.leaves_by_size());
            }
            // The radix table's in-place `phys_run` against the mock's leaf-by-leaf default, from
            // the start of every leaf and from inside one, across table pages.
            let step = want.len().div_ceil(16).max(1);
            for l in want.iter().step_by(step) {
                for (at, max) in [(l.iova, 4 * G1), ((l.iova + l.size / 2) & !(K4 - 1), 3 * M2 + K4)] {
                    let expect = mock.phys_run(at, max);
                    for d in &radix {
                        prop_assert_eq!(d.phys_run(at, max), expect, "{:?} at {:#x} max {:#x}", d.format(), at, max);
                    }
                }
            }
        }
        for d in &mut radix {
            d.unmap(0, 1 << 39);
            prop_assert_eq!(d.table_pages(), 1);
            prop_assert_eq!(d.total_leaves(), 0);
        }
    }
}
