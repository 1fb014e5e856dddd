//! The architecture rules of the workspace, checked by its test suite rather than by review.
//!
//! - [`ModuleGraph`] reads a crate's sources and finds which module imports which; a cycle
//!   between modules means two pieces of logic that cannot be understood, tested or moved
//!   apart, so the suite fails on one ([`cycles`]).
//! - [`dependencies`] lists what a crate's `Cargo.toml` depends on, for rules such as "the
//!   media crate does no IO" and "a cache node does not link the purge bus's server".
//!
//! Sources are read, not compiled: paths are found in the text after comments and string
//! literals are removed. Paths that name modules count: `crate::…`, `super::…`, `self::…` and
//! paths through a child module the file declares. A module may use what its ancestors define
//! (as `use super::*` does), so edges up to an ancestor are not counted; a parent that uses a
//! child, a child that uses a sibling, and so on, are. Inline modules are modules of their
//! own, so a `#[cfg(test)] mod tests` that uses shared test helpers is not its parent using
//! them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module, as its path from the crate root (`["storage", "disk"]`; empty for the root).
pub type ModulePath = Vec<String>;

/// Which module imports which, for one crate.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ModuleGraph {
    /// Every file module, with the modules its code names.
    pub edges: BTreeMap<ModulePath, BTreeSet<ModulePath>>,
}

/// The module path of a source file relative to `src/`: `lib.rs` is the root, `a/mod.rs` and
/// `a.rs` are `a`. `None` for binaries (`main.rs`, `bin/…`), which are crates of their own.
pub fn module_of(relative: &Path) -> Option<ModulePath> {
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let file = parts.pop()?;
    if parts.first().is_some_and(|p| p == "bin") || (parts.is_empty() && file == "main.rs") {
        return None;
    }
    let stem = file.strip_suffix(".rs")?;
    if !(stem == "mod" || (parts.is_empty() && stem == "lib")) {
        parts.push(stem.to_owned());
    }
    Some(parts)
}

/// `source` without comments, string and character literals (replaced by spaces, so
/// positions and line structure stay).
pub fn strip_comments_and_strings(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0usize;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth = depth.saturating_sub(1);
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r' && matches!(next, Some('"') | Some('#')) && raw_string_start(&chars, i) {
            i = skip_raw_string(&chars, i);
            out.push_str("\"\"");
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && is_char_literal(&chars, i) {
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn raw_string_start(chars: &[char], i: usize) -> bool {
    if i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_') {
        return false;
    }
    let mut j = i + 1;
    while chars.get(j) == Some(&'#') {
        j += 1;
    }
    chars.get(j) == Some(&'"')
}

fn skip_raw_string(chars: &[char], i: usize) -> usize {
    let mut j = i + 1;
    let mut hashes = 0;
    while chars.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    j += 1;
    while j < chars.len() {
        if chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) {
            return j + 1 + hashes;
        }
        j += 1;
    }
    j
}

/// A `'` opens a character literal (not a lifetime or label) when it closes within a few
/// characters: `'a'`, `'\n'`, `'\u{1F600}'`.
fn is_char_literal(chars: &[char], i: usize) -> bool {
    match chars.get(i + 1) {
        Some('\\') => true,
        Some(_) => chars.get(i + 2) == Some(&'\''),
        None => false,
    }
}

/// The module paths that `code` (comments and strings removed) of file module `at` names,
/// each with the module naming it: every `crate::…` and `super::…` path, with `use` groups
/// (`crate::{a, b::{c, d}}`) expanded. An inline module (`mod tests { … }`) is a module of its
/// own, a child of the file's: what its code names is its own, and its `super` is the file's
/// module. Each path is returned whole; [`ModuleGraph::from_sources`] resolves it to a module.
pub fn named_paths(at: &[String], code: &str) -> Vec<(ModulePath, ModulePath)> {
    let tokens = tokenize(code);
    let children: BTreeSet<&str> = tokens
        .windows(3)
        .filter(|w| w[0] == "mod" && is_ident(&w[1]) && (w[2] == ";" || w[2] == "{"))
        .map(|w| w[1].as_str())
        .collect();
    let mut found = Vec::new();
    // Inline modules open at a brace depth; `super` inside them climbs out of them first.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i].as_str();
        match t {
            "{" => depth += 1,
            "}" => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            "mod" => {
                if let (Some(name), Some(brace)) = (tokens.get(i + 1), tokens.get(i + 2))
                    && brace == "{"
                {
                    inline.push((name.clone(), depth));
                }
            }
            name if (name == "self" || children.contains(name))
                && inline.is_empty()
                && tokens.get(i + 1).is_some_and(|n| n == "::")
                && (i == 0 || tokens[i - 1] != "::") =>
            {
                let start = if name == "self" { i + 2 } else { i };
                let (paths, end) = use_tree(&tokens, start, at);
                found.extend(paths.into_iter().map(|p| (at.to_vec(), p)));
                i = end;
                continue;
            }
            "crate" | "super" if tokens.get(i + 1).is_some_and(|n| n == "::") => {
                let preceded_by_path = i > 0 && tokens[i - 1] == "::";
                if !preceded_by_path {
                    let mut base: ModulePath = if t == "crate" {
                        Vec::new()
                    } else {
                        let mut here: ModulePath = at.to_vec();
                        here.extend(inline.iter().map(|(n, _)| n.clone()));
                        here.pop();
                        here
                    };
                    let mut j = i + 2;
                    while tokens.get(j).is_some_and(|n| n == "super")
                        && tokens.get(j + 1).is_some_and(|n| n == "::")
                    {
                        base.pop();
                        j += 2;
                    }
                    let (paths, end) = use_tree(&tokens, j, &base);
                    let mut from: ModulePath = at.to_vec();
                    from.extend(inline.iter().map(|(n, _)| n.clone()));
                    found.extend(paths.into_iter().map(|p| (from.clone(), p)));
                    i = end;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    found
}

fn tokenize(code: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(chars[start..i].iter().collect());
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            tokens.push("::".to_owned());
            i += 2;
        } else if c.is_whitespace() {
            i += 1;
        } else {
            tokens.push(c.to_string());
            i += 1;
        }
    }
    tokens
}

/// Reads a path or `use` tree starting at token `j` under `base`; returns the full paths
/// and the index after the tree.
fn use_tree(tokens: &[String], mut j: usize, base: &[String]) -> (Vec<ModulePath>, usize) {
    let mut path: ModulePath = base.to_vec();
    loop {
        match tokens.get(j).map(String::as_str) {
            Some("{") => {
                let mut all = Vec::new();
                j += 1;
                loop {
                    match tokens.get(j).map(String::as_str) {
                        Some("}") => return (all, j + 1),
                        Some(",") => j += 1,
                        None => return (all, j),
                        _ => {
                            let (paths, end) = use_tree(tokens, j, &path);
                            all.extend(paths);
                            if end == j {
                                j += 1;
                            } else {
                                j = end;
                            }
                        }
                    }
                }
            }
            Some("*") => return (vec![path], j + 1),
            Some("self") => {
                j += 1;
            }
            Some(name) if is_ident(name) => {
                path.push(name.to_owned());
                j += 1;
                if tokens.get(j).is_some_and(|t| t == "::") {
                    j += 1;
                } else {
                    return (vec![path], j);
                }
            }
            _ => return (vec![path], j),
        }
    }
}

fn is_ident(token: &str) -> bool {
    token
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && token.chars().all(|c| c.is_alphanumeric() || c == '_')
}

impl ModuleGraph {
    /// The graph of one crate from its sources: `(path relative to src/, text)`.
    pub fn from_sources<'a>(files: impl IntoIterator<Item = (PathBuf, &'a str)>) -> Self {
        let mut named: Vec<(ModulePath, ModulePath)> = Vec::new();
        let mut modules: BTreeSet<ModulePath> = BTreeSet::new();
        for (relative, text) in files {
            let Some(module) = module_of(&relative) else {
                continue;
            };
            let code = strip_comments_and_strings(text);
            named.extend(named_paths(&module, &code));
            modules.insert(module);
        }
        modules.extend(named.iter().map(|(from, _)| from.clone()));
        let mut graph = ModuleGraph::default();
        for module in &modules {
            graph.edges.entry(module.clone()).or_default();
        }
        for (from, path) in named {
            let targets = graph.edges.entry(from.clone()).or_default();
            {
                // The longest prefix of the path that is a file module.
                let Some(to) = (0..=path.len())
                    .rev()
                    .map(|n| path[..n].to_vec())
                    .find(|p| modules.contains(p))
                else {
                    continue;
                };
                // A module may use what its ancestors define, as items in scope.
                if !from.starts_with(&to) {
                    targets.insert(to);
                }
            }
        }
        graph
    }

    /// Reads every `.rs` file under `src`.
    pub fn read(src: &Path) -> std::io::Result<Self> {
        let mut files = Vec::new();
        collect_rs(src, src, &mut files)?;
        let texts: Vec<(PathBuf, String)> = files
            .into_iter()
            .map(|(rel, abs)| std::fs::read_to_string(&abs).map(|t| (rel, t)))
            .collect::<Result<_, _>>()?;
        Ok(Self::from_sources(
            texts.iter().map(|(p, t)| (p.clone(), t.as_str())),
        ))
    }
}

fn collect_rs(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, PathBuf)>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            collect_rs(root, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            out.push((relative, path));
        }
    }
    Ok(())
}

/// Every cycle of the graph, as the modules of each strongly connected component with more
/// than one module (Tarjan's algorithm), each sorted; empty when there is none.
pub fn cycles(graph: &ModuleGraph) -> Vec<Vec<ModulePath>> {
    struct State<'g> {
        graph: &'g ModuleGraph,
        index: BTreeMap<&'g ModulePath, usize>,
        low: BTreeMap<&'g ModulePath, usize>,
        stack: Vec<&'g ModulePath>,
        on_stack: BTreeSet<&'g ModulePath>,
        next: usize,
        found: Vec<Vec<ModulePath>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g ModulePath) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        if let Some(targets) = s.graph.edges.get(v) {
            for w in targets {
                let Some((w, _)) = s.graph.edges.get_key_value(w) else {
                    continue;
                };
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let low = s.low[v].min(s.low[w]);
                    s.low.insert(v, low);
                } else if s.on_stack.contains(w) {
                    let low = s.low[v].min(s.index[w]);
                    s.low.insert(v, low);
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in graph.edges.keys() {
        if !state.index.contains_key(v) {
            visit(&mut state, v);
        }
    }
    state.found.sort();
    state.found
}

/// Names of the packages a `Cargo.toml` depends on in `[dependencies]` (not dev or build).
pub fn dependencies(cargo_toml: &str) -> BTreeSet<String> {
    let mut in_deps = false;
    let mut names = BTreeSet::new();
    for line in cargo_toml.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps
            && let Some((name, _)) = line.split_once('=')
            && !line.starts_with('#')
        {
            let name = name.trim().trim_end_matches(".workspace").trim();
            names.insert(name.to_owned());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(files: &[(&str, &str)]) -> ModuleGraph {
        ModuleGraph::from_sources(files.iter().map(|(p, t)| (PathBuf::from(p), *t)))
    }

    fn m(path: &str) -> ModulePath {
        path.split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn files_map_to_modules() {
        assert_eq!(module_of(Path::new("lib.rs")), Some(vec![]));
        assert_eq!(module_of(Path::new("a.rs")), Some(m("a")));
        assert_eq!(module_of(Path::new("a/mod.rs")), Some(m("a")));
        assert_eq!(module_of(Path::new("a/b.rs")), Some(m("a::b")));
        assert_eq!(module_of(Path::new("main.rs")), None);
        assert_eq!(module_of(Path::new("bin/tool.rs")), None);
    }

    #[test]
    fn a_sibling_cycle_is_found() {
        let g = graph(&[
            ("lib.rs", "pub mod a; pub mod b; pub mod c;"),
            ("a.rs", "use crate::b::Thing;"),
            ("b.rs", "fn f() { crate::c::g() }"),
            ("c.rs", "use super::a::{self, Other};"),
        ]);
        assert_eq!(cycles(&g), vec![vec![m("a"), m("b"), m("c")]]);
    }

    #[test]
    fn no_cycle_when_the_edges_run_one_way() {
        let g = graph(&[
            ("lib.rs", "pub mod a; pub mod b; fn helper() {}"),
            ("a.rs", "use crate::b::{x, y::{z}};"),
            ("b/mod.rs", "pub mod y; use crate::helper;"),
            ("b/y.rs", "use super::Shared;"),
        ]);
        assert!(cycles(&g).is_empty(), "{g:?}");
        assert_eq!(g.edges[&m("a")], BTreeSet::from([m("b"), m("b::y")]));
        assert!(g.edges[&m("b")].is_empty());
        assert!(g.edges[&m("b::y")].is_empty());
    }

    #[test]
    fn comments_and_strings_do_not_count() {
        let g = graph(&[
            ("lib.rs", "pub mod a; pub mod b;"),
            ("a.rs", "/// see [`crate::b`]\nuse crate::b::X;"),
            (
                "b.rs",
                "// crate::a::f()\nconst S: &str = \"crate::a::f\"; const R: &str = r#\"crate::a\"#; /* crate::a */",
            ),
        ]);
        assert!(cycles(&g).is_empty(), "{g:?}");
        assert_eq!(g.edges[&m("a")], BTreeSet::from([m("b")]));
        assert!(g.edges[&m("b")].is_empty());
    }

    #[test]
    fn parent_and_children_are_one_unit() {
        let g = graph(&[
            ("lib.rs", "pub mod f;"),
            (
                "f/mod.rs",
                "mod boxes; use boxes::*; use crate::f::boxes::Reader;",
            ),
            ("f/boxes.rs", "use super::*; use crate::f::Error;"),
        ]);
        assert!(cycles(&g).is_empty());
        assert_eq!(g.edges[&m("f")], BTreeSet::from([m("f::boxes")]));
        assert!(g.edges[&m("f::boxes")].is_empty());
        // A child that names a sibling which uses it back is a cycle.
        let g = graph(&[
            ("lib.rs", "pub mod f;"),
            ("f/mod.rs", "mod a; mod b;"),
            ("f/a.rs", "use super::b::B;"),
            ("f/b.rs", "use crate::f::a::A;"),
        ]);
        assert_eq!(cycles(&g), vec![vec![m("f::a"), m("f::b")]]);
    }

    #[test]
    fn test_helpers_used_by_a_test_module_are_no_cycle() {
        let g = graph(&[
            ("lib.rs", "pub mod packager; #[cfg(test)] mod testing;"),
            (
                "packager.rs",
                "pub struct P;\n#[cfg(test)]\nmod tests { use crate::testing::feed; }",
            ),
            ("testing.rs", "use crate::packager::P;"),
        ]);
        assert!(cycles(&g).is_empty(), "{g:?}");
        assert!(g.edges[&m("packager::tests")].contains(&m("testing")));
        // The same import from the module's own code is a cycle.
        let g = graph(&[
            ("lib.rs", "pub mod packager; mod testing;"),
            ("packager.rs", "use crate::testing::feed;"),
            ("testing.rs", "use crate::packager::P;"),
        ]);
        assert_eq!(cycles(&g), vec![vec![m("packager"), m("testing")]]);
    }

    #[test]
    fn super_inside_an_inline_module_is_the_file() {
        let g = graph(&[
            ("lib.rs", "pub mod a; pub mod b;"),
            (
                "a.rs",
                "use crate::b::X;\n#[cfg(test)]\nmod tests { use super::helper; }",
            ),
            (
                "b.rs",
                "pub fn g() { inner::f() }\nmod inner { pub fn f() { super::super::a::g(); } }",
            ),
        ]);
        // a → b → b::inner → a: b's code uses its inline module, which names a.
        assert_eq!(cycles(&g), vec![vec![m("a"), m("b"), m("b::inner")]]);
        assert!(g.edges[&m("a::tests")].is_empty(), "{g:?}");
    }

    #[test]
    fn dependencies_are_read_from_the_dependencies_table_only() {
        let toml = "[package]\nname = \"x\"\n\n[dependencies]\nbytes.workspace = true\nserde = { version = \"1\" }\n# tokio = \"1\"\n\n[dev-dependencies]\ntokio.workspace = true\n";
        assert_eq!(
            dependencies(toml),
            BTreeSet::from(["bytes".to_owned(), "serde".to_owned()])
        );
    }
}
