#!/usr/bin/env bash
# Makes throwaway certificates for development and tests (TLS integration tests, the TLS
# benchmark): never use them for anything else. openssl CLI only; P-256 EC keys (PKCS#8,
# unencrypted, mode 0600), SHA-256 signatures.
#
#   scripts/gen-dev-certs.sh DIR
#
# Writes into DIR (created if missing; every file is regenerated on each run, so
# re-running over an existing DIR is safe and gives new keys):
#   ca.pem, ca.key           the development CA: CN "PrismQ dev CA", basicConstraints
#                            critical CA:TRUE, keyUsage critical keyCertSign,cRLSign; 825 days
#   server.pem, server.key   server certificate signed by the CA: CN localhost, SAN
#                            DNS:localhost, IP:127.0.0.1, IP:::1; extendedKeyUsage serverAuth
#   client1.pem, client1.key client certificate signed by the CA: CN client1, SAN
#                            URI:spiffe://prismq/client1; extendedKeyUsage clientAuth
#   client2.pem, client2.key the same for client2 (URI:spiffe://prismq/client2)
# and, for negative cases:
#   other-ca.pem, other-ca.key         a second, unrelated CA (CN "PrismQ other CA")
#   other-client.pem, other-client.key a client certificate signed by the other CA
#                                      (CN other-client, URI:spiffe://prismq/other-client)
#   expired-client.pem, .key           signed by the CA, valid 2020-01-01 to 2020-01-02 only
#                                      (CN expired-client, URI:spiffe://prismq/expired-client)
#   revoked-client.pem, .key           signed by the CA and listed in crl.pem
#                                      (CN revoked-client, URI:spiffe://prismq/revoked-client)
#   crl.pem                            a CRL issued by the CA (next update in 825 days)
#                                      that revokes revoked-client (reason keyCompromise)
# Server and client certificates are valid 825 days (except expired-client). Quiet on
# success; on failure prints the failing openssl command's output and exits non-zero.
#
# Checked with OpenSSL 3.0.19 (Debian 12), about 0.6 s for the whole set:
#   openssl verify -CAfile ca.pem server.pem client1.pem client2.pem      -> OK, OK, OK
#   openssl verify -CAfile ca.pem other-client.pem                         -> unable to get local issuer certificate
#   openssl verify -CAfile ca.pem expired-client.pem                       -> certificate has expired
#   openssl verify -crl_check -CRLfile crl.pem -CAfile ca.pem revoked-client.pem -> certificate revoked
#   openssl verify -crl_check -CRLfile crl.pem -CAfile ca.pem client1.pem  -> OK
# OpenSSL 3.0's `x509 -req` has no -not_before/-not_after (3.4+), so the leaf certificates
# are issued with `openssl ca` (which takes -startdate/-enddate and keeps the database
# -gencrl needs) from a CA database in a temporary directory, removed on exit.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
DIR="$1"
mkdir -p "$DIR"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# Every command loads this configuration, never the system's openssl.cnf. $ENV::DB is
# the database directory of the issuing CA, $ENV::SAN the subjectAltName of the leaf
# being issued (both are expanded whenever the file is loaded, so they always have a value).
CNF="$TMP/openssl.cnf"
export DB="$TMP/ca" SAN="DNS:localhost"
cat >"$CNF" <<'EOF'
[req]
distinguished_name = req_dn
prompt = no
[req_dn]
CN = unused

[ca]
default_ca = dev_ca
[dev_ca]
database = $ENV::DB/index.txt
new_certs_dir = $ENV::DB
serial = $ENV::DB/serial
crlnumber = $ENV::DB/crlnumber
default_md = sha256
policy = policy_cn
unique_subject = no
copy_extensions = none
crl_extensions = crl_ext
[policy_cn]
commonName = supplied
[crl_ext]
authorityKeyIdentifier = keyid:always

[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $ENV::SAN
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = $ENV::SAN
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF

# Runs a command with its output kept aside; shows it only if the command fails.
q() {
  if ! "$@" >"$TMP/out" 2>&1; then
    echo "gen-dev-certs: failed: $*" >&2
    cat "$TMP/out" >&2
    exit 1
  fi
}

# key NAME: a new P-256 key in DIR/NAME.key, readable by its owner only.
key() {
  rm -f "$DIR/$1.key"
  (umask 077 && q openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
    -pkeyopt ec_param_enc:named_curve -out "$DIR/$1.key")
}

# ca NAME CN: a self-signed CA (DIR/NAME.pem, DIR/NAME.key) with an empty database in
# $TMP/NAME for issuing.
ca() {
  key "$1"
  q openssl req -config "$CNF" -new -x509 -key "$DIR/$1.key" -subj "/CN=$2" -sha256 -days 825 \
    -extensions v3_ca -out "$DIR/$1.pem"
  mkdir -p "$TMP/$1"
  : >"$TMP/$1/index.txt"
  echo 01 >"$TMP/$1/crlnumber"
}

# leaf CA NAME CN EXT SAN [openssl ca validity options]: a certificate for a new key,
# issued by CA with the extensions of section EXT; default validity 825 days.
leaf() {
  local issuer="$1" name="$2" cn="$3" ext="$4" san="$5"
  shift 5
  [ $# -gt 0 ] || set -- -days 825
  key "$name"
  q openssl req -config "$CNF" -new -key "$DIR/$name.key" -subj "/CN=$cn" -out "$TMP/$name.csr"
  DB="$TMP/$issuer" SAN="$san" q openssl ca -config "$CNF" -batch -notext -rand_serial \
    -cert "$DIR/$issuer.pem" -keyfile "$DIR/$issuer.key" -extensions "$ext" "$@" \
    -in "$TMP/$name.csr" -out "$DIR/$name.pem"
}

ca ca "PrismQ dev CA"
leaf ca server localhost server_ext "DNS:localhost,IP:127.0.0.1,IP:::1"
for c in client1 client2 revoked-client; do
  leaf ca "$c" "$c" client_ext "URI:spiffe://prismq/$c"
done
leaf ca expired-client expired-client client_ext "URI:spiffe://prismq/expired-client" \
  -startdate 20200101000000Z -enddate 20200102000000Z

ca other-ca "PrismQ other CA"
leaf other-ca other-client other-client client_ext "URI:spiffe://prismq/other-client"

export DB="$TMP/ca"
q openssl ca -config "$CNF" -batch -cert "$DIR/ca.pem" -keyfile "$DIR/ca.key" \
  -revoke "$DIR/revoked-client.pem" -crl_reason keyCompromise
q openssl ca -config "$CNF" -batch -cert "$DIR/ca.pem" -keyfile "$DIR/ca.key" \
  -gencrl -crldays 825 -out "$DIR/crl.pem"
