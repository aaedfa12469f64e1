//! The layout's contracts, read from the source as Rust (with `syn`), not as text: each room
//! names only what it may, however the name is spelled (grouped imports, `super::super`,
//! paths inside macros), opens with a `//!` paragraph, and has no function too long to read
//! at once.

use std::fs;
use std::path::{Path, PathBuf};

use proc_macro2::{Spacing, TokenStream, TokenTree};
use syn::visit::{self, Visit};

/// Longest function body, in lines, outside test code.
const MAX_FUNCTION_LINES: usize = 80;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file below `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).expect("a source folder") {
            let path = entry.expect("a folder entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The module a file of the library is: `src/smtp/session/auth.rs` is `smtp::session::auth`,
/// `src/smtp/mod.rs` is `smtp`, `src/lib.rs` the crate root.
fn module_of(file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src()).expect("a file under src/");
    let mut module: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
        module.pop();
    }
    module
}

fn parse(file: &Path) -> syn::File {
    let text = fs::read_to_string(file).expect("a source file");
    syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr
                .meta
                .require_list()
                .is_ok_and(|list| list.tokens.to_string() == "test")
    })
}

/// Every path a piece of code names, made absolute where Rust makes it so (`crate::`,
/// `self::`, `super::` resolved against the module it is written in), with its line.
struct NamedPaths {
    module: Vec<String>,
    /// Test code included: the core's tests need no socket or clock either.
    found: Vec<(String, usize)>,
}

impl NamedPaths {
    fn record(&mut self, segments: &[String], line: usize) {
        let Some(first) = segments.first() else {
            return;
        };
        let mut absolute: Vec<String> = match first.as_str() {
            "crate" => vec!["crate".into()],
            "self" | "super" => {
                let mut module = self.module.clone();
                let supers = segments.iter().take_while(|s| *s == "super").count();
                for _ in 0..supers {
                    module.pop();
                }
                std::iter::once("crate".to_owned()).chain(module).collect()
            }
            _ => Vec::new(),
        };
        let rest = segments
            .iter()
            .skip_while(|s| matches!(s.as_str(), "crate" | "self" | "super"));
        absolute.extend(rest.cloned());
        self.found.push((absolute.join("::"), line));
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(path) => {
                prefix.push(path.ident.to_string());
                self.use_tree(prefix, &path.tree);
                prefix.pop();
            }
            syn::UseTree::Name(name) => self.use_leaf(prefix, &name.ident),
            syn::UseTree::Rename(rename) => self.use_leaf(prefix, &rename.ident),
            syn::UseTree::Glob(glob) => {
                let line = glob.star_token.spans[0].start().line;
                self.record(prefix, line);
            }
            syn::UseTree::Group(group) => {
                for tree in &group.items {
                    self.use_tree(prefix, tree);
                }
            }
        }
    }

    fn use_leaf(&mut self, prefix: &[String], ident: &syn::Ident) {
        let mut path = prefix.to_vec();
        // `use std::time::{self}` names `std::time` itself.
        if ident != "self" {
            path.push(ident.to_string());
        }
        self.record(&path, ident.span().start().line);
    }

    /// Paths written inside a macro's tokens (`format!`, `assert!` ...), which `syn` leaves
    /// unparsed: every run of `ident :: ident ...`.
    fn macro_tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                TokenTree::Group(group) => {
                    self.macro_tokens(group.stream());
                    i += 1;
                }
                TokenTree::Ident(first) => {
                    let mut path = vec![first.to_string()];
                    let mut j = i + 1;
                    while let (
                        Some(TokenTree::Punct(a)),
                        Some(TokenTree::Punct(b)),
                        Some(TokenTree::Ident(next)),
                    ) = (tokens.get(j), tokens.get(j + 1), tokens.get(j + 2))
                    {
                        if a.as_char() != ':' || a.spacing() != Spacing::Joint || b.as_char() != ':'
                        {
                            break;
                        }
                        path.push(next.to_string());
                        j += 3;
                    }
                    if path.len() > 1 {
                        self.record(&path, first.span().start().line);
                    }
                    i = j;
                }
                _ => i += 1,
            }
        }
    }
}

impl<'ast> Visit<'ast> for NamedPaths {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        self.module.push(item.ident.to_string());
        visit::visit_item_mod(self, item);
        self.module.pop();
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        let line = path
            .segments
            .first()
            .map_or(0, |s| s.ident.span().start().line);
        self.record(&segments, line);
        visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.macro_tokens(mac.tokens.clone());
        visit::visit_macro(self, mac);
    }
}

/// Every path `code`, the text of module `module`, names, with its line.
fn named_paths(code: &syn::File, module: Vec<String>) -> Vec<(String, usize)> {
    let mut paths = NamedPaths {
        module,
        found: Vec::new(),
    };
    paths.visit_file(code);
    paths.found
}

/// Whether `path` is `prefix` or lies under it (`std::time` holds `std::time::Instant`, not
/// `std::timer`).
fn lies_under(path: &str, prefix: &str) -> bool {
    path == prefix || path.starts_with(&format!("{prefix}::"))
}

/// Where the code of module `module` (text `code`) names one of `forbidden`.
fn forbidden_in(code: &syn::File, module: Vec<String>, forbidden: &[&str]) -> Vec<String> {
    named_paths(code, module)
        .into_iter()
        .filter_map(|(path, line)| {
            let prefix = forbidden.iter().find(|p| lies_under(&path, p))?;
            Some(format!("line {line}: {path} (under {prefix})"))
        })
        .collect()
}

/// Where `room`'s code, tests included, names one of `forbidden`, as `file: line: path`.
fn forbidden_uses(room: &str, forbidden: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for file in rust_files(&src().join(room)) {
        for hit in forbidden_in(&parse(&file), module_of(&file), forbidden) {
            found.push(format!("{}: {hit}", file.display()));
        }
    }
    found
}

/// What the SMTP core must never name: the other rooms, I/O, clocks, threads, processes.
const NOT_IN_THE_CORE: &[&str] = &[
    "crate::event_loop",
    "crate::config",
    "crate::service",
    "mio",
    "rustls",
    "socket2",
    "nix",
    "signal_hook",
    "signal_hook_mio",
    "toml",
    "serde",
    // Addresses are values the core compares: it takes them from `core::net`, which has no
    // sockets. Nothing of `std::net` comes in.
    "std::net",
    "std::fs",
    "std::os",
    "std::time",
    "core::time",
    "std::thread",
    "std::process",
    "std::io::stdin",
    "std::io::stdout",
    "std::io::stderr",
];

#[test]
fn the_smtp_core_is_pure() {
    let found = forbidden_uses("smtp", NOT_IN_THE_CORE);
    assert!(
        found.is_empty(),
        "the SMTP core must stay pure:\n{}",
        found.join("\n")
    );
}

/// `forbidden` without what `allowed` (`(module, path)` pairs) lets `module` name.
fn forbidden_in_module<'a>(
    module: &[String],
    forbidden: &[&'a str],
    allowed: &[(&str, &str)],
) -> Vec<&'a str> {
    let name = module.join("::");
    forbidden
        .iter()
        .copied()
        .filter(|path| !allowed.contains(&(name.as_str(), path)))
        .collect()
}

/// Where `room`'s code names one of `forbidden`, except what `allowed` lets one module
/// of it (`(module, path)`) name.
fn forbidden_uses_but(room: &str, forbidden: &[&str], allowed: &[(&str, &str)]) -> Vec<String> {
    let mut found = Vec::new();
    for file in rust_files(&src().join(room)) {
        let module = module_of(&file);
        let forbidden = forbidden_in_module(&module, forbidden, allowed);
        for hit in forbidden_in(&parse(&file), module, &forbidden) {
            found.push(format!("{}: {hit}", file.display()));
        }
    }
    found
}

#[test]
fn the_event_loop_is_handed_its_settings() {
    // `/proc` is the kernel's account of the serving processes, read at a scrape: no
    // configuration, nothing that can block on a disk.
    let found = forbidden_uses_but(
        "event_loop",
        &[
            "crate::config",
            "crate::service",
            "toml",
            "serde",
            "std::fs",
            "std::thread",
        ],
        &[("event_loop::process_figures", "std::fs")],
    );
    assert!(
        found.is_empty(),
        "the event loop reads no configuration:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_configuration_only_reads_files() {
    let found = forbidden_uses(
        "config",
        &[
            "crate::event_loop",
            "crate::service",
            "mio",
            "rustls",
            "socket2",
            "nix",
            "std::net::TcpListener",
            "std::net::TcpStream",
        ],
    );
    assert!(
        found.is_empty(),
        "the configuration serves nothing:\n{}",
        found.join("\n")
    );
}

/// What the report room must never name: it is handed figures and returns bytes.
const NOT_IN_THE_REPORT: &[&str] = &[
    "crate::event_loop",
    "crate::config",
    "crate::service",
    "mio",
    "rustls",
    "socket2",
    "nix",
    "libc",
    "signal_hook",
    "signal_hook_mio",
    // Addresses come from `core::net`, which has no sockets.
    "std::net",
    "std::fs",
    "std::os",
    "std::time",
    "core::time",
    "std::thread",
    "std::process",
    "std::io::stdin",
    "std::io::stdout",
    "std::io::stderr",
];

#[test]
fn the_report_is_pure() {
    let found = forbidden_uses("report", NOT_IN_THE_REPORT);
    assert!(
        found.is_empty(),
        "the report room must stay pure:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_exception_is_for_one_module_only() {
    let code = syn::parse_file("fn f() { let _ = std::fs::read(\"/proc/stat\"); }")
        .expect("the snippet parses");
    let allowed = [("event_loop::process_figures", "std::fs")];
    let forbidden = ["std::fs"];
    for (module, hits) in [
        ("event_loop::process_figures", 0),
        ("event_loop::server", 1),
    ] {
        let module: Vec<String> = module.split("::").map(str::to_owned).collect();
        let name = module.join("::");
        let forbidden = forbidden_in_module(&module, &forbidden, &allowed);
        assert_eq!(
            forbidden_in(&code, module, &forbidden).len(),
            hits,
            "{name}"
        );
    }
}

#[test]
fn the_import_check_sees_every_spelling() {
    let sneaky = syn::parse_file(
        r#"
        use crate::{config::Config, event_loop::clock::Clock};
        use super::super::service::pidfile;
        use std::{fs::File, net::{self as network, TcpStream}};
        use std::time as t;
        pub mod inner {
            use super::super::super::event_loop::server::Server;
            fn f() -> core::time::Duration { todo!() }
        }
        fn g() {
            let _ = "// not a comment";
            let _ = std::time::Instant::now();
            assert!(format!("{:?}", mio::Token(0)).len() > 0);
        }
        fn fine() { let _ = crate::smtp::reply::GOODBYE; }
        "#,
    )
    .expect("the snippet parses");
    let module = vec!["smtp".to_owned(), "session".to_owned()];
    let found = forbidden_in(&sneaky, module, NOT_IN_THE_CORE);
    let named: Vec<&str> = found
        .iter()
        .map(|hit| {
            hit.split(": ")
                .nth(1)
                .and_then(|p| p.split(' ').next())
                .unwrap_or("")
        })
        .collect();
    for expected in [
        "crate::config::Config",
        "crate::event_loop::clock::Clock",
        "crate::service::pidfile",
        "std::fs::File",
        "std::net",
        "std::time",
        "crate::event_loop::server::Server",
        "core::time::Duration",
        "std::time::Instant::now",
        "mio::Token",
    ] {
        assert!(
            named.contains(&expected),
            "{expected} slipped past: {found:#?}"
        );
    }
    assert!(
        !found.iter().any(|hit| hit.contains("crate::smtp")),
        "a path inside the core is allowed: {found:#?}"
    );
}

#[test]
fn main_only_hands_over() {
    let main = parse(&src().join("main.rs"));
    let paths = named_paths(&main, Vec::new());
    for room in [
        "blackhole::config",
        "blackhole::event_loop",
        "blackhole::smtp",
    ] {
        let uses: Vec<_> = paths.iter().filter(|(p, _)| lies_under(p, room)).collect();
        assert!(
            uses.is_empty(),
            "main.rs uses {uses:?}: hand it to the service"
        );
    }
    assert!(
        paths.iter().any(|(p, _)| p == "service::run"),
        "main.rs hands over to service::run"
    );
}

/// The library's rooms, each a folder under `src/` with a `mod.rs`.
const ROOMS: [&str; 5] = ["smtp", "event_loop", "config", "service", "report"];

#[test]
fn every_room_says_what_it_owns() {
    for room in ROOMS {
        let text = fs::read_to_string(src().join(room).join("mod.rs")).expect("a room's mod.rs");
        assert!(
            text.starts_with("//! "),
            "src/{room}/mod.rs opens with a //! paragraph"
        );
        assert!(
            text.contains("must not"),
            "src/{room}/mod.rs says what the room must not do"
        );
    }
    let lib = fs::read_to_string(src().join("lib.rs")).expect("lib.rs");
    for room in ROOMS {
        assert!(
            lib.contains(&format!("pub mod {room};")),
            "lib.rs names {room}"
        );
    }
}

/// Functions longer than `limit` lines outside `#[cfg(test)]` code, as `name (lines)`; a
/// function's length is the lines between its `fn` and its closing brace.
struct LongFunctions {
    limit: usize,
    found: Vec<String>,
}

impl LongFunctions {
    fn check(&mut self, sig: &syn::Signature, block: &syn::Block) {
        let start = sig.fn_token.span.start().line;
        let end = block.brace_token.span.close().start().line;
        let length = end.saturating_sub(start + 1);
        if length > self.limit {
            self.found
                .push(format!("fn {} ({length} lines)", sig.ident));
        }
    }
}

impl<'ast> Visit<'ast> for LongFunctions {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        if !is_cfg_test(&item.attrs) {
            visit::visit_item_mod(self, item);
        }
    }

    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        if !is_cfg_test(&item.attrs) {
            self.check(&item.sig, &item.block);
            visit::visit_item_fn(self, item);
        }
    }

    fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
        if !is_cfg_test(&item.attrs) {
            self.check(&item.sig, &item.block);
            visit::visit_impl_item_fn(self, item);
        }
    }

    fn visit_trait_item_fn(&mut self, item: &'ast syn::TraitItemFn) {
        if let (false, Some(block)) = (is_cfg_test(&item.attrs), &item.default) {
            self.check(&item.sig, block);
        }
        visit::visit_trait_item_fn(self, item);
    }
}

fn long_functions(code: &syn::File, limit: usize) -> Vec<String> {
    let mut long = LongFunctions {
        limit,
        found: Vec::new(),
    };
    long.visit_file(code);
    long.found
}

/// The modules declared `#[cfg(test)] mod name;` anywhere in the library: their files, and
/// everything below them, are test code.
fn test_modules() -> Vec<Vec<String>> {
    struct Declared {
        module: Vec<String>,
        tests: Vec<Vec<String>>,
    }
    impl<'ast> Visit<'ast> for Declared {
        fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
            self.module.push(item.ident.to_string());
            if is_cfg_test(&item.attrs) && item.content.is_none() {
                self.tests.push(self.module.clone());
            }
            visit::visit_item_mod(self, item);
            self.module.pop();
        }
    }
    let mut declared = Declared {
        module: Vec::new(),
        tests: Vec::new(),
    };
    for file in rust_files(&src()) {
        if file.ends_with("main.rs") {
            continue;
        }
        declared.module = module_of(&file);
        declared.visit_file(&parse(&file));
    }
    declared.tests
}

#[test]
fn no_function_is_too_long_to_read() {
    let tests = test_modules();
    let mut found = Vec::new();
    for file in rust_files(&src()) {
        let module = module_of(&file);
        if tests.iter().any(|t| module.starts_with(t)) {
            continue;
        }
        for long in long_functions(&parse(&file), MAX_FUNCTION_LINES) {
            found.push(format!("{}: {long}", file.display()));
        }
    }
    assert!(found.is_empty(), "split these:\n{}", found.join("\n"));
}

#[test]
fn the_length_check_sees_every_long_function() {
    let body = "    let x = 1;\n".repeat(MAX_FUNCTION_LINES + 1);
    let text = format!(
        "#[cfg(test)]\nmod tests;\n\
         pub fn long() {{\n{body}}}\n\
         fn short() {{\n}}\n\
         struct S;\nimpl S {{\n    pub(in crate) unsafe fn method(&self) {{\n{body}    }}\n}}\n\
         #[cfg(test)]\nmod inline {{\n    fn long_test() {{\n{body}    }}\n}}\n"
    );
    let code = syn::parse_file(&text).expect("the snippet parses");
    assert_eq!(
        long_functions(&code, MAX_FUNCTION_LINES),
        ["fn long (81 lines)", "fn method (81 lines)"]
    );
}

#[test]
fn test_files_are_found_by_their_declaration() {
    let tests = test_modules();
    for module in [["smtp", "session", "tests"], ["smtp", "session", "fuzz"]] {
        let module: Vec<String> = module.iter().map(|s| s.to_string()).collect();
        assert!(tests.contains(&module), "{module:?} in {tests:?}");
    }
    assert!(
        !tests.iter().any(|t| t.is_empty() || t == &["smtp"]),
        "only test modules: {tests:?}"
    );
}
