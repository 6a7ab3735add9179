//! The page-size split of `iommu_map` (spec §3.4): the worked examples of the spec through
//! `pgsize::split` and through `Domain::map`, and a property test against a naive greedy
//! reference.

mod common;

use common::{x86, G1, K4, M2};
use iommu::pgsize::{iommu_pgsize, split};
use iommu::{Domain, DomainConfig, Format, Granule, Prot};
use iommu::{SZ_16K as K16, SZ_32M as M32, SZ_512M as M512, SZ_64K as K64};
use proptest::prelude::*;

const K2: u64 = 1 << 11;
const M1: u64 = 1 << 20;
const M16: u64 = 1 << 24;
/// The VT-d bitmap of the spec's examples: 4K|2M|1G = 0x40201000.
const VTD: u64 = K4 | M2 | G1;

/// Leaf counts of a domain as (4K, 2M, 1G).
fn counts(d: &Domain) -> (u64, u64, u64) {
    (d.leaves_of(K4), d.leaves_of(M2), d.leaves_of(G1))
}

/// One row of the spec §3.4 table: `pgsize::split` of the run gives `calls`, and `Domain::map`
/// of it into `d` (4K|2M|1G) installs `leaves` (4K, 2M, 1G) in as many `map_pages` calls.
/// Returns the domain for the row's own checks.
fn check_row(
    mut d: Domain,
    (iova, paddr, size): (u64, u64, u64),
    calls: &[(u64, u64, u64, u64)],
    leaves: (u64, u64, u64),
) -> Domain {
    assert_eq!(split(VTD, iova, paddr, size).as_deref(), Some(calls));
    d.map(iova, paddr, size, Prot::RW).unwrap();
    assert_eq!(counts(&d), leaves);
    assert_eq!(d.stats().map_pages_calls, calls.len() as u64);
    d
}

#[test]
fn spec_3_4_bitmap_constant_is_0x40201000() {
    // spec §3.4: "pgsize_bitmap = 4K|2M|1G = 0x40201000, as on VT-d".
    assert_eq!(VTD, 0x4020_1000);
    assert_eq!(x86().pgsize_bitmap(), VTD);
}

#[test]
fn spec_3_4_example_2m_not_1g_when_not_congruent_mod_1g() {
    // spec §3.4 row 1: iova 0x200000, paddr 0x40000000, 4M ⇒ 2M×2 (1G rejected: (iova^paddr) & (1G-1) ≠ 0).
    let run = (0x20_0000, 0x4000_0000, 4 * M1);
    let d = check_row(x86(), run, &[(0x20_0000, 0x4000_0000, M2, 2)], (0, 2, 0));
    assert_eq!(d.iova_to_phys(0x40_1234), Some(0x4020_1234));
}

/// spec §3.4 row 2: iova 0x1000, paddr 0x201000, 4M ⇒ 4K×511, then 2M×1, then 4K×1.
const ROW_2: (u64, u64, u64) = (0x1000, 0x20_1000, 4 * M1);
const ROW_2_CALLS: [(u64, u64, u64, u64); 3] = [
    (0x1000, 0x20_1000, K4, 511),
    (0x20_0000, 0x40_0000, M2, 1),
    (0x40_0000, 0x60_0000, K4, 1),
];

#[test]
fn spec_3_4_example_small_pages_stop_at_2m_boundary() {
    let d = check_row(x86(), ROW_2, &ROW_2_CALLS, (512, 1, 0));
    let big = d.translate(0x20_0000).unwrap();
    assert_eq!((big.iova, big.paddr, big.size), (0x20_0000, 0x40_0000, M2));
    assert_eq!(d.translate(0x40_0000).unwrap().size, K4);
}

#[test]
fn spec_3_4_example_not_congruent_mod_2m_is_all_4k() {
    // spec §3.4 row 3: iova 0x1000, paddr 0x202000, 4M ⇒ 4K×1024 (not congruent mod 2M).
    let run = (0x1000, 0x20_2000, 4 * M1);
    check_row(x86(), run, &[(0x1000, 0x20_2000, K4, 1024)], (1024, 0, 0));
}

#[test]
fn spec_3_4_example_one_1g_leaf() {
    // spec §3.4 row 4: iova 0x40000000, paddr 0x80000000, 1G ⇒ 1G×1.
    let run = (0x4000_0000, 0x8000_0000, G1);
    check_row(x86(), run, &[(0x4000_0000, 0x8000_0000, G1, 1)], (0, 0, 1));
}

#[test]
fn spec_3_4_example_two_runs_are_two_iommu_map_calls() {
    // spec §3.4 row 5: 8K that is not physically contiguous (two pin runs) ⇒ two iommu_map
    // calls, 4K×1 each.
    let mut d = x86();
    for (iova, paddr) in [(0x10_0000, 0x7000), (0x10_1000, 0x3_0000)] {
        assert_eq!(
            split(VTD, iova, paddr, K4),
            Some(vec![(iova, paddr, K4, 1)])
        );
        d.map(iova, paddr, K4, Prot::RW).unwrap();
    }
    assert_eq!(counts(&d), (2, 0, 0));
    assert_eq!((d.stats().map_calls, d.stats().map_pages_calls), (2, 2));
}

#[test]
fn spec_3_4_examples_hold_on_every_radix_format_with_4k_2m_1g() {
    // The same rows on ARM 4K (same bitmap) give the same leaves.
    let d = Domain::new(DomainConfig::new(Format::Arm64 {
        granule: Granule::K4,
    }))
    .unwrap();
    check_row(d, ROW_2, &ROW_2_CALLS, (512, 1, 0));
}

#[test]
fn iommu_pgsize_returns_none_where_the_kernel_would_bug() {
    // spec §3.4: BUG_ON(!pgsizes) — no allowed size small or aligned enough.
    assert_eq!(iommu_pgsize(M2, 0x1000, 0, M2), None);
    assert_eq!(iommu_pgsize(VTD, 0, 0, 0), None);
    assert_eq!(iommu_pgsize(VTD, 0, 0, 0x800), None);
}

#[test]
fn split_at_the_top_of_the_u64_space_does_not_overflow() {
    // offset + next overflows at the top of the address space: the kernel's overflow check.
    let iova = u64::MAX - (4 * M1 - 1);
    let got = split(VTD, iova, iova, 4 * M1).unwrap();
    assert_eq!(got, vec![(iova, iova, M2, 2)]);
}

/// The naive reference (spec §3.4, stated as a property rather than an algorithm): walk the run
/// leaf by leaf, each time taking the largest size of the bitmap that is aligned in both IOVA and
/// paddr and fits in what is left.
fn naive_leaves(bitmap: u64, iova: u64, paddr: u64, size: u64) -> Option<Vec<(u64, u64, u64)>> {
    let mut out = Vec::new();
    let (mut i, mut p, mut left) = (iova, paddr, size);
    while left != 0 {
        let s = (0..64)
            .rev()
            .map(|b| 1u64 << b)
            .find(|&s| bitmap & s != 0 && s <= left && i % s == 0 && p % s == 0)?;
        out.push((i, p, s));
        i = i.wrapping_add(s);
        p = p.wrapping_add(s);
        left -= s;
    }
    Some(out)
}

/// Check the properties of spec §3.4 on a split, call by call (cheap for any size): the calls
/// cover the run exactly, each leaf is aligned in IOVA and paddr to its size, which is in the
/// bitmap, and no larger size of the bitmap would have fitted at any leaf.
fn check_split(bitmap: u64, iova: u64, paddr: u64, size: u64, calls: &[(u64, u64, u64, u64)]) {
    let end = iova as u128 + size as u128;
    let (mut ci, mut cp) = (iova, paddr);
    let mut total = 0u128;
    for &(i, p, s, n) in calls {
        assert_eq!((i, p), (ci, cp), "calls are contiguous");
        assert!(n >= 1);
        assert!(
            bitmap & s != 0 && s.is_power_of_two(),
            "size {s:#x} in bitmap {bitmap:#x}"
        );
        assert_eq!((i % s, p % s), (0, 0), "leaf aligned in iova and paddr");
        let run_end = i as u128 + s as u128 * n as u128;
        assert!(run_end <= end);
        // Larger sizes: the first position in this run aligned to `big` in both addresses is the
        // one with the most run left; if `big` does not fit there it fits nowhere in the run.
        for big in (0..64)
            .map(|b| 1u64 << b)
            .filter(|&b| b > s && bitmap & b != 0)
        {
            if (i ^ p) % big != 0 {
                continue; // never co-aligned
            }
            let first = (i as u128).div_ceil(big as u128) * big as u128;
            if first < run_end {
                assert!(
                    first + big as u128 > end,
                    "a {big:#x} leaf fits at {first:#x} inside a run of {s:#x}"
                );
            }
        }
        let bytes = s * n;
        total += bytes as u128;
        ci = ci.wrapping_add(bytes);
        cp = cp.wrapping_add(bytes);
    }
    assert_eq!(total, size as u128, "calls cover the run exactly");
}

fn bitmap_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![
        // Named sets: VT-d / ARM 4K, ARM 16K, ARM 64K, ARM v7s (4K|64K|1M|16M), sub-4K mock sets.
        Just(VTD),
        Just(K16 | M32),
        Just(K64 | M512),
        Just(K4 | K64 | M1 | M16),
        Just(K2 | K4 | M2),
        Just(K2 | M1),
        // Random subsets of 2K … 1G.
        (1u64..(1 << 20)).prop_map(|m| m << 11),
    ]
}

/// Random bitmap; iova and paddr congruent modulo a random power of two (so large sizes are
/// sometimes possible), both aligned to the minimum page size; a size of a few large pages plus a
/// tail of small ones.
fn case_strategy() -> impl Strategy<Value = (u64, u64, u64, u64)> {
    (
        bitmap_strategy(),
        11u32..33,
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        0u64..4,
        11u32..31,
        0u64..600,
    )
        .prop_map(|(bitmap, k, hi_i, hi_p, lo, n_big, big_shift, n_small)| {
            let min = 1u64 << bitmap.trailing_zeros();
            let k = k.max(bitmap.trailing_zeros());
            let lo = (lo % (1u64 << k)) & !(min - 1);
            let iova = ((hi_i % (1 << 18)) << k) | lo;
            let paddr = ((hi_p % (1 << 18)) << k) | lo;
            let big = (1u64 << big_shift).max(min);
            let size = (n_big * big + n_small * min).max(min);
            (bitmap, iova, paddr, size)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    /// spec §3.4: `split` (the kernel's iommu_pgsize loop) agrees with the naive greedy reference
    /// leaf by leaf, and satisfies the §3.4 properties call by call.
    #[test]
    fn split_matches_naive_greedy_reference((bitmap, iova, paddr, size) in case_strategy()) {
        let calls = split(bitmap, iova, paddr, size).expect("aligned runs always split");
        check_split(bitmap, iova, paddr, size, &calls);
        let leaves: u64 = calls.iter().map(|c| c.3).sum();
        if leaves <= 1 << 14 {
            let expanded: Vec<(u64, u64, u64)> = calls
                .iter()
                .flat_map(|&(i, p, s, n)| (0..n).map(move |k| (i + k * s, p + k * s, s)))
                .collect();
            prop_assert_eq!(Some(expanded), naive_leaves(bitmap, iova, paddr, size));
        }
    }
}
