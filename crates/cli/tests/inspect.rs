//! `type1 inspect`: on another running process and on its own demo regions, as a person runs
//! it, with the report and with --json. (The counts themselves are checked against pagemap read
//! independently in crates/type1/tests/inspect.rs.)

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
