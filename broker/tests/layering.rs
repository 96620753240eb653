//! The broker's layers, checked: every top-level module of `broker/src` may name (`crate::x`)
//! only modules of lower layers, or of its own layer without a cycle. The shard layer never
//! names request handlers, the group coordinator or any service above it. Comments are not
//! imports and are skipped; names re-exported at the crate root (`crate::Config`) count for the
//! module that defines them.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layer of each top-level module, bottom (0) to top. A module may use lower layers; within a
/// layer only without a cycle. Keep in sync with the diagram in `broker/src/lib.rs`.
const LAYERS: &[(&str, usize)] = &[
    ("cluster_metadata", 0),
    ("config", 0),
    ("error_code", 0),
    ("topics", 0),
    ("producer_state", 0),
    ("probe", 0),
    ("session", 0),
    ("replica", 1),
    ("partition", 1),
    ("shard", 2),
    ("group", 3),
    ("admin", 3),
    ("producer_ids", 3),
    ("services", 3),
    ("handler", 4),
    ("net", 5),
    ("metrics", 5),
    ("membership", 5),
    ("node", 6),
];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`shard/bus.rs` → `shard`); `None` for lib.rs.
fn module_of(file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src_dir()).unwrap();
    let first = relative
        .components()
        .next()?
        .as_os_str()
        .to_str()?
        .to_owned();
    if first == "lib.rs" {
        return None;
    }
    Some(first.trim_end_matches(".rs").to_owned())
}

/// Code without `//` comments (doc comments included): what the compiler resolves.
fn code_of(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            // Not inside a string literal on this line (good enough for this code base: no
            // `"//"` strings name modules).
            Some(at) if line[..at].matches('"').count() % 2 == 0 => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Root re-exports of lib.rs: name → module (`Config` → `config`).
fn root_reexports() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(src_dir().join("lib.rs")).unwrap();
    let mut names = BTreeMap::new();
    for statement in code_of(&text).split(';') {
        let Some(rest) = statement.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, items)) = rest.split_once("::") else {
            continue;
        };
        for item in items
            .trim_matches(|c| c == '{' || c == '}' || c == ' ')
            .split(',')
        {
            let item = item.trim();
            if !item.is_empty() {
                names.insert(item.to_owned(), module.to_owned());
            }
        }
    }
    names
}

/// Every `crate::<name>` in `code`, resolved to a top-level module.
fn references(code: &str, reexports: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        if code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `$crate::`
        }
        let name: String = code[at + "crate::".len()..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let module = reexports.get(&name).cloned().unwrap_or(name);
        found.insert(module);
    }
    found
}

/// The module graph: module → modules it names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let reexports = root_reexports();
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(&file) else {
            continue;
        };
        let code = code_of(&std::fs::read_to_string(&file).unwrap());
        let uses = graph.entry(module.clone()).or_default();
        for used in references(&code, &reexports) {
            if used != module {
                uses.insert(used);
            }
        }
    }
    graph
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().find(|(name, _)| *name == module).map(|l| l.1)
}

/// Every module has a layer, and no module names one of a higher layer.
#[test]
fn no_module_names_a_higher_layer() {
    let graph = graph();
    let mut violations = Vec::new();
    for (module, uses) in &graph {
        let Some(own) = layer_of(module) else {
            violations.push(format!("{module}: not in LAYERS (give it a layer)"));
            continue;
        };
        for used in uses {
            match layer_of(used) {
                Some(layer) if layer <= own => {}
                Some(layer) => violations.push(format!(
                    "{module} (layer {own}) names crate::{used} (layer {layer})"
                )),
                None => violations.push(format!("{module} names unknown crate::{used}")),
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layering violations:\n{}",
        violations.join("\n")
    );
}

/// The module graph has no cycle (within a layer, where the rank allows both directions).
#[test]
fn no_import_cycle() {
    let graph = graph();
    // Depth-first search with colours: a grey module reached again closes a cycle.
    fn visit<'a>(
        module: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<&'a str, bool>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match state.get(module) {
            Some(true) => return None,
            Some(false) => {
                let start = path.iter().position(|m| *m == module).unwrap_or(0);
                let mut cycle: Vec<String> = path[start..].iter().map(|m| m.to_string()).collect();
                cycle.push(module.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        state.insert(module, false);
        path.push(module);
        for used in graph.get(module).into_iter().flatten() {
            if let Some(cycle) = visit(used, graph, state, path) {
                return Some(cycle);
            }
        }
        path.pop();
        state.insert(module, true);
        None
    }
    let mut state = BTreeMap::new();
    for module in graph.keys() {
        if let Some(cycle) = visit(module, &graph, &mut state, &mut Vec::new()) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

/// The checker itself finds what it must: a reference hidden in a comment does not count, a
/// re-exported name counts for its module, an upward reference is seen.
#[test]
fn the_checker_sees_references() {
    let reexports: BTreeMap<String, String> = [("Config".to_owned(), "config".to_owned())]
        .into_iter()
        .collect();
    let code = code_of("use crate::shard::Shard; // crate::handler\nlet c: crate::Config;");
    let found = references(&code, &reexports);
    assert_eq!(
        found,
        ["config", "shard"].iter().map(|s| s.to_string()).collect()
    );
    assert!(graph()
        .get("shard")
        .is_some_and(|uses| uses.contains("partition")));
}
