//! Text tables and value formatting for the operator commands. Pure: every function
//! returns a string, the commands print it.

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::reading::ThermostatState;

/// A table with a header row, columns padded to their widest cell.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(ToString::to_string).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Renders the table, two spaces between columns, no trailing spaces.
    pub fn render(&self) -> String {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.header.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0; columns];
        for row in self.rows.iter().chain([&self.header]) {
            for (index, cell) in row.iter().enumerate() {
                widths[index] = widths[index].max(cell.chars().count());
            }
        }

        let mut out = String::new();
        for row in [&self.header].into_iter().chain(&self.rows) {
            let mut line = String::new();
            for (index, cell) in row.iter().enumerate() {
                if index > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                let pad = widths[index] - cell.chars().count();
                line.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Formats a temperature in °F with one decimal, or `-` when unknown.
pub fn degrees(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |value| format!("{value:.1}"))
}

/// Formats a flag as `yes`/`no`, or `-` when unknown.
pub fn flag(value: Option<bool>) -> String {
    match value {
        Some(true) => "yes".to_string(),
        Some(false) => "no".to_string(),
        None => "-".to_string(),
    }
}

/// Formats a time in `zone` as `2026-12-04 23:01:05`, or `-`.
pub fn local_time(ts: Option<Timestamp>, zone: &TimeZone) -> String {
    ts.map_or_else(
        || "-".to_string(),
        |ts| {
            ts.to_zoned_datetime(zone.clone())
                .strftime("%Y-%m-%d %H:%M:%S")
                .to_string()
        },
    )
}

/// Formats a minute in `zone` as `2026-12-04 23:01`.
pub fn local_minute(ts: Timestamp, zone: &TimeZone) -> String {
    ts.to_zoned_datetime(zone.clone())
        .strftime("%Y-%m-%d %H:%M")
        .to_string()
}

/// Formats a byte count as `12.3 MiB`.
pub fn bytes(count: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = count as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{count} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The header of [`state_cells`].
pub const STATE_HEADER: [&str; 8] = [
    "TEMP °F", "MODE", "HEAT °F", "COOL °F", "FAN", "HVAC", "HOLD", "OVERRIDE",
];

/// Columns of the desired state table that `tstat status` prints under the live state.
pub const DESIRED_HEADER: [&str; 7] = [
    "ID",
    "DESIRED",
    "SOURCE",
    "COMMANDED",
    "POLICY",
    "HOLDING",
    "DRIFT 24H",
];

/// Formats a desired state summary as table cells (without the id).
pub fn desired_cells(summary: &crate::store::report::DesiredSummary) -> Vec<String> {
    let settings = summary.settings.describe();
    let events: Vec<String> = summary
        .recent_events
        .iter()
        .map(|(kind, count)| format!("{kind}={count}"))
        .collect();
    vec![
        if settings.is_empty() {
            "-".to_string()
        } else {
            settings
        },
        summary.source.clone().unwrap_or_else(|| "-".to_string()),
        summary.commanded_at.map_or_else(
            || "-".to_string(),
            |at| at.strftime("%Y-%m-%d %H:%M:%S").to_string(),
        ),
        summary.policy.clone().unwrap_or_else(|| "-".to_string()),
        flag(Some(summary.holding_settings)),
        if events.is_empty() {
            "none".to_string()
        } else {
            events.join(" ")
        },
    ]
}

/// Formats one state as table cells, with the mode names the local API uses.
pub fn state_cells(state: &ThermostatState) -> Vec<String> {
    let fan = state.fmode.map_or("-", |fan| match fan.code() {
        0 => "auto",
        1 => "circulate",
        _ => "on",
    });
    vec![
        degrees(state.temp),
        state.tmode.map_or("-", |mode| mode.name()).to_string(),
        degrees(state.t_heat),
        degrees(state.t_cool),
        fan.to_string(),
        state
            .tstate
            .map_or("-", crate::api::views::tstate_name)
            .to_string(),
        flag(state.hold),
        flag(state.override_active),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_widest_cell() {
        let mut table = Table::new(&["ID", "TEMP °F"]);
        table.push(vec!["a".into(), "70.5".into()]);
        table.push(vec!["longer-id".into(), "-".into()]);
        assert_eq!(
            table.render(),
            "ID         TEMP °F\na          70.5\nlonger-id  -\n"
        );
    }

    #[test]
    fn byte_counts_scale() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(8192), "8.0 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 + 1024 * 512), "3.5 MiB");
    }

    #[test]
    fn unknown_values_print_as_dash() {
        assert_eq!(degrees(None), "-");
        assert_eq!(degrees(Some(68.0)), "68.0");
        assert_eq!(flag(None), "-");
    }

    #[test]
    fn times_print_in_the_site_zone() {
        let ts: Timestamp = "2026-12-04T23:01:05Z".parse().expect("valid");
        let zone = TimeZone::get("America/New_York").expect("zone");
        assert_eq!(local_time(Some(ts), &zone), "2026-12-04 18:01:05");
        assert_eq!(local_minute(ts, &zone), "2026-12-04 18:01");
    }
}
