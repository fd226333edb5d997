//! A store path that is not a healthy Floe store gives a clear error and is left untouched.

use std::path::Path;

use floe::Store;

fn listing(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| {
            let path = entry.expect("entry").path();
            let bytes = if path.is_file() {
                std::fs::read(&path).expect("read")
            } else {
                Vec::new()
            };
            (path.display().to_string(), bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn a_foreign_directory_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("notes.txt"), "my thesis, do not delete").expect("write");
    let before = listing(dir.path());
    let err = Store::open(dir.path())
        .expect_err("not a store")
        .to_string();
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
    assert!(err.contains("not a floe store"), "{err}");
    assert_eq!(listing(dir.path()), before);
}

#[test]
fn a_corrupt_store_is_refused_with_its_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    {
        let store = Store::open(&path).expect("create");
        store.flush().expect("flush");
    }
    for entry in std::fs::read_dir(&path).expect("read dir") {
        let file = entry.expect("entry").path();
        if file.is_file() {
            std::fs::write(&file, b"\xffgarbage that is not sled\x00\x01").expect("corrupt");
        }
    }
    let err = Store::open(&path).expect_err("corrupt").to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
}

#[test]
fn the_cli_reports_a_foreign_store_without_touching_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("data.csv"), "a,b\n1,2\n").expect("write");
    let before = listing(dir.path());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_floe"))
        .args([
            "results",
            "--pipeline",
            "shop",
            "--job",
            "top_cities_weekly",
            "--partition",
            "2024-01-01",
        ])
        .arg("--store")
        .arg(dir.path())
        .arg("--pipelines")
        .arg(super::common::repo_path("pipelines"))
        .output()
        .expect("run floe");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a floe store"), "{stderr}");
    assert_eq!(listing(dir.path()), before);
}
