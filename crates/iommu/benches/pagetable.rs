//! Page-table hot paths on x86_64 (VT-d second level, 4 levels):
//!
//! - `map+unmap/{4K,2M,1G}`: one `Domain::map` of one leaf into an empty domain and the
//!   `Domain::unmap` that removes it again (the tables are taken from and returned to the free
//!   list every time).
//! - `map/{4K,2M,1G}` and `unmap/{4K,2M,1G}`: the same calls measured apart, per call: 512
//!   one-leaf maps at consecutive IOVAs are timed, then the 512 unmaps.
//! - `map256x4K`: one `Domain::map` of 256 4K leaves (iova 0x1000 + k·2M, paddr 0x2000 + k·2M:
//!   not congruent mod 2M, so `iommu_pgsize` keeps 4K: one `map_pages` call), per call; the
//!   unmap of the 256 leaves is timed apart as `unmap256x4K`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use iommu::{Domain, DomainConfig, Format, Prot, SZ_1G as G1, SZ_2M as M2, SZ_4K as K4};

fn x86() -> Domain {
    Domain::new(DomainConfig::new(Format::X86_64 { levels: 4 })).unwrap()
}

/// `map+unmap/{name}` (`name` = `map256x4K+unmap`: the whole name): one `Domain::map` of `len`
/// bytes at `iova` → `paddr` into an empty domain, then the unmap that removes it again.
fn map_then_unmap(g: &mut BenchmarkGroup<WallTime>, name: &str, iova: u64, paddr: u64, len: u64) {
    g.bench_function(name, |b| {
        let mut d = x86();
        b.iter(|| {
            d.map(black_box(iova), black_box(paddr), len, Prot::RW)
                .unwrap();
            black_box(d.unmap(black_box(iova), len));
        })
    });
}

/// `map_name` and `unmap_name`: the maps of `len` bytes at `at(k)` = (iova, paddr) and their
/// unmaps, timed apart, per call, in chunks of `n` (the unmaps of a chunk follow its maps).
fn maps_and_unmaps_apart(
    g: &mut BenchmarkGroup<WallTime>,
    (map_name, unmap_name): (&str, &str),
    n: u64,
    len: u64,
    at: impl Fn(u64) -> (u64, u64) + Copy,
) {
    for (name, time_unmaps) in [(map_name, false), (unmap_name, true)] {
        g.bench_function(name, |b| {
            let mut d = x86();
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left != 0 {
                    let c = left.min(n);
                    let t0 = Instant::now();
                    for k in 0..c {
                        let (iova, paddr) = at(k);
                        d.map(black_box(iova), paddr, len, Prot::RW).unwrap();
                    }
                    let maps = t0.elapsed();
                    let t1 = Instant::now();
                    for k in 0..c {
                        black_box(d.unmap(black_box(at(k).0), len));
                    }
                    total += if time_unmaps { t1.elapsed() } else { maps };
                    left -= c;
                }
                total
            })
        });
    }
}

fn leaves(c: &mut Criterion) {
    let mut g = c.benchmark_group("x86_64");
    for (name, size) in [("4K", K4), ("2M", M2), ("1G", G1)] {
        let iova = 16 * G1;
        map_then_unmap(&mut g, &format!("map+unmap/{name}"), iova, iova, size);
        let base = 64 * G1;
        let names = (&*format!("map/{name}"), &*format!("unmap/{name}"));
        maps_and_unmaps_apart(&mut g, names, 512, size, |k| {
            (base + k * size, base + k * size)
        });
    }

    let (iova, paddr, len) = (0x1000u64, 0x2000u64, 256 * K4);
    maps_and_unmaps_apart(&mut g, ("map256x4K", "unmap256x4K"), 64, len, |k| {
        (iova + k * M2, paddr + k * M2)
    });
    map_then_unmap(&mut g, "map256x4K+unmap", iova, paddr, len);
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = leaves
}
criterion_main!(benches);
