//! Plugins written in Python or JavaScript: a directory holding `world.wit` (the plugin's own
//! world, named `plugin`, importing only the `wasmcni:plugin` interfaces it calls) and either
//! `app.py` (built with componentize-py) or `plugin.js` (built with componentize-js). Each
//! bundles its language's interpreter into the component.
//!
//! The toolchains live in `<target>/toolchains`, where `scripts/install-deps.sh` installs
//! them: a Python virtualenv with componentize-py, and componentize-js under `js/`. A plugin
//! whose toolchain is missing is skipped with a line saying how to install it, so the Rust
//! plugins still build without them.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The language of an interpreted plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Language {
    Python,
    JavaScript,
}

impl Language {
    /// The entry file that marks a plugin directory as this language's.
    fn entry(self) -> &'static str {
        match self {
            Language::Python => "app.py",
            Language::JavaScript => "plugin.js",
        }
    }
}

/// The interpreted plugins directly under `workspace`, by name (the directory's), sorted.
pub(crate) fn find(workspace: &Path) -> Result<Vec<(String, PathBuf, Language)>, String> {
    let entries = std::fs::read_dir(workspace)
        .map_err(|e| format!("reading {}: {e}", workspace.display()))?;
    let mut found = Vec::new();
    for entry in entries {
        let dir = entry
            .map_err(|e| format!("reading {}: {e}", workspace.display()))?
            .path();
        if !dir.join("world.wit").is_file() {
            continue;
        }
        let language = [Language::Python, Language::JavaScript]
            .into_iter()
            .find(|language| dir.join(language.entry()).is_file());
        let (Some(language), Some(name)) = (language, dir.file_name().and_then(|n| n.to_str()))
        else {
            continue;
        };
        found.push((name.to_owned(), dir.clone(), language));
    }
    found.sort();
    Ok(found)
}

/// Builds one interpreted plugin; `Ok(None)` when its toolchain is not installed.
pub(crate) fn build(
    name: &str,
    dir: &Path,
    language: Language,
    root: &Path,
    target: &Path,
) -> Result<Option<Vec<u8>>, String> {
    let toolchains = target.join("toolchains");
    let tool = match language {
        Language::Python => toolchains.join("python/bin/componentize-py"),
        Language::JavaScript => {
            toolchains.join("js/node_modules/@bytecodealliance/componentize-js")
        }
    };
    if !tool.exists() {
        println!(
            "{name:<24} skipped: {} is not installed (scripts/install-deps.sh installs it into {})",
            match language {
                Language::Python => "componentize-py",
                Language::JavaScript => "componentize-js",
            },
            toolchains.display()
        );
        return Ok(None);
    }
    let wit = wit_dir(name, dir, root, target)?;
    let out = target.join("plugin-wit").join(format!("{name}.wasm"));
    // Never the component of an earlier build, should this one write nothing.
    let _ = std::fs::remove_file(&out);
    let mut command = match language {
        Language::Python => {
            let mut command = Command::new(&tool);
            command
                .arg("-d")
                .arg(&wit)
                .args(["-w", "plugin", "componentize", "app", "-p"])
                .arg(dir)
                .arg("-o")
                .arg(&out)
                // No bytecode caches written into the plugin's source directory.
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .env("PYTHONHASHSEED", "0");
            command
        }
        Language::JavaScript => {
            let mut command = Command::new("node");
            command
                .args(["--input-type=module", "-e", COMPONENTIZE_JS])
                .arg(dir.join(Language::JavaScript.entry()))
                .arg(&wit)
                .arg(&out)
                // Bare imports in the script resolve from the toolchain's node_modules.
                .current_dir(toolchains.join("js"));
            command
        }
    };
    let program = match language {
        Language::Python => tool.display().to_string(),
        Language::JavaScript => "node (Node.js 20 or later, for componentize-js)".into(),
    };
    let output = command
        .output()
        .map_err(|e| format!("{name}: running {program}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{name}: building the component failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    std::fs::read(&out)
        .map(Some)
        .map_err(|e| format!("reading {}: {e}", out.display()))
}

/// Builds the component with componentize-js, every WASI feature of its engine left out (no
/// stdio, randomness, clocks or HTTP), so the component imports only its world.
/// Arguments: the entry file, the WIT directory, the output file.
const COMPONENTIZE_JS: &str = r#"
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';
const [sourcePath, witPath, out] = process.argv.slice(1);
const { component } = await componentize({
  sourcePath,
  witPath,
  worldName: 'plugin',
  disableFeatures: ['stdio', 'random', 'clocks', 'http', 'fetch-event'],
});
await writeFile(out, component);
"#;

/// A WIT directory for one plugin: its `world.wit`, and `wasmcni:plugin` (this checkout's
/// `wit/`) as a dependency.
fn wit_dir(name: &str, dir: &Path, root: &Path, target: &Path) -> Result<PathBuf, String> {
    let wit = target.join("plugin-wit").join(name);
    let deps = wit.join("deps/wasmcni-plugin");
    let _ = std::fs::remove_dir_all(&wit);
    std::fs::create_dir_all(&deps).map_err(|e| format!("creating {}: {e}", deps.display()))?;
    let copy = |from: &Path, to: &Path| {
        std::fs::copy(from, to)
            .map(drop)
            .map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()))
    };
    copy(&dir.join("world.wit"), &wit.join("world.wit"))?;
    let package = root.join("wit");
    let entries =
        std::fs::read_dir(&package).map_err(|e| format!("reading {}: {e}", package.display()))?;
    for entry in entries {
        let path = entry
            .map_err(|e| format!("reading {}: {e}", package.display()))?
            .path();
        if path.extension().is_some_and(|ext| ext == "wit") {
            copy(&path, &deps.join(path.file_name().expect("a file")))?;
        }
    }
    Ok(wit)
}

impl Language {
    /// `--language python|javascript` (`rust`: `None`, the Cargo templates).
    pub(crate) fn parse(text: &str) -> Result<Option<Language>, String> {
        match text {
            "rust" => Ok(None),
            "python" => Ok(Some(Language::Python)),
            "javascript" => Ok(Some(Language::JavaScript)),
            other => Err(format!(
                "--language {other:?}: a plugin is written in rust, python or javascript"
            )),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::JavaScript => "javascript",
        }
    }
}

/// The files of a new allocator named `name` in `language`: the namespace-subnets example
/// (`plugins/ns-subnets-py` or `-js`) as a starting point, its world renamed.
pub(crate) fn template_files(name: &str, language: Language) -> Vec<(&'static str, String)> {
    let (example, mut files): (&str, Vec<(&'static str, String)>) = match language {
        Language::Python => (
            "ns-subnets-py",
            vec![
                (
                    "app.py",
                    include_str!("../../../plugins/ns-subnets-py/app.py").into(),
                ),
                (
                    "strategy.py",
                    include_str!("../../../plugins/ns-subnets-py/strategy.py").into(),
                ),
                (
                    "test_strategy.py",
                    include_str!("../../../plugins/ns-subnets-py/test_strategy.py").into(),
                ),
                (
                    "world.wit",
                    include_str!("../../../plugins/ns-subnets-py/world.wit").into(),
                ),
                (".gitignore", "__pycache__/\n*.wasm\n".into()),
            ],
        ),
        Language::JavaScript => (
            "ns-subnets-js",
            vec![
                (
                    "plugin.js",
                    include_str!("../../../plugins/ns-subnets-js/plugin.js").into(),
                ),
                (
                    "strategy.js",
                    include_str!("../../../plugins/ns-subnets-js/strategy.js").into(),
                ),
                (
                    "strategy.test.mjs",
                    include_str!("../../../plugins/ns-subnets-js/strategy.test.mjs").into(),
                ),
                (
                    "world.wit",
                    include_str!("../../../plugins/ns-subnets-js/world.wit").into(),
                ),
                (
                    "package.json",
                    include_str!("../../../plugins/ns-subnets-js/package.json").into(),
                ),
                (".gitignore", "*.wasm\n".into()),
            ],
        ),
    };
    for (file, text) in &mut files {
        if *file == "world.wit" {
            *text = text.replace(
                &format!("wasmcni-plugins:{example}"),
                &format!("local:{name}"),
            );
        } else if *file == "package.json" {
            *text = text.replace(&format!("\"{example}\""), &format!("\"{name}\""));
        }
    }
    let (test, entry) = match language {
        Language::Python => ("python3 -m unittest", "strategy.py"),
        Language::JavaScript => ("node --test", "strategy.js"),
    };
    files.push((
        "README.md",
        format!(
            "# {name}\n\nA wasmcni allocator in {language}, created by `wasmcni-plugin-build new \
             --language {language}` from the namespace-subnets example ({example}): change \
             `{entry}` (the strategy) and `world.wit` (what it imports, so what it is granted).\n\n\
             ```sh\n{test}    # the strategy's unit tests\n\
             # the component (target/plugins/{name}.wasm) and its digest, from the wasmcni checkout:\n\
             ./target/release/wasmcni-plugin-build <this directory's parent, as an absolute path>\n\
             ```\n\nThe guide: `docs/writing-an-allocation-strategy.md` §14 in the wasmcni checkout.\n",
            language = language.as_str()
        ),
    ));
    files
}

/// Runs the plugin's unit tests with its language's own runner; their output, or why they
/// failed.
pub(crate) fn unit_test(dir: &Path, language: Language) -> Result<String, String> {
    let mut command = match language {
        Language::Python => {
            let mut command = Command::new("python3");
            command
                .args(["-m", "unittest"])
                .env("PYTHONDONTWRITEBYTECODE", "1");
            command
        }
        Language::JavaScript => {
            let mut command = Command::new("node");
            command.arg("--test");
            command
        }
    };
    let output = command
        .current_dir(dir)
        .output()
        .map_err(|e| format!("running the unit tests of {}: {e}", dir.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "the unit tests of {} failed ({}):\n{text}",
            dir.display(),
            output.status
        ))
    }
}
