//! IPv4 address ranges for the TCP scan (`10.0.60.1-10.0.60.254`, `10.0.60.0/24` or a
//! single address) and the plan that splits a scan into batches.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;

/// Most addresses one range may hold: a /20. A larger block is almost always a typo
/// (a /16 would take hours at the devices' pace) and is rejected with that advice.
pub const MAX_RANGE_ADDRESSES: u32 = 4096;

/// An inclusive run of IPv4 addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange {
    first: Ipv4Addr,
    last: Ipv4Addr,
}

/// Error for a range string that cannot be scanned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRange {
    pub text: String,
    pub reason: String,
}

impl fmt::Display for InvalidRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid address range {:?}: {}; expected 10.0.60.1-10.0.60.254, 10.0.60.0/24 \
             or a single address",
            self.text, self.reason
        )
    }
}

impl std::error::Error for InvalidRange {}

impl AddressRange {
    pub fn first(&self) -> Ipv4Addr {
        self.first
    }

    pub fn last(&self) -> Ipv4Addr {
        self.last
    }

    /// Number of addresses in the range.
    pub fn len(&self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }

    /// Always false: a range contains at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> + use<> {
        (u32::from(self.first)..=u32::from(self.last)).map(Ipv4Addr::from)
    }
}

impl FromStr for AddressRange {
    type Err = InvalidRange;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let text = raw.trim();
        let invalid = |reason: String| InvalidRange {
            text: raw.chars().take(80).collect(),
            reason,
        };

        let (first, last) = if let Some((base, prefix)) = text.split_once('/') {
            parse_cidr(base, prefix).map_err(invalid)?
        } else if let Some((start, end)) = text.split_once('-') {
            (
                parse_ip(start).map_err(invalid)?,
                parse_ip(end).map_err(invalid)?,
            )
        } else {
            let single = parse_ip(text).map_err(invalid)?;
            (single, single)
        };

        if u32::from(last) < u32::from(first) {
            return Err(invalid(format!("{last} comes before {first}")));
        }
        let range = AddressRange { first, last };
        if range.len() > MAX_RANGE_ADDRESSES {
            return Err(invalid(format!(
                "{} addresses is more than the limit of {MAX_RANGE_ADDRESSES}; split it into \
                 the subnets that hold thermostats",
                range.len()
            )));
        }
        Ok(range)
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

fn parse_ip(text: &str) -> Result<Ipv4Addr, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{:?} is not an IPv4 address", text.trim()))
}

/// Returns the first and last address of a CIDR block. The host bits of `base` are
/// ignored, so `10.0.60.7/24` is the same block as `10.0.60.0/24`.
fn parse_cidr(base: &str, prefix: &str) -> Result<(Ipv4Addr, Ipv4Addr), String> {
    let base = parse_ip(base)?;
    let bits: u32 = prefix
        .trim()
        .parse()
        .ok()
        .filter(|bits| *bits <= 32)
        .ok_or_else(|| format!("prefix length {:?} is not 0 to 32", prefix.trim()))?;

    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    let network = u32::from(base) & mask;
    Ok((Ipv4Addr::from(network), Ipv4Addr::from(network | !mask)))
}

/// Splits the addresses of `ranges` into batches of at most `batch_size` socket
/// addresses on `port`, skipping repeats, in the order the ranges list them.
pub fn plan_batches(ranges: &[AddressRange], port: u16, batch_size: usize) -> Vec<Vec<SocketAddr>> {
    let batch_size = batch_size.max(1);
    let mut seen = std::collections::HashSet::new();
    let targets: Vec<SocketAddr> = ranges
        .iter()
        .flat_map(AddressRange::addresses)
        .filter(|ip| seen.insert(*ip))
        .map(|ip| SocketAddr::from((ip, port)))
        .collect();
    targets
        .chunks(batch_size)
        .map(<[SocketAddr]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(text: &str) -> AddressRange {
        text.parse().expect("valid range")
    }

    #[test]
    fn dash_range_parses() {
        let parsed = range("10.0.60.1-10.0.60.254");
        assert_eq!(parsed.first(), Ipv4Addr::new(10, 0, 60, 1));
        assert_eq!(parsed.len(), 254);
    }

    #[test]
    fn cidr_block_parses() {
        let parsed = range("10.0.60.0/24");
        assert_eq!(parsed.last(), Ipv4Addr::new(10, 0, 60, 255));
        assert_eq!(parsed.len(), 256);
    }

    #[test]
    fn cidr_ignores_host_bits() {
        assert_eq!(range("10.0.60.7/24"), range("10.0.60.0/24"));
    }

    #[test]
    fn single_address_parses() {
        assert_eq!(range(" 10.0.60.21 ").len(), 1);
    }

    #[test]
    fn slash_32_is_one_address() {
        assert_eq!(range("10.0.60.21/32").len(), 1);
    }

    #[test]
    fn range_crosses_octet_boundary() {
        let addresses: Vec<Ipv4Addr> = range("10.0.60.254-10.0.61.1").addresses().collect();
        assert_eq!(addresses.len(), 4);
        assert_eq!(addresses[2], Ipv4Addr::new(10, 0, 61, 0));
    }

    #[test]
    fn reversed_range_rejected() {
        let error = "10.0.60.9-10.0.60.1"
            .parse::<AddressRange>()
            .expect_err("reversed");
        assert!(error.to_string().contains("comes before"), "{error}");
    }

    #[test]
    fn oversized_block_rejected() {
        let error = "10.0.0.0/16"
            .parse::<AddressRange>()
            .expect_err("too large");
        assert!(error.to_string().contains("65536 addresses"), "{error}");
    }

    #[test]
    fn largest_block_accepted() {
        assert_eq!(range("10.0.48.0/20").len(), MAX_RANGE_ADDRESSES);
    }

    #[test]
    fn bad_prefix_rejected() {
        let error = "10.0.60.0/33"
            .parse::<AddressRange>()
            .expect_err("bad prefix");
        assert!(error.to_string().contains("\"33\""), "{error}");
    }

    #[test]
    fn host_name_rejected_with_value() {
        let error = "thermostat.local"
            .parse::<AddressRange>()
            .expect_err("host name");
        assert!(error.to_string().contains("thermostat.local"), "{error}");
    }

    #[test]
    fn ipv6_rejected() {
        assert!("::1".parse::<AddressRange>().is_err());
    }

    #[test]
    fn batches_split_at_size() {
        let batches = plan_batches(&[range("10.0.60.1-10.0.60.10")], 80, 4);
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, [4, 4, 2]);
    }

    #[test]
    fn batches_carry_the_port() {
        let batches = plan_batches(&[range("127.0.0.1")], 18080, 4);
        assert_eq!(batches[0][0], "127.0.0.1:18080".parse().expect("valid"));
    }

    #[test]
    fn batches_skip_overlap() {
        let ranges = [range("10.0.60.1-10.0.60.4"), range("10.0.60.3-10.0.60.6")];
        let total: usize = plan_batches(&ranges, 80, 100).iter().map(Vec::len).sum();
        assert_eq!(total, 6);
    }

    #[test]
    fn no_ranges_no_batches() {
        assert!(plan_batches(&[], 80, 10).is_empty());
    }
}
