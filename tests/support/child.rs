//! The daemon as a child process of the test, started from the built binary with a
//! config file, so that tests can send it real signals (SIGKILL, SIGTERM) and give it
//! its own environment (`NOTIFY_SOCKET`, `WATCHDOG_USEC`).

use std::fmt::Write as _;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The site token the child reads from `THERMOSTAT_SITE_TOKEN`.
pub const SITE_TOKEN: &str = "site-token-for-fault-tests-0123456789";

/// What goes into the child's config file. Every address is on loopback.
pub struct ChildConfig {
    pub site_id: String,
    pub database_url: String,
    pub thermostats: Vec<SocketAddr>,
    pub api_port: u16,
    /// The fake public server's base URL and CA file, when the sync runs.
    pub public_server: Option<(String, PathBuf)>,
}

impl ChildConfig {
    /// Renders the TOML file: 1 s polls, 200 ms flushes, the shortest sync intervals the
    /// config accepts, discovery only from the database, debug logging.
    pub fn to_toml(&self) -> String {
        let addresses: Vec<String> = self
            .thermostats
            .iter()
            .map(|address| format!("\"{address}\""))
            .collect();
        let mut text = format!(
            "[site]\nsite_id = \"{site}\"\ntime_zone = \"UTC\"\n\
             [database]\nurl = \"{url}\"\nflush_interval_ms = 200\nconnect_timeout_seconds = 3\n\
             [polling]\ninterval_seconds = 1\nrequest_timeout_seconds = 2\n\
             min_request_gap_ms = 50\nmax_backoff_seconds = 2\n\
             [thermostats]\naddresses = [{addresses}]\n\
             [discovery]\nmethods = [\"database\"]\nsync_clock = false\n\
             udp_group = \"127.0.0.1:9\"\nudp_bind = \"127.0.0.1:0\"\n\
             [api]\nlisten = \"127.0.0.1:{port}\"\n\
             [log]\nlevel = \"debug\"\n",
            site = self.site_id,
            url = self.database_url,
            addresses = addresses.join(", "),
            port = self.api_port,
        );
        if let Some((base_url, ca_file)) = &self.public_server {
            let _ = write!(
                text,
                "[public_server]\nbase_url = \"{base_url}\"\nca_cert = \"{}\"\n\
                 request_timeout_seconds = 5\nstate_change_max_wait_seconds = 1\n\
                 snapshot_interval_seconds = 5\nminute_interval_seconds = 10\n\
                 command_poll_seconds = 1\nresults_interval_seconds = 1\n\
                 max_backoff_seconds = 2\nauth_retry_seconds = 10\n",
                ca_file.display()
            );
        }
        text
    }

    /// Writes the config to `folder/site.toml` and returns its path.
    pub fn write(&self, folder: &Path) -> PathBuf {
        std::fs::create_dir_all(folder).expect("create the test folder");
        let path = folder.join("site.toml");
        std::fs::write(&path, self.to_toml()).expect("write the config file");
        path
    }
}

/// Returns a loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("find a free loopback port")
}

/// A running `thermostat-server run` child with its stderr in a file.
pub struct ChildDaemon {
    child: Child,
    pub log_path: PathBuf,
    pub started: Instant,
}

impl ChildDaemon {
    /// Starts the daemon on `config`, its log going to `log_path`, with `env` added to
    /// the environment.
    pub fn start(config: &Path, log_path: &Path, env: &[(&str, &str)]) -> Self {
        let log = File::create(log_path).expect("create the daemon log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_thermostat-server"));
        command
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("THERMOSTAT_SITE_TOKEN", SITE_TOKEN)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("start thermostat-server run");
        Self {
            child,
            log_path: log_path.to_path_buf(),
            started: Instant::now(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGKILL and reaps the process. Panics if it had already exited, because a
    /// daemon that died by itself is a failure the test must see.
    pub fn kill(mut self) -> Duration {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "the daemon exited by itself with {status}; log:\n{}",
                self.log_tail(30)
            );
        }
        let lived = self.started.elapsed();
        self.child.kill().expect("send SIGKILL");
        self.child.wait().expect("reap the killed daemon");
        lived
    }

    /// Sends SIGTERM and waits up to `limit` for a clean exit.
    pub fn terminate(mut self, limit: Duration) -> ExitStatus {
        send_signal("TERM", self.child.id());
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("check the daemon") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "the daemon did not stop within {limit:?} of SIGTERM; log:\n{}",
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the log contains `text`, such as a line written after the signal
    /// handlers are in place, because a SIGTERM before that ends the process at once.
    pub fn wait_for_log(&self, text: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "no {text:?} in the daemon log within {limit:?}; log:\n{}",
                self.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for ChildDaemon {
    fn drop(&mut self) {
        // A test that panics must not leave a daemon running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `SIGname` to `pid` with kill(1), since the crate forbids unsafe code.
pub fn send_signal(name: &str, pid: u32) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed: {status}");
}
