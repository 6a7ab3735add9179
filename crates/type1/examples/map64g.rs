//! Map and unmap 64 GiB of contiguous 4K memory once (for profiling the growth curve).
use type1::mm::{Backing, MmapSpec};
use type1::{Config, Container, MapDma, UnmapDma};

fn main() {
    let size: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(64 << 30);
    let cfg = Config {
        check_unpin_order: false,
        ..Config::default()
    };
    let mut c = Container::sim_x86(cfg);
    let v = c
        .mm_mut()
        .mmap(&MmapSpec::new("m", size, Backing::Page4k))
        .unwrap();
    let t = std::time::Instant::now();
    c.map_dma(&MapDma::rw(v, 1 << 40, size)).unwrap();
    eprintln!(
        "map {:.2} ns/page",
        t.elapsed().as_nanos() as f64 / (size / 4096) as f64
    );
    c.unmap_dma(&UnmapDma::range(1 << 40, size)).unwrap();
}
