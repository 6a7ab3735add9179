//! The parser's tests: every statement, argument, number form and error message.

use super::*;
use iommu::Errno;

/// Parses `line` as the statement after a `container` line.
fn stmt(line: &str) -> Stmt {
    let t = parse(&format!("container\n{line}")).unwrap_or_else(|e| panic!("{line}: {e}"));
    assert_eq!(t.stmts.len(), 2);
    t.stmts[1].clone()
}

fn kind(line: &str) -> StmtKind {
    stmt(line).kind
}

fn expect(line: &str) -> Expect {
    stmt(line).expect.expect("an expectation")
}

/// The error for `line` as the statement after a `container` line.
fn err(line: &str) -> ParseError {
    let e = parse(&format!("container\n{line}")).expect_err(line);
    assert_eq!(e.line, 2, "{e}");
    e
}

/// Asserts the column of the error and that its message contains `needle`.
fn err_at(line: &str, col: usize, needle: &str) {
    let e = err(line);
    assert_eq!(e.col, col, "{line}: {e}");
    assert!(e.msg.contains(needle), "{line}: {e} (wanted `{needle}`)");
}

const K: u64 = 1 << 10;
const M: u64 = 1 << 20;
const G: u64 = 1 << 30;

#[test]
fn contract_example() {
    let src = "\
container type1v2 memlock=4M
domain d0 format=x86_64
mmap ram size=8M backing=hugetlb-2m
map vaddr=ram iova=1G size=4M            => ok locked=+1024
map vaddr=ram+2M iova=1G+2M size=2M      => EEXIST
unmap iova=1G+4K size=4K                 => EINVAL
check                                    => leaves.d0.2M=2 leaves.d0.4K=0
map vaddr=ram+4M iova=2G size=4M         => ENOMEM locked=+0
unmap iova=1G size=4M                    => ok size=4M locked=-1024
";
    let t = parse(src).unwrap();
    let ram = |offset: i128| VaddrRef::Named {
        name: "ram".into(),
        offset,
    };
    let ok = |items| {
        Some(Expect {
            result: Some(ExpResult::Ok),
            items,
        })
    };
    let errno = |e: &str, items| {
        Some(Expect {
            result: Some(ExpResult::Errno(Errno::from_name(e).unwrap())),
            items,
        })
    };
    let want = vec![
        Stmt {
            line: 1,
            text: "container type1v2 memlock=4M".into(),
            kind: StmtKind::Container {
                v2: true,
                dma_entry_limit: None,
                memlock: Some(Memlock::Bytes(4 * M)),
                cap_ipc_lock: false,
                kernel: None,
            },
            expect: None,
        },
        Stmt {
            line: 2,
            text: "domain d0 format=x86_64".into(),
            kind: StmtKind::Domain {
                name: "d0".into(),
                format: Some("x86_64".into()),
                pgsizes: None,
                aperture: None,
                reserved: None,
            },
            expect: None,
        },
        Stmt {
            line: 3,
            text: "mmap ram size=8M backing=hugetlb-2m".into(),
            kind: StmtKind::Mmap {
                name: "ram".into(),
                size: 8 * M,
                backing: Backing::Hugetlb2m,
                layout: Layout::Contiguous,
                seed: 0,
                prot_write: true,
                at: None,
                phys: None,
            },
            expect: None,
        },
        Stmt {
            line: 4,
            text: "map vaddr=ram iova=1G size=4M            => ok locked=+1024".into(),
            kind: StmtKind::Map {
                vaddr: ram(0),
                iova: G,
                size: 4 * M,
                flags: 3,
                argsz: None,
            },
            expect: ok(vec![ExpItem::Locked(LockedExp::Delta(1024))]),
        },
        Stmt {
            line: 5,
            text: "map vaddr=ram+2M iova=1G+2M size=2M      => EEXIST".into(),
            kind: StmtKind::Map {
                vaddr: ram(2 * M as i128),
                iova: G + 2 * M,
                size: 2 * M,
                flags: 3,
                argsz: None,
            },
            expect: errno("EEXIST", vec![]),
        },
        Stmt {
            line: 6,
            text: "unmap iova=1G+4K size=4K                 => EINVAL".into(),
            kind: StmtKind::Unmap {
                iova: G + 4 * K,
                size: 4 * K,
                flags: 0,
                argsz: None,
            },
            expect: errno("EINVAL", vec![]),
        },
        Stmt {
            line: 7,
            text: "check                                    => leaves.d0.2M=2 leaves.d0.4K=0"
                .into(),
            kind: StmtKind::Check,
            expect: Some(Expect {
                result: None,
                items: vec![
                    ExpItem::Leaves {
                        domain: "d0".into(),
                        pgsize: 2 * M,
                        count: 2,
                    },
                    ExpItem::Leaves {
                        domain: "d0".into(),
                        pgsize: 4 * K,
                        count: 0,
                    },
                ],
            }),
        },
        Stmt {
            line: 8,
            text: "map vaddr=ram+4M iova=2G size=4M         => ENOMEM locked=+0".into(),
            kind: StmtKind::Map {
                vaddr: ram(4 * M as i128),
                iova: 2 * G,
                size: 4 * M,
                flags: 3,
                argsz: None,
            },
            expect: errno("ENOMEM", vec![ExpItem::Locked(LockedExp::Delta(0))]),
        },
        Stmt {
            line: 9,
            text: "unmap iova=1G size=4M                    => ok size=4M locked=-1024".into(),
            kind: StmtKind::Unmap {
                iova: G,
                size: 4 * M,
                flags: 0,
                argsz: None,
            },
            expect: ok(vec![
                ExpItem::Size(4 * M),
                ExpItem::Locked(LockedExp::Delta(-1024)),
            ]),
        },
    ];
    assert_eq!(t.stmts, want);
}

#[test]
fn comments_blank_lines_crlf_bom() {
    let src = "\u{feff}# a trace\r\n\r\n   \r\ncontainer type1 # v1\r\n\tcheck#x\r\n# end";
    let t = parse(src).unwrap();
    assert_eq!(t.stmts.len(), 2);
    assert_eq!(t.stmts[0].line, 4);
    assert_eq!(t.stmts[0].text, "container type1");
    assert_eq!(t.stmts[1].line, 5);
    assert_eq!(t.stmts[1].text, "check");
    assert_eq!(t.stmts[1].kind, StmtKind::Check);
    assert_eq!(parse("").unwrap(), Trace::default());
    assert_eq!(parse("# only\n\n").unwrap().stmts, vec![]);
}

#[test]
fn text_keeps_expectation_drops_comment() {
    let s = stmt("  info   => ok avail=3   # comment");
    assert_eq!(s.text, "info   => ok avail=3");
}

#[test]
fn container_forms() {
    let c = |s: &str| parse(s).unwrap().stmts[0].kind.clone();
    assert_eq!(
        c("container"),
        StmtKind::Container {
            v2: true,
            dma_entry_limit: None,
            memlock: None,
            cap_ipc_lock: false,
            kernel: None
        }
    );
    assert_eq!(
        c("container type1 dma_entry_limit=4 memlock=unlimited cap_ipc_lock=yes kernel=6.1"),
        StmtKind::Container {
            v2: false,
            dma_entry_limit: Some(4),
            memlock: Some(Memlock::Unlimited),
            cap_ipc_lock: true,
            kernel: Some("6.1".into())
        }
    );
    assert_eq!(
        c("container cap_ipc_lock=no memlock=0 type1v2 kernel=6.12"),
        StmtKind::Container {
            v2: true,
            dma_entry_limit: None,
            memlock: Some(Memlock::Bytes(0)),
            cap_ipc_lock: false,
            kernel: Some("6.12".into())
        }
    );
    assert!(matches!(
        c("container dma_entry_limit=4294967295 kernel=7.2"),
        StmtKind::Container {
            dma_entry_limit: Some(u32::MAX),
            ..
        }
    ));
}

#[test]
fn container_errors() {
    let e = parse("container dma_entry_limit=4294967296").unwrap_err();
    assert_eq!((e.line, e.col), (1, 27), "{e}");
    assert!(e.msg.contains("32 bits"));
    let e = parse("container type2").unwrap_err();
    assert_eq!((e.line, e.col), (1, 11));
    assert!(e.msg.contains("type1 or type1v2"), "{e}");
    let e = parse("container type1 type1v2").unwrap_err();
    assert_eq!(e.col, 17);
    let e = parse("container memlock=lots").unwrap_err();
    assert_eq!(e.col, 19);
    assert!(e.msg.contains("unlimited"));
    let e = parse("container cap_ipc_lock=true").unwrap_err();
    assert_eq!(e.col, 24);
    assert!(e.msg.contains("yes or no"));
    let e = parse("container kernel=5.4").unwrap_err();
    assert_eq!(e.col, 18);
    assert!(e.msg.contains("7.2, 6.12, 6.1 or 3.11"), "{e}");
}

#[test]
fn container_must_be_first_and_once() {
    let e = parse("# hello\n\n  map vaddr=0 iova=0 size=4K").unwrap_err();
    assert_eq!((e.line, e.col), (3, 3), "{e}");
    assert!(e.msg.contains("container type1v2"));
    let e = parse("container\ncheck\ncontainer type1").unwrap_err();
    assert_eq!((e.line, e.col), (3, 1));
    assert!(e.msg.contains("line 1"), "{e}");
    let e = parse("container\ncontainer").unwrap_err();
    assert_eq!((e.line, e.col), (2, 1));
}

#[test]
fn domain_forms() {
    assert_eq!(
        kind("domain d0"),
        StmtKind::Domain {
            name: "d0".into(),
            format: None,
            pgsizes: None,
            aperture: None,
            reserved: None
        }
    );
    assert_eq!(
        kind(
            "domain _Dom_2 format=mock pgsizes=4K,2M,0x40000000 aperture=0-0xffffffffffff \
             reserved=0xfee00000-0xfeefffff,0x100000000-0x100000000+4K"
        ),
        StmtKind::Domain {
            name: "_Dom_2".into(),
            format: Some("mock".into()),
            pgsizes: Some(vec![4 * K, 2 * M, G]),
            aperture: Some((0, 0xffff_ffff_ffff)),
            reserved: Some(vec![
                (0xfee0_0000, 0xfeef_ffff),
                (0x1_0000_0000, 0x1_0000_1000)
            ]),
        }
    );
    assert!(matches!(
        kind("domain d reserved=none format=arm64-16k"),
        StmtKind::Domain { reserved: Some(v), format: Some(f), .. } if v.is_empty() && f == "arm64-16k"
    ));
    for f in FORMATS {
        assert!(matches!(
            kind(&format!("domain d format={f}")),
            StmtKind::Domain { .. }
        ));
    }
}

#[test]
fn domain_errors() {
    err_at("domain", 1, "needs `a NAME`");
    err_at("domain 0d", 8, "not a valid name");
    err_at("domain d-0", 9, "not a valid name");
    err_at("domain d0 d1", 11, "unexpected word `d1`");
    err_at("domain d0 format=x86", 18, "x86_64, x86_64-3level");
    err_at("domain d0 format=x86-64", 18, "did you mean `x86_64`?");
    err_at("domain d0 pgsizes=4K,3K", 22, "not a power of two");
    err_at("domain d0 pgsizes=4K,,2M", 22, "empty element");
    err_at("domain d0 pgsizes=4K,0x1000", 22, "listed twice");
    err_at("domain d0 pgsizes=0", 19, "not a power of two");
    err_at("domain d0 aperture=0x1000", 20, "START-END");
    err_at("domain d0 aperture=0-2G-1", 24, "exactly one `-`");
    err_at("domain d0 aperture=2G-1G", 20, "starts above its end");
    err_at("domain d0 aperture=-1G", 20, "expected a number");
    err_at("domain d0 aperture=0-", 22, "expected a number");
    err_at("domain d0 reserved=0-4K,8K", 25, "START-END");
    err_at("domain d0 reserved=0-4K,8K-4x", 29, "unknown suffix `x`");
    err_at("domain d0 aperture=0-1 aperture=0-2", 24, "given twice");
}

#[test]
fn detach_forms() {
    assert_eq!(kind("detach d0"), StmtKind::Detach { name: "d0".into() });
    err_at("detach", 1, "needs `a NAME`");
    err_at("detach d0 now", 11, "unexpected word `now`");
    err_at("detach d0 force=1", 11, "takes no key=value");
}

#[test]
fn mmap_forms() {
    assert_eq!(
        kind("mmap buf4k size=16K"),
        StmtKind::Mmap {
            name: "buf4k".into(),
            size: 16 * K,
            backing: Backing::Page4k,
            layout: Layout::Contiguous,
            seed: 0,
            prot_write: true,
            at: None,
            phys: None
        }
    );
    assert_eq!(
        kind("mmap bar phys=0xfe000000 at=0x7f0000001000 prot=r seed=42 layout=scattered backing=pfnmap size=1M"),
        StmtKind::Mmap {
            name: "bar".into(),
            size: M,
            backing: Backing::Pfnmap,
            layout: Layout::Scattered,
            seed: 42,
            prot_write: false,
            at: Some(0x7f00_0000_1000),
            phys: Some(0xfe00_0000),
        }
    );
    for (w, b) in [
        ("4k", Backing::Page4k),
        ("thp", Backing::Thp),
        ("hugetlb-2m", Backing::Hugetlb2m),
        ("hugetlb-1g", Backing::Hugetlb1g),
        ("pfnmap", Backing::Pfnmap),
    ] {
        assert!(
            matches!(kind(&format!("mmap m size=1G backing={w}")), StmtKind::Mmap { backing, .. } if backing == b)
        );
        assert_eq!(b.name(), w);
    }
    assert!(matches!(
        kind("mmap m size=4K prot=rw layout=contiguous"),
        StmtKind::Mmap {
            prot_write: true,
            layout: Layout::Contiguous,
            ..
        }
    ));
}

#[test]
fn mmap_errors() {
    let e = err("mmap ram backing=2m size=4M");
    assert_eq!(e.col, 18);
    assert_eq!(
        e.msg,
        "unknown backing `2m`: use 4k, thp, hugetlb-2m, hugetlb-1g or pfnmap"
    );
    err_at("mmap ram", 1, "needs `size=BYTES`");
    err_at("mmap size=4K", 1, "needs `a NAME`");
    err_at(
        "mmap ram size",
        10,
        "`size` needs a value: write `size=BYTES`",
    );
    err_at(
        "mmap ram size=4K layout=scatter",
        25,
        "contiguous or scattered",
    );
    err_at("mmap ram size=4K prot=w", 23, "rw or r");
    err_at(
        "mmap ram size=4K hugepages=1",
        18,
        "unknown key `hugepages=`",
    );
    err_at("mmap ram size=4K sise=4K", 18, "did you mean `size=`?");
}

#[test]
fn munmap_forms() {
    assert_eq!(
        kind("munmap ram"),
        StmtKind::Munmap {
            name: "ram".into(),
            range: None
        }
    );
    assert_eq!(
        kind("munmap ram size=1M offset=1M"),
        StmtKind::Munmap {
            name: "ram".into(),
            range: Some((M, M))
        }
    );
    err_at("munmap ram offset=4K", 12, "both `offset=` and `size=`");
    err_at("munmap ram size=4K", 12, "both `offset=` and `size=`");
}

#[test]
fn map_forms() {
    assert_eq!(
        kind("map vaddr=0x7f0000000000 iova=0 size=4K"),
        StmtKind::Map {
            vaddr: VaddrRef::Abs(0x7f00_0000_0000),
            iova: 0,
            size: 4 * K,
            flags: MAP_READ | MAP_WRITE,
            argsz: None
        }
    );
    assert_eq!(
        kind("map size=2M argsz=1 flags=read iova=0xfee00000+0x1000 vaddr=buf4k+0x1000"),
        StmtKind::Map {
            vaddr: VaddrRef::Named {
                name: "buf4k".into(),
                offset: 0x1000
            },
            iova: 0xfee0_1000,
            size: 2 * M,
            flags: MAP_READ,
            argsz: Some(1)
        }
    );
}

#[test]
fn map_errors() {
    let e = err("map vaddr=ram iova=1G");
    assert_eq!(e.col, 1);
    assert_eq!(e.msg, "`map` needs `size=BYTES`");
    err_at("map size=4K", 1, "`vaddr=V` and `iova=IOVA`");
    err_at(
        "map vaddr=ram iova=1G size=4M iova=2G",
        31,
        "`iova=` is given twice",
    );
    err_at("map vaddr=ram iova=1G size=", 23, "`size=` needs a value");
    err_at(
        "map vaddr=ram iova=1G size=4M extra",
        31,
        "unexpected word `extra`",
    );
    err_at("map vaddr=ram iova=1G size=4M =4", 31, "missing key");
    err_at(
        "map vaddr=ram iova=1G + 4K size=4M",
        23,
        "may not contain spaces",
    );
    err_at(
        "map vaddr=ram iova=1G size=4M argsz=0x100000000",
        37,
        "32 bits",
    );
}

#[test]
fn vaddr_refs() {
    let v = |s: &str| match kind(&format!("map vaddr={s} iova=0 size=4K")) {
        StmtKind::Map { vaddr, .. } => vaddr,
        k => panic!("{k:?}"),
    };
    let named = |n: &str, offset: i128| VaddrRef::Named {
        name: n.into(),
        offset,
    };
    assert_eq!(v("ram"), named("ram", 0));
    assert_eq!(v("ram+2M"), named("ram", 2 * M as i128));
    assert_eq!(v("ram-4K"), named("ram", -4096));
    assert_eq!(v("ram+1G+4K"), named("ram", (G + 4 * K) as i128));
    assert_eq!(v("ram-4K+8K"), named("ram", 4096));
    assert_eq!(v("ram-8K-8K"), named("ram", -16384));
    assert_eq!(v("_x9+0"), named("_x9", 0));
    // a name is never a number, a number is never a name
    assert_eq!(v("deadbeef"), named("deadbeef", 0));
    assert_eq!(v("K"), named("K", 0));
    assert_eq!(v("0xdeadb000"), VaddrRef::Abs(0xdead_b000));
    assert_eq!(v("1G-4K"), VaddrRef::Abs(G - 4 * K));
    assert_eq!(
        v("ram-18446744073709551615"),
        named("ram", -(u64::MAX as i128))
    );
    assert_eq!(v("ram+0xffffffffffffffff"), named("ram", u64::MAX as i128));
}

#[test]
fn vaddr_errors() {
    let pre = "map iova=0 size=4K vaddr=";
    let c = pre.len() + 1;
    err_at(
        &format!("{pre}ram*2"),
        c + 3,
        "expected `+` or `-` after the name `ram`",
    );
    err_at(&format!("{pre}ram+"), c + 4, "expected a number after `+`");
    err_at(&format!("{pre}ram+2m"), c + 5, "upper-case: write `2M`");
    err_at(
        &format!("{pre}ram+x"),
        c + 4,
        "expected a number, found `x`",
    );
    err_at(&format!("{pre}-4K"), c, "expected an address");
    err_at(
        &format!("{pre}ram+0xffffffffffffffff+1"),
        c + 23,
        "offset exceeds",
    );
    err_at(
        &format!("{pre}ram-0xffffffffffffffff-1"),
        c + 23,
        "offset exceeds",
    );
}

#[test]
fn map_flags() {
    let f = |s: &str| match kind(&format!("map vaddr=0 iova=0 size=4K flags={s}")) {
        StmtKind::Map { flags, .. } => flags,
        k => panic!("{k:?}"),
    };
    assert_eq!(f("read"), 1);
    assert_eq!(f("write"), 2);
    assert_eq!(f("read,write"), 3);
    assert_eq!(f("write,read"), 3);
    assert_eq!(f("read,vaddr"), 5);
    assert_eq!(f("vaddr"), 4);
    assert_eq!(f("none"), 0);
    assert_eq!(f("0x80000000"), 0x8000_0000);
    assert_eq!(f("read,write,0x80000000"), 0x8000_0003);
    assert_eq!(f("8,16"), 24);
    assert_eq!(f("0"), 0);
    let p = "map vaddr=0 iova=0 size=4K flags=";
    let c = p.len() + 1;
    err_at(&format!("{p}none,read"), c, "cannot be combined");
    err_at(&format!("{p}read,none"), c + 5, "cannot be combined");
    err_at(&format!("{p}read,read"), c + 5, "listed twice");
    err_at(&format!("{p}rw"), c, "unknown flag `rw`");
    err_at(&format!("{p}all"), c, "read, write, vaddr, none");
    err_at(&format!("{p}raed"), c, "did you mean `read`?");
    err_at(&format!("{p}read,"), c + 5, "empty element");
    err_at(&format!("{p}0x100000000"), c, "32 bits");
}

#[test]
fn unmap_forms_and_flags() {
    assert_eq!(
        kind("unmap iova=1G size=4M"),
        StmtKind::Unmap {
            iova: G,
            size: 4 * M,
            flags: 0,
            argsz: None
        }
    );
    let all = StmtKind::Unmap {
        iova: 0,
        size: 0,
        flags: UNMAP_ALL,
        argsz: None,
    };
    assert_eq!(kind("unmap all"), all);
    assert_eq!(kind("unmap iova=0 size=0 flags=all"), all);
    let s = stmt("unmap all => ok size=4M");
    assert_eq!(s.kind, all);
    assert_eq!(
        s.expect,
        Some(Expect {
            result: Some(ExpResult::Ok),
            items: vec![ExpItem::Size(4 * M)]
        })
    );
    let f = |s: &str| match kind(&format!("unmap iova=0 size=0 flags={s}")) {
        StmtKind::Unmap { flags, .. } => flags,
        k => panic!("{k:?}"),
    };
    assert_eq!(f("dirty"), UNMAP_DIRTY);
    assert_eq!(f("vaddr"), UNMAP_VADDR);
    assert_eq!(f("all,dirty"), 3);
    assert_eq!(f("vaddr,dirty,all"), 7);
    assert_eq!(f("none"), 0);
    assert_eq!(f("2147483648"), 1 << 31);
    assert_eq!(
        kind("unmap iova=0 size=4K argsz=1"),
        StmtKind::Unmap {
            iova: 0,
            size: 4 * K,
            flags: 0,
            argsz: Some(1)
        }
    );
    err_at("unmap iova=0 size=4K flags=read", 28, "all, vaddr, dirty");
}

#[test]
fn unmap_errors() {
    err_at(
        "unmap all iova=0",
        11,
        "`unmap all` takes no other argument",
    );
    err_at(
        "unmap iova=0 all",
        1 + "unmap ".len(),
        "`unmap all` takes no other argument",
    );
    err_at("unmap all all", 11, "`unmap all` takes no other argument");
    err_at("unmap everything", 7, "takes `all` or");
    err_at("unmap iova=0", 1, "`unmap` needs `size=BYTES`");
    err_at("unmap", 1, "`iova=IOVA` and `size=BYTES`");
    err_at("unmap all foo=1", 11, "unknown key `foo=`");
}

#[test]
fn info_dirty_check() {
    assert_eq!(kind("info"), StmtKind::Info { argsz: None });
    assert_eq!(kind("info argsz=104"), StmtKind::Info { argsz: Some(104) });
    assert_eq!(kind("dirty start"), StmtKind::DirtyStart);
    assert_eq!(kind("dirty stop"), StmtKind::DirtyStop);
    assert_eq!(
        kind("dirty get pgsize=4K iova=1G size=64K"),
        StmtKind::DirtyGet {
            iova: G,
            size: 64 * K,
            pgsize: 4 * K
        }
    );
    assert_eq!(kind("check"), StmtKind::Check);
    err_at("info all", 6, "unexpected word `all`");
    err_at("info size=4", 6, "unknown key `size=`");
    err_at("dirty", 1, "`start`, `stop` or `get");
    err_at("dirty begin", 7, "use start, stop or get");
    err_at("dirty strat", 7, "did you mean `start`?");
    err_at("dirty start iova=0", 13, "`dirty start` takes no arguments");
    err_at("dirty stop now", 12, "`dirty stop` takes no arguments");
    err_at(
        "dirty get iova=0 size=4K",
        1,
        "`dirty get` needs `pgsize=BYTES`",
    );
    err_at(
        "dirty get iova=0 size=4K pgsize=4K x",
        36,
        "unexpected word `x`",
    );
    err_at("check now", 7, "takes no arguments");
    err_at("check d0=1", 7, "takes no key=value");
}

#[test]
fn verbs_and_op_names() {
    let t = parse(
        "container\ndomain d\ndetach d\nmmap m size=4K\nmunmap m\nmap vaddr=0 iova=0 size=4K\n\
         unmap all\ninfo\ndirty start\ndirty get iova=0 size=4K pgsize=4K\ndirty stop\ncheck\n\
         pin iova=0 npage=1\nunpin iova=0 npage=1\ndma_rw iova=0 size=8 write=no",
    )
    .unwrap();
    let verbs: Vec<&str> = t.stmts.iter().map(|s| s.kind.verb()).collect();
    // Every verb the parser knows, in its order; `dirty` for its three forms.
    let dirty = VERBS.iter().position(|v| *v == "dirty").unwrap();
    let want = [&VERBS[..=dirty], &["dirty", "dirty"], &VERBS[dirty + 1..]].concat();
    assert_eq!(verbs, want);
    assert_eq!(want.len(), 15);
    let lines: Vec<usize> = t.stmts.iter().map(|s| s.line).collect();
    assert_eq!(lines, (1..=15).collect::<Vec<_>>());
}

#[test]
fn external_pin_statements() {
    let t = parse(
        "container\npin iova=1G npage=4 group=d1\npin iova=0 npage=0\nunpin iova=4K npage=2\n\
         dma_rw iova=1G+4K size=100 write=yes => EPERM",
    )
    .unwrap();
    assert_eq!(
        t.stmts[1].kind,
        StmtKind::Pin {
            iova: 1 << 30,
            npage: 4,
            group: Some("d1".into())
        }
    );
    assert_eq!(
        t.stmts[2].kind,
        StmtKind::Pin {
            iova: 0,
            npage: 0,
            group: None
        }
    );
    assert_eq!(
        t.stmts[3].kind,
        StmtKind::Unpin {
            iova: 4096,
            npage: 2
        }
    );
    assert_eq!(
        t.stmts[4].kind,
        StmtKind::DmaRw {
            iova: (1 << 30) + 4096,
            size: 100,
            write: true
        }
    );
    let e = parse("container\npin iova=0").unwrap_err();
    assert!(e.msg.contains("npage=N"), "{e}");
    let e = parse("container\nunpin iova=0 npage=1 group=d0").unwrap_err();
    assert!(e.msg.contains("unknown key `group=`"), "{e}");
    let e = parse("container\ndma_rw iova=0 size=8 write=maybe").unwrap_err();
    assert_eq!((e.line, e.col), (2, 28));
    assert!(e.msg.contains("yes or no"), "{e}");
    let e = parse("container\npin iova=0 npage=1 group=9x").unwrap_err();
    assert!(e.msg.contains("not a valid name"), "{e}");
    assert!(parse("container kernel=3.11").is_ok());
}

#[test]
fn unknown_verb() {
    let e = err("  unamp iova=0 size=4K");
    assert_eq!(e.col, 3);
    assert!(
        e.msg
            .starts_with("unknown statement `unamp`: did you mean `unmap`?"),
        "{e}"
    );
    err_at("Map vaddr=0 iova=0 size=4K", 1, "did you mean `map`?");
    err_at("frobnicate", 1, "statements: container, domain");
    let e = parse("frobnicate").unwrap_err();
    assert!(
        e.msg.contains("unknown statement"),
        "unknown verb beats container order: {e}"
    );
}

#[test]
fn numbers() {
    let ok = [
        ("0", 0),
        ("4096", 4096),
        ("0x1000", 0x1000),
        ("0X1000", 0x1000),
        ("0xDeadBeef", 0xdead_beef),
        ("2M", 2 * M),
        ("4K", 4 * K),
        ("1G", G),
        ("1T", 1 << 40),
        ("0K", 0),
        ("007", 7),
        ("1G+4K", G + 4 * K),
        ("0xfee00000+0x1000", 0xfee0_1000),
        ("2G-4K", 2 * G - 4 * K),
        ("4K-4K", 0),
        ("1G-4K+8K", G + 4 * K),
        ("0x16E", 0x16e),
        ("18446744073709551615", u64::MAX),
        ("0xffffffffffffffff", u64::MAX),
        ("16777215T", 16_777_215u64 << 40),
        ("0xffffffffffffffff-1+1", u64::MAX),
        ("0xffffffffffffffff-0xffffffffffffffff", 0),
    ];
    for (s, want) in ok {
        assert_eq!(parse_number(s), Ok(want), "{s}");
    }
    let bad = [
        ("", "expected a number"),
        ("0-4K", "goes below 0"),
        ("4K-8K+8K", "goes below 0"),
        ("16E", "unknown suffix `E`"),
        ("0xffffffffffffffff+1", "exceeds 2^64-1"),
        ("18446744073709551616", "does not fit in 64 bits"),
        ("0x10000000000000000", "does not fit in 64 bits"),
        ("99999999999T", "does not fit in 64 bits"),
        ("16777216T", "does not fit in 64 bits"),
        ("4k", "upper-case: write `4K`"),
        ("2m", "upper-case: write `2M`"),
        ("4KB", "unknown suffix `KB`"),
        ("4KK", "unknown suffix `KK`"),
        ("1.5G", "whole numbers"),
        ("0x", "missing hex digits"),
        ("0xfg", "`g` is not a hex digit"),
        ("0x10K", "hex number takes no suffix"),
        ("-4K", "negative"),
        ("+4K", "before `+`"),
        ("4K+", "after `+`"),
        ("4K--4K", "after `-`"),
        ("abc", "found `abc`"),
        ("1G+ram", "found `ram`"),
    ];
    for (s, want) in bad {
        let e = parse_number(s).expect_err(s);
        assert!(e.contains(want), "{s}: {e} (wanted `{want}`)");
    }
}

#[test]
fn number_error_columns() {
    let p = "map vaddr=0 iova=0 size=";
    let c = p.len() + 1;
    err_at(&format!("{p}0-4K"), c + 2, "goes below 0");
    err_at(&format!("{p}16E"), c + 2, "unknown suffix `E`");
    err_at(
        &format!("{p}4K+0xffffffffffffffff"),
        c + 3,
        "exceeds 2^64-1",
    );
    err_at(
        &format!("{p}4K+99999999999T"),
        c + 3,
        "does not fit in 64 bits",
    );
    err_at(&format!("{p}0x12z4"), c + 4, "`z` is not a hex digit");
    err_at(&format!("{p}4K++4K"), c + 3, "expected a number after `+`");
}

#[test]
fn expectations() {
    assert_eq!(
        expect("info => ok"),
        Expect {
            result: Some(ExpResult::Ok),
            items: vec![]
        }
    );
    for e in ERRNOS {
        assert_eq!(
            expect(&format!("info => {e}")).result,
            Some(ExpResult::Errno(Errno::from_name(e).unwrap()))
        );
    }
    assert_eq!(
        expect("map vaddr=0 iova=0 size=4K => ok locked=5 avail=65534"),
        Expect {
            result: Some(ExpResult::Ok),
            items: vec![ExpItem::Locked(LockedExp::Abs(5)), ExpItem::Avail(65534)]
        }
    );
    assert_eq!(
        expect("map vaddr=0 iova=0 size=4K => ENOSPC locked=-0 avail=0").items,
        vec![ExpItem::Locked(LockedExp::Delta(0)), ExpItem::Avail(0)]
    );
    assert_eq!(
        expect("info=>ok locked=+512+512").items,
        vec![ExpItem::Locked(LockedExp::Delta(1024))]
    );
    assert_eq!(
        expect("info => ok locked=-9223372036854775808").items,
        vec![ExpItem::Locked(LockedExp::Delta(i64::MIN))]
    );
    assert_eq!(
        expect("info => ok locked=-1-1").items,
        vec![ExpItem::Locked(LockedExp::Delta(-2))]
    );
    assert_eq!(
        expect("info => ok locked=-1024+1024").items,
        vec![ExpItem::Locked(LockedExp::Delta(0))]
    );
    assert_eq!(
        expect("info => ok locked=+9223372036854775807").items,
        vec![ExpItem::Locked(LockedExp::Delta(i64::MAX))]
    );
    assert_eq!(
        expect("check => ok dmas=2 pinned=1024 locked=1024 leaves.d1.0x200000=2 leaves.d1.1G=0"),
        Expect {
            result: Some(ExpResult::Ok),
            items: vec![
                ExpItem::Dmas(2),
                ExpItem::Pinned(1024),
                ExpItem::Locked(LockedExp::Abs(1024)),
                ExpItem::Leaves {
                    domain: "d1".into(),
                    pgsize: 2 * M,
                    count: 2
                },
                ExpItem::Leaves {
                    domain: "d1".into(),
                    pgsize: G,
                    count: 0
                },
            ]
        }
    );
    assert_eq!(
        expect("check => dmas=0").result,
        None,
        "the result word is optional after check"
    );
    assert_eq!(
        expect("check => leaves.d0.2097152=1").items,
        vec![ExpItem::Leaves {
            domain: "d0".into(),
            pgsize: 2 * M,
            count: 1
        }]
    );
    assert_eq!(
        expect("check => EINVAL").result,
        Some(ExpResult::Errno(Errno::EINVAL))
    );
    assert_eq!(
        expect("unmap iova=0 size=4K => ok size=0").items,
        vec![ExpItem::Size(0)]
    );
}

#[test]
fn expectation_errors() {
    let e = err("map vaddr=0 iova=0 size=4K => locked=+1");
    assert_eq!(e.col, 31);
    assert!(e.msg.starts_with("missing result"), "{e}");
    err_at("info => EFOO", 9, "unknown errno `EFOO`");
    err_at("info => EINVLA", 9, "did you mean `EINVAL`?");
    err_at("info => einval", 9, "upper-case: write `EINVAL`");
    err_at("info => OK", 9, "write `ok` in lower case");
    err_at("info => fine", 9, "expected `ok` or an errno");
    err_at("info =>", 6, "nothing after `=>`");
    err_at("check =>  ", 7, "leaves.d0.2M=1");
    err_at("=> ok", 1, "needs a statement");
    err_at("info => ok EINVAL", 12, "comes first, and only once");
    err_at("info => ok => ok", 12, "only one `=>`");
    err_at("info => ok avail", 12, "unexpected word `avail`");
    err_at("info => ok avail=", 12, "`avail=` needs a value");
    err_at("info => ok avail=1 avail=2", 20, "expected twice");
    err_at("info => ok locked=1 locked=+1", 21, "expected twice");
    err_at("info => ok size=4K", 12, "only after `unmap`");
    err_at(
        "unmap all => EINVAL size=0",
        21,
        "a failed unmap reports no size",
    );
    err_at("info => ok dmas=1", 12, "only after `check`");
    err_at("info => ok pinned=1", 12, "only after `check`");
    err_at("info => ok leaves.d0.2M=1", 12, "only after `check`");
    err_at("check => leaves.d0=1", 10, "leaves.DOMAIN.SIZE=N");
    err_at("check => leaves..2M=1", 17, "missing domain name");
    err_at("check => leaves.0d.2M=1", 17, "not a valid name");
    err_at("check => leaves.d0.=1", 20, "missing page size");
    err_at("check => leaves.d0.3K=1", 20, "not a power of two");
    err_at("check => leaves.d0.2m=1", 21, "upper-case");
    err_at("check => leaves.d0.2M=x", 23, "expected a number");
    err_at(
        "check => leaves.d0.2M=1 leaves.d0.0x200000=2",
        25,
        "expected twice",
    );
    err_at(
        "check => leafs.d0.2M=1",
        10,
        "unknown expectation `leafs.d0.2M=`",
    );
    err_at("check => lockd=1", 10, "did you mean `locked=`?");
    err_at("info => ok locked=+x", 20, "expected a number");
    err_at("info => ok locked=+9223372036854775808", 20, "out of range");
    err_at("info => ok locked=-9223372036854775809", 20, "out of range");
    err_at(
        "info => ok locked=-4+0x7fffffffffffffff+5",
        41,
        "out of range",
    );
    err_at("info => ok locked=-", 20, "expected a number after `-`");
    err_at("info => ok locked=+4k", 21, "upper-case");
}

#[test]
fn columns_count_characters() {
    // "é" is two bytes but one column.
    let e = parse("container\n# é\nmmap é size=4K").unwrap_err();
    assert_eq!((e.line, e.col), (3, 6), "{e}");
    // U+3000 is whitespace of three bytes; U+00A0 of two.
    let e = parse("container\ninfo\u{3000}\u{a0}bogus").unwrap_err();
    assert_eq!((e.line, e.col), (2, 7), "{e}");
    let e = parse("container\ndomain d0\u{3000}format=x86_64\u{a0}pgsizes=4K,é").unwrap_err();
    assert_eq!((e.line, e.col), (2, 36), "{e}");
    let e = parse("container\n\tdomain d0 format=\u{e9}t\u{e9}").unwrap_err();
    assert_eq!((e.line, e.col), (2, 19), "{e}");
}

#[test]
fn first_error_wins() {
    let src = "container\nmap vaddr=0 iova=0 size=4k\nbogus\n";
    let e = parse(src).unwrap_err();
    assert_eq!((e.line, e.col), (2, 26));
    // within a line, left to right
    let e = err("map vaddr=ram sise=1 flags=bad");
    assert_eq!(e.col, 15, "{e}");
}

#[test]
fn display_and_snippet() {
    let src = "container\nmap vaddr=ram iova=1G sise=4M\n";
    let e = parse(src).unwrap_err();
    assert_eq!(
        e.to_string(),
        "2:23: unknown key `sise=` for `map`: did you mean `size=`? \
         (`map` takes vaddr=V iova=IOVA size=BYTES flags=read,write,vaddr argsz=N)"
    );
    assert_eq!(
        e.snippet(src),
        "2 | map vaddr=ram iova=1G sise=4M\n  |                       ^"
    );
    let err: &dyn std::error::Error = &e;
    assert!(err.to_string().starts_with("2:23:"));
}

#[test]
fn malformed_inputs_have_exact_positions() {
    // (source, line, col) — each a distinct kind of mistake.
    let cases: &[(&str, usize, usize)] = &[
        ("container\nfrob x=1", 2, 1),                          // unknown verb
        ("container\nmmap m size=4Q", 2, 14),                   // bad number
        ("container\nmap vaddr=0 iova=0", 2, 1),                // missing size
        ("container\nmap vaddr=0 iova=0 size=1 size=2", 2, 27), // duplicate key
        ("container\ninfo => EWHAT", 2, 9),                     // bad errno name
        ("container\ncheck\n  container", 3, 3),                // container not first
        ("check", 1, 1),                                        // no container at all
        ("container\ninfo => avail=1", 2, 9),                   // missing result word
        ("container\nmmap m size= backing=thp", 2, 8),          // unterminated key
        ("container\nunmap all size=4K", 2, 11),                // unmap all with extra args
        ("container\ndomain d aperture=1-2-3", 2, 22),          // two dashes in a range
        ("container\nmap vaddr=ram+ iova=0 size=4K", 2, 15),    // dangling +
        (
            "container memlock=4M\n\n\nmap vaddr=0 iova=0 size=0-1",
            4,
            27,
        ), // below zero
        ("container\nmmap m size=16E", 2, 15),                  // unknown suffix
    ];
    for &(src, line, col) in cases {
        let e = parse(src).expect_err(src);
        assert_eq!((e.line, e.col), (line, col), "{src:?}: {e}");
    }
}
