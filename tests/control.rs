//! Settings changes through the real control path against simulated thermostats:
//! rounding, mode-safe setpoints, one request at a time with the gap the device needs,
//! read-back verification and the retry of a dropped hold.

use std::time::Duration;

use serde_json::json;

use thermostat_server::control::{ControlError, PlanError, SettingsChange, apply_change};
use thermostat_server::device::{DeviceLink, LinkOptions, ModelProfile};
use thermostat_server::reading::Tmode;
use thermostat_server::simulator::{self, Fleet, FleetOptions, Mode, PostOptions, SimDevice};
use thermostat_server::thermostat::DeviceAddress;

fn one_device(model: simulator::ModelProfile, post_options: PostOptions) -> Fleet {
    Fleet::start(FleetOptions {
        count: 1,
        models: vec![model],
        post_options,
        ..FleetOptions::default()
    })
    .expect("simulated fleet starts on loopback")
}

fn link_to(device: &SimDevice, gap: Duration) -> DeviceLink {
    let options = LinkOptions {
        request_timeout: Duration::from_secs(5),
        min_request_gap: gap,
        program_gap: Duration::ZERO,
    };
    DeviceLink::new(DeviceAddress::new(device.address()), options)
}

fn change(params: serde_json::Value) -> SettingsChange {
    SettingsChange::from_json(&params).expect("valid change")
}

fn posted(device: &SimDevice) -> Vec<serde_json::Value> {
    let stats = device.handle().stats();
    let bodies = stats
        .post_bodies
        .iter()
        .map(|record| serde_json::from_str(&record.body));
    bodies
        .collect::<Result<_, _>>()
        .expect("POST bodies are JSON")
}

#[test]
fn heat_setpoint_with_hold_applied_and_verified() {
    let fleet = one_device(simulator::ModelProfile::Ct50, PostOptions::default());
    let device = &fleet.devices()[0];
    let link = link_to(device, Duration::from_millis(50));

    let applied = smol::block_on(apply_change(
        &link,
        ModelProfile::Ct50,
        &change(json!({"tmode":1,"t_heat":72.3,"hold":true})),
    ))
    .expect("change applied");

    assert_eq!(applied.state.t_heat, Some(72.5));
    assert_eq!(applied.state.tmode, Some(Tmode::Heat));
    assert_eq!(applied.writes, 1);
    let snapshot = device.handle().snapshot();
    assert_eq!(snapshot.mode, Mode::Heat);
    assert_eq!(snapshot.heat_target, 72.5);
    assert!(snapshot.hold);
    assert_eq!(device.handle().stats().forbidden_writes, 0);
}

// BL-22: on a CT80 Rev B in auto, a body carrying both interior targets applies only
// the first, so they go one at a time, at least 1 s apart, verified with /tstat/ttemp.
#[test]
fn auto_range_sent_as_two_writes() {
    let options = PostOptions {
        only_first_interior_target: true,
        ..PostOptions::default()
    };
    let fleet = one_device(simulator::ModelProfile::Ct80RevB, options);
    let device = &fleet.devices()[0];
    let link = link_to(device, Duration::from_secs(1));
    smol::block_on(apply_change(
        &link,
        ModelProfile::Ct80RevB,
        &change(json!({"tmode":3})),
    ))
    .expect("auto mode set");
    device.handle().reset_stats();

    let applied = smol::block_on(apply_change(
        &link,
        ModelProfile::Ct80RevB,
        &change(json!({"t_heat":66,"t_cool":78})),
    ))
    .expect("range applied");

    assert_eq!(applied.writes, 2);
    assert_eq!(
        posted(device),
        [json!({"it_heat":66.0}), json!({"it_cool":78.0})]
    );
    let stats = device.handle().stats();
    assert!(
        stats
            .min_gap
            .is_some_and(|gap| gap >= Duration::from_millis(950)),
        "{:?}",
        stats.min_gap
    );
    assert_eq!(stats.requests_to("/tstat/ttemp"), 1);
    let snapshot = device.handle().snapshot();
    assert_eq!((snapshot.heat_target, snapshot.cool_target), (66.0, 78.0));
    assert_eq!(snapshot.mode, Mode::Auto);
}

// BL-16: a CT50 in auto cannot take a cool setpoint without switching to cool.
#[test]
fn auto_setpoint_on_ct50_refused_without_writing() {
    // A unit that accepts auto mode but reports a CT50 model string.
    let model = simulator::ModelProfile::Generic("CT50 V1.94".into());
    let fleet = one_device(model, PostOptions::default());
    let device = &fleet.devices()[0];
    device
        .handle()
        .apply_tstat_post(r#"{"tmode":3}"#)
        .expect("simulator accepts auto");
    assert_eq!(device.handle().snapshot().mode, Mode::Auto);
    let link = link_to(device, Duration::from_millis(50));

    let result = smol::block_on(apply_change(
        &link,
        ModelProfile::Ct50,
        &change(json!({"t_cool":75})),
    ));

    assert!(
        matches!(
            result,
            Err(ControlError::Unsupported(
                PlanError::SetpointForOtherMode { .. }
            ))
        ),
        "{result:?}"
    );
    assert!(posted(device).is_empty());
    assert_eq!(device.handle().snapshot().mode, Mode::Auto);
}

// BL-22 (second half): `{"tmode":2,"hold":1}` can clear hold; it is noticed and re-sent.
#[test]
fn dropped_hold_sent_again() {
    let options = PostOptions {
        hold_drop_probability: 1.0,
        ..PostOptions::default()
    };
    let fleet = one_device(simulator::ModelProfile::Ct50, options);
    let device = &fleet.devices()[0];
    device
        .handle()
        .apply_tstat_post(r#"{"tmode":1}"#)
        .expect("simulator accepts heat");
    let link = link_to(device, Duration::from_millis(50));

    let applied = smol::block_on(apply_change(
        &link,
        ModelProfile::Ct50,
        &change(json!({"tmode":2,"hold":1})),
    ))
    .expect("applied after one retry");

    assert_eq!(applied.writes, 2);
    assert_eq!(
        posted(device),
        [json!({"tmode":2,"hold":1}), json!({"hold":1})]
    );
    assert!(device.handle().snapshot().hold);
}

#[test]
fn unreachable_thermostat_is_a_device_error() {
    let fleet = one_device(simulator::ModelProfile::Ct50, PostOptions::default());
    let address = fleet.devices()[0].address();
    fleet.stop();
    let link = DeviceLink::new(
        DeviceAddress::new(address),
        LinkOptions {
            request_timeout: Duration::from_secs(2),
            min_request_gap: Duration::ZERO,
            program_gap: Duration::ZERO,
        },
    );

    let result = smol::block_on(apply_change(
        &link,
        ModelProfile::Ct50,
        &change(json!({"hold":1})),
    ));
    assert!(matches!(result, Err(ControlError::Device(_))), "{result:?}");
}
