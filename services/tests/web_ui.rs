//! The web UI's JavaScript: the pure modules' unit tests (`services/web/**/*.test.mjs`), run
//! with Node's own test runner, and the type check of every module's JSDoc (`// @ts-check`),
//! so that `cargo test` covers them too.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn web() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
}

/// Runs `program`, or returns None (a skip) where it is missing and CI is not set.
fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&std::ffi::OsStr]) -> Option<Output> {
    let program = program.as_ref();
    match Command::new(program).args(args).output() {
        Ok(output) => Some(output),
        Err(error) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must have {}: {error}",
                program.to_string_lossy()
            );
            eprintln!("skipped: no {} here ({error})", program.to_string_lossy());
            None
        }
    }
}

#[test]
fn the_web_ui_unit_tests_pass_under_node() {
    let web = web();
    let Some(output) = run("node", &["--test".as_ref(), web.as_os_str()]) else {
        return;
    };
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "node --test {} failed:\n{report}\n{}",
        web.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains("# pass"), "no test ran:\n{report}");
    // `node --test DIR` searches DIR's subdirectories too: lib/format.test.mjs has this test.
    assert!(
        report.contains("money is integer minor units"),
        "the tests in lib/ did not run:\n{report}"
    );
}

#[test]
fn the_web_ui_modules_pass_the_type_check() {
    // `npm ci --prefix tests/webcheck` installs the compiler (.ci/run does).
    let tsc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/webcheck/node_modules/.bin/tsc");
    let config = web().join("jsconfig.json");
    let Some(output) = run(&tsc, &["-p".as_ref(), config.as_os_str()]) else {
        return;
    };
    assert!(
        output.status.success(),
        "tsc -p {} found type errors:\n{}{}",
        config.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
