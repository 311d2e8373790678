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
OPERATOR_KEY=$(cat "$PKI/operator-public.txt")
pids=()
for i in $(seq 1 "$N"); do
  id=$(printf 'sim-%03d' "$i")
  dir=/var/lib/edgecut/$id
  mkdir -p "$dir"
  # the one provisioning helper (edgecut.agent.provision): the fleet key pinned, the config validated
  edgecut agent config --out "$dir/agent.yaml" --device-id "$id" --broker "$BROKER" \
    --fleet-key "$PKI/fleet-public.txt" --state-dir "$dir" \
    --tasks "${TASKS[$(( (i - 1) % 4 ))]}" --device-class "${CLASSES[$(( (i - 1) % 4 ))]}" \
    --set "mqtt_ca_file=$PKI/device-$id/ca.crt" --set "mqtt_cert_file=$PKI/device-$id/client.crt" \
    --set "mqtt_key_file=$PKI/device-$id/client.key" --set "listen=127.0.0.1:0" \
    --set "operator_keys=[\"$OPERATOR_KEY\"]"
  edgecut agent run --config "$dir/agent.yaml" &
  pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null; wait' TERM INT
wait -n
echo "an agent exited; stopping the others" >&2
kill "${pids[@]}" 2>/dev/null || true
wait
exit 1
