//! Record mode's trace writer: what a program asked the real kernel through /dev/vfio and what
//! the kernel answered, as a trace (the language of crates/trace/README.md) whose expectations
//! are the kernel's answers, so that it replays, compares or plans anywhere.
//!
//! Invariants owned here: every statement written is one the language parses, with the
//! kernel's result as its expectation (`ok`, or the errno by name; `size=` only after a
//! successful unmap; `locked=±N` when the change of `VmLck` was read around the call); a
//! request the language cannot express is written as a comment, never as a statement; the
//! memory a map uses is declared first as an `mmap` region taken from `/proc/self/maps` (its
//! backing and permissions, with the maps line as a comment), and `vaddr=` names it.

/// One line of `/proc/self/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapsLine {
    /// First address.
    pub start: u64,
    /// End (exclusive).
    pub end: u64,
    /// `rwxp`-style permissions.
    pub perms: String,
    /// The path or pseudo-path (`[heap]`, `/anon_hugepage (deleted)`), maybe empty.
    pub path: String,
}

/// Parses `/proc/self/maps` text.
pub fn parse_maps(text: &str) -> Vec<MapsLine> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (range, perms) = (w.next()?, w.next()?);
            let (s, e) = range.split_once('-')?;
            let path = w.nth(3).map(str::to_string).unwrap_or_default();
            Some(MapsLine {
                start: u64::from_str_radix(s, 16).ok()?,
                end: u64::from_str_radix(e, 16).ok()?,
                perms: perms.to_string(),
                path,
            })
        })
        .collect()
}

/// The trace being written.
#[derive(Debug, Default)]
pub struct Recorder {
    lines: Vec<String>,
    /// Declared regions: (start, end, name).
    regions: Vec<(u64, u64, String)>,
    /// Whether `container` was written (statements before it are comments).
    started: bool,
}

/// A result as an expectation word: `ok`, an errno name, or `None` for an errno the language
/// has no name for.
fn result_word(result: Result<i64, i32>) -> Option<String> {
    match result {
        Ok(_) => Some("ok".to_string()),
        Err(code) => {
            let name = iommu::Errno::from_code(code)?.name();
            type1_trace::ERRNOS.contains(&name.as_str()).then_some(name)
        }
    }
}

fn locked_item(delta: Option<i64>) -> String {
    match delta {
        Some(d) if d >= 0 => format!(" locked=+{d}"),
        Some(d) => format!(" locked={d}"),
        None => String::new(),
    }
}

fn hex(v: u64) -> String {
    format!("{v:#x}")
}

impl Recorder {
    /// An empty trace with its header.
    pub fn new() -> Self {
        let mut r = Recorder::default();
        r.lines.push("# Recorded by libtype1_preload.so (TYPE1_RECORD): the kernel's answers are the expectations.".into());
        r
    }

    /// The trace text.
    pub fn text(&self) -> String {
        let mut s = self.lines.join("\n");
        s.push('\n');
        s
    }

    /// A comment line.
    pub fn comment(&mut self, text: &str) {
        for l in text.lines() {
            self.lines.push(format!("# {l}"));
        }
    }

    fn stmt(&mut self, stmt: String, result: Result<i64, i32>, extra: &str) {
        match result_word(result) {
            Some(w) => self.lines.push(format!("{stmt:<60} => {w}{extra}")),
            None => {
                let code = result.err().unwrap_or(0);
                self.lines.push(format!(
                    "# {stmt}   (the kernel answered errno {code}, which the language cannot name)"
                ));
            }
        }
    }

    /// VFIO_SET_IOMMU with `ty` on a container holding `groups`: the `container` and one
    /// `domain` per group.
    pub fn set_iommu(&mut self, ty: u64, groups: &[String], result: Result<i64, i32>) {
        let word = match ty {
            1 => "type1",
            3 | 6 => "type1v2",
            _ => {
                self.comment(&format!(
                    "VFIO_SET_IOMMU({ty}) -> {result:?}: not a type1 backend"
                ));
                return;
            }
        };
        if result.is_err() || self.started {
            self.comment(&format!("VFIO_SET_IOMMU({word}) -> {result:?}"));
            return;
        }
        self.started = true;
        self.lines.push(format!("container {word}"));
        self.comment(
            "the IOMMU's format and reserved regions are the real device's; x86_64 assumed",
        );
        for g in groups {
            self.lines.push(format!("domain g{g}"));
        }
    }

    /// The region holding `[vaddr, vaddr + size)` (declared on first use), and the offset of
    /// `vaddr` in it; `None` when no mapping of the process holds `vaddr`.
    fn region(&mut self, maps: &[MapsLine], vaddr: u64, size: u64) -> Option<(String, u64)> {
        if let Some((s, _, n)) = self
            .regions
            .iter()
            .find(|(s, e, _)| *s <= vaddr && vaddr < *e)
        {
            return Some((n.clone(), vaddr - s));
        }
        let i = maps
            .iter()
            .position(|m| m.start <= vaddr && vaddr < m.end)?;
        let first = &maps[i];
        let want_end = vaddr.saturating_add(size);
        let mut end = first.end;
        // Adjacent mappings with the same permissions and backing, as far as the request goes.
        for m in &maps[i + 1..] {
            if end >= want_end || m.start != end || m.perms != first.perms || m.path != first.path {
                break;
            }
            end = m.end;
        }
        let hugetlb = first.path.contains("anon_hugepage") || first.path.contains("hugetlbfs");
        let name = format!("r{}", self.regions.len());
        let mut spec = format!("mmap {name} size={}", hex(end - first.start));
        if hugetlb {
            spec.push_str(" backing=hugetlb-2m");
        }
        if !first.perms.starts_with("rw") {
            spec.push_str(" prot=r");
        }
        self.lines.push(format!(
            "{spec}   # {:x}-{:x} {} {}",
            first.start, end, first.perms, first.path
        ));
        self.regions.push((first.start, end, name.clone()));
        Some((name, vaddr - first.start))
    }

    /// VFIO_IOMMU_MAP_DMA of the 32 bytes `(argsz, flags, vaddr, iova, size)`.
    pub fn map(
        &mut self,
        req: (u32, u32, u64, u64, u64),
        maps: &[MapsLine],
        result: Result<i64, i32>,
        locked: Option<i64>,
    ) {
        if !self.started {
            return self.comment(&format!(
                "VFIO_IOMMU_MAP_DMA {req:?} -> {result:?} before SET_IOMMU"
            ));
        }
        let (argsz, flags, vaddr, iova, size) = req;
        let v = match self.region(maps, vaddr, size) {
            Some((name, 0)) => name,
            Some((name, off)) => format!("{name}+{}", hex(off)),
            None => hex(vaddr),
        };
        let mut s = format!("map vaddr={v} iova={} size={}", hex(iova), hex(size));
        if flags != 3 {
            s.push_str(&format!(
                " flags={}",
                if flags == 0 {
                    "none".into()
                } else {
                    hex(u64::from(flags))
                }
            ));
        }
        if argsz != 32 {
            s.push_str(&format!(" argsz={argsz}"));
        }
        self.stmt(s, result, &locked_item(locked));
    }

    /// VFIO_IOMMU_UNMAP_DMA of `(argsz, flags, iova, size)`; `out_size` the size written back.
    pub fn unmap(
        &mut self,
        req: (u32, u32, u64, u64),
        out_size: u64,
        result: Result<i64, i32>,
        locked: Option<i64>,
    ) {
        if !self.started {
            return self.comment(&format!(
                "VFIO_IOMMU_UNMAP_DMA {req:?} -> {result:?} before SET_IOMMU"
            ));
        }
        let (argsz, flags, iova, size) = req;
        if flags & 1 != 0 {
            // The bitmap's buffer and contents: not something the language carries.
            return self.comment(&format!(
                "VFIO_IOMMU_UNMAP_DMA with GET_DIRTY_BITMAP iova={} size={} -> {result:?}",
                hex(iova),
                hex(size)
            ));
        }
        let s = if flags == 2 && iova == 0 && size == 0 && argsz == 24 {
            "unmap all".to_string()
        } else {
            let mut s = format!("unmap iova={} size={}", hex(iova), hex(size));
            if flags != 0 {
                let mut f = Vec::new();
                if flags & 2 != 0 {
                    f.push("all".to_string());
                }
                if flags & 4 != 0 {
                    f.push("vaddr".to_string());
                }
                if flags & !7 != 0 {
                    f.push(hex(u64::from(flags & !7)));
                }
                s.push_str(&format!(" flags={}", f.join(",")));
            }
            if argsz != 24 {
                s.push_str(&format!(" argsz={argsz}"));
            }
            s
        };
        let mut extra = String::new();
        if result.is_ok() {
            extra.push_str(&format!(" size={}", hex(out_size)));
        }
        extra.push_str(&locked_item(locked));
        self.stmt(s, result, &extra);
    }

    /// VFIO_IOMMU_GET_INFO with `argsz`.
    pub fn info(&mut self, argsz: u32, result: Result<i64, i32>) {
        if !self.started {
            return self.comment(&format!(
                "VFIO_IOMMU_GET_INFO argsz={argsz} -> {result:?} before SET_IOMMU"
            ));
        }
        self.stmt(format!("info argsz={argsz}"), result, "");
    }

    /// VFIO_IOMMU_DIRTY_PAGES with `flags`; `get` is `(iova, size, pgsize)` for GET_BITMAP.
    pub fn dirty(
        &mut self,
        argsz: u32,
        flags: u32,
        get: Option<(u64, u64, u64)>,
        result: Result<i64, i32>,
    ) {
        if !self.started {
            return self.comment(&format!(
                "VFIO_IOMMU_DIRTY_PAGES flags={flags} -> {result:?} before SET_IOMMU"
            ));
        }
        let s = match (flags, get, argsz) {
            (1, _, 8) => "dirty start".to_string(),
            (2, _, 8) => "dirty stop".to_string(),
            (4, Some((iova, size, pgsize)), 48) => {
                format!(
                    "dirty get iova={} size={} pgsize={}",
                    hex(iova),
                    hex(size),
                    hex(pgsize)
                )
            }
            _ => {
                return self.comment(&format!(
                    "VFIO_IOMMU_DIRTY_PAGES argsz={argsz} flags={flags:#x} -> {result:?}"
                ))
            }
        };
        self.stmt(s, result, "");
    }
}
