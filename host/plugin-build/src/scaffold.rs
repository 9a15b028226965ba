//! `wasmcni-plugin-build new <name> --kind <allocator|tagger|policy> [--language
//! <rust|python|javascript>] [--dir <parent>] [--target-dir <dir>] [--no-build]`: a new plugin
//! from the kind's template in `plugins/` (the allocator's `template`, `template-tagger`,
//! `template-policy`), as a cargo workspace of its own under `<parent>/<name>` whose SDK is this
//! checkout's (and whose lockfile is `plugins/`'s); then its native tests, its component
//! (`<parent>/<name>/<name>.wasm`), its digest, and the cluster-configuration entry to paste,
//! granting exactly the interfaces the component imports. In Python or JavaScript (allocators),
//! from the namespace-subnets example instead, tested with the language's own runner and built
//! with componentize-py or componentize-js (`interpreted.rs`).
//!
//! It builds in the plugin's own `target/` (or `--target-dir`), never in the checkout's shared
//! guest directory: cargo names a cdylib's module after its package alone, so two packages of
//! one name there would overwrite each other's `.wasm`.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::interpreted::{self, Language};

/// A plugin kind and where its template lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Allocator,
    Tagger,
    Policy,
}

impl Kind {
    fn parse(text: &str) -> Result<Kind, String> {
        match text {
            "allocator" => Ok(Kind::Allocator),
            "tagger" => Ok(Kind::Tagger),
            "policy" => Ok(Kind::Policy),
            other => Err(format!(
                "--kind {other:?}: a plugin is an allocator, a tagger or a policy"
            )),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Kind::Allocator => "allocator",
            Kind::Tagger => "tagger",
            Kind::Policy => "policy",
        }
    }

    /// The template's source, package name and exported type name.
    fn template(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Kind::Allocator => (
                include_str!("../../../plugins/template/src/lib.rs"),
                "my-strategy",
                "MyStrategy",
            ),
            Kind::Tagger => (
                include_str!("../../../plugins/template-tagger/src/lib.rs"),
                "my-tagger",
                "MyTagger",
            ),
            Kind::Policy => (
                include_str!("../../../plugins/template-policy/src/lib.rs"),
                "my-policy",
                "MyPolicy",
            ),
        }
    }

    /// The configuration section that puts a plugin of this kind to work.
    fn section(self, name: &str) -> String {
        match self {
            Kind::Allocator => format!("[allocator]\nplugin = \"{name}\"\n"),
            Kind::Tagger => format!("[tagger]\nplugin = \"{name}\"\n"),
            Kind::Policy => format!("[policy]\nplugins = [\"{name}\"]\n"),
        }
    }
}

/// What `new` was asked for.
#[derive(Debug)]
struct Request {
    name: String,
    kind: Kind,
    parent: PathBuf,
    /// Where cargo builds (default: the plugin's own `target/`).
    target_dir: Option<PathBuf>,
    build: bool,
    /// Python or JavaScript (`None`: Rust).
    language: Option<Language>,
}

impl Request {
    fn parse(args: &[String]) -> Result<Request, String> {
        let usage = "usage: wasmcni-plugin-build new <name> --kind <allocator|tagger|policy> \
                     [--language <rust|python|javascript>] [--dir <parent directory>] \
                     [--target-dir <dir>] [--no-build]";
        let mut name = None;
        let mut kind = None;
        let mut parent = PathBuf::from(".");
        let mut target_dir = None;
        let mut build = true;
        let mut language = None;
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || {
                args.next()
                    .ok_or_else(|| format!("{arg} needs a value; {usage}"))
            };
            match arg.as_str() {
                "--kind" => kind = Some(Kind::parse(value()?)?),
                "--dir" => parent = PathBuf::from(value()?),
                "--target-dir" => target_dir = Some(PathBuf::from(value()?)),
                "--no-build" => build = false,
                "--language" => language = Language::parse(value()?)?,
                flag if flag.starts_with('-') => return Err(format!("unknown {flag}; {usage}")),
                _ if name.is_some() => return Err(format!("one name only; {usage}")),
                _ => name = Some(check_name(arg)?),
            }
        }
        let kind = kind.ok_or_else(|| format!("no --kind; {usage}"))?;
        if language.is_some() && target_dir.is_some() {
            return Err(
                "--target-dir is where cargo builds a Rust plugin; a Python or JavaScript one \
                 is built with the checkout's toolchains"
                    .into(),
            );
        }
        if language.is_some() && kind != Kind::Allocator {
            return Err(format!(
                "a {} is written in Rust for now: the Python and JavaScript templates are \
                 allocators",
                kind.as_str()
            ));
        }
        Ok(Request {
            name: name.ok_or_else(|| format!("no name; {usage}"))?,
            kind,
            parent,
            target_dir,
            build,
            language,
        })
    }
}

/// Package names a plugin cannot take: Rust's own crates and keywords a type name would clash
/// with, and the SDK it depends on.
const RESERVED_NAMES: [&str; 8] = [
    "alloc",
    "core",
    "proc-macro",
    "self",
    "std",
    "super",
    "test",
    "wasmcni-plugin-sdk",
];

/// A plugin name that is also a cargo package name and a configuration plugin name: 1 to 64
/// lowercase letters, digits and `-`, starting with a letter, none of [`RESERVED_NAMES`].
fn check_name(name: &str) -> Result<String, String> {
    // (Words joined by single `-`s: also a WIT package name, which a Python or JavaScript
    // plugin's world takes.)
    let valid = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.split('-').all(|word| !word.is_empty());
    if !valid {
        return Err(format!(
            "{name:?} is not a plugin name: 1 to 64 lowercase letters, digits and single `-`s, \
             starting with a letter"
        ));
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(format!(
            "{name:?} is reserved (a Rust crate or keyword, or the SDK)"
        ));
    }
    Ok(name.to_owned())
}

/// `text` as a TOML basic string: JSON's string escapes (`\"`, `\\`, `\n`, `\uXXXX`) are
/// TOML's.
fn toml_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

/// `path` as UTF-8, which a TOML string needs.
fn utf8(path: &Path) -> Result<&str, String> {
    path.to_str()
        .ok_or_else(|| format!("{} is not UTF-8; choose another directory", path.display()))
}

/// `MyPlugin` for `my-plugin`.
fn type_name(name: &str) -> String {
    name.split('-')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            let first = chars.next().map(|c| c.to_ascii_uppercase());
            first.into_iter().chain(chars).collect::<String>()
        })
        .collect()
}

/// The new crate's files: (path inside the plugin directory, contents).
fn files(name: &str, kind: Kind, sdk: &str, lockfile: &str) -> Vec<(&'static str, String)> {
    let (source, template_name, template_type) = kind.template();
    let source = source
        .replace(template_name, name)
        .replace(template_type, &type_name(name));
    let manifest = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
# wasmcni's SDK, from the checkout that created this plugin. A daemon loads components built
# against its WIT package's minor version (any 0.3.x), and one built against a newer 0.3.x only
# if it uses nothing that daemon lacks.
wasmcni-plugin-sdk = {{ path = {sdk}, features = ["{kind}"] }}

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
panic = "abort"   # a panic traps the call instead of unwinding
strip = true

[lints.clippy]
too_many_arguments = "allow"   # wit-bindgen's generated glue

# A workspace of its own, whatever directory it is created in.
[workspace]
"#,
        sdk = toml_string(sdk),
        kind = kind.as_str(),
    );
    let readme = format!(
        "# {name}\n\nA wasmcni {kind} plugin, created by `wasmcni-plugin-build new`.\n\n\
         ```sh\n\
         cargo test    # its decisions, natively\n\
         # the component (target/plugins/{name}.wasm) and its digest, from the wasmcni checkout:\n\
         cargo run --release -p wasmcni-plugin-build -- <this directory, as an absolute path>\n\
         ```\n\n\
         The guide: `docs/writing-an-allocation-strategy.md` in the wasmcni checkout.\n",
        kind = kind.as_str()
    );
    vec![
        ("Cargo.toml", manifest),
        ("src/lib.rs", source),
        ("README.md", readme),
        (".gitignore", "/target\n".to_owned()),
        // The versions `plugins/` is tested with; cargo drops what this crate does not use.
        ("Cargo.lock", lockfile.to_owned()),
    ]
}

/// The grant (with a starting scope) of each capability a component may import.
fn grant_line(capability: &str) -> Option<&'static str> {
    Some(match capability {
        "pool-view" => "pool-view = {}",
        "log" => "log = {}",
        "clock" => "clock = {}",
        "kv" => "kv = { max_bytes = 65536 }",
        "eni-ops" => {
            "eni-ops = { subnets = [\"node\"], security_groups = [\"node\"] }   # widen deliberately"
        }
        "netlink" => "netlink = { mtu = [1280, 9001], routes = [] }",
        "wasi" => "wasi = {}   # its interpreter's WASI, holding nothing (docs/configuration.md)",
        _ => return None,
    })
}

/// The `wasmcni:plugin` interfaces `component` imports, by interface name, and `wasi` when it
/// imports any WASI interface.
fn imported_interfaces(component: &[u8]) -> Result<Vec<String>, String> {
    let wit_component::DecodedWasm::Component(resolve, world) =
        wit_component::decode(component).map_err(|e| format!("decoding the component: {e:#}"))?
    else {
        return Err("the build produced a WIT package, not a component".into());
    };
    let mut interfaces: Vec<String> = resolve.worlds[world]
        .imports
        .keys()
        .map(|key| resolve.name_world_key(key))
        .filter_map(|name| {
            if name.starts_with("wasi:") {
                return Some("wasi".to_owned());
            }
            let rest = name.strip_prefix("wasmcni:plugin/")?;
            Some(rest.split_once('@').map_or(rest, |(i, _)| i).to_owned())
        })
        .collect();
    interfaces.sort();
    interfaces.dedup();
    Ok(interfaces)
}

/// The `[[plugins]]` entry and the kind's section for the built component.
fn snippet(name: &str, kind: Kind, path: &str, digest: &str, interfaces: &[String]) -> String {
    let mut text = format!(
        "[[plugins]]\nname = \"{name}\"\nkind = \"{}\"\npath = {}   # where the node will have \
         it\ndigest = \"{digest}\"\n",
        kind.as_str(),
        toml_string(path)
    );
    if kind == Kind::Tagger {
        text.push_str("tag_keys = []   # every key its tags may set\n");
    }
    text.push_str("[plugins.grants]   # exactly what the component imports\n");
    for line in interfaces.iter().filter_map(|i| grant_line(i)) {
        text.push_str(line);
        text.push('\n');
    }
    text.push('\n');
    text.push_str(&kind.section(name));
    text
}

/// Runs `new`: creates, tests and builds the plugin; prints where it is, its digest and the
/// configuration to paste.
pub(crate) fn run(args: &[String], root: &Path, target: &Path) -> Result<(), String> {
    let request = Request::parse(args)?;
    let mut taken: Vec<String> = ["plugins", "tests/plugins"]
        .iter()
        .map(|workspace| crate::guest_members(&root.join(workspace)))
        .collect::<Result<Vec<_>, _>>()?
        .concat();
    for workspace in ["plugins", "tests/plugins"] {
        taken.extend(
            interpreted::find(&root.join(workspace))?
                .into_iter()
                .map(|(name, _, _)| name),
        );
    }
    if taken.contains(&request.name) {
        return Err(format!(
            "{:?} is the name of one of wasmcni's own plugins (its component would take that \
             plugin's place in target/plugins); choose another",
            request.name
        ));
    }
    let sdk = root
        .join("plugins/sdk")
        .canonicalize()
        .map_err(|e| format!("the SDK of this checkout: {e}"))?;
    let lockfile = std::fs::read_to_string(root.join("plugins/Cargo.lock"))
        .map_err(|e| format!("plugins/Cargo.lock of this checkout: {e}"))?;
    std::fs::create_dir_all(&request.parent)
        .map_err(|e| format!("creating {}: {e}", request.parent.display()))?;
    let dir = request
        .parent
        .canonicalize()
        .map_err(|e| format!("{}: {e}", request.parent.display()))?
        .join(&request.name);
    // One `mkdir`: it fails when the directory exists, whoever made it when.
    std::fs::create_dir(&dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => format!(
            "{} exists already; choose another name or --dir",
            dir.display()
        ),
        _ => format!("creating {}: {e}", dir.display()),
    })?;
    let written = utf8(&sdk).and_then(|sdk| {
        match request.language {
            Some(language) => interpreted::template_files(&request.name, language),
            None => files(&request.name, request.kind, sdk, &lockfile),
        }
        .into_iter()
        .try_for_each(|(file, contents)| {
            let path = dir.join(file);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("creating {}: {e}", parent.display()))?;
            }
            std::fs::write(&path, contents).map_err(|e| format!("writing {}: {e}", path.display()))
        })
    });
    if let Err(e) = written {
        // Nothing of it is any use: leave no half-made plugin behind.
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    println!("created {} ({})", dir.display(), request.kind.as_str());
    if !request.build {
        return Ok(());
    }
    let (test, build_from) = match request.language {
        None => ("cargo test".to_owned(), dir.clone()),
        Some(Language::Python) => ("python3 -m unittest".into(), request_parent(&dir)),
        Some(Language::JavaScript) => ("node --test".into(), request_parent(&dir)),
    };
    let kept = |why: String| {
        format!(
            "{why}\n(kept {}, its sources complete: fix it, then `{test}` there and \
             `cargo run --release -p wasmcni-plugin-build -- {}` from the checkout)",
            dir.display(),
            build_from.display()
        )
    };
    if let Some(language) = request.language {
        return build_interpreted(&request, &dir, language, root, target).map_err(kept);
    }
    let target = request
        .target_dir
        .clone()
        .unwrap_or_else(|| dir.join("target"));
    // Release, like the component: the proc macros are built once for both.
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["test", "--release", "--quiet", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .map_err(|e| kept(format!("running cargo test in {}: {e}", dir.display())))?;
    if !status.success() {
        return Err(kept(format!(
            "the tests of {} failed ({status})",
            dir.display()
        )));
    }
    let built = crate::build_workspace(&dir, &target).map_err(kept)?;
    let [(name, component)] = &built[..] else {
        return Err(kept(format!(
            "{} built {} components, not one",
            dir.display(),
            built.len()
        )));
    };
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, component)
        .map_err(|e| kept(format!("writing {}: {e}", path.display())))?;
    let digest = format!("sha256:{:x}", Sha256::digest(component));
    let interfaces = imported_interfaces(component).map_err(kept)?;
    println!(
        "built {} ({} bytes), {digest}",
        path.display(),
        component.len()
    );
    println!("\n# paste into the cluster configuration:\n");
    print!(
        "{}",
        snippet(name, request.kind, utf8(&path)?, &digest, &interfaces)
    );
    Ok(())
}

/// The directory a Python or JavaScript plugin is built from: its parent (`wasmcni-plugin-build`
/// builds every such plugin directory in the directory it is given).
fn request_parent(dir: &Path) -> PathBuf {
    dir.parent().map_or_else(|| dir.to_owned(), Path::to_owned)
}

/// Tests and builds a new Python or JavaScript allocator with the checkout's toolchains (in
/// `target`), and prints what the Rust path prints.
fn build_interpreted(
    request: &Request,
    dir: &Path,
    language: Language,
    root: &Path,
    target: &Path,
) -> Result<(), String> {
    print!("{}", interpreted::unit_test(dir, language)?);
    let name = &request.name;
    let component = interpreted::build(name, dir, language, root, target)?.ok_or_else(|| {
        format!(
            "its toolchain is not installed in {}: run scripts/install-deps.sh in the checkout",
            target.join("toolchains").display()
        )
    })?;
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, &component).map_err(|e| format!("writing {}: {e}", path.display()))?;
    let digest = format!("sha256:{:x}", Sha256::digest(&component));
    let interfaces = imported_interfaces(&component)?;
    println!(
        "built {} ({} bytes), {digest}",
        path.display(),
        component.len()
    );
    println!("\n# paste into the cluster configuration:\n");
    print!(
        "{}",
        snippet(name, request.kind, utf8(&path)?, &digest, &interfaces)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_package_and_plugin_names() {
        assert_eq!(check_name("team-pack2"), Ok("team-pack2".into()));
        for bad in [
            "",
            "Pack",
            "2pack",
            "pa_ck",
            "pa ck",
            "pa--ck",
            "pack-",
            &"x".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for reserved in ["self", "std", "wasmcni-plugin-sdk"] {
            assert!(
                check_name(reserved).unwrap_err().contains("reserved"),
                "{reserved}"
            );
        }
        assert_eq!(type_name("team-pack2"), "TeamPack2");
    }

    #[test]
    fn arguments_say_what_is_missing_or_unknown() {
        let parse =
            |args: &[&str]| Request::parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>());
        assert!(parse(&["p"]).unwrap_err().starts_with("no --kind"));
        assert!(parse(&["--kind", "allocator"])
            .unwrap_err()
            .starts_with("no name"));
        assert!(parse(&["p", "--kind", "router"])
            .unwrap_err()
            .contains("\"router\""));
        assert!(parse(&["p", "--kind"])
            .unwrap_err()
            .starts_with("--kind needs a value"));
        assert!(parse(&["p", "--fast", "--kind", "policy"])
            .unwrap_err()
            .starts_with("unknown --fast"));
        let request = parse(&["p", "--kind", "tagger", "--dir", "/tmp/x", "--no-build"]).unwrap();
        assert_eq!(
            (
                request.name.as_str(),
                request.kind,
                request.parent.as_path(),
                request.build
            ),
            ("p", Kind::Tagger, Path::new("/tmp/x"), false)
        );
        assert_eq!(request.target_dir, None);
        assert_eq!(request.language, None);
        let python = parse(&["p", "--kind", "allocator", "--language", "python"]).unwrap();
        assert_eq!(python.language, Some(Language::Python));
        assert!(parse(&["p", "--kind", "allocator", "--language", "go"])
            .unwrap_err()
            .contains("\"go\""));
        assert!(
            parse(&["p", "--kind", "tagger", "--language", "javascript"])
                .unwrap_err()
                .contains("written in Rust for now")
        );
    }

    #[test]
    fn the_python_and_javascript_templates_become_the_new_plugin() {
        for language in [Language::Python, Language::JavaScript] {
            let files = interpreted::template_files("team-pack", language);
            let world = &files.iter().find(|(f, _)| *f == "world.wit").unwrap().1;
            assert!(world.contains("package local:team-pack;"), "{world}");
            assert!(world.contains("world plugin {"), "{world}");
            assert!(files.iter().any(|(f, _)| *f == "README.md"));
        }
    }

    #[test]
    fn every_template_becomes_the_new_plugin() {
        for kind in [Kind::Allocator, Kind::Tagger, Kind::Policy] {
            let (_, template_name, template_type) = kind.template();
            let files = files("team-pack", kind, "/sdk", "# lock");
            let source = &files.iter().find(|(f, _)| *f == "src/lib.rs").unwrap().1;
            assert!(!source.contains(template_name) && !source.contains(template_type));
            assert!(source.contains("TeamPack"), "{kind:?}");
            let manifest = &files[0].1;
            assert!(manifest.contains(&format!("features = [\"{}\"]", kind.as_str())));
        }
    }

    #[test]
    fn the_snippet_grants_exactly_the_imports() {
        let text = snippet(
            "p",
            Kind::Policy,
            "/opt/p.wasm",
            "sha256:00",
            &[
                "config".into(),
                "kv".into(),
                "netlink".into(),
                "types".into(),
            ],
        );
        assert!(
            text.contains("kv = { max_bytes = 65536 }\nnetlink = {"),
            "{text}"
        );
        assert!(
            !text.contains("config =") && !text.contains("types ="),
            "{text}"
        );
        assert!(text.ends_with("[policy]\nplugins = [\"p\"]\n"), "{text}");
    }

    #[test]
    fn paths_are_written_as_toml_strings() {
        assert_eq!(toml_string(r#"/a "b"\c"#), r#""/a \"b\"\\c""#);
        assert_eq!(toml_string("/tab\there"), r#""/tab\there""#);
        let text = snippet("p", Kind::Allocator, "/we\"ird/p.wasm", "sha256:00", &[]);
        assert!(text.contains(r#"path = "/we\"ird/p.wasm""#), "{text}");
        let files = files("p", Kind::Allocator, "/sdk \"x\"", "");
        assert!(
            files[0].1.contains(r#"path = "/sdk \"x\"""#),
            "{}",
            files[0].1
        );
    }
}
