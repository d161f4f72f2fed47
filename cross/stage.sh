#!/usr/bin/env bash
# Lays out a release folder from a built binary, the layout the tarball and
# board/install.sh share:
#   cross/stage.sh BINARY DEST
# DEST/bin/thermostat-server, DEST/share/{sql,board,systemd}, and at the top the
# install, backup and restore scripts, README.md and INSTALL.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 BINARY DEST" >&2
    exit 2
fi
binary=$1
stage=$2
root=$(cd "$(dirname "$0")/.." && pwd)

rm -rf "$stage"
mkdir -p "$stage/bin" "$stage/share/sql" "$stage/share/board/sites" "$stage/share/systemd"
install -m 0755 "$binary" "$stage/bin/thermostat-server"
install -m 0644 "$root"/sql/*.sql "$stage/share/sql/"
install -m 0644 "$root/board/config.template.toml" "$root/board/secrets.env.example" "$stage/share/board/"
install -m 0644 "$root"/board/sites/*.toml "$stage/share/board/sites/"
install -m 0644 "$root"/systemd/*.service "$stage/share/systemd/"
install -m 0755 "$root/board/install.sh" "$root/board/backup.sh" "$root/board/restore.sh" "$stage/"
install -m 0644 "$root/README.md" "$root/board/INSTALL" "$stage/"
