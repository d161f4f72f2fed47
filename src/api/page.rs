//! `GET /`: the status page a person at the site opens on a phone. Server-rendered HTML
//! with inline CSS, no script and no external asset, refreshed by a meta tag. Rendering
//! is pure.

use std::fmt::Write;

use jiff::tz::TimeZone;

use super::ApiState;
use super::metrics::ROWS_PER_PIECE;
use super::reply::{Body, HTML, Reply};
use super::views::{newest_state, tstate_name};
use crate::desired::{DesiredSnapshot, Policy};
use crate::poll::ThermostatStatus;
use crate::store::ThermostatOverview;

/// Seconds between the page's own reloads.
pub const REFRESH_SECONDS: u32 = 30;

/// One thermostat's row.
#[derive(Debug, Clone, PartialEq)]
pub struct PageRow {
    pub name: String,
    pub id: String,
    pub temp: Option<f64>,
    /// The setpoint in force: `68.0` in heat, `76.0` in cool, `66.0–78.0` in auto.
    pub setpoint: String,
    pub mode: String,
    /// `heating`, `cooling`, `idle` or `unknown`.
    pub activity: String,
    pub online: bool,
    pub last_seen: Option<String>,
    /// Whether the unit keeps its commanded settings (see [`settings_line`]); `None`
    /// when nothing was commanded or the drift policy is `off`.
    pub settings: Option<String>,
}

/// The health of one component, as a line of the page.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentLine {
    pub name: &'static str,
    pub ok: Option<bool>,
    pub detail: String,
}

/// Everything the page shows.
#[derive(Debug, Clone, PartialEq)]
pub struct PageInput {
    pub site_name: String,
    pub generated_at: String,
    pub rows: Vec<PageRow>,
    pub components: Vec<ComponentLine>,
}

pub fn status_page(state: &ApiState) -> Reply {
    let report = super::health_report(state);
    let statuses = state.status.all();
    let overviews = async_io::block_on(futures_lite::future::or(
        async { state.store.thermostat_overviews(None).await.ok() },
        async {
            async_io::Timer::after(super::handlers::STORE_TIMEOUT).await;
            None
        },
    ));

    let rows = match &overviews {
        Some(overviews) => overviews
            .iter()
            .map(|overview| {
                // `all` sorts by uuid.
                let status = statuses
                    .binary_search_by(|(id, _)| id.cmp(&overview.record.id))
                    .ok()
                    .map(|index| &statuses[index].1);
                let mut row = row(
                    Some(overview),
                    status,
                    overview.record.id.as_str(),
                    &state.time_zone,
                );
                row.settings = desired_line(state, &overview.record.id);
                row
            })
            .collect(),
        None => statuses
            .iter()
            .map(|(id, status)| {
                let mut row = row(None, Some(status), id.as_str(), &state.time_zone);
                row.settings = desired_line(state, id);
                row
            })
            .collect(),
    };

    let database_detail = match (&report.database.problem, &overviews) {
        (Some(problem), _) => problem.clone(),
        (None, None) => "not answering; showing live data only".to_string(),
        (None, Some(_)) => format!(
            "connected, readings waiting to be written: {}",
            report.database.buffered_readings
        ),
    };
    let components = vec![
        ComponentLine {
            name: "Database",
            ok: Some(report.database.ok && overviews.is_some()),
            detail: database_detail,
        },
        ComponentLine {
            name: "Polling",
            ok: Some(report.polling.ok),
            detail: report
                .polling
                .problem
                .clone()
                .unwrap_or_else(|| "thermostats answering".to_string()),
        },
        public_server_line(state),
        weather_line(&state.weather.report(state.clock.now())),
    ];

    let input = PageInput {
        site_name: state.site_name.clone(),
        generated_at: local_time(state.clock.now(), &state.time_zone),
        rows,
        components,
    };
    Reply {
        status: 200,
        content_type: HTML,
        body: body(input),
        headers: vec![(
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'".to_string(),
        )],
    }
}

fn row(
    overview: Option<&ThermostatOverview>,
    status: Option<&ThermostatStatus>,
    id: &str,
    time_zone: &TimeZone,
) -> PageRow {
    let newest = newest_state(overview, status);
    let state = newest.map(|(_, state, _)| state);
    let setpoint = match state.map(|state| (state.tmode, state.t_heat, state.t_cool)) {
        Some((_, Some(heat), Some(cool))) => format!("{heat:.1}–{cool:.1} °F"),
        Some((_, Some(heat), None)) => format!("{heat:.1} °F"),
        Some((_, None, Some(cool))) => format!("{cool:.1} °F"),
        _ => "–".to_string(),
    };
    let name = overview
        .map(|overview| overview.record.name.clone())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| id.to_string());
    PageRow {
        name,
        id: id.to_string(),
        temp: state.and_then(|state| state.temp),
        setpoint,
        mode: state
            .and_then(|state| state.tmode)
            .map_or("unknown", |mode| mode.name())
            .to_string(),
        activity: state
            .and_then(|state| state.tstate)
            .map_or("unknown", tstate_name)
            .to_string(),
        online: status.is_some_and(|status| status.online),
        last_seen: newest.map(|(ts, _, _)| local_time(ts, time_zone)),
        settings: None,
    }
}

fn desired_line(state: &ApiState, id: &crate::thermostat::ThermostatId) -> Option<String> {
    let controller = state.registry.controller(id)?;
    settings_line(&controller.snapshot())
}

/// Says whether the unit keeps its commanded settings: `as commanded`, the fields that
/// differ now, or that re-applying them failed. `None` when nothing was commanded or
/// the drift policy is `off`.
pub fn settings_line(snapshot: &DesiredSnapshot) -> Option<String> {
    if snapshot.settings.is_empty() || snapshot.policy == Policy::Off {
        return None;
    }
    if !snapshot.holding_settings {
        return Some(format!(
            "not holding: {} re-applies failed in a row",
            snapshot.failed_reapplies
        ));
    }
    if snapshot.drift_fields.is_empty() {
        return Some("as commanded".to_string());
    }
    Some(format!("differs: {}", snapshot.drift_fields.join(", ")))
}

/// Formats `ts` in the site's time zone, for the person reading the page at the site.
fn local_time(ts: jiff::Timestamp, time_zone: &TimeZone) -> String {
    ts.to_zoned_datetime(time_zone.clone())
        .strftime("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

/// Returns the page as a body sent in pieces: the head, then [`ROWS_PER_PIECE`] thermostats per
/// piece, then the end, so the page for a large fleet is never in memory as a whole.
pub fn body(input: PageInput) -> Body {
    let rows = input.rows.len().div_ceil(ROWS_PER_PIECE);
    Body::in_pieces(rows + 2, move |index| match index {
        0 => render_head(&input),
        index if index <= rows => {
            let start = (index - 1) * ROWS_PER_PIECE;
            let end = input.rows.len().min(start + ROWS_PER_PIECE);
            let mut html = String::new();
            for row in &input.rows[start..end] {
                render_row(&mut html, row);
            }
            html
        }
        _ => render_tail(),
    })
}

/// Renders the page. Every value from a device or the database is HTML-escaped.
pub fn render(input: &PageInput) -> String {
    let mut html = render_head(input);
    for row in &input.rows {
        render_row(&mut html, row);
    }
    html.push_str(&render_tail());
    html
}

/// The page up to the first thermostat's card.
fn render_head(input: &PageInput) -> String {
    let mut html = String::new();
    let site = escape(&input.site_name);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\n\
         <title>{site} thermostats</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>{site}</h1>\n<p class=\"muted\">Updated {} · reloads every {REFRESH_SECONDS} s</p>\n",
        escape(&input.generated_at)
    );

    html.push_str("<section class=\"components\">\n");
    for component in &input.components {
        let (class, word) = match component.ok {
            Some(true) => ("ok", "OK"),
            Some(false) => ("bad", "Problem"),
            None => ("off", "Off"),
        };
        let _ = writeln!(
            html,
            "<div class=\"component {class}\"><b>{}</b> <span>{word}</span><br><small>{}</small></div>",
            escape(component.name),
            escape(&component.detail)
        );
    }
    html.push_str("</section>\n");

    if input.rows.is_empty() {
        html.push_str("<p>No thermostat is known yet.</p>\n");
    }
    html.push_str("<section class=\"cards\">\n");
    html
}

/// The page after the last thermostat's card.
fn render_tail() -> String {
    "</section>\n</body>\n</html>\n".to_string()
}

fn render_row(html: &mut String, row: &PageRow) {
    let temp = row
        .temp
        .map_or("–".to_string(), |temp| format!("{temp:.1} °F"));
    let online = if row.online { "online" } else { "offline" };
    let _ = writeln!(
        html,
        "<article class=\"card {online}\" id=\"t-{id}\">\n<h2>{name}</h2>\n\
         <p class=\"temp\">{temp}</p>\n<dl>\n<dt>Setpoint</dt><dd>{setpoint}</dd>\n\
         <dt>Mode</dt><dd>{mode}</dd>\n<dt>Equipment</dt><dd class=\"{activity}\">{activity}</dd>\n\
         <dt>Last seen</dt><dd>{seen}</dd>\n<dt>Status</dt><dd>{online}</dd>\n{settings}</dl>\n</article>",
        id = escape(&row.id),
        name = escape(&row.name),
        temp = escape(&temp),
        setpoint = escape(&row.setpoint),
        mode = escape(&row.mode),
        activity = escape(&row.activity),
        seen = escape(row.last_seen.as_deref().unwrap_or("never")),
        settings = row.settings.as_deref().map_or(String::new(), |line| {
            format!("<dt>Settings</dt><dd>{}</dd>\n", escape(line))
        }),
    );
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:1rem;background:#f6f6f4;color:#222}\
h1{margin:.2rem 0}.muted{color:#666;margin-top:0}\
.components{display:grid;grid-template-columns:repeat(auto-fit,minmax(11rem,1fr));gap:.5rem;margin:1rem 0}\
.component{padding:.6rem;border-radius:.4rem;background:#fff;border-left:.4rem solid #999}\
.component.ok{border-color:#2a8a3a}.component.bad{border-color:#c0392b}\
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(15rem,1fr));gap:.8rem}\
.card{background:#fff;border-radius:.5rem;padding:.8rem;box-shadow:0 1px 3px #0002}\
.card.offline{opacity:.6}.card h2{font-size:1.1rem;margin:0}.temp{font-size:2.2rem;margin:.3rem 0}\
dl{display:grid;grid-template-columns:auto 1fr;gap:.2rem .8rem;margin:0}dt{color:#666}dd{margin:0}\
.heating{color:#c0392b}.cooling{color:#2166ac}";

/// Escapes `&`, `<`, `>`, `"` and `'` for HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            _ => escaped.push(c),
        }
    }
    escaped
}

/// Describes the public server link: not configured, or whether the latest request
/// got a response and when the last one did.
fn public_server_line(state: &ApiState) -> ComponentLine {
    let Some(link) = &state.public_server else {
        return ComponentLine {
            name: "Public server link",
            ok: None,
            detail: "not configured".to_string(),
        };
    };
    let report = link.report();
    let last = match report.last_success {
        Some(at) => format!(
            "last response {}",
            local_time(timestamp(at), &state.time_zone)
        ),
        None => "no response yet".to_string(),
    };
    let detail = match (report.ok, &report.last_error) {
        (false, Some(error)) => format!("failing: {error}; {last}"),
        _ => last,
    };
    ComponentLine {
        name: "Public server link",
        ok: Some(report.ok),
        detail,
    }
}

fn timestamp(seconds: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(seconds).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

/// Describes the weather feed: off with its reason, or the latest value with its source
/// and age, healthy while that value is current.
fn weather_line(report: &crate::weather::WeatherReport) -> ComponentLine {
    if !report.enabled {
        let reason = report
            .off_reason
            .clone()
            .unwrap_or_else(|| "not configured".to_string());
        return ComponentLine {
            name: "Weather feed",
            ok: None,
            detail: format!("off: {reason}"),
        };
    }
    let detail = match (report.temperature_f, report.source, report.age_seconds) {
        (Some(temperature), Some(source), Some(age)) => {
            format!(
                "{temperature:.1} °F outside ({source}, {} min old)",
                age / 60
            )
        }
        _ => "no value yet".to_string(),
    };
    ComponentLine {
        name: "Weather feed",
        ok: Some(report.current),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::SettingsChange;

    fn weather_report(enabled: bool, current: bool) -> crate::weather::WeatherReport {
        crate::weather::WeatherReport {
            enabled,
            off_reason: (!enabled).then(|| "no THERMOSTAT_WEATHER_API_KEY".to_string()),
            temperature_f: enabled.then_some(41.5),
            source: enabled.then_some("live"),
            obtained_at: None,
            age_seconds: enabled.then_some(300),
            current,
            max_age_seconds: 1800,
            error_count: 0,
            failed_refreshes_in_a_row: 0,
            last_error: None,
            last_error_at: None,
            last_success_at: None,
        }
    }

    #[test]
    fn weather_line_off_names_reason() {
        let line = weather_line(&weather_report(false, false));
        assert_eq!(line.ok, None);
        assert_eq!(line.detail, "off: no THERMOSTAT_WEATHER_API_KEY");
    }

    #[test]
    fn weather_line_shows_value_and_staleness() {
        let current = weather_line(&weather_report(true, true));
        assert_eq!(current.ok, Some(true));
        assert_eq!(current.detail, "41.5 °F outside (live, 5 min old)");
        assert_eq!(weather_line(&weather_report(true, false)).ok, Some(false));
    }

    fn input() -> PageInput {
        PageInput {
            site_name: "Cape <house>".to_string(),
            generated_at: "2026-12-04 21:00:00 UTC".to_string(),
            rows: vec![PageRow {
                name: "Living <room>".to_string(),
                id: "5cdad4000001".to_string(),
                temp: Some(70.5),
                setpoint: "68.0 °F".to_string(),
                mode: "heat".to_string(),
                activity: "heating".to_string(),
                online: true,
                last_seen: Some("2026-12-04 20:59:58 UTC".to_string()),
                settings: Some("differs: t_heat".to_string()),
            }],
            components: vec![ComponentLine {
                name: "Database",
                ok: Some(true),
                detail: "connected".to_string(),
            }],
        }
    }

    #[test]
    fn pieces_make_the_whole_page() {
        use std::io::Read;
        for count in [0, ROWS_PER_PIECE + 1] {
            let mut input = input();
            let row = input.rows[0].clone();
            input.rows = (0..count)
                .map(|n| PageRow {
                    id: format!("5cdad4{n:06}"),
                    ..row.clone()
                })
                .collect();
            let whole = render(&input);
            let (length, mut reader) = body(input).into_reader();
            let mut html = String::new();
            reader.read_to_string(&mut html).expect("read the page");
            assert_eq!(length, html.len());
            assert_eq!(html, whole);
            assert_eq!(html.matches("<article ").count(), count);
        }
    }

    #[test]
    fn page_refreshes_itself() {
        assert!(render(&input()).contains("http-equiv=\"refresh\""));
    }

    #[test]
    fn page_fits_phone_screens() {
        assert!(render(&input()).contains("name=\"viewport\""));
    }

    #[test]
    fn page_loads_nothing_external() {
        let html = render(&input());
        assert!(!html.contains("src="), "{html}");
        assert!(!html.contains("href="), "{html}");
    }

    #[test]
    fn device_names_escaped() {
        let html = render(&input());
        assert!(html.contains("Living &lt;room&gt;"));
        assert!(!html.contains("<room>"));
    }

    #[test]
    fn row_shows_whether_settings_hold() {
        assert!(render(&input()).contains("<dt>Settings</dt><dd>differs: t_heat</dd>"));
    }

    fn snapshot() -> DesiredSnapshot {
        DesiredSnapshot {
            settings: SettingsChange {
                t_heat: Some(68.0),
                ..SettingsChange::default()
            },
            source: Some("local_api".to_string()),
            commanded_at: None,
            policy: Policy::Enforce,
            holding_settings: true,
            failed_reapplies: 0,
            drift_fields: Vec::new(),
            counters: Default::default(),
        }
    }

    #[test]
    fn settings_line_names_drift_and_failure() {
        assert_eq!(settings_line(&snapshot()).as_deref(), Some("as commanded"));
        let drifting = DesiredSnapshot {
            drift_fields: vec!["t_heat", "hold"],
            ..snapshot()
        };
        assert_eq!(
            settings_line(&drifting).as_deref(),
            Some("differs: t_heat, hold")
        );
        let failing = DesiredSnapshot {
            holding_settings: false,
            failed_reapplies: 3,
            ..snapshot()
        };
        assert_eq!(
            settings_line(&failing).as_deref(),
            Some("not holding: 3 re-applies failed in a row")
        );
    }

    #[test]
    fn settings_line_absent_without_command_or_policy() {
        let uncommanded = DesiredSnapshot {
            settings: SettingsChange::default(),
            ..snapshot()
        };
        assert_eq!(settings_line(&uncommanded), None);
        let off = DesiredSnapshot {
            policy: Policy::Off,
            ..snapshot()
        };
        assert_eq!(settings_line(&off), None);
    }

    #[test]
    fn row_shows_temperature_and_setpoint() {
        let html = render(&input());
        assert!(html.contains("70.5 °F"));
        assert!(html.contains("68.0 °F"));
    }
}
