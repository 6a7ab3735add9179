//! The fuzz targets on the stable toolchain: the same functions `cargo fuzz run parse|replay`
//! runs (fuzz/src/targets.rs, included here), fed a few thousand inputs mutated
//! deterministically from every trace of the repository, so CI exercises what the long
//! libFuzzer runs exercise. A panic is a finding: the input is printed for a regression test.

#[path = "../../../fuzz/src/targets.rs"]
#[allow(dead_code)]
mod targets;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use targets::{mutate, parse_target, replay_target, Rng};

fn seeds() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in ["tests/traces", "tests/kernel", "kernel", "examples"] {
        let Ok(rd) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        files.extend(
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "trace")),
        );
    }
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// Runs `target` on `n` inputs mutated from the seeds; panics naming the first input that
/// made the target panic. Returns how many inputs the target counted as run (non-zero).
fn smoke(n: usize, seed: u64, target: fn(&[u8]) -> usize) -> usize {
    let seeds = seeds();
    assert!(seeds.len() >= 10, "only {} seed traces found", seeds.len());
    let mut rng = Rng::new(seed);
    // Every seed as it is first, then mutants (some of mutants).
    let mut pool: Vec<Vec<u8>> = seeds.clone();
    let mut ran = 0;
    for i in 0..n {
        let input = if i < seeds.len() {
            seeds[i].clone()
        } else {
            let base = &pool[rng.below(pool.len())];
            mutate(base, &mut rng)
        };
        match catch_unwind(AssertUnwindSafe(|| target(&input))) {
            Ok(0) => {}
            Ok(_) => {
                ran += 1;
                if i % 8 == 0 && pool.len() < 4 * seeds.len() {
                    pool.push(input);
                }
            }
            Err(_) => panic!(
                "input {i} (seed {seed}) made the target panic:\n{}",
                String::from_utf8_lossy(&input)
            ),
        }
    }
    ran
}

#[test]
fn parse_target_survives_mutated_traces() {
    let n = 4000;
    let parsed = smoke(n, 1, |d| usize::from(parse_target(d).is_some()));
    eprintln!("{parsed} of {n} inputs parsed");
    // The mutants are mostly near-misses: enough of them still parse to reach the round trip,
    // enough fail to reach the errors.
    assert!(
        parsed > n / 10 && parsed < n * 9 / 10,
        "{parsed} of {n} parsed"
    );
}

#[test]
fn replay_target_survives_mutated_traces() {
    let n = 3000;
    let replayed = smoke(n, 2, replay_target);
    eprintln!("{replayed} of {n} inputs replayed");
    assert!(replayed > n / 10, "only {replayed} of {n} replayed");
}

/// What the targets return for a clean trace: it parses, round-trips, and replays alike with
/// the three strategies (the target panics otherwise).
#[test]
fn the_targets_accept_a_clean_trace() {
    let src = b"container type1v2\n\
        domain d0\n\
        mmap ram size=4M backing=hugetlb-2m\n\
        map vaddr=ram iova=1G size=4M => ok locked=+1024\n\
        unmap iova=1G size=4M => ok size=4M locked=-1024\n";
    let t = parse_target(src).expect("parses");
    assert_eq!(t.stmts.len(), 5);
    assert_eq!(replay_target(src), 3, "all three strategies replay it");
}

/// Binary input is refused by the reader before the parser sees it.
#[test]
fn the_parse_target_refuses_binary_input() {
    assert!(parse_target(b"container\n\0\0\0").is_none());
    assert!(parse_target(b"container\n\xff\xfe").is_none());
}
