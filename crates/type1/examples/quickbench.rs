//! A quick timing of map and unmap per 4 KiB page for each backing and strategy (sim memory,
//! x86_64 domain). The full benchmark is `type1 bench`.
use std::time::Instant;

use type1::mm::{Backing, MmapSpec};
use type1::{Config, Container, MapDma, Strategy, UnmapDma};

fn main() {
    let size: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1 << 30);
    for backing in [Backing::Page4k, Backing::Thp, Backing::Hugetlb1g] {
        for strategy in [Strategy::PerPage, Strategy::Contiguous, Strategy::Folio] {
            let cfg = Config {
                strategy,
                check_unpin_order: false,
                ..Config::default()
            };
            let mut c = Container::sim_x86(cfg);
            let v = c.mm_mut().mmap(&MmapSpec::new("m", size, backing)).unwrap();
            let t0 = Instant::now();
            c.map_dma(&MapDma::rw(v, 1 << 40, size)).unwrap();
            let t1 = Instant::now();
            c.unmap_dma(&UnmapDma::range(1 << 40, size)).unwrap();
            let t2 = Instant::now();
            let pages = (size / 4096) as f64;
            println!(
                "{:10} {:10} map {:8.2} ns/page  unmap {:8.2} ns/page",
                backing.name(),
                strategy.name(),
                (t1 - t0).as_nanos() as f64 / pages,
                (t2 - t1).as_nanos() as f64 / pages
            );
        }
    }
}
