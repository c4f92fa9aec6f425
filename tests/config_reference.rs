//! The configuration reference: every key in docs/configuration.md's table appears in
//! weiche.example.toml and the other way round, the example loads, and so does the example with
//! every commented-out key switched on (so each documented key is one the loader knows).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `section.key` for every key the example shows, set or commented out.
fn example_keys(text: &str) -> BTreeSet<String> {
    let mut section = String::new();
    let mut keys = BTreeSet::new();
    for line in text.lines() {
        let l = line.trim_start_matches('#').trim();
        if let Some(s) = l.strip_prefix("[[").and_then(|s| s.strip_suffix("]]")) {
            section = s.to_string();
        } else if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.to_string();
        } else if let Some((k, _)) = l.split_once(" = ") {
            if !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                keys.insert(format!("{section}.{k}"));
            }
        }
    }
    keys
}

/// `section.key` for every row of the reference table.
fn documented_keys(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect()
}

fn load(path: &Path) -> Result<(), String> {
    // --version parses and validates nothing; a bad backend address makes --help useless too,
    // so the binary is asked to check the file: it exits 2 with the reason when it is invalid.
    let out = Command::new(env!("CARGO_BIN_EXE_weiche"))
        .args(["--config", path.to_str().unwrap(), "--check-config"])
        .output()
        .expect("run weiche");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn the_reference_the_example_and_the_loader_agree() {
    let example = std::fs::read_to_string(format!("{ROOT}/weiche.example.toml")).unwrap();
    let docs = std::fs::read_to_string(format!("{ROOT}/docs/configuration.md")).unwrap();
    let (shown, documented) = (example_keys(&example), documented_keys(&docs));
    let undocumented: Vec<_> = shown.difference(&documented).collect();
    let missing: Vec<_> = documented.difference(&shown).collect();
    assert!(
        undocumented.is_empty(),
        "in the example, not in docs/configuration.md: {undocumented:?}"
    );
    assert!(
        missing.is_empty(),
        "in docs/configuration.md, not in the example: {missing:?}"
    );

    load(Path::new(&format!("{ROOT}/weiche.example.toml"))).expect("the example loads");

    // Every commented-out key switched on (script and certificate paths pointed at files that
    // exist).
    let script = format!("{ROOT}/examples/noop.lua");
    let tls = Path::new(env!("CARGO_TARGET_TMPDIR")).join("example-tls");
    common::self_signed_cert(&tls);
    let file = |name: &str| format!("\"{}\"", tls.join(name).display());
    let all: String = example
        .lines()
        .map(|l| {
            let on = l.strip_prefix("# ").filter(|r| {
                r.starts_with('[')
                    || r.split_once(" = ")
                        .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            });
            match on {
                Some(r) if r.starts_with("script = ") => format!("script = \"{script}\""),
                Some(r) if r.starts_with("cert = ") || r.starts_with("ca = ") => {
                    format!("{} = {}", &r[..r.find(' ').unwrap_or(0)], file("cert.pem"))
                }
                Some(r) if r.starts_with("key = ") => format!("key = {}", file("key.pem")),
                Some(r) => r.to_string(),
                None => l.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("example-all-keys.toml");
    std::fs::write(&path, all).unwrap();
    load(&path).expect("the example with every key on loads");
}
