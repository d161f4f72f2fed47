#!/usr/bin/env bash
# Soak test, not part of `cargo test`: runs the daemon against a simulated fleet with
# hostile and flaky units and a WM-NOTIFY flood, and prints the daemon's memory, open
# file descriptors and threads over time.
#
# Usage: tests/soak.sh [SECONDS] [SAMPLE_SECONDS]
#   SECONDS         how long to run (default 1800)
#   SAMPLE_SECONDS  time between two samples (default 60)
# Environment:
#   SOAK_BIN        the thermostat-server binary (default target/debug/thermostat-server)
#   SOAK_COUNT      simulated thermostats (default 200)
#   SOAK_IP         loopback address of the fleet and the daemon (default 127.0.0.42)
#   SOAK_BASE_PORT  port of the first simulated thermostat (default 24000)
#   SOAK_PG_PORT    port of the throwaway PostgreSQL (default 24400)
#   SOAK_FLOOD_RATE WM-NOTIFY datagrams per second sent to the daemon (default 2000)
#
# Every address is on 127.0.0.0/8, and the default ports lie below Linux's ephemeral
# range (32768 and up), so other programs' client sockets cannot take them. Everything
# started here stops when the script ends.
set -euo pipefail

duration=${1:-1800}
sample=${2:-60}
bin=${SOAK_BIN:-target/debug/thermostat-server}
count=${SOAK_COUNT:-200}
ip=${SOAK_IP:-127.0.0.42}
base_port=${SOAK_BASE_PORT:-24000}
pg_port=${SOAK_PG_PORT:-24400}
flood_rate=${SOAK_FLOOD_RATE:-2000}
discovery_port=$((pg_port + 1))
notify_port=$((pg_port + 2))
api_port=$((pg_port + 3))

[[ -x $bin ]] || { echo "soak: $bin is missing; run cargo build first or set SOAK_BIN" >&2; exit 1; }
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[[ -n $pg_bin ]] || { echo "soak: no PostgreSQL found; apt-get install postgresql" >&2; exit 1; }

work=$(mktemp -d /tmp/thermostat-soak.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    as_pg "$pg_bin/pg_ctl" -D "$work/pg" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# initdb refuses root, so the cluster belongs to the postgres user when run as root.
as_pg() {
    if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}
mkdir -p "$work/pg"
[[ $(id -u) -eq 0 ]] && chown postgres "$work" "$work/pg"
as_pg "$pg_bin/initdb" -D "$work/pg" -U thermostat --auth=trust >"$work/initdb.log"
as_pg "$pg_bin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w \
    -o "-p $pg_port -k $work -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
"$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U thermostat thermostat

# The hostile and flaky units come first, and the rest behave like real units.
faults=(0:hang 1:drip=1000 2:huge-body=10000000 3:invalid-utf8 4:http09 5:reset
    6:flaky=0.1/0.1 7:neg1=0.3 8:truncated=0.2 9:slow=3000 10:refuse-concurrent)
fault_args=()
for fault in "${faults[@]}"; do fault_args+=(--fault "$fault"); done
"$bin" simulate --count "$count" --bind "$ip" --base-port "$base_port" --latency realistic \
    --discovery "$ip:$discovery_port" "${fault_args[@]}" >"$work/simulator.log" 2>&1 &
simulator=$!
pids+=("$simulator")
sleep 2
# A simulator that could not bind every port exits; the daemon would then poll whatever
# else listens there.
kill -0 "$simulator" 2>/dev/null || {
    echo "soak: the simulator did not start:" >&2
    cat "$work/simulator.log" >&2
    exit 1
}

addresses=$(seq "$base_port" $((base_port + count - 1)) | sed "s/.*/\"$ip:&\"/" | paste -sd,)
cat >"$work/site.toml" <<EOF
[site]
site_id = "soak"
name = "Soak"
time_zone = "UTC"
[database]
url = "postgresql://thermostat@127.0.0.1:$pg_port/thermostat"
flush_interval_ms = 1000
[polling]
interval_seconds = 5
request_timeout_seconds = 5
min_request_gap_ms = 200
offline_after_failures = 3
max_backoff_seconds = 60
[thermostats]
addresses = [$addresses]
[discovery]
methods = ["database", "udp"]
interval_seconds = 60
udp_group = "$ip:$discovery_port"
udp_bind = "$ip:$notify_port"
udp_window_seconds = 5
[api]
listen = "$ip:$api_port"
[log]
level = "info"
EOF
"$bin" run --config "$work/site.toml" >"$work/daemon.log" 2>&1 &
daemon=$!
pids+=("$daemon")

# The flood: WM-NOTIFY datagrams, each announcing a new address in 127.1.0.0 and up, all
# with the port below the fleet's, where nothing listens. It runs at a bounded rate for
# the whole run.
python3 - "$ip" "$notify_port" "$flood_rate" "$duration" $((base_port - 1)) <<'EOF' &
import socket, sys, time
ip, port, rate, duration = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
closed = int(sys.argv[5])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end, n = time.monotonic() + duration, 0
while time.monotonic() < end:
    start = time.monotonic()
    for _ in range(rate // 10):
        n += 1
        message = ("TYPE: WM-NOTIFY\r\nVERSION: 1.0\r\nSERVICE: com.marvell.wm.system:1.0\r\n"
                   f"LOCATION: http://127.{1 + (n >> 16) % 254}.{(n >> 8) % 256}.{n % 256}:{closed}/sys/\r\n\r\n")
        sock.sendto(message.encode(), (ip, port))
    time.sleep(max(0.0, 0.1 - (time.monotonic() - start)))
print(f"flood: {n} datagrams sent", file=sys.stderr)
EOF
pids+=($!)

query() {
    psql -h 127.0.0.1 -p "$pg_port" -U thermostat -d thermostat -Atc "$1" 2>/dev/null || echo 0
}
field() { awk -v key="$1:" '$1 == key { print $2 }' "/proc/$daemon/status"; }

echo "soak: $count thermostats, ${#faults[@]} faulty, flood $flood_rate/s, $duration s, binary $bin"
echo "| elapsed (s) | RSS (KiB) | open fds | threads | raw readings | thermostats |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: |"
started=$(date +%s)
while :; do
    elapsed=$(($(date +%s) - started))
    kill -0 "$daemon" 2>/dev/null || { echo "soak: the daemon exited early; see its log:" >&2; tail -n 20 "$work/daemon.log" >&2; exit 1; }
    fds=$(ls "/proc/$daemon/fd" | wc -l)
    readings=$(query "SELECT count(*) FROM raw_readings")
    thermostats=$(query "SELECT count(*) FROM thermostats")
    echo "| $elapsed | $(field VmRSS) | $fds | $(field Threads) | $readings | $thermostats |"
    ((elapsed >= duration)) && break
    sleep "$sample"
done

echo "soak: peak RSS $(field VmHWM) KiB"
echo "soak: log lines per level:"
awk '{ print $2 }' "$work/daemon.log" | sort | uniq -c | sort -rn
echo "soak: info or higher poll failure lines per thermostat, top 5:"
grep -v ' DEBUG ' "$work/daemon.log" | grep -o 'thermostat [0-9a-f]\{12\} at [^ ]*: poll failed' \
    | awk '{ print $2 }' | sort | uniq -c | sort -rn | head -n 5 || true
echo "soak: WM-NOTIFY flood warnings: $(grep -c 'WM-NOTIFY flood' "$work/daemon.log" || true)"
echo "soak: last discovery lines:"
grep 'discovery' "$work/daemon.log" | grep -v ' DEBUG ' | tail -n 3 || true
