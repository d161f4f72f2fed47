//! The route table and the pure decision of which route a method and path select:
//! 404 for an unknown path or thermostat id form, 405 (with `Allow`) for a known path
//! with the wrong method.

use crate::thermostat::ThermostatId;

use super::reply::Reply;

/// A request the API serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    StatusPage,
    Metrics,
    Thermostats,
    ThermostatStatus(ThermostatId),
    SetTemperature(ThermostatId),
    SetMode(ThermostatId),
    /// A live `GET /tstat` through the daemon's link.
    LiveStatus(ThermostatId),
    /// Any of tmode, t_heat, t_cool, fmode and hold in one verified change.
    SetSettings(ThermostatId),
    TimeSync(ThermostatId),
    Program(ThermostatId),
    SiteStatus,
    DiscoveryScan,
    SystemInfo,
    SystemHealth,
    SystemConfig,
    WeatherStatus,
}

impl Route {
    /// Returns true for requests that change something, which need the bearer token when
    /// the API is reachable from the LAN.
    pub fn is_mutating(&self) -> bool {
        matches!(
            self,
            Self::SetTemperature(_)
                | Self::SetMode(_)
                | Self::SetSettings(_)
                | Self::TimeSync(_)
                | Self::DiscoveryScan
        )
    }
}

/// One row of the route table: method and path template, `{id}` standing for a
/// thermostat id. The OpenAPI description in `docs/openapi.json` lists the same rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    pub method: &'static str,
    pub path: &'static str,
}

/// Every route, in the order of the OpenAPI description.
pub const ROUTE_TABLE: [RouteSpec; 16] = [
    spec("GET", "/"),
    spec("GET", "/metrics"),
    spec("GET", "/api/thermostats"),
    spec("GET", "/api/thermostats/{id}/status"),
    spec("POST", "/api/thermostats/{id}/temperature"),
    spec("POST", "/api/thermostats/{id}/mode"),
    spec("GET", "/api/thermostats/{id}/live"),
    spec("POST", "/api/thermostats/{id}/settings"),
    spec("POST", "/api/thermostats/{id}/time-sync"),
    spec("GET", "/api/thermostats/{id}/program"),
    spec("GET", "/api/site/status"),
    spec("POST", "/api/discovery/scan"),
    spec("GET", "/api/system/info"),
    spec("GET", "/api/system/health"),
    spec("GET", "/api/weather/status"),
    spec("GET", "/api/system/config"),
];

const fn spec(method: &'static str, path: &'static str) -> RouteSpec {
    RouteSpec { method, path }
}

/// Selects the route for `method` and `path` (without the query string). HEAD is served
/// as GET without a body. A trailing slash is ignored.
pub fn resolve(method: &str, path: &str) -> Result<Route, Reply> {
    let trimmed = match path.trim_end_matches('/') {
        "" => "/",
        other => other,
    };
    let segments: Vec<&str> = trimmed.split('/').skip(1).collect();
    let (template, id) = match_template(&segments)
        .ok_or_else(|| Reply::error(404, format!("no such route: {}", printable(path))))?;

    let effective = if method == "HEAD" { "GET" } else { method };
    let allowed = ROUTE_TABLE
        .iter()
        .find(|row| row.path == template)
        .map(|row| row.method)
        .unwrap_or("GET");
    if effective != allowed {
        let allow = if allowed == "GET" {
            "GET, HEAD"
        } else {
            allowed
        };
        return Err(Reply::error(
            405,
            format!(
                "method {} not allowed on {template}: use {allow}",
                printable(method)
            ),
        )
        .with_header("Allow", allow));
    }

    let id = match id {
        Some(raw) => Some(parse_id(raw)?),
        None => None,
    };
    Ok(build(template, id))
}

/// Finds the template matching `segments` and the raw id segment it captures.
fn match_template<'a>(segments: &[&'a str]) -> Option<(&'static str, Option<&'a str>)> {
    let fixed = match segments {
        [""] => Some("/"),
        ["metrics"] => Some("/metrics"),
        ["api", "thermostats"] => Some("/api/thermostats"),
        ["api", "site", "status"] => Some("/api/site/status"),
        ["api", "discovery", "scan"] => Some("/api/discovery/scan"),
        ["api", "system", "info"] => Some("/api/system/info"),
        ["api", "system", "health"] => Some("/api/system/health"),
        ["api", "system", "config"] => Some("/api/system/config"),
        ["api", "weather", "status"] => Some("/api/weather/status"),
        _ => None,
    };
    if let Some(template) = fixed {
        return Some((template, None));
    }
    match segments {
        ["api", "thermostats", id, "status"] => Some(("/api/thermostats/{id}/status", Some(*id))),
        ["api", "thermostats", id, "temperature"] => {
            Some(("/api/thermostats/{id}/temperature", Some(*id)))
        }
        ["api", "thermostats", id, "mode"] => Some(("/api/thermostats/{id}/mode", Some(*id))),
        ["api", "thermostats", id, "live"] => Some(("/api/thermostats/{id}/live", Some(*id))),
        ["api", "thermostats", id, "settings"] => {
            Some(("/api/thermostats/{id}/settings", Some(*id)))
        }
        ["api", "thermostats", id, "time-sync"] => {
            Some(("/api/thermostats/{id}/time-sync", Some(*id)))
        }
        ["api", "thermostats", id, "program"] => Some(("/api/thermostats/{id}/program", Some(*id))),
        _ => None,
    }
}

/// Parses a thermostat id from a path segment. A segment that cannot be an id names no
/// thermostat, so it is a 404 like an unknown one.
fn parse_id(raw: &str) -> Result<ThermostatId, Reply> {
    ThermostatId::parse(raw).map_err(|_| {
        Reply::error(
            404,
            format!(
                "no thermostat with id {}: ids are the device uuids that GET /api/thermostats lists",
                printable(raw)
            ),
        )
    })
}

fn build(template: &str, id: Option<ThermostatId>) -> Route {
    match (template, id) {
        ("/metrics", _) => Route::Metrics,
        ("/api/thermostats", _) => Route::Thermostats,
        ("/api/site/status", _) => Route::SiteStatus,
        ("/api/discovery/scan", _) => Route::DiscoveryScan,
        ("/api/system/info", _) => Route::SystemInfo,
        ("/api/system/health", _) => Route::SystemHealth,
        ("/api/system/config", _) => Route::SystemConfig,
        ("/api/weather/status", _) => Route::WeatherStatus,
        ("/api/thermostats/{id}/status", Some(id)) => Route::ThermostatStatus(id),
        ("/api/thermostats/{id}/temperature", Some(id)) => Route::SetTemperature(id),
        ("/api/thermostats/{id}/mode", Some(id)) => Route::SetMode(id),
        ("/api/thermostats/{id}/live", Some(id)) => Route::LiveStatus(id),
        ("/api/thermostats/{id}/settings", Some(id)) => Route::SetSettings(id),
        ("/api/thermostats/{id}/time-sync", Some(id)) => Route::TimeSync(id),
        ("/api/thermostats/{id}/program", Some(id)) => Route::Program(id),
        _ => Route::StatusPage,
    }
}

/// Shortens client-supplied text for messages and logs, and escapes control characters.
pub fn printable(text: &str) -> String {
    let short: String = text.chars().take(80).collect();
    let escaped = format!("{short:?}");
    if text.chars().count() > 80 {
        format!("{escaped}...")
    } else {
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "5cdad4123456";

    fn id() -> ThermostatId {
        ThermostatId::parse(UUID).expect("valid id")
    }

    #[test]
    fn every_table_row_resolves() {
        for row in ROUTE_TABLE {
            let path = row.path.replace("{id}", UUID);
            assert!(resolve(row.method, &path).is_ok(), "{row:?}");
        }
    }

    #[test]
    fn thermostat_routes_capture_id() {
        let path = format!("/api/thermostats/{UUID}/temperature");
        assert_eq!(resolve("POST", &path), Ok(Route::SetTemperature(id())));
    }

    #[test]
    fn trailing_slash_ignored() {
        assert_eq!(resolve("GET", "/api/thermostats/"), Ok(Route::Thermostats));
    }

    #[test]
    fn head_served_as_get() {
        assert_eq!(resolve("HEAD", "/metrics"), Ok(Route::Metrics));
    }

    #[test]
    fn unknown_path_is_404() {
        let reply = resolve("GET", "/api/nothing").expect_err("unknown path");
        assert_eq!(reply.status, 404);
    }

    #[test]
    fn invalid_id_is_404() {
        let reply = resolve("GET", "/api/thermostats/%00%00/status").expect_err("bad id");
        assert_eq!(reply.status, 404);
    }

    #[test]
    fn wrong_method_is_405_with_allow() {
        let reply = resolve("GET", &format!("/api/thermostats/{UUID}/mode")).expect_err("GET");
        assert_eq!(reply.status, 405);
        assert_eq!(reply.headers, vec![("Allow", "POST".to_string())]);
    }

    #[test]
    fn post_on_read_route_is_405() {
        let reply = resolve("POST", "/api/system/config").expect_err("POST");
        assert_eq!(reply.headers, vec![("Allow", "GET, HEAD".to_string())]);
    }

    #[test]
    fn only_changes_are_mutating() {
        assert!(Route::SetMode(id()).is_mutating());
        assert!(Route::DiscoveryScan.is_mutating());
        assert!(Route::TimeSync(id()).is_mutating());
        assert!(Route::SetSettings(id()).is_mutating());
        assert!(!Route::Program(id()).is_mutating());
        assert!(!Route::ThermostatStatus(id()).is_mutating());
    }
}
