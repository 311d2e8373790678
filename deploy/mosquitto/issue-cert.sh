#!/usr/bin/env bash
# The fleet's certificate authority for MQTT (mosquitto with require_certificate): one CA, one
# certificate per broker, per server replica and per device. The certificate's common name is the
# MQTT identity (mosquitto: use_identity_as_username), which the ACL (edgecut.acl) turns into
# "only your own edgecut/v1/devices/{id}/... topics" for a device.
#
#   issue-cert.sh [-d DIR] [--days N] ca                  create the CA and an empty CRL (once)
#   issue-cert.sh [-d DIR] [--days N] broker HOST [HOST]  the broker's certificate (DNS names / IPs)
#   issue-cert.sh [-d DIR] [--days N] server NAME          a server replica: CN server@NAME
#   issue-cert.sh [-d DIR] [--days N] device DEVICE_ID     a device: CN DEVICE_ID
#   issue-cert.sh [-d DIR] revoke NAME                     revoke NAME's current certificate, new CRL
#
# DIR (default ./fleet-pki) holds ca/ (keep ca.key offline in production) and one folder per
# identity (broker/, server-NAME/, device-ID/) with ca.crt and client.crt + client.key (broker.crt +
# broker.key for the broker): copy that folder to the machine, e.g. /etc/edgecut/mqtt/ on a device.
# Issuing again for a name revokes its previous certificate (rotation). After a revoke or a
# rotation, copy ca/crl.pem to the broker and restart it (mosquitto reads the CRL at start).
set -euo pipefail

DIR=./fleet-pki
DAYS=825
while [ $# -gt 0 ]; do
  case $1 in
    -d) DIR=$2; shift 2 ;;
    --days) DAYS=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
KIND=${1:-}
[ -n "$KIND" ] || { sed -n '2,19p' "$0" >&2; exit 2; }
shift
die() { echo "issue-cert.sh: $*" >&2; exit 2; }
command -v openssl >/dev/null || die "openssl is missing (apt-get install openssl)"
CA=$DIR/ca
umask 077

ca_conf() {
  cat <<CONF
[ca]
default_ca = fleet
[fleet]
dir = $CA
database = $CA/index.txt
serial = $CA/serial
crlnumber = $CA/crlnumber
new_certs_dir = $CA/issued
certificate = $CA/ca.crt
private_key = $CA/ca.key
default_md = sha256
default_days = $DAYS
default_crl_days = 3650
policy = anything
unique_subject = no
copy_extensions = copy
[anything]
commonName = supplied
CONF
}

crl() { openssl ca -config <(ca_conf) -gencrl -out "$CA/crl.pem" 2>/dev/null; }

need_ca() { [ -f "$CA/ca.key" ] || die "no CA in $CA: run \`issue-cert.sh -d $DIR ca\` first"; }

# revoke every valid certificate whose subject is exactly CN=$1; prints how many
revoke_name() {
  local cn=$1 n=0 serial
  for serial in $(awk -F'\t' -v s="/CN=$cn" '$1 == "V" && $6 == s { print $4 }' "$CA/index.txt"); do
    openssl ca -config <(ca_conf) -revoke "$CA/issued/$serial.pem" >/dev/null 2>&1
    n=$((n + 1))
  done
  echo "$n"
}

issue() {  # issue CN FOLDER BASENAME EXT: FOLDER/{BASENAME.crt,BASENAME.key,ca.crt}
  local cn=$1 out=$2 base=$3 ext=$4
  need_ca
  mkdir -p "$out"
  local old; old=$(revoke_name "$cn")
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$out/$base.key" 2>/dev/null
  openssl req -new -key "$out/$base.key" -subj "/CN=$cn" -out "$out/req.csr" 2>/dev/null
  openssl ca -batch -config <(ca_conf) -in "$out/req.csr" -out "$out/$base.crt" -notext -extensions v3 \
    -extfile <(printf '[v3]\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n%s\n' "$ext") \
    >/dev/null 2>&1 || die "openssl could not sign the certificate for $cn"
  rm -f "$out/req.csr"
  cp "$CA/ca.crt" "$out/ca.crt"
  crl
  chmod 600 "$out/$base.key"
  chmod 644 "$out/$base.crt" "$out/ca.crt"
  [ "$old" = 0 ] || echo "revoked $old earlier certificate(s) of $cn: copy $CA/crl.pem to the broker and restart it"
  echo "issued $out/$base.crt for CN=$cn (valid $DAYS days)"
}

case $KIND in
  ca)
    [ ! -f "$CA/ca.key" ] || die "$CA/ca.key exists already; refusing to replace the fleet's CA"
    mkdir -p "$CA/issued"
    : > "$CA/index.txt"
    echo 1000 > "$CA/serial"
    echo 1000 > "$CA/crlnumber"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$CA/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$CA/ca.key" -sha256 -days $((DAYS * 4)) -subj "/CN=edgecut fleet CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -out "$CA/ca.crt"
    crl
    chmod 644 "$CA/ca.crt" "$CA/crl.pem"
    echo "created the fleet CA in $CA (keep ca.key secret and offline)"
    ;;
  broker)
    [ $# -ge 1 ] || die "broker needs at least one host name or IP address"
    sans=""
    for h in "$@"; do
      if [[ $h =~ ^[0-9.]+$ || $h == *:* ]]; then sans+="IP:$h,"; else sans+="DNS:$h,"; fi
    done
    issue "$1" "$DIR/broker" broker "subjectAltName=${sans%,}
extendedKeyUsage=serverAuth"
    ;;
  server)
    name=${1:-edgecut}
    [[ $name =~ ^[A-Za-z0-9_.-]{1,64}$ ]] || die "server name $name: use 1-64 letters, digits, '_', '-' or '.'"
    issue "server@$name" "$DIR/server-$name" client "extendedKeyUsage=clientAuth"
    ;;
  device)
    id=${1:-}
    # the same rule as the agent's device_id: it becomes one MQTT topic level, so no / + # @
    [[ $id =~ ^[A-Za-z0-9_.-]{1,64}$ ]] || die "device id '$id': use 1-64 letters, digits, '_', '-' or '.'"
    issue "$id" "$DIR/device-$id" client "extendedKeyUsage=clientAuth"
    ;;
  revoke)
    name=${1:?revoke needs a name (a device id, or server@NAME)}
    need_ca
    n=$(revoke_name "$name")
    [ "$n" != 0 ] || die "no valid certificate for CN=$name"
    crl
    echo "revoked $n certificate(s) of $name: copy $CA/crl.pem to the broker and restart it"
    ;;
  *) die "unknown command '$KIND' (ca, broker, server, device, revoke)" ;;
esac
