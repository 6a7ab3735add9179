//! Reading an emulated Intel VT-d IOMMU's second-level page tables from outside the guest
//! (legacy translation mode, as QEMU's `intel-iommu` without scalable mode).
//!
//! Root-table address register (RTADDR) at MMIO 0xfed90020 → root entry of the bus → context
//! entry of the devfn (present, translation type, address width, domain id, SLPTPTR) → the
//! second-level tables, 512 entries each: an entry is present when R or W (bits 0, 1) is set; at
//! level 1, or with PS (bit 7) at levels 2 and 3, it is a leaf of 4K, 2M or 1G.

use std::collections::BTreeMap;

pub use iommu::Leaf;
use iommu::Prot;

/// MMIO address of DMAR_RTADDR_REG of QEMU's emulated VT-d unit.
pub const RTADDR_REG: u64 = 0xfed9_0020;
/// Address bits of root, context and page-table entries.
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const PS: u64 = 1 << 7;

/// Guest-physical memory, read in u64 words.
pub trait PhysRead {
    /// `n` little-endian u64 words at guest-physical `addr`.
    fn read_qwords(&mut self, addr: u64, n: usize) -> Result<Vec<u64>, String>;
}

/// What a walk found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Walk {
    /// The root table's address, from RTADDR.
    pub rtaddr: u64,
    /// Whether the device's context entry is present.
    pub context_present: bool,
    /// Translation type (0: second-level only, legacy mode).
    pub tt: u8,
    /// Address width field (1 = 39 bits, 3 levels; 2 = 48 bits, 4 levels).
    pub aw: u8,
    /// Domain id.
    pub did: u16,
    /// The second-level page-table pointer (the root of the tables walked).
    pub slptptr: u64,
    /// Page-table pages read.
    pub tables: usize,
    /// Every leaf, by IOVA.
    pub leaves: Vec<Leaf>,
}

/// A run of equal, IOVA-contiguous leaves (as the oracle's `W ... PT` lines).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// The first leaf's IOVA.
    pub iova: u64,
    /// The leaves' page size.
    pub pgsize: u64,
    /// How many leaves.
    pub count: u64,
    /// The leaves' permissions (R and W bits).
    pub prot: Prot,
}

impl Walk {
    /// Leaves counted by page size.
    pub fn leaves_by_size(&self) -> BTreeMap<u64, u64> {
        let mut m = BTreeMap::new();
        for l in &self.leaves {
            *m.entry(l.size).or_insert(0) += 1;
        }
        m
    }

    /// Leaves coalesced into runs.
    pub fn runs(&self) -> Vec<Run> {
        let mut out: Vec<Run> = Vec::new();
        for l in &self.leaves {
            if let Some(r) = out.last_mut() {
                if r.pgsize == l.size && r.prot == l.prot && r.iova + r.pgsize * r.count == l.iova {
                    r.count += 1;
                    continue;
                }
            }
            out.push(Run {
                iova: l.iova,
                pgsize: l.size,
                count: 1,
                prot: l.prot,
            });
        }
        out
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let len = self.pgsize * self.count;
        let size = match self.pgsize {
            0x1000 => "4K".to_string(),
            0x20_0000 => "2M".to_string(),
            0x4000_0000 => "1G".to_string(),
            s => format!("{s:#x}"),
        };
        write!(
            f,
            "PT iova={:#011x}-{:#011x} len={len:#011x} pgsize={size} x{} perm={}{}",
            self.iova,
            self.iova + len - 1,
            self.count,
            if self.prot.contains(Prot::READ) {
                'R'
            } else {
                '-'
            },
            if self.prot.contains(Prot::WRITE) {
                'W'
            } else {
                '-'
            },
        )
    }
}

/// Walks the tables of device `bus:devfn`.
pub fn walk(mem: &mut dyn PhysRead, bus: u8, devfn: u8) -> Result<Walk, String> {
    let mut w = Walk {
        rtaddr: mem.read_qwords(RTADDR_REG, 1)?[0],
        ..Walk::default()
    };
    let ttm = (w.rtaddr >> 10) & 3;
    if ttm != 0 {
        return Err(format!(
            "root table in translation mode {ttm} (scalable mode): only legacy mode is read"
        ));
    }
    let root_table = w.rtaddr & ADDR_MASK;
    if root_table == 0 {
        return Err("no root table: is the IOMMU enabled (intel_iommu=on)?".into());
    }
    let root = mem.read_qwords(root_table + bus as u64 * 16, 2)?;
    if root[0] & 1 == 0 {
        return Ok(w);
    }
    let ctx = mem.read_qwords((root[0] & ADDR_MASK) + devfn as u64 * 16, 2)?;
    w.context_present = ctx[0] & 1 != 0;
    w.tt = ((ctx[0] >> 2) & 3) as u8;
    w.aw = (ctx[1] & 7) as u8;
    w.did = ((ctx[1] >> 8) & 0xffff) as u16;
    w.slptptr = ctx[0] & ADDR_MASK;
    if !w.context_present {
        return Ok(w);
    }
    if w.tt != 0 {
        return Err(format!(
            "context entry with translation type {} (pass-through?)",
            w.tt
        ));
    }
    let levels = w.aw as u32 + 2;
    walk_table(mem, w.slptptr, levels, 0, &mut w)?;
    Ok(w)
}

fn walk_table(
    mem: &mut dyn PhysRead,
    table: u64,
    level: u32,
    base: u64,
    w: &mut Walk,
) -> Result<(), String> {
    let entries = mem.read_qwords(table, 512)?;
    w.tables += 1;
    let span = 0x1000u64 << (9 * (level - 1));
    for (i, &e) in entries.iter().enumerate() {
        if e & 3 == 0 {
            continue;
        }
        let iova = base + i as u64 * span;
        if level == 1 || (level <= 3 && e & PS != 0) {
            // R is bit 0 and W bit 1, as `Prot::READ` and `Prot::WRITE`.
            w.leaves.push(Leaf {
                iova,
                paddr: e & ADDR_MASK,
                size: span,
                prot: Prot((e & 3) as u8),
            });
        } else {
            walk_table(mem, e & ADDR_MASK, level - 1, iova, w)?;
        }
    }
    Ok(())
}

/// Parses the output of the QEMU monitor's `xp /Ngx ADDR`: lines `ADDR: 0xV 0xV`. Returns
/// (address, value) for every word, in order. Anything else (the echoed command, prompts,
/// terminal escapes) is skipped.
pub fn parse_xp(text: &str) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(colon) = line.find(": ") else {
            continue;
        };
        let head = &line[..colon];
        // The address is the trailing run of hex digits before the colon.
        let start = head
            .rfind(|c: char| !c.is_ascii_hexdigit())
            .map_or(0, |i| i + 1);
        let Ok(addr) = u64::from_str_radix(&head[start..], 16) else {
            continue;
        };
        if head.len() - start < 8 {
            continue;
        }
        let mut a = addr;
        for tok in line[colon + 2..].split_whitespace() {
            let Some(hex) = tok.strip_prefix("0x") else {
                break;
            };
            let Ok(v) = u64::from_str_radix(hex, 16) else {
                break;
            };
            out.push((a, v));
            a += 8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory as a sparse map of words.
    struct Fake(BTreeMap<u64, u64>);

    impl PhysRead for Fake {
        fn read_qwords(&mut self, addr: u64, n: usize) -> Result<Vec<u64>, String> {
            Ok((0..n as u64)
                .map(|i| *self.0.get(&(addr + i * 8)).unwrap_or(&0))
                .collect())
        }
    }

    #[test]
    fn walks_three_levels_with_2m_and_1g_leaves() {
        let mut m = BTreeMap::new();
        m.insert(RTADDR_REG, 0x7000_0000); // root table, legacy mode
        m.insert(0x7000_0000, 0x7000_1001); // bus 0 -> context table
        let ctx = 0x7000_1000 + 8 * 16;
        m.insert(ctx, 0x7000_2001); // present, tt 0, slptptr
        m.insert(ctx + 8, (3 << 8) | 1); // did 3, aw 1 (3 levels)
                                         // level 3: entry 0 -> level-2 table, entry 1 -> 1G leaf (read-write)
        m.insert(0x7000_2000, 0x7000_3003);
        m.insert(0x7000_2008, 0x1_0000_0083);
        // level 2: entry 1 -> 2M leaf, entry 3 -> level-1 table
        m.insert(0x7000_3008, 0x4020_0083);
        m.insert(0x7000_3018, 0x7000_4003);
        // level 1: entries 1..=2 read-write, 3 read-only
        m.insert(0x7000_4008, 0x5000_1003);
        m.insert(0x7000_4010, 0x5000_2003);
        m.insert(0x7000_4018, 0x5000_3001);
        let w = walk(&mut Fake(m), 0, 8).unwrap();
        assert!(w.context_present);
        assert_eq!((w.aw, w.did, w.tables), (1, 3, 3));
        let by = w.leaves_by_size();
        assert_eq!(by[&0x1000], 3);
        assert_eq!(by[&0x20_0000], 1);
        assert_eq!(by[&0x4000_0000], 1);
        let runs = w.runs();
        assert_eq!(runs.len(), 4);
        assert_eq!(runs[0].iova, 0x20_0000);
        assert_eq!(
            runs[1].to_string(),
            "PT iova=0x000601000-0x000602fff len=0x000002000 pgsize=4K x2 perm=RW"
        );
        assert!(!runs[2].prot.contains(Prot::WRITE));
        assert_eq!(runs[3].iova, 0x4000_0000);
    }

    /// A real dump: the tables after phase P's maps, as the 7.2 kernel built them (the oracle's
    /// `W P.09` lines).
    #[test]
    fn walks_a_captured_monitor_dump() {
        let dump = include_str!("../tests/data/vtd-pagesizes-7.2.txt");
        let mem: BTreeMap<u64, u64> = parse_xp(dump).into_iter().collect();
        let w = walk(&mut Fake(mem), 0, 8).unwrap();
        assert!(w.context_present);
        assert_eq!((w.tt, w.aw, w.did, w.tables), (0, 1, 3, 7));
        assert_eq!(w.leaves.len(), 1542);
        let by = w.leaves_by_size();
        assert_eq!(
            by,
            BTreeMap::from([(0x1000, 1537), (0x20_0000, 4), (0x4000_0000, 1)])
        );
        let runs: Vec<String> = w.runs().iter().map(|r| r.to_string()).collect();
        assert_eq!(
            runs,
            [
                "PT iova=0x000200000-0x0003fffff len=0x000200000 pgsize=2M x1 perm=RW",
                "PT iova=0x000601000-0x000800fff len=0x000200000 pgsize=4K x512 perm=RW",
                "PT iova=0x001000000-0x0013fffff len=0x000400000 pgsize=2M x2 perm=RW",
                "PT iova=0x001801000-0x0019fffff len=0x0001ff000 pgsize=4K x511 perm=RW",
                "PT iova=0x002000000-0x0021fffff len=0x000200000 pgsize=2M x1 perm=RW",
                "PT iova=0x002400000-0x0025fffff len=0x000200000 pgsize=4K x512 perm=RW",
                "PT iova=0x002800000-0x002800fff len=0x000001000 pgsize=4K x1 perm=RW",
                "PT iova=0x002801000-0x002801fff len=0x000001000 pgsize=4K x1 perm=R-",
                "PT iova=0x040000000-0x07fffffff len=0x040000000 pgsize=1G x1 perm=RW",
            ]
        );
    }

    #[test]
    fn absent_context_has_no_leaves() {
        let mut m = BTreeMap::new();
        m.insert(RTADDR_REG, 0x7000_0000);
        let w = walk(&mut Fake(m), 0, 8).unwrap();
        assert!(!w.context_present && w.leaves.is_empty());
    }

    #[test]
    fn parses_monitor_output() {
        let text = "xp /4gx 0x7000\r\n\
                    0000000000007000: 0x0000000012345003 0x0000000000000000\r\n\
                    0000000000007010: 0x00000000000000ff 0x0000000000000001\r\n\
                    (qemu) ";
        let v = parse_xp(text);
        assert_eq!(
            v,
            vec![
                (0x7000, 0x12345003),
                (0x7008, 0),
                (0x7010, 0xff),
                (0x7018, 1)
            ]
        );
        // An escape sequence before the address does not hide it.
        let v = parse_xp("\x1b[K00000000fed90020: 0x000000007ffd8000\n");
        assert_eq!(v, vec![(0xfed90020, 0x7ffd8000)]);
    }
}
