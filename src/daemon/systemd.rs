//! systemd integration: `READY=1` once the database is migrated and the first poll has
//! finished, and `WATCHDOG=1` only while the poll tasks and the store thread make
//! progress. Messages go to `$NOTIFY_SOCKET`; without it every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::health::{Health, HealthSnapshot};
use crate::shutdown::Shutdown;
use crate::store::StoreHandle;

/// Maximum wait for the first poll before readiness is reported anyway, so a site whose
/// thermostats are all unreachable still starts, with a warning in its log.
const FIRST_POLL_WAIT: Duration = Duration::from_secs(60);

/// A connection to systemd's notification socket.
pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
}

impl Notifier {
    /// Connects to `$NOTIFY_SOCKET`, a path or an abstract name starting with `@`.
    pub fn from_env() -> Self {
        let socket = std::env::var("NOTIFY_SOCKET").ok().and_then(|name| {
            let address = socket_address(&name)?;
            let socket = UnixDatagram::unbound().ok()?;
            Some((socket, address))
        });
        Self { socket }
    }

    pub fn is_active(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends one notification such as `READY=1`.
    pub fn notify(&self, state: &str) {
        if let Some((socket, address)) = &self.socket
            && let Err(error) = socket.send_to_addr(state.as_bytes(), address)
        {
            log::warn!("cannot notify systemd ({state}): {error}");
        }
    }
}

fn socket_address(name: &str) -> Option<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;

    match name.strip_prefix('@') {
        Some(abstract_name) => {
            std::os::unix::net::SocketAddr::from_abstract_name(abstract_name).ok()
        }
        None => std::os::unix::net::SocketAddr::from_pathname(name).ok(),
    }
}

/// Returns the watchdog interval systemd asked for (`WatchdogSec=`), if it is meant for
/// this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// The maximum heartbeat ages at which the watchdog still gets petted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProgressLimits {
    pub poll: Duration,
    pub store: Duration,
}

/// Returns why the daemon is stuck, or `None` while the poll tasks and the store thread
/// make progress. A database outage is progress as long as the store thread keeps
/// buffering and reconnecting.
pub fn stall_reason(
    snapshot: &HealthSnapshot,
    now: i64,
    limits: &ProgressLimits,
) -> Option<String> {
    let stale =
        |heartbeat: i64, limit: Duration| heartbeat > 0 && now - heartbeat > limit.as_secs() as i64;
    if stale(snapshot.store_heartbeat, limits.store) {
        return Some(format!(
            "the store thread has not run for {} s",
            now - snapshot.store_heartbeat
        ));
    }
    if snapshot.thermostats_known > 0 && stale(snapshot.poll_heartbeat, limits.poll) {
        return Some(format!(
            "no poll has finished for {} s",
            now - snapshot.poll_heartbeat
        ));
    }
    None
}

/// Reports readiness once the schema is in place and the first poll has finished (or
/// `FIRST_POLL_WAIT` has passed).
pub async fn report_ready(
    notifier: Arc<Notifier>,
    store: StoreHandle,
    health: Arc<Health>,
    shutdown: Shutdown,
) {
    loop {
        match shutdown
            .or_stop(store.wait_until_migrated(Duration::from_secs(5)))
            .await
        {
            None => return,
            Some(Ok(())) => break,
            Some(Err(error)) => log::debug!("not ready yet: {error}"),
        }
    }

    let deadline = std::time::Instant::now() + FIRST_POLL_WAIT;
    while health.snapshot().poll_heartbeat == 0 && std::time::Instant::now() < deadline {
        if !shutdown.sleep(Duration::from_millis(200)).await {
            return;
        }
    }
    if health.snapshot().poll_heartbeat == 0 {
        log::warn!(
            "no poll finished within {} s of start; reporting ready anyway",
            FIRST_POLL_WAIT.as_secs()
        );
    }
    notifier.notify("READY=1\nSTATUS=polling");
    log::info!("ready: database migrated and polling started");
}

/// Pets the watchdog every half `interval` while `stall_reason` finds nothing.
pub async fn pet_watchdog(
    notifier: Arc<Notifier>,
    interval: Duration,
    limits: ProgressLimits,
    health: Arc<Health>,
    clock: Arc<dyn Clock>,
    shutdown: Shutdown,
) {
    let mut stalled = false;
    while shutdown.sleep(interval / 2).await {
        match stall_reason(&health.snapshot(), clock.now().as_second(), &limits) {
            None => {
                if stalled {
                    log::info!("progress resumed; petting the systemd watchdog again");
                }
                stalled = false;
                notifier.notify("WATCHDOG=1");
            }
            Some(reason) => {
                if !stalled {
                    log::error!("not petting the systemd watchdog: {reason}");
                }
                stalled = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn limits() -> ProgressLimits {
        ProgressLimits {
            poll: Duration::from_secs(60),
            store: Duration::from_secs(30),
        }
    }

    fn progressing() -> HealthSnapshot {
        HealthSnapshot {
            database_connected: true,
            last_database_write: NOW - 1,
            last_poll_success: NOW - 1,
            poll_heartbeat: NOW - 1,
            store_heartbeat: NOW - 1,
            started_at: NOW - 600,
            thermostats_known: 3,
            readings_dropped: 0,
            readings_buffered: 0,
            database_writes: 0,
            database_write_micros: 0,
        }
    }

    #[test]
    fn progress_is_not_a_stall() {
        assert_eq!(stall_reason(&progressing(), NOW, &limits()), None);
    }

    #[test]
    fn stuck_store_thread_is_a_stall() {
        let snapshot = HealthSnapshot {
            store_heartbeat: NOW - 31,
            ..progressing()
        };
        let reason = stall_reason(&snapshot, NOW, &limits()).expect("a stall");
        assert!(reason.contains("store thread"), "{reason}");
    }

    #[test]
    fn database_outage_is_not_a_stall() {
        let snapshot = HealthSnapshot {
            database_connected: false,
            last_database_write: NOW - 300,
            readings_buffered: 500,
            ..progressing()
        };
        assert_eq!(stall_reason(&snapshot, NOW, &limits()), None);
    }

    #[test]
    fn stopped_polling_is_a_stall() {
        let snapshot = HealthSnapshot {
            poll_heartbeat: NOW - 61,
            ..progressing()
        };
        assert!(stall_reason(&snapshot, NOW, &limits()).is_some());
    }

    #[test]
    fn no_thermostats_is_not_a_stall() {
        let snapshot = HealthSnapshot {
            poll_heartbeat: NOW - 600,
            thermostats_known: 0,
            ..progressing()
        };
        assert_eq!(stall_reason(&snapshot, NOW, &limits()), None);
    }

    #[test]
    fn notifier_sends_to_socket() {
        let folder = std::env::temp_dir().join(format!("notify-test-{}", std::process::id()));
        std::fs::create_dir_all(&folder).expect("temp folder");
        let path = folder.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).expect("bind notify socket");
        let address = std::os::unix::net::SocketAddr::from_pathname(&path).expect("socket address");
        let notifier = Notifier {
            socket: Some((UnixDatagram::unbound().expect("socket"), address)),
        };

        notifier.notify("READY=1");
        let mut buffer = [0u8; 64];
        let length = listener.recv(&mut buffer).expect("receive notification");
        assert_eq!(&buffer[..length], b"READY=1");
        let _ = std::fs::remove_dir_all(&folder);
    }
}
