//! A tiny run of the load test (`secretfs_e2e::load`, `e2e/src/load/`; the
//! full version is the `load-test` binary, run by `scripts/load-test.sh`)
//! so it cannot rot: the real `secretfs node` (this build), 10 volumes,
//! 2,000 reads, one rotation. No timing assertions:
//! only correctness (no failed, torn or stale reads; every file reaches its
//! new version; nothing stays mounted). Needs root and /dev/fuse
//! (SECRETFS_SKIP_FUSE_TESTS=1 skips).

use secretfs_e2e::load;

#[test]
fn a_small_load_runs_clean() {
    if !secretfs_e2e::prereq::fuse_available() {
        return;
    }
    let config = load::Config::smoke(env!("CARGO_BIN_EXE_secretfs").into());
    let report = load::run(&config).unwrap();
    println!("{report}");
    assert!(report.failures().is_empty(), "{report}");
    assert_eq!(report.volumes, 10);
    assert_eq!(report.secretfs.reads, 2_000);
    assert_eq!(report.tmpfs.reads, 2_000);
    assert!(report.versions_written > 0, "{report}");
    assert_eq!(report.converged, report.files, "{report}");
}
