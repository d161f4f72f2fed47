//! Replays every input kept under `tests/fuzz/regressions/<target>/` through the same
//! target bodies the cargo-fuzz binaries run, so an input that once crashed a parser
//! is checked by every `cargo test` without nightly or cargo-fuzz.

#[path = "fuzz/targets.rs"]
mod targets;

use std::path::Path;

#[test]
fn kept_fuzz_inputs_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/regressions");
    let mut replayed = 0;
    for target in targets::TARGETS {
        let folder = root.join(target);
        let entries = std::fs::read_dir(&folder)
            .unwrap_or_else(|error| panic!("reading {}: {error}", folder.display()));
        for entry in entries {
            let path = entry.expect("folder entry").path();
            let data = std::fs::read(&path)
                .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
            eprintln!("replaying {}", path.display());
            targets::run(target, &data);
            replayed += 1;
        }
    }
    assert!(
        replayed >= targets::TARGETS.len(),
        "only {replayed} inputs replayed"
    );
}
