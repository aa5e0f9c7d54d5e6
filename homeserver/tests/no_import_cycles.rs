//! Every crate of the workspace is layered: no source file reaches, through the items it
//! imports, back to itself. This reads the sources as text (no compiler needed), so it can be
//! fooled by an import hidden behind a re-export, but never by a cycle written out plainly.
//!
//! The arrows counted: `crate::a::b`, `super::x` and `self::x` paths anywhere in the code
//! (grouped `use` lists included), resolved to the deepest module file that owns them. A module
//! containing its own submodules is not an arrow (it declares and re-exports them); a
//! submodule using its parent is. Test modules (`#[cfg(test)]` to the end of the file, and
//! `tests.rs` files) are left out: tests stand above everything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const CRATES: &[&str] = &[
    "client-api",
    "federation",
    "homeserver",
    "mls",
    "schema",
    "sytest",
    "web-client",
];

#[test]
fn no_crate_has_an_import_cycle_between_its_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut report = Vec::new();
    for krate in CRATES {
        let graph = crate_graph(&root.join(krate).join("src"));
        for cycle in cycles(&graph) {
            report.push(format!("{krate}: {}", describe(&cycle, &graph)));
        }
    }
    assert!(
        report.is_empty(),
        "import cycles (file -> file it imports from):\n{}",
        report.join("\n")
    );
}

#[test]
fn a_cycle_written_into_a_crate_is_found() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\nmod c;\n").expect("write");
    std::fs::write(src.join("a.rs"), "use crate::b::B;\npub struct A;\n").expect("write");
    std::fs::write(
        src.join("b.rs"),
        "use crate::{c::{C, D}};\npub struct B;\n#[cfg(test)]\nmod tests { use crate::a::A; }\n",
    )
    .expect("write");
    std::fs::write(src.join("c.rs"), "pub fn c() { let _ = crate::a::A; }\n").expect("write");
    let graph = crate_graph(src);
    let found = cycles(&graph);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].len(), 3);
    // Remove the arrow back to `a`: no cycle is left.
    std::fs::write(src.join("c.rs"), "pub fn c() {}\n").expect("write");
    assert!(cycles(&crate_graph(src)).is_empty());
}

/// Module path (`["hub", "check"]`) of every source file, and the arrows between files.
struct Graph {
    files: BTreeMap<Vec<String>, PathBuf>,
    arrows: BTreeMap<Vec<String>, BTreeMap<Vec<String>, BTreeSet<String>>>,
}

fn crate_graph(src: &Path) -> Graph {
    let mut files = BTreeMap::new();
    collect(src, src, &mut files);
    let mut arrows: BTreeMap<Vec<String>, BTreeMap<Vec<String>, BTreeSet<String>>> =
        BTreeMap::new();
    for (module, path) in &files {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let code = without_tests(&strip_comments(&text));
        for reference in references(&code, module) {
            let Some(target) = owner(&files, &reference) else {
                continue;
            };
            // A module declaring and re-exporting its submodules is containment, not use.
            if target == *module || target.starts_with(module) {
                continue;
            }
            let name = reference.last().cloned().unwrap_or_default();
            arrows
                .entry(module.clone())
                .or_default()
                .entry(target)
                .or_default()
                .insert(name);
        }
    }
    Graph { files, arrows }
}

/// Every `.rs` file under `dir`, by module path; `tests.rs` files are tests and left out.
fn collect(src: &Path, dir: &Path, files: &mut BTreeMap<Vec<String>, PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "bin") {
                continue; // binaries are crates of their own
            }
            collect(src, &path, files);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let Ok(relative) = path.strip_prefix(src) else {
            continue;
        };
        let mut module: Vec<String> = relative
            .with_extension("")
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        let last = module.last().cloned().unwrap_or_default();
        if last == "tests" || last.ends_with("_tests") {
            continue;
        }
        if last == "mod" || (module.len() == 1 && (last == "lib" || last == "main")) {
            module.pop();
        }
        files.insert(module, path);
    }
}

/// The text with `//` and `/* */` comments and string literals blanked out.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut previous = ' ';
                for c in chars.by_ref() {
                    if previous == '*' && c == '/' {
                        break;
                    }
                    previous = c;
                }
            }
            // A character literal `'"'` opens no string.
            '\'' if chars.peek() == Some(&'"') => {
                out.push(c);
                out.push('"');
                chars.next();
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if c == '\\' && !escaped {
                        escaped = true;
                        continue;
                    }
                    if c == '"' && !escaped {
                        break;
                    }
                    escaped = false;
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    out
}

/// The code before a trailing `#[cfg(test)]` module.
fn without_tests(code: &str) -> String {
    match code.find("#[cfg(test)]\nmod ") {
        Some(at) => code[..at].to_owned(),
        None => code.to_owned(),
    }
}

/// Absolute module paths referenced by `code` in `module`, grouped `use` lists expanded.
fn references(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let Some(rest) = code.get(at..) else {
            at += 1; // inside a multi-byte character
            continue;
        };
        let starts_word = at == 0 || !is_ident(bytes[at - 1]) && bytes[at - 1] != b':';
        let prefix = ["crate::", "super::", "self::"]
            .into_iter()
            .find(|p| rest.starts_with(p));
        match prefix {
            Some(_) if starts_word => {
                let (paths, used) = parse_path(rest);
                for path in paths {
                    if let Some(absolute) = absolute(&path, module) {
                        found.push(absolute);
                    }
                }
                at += used.max(1);
            }
            _ => at += 1,
        }
    }
    found
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Parses `a::b::{c, d::{e}}` at the start of `text` into its expanded paths, and the bytes used.
fn parse_path(text: &str) -> (Vec<Vec<String>>, usize) {
    let bytes = text.as_bytes();
    let mut segments = Vec::new();
    let mut at = 0;
    loop {
        while at < bytes.len() && bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        if at < bytes.len() && bytes[at] == b'{' {
            at += 1;
            let mut paths = Vec::new();
            loop {
                while at < bytes.len() && (bytes[at].is_ascii_whitespace() || bytes[at] == b',') {
                    at += 1;
                }
                if at >= bytes.len() || bytes[at] == b'}' {
                    at += 1;
                    break;
                }
                let (inner, used) = parse_path(&text[at..]);
                at += used.max(1);
                for tail in inner {
                    paths.push([segments.clone(), tail].concat());
                }
            }
            return (paths, at);
        }
        let start = at;
        while at < bytes.len() && is_ident(bytes[at]) {
            at += 1;
        }
        if at == start {
            // `*`, `as` renames and the like end the path.
            if at < bytes.len() && bytes[at] == b'*' {
                at += 1;
            }
            return (vec![segments], at);
        }
        segments.push(text[start..at].to_owned());
        // Skip ` as name`.
        let after = text[at..].trim_start();
        if let Some(renamed) = after.strip_prefix("as ") {
            let skip = text.len() - renamed.len();
            let name_len = renamed.bytes().take_while(|b| is_ident(*b)).count();
            return (vec![segments], skip + name_len);
        }
        if text[at..].starts_with("::") {
            at += 2;
        } else {
            return (vec![segments], at);
        }
    }
}

/// `crate::`, `super::` and `self::` paths made absolute from `module`.
fn absolute(path: &[String], module: &[String]) -> Option<Vec<String>> {
    let mut base: Vec<String>;
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => {
            base = Vec::new();
            rest = &path[1..];
        }
        Some("self") => {
            base = module.to_vec();
            rest = &path[1..];
        }
        Some("super") => {
            base = module.to_vec();
            while rest.first().map(String::as_str) == Some("super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// The deepest module file whose path is a prefix of `reference`.
fn owner(files: &BTreeMap<Vec<String>, PathBuf>, reference: &[String]) -> Option<Vec<String>> {
    (0..=reference.len())
        .rev()
        .map(|n| reference[..n].to_vec())
        .find(|prefix| files.contains_key(prefix))
}

/// Strongly connected components of more than one file (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<Vec<String>>> {
    struct Search<'g> {
        graph: &'g Graph,
        index: BTreeMap<Vec<String>, usize>,
        low: BTreeMap<Vec<String>, usize>,
        stack: Vec<Vec<String>>,
        on_stack: BTreeSet<Vec<String>>,
        found: Vec<Vec<Vec<String>>>,
    }
    impl Search<'_> {
        fn visit(&mut self, node: &Vec<String>) {
            let n = self.index.len();
            self.index.insert(node.clone(), n);
            self.low.insert(node.clone(), n);
            self.stack.push(node.clone());
            self.on_stack.insert(node.clone());
            let next: Vec<Vec<String>> = self
                .graph
                .arrows
                .get(node)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            for target in next {
                if !self.index.contains_key(&target) {
                    self.visit(&target);
                    let low = self.low[node].min(self.low[&target]);
                    self.low.insert(node.clone(), low);
                } else if self.on_stack.contains(&target) {
                    let low = self.low[node].min(self.index[&target]);
                    self.low.insert(node.clone(), low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut component = Vec::new();
                while let Some(top) = self.stack.pop() {
                    self.on_stack.remove(&top);
                    let done = top == *node;
                    component.push(top);
                    if done {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut search = Search {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for node in graph.files.keys() {
        if !search.index.contains_key(node) {
            search.visit(node);
        }
    }
    search.found
}

/// The files of a cycle and the arrows between them, with the names each takes.
fn describe(cycle: &[Vec<String>], graph: &Graph) -> String {
    let name = |m: &Vec<String>| {
        graph.files[m]
            .file_name()
            .map(|_| m.join("::"))
            .unwrap_or_default()
    };
    let members: BTreeSet<&Vec<String>> = cycle.iter().collect();
    let mut lines = vec![format!(
        "{} files: {}",
        cycle.len(),
        cycle.iter().map(name).collect::<Vec<_>>().join(", ")
    )];
    for from in cycle {
        for (to, names) in graph.arrows.get(from).into_iter().flatten() {
            if members.contains(to) {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                lines.push(format!(
                    "    {} -> {}: {}",
                    name(from),
                    name(to),
                    names.join(", ")
                ));
            }
        }
    }
    lines.join("\n")
}
