//! The `thermostat-server` binary: everything happens in the library's `cli` module.

fn main() -> std::process::ExitCode {
    let status = thermostat_server::cli::run(std::env::args_os().skip(1).collect());
    std::process::ExitCode::from(u8::try_from(status).unwrap_or(1))
}
