#!/usr/bin/env bash
# Generate a test certificate authority, a broker certificate and client
# certificates for a TLS / mutual-TLS Mosquitto (deploy/mosquitto/mosquitto.prod.conf).
#
#   scripts/gen-certs.sh OUT_DIR [CLIENT_NAME ...]
#
# OUT_DIR gets ca.crt/ca.key, server.crt/server.key and, for each client name
# (default: v2g-platform), NAME.crt/NAME.key whose certificate's CN is NAME: with
# auth_method "tls" the broker takes the CN as the MQTT user name, so the ACL
# applies to it (a vehicle's CN is its vehicle id).
#
# Environment: SERVER_NAMES (default "localhost,127.0.0.1"; DNS names and IPs the
# broker is reached at, put in the server certificate's subjectAltName), DAYS
# (default 825). For tests and staging: production certificates come from your PKI.
set -euo pipefail

out=${1:?usage: gen-certs.sh OUT_DIR [CLIENT_NAME ...]}
shift || true
clients=("${@:-v2g-platform}")
days=${DAYS:-825}
names=${SERVER_NAMES:-localhost,127.0.0.1}
mkdir -p "$out"
cd "$out"

san=""
IFS=',' read -ra parts <<<"$names"
for name in "${parts[@]}"; do
  if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then san+="IP:$name,"; else san+="DNS:$name,"; fi
done
san=${san%,}

openssl req -x509 -newkey rsa:2048 -nodes -days "$days" -sha256 \
  -keyout ca.key -out ca.crt -subj "/CN=v2g test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

issue() {  # issue NAME EXTENSIONS
  openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$1" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" -sha256 \
    -out "$1.crt" -extfile <(printf '%s\n' "$2") 2>/dev/null
  rm -f "$1.csr"
}

issue server "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$san"
for client in "${clients[@]}"; do
  issue "$client" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
done
rm -f ca.srl
chmod 600 ./*.key
# Mosquitto drops root privileges; let its user read the keys it needs.
if id mosquitto >/dev/null 2>&1; then chown mosquitto: server.key 2>/dev/null || true; fi
echo "certificates in $out: ca.crt server.crt ${clients[*]/%/.crt}"
