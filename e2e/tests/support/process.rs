//! Child processes the tests own: the workspace's binaries and the command-line clients, found
//! where the build and the tool installer put them, killed on drop, their logs kept for a failure.

use std::{
    fs::File,
    io::Read as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::http;

/// How long a freshly started service may take to report ready.
pub(crate) const READY_DEADLINE: Duration = Duration::from_secs(60);

/// Lines of a service's log printed when a test fails.
const LOG_TAIL_LINES: usize = 60;

/// A binary of this workspace, next to the test executable's own directory (`target/debug/`).
pub(crate) fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/debug/deps/e2e-<hash> -> target/debug
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in target/<profile>/deps");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// A command-line client on `PATH`; `hint` says how to install it.
pub(crate) fn tool(name: &str, hint: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not on PATH: {hint}"))
}

/// One running binary. Dropping it kills the process; if the test is failing at that moment, the
/// end of the process's log is printed so the failure explains itself.
#[derive(Debug)]
pub(crate) struct Service {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Service {
    /// Starts `program` with exactly `env` (plus `RUST_LOG`), stdout and stderr going to
    /// `{logs}/{name}.log`. The environment is cleared so a developer's `DATABASE_URL` or
    /// `NATS_URL` cannot leak into a test's world.
    pub(crate) fn start(
        name: &str,
        program: &Path,
        args: &[&str],
        env: &[(&str, String)],
        logs: &Path,
    ) -> Self {
        let log = logs.join(format!("{name}.log"));
        let out = File::create(&log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let err = out.try_clone().expect("cloning a log file handle");
        let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
        let child = Command::new(program)
            .args(args)
            .env_clear()
            .env("RUST_LOG", rust_log)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        Self {
            name: name.to_owned(),
            child,
            log,
        }
    }

    /// Polls `GET http://{addr}/readyz` until it answers 200. Panics, with the log, if the process
    /// exits or the deadline passes first.
    pub(crate) fn wait_ready(&mut self, addr: SocketAddr) {
        let until = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("polling a child process") {
                panic!(
                    "{} exited with {status} before it was ready\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            let last = match http::get(addr, "/readyz") {
                Ok(response) if response.status == 200 => return,
                Ok(response) => format!("{} {}", response.status, response.body),
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < until,
                "{} was not ready on {addr} within {READY_DEADLINE:?}; last /readyz: {last}\n{}",
                self.name,
                self.log_tail()
            );
            std::thread::park_timeout(Duration::from_millis(50));
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process at once (SIGKILL): no drain, no goodbye.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything the process has logged so far.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the process's stdout and stderr.
    pub(crate) fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
        format!(
            "----- last lines of {} ({}) -----\n{tail}\n-----",
            self.name,
            self.log.display()
        )
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
    }
}

/// Runs a short-lived command to completion; panics with its output if it fails.
pub(crate) fn run_to_completion(command: &mut Command) -> String {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed with {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("a command's output is UTF-8")
}
