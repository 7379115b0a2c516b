//! The web app for `contoso dev`: `--web-dir` when given; otherwise the checkout's
//! `gateway/web/dist`, built first with npm when it is missing or older than its sources, so that
//! `cargo run -- dev` serves the shop with no extra step (docs/decisions.md, ADR 13).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::SystemTime,
};

/// `gateway/web` of the checkout this binary was built from.
const WEB_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../gateway/web");
/// What the build reads besides `src/`: a change to any of them makes `dist/` stale.
const BUILD_INPUTS: [&str; 6] = [
    "src",
    "public",
    "index.html",
    "package.json",
    "package-lock.json",
    "vite.config.ts",
];

/// The directory the gateway should serve, or `None` (the gateway then serves a short note).
pub(crate) fn dev_web_dir(explicit: Option<PathBuf>) -> Option<PathBuf> {
    if explicit.is_some() {
        return explicit;
    }
    let source = Path::new(WEB_SOURCE);
    if !source.join("package.json").is_file() {
        return None;
    }
    let dist = source.join("dist");
    let built = modified(&dist.join("index.html"));
    let newest_input = BUILD_INPUTS
        .iter()
        .map(|input| source.join(input))
        .chain([source.join("../../proto")])
        .filter_map(|path| newest(&path))
        .max();
    let stale = match (built, newest_input) {
        (None, _) => true,
        (Some(built), Some(input)) => input > built,
        (Some(_), None) => false,
    };
    if stale && let Err(e) = build(source) {
        eprintln!(
            "contoso dev: the web app could not be built ({e:#}); build it with \
             `cd gateway/web && npm ci && npm run build`, or pass --web-dir"
        );
    }
    dist.join("index.html").is_file().then_some(dist)
}

fn build(source: &Path) -> anyhow::Result<()> {
    let lock = modified(&source.join("package-lock.json"));
    let installed = modified(&source.join("node_modules/.package-lock.json"));
    if installed.is_none() || lock > installed {
        println!("contoso dev: installing the web app's packages (npm ci)");
        npm(
            source,
            &["ci", "--no-fund", "--no-audit", "--loglevel=error"],
        )?;
    }
    println!("contoso dev: building the web app (npm run build)");
    npm(source, &["run", "build"])
}

fn npm(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("npm")
        .args(args)
        .current_dir(dir)
        .status()
        .map_err(|e| anyhow::anyhow!("running npm: {e} (is Node.js 20+ installed?)"))?;
    anyhow::ensure!(status.success(), "npm {} failed: {status}", args.join(" "));
    Ok(())
}

fn modified(path: &Path) -> Option<SystemTime> {
    path.metadata().and_then(|m| m.modified()).ok()
}

/// The newest modification time of `path` or anything below it.
fn newest(path: &Path) -> Option<SystemTime> {
    let own = modified(path);
    let Ok(entries) = path.read_dir() else {
        return own;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| newest(&entry.path()))
        .chain(own)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_time_below_a_directory_is_found() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a/old.txt"), "x").unwrap();
        let before = newest(dir.path()).unwrap();
        std::fs::write(dir.path().join("a/new.txt"), "y").unwrap();
        let file_time = modified(&dir.path().join("a/new.txt")).unwrap();
        assert!(newest(dir.path()).unwrap() >= before);
        assert_eq!(
            newest(dir.path()).unwrap().max(file_time),
            newest(dir.path()).unwrap()
        );
    }

    #[test]
    fn an_explicit_directory_wins() {
        let chosen = PathBuf::from("/srv/web");
        assert_eq!(dev_web_dir(Some(chosen.clone())), Some(chosen));
    }
}
