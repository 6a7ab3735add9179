//! `type1 plan`: the acceptance of its numbers, and every advice line applied — given back to
//! the planner, its emitted traces then replay cleanly on the engine.

use std::process::Command;

use serde_json::Value;
use type1_cli::plan::{Backing, Plan, Report};
use type1_cli::runner::{replay, Options};
use type1_cli::trace;

const G: u64 = 1 << 30;
const M: u64 = 1 << 20;

fn plan(ram: u64) -> Plan {
    Plan {
        ram,
        ..Plan::default()
    }
}

fn run(p: &Plan) -> Report {
    p.run().unwrap_or_else(|e| panic!("{p:?}: {e}"))
}

/// Replays every container's emitted trace; true when all of them replay cleanly.
fn emitted_traces_replay_cleanly(p: &Plan, r: &Report) -> bool {
    p.traces(r).iter().all(|text| {
        let t = trace::parse(text).unwrap();
        replay(&t, &Options::default(), &mut |_| {}).exit_code() == 0
    })
}

fn advice<'a>(r: &'a Report, kind: &str) -> &'a type1_cli::plan::Advice {
    r.advice
        .iter()
        .find(|a| a.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} advice in {:?}", r.advice))
}

fn type1_json(args: &[&str]) -> (Value, i32) {
    let out = Command::new(env!("CARGO_BIN_EXE_type1"))
        .arg("plan")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (v, out.status.code().unwrap())
}

#[test]
fn a_virtual_iommu_charges_each_device_all_of_ram_and_a_shared_container_once() {
    let (one, _) = type1_json(&["--ram", "8G"]);
    let (two_viommu, _) = type1_json(&["--ram", "8G", "--devices", "2", "--viommu"]);
    let (two_shared, _) = type1_json(&["--ram", "8G", "--devices", "2"]);
    let m = |v: &Value| v["memlock_bytes"].as_u64().unwrap();
    assert!(m(&one) > 8 * G - M, "{one}");
    assert_eq!(m(&two_viommu), 2 * m(&one));
    assert_eq!(m(&two_shared), m(&one));
    assert_eq!(two_viommu["containers"], 2);
    assert_eq!(two_shared["containers"], 1);
}

#[test]
fn two_mib_registrations_of_256g_overflow_the_entry_limit_and_the_chunk_advice_is_the_smallest_that_fits(
) {
    let (v, code) = type1_json(&["--ram", "256G", "--registrations", "2M"]);
    assert_eq!(code, 1);
    assert_eq!(v["fits"], false);
    assert_eq!(v["dma_entry_limit"], 65535);
    assert!(v["dma_entries"].as_u64().unwrap() > 65535, "{v}");
    let chunk = v["advice"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "chunk")
        .unwrap()["value"]
        .as_u64()
        .unwrap();
    assert_eq!(chunk, 8 * M);
    let with = |c: u64| Plan {
        registrations: Some(c),
        ..plan(256 * G)
    };
    let fitting = with(chunk);
    let r = run(&fitting);
    assert!(r.fits, "{:?}", r.problems);
    assert!(r.dma_entries <= 65535);
    assert!(emitted_traces_replay_cleanly(&fitting, &r));
    let half = with(chunk / 2);
    let r = run(&half);
    assert!(!r.fits);
    assert!(!emitted_traces_replay_cleanly(&half, &r));
}

#[test]
fn ram_above_a_39_bit_width_does_not_fit_and_the_width_needed_is_named() {
    let (v, code) = type1_json(&["--ram", "512G", "--aw-bits", "39"]);
    assert_eq!(code, 1);
    assert_eq!(v["fits"], false);
    let problems = v["problems"].to_string();
    assert!(
        problems.contains("RAM above 4G") && problems.contains("39-bit"),
        "{problems}"
    );
    let aw = v["advice"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "address-width")
        .unwrap()["value"]
        .as_u64()
        .unwrap();
    assert_eq!(aw, 40);
    let p = Plan {
        aw_bits: Some(39),
        ..plan(512 * G)
    };
    assert!(!emitted_traces_replay_cleanly(&p, &run(&p)));
    let p = Plan {
        aw_bits: Some(aw as u32),
        ..plan(512 * G)
    };
    let r = run(&p);
    assert!(r.fits, "{:?}", r.problems);
    assert!(emitted_traces_replay_cleanly(&p, &r));
}

#[test]
fn a_hugetlb_1g_guest_gets_1g_leaves_for_all_ram_above_4g() {
    let p = Plan {
        backing: Backing::Hugetlb1g,
        ..plan(8 * G)
    };
    let r = run(&p);
    assert!(r.fits);
    // q35 puts 2G below 4G (0-640K and 1M-2G: one 1G leaf, at 1G) and 6G above.
    let l = |s: u64| r.leaves.get(&s).copied().unwrap_or(0);
    assert_eq!(l(G), 6 + 1);
    assert_eq!(
        l(4096) * 4096 + l(2 * M) * 2 * M,
        2 * G - G - (M - 640 * 1024)
    );
}

#[test]
fn bars_are_mapped_and_never_charged() {
    let without = run(&Plan {
        devices: 2,
        ..plan(4 * G)
    });
    let p = Plan {
        devices: 2,
        bars: vec![16 * M, 256 * M],
        ..plan(4 * G)
    };
    let with = run(&p);
    assert_eq!(with.memlock_bytes, without.memlock_bytes);
    assert_eq!(with.dma_entries, without.dma_entries + 4);
    assert!(with.fits);
    assert!(emitted_traces_replay_cleanly(&p, &with));
}

#[test]
fn the_memlock_advice_applied_fits_and_a_page_less_does_not() {
    for (devices, viommu) in [(1, false), (2, true)] {
        let base = Plan {
            devices,
            viommu,
            memlock: Some(G),
            ..plan(6 * G)
        };
        let r = run(&base);
        assert!(!r.fits);
        let a = advice(&r, "memlock");
        let value = a.value.unwrap();
        assert!(a.text.contains(&format!("ulimit -l {}", value / 1024)));
        assert!(a.text.contains(&format!("LimitMEMLOCK={value}")));
        let applied = Plan {
            memlock: Some(value),
            ..base.clone()
        };
        let r = run(&applied);
        assert!(r.fits, "{:?}", r.problems);
        assert!(emitted_traces_replay_cleanly(&applied, &r));
        let short = Plan {
            memlock: Some(value - 4096),
            ..base
        };
        let r = run(&short);
        assert!(!r.fits);
        assert!(!emitted_traces_replay_cleanly(&short, &r));
    }
}

#[test]
fn the_block_advice_applied_fits_the_entry_limit() {
    let base = Plan {
        virtio_mem: Some((16 * G, 2 * M)),
        dma_entry_limit: 1000,
        ..plan(4 * G)
    };
    let r = run(&base);
    assert!(!r.fits);
    let block = advice(&r, "block").value.unwrap();
    assert_eq!(block, 32 * M);
    let applied = Plan {
        virtio_mem: Some((16 * G, block)),
        ..base.clone()
    };
    let r = run(&applied);
    assert!(r.fits, "{:?}", r.problems);
    assert!(emitted_traces_replay_cleanly(&applied, &r));
    let half = Plan {
        virtio_mem: Some((16 * G, block / 2)),
        ..base
    };
    assert!(!run(&half).fits);
}

#[test]
fn the_alignment_advice_applied_gives_superpages() {
    let base = Plan {
        backing: Backing::Thp,
        registrations: Some(64 * 1024),
        ..plan(4 * G)
    };
    let r = run(&base);
    assert_eq!(r.leaves.get(&(2 * M)).copied().unwrap_or(0), 0);
    let a = advice(&r, "alignment");
    assert_eq!(a.value, Some(2 * M));
    let applied = Plan {
        registrations: a.value,
        ..base
    };
    let r = run(&applied);
    // 2M chunks from 4G are 2M-aligned: all 2G there in 2M leaves (and more below 4G).
    assert!(r.leaves[&(2 * M)] >= 1024, "{:?}", r.leaves);
    assert!(r.fits);
    assert!(emitted_traces_replay_cleanly(&applied, &r));
}

#[test]
fn an_emitted_trace_replays_through_the_command_line() {
    let path = std::env::temp_dir().join(format!("type1-plan-{}.trace", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_type1"))
        .args([
            "plan",
            "--ram",
            "4G",
            "--devices",
            "2",
            "--viommu",
            "--emit-trace",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let second = type1_cli::plan::emitted_path(&path, 1);
    for p in [&path, &second] {
        let r = Command::new(env!("CARGO_BIN_EXE_type1"))
            .arg("replay")
            .arg(p)
            .output()
            .unwrap();
        assert!(r.status.success(), "{r:?}");
        std::fs::remove_file(p).unwrap();
    }
}

#[test]
fn bad_input_names_the_option_and_what_is_valid() {
    let err = |p: Plan| p.run().unwrap_err();
    assert!(err(plan(0)).starts_with("--ram 0"));
    let e = err(Plan {
        registrations: Some(3 * 1024),
        ..plan(4 * G)
    });
    assert!(
        e.starts_with("--registrations 3K") && e.contains("multiple"),
        "{e}"
    );
    let e = err(Plan {
        aw_bits: Some(39),
        ..plan(1 << 40)
    });
    assert!(
        e.starts_with("--aw-bits 39") && e.contains("40 or more"),
        "{e}"
    );
    let e = err(Plan {
        devices: 0,
        ..plan(4 * G)
    });
    assert!(e.starts_with("--devices 0"), "{e}");
    let e = err(Plan {
        backing: Backing::Hugetlb1g,
        ..plan(G + G / 2)
    });
    assert!(e.starts_with("--ram 1.5G") && e.contains("1G or 2G"), "{e}");
    let e = err(Plan {
        virtio_mem: Some((G, 3 * M)),
        ..plan(4 * G)
    });
    assert!(e.starts_with("--block 3M"), "{e}");
    let out = Command::new(env!("CARGO_BIN_EXE_type1"))
        .args(["plan", "--ram", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
