use super::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/device/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|error| panic!("cannot read {path}: {error}"))
}

fn parse_fixture(name: &str) -> TstatReply {
    parse_tstat(&fixture(name)).unwrap_or_else(|error| panic!("{name}: {error}"))
}

#[test]
fn every_tstat_fixture_parses() {
    let dir = format!("{}/tests/fixtures/device", env!("CARGO_MANIFEST_DIR"));
    let mut parsed = 0;
    for entry in std::fs::read_dir(&dir).expect("fixture folder") {
        let name = entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("utf-8 name");
        if name.starts_with("tstat__") {
            parse_fixture(&name);
            parsed += 1;
        }
    }
    assert!(parsed >= 8, "only {parsed} /tstat fixtures found in {dir}");
}

#[test]
fn heat_hold_fixture_fields() {
    let state = parse_fixture("tstat__3m50__heat-hold.json").state;
    assert_eq!(state.temp, Some(71.0));
    assert_eq!(state.t_heat, Some(70.0));
    assert_eq!(state.t_cool, None);
    assert_eq!(state.tmode, Some(Tmode::Heat));
    assert_eq!(state.fmode, Some(Fmode::Auto));
    assert_eq!(state.tstate, Some(Tstate::Idle));
    assert_eq!(state.hold, Some(true));
    assert_eq!(state.override_active, Some(false));
}

#[test]
fn half_degree_setpoint_kept_exactly() {
    let state = parse_fixture("tstat__heat-setpoint-69.50.json").state;
    assert_eq!(state.t_heat, Some(69.5));

    let override_state = parse_fixture("tstat__ct50-v1.94__heat-override-half-degree.json").state;
    assert_eq!(override_state.temp, Some(67.5));
    assert_eq!(override_state.t_heat, Some(66.5));
    assert_eq!(override_state.override_active, Some(true));
}

#[test]
fn off_mode_without_setpoints_and_one_decimal() {
    let reply = parse_fixture("tstat__ct50-v1.94__off-hold.json");
    assert_eq!(reply.state.temp, Some(77.5));
    assert_eq!(reply.state.tmode, Some(Tmode::Off));
    assert_eq!(reply.state.t_heat, None);
    assert_eq!(reply.state.t_cool, None);
    assert!(
        reply.notes.is_empty(),
        "missing setpoints are normal: {:?}",
        reply.notes
    );
}

#[test]
fn cooling_fixture_uses_cool_setpoint() {
    let state = parse_fixture("tstat__3m50__cooling-active.json").state;
    assert_eq!(state.t_cool, Some(80.0));
    assert_eq!(state.tstate, Some(Tstate::Cooling));
    assert_eq!(state.fstate, Some(true));
}

#[test]
fn program_mode_negative_one_is_not_a_note() {
    // CT80 V2.34T always reports program_mode -1: "not supported", not a read error.
    let reply = parse_fixture("tstat__ct80-v2.34t__program-mode-neg1.json");
    assert_eq!(reply.state.temp, Some(68.5));
    assert_eq!(reply.state.t_heat, Some(70.0));
    assert!(reply.notes.is_empty(), "{:?}", reply.notes);
}

#[test]
fn transient_error_keeps_the_good_fields() {
    let reply = parse_fixture("tstat__transient-error.json");
    assert_eq!(reply.state.temp, None);
    assert_eq!(reply.state.tmode, None);
    assert_eq!(reply.state.fmode, Some(Fmode::On));
    assert_eq!(reply.state.hold, Some(true));
    let noted: Vec<_> = reply.notes.iter().map(|note| note.field).collect();
    assert_eq!(noted, ["temp", "tmode"]);
    assert!(
        reply
            .notes
            .iter()
            .all(|note| note.kind == NoteKind::NegativeOne)
    );
}

#[test]
fn implausible_temperature_dropped_with_note() {
    let reply = parse_tstat(br#"{"temp":0.00,"tmode":1,"t_heat":68.00}"#).expect("usable");
    assert_eq!(reply.state.temp, None);
    assert_eq!(reply.state.t_heat, Some(68.0));
    assert_eq!(
        reply.notes,
        [FieldNote {
            field: "temp",
            kind: NoteKind::OutOfRange(0.0)
        }]
    );
}

#[test]
fn wrong_type_field_does_not_drop_sample() {
    let reply =
        parse_tstat(br#"{"temp":"71.5","tmode":1,"t_heat":{"a":[1]},"hold":null,"fmode":0}"#)
            .expect("usable");
    assert_eq!(reply.state.tmode, Some(Tmode::Heat));
    assert_eq!(reply.state.fmode, Some(Fmode::Auto));
    assert_eq!(reply.notes.len(), 3);
    assert!(
        reply
            .notes
            .iter()
            .all(|note| note.kind == NoteKind::WrongType)
    );
}

#[test]
fn mismatched_setpoint_key_kept_as_reported() {
    // A unit in cool mode that reports t_heat: the value is the heat setpoint, never
    // the cool one.
    let reply = parse_tstat(br#"{"temp":73.00,"tmode":2,"t_heat":68.00}"#).expect("usable");
    assert_eq!(reply.state.t_heat, Some(68.0));
    assert_eq!(reply.state.t_cool, None);
}

#[test]
fn unknown_codes_become_none() {
    let reply = parse_tstat(br#"{"temp":70,"tmode":7,"fmode":1.5,"tstate":-1}"#).expect("usable");
    assert_eq!(reply.state.tmode, None);
    assert_eq!(reply.state.fmode, None);
    assert_eq!(reply.state.tstate, None);
    assert_eq!(reply.notes.len(), 3);
}

#[test]
fn truncated_and_non_object_bodies_rejected() {
    assert!(matches!(
        parse_tstat(br#"{"temp":71.50,"tm"#),
        Err(ParseError::InvalidJson(_))
    ));
    assert_eq!(parse_tstat(b"[1,2]"), Err(ParseError::NotAnObject));
    assert!(matches!(
        parse_tstat(b"<html>404</html>"),
        Err(ParseError::InvalidJson(_))
    ));
    assert!(matches!(
        parse_tstat(b"\xff\xfe{"),
        Err(ParseError::InvalidJson(_))
    ));
    assert_eq!(
        parse_tstat(br#"{"t_type_post":0}"#),
        Err(ParseError::NoThermostatFields)
    );
}

#[test]
fn device_error_objects_reported() {
    assert_eq!(
        parse_tstat(br#"{"error_msg":"Invalid HTTP API"}"#),
        Err(ParseError::ErrorObject("Invalid HTTP API".to_string()))
    );
    assert!(matches!(
        parse_tstat(br#"{"error":-1}"#),
        Err(ParseError::ErrorObject(_))
    ));
}

#[test]
fn post_replies() {
    assert_eq!(
        parse_post_reply(&fixture("post-success__fw1.04-and-later.json")),
        Ok(())
    );
    assert_eq!(parse_post_reply(b"Tstat Command Processed"), Ok(()));
    assert_eq!(
        parse_post_reply(br#"{"error":-1}"#),
        Err(r#"{"error":-1}"#.to_string())
    );
    assert!(parse_post_reply(br#"{"success":1}"#).is_err());
}
