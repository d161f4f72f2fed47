//! The Marvell service discovery messages: the WM-DISCOVER request a client sends to
//! the multicast group, and the WM-NOTIFY answer each thermostat unicasts back.
//!
//! The exact WM-NOTIFY layout is unverified (no packet capture is known), so the parser
//! is lenient: header names in any case, LF or CRLF line ends, any header order, and
//! one or more SERVICE/LOCATION pairs.

use std::net::{IpAddr, SocketAddr};

use crate::thermostat::{DEFAULT_DEVICE_PORT, DeviceAddress};

/// The service prefix that every RadioThermostat Wi-Fi module announces.
pub const SYSTEM_SERVICE: &str = "com.marvell.wm.system";

/// Largest WM-NOTIFY datagram read. The reconstructed reply is about 120 bytes, so this
/// leaves room for several SERVICE/LOCATION pairs.
pub const MAX_NOTIFY_BYTES: usize = 2048;

/// Builds the WM-DISCOVER request for the system service, byte for byte as the vendor's
/// sample program sends it.
pub fn discover_request() -> &'static [u8] {
    b"TYPE: WM-DISCOVER\r\nVERSION: 1.0\r\n\r\nservices: com.marvell.wm.system*\r\n\r\n"
}

/// Returns true when `datagram` is a WM-DISCOVER request (any case, either line end).
pub fn is_discover_request(datagram: &[u8]) -> bool {
    message_type(datagram).is_some_and(|kind| kind.eq_ignore_ascii_case("WM-DISCOVER"))
}

/// Builds a WM-NOTIFY answer announcing the system service at `location`, as the
/// simulator sends it.
pub fn notify_message(location: SocketAddr) -> String {
    let host = match location.port() {
        DEFAULT_DEVICE_PORT => location.ip().to_string(),
        _ => location.to_string(),
    };
    format!(
        "TYPE: WM-NOTIFY\r\nVERSION: 1.0\r\nSERVICE: {SYSTEM_SERVICE}:1.0\r\n\
         LOCATION: http://{host}/sys/\r\n\r\n"
    )
}

/// Why a datagram is not a usable WM-NOTIFY answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyError {
    /// The datagram is not text, or has no `TYPE: WM-NOTIFY` header.
    NotNotify(String),
    /// The answer names no LOCATION with an `http://IP[:PORT]/` URL.
    NoLocation,
}

impl std::fmt::Display for NotifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotNotify(found) => write!(
                f,
                "not a WM-NOTIFY answer: expected a \"TYPE: WM-NOTIFY\" header, found {found:?}"
            ),
            Self::NoLocation => {
                f.write_str("WM-NOTIFY answer without a LOCATION of the form http://IP[:PORT]/sys/")
            }
        }
    }
}

impl std::error::Error for NotifyError {}

/// Parses a WM-NOTIFY answer and returns the distinct device addresses of its
/// LOCATION headers, in order. A LOCATION paired with a SERVICE outside the
/// `com.marvell.wm` family is skipped; a LOCATION without any SERVICE is kept.
pub fn parse_notify(datagram: &[u8]) -> Result<Vec<DeviceAddress>, NotifyError> {
    let kind = message_type(datagram);
    if !kind.is_some_and(|kind| kind.eq_ignore_ascii_case("WM-NOTIFY")) {
        let found = String::from_utf8_lossy(&datagram[..datagram.len().min(40)]).into_owned();
        return Err(NotifyError::NotNotify(found));
    }

    let text = String::from_utf8_lossy(datagram);
    let mut addresses = Vec::new();
    let mut last_service: Option<String> = None;
    for (name, value) in headers(&text) {
        if name.eq_ignore_ascii_case("SERVICE") {
            last_service = Some(value.to_string());
            continue;
        }
        if !name.eq_ignore_ascii_case("LOCATION") {
            continue;
        }

        let service_matches = last_service
            .as_deref()
            .is_none_or(|service| service.to_ascii_lowercase().starts_with("com.marvell.wm"));
        if let (true, Some(address)) = (service_matches, location_address(value))
            && !addresses.contains(&address)
        {
            addresses.push(address);
        }
    }

    if addresses.is_empty() {
        return Err(NotifyError::NoLocation);
    }
    Ok(addresses)
}

/// Returns the value of the first `TYPE` header.
fn message_type(datagram: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(datagram).ok()?;
    headers(text)
        .find(|(name, _)| name.eq_ignore_ascii_case("TYPE"))
        .map(|(_, value)| value.to_string())
}

/// Splits `text` into `(name, value)` header pairs on the first `:` of each line, with
/// both trimmed. Lines without a `:` (blank separators) are skipped.
fn headers(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.split('\n')
        .map(|line| line.trim_end_matches('\r'))
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim(), value.trim()))
}

/// Reads the device address out of a LOCATION URL such as `http://10.0.60.21/sys/` or
/// `http://127.0.0.1:8081/sys/`. A host name is rejected: devices announce their IP.
fn location_address(url: &str) -> Option<DeviceAddress> {
    let lower = url.to_ascii_lowercase();
    let rest = lower.strip_prefix("http://")?;
    let host = rest.split('/').next().unwrap_or(rest);
    let socket = match host.parse::<SocketAddr>() {
        Ok(socket) => socket,
        Err(_) => SocketAddr::new(host.parse::<IpAddr>().ok()?, DEFAULT_DEVICE_PORT),
    };
    is_device_address(socket).then(|| DeviceAddress::new(socket))
}

/// Returns true when a device can listen at `socket`. Port 0 and wildcard, multicast or
/// broadcast addresses cannot be a thermostat, and connecting to them would reach this
/// host or nothing, so an announcement of one is ignored.
pub fn is_device_address(socket: SocketAddr) -> bool {
    let ip = socket.ip();
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    socket.port() != 0 && !ip.is_unspecified() && !ip.is_multicast() && !broadcast
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(text: &str) -> DeviceAddress {
        text.parse().expect("valid address")
    }

    #[test]
    fn notify_ignores_addresses_no_device_has() {
        for location in [
            "http://192.168.1.4:0/sys/",
            "http://0.0.0.0/sys/",
            "http://239.255.255.250:1900/sys/",
            "http://255.255.255.255/sys/",
            "http://[::]:80/sys/",
            "http://[ff02::1]:80/sys/",
        ] {
            let datagram = format!("TYPE: WM-NOTIFY\r\nLOCATION: {location}\r\n\r\n");
            assert_eq!(
                parse_notify(datagram.as_bytes()),
                Err(NotifyError::NoLocation),
                "{location}"
            );
        }
        let datagram = "TYPE: WM-NOTIFY\r\nLOCATION: http://0.0.0.0/sys/\r\n\
                        LOCATION: http://127.0.0.1:8080/sys/\r\n\r\n";
        assert_eq!(
            parse_notify(datagram.as_bytes()),
            Ok(vec![address("127.0.0.1:8080")])
        );
    }

    #[test]
    fn request_matches_vendor_bytes() {
        let text = std::str::from_utf8(discover_request()).expect("ASCII");
        assert_eq!(
            text,
            "TYPE: WM-DISCOVER\r\nVERSION: 1.0\r\n\r\nservices: com.marvell.wm.system*\r\n\r\n"
        );
    }

    #[test]
    fn request_is_recognised() {
        assert!(is_discover_request(discover_request()));
    }

    #[test]
    fn lower_case_lf_request_is_recognised() {
        assert!(is_discover_request(b"type:wm-discover\nversion: 1.0\n\n"));
    }

    #[test]
    fn notify_is_not_a_request() {
        assert!(!is_discover_request(b"TYPE: WM-NOTIFY\r\n"));
    }

    #[test]
    fn crlf_notify_parses() {
        let datagram = b"TYPE: WM-NOTIFY\r\nVERSION: 1.0\r\nSERVICE: com.marvell.wm.system:1.0\r\n\
                         LOCATION: http://10.0.60.21/sys/\r\n";
        assert_eq!(parse_notify(datagram), Ok(vec![address("10.0.60.21")]));
    }

    #[test]
    fn lf_lower_case_notify_parses() {
        let datagram = b"type: wm-notify\nversion: 1.0\nservice: com.marvell.wm.system:1.0\n\
                         location:http://10.0.60.22/sys/\n\n";
        assert_eq!(parse_notify(datagram), Ok(vec![address("10.0.60.22")]));
    }

    #[test]
    fn location_keeps_its_port() {
        let datagram = b"TYPE: WM-NOTIFY\r\nLOCATION: http://127.0.0.1:8081/sys/\r\n";
        assert_eq!(parse_notify(datagram), Ok(vec![address("127.0.0.1:8081")]));
    }

    #[test]
    fn several_pairs_give_distinct_addresses() {
        let datagram = b"TYPE: WM-NOTIFY\r\n\
                         SERVICE: com.marvell.wm.system:1.0\r\nLOCATION: http://10.0.60.21/sys/\r\n\
                         SERVICE: com.rtcoa.tstat:1.0\r\nLOCATION: http://10.0.60.99/tstat\r\n\
                         SERVICE: com.marvell.wm.system:1.0\r\nLOCATION: http://10.0.60.21/sys/\r\n\
                         SERVICE: com.marvell.wm.cloud:1.0\r\nLOCATION: http://10.0.60.23/cloud\r\n";
        assert_eq!(
            parse_notify(datagram),
            Ok(vec![address("10.0.60.21"), address("10.0.60.23")])
        );
    }

    #[test]
    fn built_notify_round_trips() {
        let location: SocketAddr = "127.0.0.1:18081".parse().expect("valid");
        let datagram = notify_message(location);
        assert_eq!(
            parse_notify(datagram.as_bytes()),
            Ok(vec![DeviceAddress::new(location)])
        );
    }

    #[test]
    fn built_notify_omits_port_80() {
        let location: SocketAddr = "10.0.60.21:80".parse().expect("valid");
        assert!(notify_message(location).contains("LOCATION: http://10.0.60.21/sys/\r\n"));
    }

    #[test]
    fn other_message_type_rejected() {
        let error = parse_notify(b"HTTP/1.1 200 OK\r\nLOCATION: http://10.0.60.21/\r\n");
        assert!(matches!(error, Err(NotifyError::NotNotify(_))));
    }

    #[test]
    fn binary_datagram_rejected() {
        assert!(matches!(
            parse_notify(&[0xff, 0xfe, 0x00]),
            Err(NotifyError::NotNotify(_))
        ));
    }

    #[test]
    fn host_name_location_rejected() {
        let error = parse_notify(b"TYPE: WM-NOTIFY\nLOCATION: http://thermostat.local/sys/\n");
        assert_eq!(error, Err(NotifyError::NoLocation));
    }

    #[test]
    fn notify_without_location_rejected() {
        let error = parse_notify(b"TYPE: WM-NOTIFY\r\nVERSION: 1.0\r\n");
        assert_eq!(error, Err(NotifyError::NoLocation));
    }
}
