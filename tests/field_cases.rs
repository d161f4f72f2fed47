//! Field cases for polling and parsing, each played by the simulator against the real
//! device client and polling task. The readings go to a collecting sink, so these
//! tests need no database; `tests/daemon.rs` covers the path into PostgreSQL.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thermostat_server::clock::SystemClock;
use thermostat_server::desired::{Controller, Policy};
use thermostat_server::device::{DeviceLink, LinkOptions, ModelProfile, ProgramKind};
use thermostat_server::health::Health;
use thermostat_server::poll::schedule::ScheduleOptions;
use thermostat_server::poll::{
    PollContext, ReadingSink, StatusBoard, ThermostatStatus, poll_thermostat, poll_with_controller,
};
use thermostat_server::reading::{PollFailure, Reading, Tmode};
use thermostat_server::shutdown::Shutdown;
use thermostat_server::simulator::{
    self, Fault, Fleet, FleetOptions, Reply, ScriptedReply, SimStats,
};
use thermostat_server::thermostat::{DeviceAddress, ThermostatId};
use thermostat_server::weather::OutsideTemperature;

#[derive(Default)]
struct CollectingSink {
    readings: Mutex<Vec<Reading>>,
    failures: Mutex<Vec<PollFailure>>,
}

impl ReadingSink for CollectingSink {
    fn submit_reading(&self, reading: Reading) {
        self.readings.lock().expect("sink lock").push(reading);
    }

    fn submit_failure(&self, failure: PollFailure) {
        self.failures.lock().expect("sink lock").push(failure);
    }
}

/// What one polling run produced.
struct PollRun {
    readings: Vec<Reading>,
    failures: Vec<PollFailure>,
    status: ThermostatStatus,
    stats: SimStats,
}

/// Timing for a run scaled down from the field's seconds.
struct Timing {
    interval: Duration,
    link: LinkOptions,
    run_for: Duration,
}

fn fast_timing(run_for: Duration) -> Timing {
    Timing {
        interval: Duration::from_millis(300),
        link: LinkOptions {
            request_timeout: Duration::from_secs(2),
            min_request_gap: Duration::from_millis(50),
            program_gap: Duration::ZERO,
        },
        run_for,
    }
}

fn one_device(model: simulator::ModelProfile, faults: Vec<Fault>) -> Fleet {
    let options = FleetOptions {
        count: 1,
        models: vec![model],
        faults: faults.into_iter().map(|fault| (0, fault)).collect(),
        ..FleetOptions::default()
    };
    Fleet::start(options).expect("simulated fleet starts on loopback")
}

fn script(replies: Vec<(u64, Reply)>, cycle: bool) -> Fault {
    let replies = replies
        .into_iter()
        .map(|(delay_ms, body)| ScriptedReply {
            delay: Duration::from_millis(delay_ms),
            status: 200,
            body,
        })
        .collect();
    Fault::Script { replies, cycle }
}

fn body(text: &str) -> Reply {
    Reply::Body(text.to_string())
}

/// Polls the fleet's only device with the real polling task until `timing.run_for`
/// has passed.
fn poll_for(fleet: &Fleet, timing: Timing) -> PollRun {
    poll_beside(fleet, timing, |_| {})
}

/// Builds the context of one poll task with `timing`'s interval.
fn poll_context(
    timing: &Timing,
    sink: Arc<CollectingSink>,
    status: Arc<StatusBoard>,
    shutdown: Shutdown,
) -> Arc<PollContext> {
    Arc::new(PollContext {
        sink,
        health: Arc::new(Health::new(0)),
        clock: Arc::new(SystemClock),
        schedule: ScheduleOptions {
            interval: timing.interval,
            max_backoff: timing.interval * 8,
            offline_after_failures: 3,
        },
        status,
        outside: Arc::new(OutsideTemperature::disabled()),
        shutdown,
        went_offline: None,
    })
}

/// A poll task lives as long as its thermostat is polled, so its future's size is
/// memory per thermostat: a write or request held inline would cost every thermostat.
#[test]
fn poll_task_future_stays_small() {
    let timing = fast_timing(Duration::from_secs(1));
    let context = poll_context(
        &timing,
        Arc::new(CollectingSink::default()),
        Arc::new(StatusBoard::new()),
        Shutdown::new(),
    );
    let id = ThermostatId::parse("5cdad4000001").expect("valid uuid");
    let address = DeviceAddress::new(std::net::SocketAddr::from(([127, 0, 0, 1], 9)));
    let link = Arc::new(DeviceLink::new(address, timing.link));

    // The futures are never polled, so nothing is sent.
    let controller = Controller::new(id.clone(), link.clone(), Arc::new(SystemClock), Policy::Off);
    let spawned = poll_with_controller(Arc::new(controller), Instant::now(), context.clone());
    let size = std::mem::size_of_val(&spawned);
    assert!(
        size <= 640,
        "the poll task's future is {size} bytes: box the await that made it grow"
    );

    let without_controller = poll_thermostat(id, link, Instant::now(), context);
    let size = std::mem::size_of_val(&without_controller);
    assert!(
        size <= 768,
        "poll_thermostat's future is {size} bytes: box the await that made it grow"
    );
}

/// Every polled thermostat has one controller for as long as it is polled, commands or
/// not, so state that only a command or a drift needs belongs behind a `Box`.
#[test]
fn controller_stays_small() {
    let size = std::mem::size_of::<Controller>();
    assert!(
        size <= 384,
        "a controller is {size} bytes: box the state that only commands or drift use"
    );
}

/// Like [`poll_for`], with `beside` running on another thread meanwhile, given the
/// link the poller uses.
fn poll_beside(
    fleet: &Fleet,
    timing: Timing,
    beside: impl FnOnce(Arc<DeviceLink>) + Send + 'static,
) -> PollRun {
    let device = &fleet.devices()[0];
    let sink = Arc::new(CollectingSink::default());
    let status = Arc::new(StatusBoard::new());
    let shutdown = Shutdown::new();
    let context = poll_context(&timing, sink.clone(), status.clone(), shutdown.clone());

    let id = ThermostatId::parse(device.uuid()).expect("simulator uuid is valid");
    let link = Arc::new(DeviceLink::new(
        DeviceAddress::new(device.address()),
        timing.link,
    ));
    let side_link = link.clone();
    let side = std::thread::spawn(move || beside(side_link));
    let stopper = shutdown.clone();
    let run_for = timing.run_for;
    let timer = std::thread::spawn(move || {
        std::thread::sleep(run_for);
        stopper.trigger();
    });
    smol::block_on(poll_thermostat(id.clone(), link, Instant::now(), context));
    timer.join().expect("timer thread");
    side.join().expect("side thread");

    let readings = std::mem::take(&mut *sink.readings.lock().expect("sink lock"));
    let failures = std::mem::take(&mut *sink.failures.lock().expect("sink lock"));
    PollRun {
        readings,
        failures,
        status: status.get(&id).unwrap_or_default(),
        stats: device.handle().stats(),
    }
}

fn temps(run: &PollRun) -> Vec<Option<f64>> {
    run.readings
        .iter()
        .map(|reading| reading.state.temp)
        .collect()
}

// BL-01: a CT80 V2.34T replies to /tstat after 16.2 s and reports program_mode -1.
#[test]
fn slow_ct80_answer_within_default_deadline() {
    let reply = r#"{"temp":66.50,"tmode":1,"fmode":0,"override":0,"hold":0,"t_heat":67.00,"program_mode":-1,"tstate":0,"fstate":0,"time":{"day":2,"hour":7,"minute":5},"t_type_post":0}"#;
    let fleet = one_device(
        simulator::ModelProfile::Ct80V234T,
        vec![script(vec![(16_200, body(reply))], false)],
    );
    let timing = Timing {
        interval: Duration::from_secs(5),
        link: LinkOptions::default(),
        run_for: Duration::from_millis(17_500),
    };
    assert!(timing.link.request_timeout >= Duration::from_secs(20));

    let run = poll_for(&fleet, timing);
    assert_eq!(run.readings.len(), 1, "failures: {:?}", run.failures);
    assert_eq!(run.readings[0].state.temp, Some(66.5));
    assert_eq!(run.readings[0].state.t_heat, Some(67.0));
    assert!(run.failures.is_empty());
    assert!(run.status.online);
}

// BL-02 / BL-23: latency drawn from {2.3 s x 8, 3.1 s, 11.0 s}, one call in 20 silent;
// scaled down 20 times.
#[test]
fn flapping_device_never_overlapped_nor_offline() {
    let mut replies = Vec::new();
    for round in 0..2 {
        replies.extend((0..8).map(|_| (115, Reply::State)));
        replies.push((155, Reply::State));
        replies.push(if round == 1 {
            (0, Reply::Silent)
        } else {
            (550, Reply::State)
        });
    }
    let fleet = one_device(simulator::ModelProfile::Ct50, vec![script(replies, true)]);
    let timing = Timing {
        interval: Duration::from_millis(750),
        link: LinkOptions {
            request_timeout: Duration::from_millis(1250),
            min_request_gap: Duration::from_millis(50),
            program_gap: Duration::ZERO,
        },
        run_for: Duration::from_secs(17),
    };

    let run = poll_for(&fleet, timing);
    assert_eq!(run.stats.overlapping_requests, 0);
    assert_eq!(run.stats.max_concurrent_connections, 1);
    assert!(
        run.stats
            .min_gap
            .is_some_and(|gap| gap >= Duration::from_millis(45)),
        "{:?}",
        run.stats.min_gap
    );
    assert!(
        !run.failures.is_empty(),
        "the silent reply should have timed out"
    );
    assert_eq!(run.status.offline_transitions, 0);
    assert!(
        run.readings.len() >= 15,
        "only {} readings",
        run.readings.len()
    );
}

// BL-04: the first request is accepted and gets no reply.
#[test]
fn hung_request_abandoned_then_next_poll_succeeds() {
    let reply = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/device/tstat__3m50__heat-hold.json"
    ))
    .expect("fixture");
    let fleet = one_device(
        simulator::ModelProfile::Ct50,
        vec![script(vec![(0, Reply::Silent), (240, body(&reply))], false)],
    );
    let mut timing = fast_timing(Duration::from_secs(3));
    timing.link.request_timeout = Duration::from_secs(1);

    let run = poll_for(&fleet, timing);
    assert_eq!(
        run.failures.first().map(|failure| failure.kind),
        Some("timeout")
    );
    assert!(
        run.readings.len() >= 2,
        "only {} readings",
        run.readings.len()
    );
    assert_eq!(run.readings[0].state.t_heat, Some(70.0));
    assert_eq!(
        run.stats.overlapping_requests, 0,
        "the hung connection was not closed"
    );
}

// BL-07 / BL-17: no setpoint key in auto, and t_heat reported while in cool mode.
#[test]
fn missing_and_mismatched_setpoint_keys() {
    let auto = r#"{"temp":73.00,"tmode":3,"fmode":0,"override":0,"hold":0,"tstate":0,"fstate":0,"time":{"day":4,"hour":12,"minute":0},"t_type_post":0}"#;
    let cool = r#"{"temp":73.00,"tmode":2,"fmode":0,"override":0,"hold":0,"t_heat":68.00,"tstate":0,"fstate":0,"time":{"day":4,"hour":12,"minute":5},"t_type_post":0}"#;
    let fleet = one_device(
        simulator::ModelProfile::Ct80RevB,
        vec![script(vec![(0, body(auto)), (0, body(cool))], false)],
    );

    let run = poll_for(&fleet, fast_timing(Duration::from_millis(1000)));
    assert!(
        run.readings.len() >= 2,
        "only {} readings",
        run.readings.len()
    );
    let (first, second) = (&run.readings[0].state, &run.readings[1].state);
    assert_eq!(first.tmode, Some(Tmode::Auto));
    assert_eq!((first.t_heat, first.t_cool), (None, None));
    assert_eq!(second.tmode, Some(Tmode::Cool));
    assert_eq!(second.t_heat, Some(68.0));
    assert_eq!(second.t_cool, None);
}

// BL-09: temperatures 71, 71, -1, 71.5, -1, -1, 71.5.
#[test]
fn negative_one_temperature_becomes_missing() {
    let reading = |temp: &str| {
        format!(
            r#"{{"temp":{temp},"tmode":1,"fmode":0,"override":0,"hold":0,"t_heat":70.00,"tstate":0,"fstate":0,"time":{{"day":1,"hour":8,"minute":0}},"t_type_post":0}}"#
        )
    };
    let sequence = ["71.00", "71.00", "-1", "71.50", "-1", "-1", "71.50"];
    let replies = sequence
        .iter()
        .map(|temp| (0, body(&reading(temp))))
        .collect();
    let fleet = one_device(simulator::ModelProfile::Ct50, vec![script(replies, false)]);

    let run = poll_for(&fleet, fast_timing(Duration::from_millis(2300)));
    assert!(
        run.readings.len() >= 7,
        "only {} readings",
        run.readings.len()
    );
    let expected = [
        Some(71.0),
        Some(71.0),
        None,
        Some(71.5),
        None,
        None,
        Some(71.5),
    ];
    assert_eq!(temps(&run)[..7], expected);
    assert!(
        run.readings
            .iter()
            .all(|reading| reading.state.t_heat == Some(70.0))
    );
    assert!(run.failures.is_empty());
}

// BL-10: a half-degree setpoint under a temporary override.
#[test]
fn half_degree_setpoint_stored_exactly() {
    let reply = r#"{"temp":68.00,"tmode":1,"fmode":0,"override":1,"hold":0,"t_heat":68.50,"tstate":1,"fstate":1,"time":{"day":5,"hour":21,"minute":40},"t_type_post":0}"#;
    let fleet = one_device(
        simulator::ModelProfile::Ct50,
        vec![script(vec![(0, body(reply))], false)],
    );

    let run = poll_for(&fleet, fast_timing(Duration::from_millis(500)));
    let state = &run.readings.first().expect("one reading").state;
    assert_eq!(state.t_heat, Some(68.5));
    assert_eq!(state.override_active, Some(true));
}

// BL-19: an unknown model string is registered with the generic profile.
#[test]
fn unknown_model_identified_as_generic() {
    let fleet = one_device(
        simulator::ModelProfile::Generic("CT55 V9.01".into()),
        Vec::new(),
    );
    let device = &fleet.devices()[0];
    let link = DeviceLink::new(
        DeviceAddress::new(device.address()),
        fast_timing(Duration::ZERO).link,
    );

    let identity = smol::block_on(link.identify()).expect("the device identifies itself");
    assert_eq!(identity.model, "CT55 V9.01");
    assert_eq!(identity.profile, ModelProfile::Generic);
    assert_eq!(identity.sys.uuid.as_str(), device.uuid());
}

// Faults of the same kind: a body cut short and random -1 fields.
#[test]
fn truncated_body_is_a_failure_and_polling_continues() {
    let fleet = one_device(
        simulator::ModelProfile::Ct50,
        vec![Fault::TruncatedJson { probability: 0.5 }],
    );

    let run = poll_for(&fleet, fast_timing(Duration::from_millis(4000)));
    assert!(
        run.failures.iter().any(|failure| failure.kind == "parse"),
        "{:?}",
        run.failures
    );
    assert!(!run.readings.is_empty());
    assert_eq!(
        run.readings.len() + run.failures.len(),
        run.status.polls as usize
    );
}

// A program read is slow and makes some units chatter their relay, so it needs quiet
// before and after (15 s in the field, 1.5 s here), and polls never read a program.
#[test]
fn program_read_keeps_quiet_gaps() {
    let fleet = one_device(simulator::ModelProfile::Ct80RevB, Vec::new());
    let program_gap = Duration::from_millis(1500);
    let timing = Timing {
        interval: Duration::from_millis(300),
        link: LinkOptions {
            program_gap,
            ..fast_timing(Duration::ZERO).link
        },
        run_for: Duration::from_secs(7),
    };

    let run = poll_beside(&fleet, timing, |link| {
        std::thread::sleep(Duration::from_secs(2));
        let program = smol::block_on(link.read_program(ProgramKind::Heat));
        assert!(program.is_ok(), "program read failed: {program:?}");
    });

    assert_eq!(run.stats.requests_to("/tstat/program/heat"), 1);
    assert_eq!(run.stats.requests_to("/tstat/program/cool"), 0);
    assert_eq!(run.stats.overlapping_requests, 0);
    let spans: Vec<_> = run.stats.requests.iter().collect();
    let at = spans
        .iter()
        .position(|span| span.path == "/tstat/program/heat")
        .expect("the simulator logged the program request");
    assert!(at > 0, "no poll before the program read: {spans:?}");
    assert!(
        at + 1 < spans.len(),
        "no poll after the program read: {spans:?}"
    );
    let before = spans[at].start - spans[at - 1].end;
    let after = spans[at + 1].start - spans[at].end;
    let least = program_gap - Duration::from_millis(100);
    assert!(
        before >= least,
        "only {before:?} of quiet before the program read"
    );
    assert!(
        after >= least,
        "only {after:?} of quiet after the program read"
    );
    assert!(
        run.readings.len() >= 6,
        "polling went on around the program read: {} readings",
        run.readings.len()
    );
}
