//! The benchmark's child processes, each this same binary started with a role flag:
//! the simulated fleet, and the two floor loops that measure their own CPU time.

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime};

use thermostat_server::simulator::{Fleet, FleetOptions, Latency};

use crate::measure::{CpuTicks, parse_http_reply, parse_proc_stat};

/// `--simulator-child COUNT fast|realistic`: runs the fleet and prints `ADDRESS UUID`
/// per device, then `ready`. Prints one summary line for each `stats` line on standard
/// input, and stops at `stop` or at the end of standard input.
pub fn simulator(args: &[String]) -> Result<(), String> {
    let count: usize = args
        .first()
        .and_then(|text| text.parse().ok())
        .ok_or("--simulator-child needs COUNT")?;
    let latency = match args.get(1).map(String::as_str) {
        Some("realistic") => Latency::Realistic,
        _ => Latency::Fast,
    };
    let fleet = Fleet::start(FleetOptions {
        count,
        latency,
        ..FleetOptions::default()
    })
    .map_err(|error| format!("cannot start {count} simulated thermostats: {error}"))?;

    let mut out = std::io::stdout().lock();
    for device in fleet.devices() {
        writeln!(out, "{} {}", device.address(), device.uuid()).map_err(|e| e.to_string())?;
    }
    writeln!(out, "ready").map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;

    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match line.trim() {
            "stats" => {
                let mut summary = FleetStats::default();
                for device in fleet.devices() {
                    summary.add(&device.handle().stats());
                }
                writeln!(out, "{}", summary.line()).map_err(|e| e.to_string())?;
                out.flush().map_err(|e| e.to_string())?;
            }
            "stop" => break,
            _ => {}
        }
    }
    fleet.stop();
    Ok(())
}

/// Overlap and request counts over a whole simulated fleet.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FleetStats {
    pub tstat_requests: u64,
    pub overlapping_requests: u64,
    pub devices_with_overlap: u64,
    pub max_concurrent: u64,
}

impl FleetStats {
    fn add(&mut self, stats: &thermostat_server::simulator::SimStats) {
        self.tstat_requests += stats.requests_to("/tstat");
        self.overlapping_requests += stats.overlapping_requests;
        self.devices_with_overlap += u64::from(stats.overlapping_requests > 0);
        self.max_concurrent = self
            .max_concurrent
            .max(stats.max_concurrent_connections as u64);
    }

    fn line(&self) -> String {
        format!(
            "stats {} {} {} {}",
            self.tstat_requests,
            self.overlapping_requests,
            self.devices_with_overlap,
            self.max_concurrent
        )
    }

    /// Reads the line that `line` wrote.
    pub fn parse(line: &str) -> Option<Self> {
        let mut numbers = line.strip_prefix("stats ")?.split(' ').map(str::parse);
        Some(Self {
            tstat_requests: numbers.next()?.ok()?,
            overlapping_requests: numbers.next()?.ok()?,
            devices_with_overlap: numbers.next()?.ok()?,
            max_concurrent: numbers.next()?.ok()?,
        })
    }
}

/// `--floor-http SECONDS`, with one device address a line on standard input: GETs
/// `/tstat` from each device in turn for SECONDS, then prints `REQUESTS CPU_TICKS`.
pub fn floor_http(args: &[String]) -> Result<(), String> {
    let seconds: f64 = args
        .first()
        .and_then(|text| text.parse().ok())
        .ok_or("--floor-http needs SECONDS")?;
    let addresses: Vec<SocketAddr> = std::io::stdin()
        .lock()
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| line.trim().parse().ok())
        .collect();
    if addresses.is_empty() {
        return Err("--floor-http read no address on standard input".into());
    }

    let before = own_cpu()?;
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let mut requests = 0u64;
    while Instant::now() < end {
        let address = addresses[requests as usize % addresses.len()];
        let (status, _) = http_get(address, "/tstat")?;
        if status != 200 {
            return Err(format!("GET /tstat from {address} returned {status}"));
        }
        requests += 1;
    }
    let used = own_cpu()?.total() - before.total();
    println!("{requests} {used}");
    Ok(())
}

/// `--floor-insert URL SECONDS BATCH`: inserts readings into `raw_readings` in batches
/// of BATCH rows, one transaction each, for SECONDS, then prints `ROWS CPU_TICKS`.
pub fn floor_insert(args: &[String]) -> Result<(), String> {
    let [url, seconds, batch] = args else {
        return Err("--floor-insert needs URL SECONDS BATCH".into());
    };
    let seconds: f64 = seconds
        .parse()
        .map_err(|_| format!("invalid SECONDS {seconds}"))?;
    let batch: usize = batch
        .parse()
        .map_err(|_| format!("invalid BATCH {batch}"))?;
    let mut client = postgres::Client::connect(url, postgres::NoTls)
        .map_err(|error| format!("cannot connect to {url}: {error}"))?;
    let ids: Vec<String> = client
        .query("SELECT thermostat_id FROM thermostats ORDER BY 1", &[])
        .map_err(|error| error.to_string())?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if ids.is_empty() {
        return Err("no thermostat registered to insert readings for".into());
    }
    client
        .batch_execute("SET synchronous_commit = off")
        .map_err(|error| error.to_string())?;
    let statement = client
        .prepare(
            "INSERT INTO raw_readings (ts, thermostat_id, temp, t_heat, t_cool, local_temp, \
             tmode, fmode, tstate, fstate, hold, override)
             SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::float8[], $4::float8[], \
             $5::float8[], $6::float8[], $7::int2[], $8::int2[], $9::int2[], $10::bool[], \
             $11::bool[], $12::bool[])",
        )
        .map_err(|error| error.to_string())?;

    // Timestamps in 2001, far from the daemon's rows, one second apart per thermostat.
    let origin = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let before = own_cpu()?;
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let mut written = 0usize;
    while Instant::now() < end {
        let size = batch;
        let indexes: Vec<usize> = (written..written + size).collect();
        let ts: Vec<SystemTime> = indexes
            .iter()
            .map(|i| origin + Duration::from_secs((i / ids.len()) as u64))
            .collect();
        let thermostat: Vec<&str> = indexes
            .iter()
            .map(|i| ids[i % ids.len()].as_str())
            .collect();
        let temp: Vec<Option<f64>> = indexes
            .iter()
            .map(|i| Some(68.0 + (i % 7) as f64))
            .collect();
        let heat = vec![Some(68.0); size];
        let cool: Vec<Option<f64>> = vec![None; size];
        let local = vec![Some(41.0); size];
        let mode = vec![Some(1i16); size];
        let fan = vec![Some(0i16); size];
        let state = vec![Some(0i16); size];
        let flag = vec![Some(false); size];
        client
            .execute(
                &statement,
                &[
                    &ts,
                    &thermostat,
                    &temp,
                    &heat,
                    &cool,
                    &local,
                    &mode,
                    &fan,
                    &state,
                    &flag,
                    &flag,
                    &flag,
                ],
            )
            .map_err(|error| format!("floor insert failed: {error}"))?;
        written += size;
    }
    let used = own_cpu()?.total() - before.total();
    println!("{written} {used}");
    Ok(())
}

fn own_cpu() -> Result<CpuTicks, String> {
    let text = std::fs::read_to_string("/proc/self/stat").map_err(|e| e.to_string())?;
    parse_proc_stat(&text).ok_or_else(|| "cannot parse /proc/self/stat".to_string())
}

/// Sends the smallest HTTP/1.1 GET (one connection, `Connection: close`, read to the
/// end) and returns the status and the body.
pub fn http_get(address: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
        .map_err(|error| format!("cannot connect to {address}: {error}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|error| format!("cannot send to {address}: {error}"))?;
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .map_err(|error| format!("cannot read from {address}: {error}"))?;
    let (status, body) = parse_http_reply(&reply)
        .ok_or_else(|| format!("{address} sent a reply that is not HTTP/1.1"))?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
