#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# etcd over TLS with client certificates: the CLI and a chunk server reach
# it with the CA, certificate and key of [cluster] in qbd.conf; without
# the CA, or without a client certificate, they cannot.
. "$(dirname "$0")/lib.sh"
init_test "$@"
command -v openssl >/dev/null || skip "no openssl to make certificates"

pki="$TMP/pki"
mkdir -p "$pki"
cd "$pki"
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
# shellcheck disable=SC2086 # $ec: options, split on purpose
openssl req -x509 $ec -keyout ca.key -out ca.pem -days 1 -subj /CN=qbd-test-ca 2>/dev/null ||
	fail "openssl: CA"
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' >server.ext
printf 'extendedKeyUsage=clientAuth\n' >client.ext
for who in server client; do
	# shellcheck disable=SC2086
	openssl req $ec -keyout $who.key -out $who.csr -subj /CN=qbd-$who 2>/dev/null &&
		openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
			-out $who.pem -days 1 -extfile $who.ext 2>/dev/null || fail "openssl: $who"
done
cd - >/dev/null

cp_=$(free_port); pp_=$(free_port)
mkdir -p "$TMP/etcd"
etcd --name qbd-tls --data-dir "$TMP/etcd" \
	--listen-client-urls "https://127.0.0.1:$cp_" --advertise-client-urls "https://127.0.0.1:$cp_" \
	--listen-peer-urls "http://127.0.0.1:$pp_" --initial-advertise-peer-urls "http://127.0.0.1:$pp_" \
	--initial-cluster "qbd-tls=http://127.0.0.1:$pp_" \
	--cert-file "$pki/server.pem" --key-file "$pki/server.key" \
	--client-cert-auth --trusted-ca-file "$pki/ca.pem" >"$TMP/etcd.log" 2>&1 &
track_pid $! etcd $ETCD_TERM_STATUS
export QBD_ETCD="https://127.0.0.1:$cp_"
wait_for "etcd over TLS" 20 port_open "$cp_"

cat >"$TMP/qbd.conf" <<CONF
[cluster]
etcd = $QBD_ETCD
etcd-cacert = $pki/ca.pem
etcd-cert = $pki/client.pem
etcd-key = $pki/client.key
CONF
wait_for "qbd node list over TLS" 20 qbd node list

# Without the CA the server's certificate is not trusted; without a client
# certificate etcd refuses the client.
QBD_CONFIG=/dev/null qbd node list >"$TMP/noca.out" 2>&1 &&
	fail "etcd reached without the CA"
grep -q "cannot list nodes" "$TMP/noca.out" || { cat "$TMP/noca.out" >&2; fail "no CA: no clear error"; }
QBD_CONFIG=/dev/null QBD_ETCD_CACERT="$pki/ca.pem" qbd node list >"$TMP/nocert.out" 2>&1 &&
	fail "etcd reached without a client certificate"

# A chunk server registers through TLS (its settings from the file).
start_chunkd a --scrub-rate 0
wait_for "the chunk server registered over TLS" 20 sh -c 'qbd node list | grep -q " up "'
qbd volume create t --size 64M --replicas 1 >/dev/null || fail "volume create over TLS"
log "PASS"
