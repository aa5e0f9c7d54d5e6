//! The default mode against this repository's `parley`: sytest starts it, restarts it and
//! passes. Runs a few groups (the whole suite runs from scripts/test.sh); skipped, with a
//! note, when `parley` has not been built next to `sytest`.

use std::path::PathBuf;
use std::process::Command;

fn parley_binary() -> Option<PathBuf> {
    let sytest = PathBuf::from(env!("CARGO_BIN_EXE_sytest"));
    let parley = sytest.parent()?.join("parley");
    parley.is_file().then_some(parley)
}

fn run(extra: &[&str]) -> (bool, Vec<String>) {
    let output = Command::new(env!("CARGO_BIN_EXE_sytest"))
        .args([
            "--filter",
            "versions",
            "--filter",
            "restart",
            "--filter",
            "tokens/expired*",
        ])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    (
        output.status.success(),
        stdout.lines().map(str::to_owned).collect(),
    )
}

#[test]
fn self_started_parley_passes_on_sqlite() {
    if parley_binary().is_none() {
        eprintln!("parley is not built next to sytest; build parley-homeserver to run this test");
        return;
    }
    let (success, lines) = run(&[]);
    let report = lines.join("\n");
    assert!(success, "{report}");
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("ok   ")).count(),
        lines.len() - 1,
        "{report}"
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l.ends_with(" passed, 0 failed")),
        "{report}"
    );
}

#[test]
fn self_started_parley_passes_on_postgres() {
    let Ok(url) = std::env::var("PARLEY_TEST_POSTGRES_URL") else {
        eprintln!("PARLEY_TEST_POSTGRES_URL is not set; skipping");
        return;
    };
    if parley_binary().is_none() {
        eprintln!("parley is not built next to sytest; build parley-homeserver to run this test");
        return;
    }
    let (success, lines) = run(&["--db", "postgres", "--postgres-url", &url]);
    let report = lines.join("\n");
    assert!(success, "{report}");
    assert!(
        lines
            .last()
            .is_some_and(|l| l.ends_with(" passed, 0 failed")),
        "{report}"
    );
}
