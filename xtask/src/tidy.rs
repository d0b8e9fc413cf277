//! Rules of this code base that the compiler does not check, as tests (in
//! the spirit of rust-analyzer's `tidy`): the layers' arrows point down, no
//! task imports another, and nothing re-implements what a crate in the
//! build does (percent-decoding, base64, hex).

use std::path::{Path, PathBuf};

fn sources(dir: &str) -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path, text));
            }
        }
    }
    out.sort();
    out
}

/// The code of a file before its tests.
fn code(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap_or(text)
}

#[test]
fn no_task_imports_another() {
    let mut offences = Vec::new();
    for (path, text) in sources("tasks") {
        let me = path.file_stem().unwrap().to_string_lossy().into_owned();
        for (n, line) in code(&text).lines().enumerate() {
            if let Some(rest) = line.split("crate::tasks::").nth(1) {
                let other: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if other != "Context" && other != me && me != "mod" {
                    offences.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "a task imports another task; move what they share into a service:\n{}",
        offences.join("\n")
    );
}

#[test]
fn layers_point_down() {
    let rules = [
        (
            "core",
            &[
                "crate::services",
                "crate::tasks",
                "crate::flags",
                "crate::ui",
                "clap::",
            ][..],
        ),
        ("services", &["crate::tasks", "crate::flags"][..]),
    ];
    let mut offences = Vec::new();
    for (layer, forbidden) in rules {
        for (path, text) in sources(layer) {
            for (n, line) in code(&text).lines().enumerate() {
                if let Some(f) = forbidden.iter().find(|f| line.contains(*f)) {
                    offences.push(format!("{}:{}: uses {f}", path.display(), n + 1));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "an arrow points up (core < services < tasks):\n{}",
        offences.join("\n")
    );
}

#[test]
fn no_hand_written_codecs() {
    let patterns = [
        (
            "from_str_radix(",
            "a hand-written hex or percent decoder: use percent-encoding",
        ),
        (
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef",
            "a hand-written base64: use the base64 crate",
        ),
        (":02x}", "hand-written hex: format a digest with {:x}"),
        (":02X}", "hand-written hex: use percent-encoding or {:X}"),
    ];
    let mut offences = Vec::new();
    for (path, text) in sources("") {
        if path.ends_with("tidy.rs") {
            continue;
        }
        for (n, line) in code(&text).lines().enumerate() {
            for (pattern, why) in patterns {
                // WAL positions and timeline ids are numbers PostgreSQL
                // writes in hex: parsed as numbers, not decoded as bytes.
                if pattern == "from_str_radix(" && path.ends_with("core/pitr.rs") {
                    continue;
                }
                if line.contains(pattern) {
                    offences.push(format!("{}:{}: {why}", path.display(), n + 1));
                }
            }
        }
    }
    assert!(offences.is_empty(), "{}", offences.join("\n"));
}

/// Compression has one home: every command reads and writes backups
/// through the codec service, so a new codec plugs in once.
#[test]
fn codecs_live_in_the_codec_service() {
    let mut offences = Vec::new();
    for (path, text) in sources("") {
        if path.ends_with("tidy.rs") || path.ends_with("services/codec.rs") {
            continue;
        }
        for (n, line) in code(&text).lines().enumerate() {
            if ["flate2::", "zstd::", "libdeflater::"]
                .iter()
                .any(|p| line.contains(p))
            {
                offences.push(format!(
                    "{}:{}: compression outside services/codec.rs: go through the codec",
                    path.display(),
                    n + 1
                ));
            }
        }
    }
    assert!(offences.is_empty(), "{}", offences.join("\n"));
}
