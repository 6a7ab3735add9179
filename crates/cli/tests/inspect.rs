//! `type1 inspect`: on another running process and on its own demo regions, as a person runs
//! it, with the report and with --json. (The counts themselves are checked against pagemap read
//! independently in crates/type1/tests/inspect.rs.) Also the command line's own words: the
//! `--range` forms, the filters on the totals, the verdict and memlock lines, and what a bare
//! `type1 inspect` says.

use std::process::{Command, Stdio};

fn type1() -> Command {
    Command::new(env!("CARGO_BIN_EXE_type1"))
}

#[test]
fn inspect_pid_of_a_sleeping_child_reports_its_mappings() {
    let mut child = Command::new("sleep")
        .arg("30")
        .stdout(Stdio::null())
        .spawn()
        .expect("sleep");
    let pid = child.id().to_string();
    let out = type1()
        .args(["inspect", "--pid", &pid, "--json"])
        .output()
        .expect("run type1");
    let human = type1()
        .args(["inspect", "--pid", &pid])
        .output()
        .expect("run type1");
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["pid"].as_u64(), Some(pid.parse().unwrap()));
    let vmas = v["vmas"].as_array().expect("vmas");
    assert!(!vmas.is_empty());
    let resident: u64 = vmas
        .iter()
        .map(|m| m["resident_pages"].as_u64().unwrap())
        .sum();
    assert_eq!(
        v["total"]["resident_pages"].as_u64(),
        Some(resident),
        "the total is the sum of the mappings"
    );
    assert!(resident > 0, "a running process has resident pages");
    assert_eq!(
        v["total"]["locked_pages"].as_u64(),
        Some(resident - v["total"]["reserved_pages"].as_u64().unwrap())
    );
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("leaves (iova = vaddr)") && text.contains("total"),
        "{text}"
    );
}

#[test]
fn inspect_demo_thp_region_is_2m_leaves_where_the_kernel_gave_huge_pages() {
    let out = type1()
        .args(["inspect", "--demo", "--json"])
        .output()
        .expect("run type1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let regions = v["demo_regions"].as_array().expect("demo_regions");
    let thp = regions
        .iter()
        .find(|r| r["backing"] == "thp")
        .expect("a THP region");
    let start = thp["vaddr"].as_u64().unwrap();
    let vma = v["vmas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["start"].as_u64().unwrap() <= start && start < m["end"].as_u64().unwrap())
        .expect("its mapping");
    let c = vma;
    let huge = c["thp_pages"].as_u64().unwrap();
    let leaves_2m = c["leaves_iova_eq_vaddr"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["pgsize"] == 2 << 20)
        .map(|l| l["leaves"].as_u64().unwrap())
        .unwrap_or(0);
    assert_eq!(
        leaves_2m,
        huge / 512,
        "one 2M leaf per huge page the kernel gave"
    );
}

/// A `sleep` child whose mappings have settled (exec and the dynamic loader done), so runs of
/// `type1 inspect` one after another see the same mappings.
fn sleeping_child() -> (std::process::Child, String) {
    let child = Command::new("sleep")
        .arg("30")
        .stdout(Stdio::null())
        .spawn()
        .expect("sleep");
    let pid = child.id().to_string();
    let maps = || std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let mut last = String::new();
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let now = maps();
        if now.contains("sleep") && now == last {
            break;
        }
        last = now;
    }
    (child, pid)
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = type1().args(args).output().expect("run type1");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[test]
fn bare_inspect_names_pid_and_demo() {
    let out = type1().arg("inspect").output().expect("run type1");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--demo") && err.contains("--pid"), "{err}");
    let out = type1()
        .args(["inspect", "--demo", "--name", "x"])
        .output()
        .expect("run type1");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--name") && err.contains("--pid"), "{err}");
}

#[test]
fn range_takes_the_maps_form_0x_and_start_plus_size() {
    use type1_cli::inspect::parse_range;
    let want = Ok((0x7f00_0000_0000, 0x7f00_4000_0000));
    assert_eq!(parse_range("7f0000000000-7f0040000000"), want);
    assert_eq!(parse_range("0x7f0000000000-0x7f0040000000"), want);
    assert_eq!(parse_range("0x7f0000000000+1G"), want);
    assert_eq!(parse_range("7f0000000000+0x40000000"), want);
    assert_eq!(
        parse_range("7f0000000000-7f0040000000 rw-p 00000000 00:00 0 "),
        want,
        "a whole /proc/PID/maps line"
    );
    for bad in ["", "7f00", "2000-1000", "zz-1000", "1000+", "1000+0"] {
        let e = parse_range(bad).unwrap_err();
        assert!(
            e.contains("START-END") && e.contains("START+SIZE"),
            "{bad:?}: {e}"
        );
    }
}

#[test]
fn filters_change_the_totals_and_the_report_gives_verdicts_and_memlock() {
    let (mut child, pid) = sleeping_child();
    let all = json(&["inspect", "--pid", &pid, "--json"]);
    let some = json(&["inspect", "--pid", &pid, "--json", "--name", "sleep"]);
    let big = json(&["inspect", "--pid", &pid, "--json", "--min-size", "64K"]);
    // The first mapping's range, in the form the report prints, then START+SIZE.
    let v0 = &all["vmas"][0];
    let (s0, e0) = (v0["start"].as_u64().unwrap(), v0["end"].as_u64().unwrap());
    let one = json(&[
        "inspect",
        "--pid",
        &pid,
        "--json",
        "--range",
        &format!("{s0:x}-{e0:x}"),
    ]);
    let one_plus = json(&[
        "inspect",
        "--pid",
        &pid,
        "--json",
        "--range",
        &format!("{s0:#x}+{}", e0 - s0),
    ]);
    let human = type1()
        .args(["inspect", "--pid", &pid, "--name", "sleep"])
        .output()
        .expect("run type1");
    let gpa = type1()
        .args(["inspect", "--pid", &pid, "--gpa", "0"])
        .output()
        .expect("run type1");
    let _ = child.kill();
    let _ = child.wait();
    let pages = |v: &serde_json::Value| v["total"]["pages"].as_u64().unwrap();
    let n = |v: &serde_json::Value| v["vmas"].as_array().unwrap().len() as u64;
    for f in [&some, &big] {
        assert!(
            pages(f) < pages(&all),
            "a filter leaves mappings out of the totals"
        );
        assert_eq!(n(f) + f["filtered_out"].as_u64().unwrap(), n(&all));
        let sum: u64 = f["vmas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["pages"].as_u64().unwrap())
            .sum();
        assert_eq!(pages(f), sum);
        assert_eq!(f["suggested_memlock_bytes"], f["total"]["map_charge_bytes"]);
    }
    assert!(some["vmas"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["name"].as_str().unwrap().contains("sleep")));
    assert!(big["vmas"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["end"].as_u64().unwrap() - m["start"].as_u64().unwrap() >= 64 << 10));
    assert_eq!(n(&one), 1);
    assert_eq!(one["vmas"], one_plus["vmas"]);
    let all_total = &all["total"];
    assert!(all_total["map_charge_pages"].as_u64() >= all_total["locked_pages"].as_u64());
    assert!(["yes", "partly", "no"].contains(&all["verdict"]["superpages"].as_str().unwrap()));
    assert!(all["iotlb_reach_plain_bytes"].as_u64().unwrap() > 0);
    let text = String::from_utf8_lossy(&human.stdout);
    for want in [
        "verdict overall: superpages ",
        "suggested memlock: ",
        "LimitMEMLOCK=",
        "plain model, 64 entries per page size; not a real part",
        "leaves (layout)",
        "map charge",
        "left out of the totals",
    ] {
        assert!(text.contains(want), "{want:?} in {text}");
    }
    assert_eq!(gpa.status.code(), Some(2));
    let err = String::from_utf8_lossy(&gpa.stderr);
    assert!(
        err.contains("--gpa") && err.contains("selected mapping"),
        "{err}"
    );
}

/// The first kernel thread visible in /proc (PF_KTHREAD, 0x00200000, in the stat flags).
fn a_kernel_thread() -> Option<u32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let after = &stat[stat.rfind(')')? + 1..];
        let flags: u64 = after.split_whitespace().nth(6)?.parse().ok()?;
        if flags & 0x0020_0000 != 0 {
            return Some(pid);
        }
    }
    None
}

/// Issue 14: a kernel thread has no user memory; the error says so instead of guessing.
#[test]
fn inspect_of_a_kernel_thread_says_it_is_one() {
    let Some(pid) = a_kernel_thread() else {
        eprintln!("no kernel thread visible here (a pid namespace): nothing to test");
        return;
    };
    let o = type1()
        .args(["inspect", "--pid", &pid.to_string()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("pid {pid} ("))
            && err.contains(") is a kernel thread: it has no user address space"),
        "{err}"
    );
}

/// A zombie has no address space left: the error names it.
#[test]
fn inspect_of_a_zombie_says_it_is_one() {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    // Not reaped yet: wait until the kernel shows it as a zombie (state Z).
    let zombie = (0..2000).any(|_| {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let z = s
            .rfind(')')
            .is_some_and(|i| s[i + 1..].trim_start().starts_with('Z'));
        if !z {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        z
    });
    let o = type1()
        .args(["inspect", "--pid", &pid.to_string()])
        .output()
        .unwrap();
    child.wait().unwrap();
    assert!(zombie, "the child never became a zombie");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "pid {pid} (true) has no address space left (a zombie"
        )),
        "{err}"
    );
}

/// Issue 14: a refused /proc read names the real cause: another user's process, or the
/// root-only /proc/kpageflags. Runs the command as `nobody` (needs root and setpriv).
#[test]
fn a_denied_proc_names_the_real_cause() {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    let setpriv = Command::new("setpriv").arg("--version").output();
    if !root || setpriv.is_err() {
        eprintln!("needs root and setpriv to run as another user: nothing to test");
        return;
    }
    let bin = env!("CARGO_BIN_EXE_type1");
    let as_nobody = |script: &str| {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "sh",
                "-c",
                script,
                "sh",
                bin,
            ])
            .output()
            .unwrap()
    };
    // The binary must be reachable by nobody (it is not under a private home).
    let probe = as_nobody("test -x \"$1\"");
    if probe.status.code() != Some(0) {
        eprintln!("nobody cannot run {bin}: nothing to test");
        return;
    }
    let o = as_nobody("exec \"$1\" inspect --pid 1");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("/proc/1/maps: Permission denied")
            && err.contains("belongs to uid 0 and this runs as uid 65534"),
        "{err}"
    );
    // Its own process: the maps and pagemap open, /proc/kpageflags does not.
    let o = as_nobody("exec \"$1\" inspect --pid $$");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("/proc/kpageflags: Permission denied")
            && err.contains("readable by root only (mode 0400)"),
        "{err}"
    );
}
