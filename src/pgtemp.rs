//! A throwaway PostgreSQL cluster in a temporary folder, for tests and the `demo` command.
//!
//! It runs `initdb` and `pg_ctl` from the local PostgreSQL installation, listens only on
//! 127.0.0.1 and on a Unix socket inside its own folder, and deletes the folder when it
//! stops. It never touches a cluster it did not create. Every method blocks on a child
//! process, so call it from a plain thread, never from async code.
//!
//! `initdb` rejects root, so when the effective uid is 0 the folder is handed to the
//! `postgres` system user and every PostgreSQL binary runs through `runuser -u postgres --`
//! (or `su postgres` where `runuser` is missing).

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

/// The superuser that `initdb` creates; the URLs from [`TempPostgres::url`] log in as it.
pub const SUPERUSER: &str = "postgres";

/// How many fresh ports to try when another process takes the chosen port first.
const PORT_ATTEMPTS: u32 = 5;

/// Maximum time `pg_ctl` waits for the server to accept connections.
const START_WAIT_SECONDS: u32 = 30;

const INSTALL_HINT: &str = "install the PostgreSQL server binaries, for example \
                            `apt-get install postgresql`, or put initdb, pg_ctl and postgres on PATH";

/// Counter that keeps folder names unique between clusters of one process.
static CLUSTER_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Settings for a throwaway cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TempPostgresOptions {
    /// Keep PostgreSQL's crash-safe defaults. With `false` the cluster runs with
    /// `fsync=off`, `synchronous_commit=off` and `full_page_writes=off`, which is faster
    /// and loses data in a power cut: only for tests.
    pub durable: bool,
}

impl Default for TempPostgresOptions {
    fn default() -> Self {
        Self { durable: true }
    }
}

/// Error from starting, stopping or using a throwaway cluster.
#[derive(Debug)]
pub enum PgTempError {
    /// The PostgreSQL server binaries are not installed.
    BinariesNotFound(String),
    /// A step failed; the message names the step and carries the tool's output.
    Step { step: String, detail: String },
}

impl fmt::Display for PgTempError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BinariesNotFound(missing) => {
                write!(
                    f,
                    "PostgreSQL binaries not found ({missing}): {INSTALL_HINT}"
                )
            }
            Self::Step { step, detail } => {
                write!(f, "throwaway PostgreSQL: {step} failed: {detail}")
            }
        }
    }
}

impl std::error::Error for PgTempError {}

fn step_error(step: impl Into<String>, detail: impl fmt::Display) -> PgTempError {
    PgTempError::Step {
        step: step.into(),
        detail: detail.to_string(),
    }
}

/// A running throwaway cluster. Dropping it stops the server and deletes its folder.
#[derive(Debug)]
pub struct TempPostgres {
    binaries: Binaries,
    runner: Runner,
    root: PathBuf,
    port: u16,
    options: TempPostgresOptions,
    watcher: Option<Child>,
    stopped: bool,
}

impl TempPostgres {
    /// Creates and starts a durable cluster (the settings the `demo` command uses).
    pub fn start() -> Result<Self, PgTempError> {
        Self::start_with(TempPostgresOptions::default())
    }

    /// Creates a cluster in a new temporary folder and starts it on a free loopback port.
    pub fn start_with(options: TempPostgresOptions) -> Result<Self, PgTempError> {
        let binaries = Binaries::find()?;
        let runner = Runner::for_current_user()?;
        let root = create_root(&runner)?;

        let mut cluster = Self {
            binaries,
            runner,
            root,
            port: 0,
            options,
            watcher: None,
            stopped: false,
        };
        // From here on, Drop removes the folder if a later step fails.
        cluster.watcher = cluster.spawn_orphan_watcher().ok();
        cluster.init_data_directory()?;
        cluster.start_on_free_port()?;
        Ok(cluster)
    }

    /// Returns the TCP port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Returns the folder that contains the data directory, the socket and the server log.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Returns a connection URL for database `db_name` as the superuser, over TCP.
    pub fn url(&self, db_name: &str) -> String {
        format!("postgresql://{SUPERUSER}@127.0.0.1:{}/{db_name}", self.port)
    }

    /// Creates database `name` and returns its URL. The name must be 1 to 63 lower-case
    /// letters, digits or `_`, starting with a letter or `_`.
    pub fn create_database(&self, name: &str) -> Result<String, PgTempError> {
        validate_database_name(name)?;

        let mut command = Command::new(&self.binaries.createdb);
        command
            .arg("-h")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-U")
            .arg(SUPERUSER)
            .arg(name);
        run_checked(&format!("createdb {name}"), command)?;
        Ok(self.url(name))
    }

    /// Stops the server and keeps the data, as in a PostgreSQL outage.
    pub fn stop_server(&self) -> Result<(), PgTempError> {
        let args = vec![
            OsString::from("stop"),
            "-D".into(),
            self.data_dir().into(),
            "-m".into(),
            "fast".into(),
            "-w".into(),
        ];
        let command = self.runner.command(&self.binaries.pg_ctl, &args);
        run_checked("pg_ctl stop", command).map(|_| ())
    }

    /// Starts the server again on the same port, with the same data.
    pub fn start_server(&self) -> Result<(), PgTempError> {
        self.pg_ctl_start(self.port)
    }

    /// Stops and starts the server, keeping the port and the data.
    pub fn restart_server(&self) -> Result<(), PgTempError> {
        self.stop_server()?;
        self.start_server()
    }

    /// Stops the server and deletes the folder, reporting what failed (Drop ignores it).
    pub fn stop(mut self) -> Result<(), PgTempError> {
        self.shut_down()
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.root.join("socket")
    }

    fn log_file(&self) -> PathBuf {
        self.root.join("server.log")
    }

    fn init_data_directory(&self) -> Result<(), PgTempError> {
        let args = vec![
            OsString::from("-D"),
            self.data_dir().into(),
            "-A".into(),
            "trust".into(),
            "-E".into(),
            "UTF8".into(),
            "--locale=C".into(),
            "-U".into(),
            SUPERUSER.into(),
            "--no-sync".into(),
        ];
        let command = self.runner.command(&self.binaries.initdb, &args);
        run_checked("initdb", command).map(|_| ())
    }

    fn start_on_free_port(&mut self) -> Result<(), PgTempError> {
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = pick_free_port()?;
            match self.pg_ctl_start(port) {
                Ok(()) => {
                    self.port = port;
                    return Ok(());
                }
                Err(error) if self.log_shows_port_in_use() => last_error = Some(error),
                Err(error) => return Err(error),
            }
        }
        Err(last_error.unwrap_or_else(|| step_error("pg_ctl start", "no free port found")))
    }

    fn pg_ctl_start(&self, port: u16) -> Result<(), PgTempError> {
        let server_options = self.server_options(port);
        let args = vec![
            OsString::from("start"),
            "-D".into(),
            self.data_dir().into(),
            "-l".into(),
            self.log_file().into(),
            "-w".into(),
            "-t".into(),
            START_WAIT_SECONDS.to_string().into(),
            "-o".into(),
            server_options.into(),
        ];
        let command = self.runner.command(&self.binaries.pg_ctl, &args);
        run_checked(&format!("pg_ctl start on port {port}"), command).map_err(|error| {
            let log_tail = self.log_tail();
            step_error(
                format!("pg_ctl start on port {port}"),
                format!("{error}; server log: {log_tail}"),
            )
        })?;
        Ok(())
    }

    /// Builds the `postgres` command-line options. The temporary paths contain no spaces
    /// or quotes (see [`create_root`]), so they pass through pg_ctl's shell unquoted.
    fn server_options(&self, port: u16) -> String {
        let mut options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {}",
            self.socket_dir().display()
        );
        if !self.options.durable {
            options.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        options
    }

    fn log_shows_port_in_use(&self) -> bool {
        fs::read_to_string(self.log_file())
            .map(|log| log.contains("Address already in use") || log.contains("could not bind"))
            .unwrap_or(false)
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.log_file()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(5);
        lines[start..].join(" | ")
    }

    /// Starts a detached shell that waits for this process to exit, then stops the
    /// cluster and deletes the folder. Test binaries never drop statics, so without it a
    /// `OnceLock<TempPostgres>` would leave a server running after every `cargo test`.
    fn spawn_orphan_watcher(&self) -> io::Result<Child> {
        let pg_ctl_stop = self.runner.shell_words(
            &self.binaries.pg_ctl,
            &[
                "stop".to_string(),
                "-D".to_string(),
                self.data_dir().display().to_string(),
                "-m".to_string(),
                "immediate".to_string(),
            ],
        );
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {pg_ctl_stop} >/dev/null 2>&1; rm -rf '{root}'",
            pid = std::process::id(),
            root = self.root.display(),
        );

        Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so a Ctrl-C to the test run does not kill it first.
            .process_group(0)
            .spawn()
    }

    fn shut_down(&mut self) -> Result<(), PgTempError> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;

        // The server may already be down because a test stopped it, so a failed stop
        // is logged at debug and only a failed removal is returned.
        let stop_result = if self.port != 0 {
            self.stop_server()
        } else {
            Ok(())
        };
        let remove_result = fs::remove_dir_all(&self.root)
            .map_err(|error| step_error(format!("removing {}", self.root.display()), error));

        if let Some(mut watcher) = self.watcher.take() {
            let _ = watcher.kill();
            let _ = watcher.wait();
        }
        if let Err(error) = stop_result {
            log::debug!("{error}");
        }
        remove_result
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        if let Err(error) = self.shut_down() {
            log::warn!("{error}");
        }
    }
}

/// Paths of the PostgreSQL programs, all from one installation.
#[derive(Debug, Clone)]
struct Binaries {
    initdb: PathBuf,
    pg_ctl: PathBuf,
    createdb: PathBuf,
}

impl Binaries {
    /// Looks on PATH first, then in `/usr/lib/postgresql/<version>/bin`, newest first.
    fn find() -> Result<Self, PgTempError> {
        let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).collect())
            .unwrap_or_default();
        candidates.extend(versioned_bin_dirs(Path::new("/usr/lib/postgresql")));

        let complete = candidates.into_iter().find(|dir| {
            ["initdb", "pg_ctl", "postgres", "createdb"]
                .iter()
                .all(|name| dir.join(name).is_file())
        });
        match complete {
            Some(dir) => Ok(Self {
                initdb: dir.join("initdb"),
                pg_ctl: dir.join("pg_ctl"),
                createdb: dir.join("createdb"),
            }),
            None => Err(PgTempError::BinariesNotFound(
                "no folder on PATH or in /usr/lib/postgresql/*/bin has initdb, pg_ctl, postgres and createdb"
                    .to_string(),
            )),
        }
    }
}

/// Lists `<base>/<version>/bin` folders, the highest numeric version first.
fn versioned_bin_dirs(base: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(base) else {
        return Vec::new();
    };
    let mut versions: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let major: u32 = name.split('.').next()?.parse().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

/// Launcher for PostgreSQL programs: direct, or as the `postgres` user when we are root.
#[derive(Debug, Clone)]
enum Runner {
    CurrentUser,
    Runuser { uid: u32, gid: u32 },
    Su { uid: u32, gid: u32 },
}

impl Runner {
    fn for_current_user() -> Result<Self, PgTempError> {
        if effective_uid()? != 0 {
            return Ok(Self::CurrentUser);
        }

        let (uid, gid) = lookup_user(SUPERUSER)?;
        if Path::new("/usr/sbin/runuser").exists() || Path::new("/sbin/runuser").exists() {
            Ok(Self::Runuser { uid, gid })
        } else {
            Ok(Self::Su { uid, gid })
        }
    }

    fn owner(&self) -> Option<(u32, u32)> {
        match self {
            Self::CurrentUser => None,
            Self::Runuser { uid, gid } | Self::Su { uid, gid } => Some((*uid, *gid)),
        }
    }

    fn command(&self, program: &Path, args: &[OsString]) -> Command {
        match self {
            Self::CurrentUser => {
                let mut command = Command::new(program);
                command.args(args);
                command
            }
            Self::Runuser { .. } => {
                let mut command = Command::new("runuser");
                command
                    .args(["-u", SUPERUSER, "--"])
                    .arg(program)
                    .args(args);
                command
            }
            Self::Su { .. } => {
                let words: Vec<String> = args
                    .iter()
                    .map(|arg| arg.to_string_lossy().into_owned())
                    .collect();
                let mut command = Command::new("su");
                command
                    .args([SUPERUSER, "-s", "/bin/sh", "-c"])
                    .arg(Self::CurrentUser.shell_words(program, &words));
                command
            }
        }
    }

    /// Returns a shell command line that runs `program` the way [`Runner::command`] would.
    fn shell_words(&self, program: &Path, args: &[String]) -> String {
        let mut line = shell_quote(&program.display().to_string());
        for arg in args {
            line.push(' ');
            line.push_str(&shell_quote(arg));
        }
        match self {
            Self::CurrentUser => line,
            Self::Runuser { .. } => format!("runuser -u {SUPERUSER} -- {line}"),
            Self::Su { .. } => format!("su {SUPERUSER} -s /bin/sh -c {}", shell_quote(&line)),
        }
    }
}

fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Reads the effective uid from `/proc/self/status` (Linux), so no libc binding is needed.
fn effective_uid() -> Result<u32, PgTempError> {
    let status = fs::read_to_string("/proc/self/status")
        .map_err(|error| step_error("reading /proc/self/status", error))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .ok_or_else(|| {
            step_error(
                "reading the effective uid",
                "no Uid line in /proc/self/status",
            )
        })
}

fn lookup_user(name: &str) -> Result<(u32, u32), PgTempError> {
    let passwd = fs::read_to_string("/etc/passwd")
        .map_err(|error| step_error("reading /etc/passwd", error))?;
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() >= 4 && fields[0] == name {
            let uid = fields[2].parse().ok();
            let gid = fields[3].parse().ok();
            if let (Some(uid), Some(gid)) = (uid, gid) {
                return Ok((uid, gid));
            }
        }
    }
    Err(step_error(
        format!("finding the system user {name:?}"),
        format!(
            "initdb does not run as root and no {name:?} user exists; \
             run as another user or install PostgreSQL, which creates it"
        ),
    ))
}

/// Creates `<tmp>/thermostat-pg-<pid>-<n>` with mode 0700, owned by the user the server
/// runs as. The name has no spaces or quotes, which [`TempPostgres::server_options`]
/// relies on.
fn create_root(runner: &Runner) -> Result<PathBuf, PgTempError> {
    let number = CLUSTER_COUNTER.fetch_add(1, Ordering::Relaxed);
    let root = std::env::temp_dir().join(format!("thermostat-pg-{}-{number}", std::process::id()));
    if root.exists() {
        // A leftover from an earlier process that had the same pid.
        fs::remove_dir_all(&root)
            .map_err(|error| step_error(format!("removing stale {}", root.display()), error))?;
    }

    for dir in [root.clone(), root.join("socket")] {
        fs::create_dir(&dir)
            .map_err(|error| step_error(format!("creating {}", dir.display()), error))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(|error| {
            step_error(format!("setting mode 0700 on {}", dir.display()), error)
        })?;
        if let Some((uid, gid)) = runner.owner() {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(|error| {
                step_error(format!("chown {} to {SUPERUSER}", dir.display()), error)
            })?;
        }
    }
    Ok(root)
}

/// Binds port 0 on 127.0.0.1 to let the kernel choose a free port, then releases it.
/// Another process can take it before the server binds it, so callers retry.
fn pick_free_port() -> Result<u16, PgTempError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|error| step_error("binding 127.0.0.1:0 to find a free port", error))?;
    listener
        .local_addr()
        .map(|address| address.port())
        .map_err(|error| step_error("reading the free port", error))
}

fn validate_database_name(name: &str) -> Result<(), PgTempError> {
    let valid_start = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid_start && valid_chars && name.len() <= 63 {
        Ok(())
    } else {
        Err(step_error(
            format!("creating database {name:?}"),
            "invalid name: expected 1 to 63 lower-case letters, digits or '_', not starting with a digit",
        ))
    }
}

fn run_checked(step: &str, mut command: Command) -> Result<Output, PgTempError> {
    let started = Instant::now();
    let output = command.stdin(Stdio::null()).output().map_err(|error| {
        step_error(
            step,
            format!("could not run {:?}: {error}", command.get_program()),
        )
    })?;
    log::debug!("{step} took {} ms", started.elapsed().as_millis());

    if output.status.success() {
        Ok(output)
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        Err(step_error(
            step,
            format!("{}: {} {}", output.status, stderr.trim(), stdout.trim()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_rejects_quotes_and_capitals() {
        assert!(validate_database_name("t_store_1").is_ok());
        assert!(validate_database_name("Store").is_err());
        assert!(validate_database_name("a\"; drop").is_err());
        assert!(validate_database_name("1abc").is_err());
        assert!(validate_database_name("").is_err());
    }

    #[test]
    fn shell_quote_escapes_single_quotes() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn versioned_dirs_sort_newest_first() {
        let base = std::env::temp_dir().join(format!("pgtemp-versions-{}", std::process::id()));
        for version in ["9.6", "15", "13"] {
            fs::create_dir_all(base.join(version).join("bin")).expect("create version dir");
        }
        let dirs = versioned_bin_dirs(&base);
        fs::remove_dir_all(&base).expect("remove version dirs");

        let names: Vec<String> = dirs
            .iter()
            .filter_map(|dir| dir.parent()?.file_name()?.to_str().map(str::to_string))
            .collect();
        assert_eq!(names, ["15", "13", "9.6"]);
    }
}
