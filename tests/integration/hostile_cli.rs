//! The hostile-input corpus of the command line: `floe validate` over broken YAML of every
//! kind, through the real binary. Every case must end with exit code 2 (0 for the valid ones),
//! name the file, say what is wrong, never panic, and return within a time bound: a FIFO once
//! blocked it forever.
//!
//! The cases are written by the test into a temporary folder (binary content, multi-megabyte
//! files, symlinks and FIFOs do not belong in the repository).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::repo_path;

/// A debug binary takes well under a second on every case; the bound leaves room for a
/// loaded CI machine and still catches a hang.
const BOUND: Duration = Duration::from_secs(20);

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `floe validate <args>`, killed and failed if it outlives [`BOUND`].
fn validate(dir: &Path, args: &[&Path]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_floe"))
        .arg("validate")
        .args(args)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run floe");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait for floe").is_some() {
            break;
        }
        if started.elapsed() > BOUND {
            let _ = child.kill();
            let _ = child.wait();
            panic!("floe validate {args:?} did not return within {BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = child.wait_with_output().expect("read floe's output");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn shop() -> String {
    fs::read_to_string(repo_path("pipelines/shop.yaml")).expect("read shop.yaml")
}

/// `shop.yaml` with `from` replaced by `to`, which must occur in it.
fn shop_with(from: &str, to: &str) -> String {
    let text = shop();
    assert!(text.contains(from), "shop.yaml no longer holds `{from}`");
    text.replacen(from, to, 1)
}

/// A billion laughs: nine levels of nine aliases each, under the one key whose value may be
/// any YAML (a Rust job's `config`).
fn billion_laughs() -> String {
    let mut config =
        String::from("        l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for level in 1..=9 {
        let previous = format!("*l{}", level - 1);
        config.push_str(&format!(
            "        l{level}: &l{level} [{}]\n",
            [previous.as_str(); 9].join(", ")
        ));
    }
    format!(
        "{}  custom:\n    grain: hourly\n    from: events\n    rust:\n      class: nope\n      \
         config:\n{config}",
        shop()
    )
}

/// The cases: a file name, its bytes, and a part of the expected message (`None`: valid).
fn cases() -> Vec<(&'static str, Vec<u8>, Option<&'static str>)> {
    let deep_block: String = (0..2_000)
        .map(|depth| format!("{}k{depth}:\n", "  ".repeat(depth + 1)))
        .collect();
    vec![
        ("valid.yaml", shop().into_bytes(), None),
        (
            "syntax.yaml",
            shop_with("name: shop\n", "name: \"shop\n").into_bytes(),
            Some("did not find expected key"),
        ),
        (
            "unclosed_flow.yaml",
            b"version: 1\nname: x\nsources: {events: {format: csv\n".to_vec(),
            Some("did not find expected ',' or '}'"),
        ),
        (
            "wrong_type_version.yaml",
            shop_with("version: 1", "version: \"one\"").into_bytes(),
            Some("version: invalid type: string \"one\", expected u32"),
        ),
        (
            "wrong_type_n.yaml",
            shop_with("n: 10", "n: -3").into_bytes(),
            Some("expected u32"),
        ),
        (
            "wrong_type_jobs.yaml",
            b"version: 1\nname: x\ntimezone: UTC\nstart: 2024-01-01T00:00:00Z\nsources: {}\njobs: 5\n"
                .to_vec(),
            Some("jobs: invalid type: integer `5`"),
        ),
        (
            "huge_integer.yaml",
            shop_with("version: 1", "version: 99999999999999999999999").into_bytes(),
            Some("expected u32"),
        ),
        (
            "unknown_key.yaml",
            format!("{}colour: red\n", shop()).into_bytes(),
            Some("unknown field `colour`"),
        ),
        (
            "unknown_job_key.yaml",
            shop_with("    retries: 2\n", "    retries: 2\n    retry: 3\n").into_bytes(),
            Some("unknown field `retry`"),
        ),
        (
            "duplicate_key.yaml",
            shop_with("name: shop\n", "name: shop\nname: shop2\n").into_bytes(),
            Some("duplicate field `name`"),
        ),
        (
            "duplicate_job.yaml",
            format!(
                "{}  purchases_hourly:\n    grain: hourly\n    from: events\n    select: {{}}\n",
                shop()
            )
            .into_bytes(),
            Some("duplicate name `purchases_hourly`"),
        ),
        (
            "billion_laughs.yaml",
            billion_laughs().into_bytes(),
            Some("repetition limit exceeded"),
        ),
        (
            "deep_block.yaml",
            format!("version: 1\nname: x\nsources:\n{deep_block}").into_bytes(),
            Some("unknown field `k1`"),
        ),
        (
            "deep_block_sequence.yaml",
            format!("{}x\n", "- ".repeat(50_000)).into_bytes(),
            Some("invalid type: sequence"),
        ),
        (
            "deep_flow.yaml",
            format!(
                "version: 1\nname: x\nsources: {}{}\n",
                "[".repeat(100_000),
                "]".repeat(100_000)
            )
            .into_bytes(),
            Some("nested about 100000 deep; the limit is 64"),
        ),
        (
            "deep_flow_mapping.yaml",
            format!(
                "version: 1\nname: x\nsources: {}1{}\n",
                "{a: ".repeat(50_000),
                "}".repeat(50_000)
            )
            .into_bytes(),
            Some("the limit is 64"),
        ),
        (
            "huge_scalar.yaml",
            shop_with(
                "description: E-commerce events rolled up hourly, daily and weekly",
                &format!("description: {}", "x".repeat(8 << 20)),
            )
            .into_bytes(),
            None,
        ),
        (
            "huge_key.yaml",
            format!("{}{}: 1\n", shop(), "k".repeat(2 << 20)).into_bytes(),
            Some("could not find expected ':'"),
        ),
        (
            "nul_byte.yaml",
            shop_with("name: shop", "name: sh\0op").into_bytes(),
            Some("control characters are not allowed"),
        ),
        (
            "invalid_utf8.yaml",
            [b"version: 1\nname: ".as_slice(), b"\xff\xfe\xc3\x28\n"].concat(),
            Some("stream did not contain valid UTF-8"),
        ),
        (
            "bom.yaml",
            [b"\xef\xbb\xbf".as_slice(), shop().as_bytes()].concat(),
            None,
        ),
        (
            "crlf.yaml",
            shop().replace('\n', "\r\n").into_bytes(),
            None,
        ),
        (
            "tabs.yaml",
            b"version: 1\nname: x\nsources:\n\tevents:\n\t\tformat: csv\n".to_vec(),
            Some("found character that cannot start any token"),
        ),
        ("empty.yaml", Vec::new(), Some("missing field `version`")),
        (
            "comments_only.yaml",
            b"# nothing but a comment\n".to_vec(),
            Some("missing field `version`"),
        ),
        (
            "two_documents.yaml",
            format!("{}---\n{}", shop(), shop()).into_bytes(),
            Some("more than one document"),
        ),
        (
            "unknown_anchor.yaml",
            shop_with("name: shop", "name: *nowhere").into_bytes(),
            Some("unknown anchor"),
        ),
        (
            "tagged.yaml",
            shop_with("name: shop", "name: !!binary aGVsbG8=").into_bytes(),
            Some("must start with a letter"),
        ),
        (
            // polars-sql panicked on an interval it could not read: `floe validate` aborted.
            "bad_interval.yaml",
            shop_with(
                "filter: event = 'purchase'",
                "filter: ts > now() - INTERVAL 'soon'",
            )
            .into_bytes(),
            Some("holds the interval `soon`, which cannot be read"),
        ),
        (
            "control_chars.yaml",
            shop_with("name: shop", "name: \"sh\\u0007op\"").into_bytes(),
            Some("must start with a letter and contain only"),
        ),
    ]
}

fn assert_sound(run: &Run, what: &str) {
    for text in [&run.stdout, &run.stderr] {
        assert!(!text.contains("panicked"), "{what}: floe panicked:\n{text}");
        assert!(
            !text.contains("RUST_BACKTRACE"),
            "{what}: floe panicked:\n{text}"
        );
    }
}

#[test]
fn validate_reports_every_kind_of_broken_yaml_by_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut problems = Vec::new();
    for (name, bytes, expected) in cases() {
        let file = dir.path().join(name);
        fs::write(&file, &bytes).unwrap();
        let run = validate(dir.path(), &[&file]);
        assert_sound(&run, name);
        let shown = file.display().to_string();
        let problem = match expected {
            None if run.code != Some(0) => Some(format!("exit {:?}: {}", run.code, run.stderr)),
            None if !run.stdout.contains(&shown) || !run.stdout.contains("is valid") => {
                Some(format!("not reported valid: {}", run.stdout))
            }
            None => None,
            Some(_) if run.code != Some(2) => Some(format!(
                "exit {:?}: {}{}",
                run.code,
                run.stdout,
                excerpt(&run.stderr)
            )),
            Some(_) if !run.stderr.contains(&shown) => Some(format!(
                "the error does not name the file: {}",
                excerpt(&run.stderr)
            )),
            Some(message) if !run.stderr.contains(message) => {
                Some(format!("expected `{message}` in: {}", excerpt(&run.stderr)))
            }
            // The error is about the input, not a copy of it.
            Some(_) if run.stderr.len() > 4096 => {
                Some(format!("{} bytes of error", run.stderr.len()))
            }
            Some(_) => None,
        };
        if let Some(problem) = problem {
            problems.push(format!("{name}: {problem}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn validate_reports_paths_that_are_not_pipeline_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let missing = root.join("missing.yaml");
    let empty_folder = root.join("empty");
    fs::create_dir(&empty_folder).unwrap();
    let folder = root.join("pipelines");
    fs::create_dir(&folder).unwrap();
    fs::create_dir(folder.join("a-folder.yaml")).unwrap();
    fs::write(folder.join("shop.yaml"), shop()).unwrap();
    let mut cases: Vec<(PathBuf, PathBuf, &str)> = vec![
        (
            missing.clone(),
            missing.clone(),
            "cannot read file: No such file or directory",
        ),
        (
            empty_folder.clone(),
            empty_folder.clone(),
            "the folder holds no pipeline files",
        ),
        // A folder scanned: its pipeline is valid, the folder named like a pipeline file is
        // reported.
        (
            folder.clone(),
            folder.join("a-folder.yaml"),
            "cannot read file: Is a directory",
        ),
    ];
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::symlink;
        let looped = root.join("loop.yaml");
        symlink(&looped, &looped).unwrap();
        cases.push((
            looped.clone(),
            looped,
            "cannot read file: Too many levels of symbolic links",
        ));
        let pair = root.join("ping.yaml");
        symlink(root.join("pong.yaml"), &pair).unwrap();
        symlink(&pair, root.join("pong.yaml")).unwrap();
        cases.push((pair.clone(), pair, "Too many levels of symbolic links"));
        let dangling = root.join("dangling.yaml");
        symlink(root.join("gone.yaml"), &dangling).unwrap();
        cases.push((dangling.clone(), dangling, "No such file or directory"));
        // Reading these never ends: a FIFO blocks, a device streams forever.
        let fifo = root.join("fifo.yaml");
        let made = Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|status| status.success()) {
            cases.push((fifo.clone(), fifo, "not a regular file"));
        }
        let device = root.join("zero.yaml");
        symlink("/dev/zero", &device).unwrap();
        cases.push((device.clone(), device, "not a regular file"));
        // A file name that is not UTF-8.
        let odd = root.join(std::ffi::OsStr::from_bytes(b"odd-\xff.yaml"));
        fs::write(&odd, b"version: [").unwrap();
        cases.push((odd.clone(), odd, "odd-"));
    }
    for (arg, named, message) in &cases {
        let run = validate(root, &[arg]);
        let what = arg.display().to_string();
        assert_sound(&run, &what);
        assert_eq!(run.code, Some(2), "{what}: {}{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains(&named.display().to_string()),
            "{what}: the error does not name {}: {}",
            named.display(),
            run.stderr
        );
        assert!(
            run.stderr.contains(message),
            "{what}: expected `{message}` in: {}",
            run.stderr
        );
    }
    // Every problem of several arguments is reported at once.
    let args: Vec<&Path> = cases.iter().map(|(arg, _, _)| arg.as_path()).collect();
    let run = validate(root, &args);
    assert_sound(&run, "all at once");
    assert_eq!(run.code, Some(2));
    for (_, named, _) in &cases {
        assert!(
            run.stderr.contains(&named.display().to_string()),
            "{} is not reported among: {}",
            named.display(),
            run.stderr
        );
    }
}

fn excerpt(text: &str) -> &str {
    let end = text
        .char_indices()
        .nth(2_000)
        .map_or(text.len(), |(index, _)| index);
    &text[..end]
}
