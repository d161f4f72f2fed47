//! The parts the `tstat` and `db` commands share: their options, the config, the
//! database connection and the choice of thermostats.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use lexopt::prelude::*;
use serde_json::{Value, json};

use super::args::{
    parse_duration, parse_fan, parse_hold, parse_mode, parse_setpoint, settings_change,
};
use super::{EXIT_CONFIG, EXIT_USAGE};
use crate::config::{self, Config, EX_NOINPUT};
use crate::store::{self, report};
use crate::thermostat::{ThermostatId, ThermostatRecord};

/// The thermostats a command takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Targets {
    /// None (`tstat list`, `db check`, `db gaps`).
    None,
    /// Exactly one ID.
    One,
    /// One ID or `--all`.
    OneOrAll,
}

/// One subcommand: its name for messages, its usage text and the options it takes.
pub struct Spec {
    pub name: &'static str,
    pub usage: &'static str,
    pub targets: Targets,
    /// Long option names besides `--config` and `--help`.
    pub takes: &'static [&'static str],
    /// True for `tstat set`: the settings are checked with the other options, before
    /// the config is read.
    pub settings: bool,
}

/// The parsed options of one subcommand.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    pub config: PathBuf,
    pub json: bool,
    pub all: bool,
    pub yes: bool,
    pub id: Option<ThermostatId>,
    /// The `tstat set` settings as device fields (`tmode`, `t_heat`, ...).
    pub fields: serde_json::Map<String, Value>,
    pub since: Option<Duration>,
}

/// Picks the subcommand named by `first` among `commands` of `group` (`tstat`, `db`),
/// or returns the exit status: 0 after printing `usage` for `help`, 2 for a missing
/// or unknown command.
pub fn choose<'a>(
    group: &str,
    usage: &str,
    commands: &[&'a Spec],
    first: Option<&OsString>,
) -> Result<&'a Spec, i32> {
    let name = first.map(|first| first.to_string_lossy().to_string());
    let Some(name) = name else {
        eprintln!("thermostat-server {group}: missing command\n\n{usage}");
        return Err(EXIT_USAGE);
    };
    if ["help", "--help", "-h"].contains(&name.as_str()) {
        println!("{usage}");
        return Err(super::EXIT_OK);
    }
    let wanted = format!("{group} {name}");
    commands
        .iter()
        .find(|spec| spec.name == wanted)
        .copied()
        .ok_or_else(|| {
            eprintln!("thermostat-server {group}: unknown command {name:?}\n\n{usage}");
            EXIT_USAGE
        })
}

/// Parses `args` (after the subcommand). `Ok(None)` means `--help` was asked for.
pub fn parse(spec: &Spec, args: Vec<OsString>) -> Result<Option<Options>, String> {
    let mut options = Options::default();
    let mut config = None;
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|error| error.to_string())? {
        let name = match &arg {
            Long(name) => name.to_string(),
            Short('h') => return Ok(None),
            Short('c') => "config".to_string(),
            Value(value) => {
                let text = value.to_string_lossy().to_string();
                if spec.targets == Targets::None || options.id.is_some() {
                    return Err(format!("unexpected argument {text:?}"));
                }
                options.id = Some(ThermostatId::parse(&text).map_err(|error| error.to_string())?);
                continue;
            }
            other => return Err(other.clone().unexpected().to_string()),
        };
        if name == "help" {
            return Ok(None);
        }
        if name != "config" && !spec.takes.contains(&name.as_str()) {
            return Err(format!("--{name} is not an option of {}", spec.name));
        }
        let mut value = || -> Result<String, String> {
            let raw = parser.value().map_err(|error| error.to_string())?;
            Ok(raw.to_string_lossy().to_string())
        };
        match name.as_str() {
            "config" => config = Some(PathBuf::from(value()?)),
            "json" => options.json = true,
            "all" => options.all = true,
            "yes" => options.yes = true,
            "since" => options.since = Some(parse_duration("--since", &value()?)?),
            "mode" => insert(&mut options, "tmode", json!(parse_mode(&value()?)?)),
            "fan" => insert(&mut options, "fmode", json!(parse_fan(&value()?)?)),
            "hold" => insert(&mut options, "hold", json!(parse_hold(&value()?)?)),
            "heat" => insert(
                &mut options,
                "t_heat",
                json!(parse_setpoint("--heat", &value()?)?),
            ),
            "cool" => insert(
                &mut options,
                "t_cool",
                json!(parse_setpoint("--cool", &value()?)?),
            ),
            _ => return Err(format!("--{name} is not an option of {}", spec.name)),
        }
    }

    options.config = config.ok_or_else(|| format!("{} needs --config FILE", spec.name))?;
    match (spec.targets, options.id.is_some(), options.all) {
        (Targets::One, false, _) => Err(format!("{} needs a thermostat ID", spec.name)),
        (Targets::OneOrAll, false, false) => {
            Err(format!("{} needs a thermostat ID or --all", spec.name))
        }
        (Targets::OneOrAll, true, true) => Err("give a thermostat ID or --all, not both".into()),
        _ if spec.settings => settings_change(&options.fields).map(|_| Some(options)),
        _ => Ok(Some(options)),
    }
}

fn insert(options: &mut Options, field: &str, value: Value) {
    options.fields.insert(field.to_string(), value);
}

/// Prints the usage error and returns exit status 2.
pub fn usage_error(spec: &Spec, message: &str) -> i32 {
    eprintln!(
        "thermostat-server {}: {message}\n\n{}",
        spec.name, spec.usage
    );
    EXIT_USAGE
}

/// Parses the subcommand's options and loads the config, or returns the exit status
/// to end with: 0 after `--help`, 2 on bad usage, 66 or 78 on a config problem.
pub fn prepare(spec: &Spec, args: Vec<OsString>) -> Result<(Options, Config), i32> {
    let options = match parse(spec, args) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{}", spec.usage);
            return Err(super::EXIT_OK);
        }
        Err(message) => return Err(usage_error(spec, &message)),
    };
    let path = &options.config;
    if let Err(error) = std::fs::read(path) {
        eprintln!("{}: cannot read the file: {error}", path.display());
        return Err(EX_NOINPUT);
    }
    match config::load(path) {
        Ok(loaded) => Ok((options, loaded.config)),
        Err(errors) => {
            for problem in &errors.problems {
                eprintln!("{}: {problem}", path.display());
            }
            Err(EXIT_CONFIG)
        }
    }
}

/// A subcommand's parsed options, config and database client.
pub struct Session {
    pub spec: &'static Spec,
    pub options: Options,
    pub config: Config,
    pub client: postgres::Client,
}

/// Picks the subcommand, parses its options, loads the config and connects to the
/// database. On failure it returns the exit status to end with, as [`choose`] and
/// [`prepare`] do, or 1 when the database cannot be reached.
pub fn start(
    group: &str,
    usage: &str,
    commands: &[&'static Spec],
    args: Vec<OsString>,
) -> Result<Session, i32> {
    let spec = choose(group, usage, commands, args.first())?;
    let (options, config) = prepare(spec, args[1..].to_vec())?;
    let client = connect(&config).map_err(|message| fail(spec, &message))?;
    Ok(Session {
        spec,
        options,
        config,
        client,
    })
}

/// Prints `message` as the subcommand's error and returns exit status 1.
pub fn fail(spec: &Spec, message: &str) -> i32 {
    eprintln!("thermostat-server {}: {message}", spec.name);
    super::EXIT_FAILURE
}

/// Opens a database client with the daemon's settings.
pub fn connect(config: &Config) -> Result<postgres::Client, String> {
    let options = crate::daemon::store_options(config);
    report::connect(&options).map_err(|error| {
        format!(
            "{error}; check database.url and THERMOSTAT_DB_PASSWORD, and that PostgreSQL runs at {}",
            report::target(&options)
        )
    })
}

/// Loads the thermostats the options name: the ID, or every active one with `--all`.
pub fn load_targets(
    client: &mut postgres::Client,
    options: &Options,
) -> Result<Vec<ThermostatRecord>, String> {
    let overviews = report::thermostats(client, options.id.as_ref()).map_err(describe)?;
    let records: Vec<ThermostatRecord> = overviews
        .into_iter()
        .map(|overview| overview.record)
        .filter(|record| options.id.is_some() || record.active)
        .collect();
    match (&options.id, records.is_empty()) {
        (Some(id), true) => Err(format!(
            "no thermostat with id {id} in the database; tstat list shows the known ids"
        )),
        (None, true) => Err(
            "no active thermostat in the database; run the daemon or discover --register first"
                .to_string(),
        ),
        _ => Ok(records),
    }
}

/// Formats a store error for the terminal.
pub fn describe(error: store::StoreError) -> String {
    error.to_string()
}

/// Prints `value` as indented JSON.
pub fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const SET: Spec = Spec {
        name: "tstat set",
        usage: "",
        targets: Targets::OneOrAll,
        takes: &["all", "yes", "mode", "heat"],
        settings: true,
    };

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn set_options_become_device_fields() {
        let options = parse(
            &SET,
            args(&["--all", "--mode", "heat", "--heat", "68", "-c", "x.toml"]),
        )
        .expect("valid")
        .expect("not help");
        assert!(options.all);
        assert_eq!(options.fields["tmode"], json!(1));
        assert_eq!(options.fields["t_heat"], json!(68.0));
        assert_eq!(options.config, PathBuf::from("x.toml"));
    }

    #[test]
    fn option_of_another_command_rejected() {
        let error =
            parse(&SET, args(&["--all", "--since", "6h", "--config", "x"])).expect_err("--since");
        assert_eq!(error, "--since is not an option of tstat set");
    }

    #[test]
    fn target_rules_enforced() {
        assert!(parse(&SET, args(&["--config", "x"])).is_err());
        assert!(parse(&SET, args(&["abc", "--all", "--config", "x"])).is_err());
        assert!(parse(&SET, args(&["abc", "def", "--config", "x"])).is_err());
        assert!(parse(&SET, args(&["abc", "--mode", "heat"])).is_err());
    }

    #[test]
    fn invalid_settings_rejected_early() {
        let error = parse(&SET, args(&["--all", "--config", "x"])).expect_err("no settings");
        assert!(error.contains("--mode"), "{error}");
        let error =
            parse(&SET, args(&["--all", "--heat", "20", "--config", "x"])).expect_err("20 °F");
        assert!(error.contains("--heat"), "{error}");
    }

    #[test]
    fn help_wins() {
        assert_eq!(parse(&SET, args(&["--help"])), Ok(None));
    }
}
