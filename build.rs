//! Embeds the git commit socklab was built from (`SOCKLAB_COMMIT`), for the
//! lab report's `meta`; "unknown" when git or the repository is not there.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    // No optional locks: `git status` would otherwise refresh and rewrite
    // .git/index, and a build should leave the repository as it found it.
    let out = Command::new("git")
        .arg("--no-optional-locks")
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}

/// Asks cargo to rerun this script when the git file `path` changes, if it
/// exists: cargo takes a missing file as changed, and would rebuild and
/// relink every time.
fn watch_git_file(path: &str) {
    if let Some(p) = git(&["rev-parse", "--git-path", path]) {
        if std::path::Path::new(&p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some();
    let suffix = if dirty && commit != "unknown" {
        "+changes"
    } else {
        ""
    };
    println!("cargo:rustc-env=SOCKLAB_COMMIT={commit}{suffix}");
    // Rebuilt when the commit changes, and only then: HEAD (a checkout), the
    // branch's ref, loose or packed (a commit, a reset), and HEAD's reflog,
    // which git appends to on every move of HEAD, even when the branch's
    // ref is only in packed-refs and a commit makes it loose. Not the index:
    // git rewrites it on its own (`git status` refreshing stat data), and a
    // fresh clone's second build would relink for nothing.
    watch_git_file("HEAD");
    watch_git_file("logs/HEAD");
    watch_git_file("packed-refs");
    if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch_git_file(&head_ref);
    }
    // And when the sources change, so that "+changes" stays true.
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=build.rs");
}
