//! Model-based property test (issue: the type1 engine, acceptance 2): random sequences of mmap,
//! munmap, map, unmap, unmap-all, attach and detach, on type1 and type1v2, with up to two
//! domains and small memlock limits, run against the engine and against a reference model that
//! knows only the observable rules (spec §1.3, §1.4, §3.6, §5): the errno, the size an unmap
//! returns, locked pages and entries left. The engine's invariants are checked after every step.

use std::collections::BTreeMap;

use iommu::{Domain, DomainConfig, Format};
use proptest::prelude::*;
use type1::mm::sim::SimMm;
use type1::mm::{Backing, Layout, MmapSpec};
use type1::uapi::{MAP_FLAG_READ, MAP_FLAG_WRITE};
use type1::{Config, Container, Errno, MapDma, UnmapDma};

const PAGE: u64 = 4096;
const SLOTS: usize = 4;
const IOVA_BASE: u64 = 0x10_0000;
/// Domain 1 reserves iova pages 40..44.
const RESV: (u64, u64) = (IOVA_BASE + 40 * PAGE, IOVA_BASE + 44 * PAGE - 1);

fn slot_base(slot: usize) -> u64 {
    0x1000_0000 * (slot as u64 + 1)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ram,
    Scattered,
    Pfnmap,
    ReadOnly,
}

#[derive(Clone, Debug)]
enum Op {
    Mmap {
        slot: usize,
        kind: Kind,
    },
    Munmap {
        slot: usize,
        off: u64,
        n: u64,
    },
    Map {
        slot: usize,
        off: u64,
        npages: u64,
        iova: u64,
        write: bool,
    },
    Unmap {
        iova: u64,
        npages: u64,
    },
    UnmapAll,
    Attach {
        d: usize,
    },
    Detach {
        d: usize,
    },
}

const SLOT_PAGES: u64 = 24;

fn op() -> impl Strategy<Value = Op> {
    let kind = prop_oneof![
        Just(Kind::Ram),
        Just(Kind::Scattered),
        Just(Kind::Pfnmap),
        Just(Kind::ReadOnly)
    ];
    prop_oneof![
        2 => (0..SLOTS, kind).prop_map(|(slot, kind)| Op::Mmap { slot, kind }),
        1 => (0..SLOTS, 0..SLOT_PAGES, 1..SLOT_PAGES).prop_map(|(slot, off, n)| Op::Munmap { slot, off, n: n.min(SLOT_PAGES - off) }),
        8 => (0..SLOTS, 0..SLOT_PAGES, 0..12u64, 0..64u64, any::<bool>())
            .prop_map(|(slot, off, npages, iova, write)| Op::Map { slot, off, npages, iova, write }),
        3 => (0..64u64, 0..16u64).prop_map(|(iova, npages)| Op::Unmap { iova, npages }),
        1 => Just(Op::UnmapAll),
        2 => (0..2usize).prop_map(|d| Op::Attach { d }),
        1 => (0..2usize).prop_map(|d| Op::Detach { d }),
    ]
}

/// The reference model.
#[derive(Clone, Debug)]
struct RefDma {
    size: u64,
    vaddr: u64,
    write: bool,
    charged: u64,
}

#[derive(Clone, Debug)]
struct Model {
    v2: bool,
    limit: u64,
    cap: bool,
    entry_limit: u32,
    slots: [Option<(Kind, Vec<bool>)>; SLOTS],
    dmas: BTreeMap<u64, RefDma>,
    attached: [bool; 2],
    locked: u64,
    avail: u32,
}

enum Page {
    Hole,
    ReadOnly,
    Reserved,
    Ram,
}

impl Model {
    fn page(&self, vaddr: u64) -> Page {
        for (s, slot) in self.slots.iter().enumerate() {
            let base = slot_base(s);
            if vaddr >= base && vaddr < base + SLOT_PAGES * PAGE {
                let i = ((vaddr - base) / PAGE) as usize;
                return match slot {
                    Some((k, mapped)) if mapped[i] => match k {
                        Kind::Pfnmap => Page::Reserved,
                        Kind::ReadOnly => Page::ReadOnly,
                        _ => Page::Ram,
                    },
                    _ => Page::Hole,
                };
            }
        }
        Page::Hole
    }

    /// Pin-and-charge walk of `npages` from `vaddr`, charging on top of `locked`.
    fn pin_walk(&self, vaddr: u64, npages: u64, write: bool, locked: u64) -> Result<u64, Errno> {
        let mut charge = 0;
        for i in 0..npages {
            match self.page(vaddr + i * PAGE) {
                Page::Hole => return Err(Errno::EFAULT),
                Page::ReadOnly if write => return Err(Errno::EFAULT),
                Page::Reserved => {}
                Page::ReadOnly | Page::Ram => {
                    charge += 1;
                    if !self.cap && locked + charge > self.limit {
                        return Err(Errno::ENOMEM);
                    }
                }
            }
        }
        Ok(charge)
    }

    fn any_domain(&self) -> bool {
        self.attached.iter().any(|&a| a)
    }

    fn map(&mut self, vaddr: u64, iova: u64, npages: u64, write: bool) -> Result<(), Errno> {
        if npages == 0 {
            return Err(Errno::EINVAL);
        }
        let size = npages * PAGE;
        let last = iova + size - 1;
        if self
            .dmas
            .iter()
            .any(|(&i, d)| i <= last && i + d.size > iova)
        {
            return Err(Errno::EEXIST);
        }
        if self.avail == 0 {
            return Err(Errno::ENOSPC);
        }
        if self.attached[1] && iova <= RESV.1 && last >= RESV.0 {
            return Err(Errno::EINVAL);
        }
        let charged = if self.any_domain() {
            self.pin_walk(vaddr, npages, write, self.locked)?
        } else {
            0
        };
        self.locked += charged;
        self.avail -= 1;
        self.dmas.insert(
            iova,
            RefDma {
                size,
                vaddr,
                write,
                charged,
            },
        );
        Ok(())
    }

    fn remove(&mut self, iova: u64) -> u64 {
        let d = self.dmas.remove(&iova).unwrap();
        self.locked -= d.charged;
        self.avail += 1;
        d.size
    }

    fn unmap(&mut self, iova: u64, npages: u64) -> Result<u64, Errno> {
        if npages == 0 {
            return Err(Errno::EINVAL);
        }
        let last = iova + npages * PAGE - 1;
        let containing = |at: u64| {
            self.dmas
                .iter()
                .find(|(&i, d)| i <= at && at < i + d.size)
                .map(|(&i, d)| (i, d.size))
        };
        if self.v2 {
            if let Some((i, _)) = containing(iova) {
                if i != iova {
                    return Err(Errno::EINVAL);
                }
            }
            if let Some((i, s)) = containing(last) {
                if i + s - 1 != last {
                    return Err(Errno::EINVAL);
                }
            }
        }
        let hit: Vec<u64> = self
            .dmas
            .iter()
            .filter(|(&i, d)| i <= last && i + d.size > iova)
            .map(|(&i, _)| i)
            .collect();
        let mut size = 0;
        for i in hit {
            if !self.v2 && iova > i {
                break;
            }
            size += self.remove(i);
        }
        Ok(size)
    }

    fn unmap_all(&mut self) -> u64 {
        let keys: Vec<u64> = self.dmas.keys().copied().collect();
        keys.into_iter().map(|k| self.remove(k)).sum()
    }

    fn attach(&mut self, d: usize) -> Result<(), Errno> {
        if self.attached[d] {
            return Err(Errno::EINVAL);
        }
        if d == 1
            && self
                .dmas
                .iter()
                .any(|(&i, dm)| i <= RESV.1 && i + dm.size > RESV.0)
        {
            return Err(Errno::EINVAL);
        }
        if !self.any_domain() {
            // Replay into the first domain pins and charges every mapping, in IOVA order.
            let mut locked = self.locked;
            let mut charges = Vec::new();
            for (&i, dm) in &self.dmas {
                let c = self.pin_walk(dm.vaddr, dm.size / PAGE, dm.write, locked)?;
                locked += c;
                charges.push((i, c));
            }
            for (i, c) in charges {
                self.dmas.get_mut(&i).unwrap().charged = c;
            }
            self.locked = locked;
        }
        self.attached[d] = true;
        Ok(())
    }

    fn detach(&mut self, d: usize) -> Result<(), Errno> {
        if !self.attached[d] {
            return Err(Errno::ENODEV);
        }
        self.attached[d] = false;
        if !self.any_domain() {
            self.unmap_all();
        }
        Ok(())
    }
}

fn domain(d: usize) -> (Domain, Vec<(u64, u64)>) {
    let k4 = 1u64 << 12;
    let m2 = 1u64 << 21;
    if d == 0 {
        let dom = Domain::new(DomainConfig {
            format: Format::Mock,
            pgsize_bitmap: Some(k4 | m2 | (1 << 30)),
            aperture: Some((0, (1 << 48) - 1)),
        })
        .unwrap();
        (dom, vec![])
    } else {
        let dom = Domain::new(DomainConfig {
            format: Format::X86_64 { levels: 4 },
            pgsize_bitmap: Some(k4 | m2),
            aperture: None,
        })
        .unwrap();
        (dom, vec![RESV])
    }
}

fn run(
    v2: bool,
    limit: Option<u64>,
    cap: bool,
    entry_limit: u32,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let cfg = Config {
        v2,
        dma_entry_limit: entry_limit,
        memlock: limit.map(|p| p * PAGE),
        cap_ipc_lock: cap,
        ..Config::default()
    };
    let mut c = Container::new(cfg, SimMm::new());
    let mut m = Model {
        v2,
        limit: limit.unwrap_or(u64::MAX),
        cap,
        entry_limit,
        slots: Default::default(),
        dmas: BTreeMap::new(),
        attached: [false; 2],
        locked: 0,
        avail: entry_limit,
    };
    for (step, op) in ops.into_iter().enumerate() {
        let (got, want): (Result<u64, Errno>, Result<u64, Errno>) = match op.clone() {
            Op::Mmap { slot, kind } => {
                if m.slots[slot].is_some() {
                    continue;
                }
                let backing = if kind == Kind::Pfnmap {
                    Backing::Pfnmap
                } else {
                    Backing::Page4k
                };
                let mut spec = MmapSpec::new(&format!("s{slot}"), SLOT_PAGES * PAGE, backing);
                spec.at = Some(slot_base(slot));
                spec.writable = kind != Kind::ReadOnly;
                if kind == Kind::Scattered {
                    spec.layout = Layout::Scattered;
                    spec.seed = step as u64;
                }
                c.mm_mut().mmap(&spec).expect("slot is free");
                m.slots[slot] = Some((kind, vec![true; SLOT_PAGES as usize]));
                continue;
            }
            Op::Munmap { slot, off, n } => {
                let Some((_, mapped)) = m.slots[slot].as_mut() else {
                    continue;
                };
                c.mm_mut()
                    .munmap(&format!("s{slot}"), Some((off * PAGE, n * PAGE)))
                    .expect("inside the region");
                for p in &mut mapped[off as usize..(off + n) as usize] {
                    *p = false;
                }
                if mapped.iter().all(|p| !p) {
                    m.slots[slot] = None;
                }
                continue;
            }
            Op::Map {
                slot,
                off,
                npages,
                iova,
                write,
            } => {
                let vaddr = slot_base(slot) + off * PAGE;
                let iova = IOVA_BASE + iova * PAGE;
                let flags = MAP_FLAG_READ | if write { MAP_FLAG_WRITE } else { 0 };
                let got = c
                    .map_dma(&MapDma {
                        argsz: 32,
                        flags,
                        vaddr,
                        iova,
                        size: npages * PAGE,
                    })
                    .map(|_| 0)
                    .map_err(|e| e.errno());
                (got, m.map(vaddr, iova, npages, write).map(|_| 0))
            }
            Op::Unmap { iova, npages } => {
                let iova = IOVA_BASE + iova * PAGE;
                let got = c
                    .unmap_dma(&UnmapDma::range(iova, npages * PAGE))
                    .map(|r| r.size)
                    .map_err(|e| e.errno());
                (got, m.unmap(iova, npages))
            }
            Op::UnmapAll => (
                c.unmap_dma(&UnmapDma::all())
                    .map(|r| r.size)
                    .map_err(|e| e.errno()),
                Ok(m.unmap_all()),
            ),
            Op::Attach { d } => {
                let (dom, resv) = domain(d);
                let got = c
                    .attach(&format!("d{d}"), dom, resv)
                    .map(|_| 0)
                    .map_err(|e| e.errno());
                (got, m.attach(d).map(|_| 0))
            }
            Op::Detach { d } => (
                c.detach(&format!("d{d}")).map(|_| 0).map_err(|e| e.errno()),
                m.detach(d).map(|_| 0),
            ),
        };
        prop_assert_eq!(got, want, "step {}: {:?}", step, op);
        prop_assert_eq!(
            c.locked_pages(),
            m.locked,
            "locked after step {}: {:?}",
            step,
            op
        );
        prop_assert_eq!(
            c.dma_avail(),
            m.avail,
            "avail after step {}: {:?}",
            step,
            op
        );
        prop_assert_eq!(
            c.dmas().count(),
            m.dmas.len(),
            "entries after step {}",
            step
        );
        if let Err(v) = c.check_invariants() {
            return Err(TestCaseError::fail(format!(
                "step {step} {op:?}: {}",
                v.join("; ")
            )));
        }
    }
    c.unmap_dma(&UnmapDma::all()).unwrap();
    prop_assert_eq!(c.locked_pages(), 0);
    use type1::mm::PageSource;
    prop_assert_eq!(c.mm().pinned_pages(), 0, "no leaked pins");
    let _ = m.entry_limit;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_reference_model(
        v2 in any::<bool>(),
        limit in prop_oneof![Just(None), Just(Some(0u64)), Just(Some(8u64)), Just(Some(12u64)), Just(Some(16u64)), Just(Some(48u64))],
        cap in prop::bool::weighted(0.2),
        entry_limit in prop_oneof![Just(4u32), Just(8u32), Just(65535u32)],
        kinds in prop::collection::vec(prop_oneof![Just(Kind::Ram), Just(Kind::Scattered), Just(Kind::Pfnmap), Just(Kind::ReadOnly)], SLOTS),
        attach_first in prop::bool::weighted(0.75),
        ops in prop::collection::vec(op(), 1..48),
    ) {
        // Start with every slot mapped and, mostly, a domain attached, so that maps pin.
        let mut all: Vec<Op> = kinds.into_iter().enumerate().map(|(slot, kind)| Op::Mmap { slot, kind }).collect();
        if attach_first {
            all.push(Op::Attach { d: 0 });
        }
        all.extend(ops);
        run(v2, limit, cap, entry_limit, all)?;
    }
}
