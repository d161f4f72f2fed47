//! Faults a simulated thermostat can show on request, and the pure decisions behind
//! them: the reply plan for one request, `-1` injection, truncation and the flood
//! governor that locks a device out after too many requests.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::tstat::{Body, Field};

/// A misbehaviour to inject. Several faults combine: delays add up, and any fault
/// that silences a reply wins over the others.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Adds this delay to every reply.
    Slow(Duration),
    /// Adds this delay to replies for one path, for example `/tstat/model`.
    SlowPath { path: String, delay: Duration },
    /// Accepts and reads each request but never replies. The socket stays open
    /// until the client goes away or the fleet stops.
    Hang,
    /// With this probability per `/tstat` reply, some fields read `-1`.
    NegativeOne { probability: f64 },
    /// With this probability per JSON reply, the body is cut short. The
    /// `Content-Length` matches the cut body, so the HTTP layer stays valid.
    TruncatedJson { probability: f64 },
    /// More than `max_requests` requests within `window` lock the device out: it
    /// stops replying and accepting for `lockout`.
    FloodLockout {
        max_requests: u32,
        window: Duration,
        lockout: Duration,
    },
    /// A second connection while one is open is reset instead of waiting.
    RefuseConcurrent,
    /// Replays these replies for `GET /tstat`, in order. After the last one the
    /// script repeats the last reply, or starts again when `cycle` is true.
    Script {
        replies: Vec<ScriptedReply>,
        cycle: bool,
    },
    /// The poll faults of a badly connected unit: each `GET /tstat` hangs with
    /// `hang_probability`, otherwise its reply carries `-1` fields with
    /// `negative_one_probability`. Identity requests are answered, so the unit can be
    /// registered and its poll failures observed.
    Flaky {
        hang_probability: f64,
        negative_one_probability: f64,
    },
    /// Replies to every `GET /tstat` in a way no real unit does, to test the client's
    /// limits. Identity requests get normal replies, so the unit can be registered first.
    Hostile(Hostile),
}

/// A hostile reply to `GET /tstat`.
#[derive(Debug, Clone, PartialEq)]
pub enum Hostile {
    /// Sends the normal reply one byte at a time, this long apart.
    Drip(Duration),
    /// Sends a `200` reply whose body is this many bytes, with a matching
    /// `Content-Length`.
    HugeBody(usize),
    /// Sends a `200` JSON reply whose body is not UTF-8.
    InvalidUtf8,
    /// Sends the JSON body with no status line or headers, as an HTTP/0.9 server does.
    Http09,
    /// Reads the request, then closes the connection with a TCP reset.
    Reset,
}

/// One step of a `Fault::Script`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptedReply {
    /// Delay before the reply, replacing the latency model.
    pub delay: Duration,
    /// HTTP status code of the reply.
    pub status: u16,
    pub body: Reply,
}

/// The body of a scripted reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// This exact body.
    Body(String),
    /// The device's current `/tstat` state, as without a script.
    State,
    /// Keep the connection open and never reply.
    Silent,
}

/// The server's plan for one request after reading it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyPlan {
    /// Delay added to the latency model, or replacing it for a scripted reply.
    pub extra_delay: Duration,
    /// True when a scripted reply sets the whole delay.
    pub replaces_latency: bool,
    pub action: ReplyAction,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReplyAction {
    /// Answer normally, possibly with injected `-1` fields or a cut body.
    Answer {
        status: u16,
        /// A scripted body instead of the generated one.
        body: Option<String>,
        negative_one: bool,
        truncate: bool,
    },
    /// Never reply. Hold the connection until the client leaves.
    Silent,
    /// Reply to `GET /tstat` with this hostile reply.
    Hostile(Hostile),
}

/// Decides the reply for one request to `path` with `method` under `faults`.
/// `script_position` counts the scripted `/tstat` replies already played and is
/// advanced here.
pub fn plan_reply(
    faults: &[Fault],
    method: &str,
    path: &str,
    script_position: &mut usize,
    rng: &mut fastrand::Rng,
) -> ReplyPlan {
    let is_tstat_get = method == "GET" && path == "/tstat";
    let mut plan = ReplyPlan {
        extra_delay: Duration::ZERO,
        replaces_latency: false,
        action: ReplyAction::Answer {
            status: 200,
            body: None,
            negative_one: false,
            truncate: false,
        },
    };
    let mut silent = false;
    let mut negative_one = false;
    let mut truncate = false;
    let mut scripted: Option<(u16, Option<String>)> = None;
    let mut hostile: Option<Hostile> = None;

    for fault in faults {
        match fault {
            Fault::Slow(delay) => plan.extra_delay += *delay,
            Fault::SlowPath { path: slow, delay } if slow == path => plan.extra_delay += *delay,
            Fault::SlowPath { .. } => {}
            Fault::Hang => silent = true,
            Fault::NegativeOne { probability } => {
                negative_one |= is_tstat_get && chance(*probability, rng);
            }
            Fault::TruncatedJson { probability } => truncate |= chance(*probability, rng),
            Fault::FloodLockout { .. } | Fault::RefuseConcurrent => {}
            Fault::Script { replies, cycle } if is_tstat_get => {
                let Some(step) = script_step(replies, *cycle, script_position) else {
                    continue;
                };
                plan.extra_delay += step.delay;
                plan.replaces_latency = true;
                match &step.body {
                    Reply::Body(body) => scripted = Some((step.status, Some(body.clone()))),
                    Reply::State => scripted = Some((step.status, None)),
                    Reply::Silent => silent = true,
                }
            }
            Fault::Script { .. } => {}
            Fault::Flaky {
                hang_probability,
                negative_one_probability,
            } => {
                if is_tstat_get && chance(*hang_probability, rng) {
                    silent = true;
                } else {
                    negative_one |= is_tstat_get && chance(*negative_one_probability, rng);
                }
            }
            Fault::Hostile(kind) if is_tstat_get => hostile = Some(kind.clone()),
            Fault::Hostile(_) => {}
        }
    }

    if silent {
        plan.action = ReplyAction::Silent;
    } else if let Some(kind) = hostile {
        plan.action = ReplyAction::Hostile(kind);
    } else {
        let (status, body) = scripted.unwrap_or((200, None));
        plan.action = ReplyAction::Answer {
            status,
            body,
            negative_one,
            truncate,
        };
    }
    plan
}

fn script_step<'a>(
    replies: &'a [ScriptedReply],
    cycle: bool,
    position: &mut usize,
) -> Option<&'a ScriptedReply> {
    if replies.is_empty() {
        return None;
    }
    let index = if cycle {
        *position % replies.len()
    } else {
        (*position).min(replies.len() - 1)
    };
    *position = position.saturating_add(1);
    replies.get(index)
}

fn chance(probability: f64, rng: &mut fastrand::Rng) -> bool {
    probability > 0.0 && rng.f64() < probability
}

/// Keys that can read `-1` in a `/tstat` reply.
const NEGATIVE_ONE_KEYS: [&str; 9] = [
    "temp", "tmode", "fmode", "override", "hold", "t_heat", "t_cool", "tstate", "fstate",
];

/// Replaces one to three of the body's state fields with `-1`, always including
/// `temp`, the field real units corrupt most.
pub fn inject_negative_one(body: &mut Body, rng: &mut fastrand::Rng) {
    let extra = rng.usize(0..=2);
    for (key, field) in body.0.iter_mut() {
        if *key == "temp" {
            *field = Field::Int(-1);
        }
    }

    let mut candidates: Vec<usize> = body
        .0
        .iter()
        .enumerate()
        .filter(|(_, (key, _))| *key != "temp" && NEGATIVE_ONE_KEYS.contains(key))
        .map(|(index, _)| index)
        .collect();
    rng.shuffle(&mut candidates);
    for index in candidates.into_iter().take(extra) {
        body.0[index].1 = Field::Int(-1);
    }
}

/// Cuts `body` at a random character boundary strictly inside it, so the result
/// is never valid JSON for an object body.
pub fn truncate_body(body: &str, rng: &mut fastrand::Rng) -> String {
    let boundaries: Vec<usize> = body
        .char_indices()
        .map(|(index, _)| index)
        .filter(|index| *index > 0)
        .collect();
    match boundaries.as_slice() {
        [] => String::new(),
        candidates => {
            let cut = candidates[rng.usize(..candidates.len())];
            body[..cut].to_string()
        }
    }
}

/// The bytes of a hostile reply and the way the server writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostileSend {
    /// Write these bytes, then close.
    Bytes(Vec<u8>),
    /// Write `head`, then `padding` spaces, a chunk at a time so the simulator does
    /// not hold the whole body.
    Padded { head: Vec<u8>, padding: usize },
    /// Write these bytes one at a time, `gap` apart.
    Drip { bytes: Vec<u8>, gap: Duration },
    /// Close with a reset and send nothing.
    Reset,
}

/// Builds the bytes of a hostile reply around `tstat`, the device's normal `/tstat` body.
pub fn hostile_reply(kind: &Hostile, tstat: &str) -> HostileSend {
    let head = |length: usize| {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\
             Connection: close\r\n\r\n"
        )
        .into_bytes()
    };
    match kind {
        Hostile::Drip(gap) => HostileSend::Drip {
            bytes: super::http::response(200, "application/json", tstat),
            gap: *gap,
        },
        Hostile::HugeBody(length) => HostileSend::Padded {
            head: head(*length),
            padding: *length,
        },
        Hostile::InvalidUtf8 => {
            let body = b"{\"temp\":7\xff\xfe.5,\"tmode\":\xc3\x28}";
            let mut bytes = head(body.len());
            bytes.extend_from_slice(body);
            HostileSend::Bytes(bytes)
        }
        Hostile::Http09 => HostileSend::Bytes(tstat.as_bytes().to_vec()),
        Hostile::Reset => HostileSend::Reset,
    }
}

/// Verdict of the flood governor for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodVerdict {
    Serve,
    /// This request tripped the governor; a lockout starts now.
    Tripped,
    /// A lockout is in force.
    LockedOut,
}

/// The request-rate governor: more than `max_requests` requests within `window`
/// lock the device out for `lockout`. Memory is bounded by `max_requests + 1`
/// timestamps.
#[derive(Debug, Clone, Default)]
pub struct FloodGovernor {
    recent: VecDeque<Instant>,
    locked_until: Option<Instant>,
}

impl FloodGovernor {
    /// Records a request at `now` under the first `FloodLockout` in `faults`.
    pub fn on_request(&mut self, faults: &[Fault], now: Instant) -> FloodVerdict {
        if self.is_locked(now) {
            return FloodVerdict::LockedOut;
        }
        let Some((max_requests, window, lockout)) = flood_settings(faults) else {
            self.recent.clear();
            return FloodVerdict::Serve;
        };

        while self
            .recent
            .front()
            .is_some_and(|first| now.duration_since(*first) > window)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        while self.recent.len() > max_requests as usize + 1 {
            self.recent.pop_front();
        }

        if self.recent.len() > max_requests as usize {
            self.recent.clear();
            self.locked_until = Some(now + lockout);
            return FloodVerdict::Tripped;
        }
        FloodVerdict::Serve
    }

    pub fn is_locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|until| now < until)
    }

    /// When the current lockout ends, if one is in force at `now`.
    pub fn locked_until(&self, now: Instant) -> Option<Instant> {
        self.locked_until.filter(|until| now < *until)
    }

    /// Ends any lockout and clears the request history, as a power cycle does.
    pub fn reset(&mut self) {
        self.recent.clear();
        self.locked_until = None;
    }
}

fn flood_settings(faults: &[Fault]) -> Option<(u32, Duration, Duration)> {
    faults.iter().find_map(|fault| match fault {
        Fault::FloodLockout {
            max_requests,
            window,
            lockout,
        } => Some((*max_requests, *window, *lockout)),
        _ => None,
    })
}

/// Returns whether `faults` request a reset of a second concurrent connection.
pub fn refuses_concurrent(faults: &[Fault]) -> bool {
    faults
        .iter()
        .any(|fault| matches!(fault, Fault::RefuseConcurrent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_faults_apply_to_tstat_reads_only() {
        let faults = [Fault::Hostile(Hostile::Reset)];
        let mut position = 0;
        let mut rng = fastrand::Rng::with_seed(1);
        let plan = plan_reply(&faults, "GET", "/tstat", &mut position, &mut rng);
        assert_eq!(plan.action, ReplyAction::Hostile(Hostile::Reset));
        let plan = plan_reply(&faults, "GET", "/sys", &mut position, &mut rng);
        assert!(matches!(plan.action, ReplyAction::Answer { .. }));
    }

    #[test]
    fn hostile_replies_are_built_as_named() {
        let tstat = r#"{"temp":70.0}"#;
        let HostileSend::Padded { head, padding } = hostile_reply(&Hostile::HugeBody(1000), tstat)
        else {
            panic!("a huge body is padded");
        };
        let text = String::from_utf8(head).expect("ASCII");
        assert!(text.contains("Content-Length: 1000\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
        assert_eq!(padding, 1000);

        let HostileSend::Bytes(invalid) = hostile_reply(&Hostile::InvalidUtf8, tstat) else {
            panic!("invalid UTF-8 is sent at once");
        };
        let body_at = invalid
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("head")
            + 4;
        assert!(std::str::from_utf8(&invalid[body_at..]).is_err());

        assert_eq!(
            hostile_reply(&Hostile::Http09, tstat),
            HostileSend::Bytes(tstat.as_bytes().to_vec())
        );
        let HostileSend::Drip { bytes, gap } =
            hostile_reply(&Hostile::Drip(Duration::from_secs(1)), tstat)
        else {
            panic!("a drip is paced");
        };
        assert!(bytes.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert_eq!(gap, Duration::from_secs(1));
    }

    fn plan(faults: &[Fault], path: &str) -> ReplyPlan {
        let mut position = 0;
        let mut rng = fastrand::Rng::with_seed(3);
        plan_reply(faults, "GET", path, &mut position, &mut rng)
    }

    #[test]
    fn no_fault_replies_plainly() {
        let plan = plan(&[], "/tstat");
        assert_eq!(plan.extra_delay, Duration::ZERO);
        assert_eq!(
            plan.action,
            ReplyAction::Answer {
                status: 200,
                body: None,
                negative_one: false,
                truncate: false
            }
        );
    }

    #[test]
    fn delays_add_and_hang_wins() {
        let faults = [
            Fault::Slow(Duration::from_millis(100)),
            Fault::SlowPath {
                path: "/tstat/model".to_string(),
                delay: Duration::from_millis(50),
            },
            Fault::Hang,
        ];
        let model = plan(&faults, "/tstat/model");
        assert_eq!(model.extra_delay, Duration::from_millis(150));
        assert_eq!(model.action, ReplyAction::Silent);
        assert_eq!(
            plan(&faults, "/sys").extra_delay,
            Duration::from_millis(100)
        );
    }

    #[test]
    fn negative_one_only_on_tstat() {
        let faults = [Fault::NegativeOne { probability: 1.0 }];
        let tstat = plan(&faults, "/tstat");
        assert!(matches!(
            tstat.action,
            ReplyAction::Answer {
                negative_one: true,
                ..
            }
        ));
        let sys = plan(&faults, "/sys");
        assert!(matches!(
            sys.action,
            ReplyAction::Answer {
                negative_one: false,
                ..
            }
        ));
    }

    #[test]
    fn script_repeats_last_or_cycles() {
        let replies = vec![
            ScriptedReply {
                delay: Duration::from_millis(1),
                status: 200,
                body: Reply::Body("a".to_string()),
            },
            ScriptedReply {
                delay: Duration::from_millis(2),
                status: 500,
                body: Reply::Silent,
            },
        ];
        let mut rng = fastrand::Rng::with_seed(1);
        for (cycle, expected_third) in [
            (false, Duration::from_millis(2)),
            (true, Duration::from_millis(1)),
        ] {
            let faults = [Fault::Script {
                replies: replies.clone(),
                cycle,
            }];
            let mut position = 0;
            let first = plan_reply(&faults, "GET", "/tstat", &mut position, &mut rng);
            let second = plan_reply(&faults, "GET", "/tstat", &mut position, &mut rng);
            let third = plan_reply(&faults, "GET", "/tstat", &mut position, &mut rng);
            assert!(
                matches!(first.action, ReplyAction::Answer { status: 200, body: Some(ref b), .. } if b == "a")
            );
            assert_eq!(second.action, ReplyAction::Silent);
            assert_eq!(third.extra_delay, expected_third, "cycle {cycle}");
        }
    }

    #[test]
    fn script_ignores_other_paths() {
        let faults = [Fault::Script {
            replies: vec![ScriptedReply {
                delay: Duration::ZERO,
                status: 200,
                body: Reply::Silent,
            }],
            cycle: false,
        }];
        assert!(matches!(
            plan(&faults, "/sys").action,
            ReplyAction::Answer { .. }
        ));
    }

    #[test]
    fn negative_one_always_hits_temp() {
        let mut body = Body(vec![
            ("temp", Field::Temp(70.0)),
            ("tmode", Field::Int(1)),
            (
                "time",
                Field::Time {
                    day: 0,
                    hour: 1,
                    minute: 2,
                },
            ),
        ]);
        let mut rng = fastrand::Rng::with_seed(9);
        inject_negative_one(&mut body, &mut rng);
        assert_eq!(body.0[0].1, Field::Int(-1));
        assert!(matches!(body.0[2].1, Field::Time { .. }));
    }

    #[test]
    fn truncated_body_is_invalid_json() {
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..50 {
            let cut = truncate_body("{\"temp\":70.00,\"tmode\":1}", &mut rng);
            assert!(!cut.is_empty());
            assert!(
                serde_json::from_str::<serde_json::Value>(&cut).is_err(),
                "{cut}"
            );
        }
    }

    #[test]
    fn governor_trips_and_recovers() {
        let faults = [Fault::FloodLockout {
            max_requests: 3,
            window: Duration::from_secs(2),
            lockout: Duration::from_secs(60),
        }];
        let mut governor = FloodGovernor::default();
        let start = Instant::now();
        for step in 0..3 {
            let at = start + Duration::from_millis(100 * step);
            assert_eq!(governor.on_request(&faults, at), FloodVerdict::Serve);
        }
        let fourth = start + Duration::from_millis(300);
        assert_eq!(governor.on_request(&faults, fourth), FloodVerdict::Tripped);
        let during = fourth + Duration::from_secs(30);
        assert_eq!(
            governor.on_request(&faults, during),
            FloodVerdict::LockedOut
        );
        let after = fourth + Duration::from_secs(61);
        assert_eq!(governor.on_request(&faults, after), FloodVerdict::Serve);
    }

    #[test]
    fn governor_allows_spaced_requests() {
        let faults = [Fault::FloodLockout {
            max_requests: 3,
            window: Duration::from_secs(2),
            lockout: Duration::from_secs(60),
        }];
        let mut governor = FloodGovernor::default();
        let start = Instant::now();
        for step in 0..20 {
            let at = start + Duration::from_millis(700 * step);
            assert_eq!(
                governor.on_request(&faults, at),
                FloodVerdict::Serve,
                "step {step}"
            );
        }
    }
}
