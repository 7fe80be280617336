//! The rooms of the code and the one way data flows between them (docs/architecture.md): each
//! file's imports are read from its source (`use` lines and inline paths naming `crate::`,
//! `super::` or one of the workspace's crates) and checked against a table of layers. A file
//! may import its own layer or those below it, never one above; and no two files may import
//! each other, however indirectly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers, bottom first: a file may import only its own layer or lower ones.
const LAYERS: [&[&str]; 6] = [
    &[
        "src/domain/",
        "src/log/",
        "src/client/",
        "src/net/",
        "src/latency.rs",
    ],
    &["src/engine/"],
    &["src/replication/", "src/marketdata/", "src/report/"],
    &["src/gateway/", "src/fix/", "src/http/"],
    &["src/node/"],
    &["src/cli/", "src/bin/"],
];

/// The workspace's own crates that live under src/, by the name code imports them with.
const CRATES: [(&str, &str); 4] = [
    ("exchange_domain", "src/domain"),
    ("exchange_engine", "src/engine"),
    ("exchange_log", "src/log"),
    ("exchange_client", "src/client"),
];

fn layer(file: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|prefixes| prefixes.iter().any(|p| file.starts_with(p)))
}

/// Every .rs file under src/, relative to the crate root, leaving out test directories.
fn source_files(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, files: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).expect("read a source directory") {
            let path = entry.expect("a directory entry").path();
            let rel = path
                .strip_prefix(root)
                .expect("under the root")
                .to_string_lossy();
            if path.is_dir() {
                if !rel.ends_with("/tests") {
                    walk(root, &path, files);
                }
            } else if rel.ends_with(".rs") {
                files.insert(rel.replace('\\', "/"));
            }
        }
    }
    let mut files = BTreeSet::new();
    walk(root, &root.join("src"), &mut files);
    files
}

/// The crate root a file belongs to: src/domain, src/engine and src/log are crates of their
/// own; everything else is the main crate, rooted at src.
fn crate_root(file: &str) -> &'static str {
    CRATES
        .iter()
        .map(|(_, dir)| *dir)
        .find(|dir| file.starts_with(&format!("{dir}/")))
        .unwrap_or("src")
}

/// The module path of a file within its crate (src/gateway/server.rs: gateway, server).
fn module_path(file: &str) -> Vec<String> {
    let root = crate_root(file);
    let rel = file[root.len() + 1..].trim_end_matches(".rs");
    let mut segments: Vec<String> = rel.split('/').map(str::to_string).collect();
    if matches!(
        segments.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        segments.pop();
    }
    segments
}

/// The file that holds module path `segments` of the crate at `root` (the longest match).
fn module_file(files: &BTreeSet<String>, root: &str, segments: &[String]) -> Option<String> {
    for k in (1..=segments.len()).rev() {
        let base = format!("{root}/{}", segments[..k].join("/"));
        for candidate in [format!("{base}.rs"), format!("{base}/mod.rs")] {
            if files.contains(&candidate) {
                return Some(candidate);
            }
        }
    }
    None
}

/// The source without its inline `#[cfg(test)] mod tests` (tests may reach anywhere) and
/// without comments.
fn code_of(source: &str) -> String {
    let source = match source.find("#[cfg(test)]\nmod tests") {
        Some(at) => &source[..at],
        None => source,
    };
    source
        .lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The module paths a piece of code names after `head::`: `a::b::C` gives [a, b, C]; a group
/// `{a::X, b}` gives [a, X] and [b] (one level of braces, as `use` lines write them).
fn paths_after(rest: &str) -> Vec<Vec<String>> {
    let segments = |text: &str| -> Vec<String> {
        text.split("::")
            .map(|s| s.trim())
            .take_while(|s| !s.is_empty() && s.chars().all(is_ident))
            .map(str::to_string)
            .collect()
    };
    if let Some(group) = rest.strip_prefix('{') {
        let end = group.find('}').unwrap_or(group.len());
        return group[..end]
            .split(',')
            .map(segments)
            .filter(|s| !s.is_empty())
            .collect();
    }
    let end = rest
        .find(|c: char| !(is_ident(c) || c == ':'))
        .unwrap_or(rest.len());
    vec![segments(&rest[..end])]
}

/// The files a file imports.
fn imports(files: &BTreeSet<String>, file: &str, source: &str) -> BTreeSet<String> {
    let code = code_of(source);
    let me = module_path(file);
    let mut found = BTreeSet::new();
    let heads = ["crate", "super"]
        .into_iter()
        .chain(CRATES.iter().map(|(name, _)| *name));
    for head in heads {
        let needle = format!("{head}::");
        let mut from = 0;
        while let Some(at) = code[from..].find(&needle) {
            let start = from + at;
            from = start + needle.len();
            // A whole word: `exchange_crate::` is not `crate::`.
            if code[..start].chars().next_back().is_some_and(is_ident) {
                continue;
            }
            for path in paths_after(&code[from..]) {
                let (root, segments): (&str, Vec<String>) = match head {
                    "crate" => (crate_root(file), path),
                    "super" => {
                        let mut parent = me.clone();
                        parent.pop();
                        parent.extend(path);
                        (crate_root(file), parent)
                    }
                    name => {
                        let dir = CRATES.iter().find(|(n, _)| *n == name).map(|(_, d)| *d);
                        (dir.expect("a workspace crate"), path)
                    }
                };
                if let Some(target) = module_file(files, root, &segments) {
                    if target != file {
                        found.insert(target);
                    }
                }
            }
        }
    }
    found
}

fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let files = source_files(&root);
    files
        .iter()
        .map(|file| {
            let source = std::fs::read_to_string(root.join(file)).expect("read a source file");
            (file.clone(), imports(&files, file, &source))
        })
        .collect()
}

/// Files that reach themselves through imports (each cycle once, as the set of its files).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<BTreeSet<String>> {
    let reach = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&String> = graph[from].iter().collect();
        while let Some(next) = stack.pop() {
            if seen.insert(next.clone()) {
                stack.extend(graph.get(next).into_iter().flatten());
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|file| (file, reach(file))).collect();
    reaches
        .iter()
        .filter(|(file, reached)| reached.contains(**file))
        .map(|(file, reached)| {
            reached
                .iter()
                .filter(|other| reaches[other].contains(*file))
                .cloned()
                .collect()
        })
        .collect()
}

#[test]
fn the_import_graph_has_no_cycle() {
    let graph = import_graph();
    assert!(graph.len() > 50, "only {} files found", graph.len());
    let found = cycles(&graph);
    assert!(found.is_empty(), "import cycles: {found:?}");
}

#[test]
fn no_file_imports_a_layer_above_its_own() {
    let graph = import_graph();
    let mut up = Vec::new();
    for (file, imported) in &graph {
        for target in imported {
            if let (Some(from), Some(to)) = (layer(file), layer(target)) {
                if to > from {
                    up.push(format!("{file} -> {target}"));
                }
            }
        }
    }
    assert!(up.is_empty(), "imports up the layers: {up:#?}");
}

/// The reader itself: it finds the imports the checks rely on, so that a graph read wrong
/// cannot pass them by being empty.
#[test]
fn the_reader_finds_imports_in_every_form() {
    let files: BTreeSet<String> = [
        "src/gateway/mod.rs",
        "src/gateway/server.rs",
        "src/gateway/protocol.rs",
        "src/gateway/metrics.rs",
        "src/replication/mod.rs",
        "src/replication/sequencer.rs",
        "src/engine/lib.rs",
        "src/engine/book.rs",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    let source = "use super::{metrics::GatewayMetrics, protocol};\n\
                  use crate::replication::sequencer::Sequencer;\n\
                  use exchange_engine::book::Book;\n\
                  fn f() { let _ = crate::replication::sequencer::X; } // crate::gateway::mod\n\
                  #[cfg(test)]\nmod tests { use crate::engine::anything; }\n";
    let found = imports(&files, "src/gateway/server.rs", source);
    let expected: BTreeSet<String> = [
        "src/gateway/metrics.rs",
        "src/gateway/protocol.rs",
        "src/replication/sequencer.rs",
        "src/engine/book.rs",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    assert_eq!(found, expected);

    let mut graph = BTreeMap::new();
    graph.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    graph.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    graph.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    let found = cycles(&graph);
    assert_eq!(
        found,
        BTreeSet::from([BTreeSet::from(["a".to_string(), "b".to_string()])])
    );
}

/// openraft stays inside replication (and the node that wires it): the gateway and everything
/// else ask `src/replication/leadership.rs`, so a change of Raft library stays in one room.
#[test]
fn only_replication_and_the_node_name_openraft() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut outside = Vec::new();
    for file in source_files(root) {
        if file.starts_with("src/replication/") || file.starts_with("src/node/") {
            continue;
        }
        let source = std::fs::read_to_string(root.join(&file)).expect("read a source file");
        if code_of(&source).contains("openraft::") {
            outside.push(file);
        }
    }
    assert!(
        outside.is_empty(),
        "openraft named outside replication/ and node/: {outside:?}"
    );
    // The check reads what it claims to: the handle itself names openraft.
    let handle = std::fs::read_to_string(root.join("src/replication/leadership.rs"))
        .expect("the leadership handle");
    assert!(code_of(&handle).contains("openraft::"));
}

/// A broker's build: the client crate depends on the domain's plain data and the transport,
/// never on the engine, the log, openraft or SQLite (`src/client/Cargo.toml`).
#[test]
fn the_client_crate_needs_nothing_of_the_exchange_itself() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest =
        std::fs::read_to_string(root.join("src/client/Cargo.toml")).expect("the client manifest");
    let mut section = "";
    let mut dependencies = BTreeSet::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line;
        } else if section == "[dependencies]" && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['.', '=', ' ']).next().expect("a name");
            dependencies.insert(name.to_string());
        }
    }
    let allowed: BTreeSet<String> = [
        "exchange-domain",
        "serde",
        "postcard",
        "quinn",
        "rustls",
        "tokio",
        "clap",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    assert!(dependencies.contains("quinn"), "read: {dependencies:?}");
    let extra: Vec<_> = dependencies.difference(&allowed).collect();
    assert!(extra.is_empty(), "the client crate depends on {extra:?}");
}
