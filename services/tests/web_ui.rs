//! The web UI's pure JavaScript helpers (`services/web/*.test.mjs`), run with Node's own test
//! runner so that `cargo test` covers them too.

use std::process::Command;

#[test]
fn the_web_ui_unit_tests_pass_under_node() {
    let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    let output = match Command::new("node").arg("--test").arg(&web).output() {
        Ok(output) => output,
        Err(error) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must have Node.js: {error}"
            );
            eprintln!("skipped: no Node.js on this machine ({error})");
            return;
        }
    };
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "node --test {} failed:\n{report}\n{}",
        web.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains("# pass"), "no test ran:\n{report}");
}
