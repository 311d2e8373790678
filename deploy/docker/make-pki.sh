#!/usr/bin/env bash
# One-shot job of compose.yaml: the demo fleet's certificates and signing key, made once into volumes.
#   /pki              issue-cert.sh's tree: ca/, server-edgecut/, device-sim-001/ ...
#   /broker-certs     what mosquitto reads: ca.crt broker.crt broker.key crl.pem (owned by its uid 1883)
#   /pki/fleet-signing.key  the Ed25519 key every server replica signs manifests with (one key for all),
#   /pki/fleet-public.txt   and its public half as the agents' `fleet_keys` entry
#   /pki/operator.key       the Ed25519 key both replicas sign operator commands with,
#   /pki/operator-public.txt  and its public half as the agents' `operator_keys` entry
# Keys are owned by the uid that uses them (server 10001, agents 10002) and readable by it only.
set -euo pipefail
N=${SIM_AGENTS:-4}
ISSUE=/opt/edgecut/deploy/mosquitto/issue-cert.sh
if [ ! -f /pki/ca/ca.key ]; then
  "$ISSUE" -d /pki ca
  "$ISSUE" -d /pki broker mosquitto localhost
  "$ISSUE" -d /pki server edgecut
  openssl genpkey -algorithm ED25519 -out /pki/fleet-signing.key
  echo "ed25519:$(openssl pkey -in /pki/fleet-signing.key -pubout -outform DER | tail -c 32 | base64)" \
    > /pki/fleet-public.txt
fi
if [ ! -f /pki/operator.key ]; then
  openssl genpkey -algorithm ED25519 -out /pki/operator.key
  echo "ed25519:$(openssl pkey -in /pki/operator.key -pubout -outform DER | tail -c 32 | base64)" \
    > /pki/operator-public.txt
fi
for i in $(seq -f '%03g' 1 "$N"); do
  [ -d "/pki/device-sim-$i" ] || "$ISSUE" -d /pki device "sim-$i"
done
install -d /broker-certs
cp /pki/broker/broker.crt /pki/broker/broker.key /pki/ca/ca.crt /pki/ca/crl.pem /broker-certs/
chown -R 1883:1883 /broker-certs
chmod 600 /broker-certs/broker.key
chown -R 10001:10001 /pki/server-edgecut /pki/fleet-signing.key /pki/operator.key
chmod 600 /pki/operator.key
for d in /pki/device-*; do chown -R 10002:10002 "$d"; done
chmod 755 /pki
chmod 644 /pki/fleet-public.txt /pki/operator-public.txt /pki/ca/ca.crt
echo "pki ready: CA, broker, server@edgecut, $N devices"
