//! A short soak run (`bench/soak/run`, 1.5 minutes): TCP streams checked by sha256,
//! UDP, DNS and published ports while a hostile container floods the daemon, `stats`
//! is asked without pause and the daemon is killed with -9 and restarted twice. The
//! run fails when a stream loses or corrupts bytes outside the restarts, or when the
//! daemon's RSS or descriptors climb after its warm-up (which waits for the flooder's
//! fill and the first turnover of the uplink's connections: `bench/soak/judge.py`, fed
//! synthetic series of both and of leaks by `bench/soak/test_judge.py`, run below).

// Test code: a failed step is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn a_short_soak_loses_no_byte_and_holds_its_memory() {
    require_root();
    require(&["ip", "dnsmasq"]);
    let scapy = sh("/usr/bin/python3 -c 'import scapy.all'");
    assert!(
        scapy.status.success(),
        "this test needs scapy (Debian python3-scapy): run `bash scripts/test`"
    );
    let out = TempDir::new("soak");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/soak/run");
    let o = sh(&format!(
        "{script} --minutes 1.5 --vswitch {} --out {}",
        bin(),
        out.path().display()
    ));
    let report = o.stdout_text();
    println!("{report}");
    assert!(
        o.status.success(),
        "the soak found problems:\n{report}\n{}",
        o.stderr_text()
    );
    let results = std::fs::read_to_string(out.path().join("results.json")).expect("results");
    let v: serde_json::Value = serde_json::from_str(&results).expect("json");
    // Every stream moved data and the floods ran (the controls of a quiet run).
    for s in ["c1-host", "c1-c2", "pub-lo", "pub-main"] {
        assert!(
            v["tcp"][s]["ok"].as_u64().unwrap_or(0) > 0,
            "stream {s}: {}",
            v["tcp"][s]
        );
    }
    assert!(
        v["flood"]["syn"].as_u64().unwrap_or(0) > 1000,
        "{}",
        v["flood"]
    );
    assert!(
        v["dns"]["answered"].as_u64().unwrap_or(0) > 0,
        "{}",
        v["dns"]
    );
    assert!(std::fs::metadata(out.path().join("soak.svg")).is_ok());
}

/// The soak's judge, fed synthetic series: a late fill, or the step of the uplink's
/// first turnover of connections, followed by a plateau is no climb, while a leak
/// (after a fill, after the turnover, with connections rising to the end, with none)
/// and descriptors that climb are; and without the fill or the turnover to follow the
/// same steps read as a climb (the controls).
#[test]
fn the_soak_judge_tells_a_late_fill_from_a_leak() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/soak/test_judge.py");
    let o = sh(&format!("python3 {script} -v"));
    let out = o.stderr_text();
    println!("{out}");
    assert!(o.status.success(), "the judge's tests failed:\n{out}");
    assert!(out.contains("Ran 11 tests"), "{out}");
}
