//! Hostile components made at test time: a compile bomb (a small component
//! that needs gigabytes and minutes of the compiler) and the many-memories
//! component without its ballast.

use std::path::Path;

/// `tests/fixtures/many-memories.wat`: a valid normalizer component whose six
/// extra core instances own 40 MiB of memory each (240 MiB in all).
pub fn many_memories_wat() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/many-memories.wat");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// [`many_memories_wat`] without its six ballast instances: a valid,
/// small normalizer component (describe answers `many-memories@0.1.0`) to
/// which a compile bomb can be appended.
pub fn bomb_base_wat() -> String {
    let wat = many_memories_wat();
    let kept: Vec<&str> = wat
        .lines()
        .filter(|l| !(l.trim_start().starts_with("(core instance $b") && l.contains("(instantiate $ballast)")))
        .collect();
    assert_eq!(wat.lines().count() - kept.len(), 6, "many-memories.wat no longer has its six ballast instances");
    kept.join("\n")
}

/// Appends to `base` (a component's WAT, ending in `)`) a core module of
/// `copies` functions, each nesting `blocks` blocks entered by one
/// `br_table`, and an instance of it. Cranelift's time and memory grow
/// with `blocks` far faster than the component's size: blocks=1200 gives a
/// 21 KB component that needs about 1.15 GiB and 95 s to compile, blocks=1000
/// about 850 MiB and 54 s (release build, this project's 2-core machine).
pub fn compile_bomb_wat(base: &str, blocks: usize, copies: usize) -> String {
    use std::fmt::Write;
    let base = base.trim_end();
    let base = base.strip_suffix(')').expect("base must be a component ending in ')'");
    let mut f = String::from("(func (param i32) (result i32) (local");
    f.push_str(&" i32".repeat(blocks));
    f.push_str(")\n");
    f.push_str(&"block ".repeat(blocks));
    f.push_str("\nlocal.get 0 br_table");
    for depth in 0..blocks {
        write!(f, " {depth}").unwrap();
    }
    f.push('\n');
    for k in 1..=blocks {
        writeln!(f, "end i32.const {k} local.set {k}").unwrap();
    }
    f.push_str("i32.const 0");
    for k in 1..=blocks {
        write!(f, " local.get {k} i32.add").unwrap();
    }
    f.push_str(")\n");
    let mut out = String::with_capacity(base.len() + f.len() * copies + 200);
    out.push_str(base);
    out.push_str("\n  (core module $compile-bomb\n");
    for _ in 0..copies {
        out.push_str(&f);
    }
    out.push_str("  )\n  (core instance $compile-bomb-instance (instantiate $compile-bomb))\n)\n");
    out
}
