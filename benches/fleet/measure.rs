//! The pure parts of the fleet benchmark: parsing `/proc` files and Prometheus text,
//! histogram deltas and percentiles, the arithmetic of the printed figures, and the checks
//! of the options. Tested
//! by `tests/bench_measure.rs`, which includes this file.

use std::path::Path;
use std::time::Duration;

/// CPU time of a process from `/proc/PID/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTicks {
    pub user: u64,
    pub system: u64,
}

impl CpuTicks {
    pub fn total(&self) -> u64 {
        self.user + self.system
    }
}

/// Reads utime and stime (fields 14 and 15) from the text of `/proc/PID/stat`. The
/// command name in parentheses may hold spaces, so fields are counted after the last `)`.
pub fn parse_proc_stat(text: &str) -> Option<CpuTicks> {
    let after_name = &text[text.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name come state (field 3) .. stime (field 15): utime is the 12th.
    let user = fields.nth(11)?.parse().ok()?;
    let system = fields.next()?.parse().ok()?;
    Some(CpuTicks { user, system })
}

/// Reads a `kB` line such as `VmRSS:    5120 kB` from the text of `/proc/PID/status`.
pub fn parse_status_kib(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// Returns the value of the sample line `series` in Prometheus text.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Counts the labelled series of the family `name` and sums their values.
pub fn family_sum(text: &str, name: &str) -> (usize, f64) {
    let prefix = format!("{name}{{");
    text.lines()
        .filter(|line| line.starts_with(&prefix))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .fold((0, 0.0), |(count, sum), value| (count + 1, sum + value))
}

/// A histogram read from `/metrics`: cumulative counts per upper bound in seconds, the
/// last bound being infinity.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    pub bounds: Vec<f64>,
    pub cumulative: Vec<u64>,
}

impl Buckets {
    /// Reads the `{name}_bucket{le="..."}` lines, in the order they appear.
    pub fn parse(text: &str, name: &str) -> Option<Self> {
        let prefix = format!("{name}_bucket{{le=\"");
        let mut bounds = Vec::new();
        let mut cumulative = Vec::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(&prefix) else {
                continue;
            };
            let (bound, value) = rest.split_once("\"} ")?;
            bounds.push(if bound == "+Inf" {
                f64::INFINITY
            } else {
                bound.parse().ok()?
            });
            cumulative.push(value.trim().parse::<f64>().ok()? as u64);
        }
        (!bounds.is_empty()).then_some(Self { bounds, cumulative })
    }

    /// Counts recorded after `earlier`, a scrape of the same histogram.
    pub fn since(&self, earlier: &Buckets) -> Buckets {
        let cumulative = self
            .cumulative
            .iter()
            .zip(&earlier.cumulative)
            .map(|(now, before)| now.saturating_sub(*before))
            .collect();
        Buckets {
            bounds: self.bounds.clone(),
            cumulative,
        }
    }

    pub fn count(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// Upper bound of the bucket holding the `quantile` (0 to 1) of the counts: the true
    /// value is at most this. `None` when the histogram is empty.
    pub fn quantile_bound(&self, quantile: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((quantile * count as f64).ceil() as u64).clamp(1, count);
        let index = self.cumulative.iter().position(|c| *c >= rank)?;
        Some(self.bounds[index])
    }

    /// Upper bound of the highest bucket that holds a count.
    pub fn max_bound(&self) -> Option<f64> {
        self.quantile_bound(1.0)
    }

    /// Counts at or under `bound`, which must be one of the bucket bounds.
    pub fn at_or_under(&self, bound: f64) -> u64 {
        self.bounds
            .iter()
            .position(|b| *b >= bound)
            .map_or(self.count(), |index| self.cumulative[index])
    }
}

/// The median of `values`; 0 for none.
pub fn median(values: &[u64]) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or(0)
}

/// Parses `10,100,1000` into fleet sizes.
pub fn parse_sizes(text: &str) -> Result<Vec<usize>, String> {
    text.split(',')
        .map(|part| match part.trim().parse::<usize>() {
            Ok(size) if size > 0 => Ok(size),
            _ => Err(format!(
                "invalid fleet size {part:?} in --sizes: use positive whole numbers separated by commas, such as 10,100,1000"
            )),
        })
        .collect()
}

/// Parses the whole number of option `flag`, which must be at least `minimum`.
pub fn parse_whole_number(flag: &str, text: &str, minimum: u64) -> Result<u64, String> {
    let value = text
        .trim()
        .parse::<u64>()
        .map_err(|_| format!("{flag} takes a whole number, such as {minimum}, not {text:?}"))?;
    if value < minimum {
        return Err(format!(
            "{flag} {value} is too small: use {minimum} or more"
        ));
    }
    Ok(value)
}

/// Checks that `path` is a file that can be run, before any server starts.
pub fn check_daemon(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;

    let how_to_fix = "build it with `cargo build --release`, or pass --daemon PATH";
    let metadata = std::fs::metadata(path)
        .map_err(|error| format!("no daemon at {}: {error}; {how_to_fix}", path.display()))?;
    if !metadata.is_file() {
        return Err(format!(
            "the daemon {} is not a file; {how_to_fix}",
            path.display()
        ));
    }
    if metadata.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "the daemon {} is not executable; run `chmod +x` on it, or pass --daemon PATH",
            path.display()
        ));
    }
    Ok(())
}

/// CPU seconds per operation, in microseconds; `None` without operations.
pub fn micros_per(cpu: Duration, operations: u64) -> Option<f64> {
    (operations > 0).then(|| cpu.as_secs_f64() * 1e6 / operations as f64)
}

/// Converts clock ticks to a duration.
pub fn ticks_to_duration(ticks: u64, ticks_per_second: u64) -> Duration {
    Duration::from_secs_f64(ticks as f64 / ticks_per_second.max(1) as f64)
}

/// Formats a bound in seconds as milliseconds, `> LAST` for the overflow bucket.
pub fn format_bound_ms(bound: Option<f64>, last_finite: f64) -> String {
    match bound {
        None => "-".to_string(),
        Some(value) if value.is_infinite() => format!(">{:.0}", last_finite * 1000.0),
        Some(value) => format!("<={}", value * 1000.0),
    }
}

/// Splits a raw HTTP/1.1 reply into its status and body, undoing chunked transfer
/// encoding (tiny_http sends large bodies chunked).
pub fn parse_http_reply(reply: &[u8]) -> Option<(u16, Vec<u8>)> {
    let split = reply.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&reply[..split]).to_ascii_lowercase();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let body = &reply[split + 4..];
    if !head.contains("transfer-encoding: chunked") {
        return Some((status, body.to_vec()));
    }
    let mut decoded = Vec::new();
    let mut rest = body;
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some((status, decoded));
        }
        decoded.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

/// The variables that the `Environment=` lines of a systemd unit set, in order: each
/// line holds `NAME=VALUE` words separated by spaces, a word optionally in double
/// quotes. Comments and other lines are skipped; an empty `Environment=` clears the
/// list, as in systemd.
pub fn unit_environment(unit: &str) -> Vec<(String, String)> {
    let mut variables: Vec<(String, String)> = Vec::new();
    for line in unit.lines().map(str::trim) {
        let Some(words) = line.strip_prefix("Environment=") else {
            continue;
        };
        if words.trim().is_empty() {
            variables.clear();
        }
        for word in split_unit_words(words) {
            if let Some((name, value)) = word.split_once('=') {
                variables.retain(|(known, _)| known != name);
                variables.push((name.to_string(), value.to_string()));
            }
        }
    }
    variables
}

/// Splits at spaces outside double quotes and drops the quotes.
fn split_unit_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}
