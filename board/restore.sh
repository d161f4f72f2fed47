#!/usr/bin/env bash
# Restores a backup made by backup.sh, replacing the tables it contains.
#
#   ./restore.sh FILE                from FILE into the PostgreSQL container
#   ./restore.sh --url URL FILE      into any server, with the host's pg_restore
#
# Stop the daemon first (systemctl stop thermostat-server) and start it afterwards:
# it applies any newer migrations at start-up.
set -euo pipefail

url=""
if [ "${1:-}" = "--url" ]; then
    url=${2:?--url needs a PostgreSQL URL}
    shift 2
fi
file=${1:?usage: restore.sh [--url URL] FILE}
if [ ! -r "$file" ]; then
    echo "restore.sh: cannot read $file" >&2
    exit 66
fi

if [ -n "$url" ]; then
    pg_restore --clean --if-exists --no-owner --single-transaction --dbname="$url" "$file"
else
    docker exec -i thermostat-postgres pg_restore --clean --if-exists --no-owner \
        --single-transaction --username=thermostat --dbname=thermostat < "$file"
fi
echo "restore.sh: restored $file" >&2
