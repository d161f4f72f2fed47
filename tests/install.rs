//! The Pi appliance files: install.sh into a scratch root (twice, for upgrades), the
//! systemd units verified inside that root, and a database backup restored elsewhere.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let folder =
        std::env::temp_dir().join(format!("thermostat-install-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir_all(&folder).expect("scratch folder");
    folder
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{command:?} failed with {}: {text}",
        output.status
    );
    text
}

/// Lays out a release folder the way the tarball holds it, around the test binary.
fn stage(folder: &Path) -> PathBuf {
    let release = folder.join("release");
    run(Command::new("bash")
        .arg(repo().join("cross/stage.sh"))
        .arg(env!("CARGO_BIN_EXE_thermostat-server"))
        .arg(&release));
    release
}

fn install_into(release: &Path, root: &Path) -> String {
    run(Command::new("bash").arg(release.join("install.sh")).args([
        "--root",
        root.to_str().expect("utf-8 path"),
        "--site-id",
        "test_site",
    ]))
}

/// Maps each file under `root` to its mode and contents.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    let mut files = BTreeMap::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("read folder") {
            let path = entry.expect("entry").path();
            let metadata = std::fs::symlink_metadata(&path).expect("metadata");
            if metadata.is_dir() {
                folders.push(path);
            } else {
                let relative = path.strip_prefix(root).expect("inside root").to_path_buf();
                let contents = std::fs::read(&path).expect("read file");
                files.insert(relative, (metadata.permissions().mode() & 0o7777, contents));
            }
        }
    }
    files
}

#[test]
fn install_twice_leaves_same_files() {
    let folder = scratch("twice");
    let release = stage(&folder);
    let root = folder.join("root");

    install_into(&release, &root);
    let first = snapshot(&root);
    install_into(&release, &root);
    let second = snapshot(&root);

    assert_eq!(
        first.keys().collect::<Vec<_>>(),
        second.keys().collect::<Vec<_>>()
    );
    assert!(first == second, "a second install changed files");
    let config = String::from_utf8_lossy(&first[Path::new("etc/thermostat-server/config.toml")].1)
        .to_string();
    assert!(config.contains("site_id = \"test_site\""));
    assert!(
        config.contains("# env_file = "),
        "the daemon cannot read secrets.env itself"
    );
    let (mode, secrets) = &first[Path::new("etc/thermostat-server/secrets.env")];
    assert_eq!(*mode, 0o600);
    let token_line = String::from_utf8_lossy(secrets)
        .lines()
        .find(|line| line.starts_with("THERMOSTAT_API_TOKEN="))
        .map(str::to_string)
        .expect("an API token line");
    assert_eq!(token_line.len(), "THERMOSTAT_API_TOKEN=".len() + 48);
    assert!(first.contains_key(Path::new("opt/thermostat-server/bin/thermostat-server")));
    assert!(first.contains_key(Path::new("etc/systemd/system/thermostat-server.service")));
    let _ = std::fs::remove_dir_all(&folder);
}

#[test]
fn installed_config_passes_check() {
    let folder = scratch("check");
    let release = stage(&folder);
    let root = folder.join("root");
    install_into(&release, &root);

    let output = run(Command::new(env!("CARGO_BIN_EXE_thermostat-server"))
        .arg("check-config")
        .arg(root.join("etc/thermostat-server/config.toml")));
    assert!(output.contains(": ok"), "{output}");
    let _ = std::fs::remove_dir_all(&folder);
}

fn write_stub(path: &Path, text: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("stub folder");
    std::fs::write(path, text).expect("write stub");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("stub mode");
}

#[test]
fn units_verify_in_scratch_root() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("systemd-analyze is missing: install the systemd package (.ci/setup does)");
    }
    let folder = scratch("verify");
    let release = stage(&folder);
    let root = folder.join("root");
    install_into(&release, &root);

    // What the units name on a real board: systemd's own units, docker, a shell.
    let systemd_units = root.join("usr/lib/systemd");
    std::fs::create_dir_all(&systemd_units).expect("unit folder");
    run(Command::new("cp")
        .arg("-R")
        .arg("/usr/lib/systemd/system")
        .arg(&systemd_units));
    write_stub(&root.join("usr/bin/docker"), "#!/bin/sh\n", 0o755);
    write_stub(&root.join("bin/sh"), "#!/bin/sh\n", 0o755);
    write_stub(
        &root.join("etc/systemd/system/docker.service"),
        "[Unit]\nDescription=stand-in\n[Service]\nExecStart=/usr/bin/docker\n",
        0o644,
    );

    let output = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("/etc/systemd/system/thermostat-server.service")
        .arg("/etc/systemd/system/thermostat-postgres.service"));
    assert_eq!(
        output.trim(),
        "",
        "systemd-analyze verify reported problems"
    );
    let _ = std::fs::remove_dir_all(&folder);
}

#[test]
fn backup_restores_into_another_database() {
    let source = support::fresh_database_url("backup_source");
    let target = support::fresh_database_url("backup_target");
    let mut client = postgres::Client::connect(&source, postgres::NoTls).expect("connect source");
    client
        .batch_execute(
            "CREATE TABLE readings_copy (id int PRIMARY KEY, temp double precision);
             INSERT INTO readings_copy SELECT n, 60 + n / 10.0 FROM generate_series(1, 500) n;",
        )
        .expect("fill source");

    let folder = scratch("backup");
    let file = folder.join("thermostat.dump");
    run(Command::new("bash")
        .arg(repo().join("board/backup.sh"))
        .args(["--url", &source])
        .arg(&file));
    run(Command::new("bash")
        .arg(repo().join("board/restore.sh"))
        .args(["--url", &target])
        .arg(&file));

    let mut restored = postgres::Client::connect(&target, postgres::NoTls).expect("connect target");
    let row = restored
        .query_one("SELECT count(*), sum(temp) FROM readings_copy", &[])
        .expect("restored table");
    assert_eq!(row.get::<_, i64>(0), 500);
    assert_eq!(
        row.get::<_, f64>(1),
        (1..=500).map(|n| 60.0 + f64::from(n) / 10.0).sum::<f64>()
    );
    let _ = std::fs::remove_dir_all(&folder);
}
