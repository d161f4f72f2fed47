//! Real multicast discovery between two network namespaces that this test creates and
//! joins with a veth pair: the simulator joins 239.255.255.250 in one namespace, and
//! `discover` sends WM-DISCOVER by the chosen interface with TTL 1 from the other.
//! Nothing leaves the two namespaces. The test needs root and iproute2's `ip`; when
//! either is missing it prints why and passes.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_thermostat-server");

/// Addresses from TEST-NET-1 (RFC 5737), used only inside the test's namespaces.
const DISCOVER_SIDE: &str = "192.0.2.1";
const DEVICE_SIDE: &str = "192.0.2.2";

/// Two namespaces joined by a veth pair; dropping it deletes both, and the pair with them.
struct Namespaces {
    client: String,
    devices: String,
}

impl Namespaces {
    /// Creates the pair; `tag` (one letter) keeps the names of parallel tests apart.
    fn create(tag: char) -> Result<Self, String> {
        let id = std::process::id();
        let namespaces = Namespaces {
            client: format!("tsd-c{tag}-{id}"),
            devices: format!("tsd-d{tag}-{id}"),
        };
        let client_link = format!("tc{tag}{id}");
        let device_link = format!("td{tag}{id}");

        ip(&["netns", "add", &namespaces.client])?;
        ip(&["netns", "add", &namespaces.devices])?;
        ip(&[
            "link",
            "add",
            &client_link,
            "netns",
            &namespaces.client,
            "type",
            "veth",
            "peer",
            "name",
            &device_link,
            "netns",
            &namespaces.devices,
        ])?;
        for (namespace, link, address) in [
            (&namespaces.client, &client_link, DISCOVER_SIDE),
            (&namespaces.devices, &device_link, DEVICE_SIDE),
        ] {
            ip(&[
                "-n",
                namespace,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                link,
            ])?;
            ip(&["-n", namespace, "link", "set", link, "up"])?;
            ip(&["-n", namespace, "link", "set", "lo", "up"])?;
        }
        Ok(namespaces)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.client]);
        let _ = ip(&["netns", "del", &self.devices]);
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|error| format!("cannot run ip: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Returns why the test cannot run here, if it cannot.
fn missing_requirement() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not running as root, so no network namespace can be created".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(output) if output.status.success() => None,
        _ => Some("iproute2's `ip` command is missing".into()),
    }
}

/// The simulator in the devices' namespace, stopped on drop.
struct Simulator(Child);

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts 3 simulated thermostats on the device side with a responder that joins the
/// group, and returns their `ADDRESS UUID` pairs.
fn start_simulator(namespace: &str) -> (Simulator, Vec<(String, String)>) {
    let child = Command::new("ip")
        .args([
            "netns", "exec", namespace, BINARY, "simulate", "--count", "3",
        ])
        .args(["--bind", DEVICE_SIDE, "--discovery", "0.0.0.0:1900"])
        .args(["--discovery-group", "239.255.255.250"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("simulator starts");
    let mut simulator = Simulator(child);

    let stdout = simulator.0.stdout.take().expect("piped stdout");
    let devices: Vec<(String, String)> = BufReader::new(stdout)
        .lines()
        .take(3)
        .map(|line| {
            let line = line.expect("simulator line");
            let mut fields = line.split_whitespace();
            let address = fields.next().expect("address").to_string();
            let uuid = fields.next().expect("uuid").to_string();
            (address, uuid)
        })
        .collect();
    (simulator, devices)
}

/// Writes a site file; `interface` sets `discovery.udp_interface` when given.
fn write_config(tag: char, interface: Option<&str>) -> PathBuf {
    let folder = std::env::temp_dir().join(format!("netns-discovery-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&folder).expect("create temporary folder");
    let path = folder.join("site.toml");
    let text = String::from(
        "[site]\nsite_id = \"netns_site\"\n\
         [database]\nurl = \"postgresql://unused@127.0.0.1:1/unused\"\n\
         [polling]\nmin_request_gap_ms = 100\n\
         [discovery]\nudp_group = \"239.255.255.250:1900\"\nudp_bind = \"0.0.0.0:0\"\n\
         udp_ttl = 1\nudp_window_seconds = 2\nudp_repeat_gap_ms = 500\n",
    );
    let text = match interface {
        Some(address) => format!("{text}udp_interface = \"{address}\"\n"),
        None => text,
    };
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn multicast_discovery_across_namespaces() {
    if let Some(reason) = missing_requirement() {
        eprintln!("SKIPPED multicast_discovery_across_namespaces: {reason}");
        return;
    }
    let namespaces = Namespaces::create('a').expect("namespaces and veth pair");
    let (_simulator, devices) = start_simulator(&namespaces.devices);
    assert_eq!(devices.len(), 3, "simulator printed its devices");
    let config = write_config('a', Some(DISCOVER_SIDE));

    let started = Instant::now();
    let output = discover_in(&namespaces.client, &config);
    let elapsed = started.elapsed();

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        elapsed < Duration::from_secs(2 + 5),
        "discover took {elapsed:?}"
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON output");
    let listed = json["thermostats"].as_array().expect("thermostats array");
    assert_eq!(listed.len(), 3, "{json}");
    for (address, uuid) in &devices {
        let entry = listed
            .iter()
            .find(|entry| entry["uuid"] == uuid.as_str())
            .unwrap_or_else(|| panic!("thermostat {uuid} not found in {json}"));
        assert_eq!(entry["address"], address.as_str());
    }
}

fn discover_in(namespace: &str, config: &PathBuf) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", namespace, BINARY, "discover", "--config"])
        .arg(config)
        .args(["--json", "--methods", "udp"])
        .output()
        .expect("discover runs")
}

/// The client namespace has no multicast route, so only the configured interface lets
/// WM-DISCOVER out; without it the UDP phase is reported as failed.
#[test]
fn multicast_needs_interface_without_route() {
    if let Some(reason) = missing_requirement() {
        eprintln!("SKIPPED multicast_needs_interface_without_route: {reason}");
        return;
    }
    let namespaces = Namespaces::create('b').expect("namespaces and veth pair");
    let (_simulator, devices) = start_simulator(&namespaces.devices);
    assert_eq!(devices.len(), 3, "simulator printed its devices");
    let config = write_config('b', None);

    let output = discover_in(&namespaces.client, &config);

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON output");
    assert_eq!(json["thermostats"].as_array().map(Vec::len), Some(0));
    assert_eq!(json["phase_history"][0]["status"], "failed");
}
