#!/usr/bin/env bash
# Installs or upgrades thermostat-server from an unpacked release folder (the folder
# this script is in). Safe to run again: binaries, SQL and units are replaced; the
# config, secrets and database are kept.
#
#   sudo ./install.sh [--site-id ID] [--no-start] [--root DIR]
#
# --site-id ID   site id written into a new config (an existing config is kept)
# --no-start     install files and enable the units, but start nothing
# --root DIR     install into DIR as if it were /, touching only files: no user, no
#                systemctl, no database (for packaging and tests)
set -euo pipefail

source_dir=$(cd "$(dirname "$0")" && pwd)
root=/
site_id=""
start=true

while [ $# -gt 0 ]; do
    case "$1" in
        --site-id) site_id=${2:?--site-id needs a value}; shift 2 ;;
        --no-start) start=false; shift ;;
        --root) root=${2:?--root needs a folder}; shift 2 ;;
        -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ -n "$site_id" ] && ! printf '%s' "$site_id" | grep -Eq '^[a-z0-9_-]{1,64}$'; then
    echo "install.sh: invalid --site-id $site_id: use 1 to 64 of a-z, 0-9, _ and -" >&2
    exit 2
fi
files_only=false
[ "$root" != / ] && files_only=true

prefix="$root/opt/thermostat-server"
etc="$root/etc/thermostat-server"
units="$root/etc/systemd/system"
log() { printf 'install.sh: %s\n' "$*" >&2; }

random_token() {
    od -An -N24 -tx1 /dev/urandom | tr -d ' \n'
}

create_user() {
    if ! getent passwd thermostat >/dev/null; then
        log "creating the system user thermostat"
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin thermostat
    fi
}

install_files() {
    install -d -m 0755 "$prefix/bin" "$prefix/share" "$units"
    install -m 0755 "$source_dir/bin/thermostat-server" "$prefix/bin/thermostat-server"
    rm -rf "$prefix/share/sql" "$prefix/share/board" "$prefix/share/systemd"
    cp -R "$source_dir/share/sql" "$source_dir/share/board" "$source_dir/share/systemd" "$prefix/share/"
    install -m 0644 "$source_dir/README.md" "$source_dir/INSTALL" "$prefix/"
    install -m 0755 "$source_dir/backup.sh" "$source_dir/restore.sh" "$prefix/"
    install -m 0644 "$source_dir"/share/systemd/*.service "$units/"
}

# Writes the site's config and secrets once; later runs keep what the operator edited.
install_site_files() {
    install -d -m 0750 "$etc"
    if [ ! -e "$etc/config.toml" ]; then
        log "writing $etc/config.toml from the template; edit it, then check it with"
        log "  $prefix/bin/thermostat-server check-config $etc/config.toml"
        # systemd passes the secrets through EnvironmentFile=, and the daemon's user
        # cannot read secrets.env itself.
        sed -e 's|^env_file = |# env_file = |' "$source_dir/share/board/config.template.toml" > "$etc/config.toml"
        if [ -n "$site_id" ]; then
            sed -i -e "s|^site_id = .*|site_id = \"$site_id\"|" "$etc/config.toml"
        fi
        chmod 0640 "$etc/config.toml"
    fi
    if [ ! -e "$etc/secrets.env" ]; then
        local password
        password=$(random_token)
        log "writing $etc/secrets.env with a new database password and local API token"
        {
            echo "# Secrets of thermostat-server, read by systemd (EnvironmentFile=)."
            echo "THERMOSTAT_DB_PASSWORD=$password"
            echo "THERMOSTAT_SITE_TOKEN="
            echo "THERMOSTAT_WEATHER_API_KEY="
            echo "THERMOSTAT_API_TOKEN=$(random_token)"
        } > "$etc/secrets.env"
        {
            echo "# First-start settings of the PostgreSQL container."
            echo "POSTGRES_USER=thermostat"
            echo "POSTGRES_DB=thermostat"
            echo "POSTGRES_PASSWORD=$password"
        } > "$etc/postgres.env"
        chmod 0600 "$etc/secrets.env" "$etc/postgres.env"
    fi
}

set_owners() {
    chown root:thermostat "$etc" "$etc/config.toml"
}

enable_units() {
    systemctl daemon-reload
    systemctl enable thermostat-postgres.service thermostat-server.service
    if [ "$start" = true ]; then
        log "starting PostgreSQL; the daemon creates its tables on first start"
        systemctl restart thermostat-postgres.service
        systemctl restart thermostat-server.service
        systemctl --no-pager --lines=5 status thermostat-server.service || true
    fi
}

[ "$files_only" = false ] && create_user
install_files
install_site_files
if [ "$files_only" = false ]; then
    set_owners
    enable_units
fi
log "installed $("$prefix/bin/thermostat-server" --version 2>/dev/null || echo thermostat-server) into $prefix"
