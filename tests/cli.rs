//! The CLI as a user meets it: `vswitch bench`, help, and bad input.

// Test code: a failed step is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{OutputText, TempDir, vswitch};

#[test]
fn bench_l2_json_has_the_specified_shape() {
    let out = vswitch(&["bench", "--scenario", "l2", "--seconds", "0.3", "--json"]);
    assert!(out.status.success(), "{}", out.stderr_text());
    let v: serde_json::Value =
        serde_json::from_str(out.stdout_text().trim()).expect("one JSON document");
    let results = v["results"].as_array().expect("results list");
    assert_eq!(results.len(), 1);
    let r = &results[0];
    assert_eq!(r["scenario"], "l2");
    assert!(r["mpps_per_core"].as_f64().is_some_and(|x| x > 0.0));
    assert!(r["ns_per_frame"].as_f64().is_some_and(|x| x > 0.0));
    assert!(r["frames"].as_u64().is_some_and(|x| x > 0));
    assert_eq!(r["workers"], 1);
    assert_eq!(r["fdb_entries"], 1024);
}

#[test]
fn bench_all_runs_every_scenario_and_names_skipped_ones() {
    let out = vswitch(&["bench", "--scenario", "all", "--seconds", "0.2", "--json"]);
    assert!(out.status.success(), "{}", out.stderr_text());
    let v: serde_json::Value = serde_json::from_str(out.stdout_text().trim()).expect("JSON");
    let names: Vec<&str> = v["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["scenario"].as_str())
        .collect();
    let skipped: Vec<&str> = v["skipped"]
        .as_array()
        .expect("skipped")
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    for s in ["l2", "vlan", "nat"] {
        assert!(
            names.contains(&s) ^ skipped.contains(&s),
            "{s} neither run nor skipped"
        );
    }
    assert!(names.contains(&"l2") && names.contains(&"vlan"));
}

#[test]
fn bench_two_workers() {
    let out = vswitch(&[
        "bench",
        "--scenario",
        "vlan",
        "--workers",
        "2",
        "--seconds",
        "0.3",
        "--json",
    ]);
    assert!(out.status.success(), "{}", out.stderr_text());
    let v: serde_json::Value = serde_json::from_str(out.stdout_text().trim()).expect("JSON");
    assert_eq!(v["results"][0]["workers"], 2);
}

#[test]
fn bad_bench_and_daemon_arguments_get_one_clear_line() {
    for args in [
        vec!["bench", "--frame-size", "20"],
        vec!["bench", "--macs", "0"],
        vec!["bench", "--workers", "0"],
        vec!["bench", "--seconds", "-1"],
        vec!["daemon", "--workers", "0"],
        vec!["daemon", "--max-flows", "3"],
        vec!["daemon", "--fdb-aging", "0"],
        vec!["daemon", "--mac-limit", "0"],
        vec!["daemon", "--fdb-limit", "99999999999"],
        vec!["daemon", "--fdb-limit", "8388608"],
        vec!["daemon", "--max-flows", "8388608"],
        vec!["daemon", "--default-mtu", "20"],
        vec!["daemon", "--upstream-dns", "nowhere"],
    ] {
        let out = vswitch(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = out.stderr_text();
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("vswitch: "), "{args:?}: {err}");
        assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"));
    }
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let out = vswitch(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr_text().contains("frobnicate"));
}

#[test]
fn completions_for_every_shell_and_man_pages_for_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let out = vswitch(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", out.stderr_text());
        assert!(
            out.stdout_text().contains("rate-out"),
            "{shell}: no --rate-out"
        );
    }
    let dir = TempDir::new("shpman");
    let out = vswitch(&["man", &dir.path().display().to_string()]);
    assert!(out.status.success(), "{}", out.stderr_text());
    for page in [
        "vswitch.1",
        "vswitch-daemon.1",
        "vswitch-ctl-limit.1",
        "vswitch-run.1",
    ] {
        assert!(dir.path().join(page).exists(), "no {page}");
    }
    let bad = vswitch(&["completions", "tcsh"]);
    assert!(!bad.status.success());
}
