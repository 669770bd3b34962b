//! The shape of `src/`, checked from its `use` lines and paths: no import cycle between
//! files, `cpu/` and `gpu/` never import each other, and no file over 500 lines.
//! `cargo test --test architecture -- --nocapture` prints the file-level import graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest a file of `src/` may be.
const MAX_LINES: usize = 500;

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The module path of a file, relative to `src/` (`gpu/mod.rs` → `gpu`, `lib.rs` → ``).
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// `text` without comments, string and character literals (so paths in docs and
/// messages do not count).
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '/' if chars.get(i + 1) == Some(&'/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '\'' if chars.get(i + 2) == Some(&'\'') => i += 2,
            '\'' if chars.get(i + 1) == Some(&'\\') => {
                while i + 1 < chars.len() && chars[i + 1] != '\'' {
                    i += 1;
                }
                i += 1;
            }
            '"' => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                out.push_str("\"\"");
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// Every path a file names from its crate root or its parent: `crate::a::b` and
/// `super::x` in `use` lines (braces expanded) and in code.
fn referenced_paths(code: &str, module: &[String]) -> Vec<Vec<String>> {
    // Inside an inline module (`mod tests { … }`), `super` is the file's own module.
    let inline_module = inline_module_start(code);
    let mut paths = Vec::new();
    for root in ["crate::", "super::"] {
        let mut rest = code;
        while let Some(i) = rest.find(root) {
            let at = code.len() - rest.len() + i;
            let before = rest[..i].chars().last();
            rest = &rest[i + root.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let base: Vec<String> = match root {
                "super::" if inline_module.is_some_and(|start| at > start) => module.to_vec(),
                "super::" => module[..module.len().saturating_sub(1)].to_vec(),
                _ => Vec::new(),
            };
            expand(rest, base, &mut paths);
        }
    }
    paths
}

/// Where the first inline module (`mod name {`) of a file starts, if it has one.
fn inline_module_start(code: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = code[from..].find("mod ") {
        let at = from + i;
        let rest = &code[at + 4..];
        let name_len = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if name_len > 0 && rest[name_len..].trim_start().starts_with('{') {
            return Some(at);
        }
        from = at + 4;
    }
    None
}

/// The paths of one `a::b::{c, d::e}` tree starting at `text`, appended to `base`.
fn expand(text: &str, base: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut path = base;
    let mut ident = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        if c.is_alphanumeric() || c == '_' {
            ident.push(c);
            continue;
        }
        if c.is_whitespace() && ident.is_empty() {
            continue;
        }
        if !ident.is_empty() {
            path.push(std::mem::take(&mut ident));
        }
        if c == ':' {
            chars.next();
            continue;
        }
        if c == '{' {
            let mut depth = 0;
            let mut start = i + 1;
            for (j, c) in text[i..].char_indices() {
                let j = i + j;
                match c {
                    '{' => depth += 1,
                    '}' | ',' if depth == 1 => {
                        expand(&text[start..j], path.clone(), out);
                        start = j + 1;
                        if c == '}' {
                            return;
                        }
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
        }
        break;
    }
    if !ident.is_empty() {
        path.push(ident);
    }
    out.push(path);
}

/// The file-level import graph of the crate whose files are `files` (module path → the
/// module paths it names), resolving each path to the longest module that is a file.
fn graph(files: &BTreeMap<Vec<String>, String>) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mut edges = BTreeMap::new();
    for (module, text) in files {
        let targets: BTreeSet<Vec<String>> = referenced_paths(&code_only(text), module)
            .into_iter()
            .filter_map(|path| {
                (0..=path.len())
                    .rev()
                    .map(|n| path[..n].to_vec())
                    .find(|prefix| files.contains_key(prefix))
            })
            .filter(|target| target != module)
            .collect();
        edges.insert(module.clone(), targets);
    }
    edges
}

/// Strongly connected components with more than one file (Tarjan's algorithm).
fn cycles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<Vec<String>>> {
    struct State<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on_stack: BTreeSet<&'a Vec<String>>,
        out: Vec<Vec<Vec<String>>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Vec<String>) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in &s.edges[v] {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// The library's files (everything but the binary's `main.rs` and `cli/`) and the
/// binary's, each keyed by module path within its own crate.
fn crates() -> [BTreeMap<Vec<String>, String>; 2] {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (mut lib, mut bin) = (BTreeMap::new(), BTreeMap::new());
    for file in rust_files(&src) {
        let rel = file.strip_prefix(&src).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        let binary = rel == Path::new("main.rs") || rel.starts_with("cli");
        if binary { &mut bin } else { &mut lib }.insert(module_of(rel), text);
    }
    [lib, bin]
}

fn name(module: &[String]) -> String {
    if module.is_empty() {
        "(root)".into()
    } else {
        module.join("::")
    }
}

#[test]
fn src_has_no_import_cycle() {
    for files in crates() {
        let edges = graph(&files);
        for (from, to) in &edges {
            let to: Vec<String> = to.iter().map(|m| name(m)).collect();
            println!("{} -> {}", name(from), to.join(", "));
        }
        let found = cycles(&edges);
        let shown: Vec<String> = found
            .iter()
            .map(|c| c.iter().map(|m| name(m)).collect::<Vec<_>>().join(" <-> "))
            .collect();
        assert!(found.is_empty(), "import cycles: {shown:#?}");
    }
}

#[test]
fn cpu_and_gpu_never_import_each_other() {
    let [lib, _] = crates();
    for (from, to) in graph(&lib) {
        for target in to {
            for (a, b) in [("cpu", "gpu"), ("gpu", "cpu")] {
                assert!(
                    !(from.first().is_some_and(|m| m == a)
                        && target.first().is_some_and(|m| m == b)),
                    "{} imports {}",
                    name(&from),
                    name(&target)
                );
            }
        }
    }
}

#[test]
fn no_file_of_src_is_over_500_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let long: Vec<String> = rust_files(&src)
        .into_iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(&f).unwrap().lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "over {MAX_LINES} lines: {long:#?}");
}

/// The parser itself: braces, `super`, comments and strings.
#[test]
fn paths_are_read_from_use_trees_and_code_only() {
    let code = code_only(
        "use crate::a::{b, c::{d, e}};\n// crate::x::y\nlet s = \"crate::\\\"z\";\nlet q = '\"';\nsuper::f::g();\nmod tests {\n    use super::*;\n}",
    );
    let module = vec!["m".to_string(), "n".to_string()];
    let paths = referenced_paths(&code, &module);
    let want: Vec<Vec<String>> = [
        vec!["a", "b"],
        vec!["a", "c", "d"],
        vec!["a", "c", "e"],
        vec!["m", "f", "g"],
        vec!["m", "n"],
    ]
    .iter()
    .map(|p| p.iter().map(|s| s.to_string()).collect())
    .collect();
    assert_eq!(paths, want);
}
