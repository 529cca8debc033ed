//! The operator's guide works as written: deploy/README.md's first-office steps, run line
//! by line against a fresh setup.

use std::process::Command;

use crate::support::{bote_bin, run, stderr, stdout};

/// The shell lines of the fenced block after `<!-- marker -->` in a document.
fn block_after(doc: &str, marker: &str) -> Vec<String> {
    let start = doc
        .find(&format!("<!-- {marker} -->"))
        .unwrap_or_else(|| panic!("no <!-- {marker} --> in the document"));
    let rest = &doc[start..];
    let open = rest.find("```sh\n").expect("a shell block follows") + "```sh\n".len();
    let close = rest[open..].find("```").expect("the block ends");
    rest[open..open + close]
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_first_office_steps_of_the_operators_guide_work() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/README.md"),
    )
    .unwrap();
    let lines = block_after(&doc, "first-office");
    assert!(lines.len() >= 3, "{lines:?}");
    let dir = tempfile::tempdir().unwrap();
    let init = run({
        let mut c = crate::support::bote(&[
            "init",
            "--dir",
            dir.path().to_str().unwrap(),
            "--domain",
            "lemgo.de",
        ]);
        c.current_dir(dir.path());
        c
    });
    assert!(init.status.success(), "{}", stderr(&init));
    std::fs::write(dir.path().join("pw.txt"), "a long enough password\n").unwrap();
    // `bote` as the guide types it: this build, in the setup directory (./bote.toml).
    let bin_dir = bote_bin().parent().unwrap().to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut printed = String::new();
    for line in &lines {
        let out = Command::new("sh")
            .args(["-c", line])
            .current_dir(dir.path())
            .env("PATH", &path)
            .env_remove("BOTE_DATABASE_URL")
            .output()
            .unwrap();
        assert!(out.status.success(), "`{line}`: {}", stderr(&out));
        printed.push_str(&stdout(&out));
    }
    assert!(
        printed.contains("member: bernd@lemgo.de of bauamt@lemgo.de (active)"),
        "{printed}"
    );
    assert!(printed.contains("recovery-code: "), "{printed}");
    assert!(
        printed.contains("verified: bauamt@lemgo.de qualified-signature"),
        "{printed}"
    );
}
