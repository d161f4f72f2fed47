//! The `thermostat-server simulate` subcommand: parses its options, starts a fleet,
//! prints one line per device and serves until SIGINT or SIGTERM.

use std::ffi::OsString;
use std::fmt;
use std::io::Write as _;
use std::time::Duration;

use async_signal::{Signal, Signals};
use futures_lite::StreamExt;

use super::profile::MODEL_NAMES;
use super::{Fault, Fleet, FleetOptions, Hostile, Latency, ModelProfile};

/// Exit code for invalid usage.
const EXIT_USAGE: i32 = 2;

/// Exit code when the fleet cannot start.
const EXIT_FAILURE: i32 = 1;

const USAGE: &str = "usage: thermostat-server simulate [--count N] [--bind IP] [--base-port P] \
[--latency fast|realistic|MS] [--seed S] [--model NAME]... [--fault INDEX:KIND]... \
[--time-speed F] [--discovery IP:PORT [--discovery-group IP]]";

const HELP: &str = "\
Runs simulated RadioThermostat units, each serving the thermostat HTTP API on its own
port, until SIGINT or SIGTERM. Prints one line per device: ADDRESS UUID MODEL.

Options:
  --count N          number of devices (default 1)
  --bind IP          address every device listens on (default 127.0.0.1)
  --base-port P      port of the first device; device i listens on P+i
                     (default 0: an ephemeral port per device)
  --latency L        reply delay: fast (none), realistic (about 2.5 s for /tstat
                     with a long tail), or a fixed delay in milliseconds (default fast)
  --seed S           seed for uuids, temperatures, delays and faults (default 1)
  --model NAME       model profile; repeat to cycle through several. NAME is one of
                     ct30, ct50 (or 3m50), ct50-v1.09, ct80-revb, ct80-v2.34t, or
                     generic:MODEL_STRING (default: cycle through the first five)
  --fault INDEX:KIND inject a fault into device INDEX (counted from 0); repeatable.
                     KIND is one of:
                       slow=MS                   add MS milliseconds to every reply
                       hang                      read each request, never reply
                       neg1=P                    -1 in /tstat fields with probability P (0 to 1)
                       truncated=P               cut JSON bodies with probability P
                       flood=N/WINDOW_MS/LOCKOUT_MS
                                                 more than N requests in WINDOW_MS lock
                                                 the device out for LOCKOUT_MS
                       refuse-concurrent         reset a second concurrent connection
                       flaky=HANG_P/NEG1_P       hang with HANG_P, else -1 with NEG1_P
                       drip=MS                   send each /tstat reply one byte per MS
                       huge-body=BYTES           answer /tstat with a body of BYTES
                       invalid-utf8              answer /tstat with a body that is not UTF-8
                       http09                    answer /tstat with no status line
                       reset                     reset the connection of each /tstat read
  --time-speed F     simulated seconds per real second for room and clocks (default 1)
  --discovery IP:PORT
                     answer WM-DISCOVER on this UDP address with one WM-NOTIFY per
                     device (default: no responder)
  --discovery-group IP
                     also join this multicast group, such as 239.255.255.250, on the
                     --bind interface (only inside a network namespace or lab network)
  -h, --help         print this help
";

/// Runs `thermostat-server simulate`. `args` are the arguments after the
/// subcommand. Returns the exit code: 0 after a signal or `--help`, 1 when the fleet
/// cannot start, 2 on invalid usage.
pub fn run_cli(args: Vec<OsString>) -> i32 {
    let options = match parse_args(args) {
        Ok(Command::Help) => {
            print!("{HELP}");
            return 0;
        }
        Ok(Command::Run(options)) => options,
        Err(error) => {
            eprintln!("thermostat-server simulate: {error}\n{USAGE}");
            return EXIT_USAGE;
        }
    };

    match run(options) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("thermostat-server simulate: {error}");
            EXIT_FAILURE
        }
    }
}

fn run(options: FleetOptions) -> std::io::Result<()> {
    // Register the handlers first, so a signal sent as soon as the device list
    // appears is not lost.
    let mut signals = Signals::new([Signal::Int, Signal::Term])?;
    let fleet = Fleet::start(options)?;

    let mut stdout = std::io::stdout().lock();
    for device in fleet.devices() {
        writeln!(
            stdout,
            "{} {} {}",
            device.address(),
            device.uuid(),
            device.model()
        )?;
    }
    stdout.flush()?;
    drop(stdout);

    let signal = smol::block_on(signals.next());
    let name = match signal {
        Some(Ok(async_signal::Signal::Term)) => "SIGTERM",
        Some(Ok(async_signal::Signal::Int)) => "SIGINT",
        _ => "a signal",
    };
    log::info!("simulator received {name}; stopping");
    fleet.stop();
    Ok(())
}

/// Action requested on the command line.
#[derive(Debug)]
enum Command {
    Help,
    Run(FleetOptions),
}

/// A usage error, printed with the usage line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UsageError(String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<lexopt::Error> for UsageError {
    fn from(error: lexopt::Error) -> Self {
        Self(error.to_string())
    }
}

fn parse_args(args: Vec<OsString>) -> Result<Command, UsageError> {
    use lexopt::prelude::*;

    let mut options = FleetOptions::default();
    let mut parser = lexopt::Parser::from_args(args);

    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Long("count") => {
                let value = text(&mut parser, "--count")?;
                options.count = parse_count(&value)?;
            }
            Long("bind") => {
                let value = text(&mut parser, "--bind")?;
                options.bind_ip = parse_loopback(&value)?;
            }
            Long("base-port") => {
                let value = text(&mut parser, "--base-port")?;
                options.base_port = parse_value(&value, "--base-port", "a port from 0 to 65535")?;
            }
            Long("latency") => options.latency = parse_latency(&text(&mut parser, "--latency")?)?,
            Long("seed") => {
                let value = text(&mut parser, "--seed")?;
                options.seed = parse_value(&value, "--seed", "an unsigned integer")?;
            }
            Long("model") => options
                .models
                .push(parse_model(&text(&mut parser, "--model")?)?),
            Long("fault") => options
                .faults
                .push(parse_fault(&text(&mut parser, "--fault")?)?),
            Long("time-speed") => {
                let value = text(&mut parser, "--time-speed")?;
                options.time_speed = parse_speed(&value)?;
            }
            Long("discovery") => {
                let value = text(&mut parser, "--discovery")?;
                let expected = "a UDP address such as 127.0.0.1:1900";
                options.discovery = Some(parse_value(&value, "--discovery", expected)?);
            }
            Long("discovery-group") => {
                let value = text(&mut parser, "--discovery-group")?;
                let expected = "an IPv4 multicast group such as 239.255.255.250";
                let group: std::net::Ipv4Addr = parse_value(&value, "--discovery-group", expected)?;
                if !group.is_multicast() {
                    return Err(UsageError(format!(
                        "invalid --discovery-group value {value:?}: expected {expected}"
                    )));
                }
                options.discovery_group = Some(group);
            }
            other => return Err(other.unexpected().into()),
        }
    }

    if options.discovery_group.is_some() && options.discovery.is_none() {
        return Err(UsageError(
            "--discovery-group needs --discovery IP:PORT for the responder".to_string(),
        ));
    }
    if let Some((index, _)) = options
        .faults
        .iter()
        .find(|(index, _)| *index >= options.count)
    {
        return Err(UsageError(format!(
            "invalid --fault device index {index}: expected 0 to {} for --count {}",
            options.count - 1,
            options.count
        )));
    }
    Ok(Command::Run(options))
}

fn text(parser: &mut lexopt::Parser, option: &str) -> Result<String, UsageError> {
    parser.value()?.into_string().map_err(|raw| {
        UsageError(format!(
            "invalid {option} value {raw:?}: expected UTF-8 text"
        ))
    })
}

fn parse_value<T: std::str::FromStr>(
    value: &str,
    option: &str,
    expected: &str,
) -> Result<T, UsageError> {
    value.trim().parse().map_err(|_| {
        UsageError(format!(
            "invalid {option} value {value:?}: expected {expected}"
        ))
    })
}

/// Parses `--bind`, which must be a loopback address or one of the documentation
/// ranges of RFC 5737 (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) that tests use
/// inside their own network namespaces. Simulated thermostats on a site's network
/// would be found by the daemon and by anything else scanning it.
fn parse_loopback(value: &str) -> Result<std::net::IpAddr, UsageError> {
    let address: std::net::IpAddr = parse_value(
        value,
        "--bind",
        "a loopback address such as 127.0.0.1 or 127.0.0.2",
    )?;
    if !address.is_loopback() && !is_documentation_range(address) {
        return Err(UsageError(format!(
            "invalid --bind value {value:?}: simulated thermostats listen only on loopback \
             addresses (127.0.0.0/8 or ::1) or, inside a test's network namespace, on the \
             documentation ranges 192.0.2.0/24, 198.51.100.0/24 and 203.0.113.0/24"
        )));
    }
    Ok(address)
}

fn is_documentation_range(address: std::net::IpAddr) -> bool {
    match address {
        std::net::IpAddr::V4(v4) => matches!(
            v4.octets(),
            [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _]
        ),
        std::net::IpAddr::V6(_) => false,
    }
}

fn parse_count(value: &str) -> Result<usize, UsageError> {
    let count: usize = parse_value(value, "--count", "a device count of at least 1")?;
    if count == 0 {
        return Err(UsageError(format!(
            "invalid --count value {value:?}: expected a device count of at least 1"
        )));
    }
    Ok(count)
}

fn parse_speed(value: &str) -> Result<f64, UsageError> {
    let expected = "a positive number such as 1 or 60";
    let speed: f64 = parse_value(value, "--time-speed", expected)?;
    if !(speed.is_finite() && speed > 0.0) {
        return Err(UsageError(format!(
            "invalid --time-speed value {value:?}: expected {expected}"
        )));
    }
    Ok(speed)
}

fn parse_latency(value: &str) -> Result<Latency, UsageError> {
    match value {
        "fast" => Ok(Latency::Fast),
        "realistic" => Ok(Latency::Realistic),
        millis => {
            let expected = "fast, realistic, or a delay in milliseconds such as 250";
            let millis: u64 = parse_value(millis, "--latency", expected)?;
            Ok(Latency::Fixed(Duration::from_millis(millis)))
        }
    }
}

fn parse_model(value: &str) -> Result<ModelProfile, UsageError> {
    ModelProfile::from_name(value)
        .ok_or_else(|| UsageError(format!("unknown --model {value:?}: expected {MODEL_NAMES}")))
}

fn parse_fault(value: &str) -> Result<(usize, Fault), UsageError> {
    let invalid = |detail: &str| {
        UsageError(format!(
            "invalid --fault {value:?}: {detail}; expected INDEX:KIND such as 0:hang or 1:slow=500 \
             (see --help for every KIND)"
        ))
    };

    let (index, kind) = value
        .split_once(':')
        .ok_or_else(|| invalid("missing ':'"))?;
    let index: usize = index
        .trim()
        .parse()
        .map_err(|_| invalid("the device index is not a number"))?;
    let (name, argument) = match kind.split_once('=') {
        Some((name, argument)) => (name, Some(argument)),
        None => (kind, None),
    };

    let fault = match (name, argument) {
        ("hang", None) => Fault::Hang,
        ("refuse-concurrent", None) => Fault::RefuseConcurrent,
        ("slow", Some(millis)) => Fault::Slow(Duration::from_millis(
            millis
                .parse()
                .map_err(|_| invalid("slow needs milliseconds, as in slow=500"))?,
        )),
        ("neg1", Some(probability)) => Fault::NegativeOne {
            probability: parse_probability(probability)
                .ok_or_else(|| invalid("neg1 needs a probability from 0 to 1"))?,
        },
        ("truncated", Some(probability)) => Fault::TruncatedJson {
            probability: parse_probability(probability)
                .ok_or_else(|| invalid("truncated needs a probability from 0 to 1"))?,
        },
        ("flood", Some(settings)) => parse_flood(settings).ok_or_else(|| {
            invalid("flood needs N/WINDOW_MS/LOCKOUT_MS, as in flood=3/2000/60000")
        })?,
        ("flaky", Some(settings)) => parse_flaky(settings)
            .ok_or_else(|| invalid("flaky needs HANG_P/NEG1_P, as in flaky=0.05/0.1"))?,
        ("drip", Some(millis)) => Fault::Hostile(Hostile::Drip(Duration::from_millis(
            millis
                .parse()
                .map_err(|_| invalid("drip needs milliseconds per byte, as in drip=1000"))?,
        ))),
        ("huge-body", Some(bytes)) => {
            Fault::Hostile(Hostile::HugeBody(bytes.parse().map_err(|_| {
                invalid("huge-body needs a byte count, as in huge-body=10000000")
            })?))
        }
        ("invalid-utf8", None) => Fault::Hostile(Hostile::InvalidUtf8),
        ("http09", None) => Fault::Hostile(Hostile::Http09),
        ("reset", None) => Fault::Hostile(Hostile::Reset),
        _ => return Err(invalid(&format!("unknown fault kind {kind:?}"))),
    };
    Ok((index, fault))
}

fn parse_probability(value: &str) -> Option<f64> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|probability| (0.0..=1.0).contains(probability))
}

fn parse_flood(settings: &str) -> Option<Fault> {
    let parts: Vec<&str> = settings.split('/').collect();
    let [max_requests, window, lockout] = parts.as_slice() else {
        return None;
    };
    Some(Fault::FloodLockout {
        max_requests: max_requests.trim().parse().ok()?,
        window: Duration::from_millis(window.trim().parse().ok()?),
        lockout: Duration::from_millis(lockout.trim().parse().ok()?),
    })
}

fn parse_flaky(settings: &str) -> Option<Fault> {
    let (hang, negative_one) = settings.split_once('/')?;
    Some(Fault::Flaky {
        hang_probability: parse_probability(hang)?,
        negative_one_probability: parse_probability(negative_one)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, UsageError> {
        parse_args(args.iter().map(OsString::from).collect())
    }

    fn options(args: &[&str]) -> FleetOptions {
        match parse(args) {
            Ok(Command::Run(options)) => options,
            other => panic!("expected options for {args:?}, got {other:?}"),
        }
    }

    #[test]
    fn parses_every_option() {
        let parsed = options(&[
            "--count",
            "3",
            "--bind",
            "127.0.0.2",
            "--base-port",
            "18080",
            "--latency",
            "250",
            "--seed",
            "9",
            "--model",
            "ct30",
            "--model",
            "generic:CT55 V9.01",
            "--fault",
            "2:flood=3/2000/60000",
            "--time-speed",
            "60",
        ]);
        assert_eq!(parsed.count, 3);
        assert_eq!(parsed.bind_ip.to_string(), "127.0.0.2");
        assert_eq!(parsed.base_port, 18080);
        assert_eq!(parsed.latency, Latency::Fixed(Duration::from_millis(250)));
        assert_eq!(parsed.seed, 9);
        assert_eq!(parsed.models.len(), 2);
        assert_eq!(parsed.time_speed, 60.0);
        assert_eq!(
            parsed.faults,
            vec![(
                2,
                Fault::FloodLockout {
                    max_requests: 3,
                    window: Duration::from_secs(2),
                    lockout: Duration::from_secs(60)
                }
            )]
        );
    }

    #[test]
    fn parses_fault_kinds() {
        assert_eq!(parse_fault("0:hang"), Ok((0, Fault::Hang)));
        assert_eq!(
            parse_fault("1:refuse-concurrent"),
            Ok((1, Fault::RefuseConcurrent))
        );
        assert_eq!(
            parse_fault("0:slow=500"),
            Ok((0, Fault::Slow(Duration::from_millis(500))))
        );
        assert_eq!(
            parse_fault("0:neg1=0.5"),
            Ok((0, Fault::NegativeOne { probability: 0.5 }))
        );
        assert_eq!(
            parse_fault("0:drip=1000"),
            Ok((0, Fault::Hostile(Hostile::Drip(Duration::from_secs(1)))))
        );
        assert_eq!(
            parse_fault("3:huge-body=10000000"),
            Ok((3, Fault::Hostile(Hostile::HugeBody(10_000_000))))
        );
        assert_eq!(
            parse_fault("1:reset"),
            Ok((1, Fault::Hostile(Hostile::Reset)))
        );
        assert_eq!(
            parse_fault("0:flaky=0.1/0.2"),
            Ok((
                0,
                Fault::Flaky {
                    hang_probability: 0.1,
                    negative_one_probability: 0.2
                }
            ))
        );
    }

    #[test]
    fn bad_values_name_value_and_form() {
        let cases = [
            (&["--count", "zero"][..], "\"zero\""),
            (&["--count", "0"][..], "at least 1"),
            (&["--bind", "localhost"][..], "loopback address"),
            (&["--bind", "0.0.0.0"][..], "only on loopback"),
            (&["--bind", "10.0.0.1"][..], "only on loopback"),
            (&["--bind", "192.168.1.20"][..], "only on loopback"),
            (&["--latency", "slow"][..], "milliseconds"),
            (&["--model", "ct08"][..], "ct30"),
            (&["--fault", "0:boil"][..], "\"boil\""),
            (&["--fault", "hang"][..], "INDEX:KIND"),
            (&["--fault", "0:neg1=2"][..], "probability"),
            (&["--count", "2", "--fault", "5:hang"][..], "index 5"),
            (&["--time-speed", "-1"][..], "positive"),
        ];
        for (args, expected) in cases {
            let error = parse(args).expect_err("invalid usage");
            assert!(error.0.contains(expected), "{args:?}: {error}");
        }
    }

    #[test]
    fn bind_accepts_documentation_range() {
        let Ok(Command::Run(parsed)) = parse(&["--bind", "192.0.2.2"]) else {
            panic!("192.0.2.2 is a documentation address");
        };
        assert_eq!(parsed.bind_ip.to_string(), "192.0.2.2");
    }

    #[test]
    fn help_is_a_command() {
        assert!(matches!(parse(&["--help"]), Ok(Command::Help)));
    }
}
