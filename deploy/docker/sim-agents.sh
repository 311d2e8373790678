#!/usr/bin/env bash
# N simulated devices in one container (compose.yaml's `agents` service): one `edgecut agent run`
# process per device id sim-001 ... sim-N, each with its own state dir, certificate and task choice.
# Exits (and so restarts the container) when any agent exits.
set -euo pipefail
N=${SIM_AGENTS:-4}
PKI=${PKI:-/pki}
BROKER=${BROKER_URL:-mqtts://mosquitto:8883}
TASKS=("seg" "depth" "seg,depth" "seg,depth,normals")
CLASSES=("rpi4" "rpi4" "jetson-nano" "x86")
FLEET_KEY=$(cat "$PKI/fleet-public.txt")
OPERATOR_KEY=$(cat "$PKI/operator-public.txt")
pids=()
for i in $(seq 1 "$N"); do
  id=$(printf 'sim-%03d' "$i")
  dir=/var/lib/edgecut/$id
  mkdir -p "$dir"
  cat > "$dir/agent.yaml" <<YAML
device_id: $id
broker_url: $BROKER
mqtt_ca_file: $PKI/device-$id/ca.crt
mqtt_cert_file: $PKI/device-$id/client.crt
mqtt_key_file: $PKI/device-$id/client.key
fleet_keys: ["$FLEET_KEY"]
operator_keys: ["$OPERATOR_KEY"]
state_dir: $dir
listen: 127.0.0.1:0
tasks: [${TASKS[$(( (i - 1) % 4 ))]}]
device_class: ${CLASSES[$(( (i - 1) % 4 ))]}
YAML
  edgecut agent run --config "$dir/agent.yaml" &
  pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null; wait' TERM INT
wait -n
echo "an agent exited; stopping the others" >&2
kill "${pids[@]}" 2>/dev/null || true
wait
exit 1
