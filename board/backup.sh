#!/usr/bin/env bash
# Writes a backup of the thermostat-server database in pg_dump's custom format.
#
#   ./backup.sh FILE                 from the PostgreSQL container (thermostat-postgres)
#   ./backup.sh --url URL FILE       from any server, with the host's pg_dump
#
# Restore with restore.sh. The daemon may keep running: pg_dump reads a consistent
# snapshot.
set -euo pipefail

url=""
if [ "${1:-}" = "--url" ]; then
    url=${2:?--url needs a PostgreSQL URL}
    shift 2
fi
file=${1:?usage: backup.sh [--url URL] FILE}

if [ -n "$url" ]; then
    pg_dump --format=custom --no-owner --file="$file" "$url"
else
    docker exec thermostat-postgres pg_dump --format=custom --no-owner \
        --username=thermostat thermostat > "$file"
fi
echo "backup.sh: wrote $file ($(stat -c %s "$file") bytes)" >&2
