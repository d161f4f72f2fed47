//! Access rules of the API: the `Host` check against DNS rebinding, and the bearer token
//! that requests which change anything need when the API is reachable from the LAN. Pure.

use std::net::SocketAddr;

use crate::config::{ApiConfig, Secret};

use super::reply::Reply;

/// The access rules of one running API.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    /// Host names (lower case, without port) that requests may carry in `Host`.
    allowed_hosts: Vec<String>,
    /// True when `api.listen` is not a loopback address, so other hosts reach the API.
    lan_bound: bool,
    token: Option<Secret>,
}

impl AccessPolicy {
    /// Builds the policy from the `[api]` section, the address actually bound and the
    /// token. `localhost`, the loopback addresses, the configured and bound addresses
    /// and `api.allowed_hosts` are accepted in `Host`.
    pub fn new(api: &ApiConfig, bound: SocketAddr, token: Option<Secret>) -> Self {
        let mut allowed_hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"]
            .iter()
            .map(|name| name.to_string())
            .collect();
        allowed_hosts.push(api.listen.ip().to_string());
        allowed_hosts.push(bound.ip().to_string());
        allowed_hosts.extend(
            api.allowed_hosts
                .iter()
                .map(|name| name.to_ascii_lowercase()),
        );
        allowed_hosts.sort();
        allowed_hosts.dedup();
        Self {
            allowed_hosts,
            lan_bound: !api.listen.ip().is_loopback(),
            token,
        }
    }

    pub fn is_lan_bound(&self) -> bool {
        self.lan_bound
    }

    /// Rejects a `Host` header naming a host this API does not serve: a web page that
    /// rebinds its own DNS name to this address still sends its own name. A request
    /// without `Host` (HTTP/1.0 tools) is accepted, because browsers always send one.
    pub fn check_host(&self, host: Option<&str>) -> Result<(), Reply> {
        let Some(host) = host else {
            return Ok(());
        };
        let name = host_name(host).to_ascii_lowercase();
        if self.allowed_hosts.contains(&name) {
            return Ok(());
        }
        Err(Reply::error(
            403,
            format!(
                "Host {} is not accepted: use the board's address or add the name to api.allowed_hosts",
                super::routes::printable(host)
            ),
        ))
    }

    /// Requires `Authorization: Bearer <token>` on a request that changes something,
    /// when the API is LAN-bound or a token is configured. A LAN-bound API without a
    /// token (which the config check rejects) rejects every such request.
    pub fn check_token(&self, mutating: bool, authorization: Option<&str>) -> Result<(), Reply> {
        if !mutating || (!self.lan_bound && self.token.is_none()) {
            return Ok(());
        }
        let Some(expected) = &self.token else {
            return Err(unauthorized(
                "this API is reachable from the LAN but has no token: set THERMOSTAT_API_TOKEN and restart",
            ));
        };
        let presented = authorization.and_then(bearer_token);
        match presented {
            Some(token) if constant_time_eq(token.as_bytes(), expected.expose().as_bytes()) => {
                Ok(())
            }
            Some(_) => Err(unauthorized("invalid bearer token")),
            None => Err(unauthorized(
                "missing bearer token: send Authorization: Bearer <THERMOSTAT_API_TOKEN>",
            )),
        }
    }
}

fn unauthorized(message: &str) -> Reply {
    Reply::error(401, message).with_header("WWW-Authenticate", "Bearer")
}

/// Returns the host part of a `Host` header: `[::1]:8000` gives `::1`, `pi.local:8000`
/// gives `pi.local`.
fn host_name(host: &str) -> &str {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Returns the token of an `Authorization: Bearer <token>` value; the scheme name is
/// case-insensitive.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// Compares in time that depends on the lengths only, not on where the bytes differ.
pub fn constant_time_eq(presented: &[u8], expected: &[u8]) -> bool {
    let mut difference = presented.len() ^ expected.len();
    for (index, byte) in expected.iter().enumerate() {
        let other = presented.get(index).copied().unwrap_or(0);
        difference |= usize::from(byte ^ other);
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "s3cret-token";

    fn policy(listen: &str, token: Option<&str>) -> AccessPolicy {
        let api = ApiConfig {
            listen: listen.parse().expect("address"),
            allowed_hosts: vec!["Thermostat.Local".to_string()],
        };
        let bound = "127.0.0.1:41234".parse().expect("address");
        AccessPolicy::new(&api, bound, token.map(Secret::new))
    }

    fn lan() -> AccessPolicy {
        policy("192.168.1.20:8000", Some(TOKEN))
    }

    #[test]
    fn loopback_hosts_accepted() {
        for host in ["localhost", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST"] {
            assert!(lan().check_host(Some(host)).is_ok(), "{host}");
        }
    }

    #[test]
    fn configured_names_accepted() {
        assert!(lan().check_host(Some("thermostat.local:8000")).is_ok());
        assert!(lan().check_host(Some("192.168.1.20:8000")).is_ok());
    }

    #[test]
    fn foreign_host_rejected() {
        let reply = lan()
            .check_host(Some("evil.example:8000"))
            .expect_err("rebinding");
        assert_eq!(reply.status, 403);
    }

    #[test]
    fn missing_host_accepted() {
        assert!(lan().check_host(None).is_ok());
    }

    #[test]
    fn reads_need_no_token() {
        assert!(lan().check_token(false, None).is_ok());
    }

    #[test]
    fn lan_change_without_token_is_401() {
        let reply = lan().check_token(true, None).expect_err("no token");
        assert_eq!(reply.status, 401);
    }

    #[test]
    fn lan_change_with_wrong_token_is_401() {
        let reply = lan()
            .check_token(true, Some("Bearer s3cret-tokeX"))
            .expect_err("wrong token");
        assert_eq!(reply.status, 401);
    }

    #[test]
    fn lan_change_with_token_accepted() {
        let header = format!("bearer {TOKEN}");
        assert!(lan().check_token(true, Some(&header)).is_ok());
    }

    #[test]
    fn loopback_without_token_needs_none() {
        assert!(
            policy("127.0.0.1:8000", None)
                .check_token(true, None)
                .is_ok()
        );
    }

    #[test]
    fn loopback_with_token_requires_it() {
        let policy = policy("127.0.0.1:8000", Some(TOKEN));
        assert_eq!(
            policy.check_token(true, None).map_err(|r| r.status),
            Err(401)
        );
    }

    #[test]
    fn lan_without_configured_token_refuses_changes() {
        let policy = policy("0.0.0.0:8000", None);
        assert_eq!(
            policy
                .check_token(true, Some("Bearer x"))
                .map_err(|r| r.status),
            Err(401)
        );
    }

    #[test]
    fn error_never_contains_token() {
        let reply = lan()
            .check_token(true, Some("Bearer nope"))
            .expect_err("wrong");
        assert!(!reply.body.to_string().contains(TOKEN));
    }

    #[test]
    fn constant_time_eq_compares_whole_value() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abd", b"abc"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"abcd", b"abc"));
    }
}
