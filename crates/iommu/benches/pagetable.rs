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

use criterion::{criterion_group, criterion_main, Criterion};
use iommu::{Domain, DomainConfig, Format, Prot};

const K4: u64 = 1 << 12;
const M2: u64 = 1 << 21;
const G1: u64 = 1 << 30;

fn x86() -> Domain {
    Domain::new(DomainConfig::new(Format::X86_64 { levels: 4 })).unwrap()
}

/// Time `n` calls of `timed(k)` for k in 0..n, run `untimed(k)` for each afterwards; repeat
/// until `iters` calls were timed. Returns the total timed duration.
fn chunked(
    iters: u64,
    n: u64,
    d: &mut Domain,
    mut timed: impl FnMut(&mut Domain, u64),
    mut untimed: impl FnMut(&mut Domain, u64),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left != 0 {
        let c = left.min(n);
        let t0 = Instant::now();
        for k in 0..c {
            timed(d, k);
        }
        total += t0.elapsed();
        for k in 0..c {
            untimed(d, k);
        }
        left -= c;
    }
    total
}

fn leaves(c: &mut Criterion) {
    let mut g = c.benchmark_group("x86_64");
    for (name, size) in [("4K", K4), ("2M", M2), ("1G", G1)] {
        g.bench_function(format!("map+unmap/{name}"), |b| {
            let mut d = x86();
            let iova = 16 * G1;
            b.iter(|| {
                d.map(black_box(iova), black_box(iova), size, Prot::RW)
                    .unwrap();
                black_box(d.unmap(black_box(iova), size));
            })
        });
        let base = 64 * G1;
        g.bench_function(format!("map/{name}"), |b| {
            let mut d = x86();
            b.iter_custom(|iters| {
                chunked(
                    iters,
                    512,
                    &mut d,
                    |d, k| {
                        d.map(black_box(base + k * size), base + k * size, size, Prot::RW)
                            .unwrap()
                    },
                    |d, k| {
                        d.unmap(base + k * size, size);
                    },
                )
            })
        });
        g.bench_function(format!("unmap/{name}"), |b| {
            let mut d = x86();
            b.iter_custom(|iters| {
                // Map untimed, unmap timed: the closures swap roles, so map first by hand.
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left != 0 {
                    let c = left.min(512);
                    for k in 0..c {
                        d.map(base + k * size, base + k * size, size, Prot::RW)
                            .unwrap();
                    }
                    let t0 = Instant::now();
                    for k in 0..c {
                        black_box(d.unmap(black_box(base + k * size), size));
                    }
                    total += t0.elapsed();
                    left -= c;
                }
                total
            })
        });
    }

    let (iova, paddr, len) = (0x1000u64, 0x2000u64, 256 * K4);
    g.bench_function("map256x4K", |b| {
        let mut d = x86();
        b.iter_custom(|iters| {
            chunked(
                iters,
                64,
                &mut d,
                |d, k| {
                    d.map(black_box(iova + k * M2), paddr + k * M2, len, Prot::RW)
                        .unwrap()
                },
                |d, k| {
                    d.unmap(iova + k * M2, len);
                },
            )
        })
    });
    g.bench_function("unmap256x4K", |b| {
        let mut d = x86();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left != 0 {
                let c = left.min(64);
                for k in 0..c {
                    d.map(iova + k * M2, paddr + k * M2, len, Prot::RW).unwrap();
                }
                let t0 = Instant::now();
                for k in 0..c {
                    black_box(d.unmap(black_box(iova + k * M2), len));
                }
                total += t0.elapsed();
                left -= c;
            }
            total
        })
    });
    g.bench_function("map256x4K+unmap", |b| {
        let mut d = x86();
        b.iter(|| {
            d.map(black_box(iova), black_box(paddr), len, Prot::RW)
                .unwrap();
            black_box(d.unmap(black_box(iova), len));
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = leaves
}
criterion_main!(benches);
