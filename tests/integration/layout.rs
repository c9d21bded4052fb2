//! Keeps the layout of docs/ARCHITECTURE.md ("Crates" and "The root crate
//! by layer") true:
//!
//! - in the root crate, a layer uses only the layers below it: `cmd` →
//!   `node` → `provider` → the shared modules (`metrics`, `spc`, `names`,
//!   `expiry`, `duration`); doc comments may point anywhere;
//! - `secretfs-secrets` depends on no crate of the workspace, `fuse` and
//!   `csi` only on it;
//! - no source file is over 700 lines, tests aside (files of tests, and a
//!   file's trailing `#[cfg(test)] mod tests { … }`).

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir` (relative to the repository), sorted.
fn rust_files(dir: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join(dir), &mut out);
    out.sort();
    out
}

/// The layer of a root-crate source file (its path under `src/`), as a
/// rank: a layer may use layers of a lower rank only. `None`: not in a
/// layer (the binary, the `fuzzing` entry points, `lib.rs`).
fn layer(relative: &str) -> Option<(usize, &'static str)> {
    let first = relative.split('/').next().unwrap_or_default();
    match first {
        "cmd" => Some((3, "cmd")),
        "node" => Some((2, "node")),
        "provider" => Some((1, "provider")),
        "metrics.rs" | "spc.rs" | "names.rs" | "expiry.rs" | "duration.rs" => Some((0, "shared")),
        _ => None,
    }
}

/// The layers a line of code names through `crate::…` (comments skipped).
fn layers_used(line: &str) -> Vec<(usize, &'static str)> {
    let code = line.trim_start();
    if code.starts_with("//") {
        return Vec::new();
    }
    let code = code.split(" //").next().unwrap_or_default();
    code.match_indices("crate::")
        .filter_map(|(at, _)| {
            let rest = &code[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            match name.as_str() {
                "cmd" => Some((3, "cmd")),
                "node" => Some((2, "node")),
                "provider" => Some((1, "provider")),
                _ => None,
            }
        })
        .collect()
}

#[test]
fn each_layer_of_the_root_crate_uses_only_the_layers_below_it() {
    let src = root().join("src");
    let mut wrong = Vec::new();
    let mut seen = [0usize; 4];
    for path in rust_files("src") {
        let relative = path
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let Some((rank, name)) = layer(&relative) else {
            continue;
        };
        seen[rank] += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            for (used, used_name) in layers_used(line) {
                if used > rank {
                    wrong.push(format!(
                        "src/{relative}:{}: {name} uses {used_name}: {}",
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        seen.iter().all(|&n| n > 0),
        "every layer has files: {seen:?}"
    );
    assert!(
        wrong.is_empty(),
        "a layer uses a layer above it (move the code down, or pass what it needs in):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_layer_check_reads_code_not_comments() {
    assert_eq!(
        layers_used("use crate::node::driver::Driver;"),
        vec![(2, "node")]
    );
    assert_eq!(
        layers_used("    let x = crate::cmd::cli::go_bool(v); // crate::node"),
        vec![(3, "cmd")]
    );
    assert!(layers_used("/// See [`crate::node::audit`].").is_empty());
    assert!(layers_used("use crate::nodes_of::X;").is_empty());
    assert_eq!(layer("node/driver/mod.rs"), Some((2, "node")));
    assert_eq!(layer("metrics.rs"), Some((0, "shared")));
    assert_eq!(layer("main.rs"), None);
}

/// The workspace crates (`secretfs…`) that the manifest `path` depends on,
/// in any dependency table (`name = …`, `name.workspace = true` or
/// `[dependencies.name]`).
fn workspace_dependencies(path: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join(path)).unwrap();
    let mut out = Vec::new();
    let mut in_dependencies = false;
    for line in text.lines().map(str::trim) {
        if let Some(header) = line.strip_prefix('[') {
            let header = header.trim_end_matches(']');
            let table = header.split('.').next().unwrap_or_default();
            in_dependencies = table.ends_with("dependencies");
            if in_dependencies && let Some((_, name)) = header.split_once('.') {
                out.push(name.to_owned());
            }
            continue;
        }
        if in_dependencies {
            let key = line.split(['=', '.', ' ']).next().unwrap_or_default();
            out.push(key.to_owned());
        }
    }
    out.retain(|name| name.starts_with("secretfs"));
    out.sort();
    out.dedup();
    out
}

#[test]
fn secret_values_are_the_leaf_and_fuse_and_csi_depend_only_on_it() {
    assert_eq!(
        workspace_dependencies("secrets/Cargo.toml"),
        Vec::<String>::new()
    );
    assert_eq!(
        workspace_dependencies("fuse/Cargo.toml"),
        ["secretfs-secrets"]
    );
    assert_eq!(
        workspace_dependencies("csi/Cargo.toml"),
        ["secretfs-secrets"]
    );
}

/// The lines of `text` that are not tests: all of them, or those before a
/// trailing `#[cfg(test)]` module.
fn lines_outside_tests(text: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let tests = lines.windows(2).position(|pair| {
        pair[0].trim() == "#[cfg(test)]" && pair[1].starts_with("mod ") && pair[1].ends_with('{')
    });
    tests.unwrap_or(lines.len())
}

#[test]
fn no_source_file_outside_tests_is_over_700_lines() {
    const LIMIT: usize = 700;
    let mut long = Vec::new();
    for dir in [
        "src",
        "secrets/src",
        "fuse/src",
        "csi/src",
        "e2e/src",
        "benches",
    ] {
        for path in rust_files(dir) {
            let name = path.file_name().unwrap().to_string_lossy();
            if name == "tests.rs" || name.ends_with("_tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let n = lines_outside_tests(&text);
            if n > LIMIT {
                let relative = path.strip_prefix(root()).unwrap().display().to_string();
                long.push(format!("{relative}: {n} lines"));
            }
        }
    }
    assert!(
        long.is_empty(),
        "over {LIMIT} lines outside tests (split it by job):\n{}",
        long.join("\n")
    );
}

#[test]
fn trailing_test_modules_do_not_count() {
    let text = "fn a() {}\n\n#[cfg(test)]\nmod tests {\n    fn t() {}\n}\n";
    assert_eq!(lines_outside_tests(text), 2);
    assert_eq!(lines_outside_tests("fn a() {}\n"), 1);
    // A `#[cfg(test)]` item that is not a module counts.
    assert_eq!(lines_outside_tests("#[cfg(test)]\nfn a() {}\n"), 2);
}
