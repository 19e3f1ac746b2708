//! The binary's contract: bad arguments give one line on stderr and exit 2;
//! `--json` prints one JSON array; `--plot` writes an SVG.

use std::process::Command;

fn poolbench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_poolbench"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn bad_arguments_one_line_exit_2() {
    for args in [
        &["--gro", "0"][..],
        &["--bogus"],
        &["--strategies", "spin"],
        &["--duration-ms", "x"],
    ] {
        let out = poolbench(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("poolbench: "), "{err}");
    }
}

#[test]
fn json_and_plot() {
    let dir = std::env::temp_dir().join(format!("poolbench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("p.svg");
    let out = poolbench(&[
        "--strategies",
        "packed,locked",
        "--threads",
        "1",
        "--gro",
        "4",
        "--duration-ms",
        "10",
        "--repeats",
        "1",
        "--no-pin",
        "--json",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["gro"], 4);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.contains("<svg") && text.contains("packed gro4"),
        "{}",
        &text[..200.min(text.len())]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
