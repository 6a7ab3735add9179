//! `type1 replay --json` against the language's reference (crates/trace/README.md), field by field.

use serde_json::Value;

const TRACE: &str = "\
container type1v2 dma_entry_limit=8
domain d0 format=x86_64
domain d1 format=mock pgsizes=4K,2M aperture=0-0xffffffffffff
mmap ram size=4M backing=thp
mmap small size=64K
map vaddr=ram iova=1G size=4M                 => ok locked=+1024 avail=7
map vaddr=small iova=2G size=64K              => ok locked=+16
unmap iova=1G+4K size=4K                      => EINVAL
info                                          => ok
dirty start
dirty get iova=2G size=64K pgsize=4K          => ok
unmap iova=2G size=64K flags=dirty            => ok size=64K locked=-16
dirty stop
check                                         => dmas=1 pinned=1024 leaves.d0.2M=2 leaves.d1.2M=2
detach d1
unmap iova=3G size=4K                         => ok size=0
";

/// Runs `type1 replay --json` on `src`; returns the exit code and the parsed lines.
fn run_json(src: &str, tag: &str) -> (i32, Vec<Value>, String) {
    let path = std::env::temp_dir().join(format!("type1-json-{}-{tag}.trace", std::process::id()));
    std::fs::write(&path, src).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_type1"))
        .args(["replay", "--json"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    (
        out.status.code().unwrap(),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

/// The fields every object has, with their types.
fn assert_common(v: &Value) {
    for key in ["line", "op", "ok", "errno", "locked", "avail"] {
        assert!(v.get(key).is_some(), "{key} missing in {v}");
    }
    assert!(v["line"].is_u64(), "{v}");
    assert!(v["op"].is_string(), "{v}");
    assert!(v["ok"].is_boolean(), "{v}");
    assert!(v["errno"].is_null() || v["errno"].is_string(), "{v}");
    assert!(v["locked"].is_u64(), "{v}");
    assert!(v["avail"].is_u64(), "{v}");
    assert_eq!(v["ok"].as_bool().unwrap(), v["errno"].is_null(), "{v}");
}

fn assert_state(v: &Value) {
    let dmas = v["dmas"].as_array().expect("dmas is a list");
    for d in dmas {
        assert!(
            d["iova"].is_u64() && d["size"].is_u64() && d["vaddr"].is_u64(),
            "{d}"
        );
    }
    let domains = v["domains"].as_object().expect("domains is an object");
    for (_, d) in domains {
        let leaves = d["leaves"].as_object().expect("leaves is an object");
        for (size, n) in leaves {
            let s: u64 = size.parse().expect("page size keys are decimal");
            assert!(s.is_power_of_two());
            assert!(n.is_u64());
        }
    }
    assert!(v["pinned"].is_u64() && v["locked"].is_u64(), "{v}");
}

#[test]
fn every_statement_has_its_fields() {
    let (code, lines, stderr) = run_json(TRACE, "fields");
    assert_eq!(code, 0, "{stderr}");
    // One object per statement, then the summary.
    assert_eq!(lines.len(), 17);
    for v in &lines {
        assert_common(v);
    }
    let ops: Vec<&str> = lines.iter().map(|v| v["op"].as_str().unwrap()).collect();
    assert_eq!(
        ops,
        [
            "container",
            "domain",
            "domain",
            "mmap",
            "mmap",
            "map",
            "map",
            "unmap",
            "info",
            "dirty",
            "dirty",
            "unmap",
            "dirty",
            "check",
            "detach",
            "unmap",
            "summary"
        ]
    );
    let lineno: Vec<u64> = lines.iter().map(|v| u(v, "line")).collect();
    assert_eq!(lineno, (1..=17).collect::<Vec<_>>());

    // map: locked and avail after the statement.
    assert_eq!(u(&lines[5], "locked"), 1024);
    assert_eq!(u(&lines[5], "avail"), 7);
    assert_eq!(u(&lines[6], "locked"), 1040);

    // A failed unmap: ok false, the errno's name, size null (the kernel writes nothing back).
    let bad = &lines[7];
    assert_eq!(bad["ok"], Value::Bool(false));
    assert_eq!(bad["errno"], "EINVAL");
    assert!(bad.get("size").is_some() && bad["size"].is_null(), "{bad}");
    assert!(bad["message"].is_string(), "additive message: {bad}");

    // info: page sizes, ranges (inclusive ends, the MSI window carved out), entries left.
    let info = &lines[8];
    assert_eq!(u(info, "iova_pgsizes"), 0x1000 | 0x20_0000);
    assert_eq!(u(info, "dma_avail"), 6);
    let ranges: Vec<(u64, u64)> = info["iova_ranges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_u64().unwrap(), r[1].as_u64().unwrap()))
        .collect();
    assert_eq!(ranges, [(0, 0xfedf_ffff), (0xfef0_0000, 0xffff_ffff_ffff)]);

    // dirty get: 16 pages dirty -> 16 set bits in the first little-endian word.
    assert_eq!(lines[10]["bitmap"], "ffff000000000000");

    // unmap ok: the bytes unmapped.
    assert_eq!(u(&lines[11], "size"), 64 << 10);
    assert_eq!(u(&lines[15], "size"), 0);

    // check: the mappings, the leaves of every page size of each domain (zeros included).
    let check = &lines[13];
    assert_state(check);
    assert_eq!(check["dmas"].as_array().unwrap().len(), 1);
    assert_eq!(u(&check["dmas"][0], "iova"), 1 << 30);
    assert_eq!(u(&check["dmas"][0], "size"), 4 << 20);
    assert_eq!(check["domains"]["d0"]["leaves"]["2097152"], 2);
    assert_eq!(check["domains"]["d0"]["leaves"]["4096"], 0);
    assert_eq!(check["domains"]["d0"]["leaves"]["1073741824"], 0);
    assert_eq!(
        check["domains"]["d1"]["leaves"].as_object().unwrap().len(),
        2
    );
    assert_eq!(u(check, "pinned"), 1024);
    assert_eq!(u(check, "locked"), 1024);

    // summary: the same fields as check, line = last line + 1.
    let sum = lines.last().unwrap();
    assert_eq!(sum["op"], "summary");
    assert_eq!(sum["ok"], true);
    assert_eq!(u(sum, "line"), 17);
    assert_state(sum);
    assert_eq!(
        sum["domains"].as_object().unwrap().len(),
        1,
        "d1 was detached"
    );
    assert_eq!(u(sum, "locked"), 1024);
}

#[test]
fn a_failed_info_has_null_fields() {
    let (code, lines, _) = run_json("container\ninfo argsz=8 => EINVAL\n", "info");
    assert_eq!(code, 0);
    let info = &lines[1];
    assert_eq!(info["errno"], "EINVAL");
    for k in ["iova_pgsizes", "iova_ranges", "dma_avail"] {
        assert!(info.get(k).is_some_and(Value::is_null), "{k} in {info}");
    }
}

#[test]
fn a_trace_without_a_container_prints_nothing() {
    let (code, lines, _) = run_json("# nothing\n\n", "empty");
    assert_eq!(code, 0);
    assert!(lines.is_empty());
}

#[test]
fn a_failed_expectation_still_prints_every_statement() {
    let (code, lines, stderr) = run_json("container\ninfo => EINVAL\ninfo\n", "fail");
    assert_eq!(code, 1);
    assert_eq!(lines.len(), 4);
    assert!(stderr.contains(":2: expected EINVAL, got ok"), "{stderr}");
}
