//! `notification-host new`: a self-contained normalizer project.
//!
//! The project needs nothing from this repository: the contract's WIT comes
//! from the binary itself, and the build uses only the language's own
//! package registry (crates.io, PyPI or npm).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::config::{Language, NewArgs};
use crate::runtime::{CONTRACT_VERSION, CONTRACT_WIT};

/// One file of a project: its path in the project and its template.
struct File {
    path: &'static str,
    template: &'static str,
    executable: bool,
}

const fn file(path: &'static str, template: &'static str) -> File {
    File { path, template, executable: false }
}

const COMMON: &[File] = &[
    file("{{name}}.toml", include_str!("../../templates/common/manifest.toml")),
    file("{{name}}.samples.jsonl", include_str!("../../templates/common/samples.jsonl")),
    file("README.md", include_str!("../../templates/common/README.md")),
];

const RUST: &[File] = &[
    file("wit/normalizer.wit", CONTRACT_WIT),
    file("Cargo.toml", include_str!("../../templates/rust/Cargo.toml")),
    file("src/lib.rs", include_str!("../../templates/rust/lib.rs")),
    File { path: "build.sh", template: include_str!("../../templates/rust/build.sh"), executable: true },
    file(".gitignore", include_str!("../../templates/rust/gitignore")),
];

const PYTHON: &[File] = &[
    file("wit/normalizer.wit", CONTRACT_WIT),
    file("app.py", include_str!("../../templates/python/app.py")),
    file("requirements.txt", include_str!("../../templates/python/requirements.txt")),
    File { path: "build.sh", template: include_str!("../../templates/python/build.sh"), executable: true },
    file(".gitignore", include_str!("../../templates/python/gitignore")),
];

/// A JavaScript module's world extends the contract's with standard output
/// and error (for `console`), so the contract is a dependency of its WIT.
const JS: &[File] = &[
    file("wit/world.wit", include_str!("../../templates/js/world.wit")),
    file("wit/deps/normalizer/normalizer.wit", CONTRACT_WIT),
    file("wit/deps/cli/package.wit", include_str!("../../templates/js/wit-deps/cli/package.wit")),
    file("wit/deps/clocks/package.wit", include_str!("../../templates/js/wit-deps/clocks/package.wit")),
    file("wit/deps/filesystem/package.wit", include_str!("../../templates/js/wit-deps/filesystem/package.wit")),
    file("wit/deps/io/package.wit", include_str!("../../templates/js/wit-deps/io/package.wit")),
    file("wit/deps/random/package.wit", include_str!("../../templates/js/wit-deps/random/package.wit")),
    file("wit/deps/sockets/package.wit", include_str!("../../templates/js/wit-deps/sockets/package.wit")),
    file("wit/deps/README.md", include_str!("../../templates/js/wit-deps/README.md")),
    file("wit/deps/LICENSE.md", include_str!("../../templates/js/wit-deps/LICENSE.md")),
    file("normalizer.js", include_str!("../../templates/js/normalizer.js")),
    file("prelude.js", include_str!("../../templates/js/prelude.js")),
    file("main.js", include_str!("../../templates/js/main.js")),
    file("package.json", include_str!("../../templates/js/package.json")),
    File { path: "build.sh", template: include_str!("../../templates/js/build.sh"), executable: true },
    file(".gitignore", include_str!("../../templates/js/gitignore")),
];

/// What differs between the languages in the shared files.
struct Flavour {
    language: &'static str,
    source: &'static str,
    build: &'static str,
    memory_mib: u32,
    deadline_ms: u32,
    files: &'static [File],
}

fn flavour(lang: Language) -> Flavour {
    match lang {
        Language::Rust => Flavour {
            language: "Rust",
            source: "`src/lib.rs`",
            build: include_str!("../../templates/rust/BUILD.md"),
            memory_mib: 64,
            deadline_ms: 50,
            files: RUST,
        },
        Language::Python => Flavour {
            language: "Python",
            source: "`app.py`",
            build: include_str!("../../templates/python/BUILD.md"),
            memory_mib: 128,
            deadline_ms: 200,
            files: PYTHON,
        },
        Language::Js => Flavour {
            language: "JavaScript",
            source: "`normalizer.js`",
            build: include_str!("../../templates/js/BUILD.md"),
            memory_mib: 64,
            deadline_ms: 100,
            files: JS,
        },
    }
}

/// Why a module name is refused, if it is.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid module name: use 1 to 63 lowercase letters, digits and hyphens, \
             starting with a letter and not ending with a hyphen (for example \"dispatch-events\")"
        ))
    }
}

/// Creates the project and says what to do next.
pub fn run(args: &NewArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    check_name(&args.name).map_err(anyhow::Error::msg)?;
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(&args.name));
    anyhow::ensure!(
        !dir.exists(),
        "{} already exists; give a new folder with --dir, or remove it first",
        dir.display()
    );
    let flavour = flavour(args.lang);
    let crate_name = args.name.replace('-', "_");
    let memory = flavour.memory_mib.to_string();
    let deadline = flavour.deadline_ms.to_string();
    // Snippets first: they hold placeholders of their own.
    let vars: [(&str, &str); 9] = [
        ("{{build}}", flavour.build.trim_end()),
        ("{{name}}", &args.name),
        ("{{crate}}", &crate_name),
        ("{{language}}", flavour.language),
        ("{{source}}", flavour.source),
        ("{{contract}}", CONTRACT_VERSION),
        ("{{memory_mib}}", &memory),
        ("{{deadline_ms}}", &deadline),
        ("{{host_version}}", env!("CARGO_PKG_VERSION")),
    ];
    let fill = |template: &str| vars.iter().fold(template.to_owned(), |text, (k, v)| text.replace(k, v));
    for f in COMMON.iter().chain(flavour.files) {
        let path = dir.join(fill(f.path));
        write(&path, &fill(f.template), f.executable)?;
    }
    writeln!(
        out,
        "created {} ({}, contract {CONTRACT_VERSION})\nnext:\n  cd {}\n  ./build.sh\n  notification-host normalize --manifest {}.toml",
        dir.display(),
        flavour.language,
        dir.display(),
        args.name
    )?;
    Ok(())
}

fn write(path: &Path, text: &str, executable: bool) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    if executable {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot make {} executable", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn module_names() {
        for good in ["a", "dispatch-events", "p2p", "x-1"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Dispatch", "1abc", "a_b", "a-", "a.b", "a b", &"a".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
