//! Parsing a request URL into what the connection needs, and redacting URLs for logs.

use super::NetError;

/// Connection parameters of one request, taken from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub tls: bool,
    /// Host name or IP address, without the brackets of an IPv6 literal.
    pub host: String,
    pub port: u16,
    /// Value of the `Host` header: the host as written, with the port when the URL has one.
    pub host_header: String,
    /// Origin-form request target, `/path?query`.
    pub path_and_query: String,
}

/// Parses an absolute `http://` or `https://` URL.
pub(crate) fn parse_target(url: &str) -> Result<Target, NetError> {
    let redacted = redact_url(url);
    let uri: http::Uri = url
        .parse()
        .map_err(|error| NetError::InvalidUrl(format!("{redacted}: {error}")))?;

    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        Some(other) => {
            return Err(NetError::InvalidUrl(format!(
                "{redacted}: scheme {other} is not supported; use http or https"
            )));
        }
        None => {
            return Err(NetError::InvalidUrl(format!(
                "{redacted}: the URL has no scheme; start it with http:// or https://"
            )));
        }
    };

    let Some(authority) = uri.authority() else {
        return Err(NetError::InvalidUrl(format!(
            "{redacted}: the URL has no host"
        )));
    };
    if authority.as_str().contains('@') {
        return Err(NetError::InvalidUrl(format!(
            "{redacted}: credentials in the URL are not supported; send them in a header"
        )));
    }

    let written_host = authority.host();
    let host = written_host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(NetError::InvalidUrl(format!(
            "{redacted}: the URL has no host"
        )));
    }
    let default_port = if tls { 443 } else { 80 };
    let port = authority.port_u16().unwrap_or(default_port);
    let host_header = match authority.port_u16() {
        Some(port) => format!("{written_host}:{port}"),
        None => written_host.to_string(),
    };

    let path_and_query = uri
        .path_and_query()
        .map(|value| value.as_str())
        .filter(|value| !value.is_empty())
        .unwrap_or("/")
        .to_string();

    Ok(Target {
        tls,
        host: host.to_string(),
        port,
        host_header,
        path_and_query,
    })
}

/// Returns `url` without its query string, fragment and userinfo, for logs and error
/// messages: query strings carry API keys (`appid=`) and userinfo carries passwords.
/// Works on any string, valid URL or not.
pub fn redact_url(url: &str) -> String {
    let without_query = match url.find(['?', '#']) {
        Some(end) => &url[..end],
        None => url,
    };

    let Some(scheme_end) = without_query.find("://") else {
        return without_query.to_string();
    };
    let authority_start = scheme_end + 3;
    let rest = &without_query[authority_start..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];

    match authority.rfind('@') {
        Some(at) => format!(
            "{}{}{}",
            &without_query[..authority_start],
            &authority[at + 1..],
            &rest[authority_end..]
        ),
        None => without_query.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_drops_query() {
        let redacted = redact_url("https://api.example/data?zip=02134,US&appid=SECRET");
        assert_eq!(redacted, "https://api.example/data");
    }

    #[test]
    fn redact_drops_fragment() {
        assert_eq!(redact_url("http://host/a#key=SECRET"), "http://host/a");
    }

    #[test]
    fn redact_drops_userinfo() {
        let redacted = redact_url("https://user:SECRET@host:8443/path?x=1");
        assert_eq!(redacted, "https://host:8443/path");
    }

    #[test]
    fn redact_keeps_plain_url() {
        assert_eq!(redact_url("http://127.0.0.1:80/x"), "http://127.0.0.1:80/x");
    }

    #[test]
    fn redact_handles_non_url() {
        assert_eq!(redact_url("not a url?appid=SECRET"), "not a url");
    }

    #[test]
    fn target_defaults_https_port() {
        let target = parse_target("https://example.org/x?y=1").expect("valid URL");
        assert_eq!(target.port, 443);
        assert!(target.tls);
        assert_eq!(target.path_and_query, "/x?y=1");
        assert_eq!(target.host_header, "example.org");
    }

    #[test]
    fn target_defaults_http_port() {
        let target = parse_target("http://example.org").expect("valid URL");
        assert_eq!(target.port, 80);
        assert!(!target.tls);
        assert_eq!(target.path_and_query, "/");
    }

    #[test]
    fn target_keeps_explicit_port_in_host_header() {
        let target = parse_target("http://127.0.0.1:8081/tstat").expect("valid URL");
        assert_eq!(target.port, 8081);
        assert_eq!(target.host_header, "127.0.0.1:8081");
    }

    #[test]
    fn target_strips_ipv6_brackets() {
        let target = parse_target("http://[::1]:9000/").expect("valid URL");
        assert_eq!(target.host, "::1");
        assert_eq!(target.host_header, "[::1]:9000");
    }

    #[test]
    fn target_rejects_other_scheme() {
        let error = parse_target("ftp://host/file").expect_err("ftp is not supported");
        assert!(matches!(error, NetError::InvalidUrl(_)));
    }

    #[test]
    fn target_rejects_relative_url() {
        let error = parse_target("/data?appid=SECRET").expect_err("no scheme");
        assert!(!error.to_string().contains("SECRET"));
    }

    #[test]
    fn target_rejects_userinfo_without_leaking() {
        let error = parse_target("https://user:SECRET@host/").expect_err("userinfo");
        assert!(!error.to_string().contains("SECRET"));
    }
}
