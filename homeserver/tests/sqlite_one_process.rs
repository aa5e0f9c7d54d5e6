//! SQLite serves one process: a second `parley serve` on the same data directory refuses to
//! start, with a message that says why, and the first one keeps serving.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn serve(data_dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_parley"));
    command
        .args([
            "serve",
            "--server-name",
            "one.example",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("PARLEY_CONFIG")
        .env_remove("PARLEY_DATABASE")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    command
}

#[test]
fn a_second_server_on_the_same_sqlite_database_refuses_to_start_and_the_first_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = serve(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(first.stdout.take().unwrap()).lines();
    let url = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(url) = line.strip_prefix("parley listening on ") {
                    break url.to_owned();
                }
            }
            _ => panic!("the first server exited before listening"),
        }
    };

    let second = serve(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(second.wait_with_output());
    });
    let output = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the second server did not exit")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the second server started");
    assert!(
        stderr.contains("in use by another parley process"),
        "no clear message: {stderr}"
    );

    // The first one still answers.
    let status = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(reqwest::get(format!("{url}/_parley/client/versions")))
        .unwrap()
        .status();
    assert!(status.is_success());
    first.kill().unwrap();
    let _ = first.wait();
}
