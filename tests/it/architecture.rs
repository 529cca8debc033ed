//! The code map stays true: every file under `src/` is in docs/ARCHITECTURE.md, no two
//! files reach each other through `crate::` paths (no module cycles), and the database
//! drivers stay inside `src/store/` where the map says so.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `src/`, as `src/…` paths.
fn source_files() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join("src"), &mut files);
    let mut names: Vec<String> = files
        .iter()
        .map(|p| {
            p.strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/")
        })
        .collect();
    names.sort();
    names
}

#[test]
fn every_source_file_is_in_the_code_map() {
    let map = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap();
    let missing: Vec<String> = source_files()
        .into_iter()
        .filter(|f| !map.contains(&format!("`{f}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/ARCHITECTURE.md does not name these files (as `src/…`): {missing:?}"
    );
}

/// rusqlite runs the inline SQLite reads, which bypass the pool and its checks: nothing
/// outside `src/store/` may open or use such a connection.
#[test]
fn rusqlite_is_used_inside_the_store_only() {
    let outside: Vec<String> = source_files()
        .into_iter()
        .filter(|f| !f.starts_with("src/store/"))
        .filter(|f| {
            std::fs::read_to_string(root().join(f))
                .unwrap()
                .contains("rusqlite")
        })
        .collect();
    assert!(
        outside.is_empty(),
        "rusqlite used outside src/store/: {outside:?}"
    );
}

/// The file a `crate::a::b::c` path lands in: the longest prefix that is a module file.
fn resolve(segments: &[&str], files: &BTreeSet<String>) -> Option<String> {
    for len in (1..=segments.len()).rev() {
        let base = format!("src/{}", segments[..len].join("/"));
        for candidate in [format!("{base}.rs"), format!("{base}/mod.rs")] {
            if files.contains(&candidate) {
                return Some(candidate);
            }
        }
    }
    None
}

/// File → files it names through `crate::` paths.
fn crate_graph() -> BTreeMap<String, BTreeSet<String>> {
    let files: BTreeSet<String> = source_files().into_iter().collect();
    let mut graph = BTreeMap::new();
    for file in &files {
        // Code only: comments may mention any module.
        let text: String = std::fs::read_to_string(root().join(file))
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut targets = BTreeSet::new();
        for (at, _) in text.match_indices("crate::") {
            let rest = &text[at + "crate::".len()..];
            let path: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
            if let Some(target) = resolve(&segments, &files)
                && target != *file
            {
                targets.insert(target);
            }
        }
        graph.insert(file.clone(), targets);
    }
    graph
}

#[test]
fn no_two_files_depend_on_each_other_through_crate_paths() {
    let graph = crate_graph();
    // Tarjan would name whole cycles; the first back edge of a depth-first search is
    // enough to point at one.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), 1);
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|n| n == next).unwrap_or(0);
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(next, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0
            && let Some(cycle) = visit(node, &graph, &mut state, &mut Vec::new())
        {
            panic!("module cycle through crate:: paths: {}", cycle.join(" → "));
        }
    }
}
