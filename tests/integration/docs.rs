//! Keeps the documentation honest:
//!
//! - every long flag of every `secretfs` command is documented in
//!   docs/CONFIGURATION.md;
//! - every row of a message table in docs/TROUBLESHOOTING.md quotes a
//!   message that the code really produces, so changing a message without
//!   the table fails here;
//! - docs/FAULTS.md's "Error types" table lists exactly the `error_type`
//!   labels of `secretfs_csi::error_types`, and no source spells a label
//!   outside that module (tests aside).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::CommandFactory;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    let path = root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every long flag of `cmd` and its subcommands, with the command path that
/// declares it (`secretfs node`), except clap's own `--help` and `--version`.
fn long_flags(cmd: &clap::Command, path: &str, out: &mut BTreeSet<(String, String)>) {
    for arg in cmd.get_arguments() {
        if let Some(long) = arg.get_long()
            && long != "help"
            && long != "version"
        {
            out.insert((long.to_owned(), path.to_owned()));
        }
    }
    for sub in cmd.get_subcommands() {
        long_flags(sub, &format!("{path} {}", sub.get_name()), out);
    }
}

/// Whether `text` holds `--flag` as a whole flag (not a prefix of a longer
/// one such as `--log` in `--log-format-json`).
fn mentions_flag(text: &str, flag: &str) -> bool {
    let needle = format!("--{flag}");
    text.match_indices(&needle).any(|(i, _)| {
        let after = text[i + needle.len()..].chars().next();
        !matches!(after, Some(c) if c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

#[test]
fn every_flag_is_in_configuration_md() {
    let doc = read("docs/CONFIGURATION.md");
    let mut flags = BTreeSet::new();
    long_flags(&secretfs::cmd::cli::Cli::command(), "secretfs", &mut flags);
    // The walk must see the commands' own flags, or the check below is empty.
    for (flag, command) in [
        ("rotation-poll-interval", "secretfs node"),
        ("cache-max-age", "secretfs provider"),
        ("keep", "secretfs demo"),
        ("admin-socket", "secretfs status"),
        ("log", "secretfs"),
    ] {
        assert!(
            flags.contains(&(flag.to_owned(), command.to_owned())),
            "the CLI walk missed --{flag} of `{command}`: {flags:?}"
        );
    }
    let missing: Vec<String> = flags
        .iter()
        .filter(|(flag, _)| !mentions_flag(&doc, flag))
        .map(|(flag, command)| format!("--{flag} (`{command}`)"))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/CONFIGURATION.md does not document these flags (add a row with their default and \
         meaning, from their help text in src/cmd/cli.rs): {}",
        missing.join(", ")
    );
}

#[test]
fn mentions_flag_needs_the_whole_flag() {
    assert!(mentions_flag("| `--log` | warn |", "log"));
    assert!(mentions_flag("`secretfs status [--json]`", "json"));
    assert!(mentions_flag("`--spc-dir DIR`", "spc-dir"));
    assert!(!mentions_flag("`--log-format-json`", "log"));
    assert!(!mentions_flag("`--log-format-json`", "log-format"));
    assert!(!mentions_flag("log", "log"));
}

/// The section of `doc` under the heading `heading` (up to the next `## `).
fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let start = doc
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no heading {heading:?}"));
    let body = &doc[start + heading.len() + 2..];
    &body[..body.find("\n## ").unwrap_or(body.len())]
}

/// Key paths of `values.yaml` that are not documented: a path documented as
/// `` `a.b` `` covers everything under it; a map that is not documented as a
/// whole needs each of its keys documented.
fn undocumented_values(value: &serde_yaml::Value, path: &str, doc: &str, out: &mut Vec<String>) {
    if !path.is_empty() && doc.contains(&format!("`{path}`")) {
        return;
    }
    match value {
        serde_yaml::Value::Mapping(map) if !map.is_empty() => {
            for (key, child) in map {
                let key = key.as_str().expect("values.yaml keys are strings");
                let child_path = if path.is_empty() {
                    key.to_owned()
                } else {
                    format!("{path}.{key}")
                };
                undocumented_values(child, &child_path, doc, out);
            }
        }
        _ => out.push(path.to_owned()),
    }
}

#[test]
fn every_helm_value_is_in_configuration_md() {
    let doc = read("docs/CONFIGURATION.md");
    let helm = section(&doc, "## Helm values");
    let values: serde_yaml::Value =
        serde_yaml::from_str(&read("charts/secretfs/values.yaml")).expect("values.yaml parses");
    let mut missing = Vec::new();
    undocumented_values(&values, "", helm, &mut missing);
    assert!(
        missing.is_empty(),
        "the Helm values section of docs/CONFIGURATION.md lacks these values of \
         charts/secretfs/values.yaml (add a row with the default and meaning): {}",
        missing.join(", ")
    );
    // The check itself: an undocumented key is found, nested or not.
    let probe: serde_yaml::Value =
        serde_yaml::from_str("a: {b: 1, c: {d: 2}}\ne: [1]\n").expect("probe parses");
    let mut found = Vec::new();
    undocumented_values(&probe, "", "`a.b` `e`", &mut found);
    assert_eq!(found, ["a.c.d"]);
}

/// The Rust sources of the binary, the CSI crate and the FUSE crate, one
/// text per file, with string-literal line continuations (`\` + newline +
/// indentation) joined and format braces (`{{`, `}}`) unescaped, so a
/// message reads as it is printed.
fn sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                out.push((path, normalize_source(&text)));
            }
        }
    }
    let mut out = Vec::new();
    for dir in ["src", "secrets/src", "csi/src", "fuse/src"] {
        walk(&root().join(dir), &mut out);
    }
    assert!(out.len() > 20, "too few sources found: {}", out.len());
    out
}

fn normalize_source(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(joined) = line.strip_suffix('\\') {
            out.push_str(joined);
            // Rust skips the newline and the next line's leading whitespace.
            if let Some(next) = lines.peek_mut() {
                *next = next.trim_start();
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.replace("{{", "{").replace("}}", "}")
}

/// The cells of a Markdown table row (`| a | b |`), trimmed; `|` inside
/// backticks does not split.
fn cells(row: &str) -> Vec<String> {
    let inner = row.trim().trim_start_matches('|').trim_end_matches('|');
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut in_code = false;
    for c in inner.chars() {
        match c {
            '`' => {
                in_code = !in_code;
                cell.push(c);
            }
            '|' if !in_code => cells.push(std::mem::take(&mut cell).trim().to_owned()),
            _ => cell.push(c),
        }
    }
    cells.push(cell.trim().to_owned());
    cells
}

/// The `code spans` of a cell.
fn code_spans(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// The literal pieces of a quoted message: the text between the variable
/// parts, written `<name>` (optionally in quotes, as `{:?}` prints it) or
/// `…`. Pieces without a letter or digit are dropped.
fn pieces(quote: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut piece = String::new();
    let mut rest = quote;
    while let Some(c) = rest.chars().next() {
        match placeholder_len(rest) {
            Some(len) => {
                let p = piece.trim();
                if p.chars().any(char::is_alphanumeric) {
                    out.push(p.to_owned());
                }
                piece.clear();
                rest = &rest[len..];
            }
            None => {
                piece.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    let p = piece.trim();
    if p.chars().any(char::is_alphanumeric) {
        out.push(p.to_owned());
    }
    out
}

/// The length of the placeholder `text` starts with: `…`, `<name>` or
/// `"<name>"` (a name is not empty and does not start with a space).
fn placeholder_len(text: &str) -> Option<usize> {
    if text.starts_with('…') {
        return Some('…'.len_utf8());
    }
    let quoted = text.starts_with("\"<");
    let inner = text.strip_prefix(if quoted { "\"<" } else { "<" })?;
    let end = inner.find('>')?;
    let name = &inner[..end];
    if name.is_empty() || name.starts_with(' ') || name.contains('<') {
        return None;
    }
    let mut len = text.len() - inner.len() + end + 1;
    if quoted && text[len..].starts_with('"') {
        len += 1;
    }
    Some(len)
}

/// The first file in which `pieces` occur in this order.
fn find_in_order<'a>(sources: &'a [(PathBuf, String)], pieces: &[String]) -> Option<&'a Path> {
    sources.iter().find_map(|(path, text)| {
        let mut at = 0;
        for piece in pieces {
            at += text[at..].find(piece.as_str())? + piece.len();
        }
        Some(path.as_path())
    })
}

#[test]
fn pieces_split_on_placeholders() {
    assert_eq!(
        pieces("provider \"<p>\" is not built in (built in: …) and no provider socket exists at …"),
        [
            "provider",
            "is not built in (built in:",
            ") and no provider socket exists at"
        ]
    );
    assert_eq!(
        pieces("target path <path> is not a volume of pod <uid>"),
        ["target path", "is not a volume of pod"]
    );
    assert_eq!(pieces("a < b"), ["a < b"]);
    assert_eq!(pieces("<x>: <y>"), Vec::<String>::new());
}

#[test]
fn continuations_and_braces_read_as_printed() {
    let src = "format!(\"no provider \\\n         socket at {}: {{0,30}}\")\n";
    assert_eq!(
        normalize_source(src),
        "format!(\"no provider socket at {}: {0,30}\")\n"
    );
}

/// Rows of the tables whose first column is "Message …": each quotes, in
/// backticks, the stable parts of a message the code produces.
#[test]
fn every_troubleshooting_message_is_in_the_code() {
    let doc = read("docs/TROUBLESHOOTING.md");
    let sources = sources();
    let mut rows = 0;
    let mut problems = Vec::new();
    let mut in_table = false;
    for (n, line) in doc.lines().enumerate() {
        let line_no = n + 1;
        if !line.trim_start().starts_with('|') {
            in_table = false;
            continue;
        }
        let row = cells(line);
        if row[0].starts_with("Message") {
            in_table = true;
            continue;
        }
        if !in_table || row[0].starts_with("---") {
            continue;
        }
        rows += 1;
        let quotes = code_spans(&row[0]);
        if quotes.is_empty() {
            problems.push(format!(
                "line {line_no}: the Message cell quotes no message in backticks"
            ));
            continue;
        }
        let longest = quotes
            .iter()
            .flat_map(|q| pieces(q))
            .map(|p| p.chars().count())
            .max()
            .unwrap_or(0);
        if longest < 12 {
            problems.push(format!(
                "line {line_no}: quote at least 12 characters of fixed text, so the row cannot match \
                 any message"
            ));
        }
        for quote in quotes {
            let parts = pieces(quote);
            if parts.is_empty() {
                problems.push(format!("line {line_no}: `{quote}` has no fixed text"));
            } else if find_in_order(&sources, &parts).is_none() {
                problems.push(format!(
                    "line {line_no}: `{quote}` is in no file of src/, csi/src or fuse/src \
                     (looked for {parts:?} in this order in one file): copy the message from \
                     the code"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "docs/TROUBLESHOOTING.md:\n{}",
        problems.join("\n")
    );
    assert!(
        rows >= 20,
        "found only {rows} message rows in docs/TROUBLESHOOTING.md"
    );
}

/// The repository stands alone: every Markdown file that a source, test,
/// script, chart or document names is in it, and nothing points outside it
/// (a `shared/` directory beside the checkout, a design document that was
/// never committed).
#[test]
fn every_document_the_repository_cites_is_in_it() {
    let root = root();
    let mut files = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            // `.git` is a file in a worktree, a directory in a clone.
            if matches!(name.as_str(), "target" | ".git" | "node_modules" | ".venv") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    let markdown: BTreeSet<String> = files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| {
            p.strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert!(markdown.contains("docs/ARCHITECTURE.md"), "{markdown:?}");
    let mut problems = Vec::new();
    for path in &files {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue; // not text
        };
        let shown = path.strip_prefix(&root).unwrap().display().to_string();
        // Spelled in two parts, so this file does not match itself.
        for forbidden in [
            concat!("shared/", "reference"),
            concat!("../", "shared"),
            concat!("/work", "/"),
        ] {
            if text.contains(forbidden) {
                problems.push(format!(
                    "{shown} refers to {forbidden:?}, outside the repository"
                ));
            }
        }
        // Every `<path>.md`: a file of the repository, named by its path
        // from the root or from the citing file, or by its bare name.
        let bytes = text.as_bytes();
        for (end, _) in text.match_indices(".md") {
            let after = bytes.get(end + 3).copied();
            if after.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_') {
                continue;
            }
            let start = text[..end]
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || "._/~-".contains(c)))
                .map_or(0, |i| i + 1);
            let cited = &text[start..end + 3];
            let before = &text[..start];
            if cited == ".md" || before.ends_with("://") || before.ends_with("github.com/") {
                continue;
            }
            if text[start.saturating_sub(60)..start].contains("http") {
                continue; // a web address
            }
            let cited_clean = cited.trim_start_matches("./");
            let relative = path
                .parent()
                .unwrap()
                .join(cited_clean)
                .canonicalize()
                .ok()
                .and_then(|p| {
                    p.strip_prefix(root.canonicalize().unwrap())
                        .ok()
                        .map(|p| p.to_string_lossy().into_owned())
                });
            let found = markdown.contains(cited_clean)
                || relative.is_some_and(|r| markdown.contains(&r))
                || markdown
                    .iter()
                    .any(|m| m.ends_with(&format!("/{cited_clean}")) || m == cited_clean);
            if !found {
                problems.push(format!(
                    "{shown} cites {cited}, which is not in the repository"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The `error_type` labels that docs/FAULTS.md's "Error types" table lists.
fn documented_error_types() -> BTreeSet<String> {
    let faults = read("docs/FAULTS.md");
    section(&faults, "## Error types")
        .lines()
        // The rows below the header.
        .skip_while(|row| !row.starts_with("|---"))
        .filter_map(|row| row.strip_prefix("| `"))
        .filter_map(|row| row.split_once('`'))
        .map(|(label, _)| label.to_owned())
        .collect()
}

#[test]
fn every_error_type_is_in_faults_md() {
    let documented = documented_error_types();
    let labels: BTreeSet<String> = secretfs_csi::error_types::ALL
        .iter()
        .map(|l| (*l).to_owned())
        .collect();
    let missing: Vec<_> = labels.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "error types not in docs/FAULTS.md: {missing:?}"
    );
    let stale: Vec<_> = documented.difference(&labels).collect();
    assert!(
        stale.is_empty(),
        "docs/FAULTS.md lists error types the code does not have: {stale:?}"
    );
}

#[test]
fn error_type_labels_are_spelled_only_in_their_module() {
    let mut spelled = Vec::new();
    for (path, text) in sources() {
        if path.ends_with("csi/src/error_types.rs") {
            continue;
        }
        // Tests may check a label's value by its text (a file of tests, or
        // a file's trailing test module).
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name == "tests.rs" || name.ends_with("_tests.rs") {
            continue;
        }
        let code = text
            .split("#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or(&text);
        for label in secretfs_csi::error_types::ALL {
            if code.contains(&format!("\"{label}\"")) {
                spelled.push(format!("{}: {label}", path.display()));
            }
        }
    }
    assert!(
        spelled.is_empty(),
        "use secretfs_csi::error_types, not a string literal: {spelled:?}"
    );
}
