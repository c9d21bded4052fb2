#!/usr/bin/env bash
# Regenerates the Azure Key Vault content fixtures in tests/fixtures/azure/.
#
# Inputs (what Key Vault would return) and expected outputs (what upstream's
# provider writes) are produced here with the openssl CLI and coreutils only,
# so tests/integration/azure_formats.rs compares secretfs's output with bytes that our own
# code never produced.
#
#   scripts/gen-azure-fixtures.sh          # rewrite tests/fixtures/azure/
#
# Needs: bash, openssl (3.x), coreutils (base64, basenc, head, tail), xxd.
# The keys are fresh on every run, so regenerate and commit all files together.
#
# Layout of tests/fixtures/azure/:
#   pki/            CA/leaf keys and certificates (PEM and DER)
#   input/          what Key Vault returns: secret values, PFX base64, JWK JSON
#   expected/       the file bytes the upstream provider writes for them
set -euo pipefail

root_dir="$(cd "$(dirname "$0")/.." && pwd)"
out="$root_dir/tests/fixtures/azure"
rm -rf "$out"
mkdir -p "$out/pki" "$out/input" "$out/expected"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$out/pki"

cat >"$work/ext.cnf" <<'EOF'
[ca]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[leaf]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:web.example.test
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF

rsa_key() { openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null; }
ec_key() { openssl genpkey -algorithm EC -pkeyopt "ec_paramgen_curve:$2" -out "$1"; }
# sign <name> <key> <issuer-cert> <issuer-key> <ext-section> <subject>
sign() {
  openssl req -new -key "$2" -subj "$6" -out "$work/$1.csr"
  openssl x509 -req -in "$work/$1.csr" -CA "$3" -CAkey "$4" -set_serial "0x$(openssl rand -hex 8)" \
    -days 36500 -sha256 -extfile "$work/ext.cnf" -extensions "$5" -out "$1.crt" 2>/dev/null
  openssl x509 -in "$1.crt" -outform DER -out "$1.der"
}

# Root CA (self-signed), intermediate CA, and two leaves (RSA and EC P-256).
rsa_key root.key
openssl req -new -key root.key -subj "/CN=secretfs test root" -out "$work/root.csr"
openssl x509 -req -in "$work/root.csr" -signkey root.key -set_serial 0x01 -days 36500 -sha256 \
  -extfile "$work/ext.cnf" -extensions ca -out root.crt 2>/dev/null
openssl x509 -in root.crt -outform DER -out root.der
rsa_key inter.key
sign inter inter.key root.crt root.key ca "/CN=secretfs test intermediate"
rsa_key leaf-rsa.key
sign leaf-rsa leaf-rsa.key inter.crt inter.key leaf "/CN=web.example.test"
ec_key leaf-ec.key P-256
sign leaf-ec leaf-ec.key inter.crt inter.key leaf "/CN=ec.example.test"

# ---- objectType: cert → the leaf certificate (DER in `cer`) as one PEM block.
cp leaf-rsa.der ../input/cert-leaf-rsa.der
openssl x509 -in leaf-rsa.der -inform DER -outform PEM -out ../expected/cert-leaf-rsa.pem

# ---- certificate-backed secrets, contentType application/x-pkcs12.
# openssl puts the certificate matching the key first, then the -certfile ones in
# file order, so the PFX holds leaf, root, intermediate: not leaf → root order.
cat root.crt inter.crt >"$work/root-inter.pem"
pfx() { # <name> <key> <leaf> <certfile> [extra pkcs12 args...]
  local name=$1 key=$2 leaf=$3 certfile=$4
  shift 4
  openssl pkcs12 -export -passout pass: -inkey "$key" -in "$leaf" -certfile "$certfile" "$@" \
    -out "../input/$name.pfx"
  base64 -w0 "../input/$name.pfx" >"../input/$name.pfx.b64"
}
pkcs8() { # <name> [extra pkcs12 args...]
  local name=$1
  shift
  openssl pkcs12 -in "../input/$name.pfx" -passin pass: -nodes -nocerts "$@" 2>/dev/null | openssl pkey
}
pfx pfx-rsa-chain leaf-rsa.key leaf-rsa.crt "$work/root-inter.pem"
pfx pfx-rsa-3des leaf-rsa.key leaf-rsa.crt "$work/root-inter.pem" \
  -keypbe PBE-SHA1-3DES -certpbe PBE-SHA1-3DES -macalg sha1
# -legacy: RC2-40 for certificates, 3DES for keys, SHA-1 MAC (Windows/Key Vault style).
pfx pfx-rsa-legacy leaf-rsa.key leaf-rsa.crt "$work/root-inter.pem" -legacy
pfx pfx-ec-chain leaf-ec.key leaf-ec.crt "$work/root-inter.pem"
pfx pfx-incomplete leaf-rsa.key leaf-rsa.crt root.crt
# objectFormat: pem → PKCS#8 key first, then leaf → intermediate → root.
{ pkcs8 pfx-rsa-chain; cat leaf-rsa.crt inter.crt root.crt; } >../expected/pfx-rsa-chain.pem
{ pkcs8 pfx-rsa-3des; cat leaf-rsa.crt inter.crt root.crt; } >../expected/pfx-rsa-3des.pem
{ pkcs8 pfx-rsa-legacy -legacy; cat leaf-rsa.crt inter.crt root.crt; } >../expected/pfx-rsa-legacy.pem
{ pkcs8 pfx-ec-chain; cat leaf-ec.crt inter.crt root.crt; } >../expected/pfx-ec-chain.pem
# Incomplete chain (no intermediate): the PFX order is kept, leaf then root.
{ pkcs8 pfx-incomplete; cat leaf-rsa.crt root.crt; } >../expected/pfx-incomplete.pem
# objectFormat: pfx → the stored base64 text; with objectEncoding: base64 → the PFX.
cp ../input/pfx-rsa-chain.pfx.b64 ../expected/pfx-rsa-chain.pfx.b64
cp ../input/pfx-rsa-chain.pfx ../expected/pfx-rsa-chain.pfx

# ---- certificate-backed secret, contentType application/x-pem-file: verbatim.
{ openssl pkey -in leaf-rsa.key; cat leaf-rsa.crt inter.crt root.crt; } >../input/pem-file-rsa.pem
cp ../input/pem-file-rsa.pem ../expected/pem-file-rsa.pem

# ---- plain secrets and objectEncoding.
printf 'p@ssw0rd with spaces and ünïcödé\n' >../input/secret-utf8.txt
cp ../input/secret-utf8.txt ../expected/secret-utf8.txt
head -c 97 /dev/urandom >../expected/secret-binary.bin
base64 -w0 ../expected/secret-binary.bin >../input/secret-binary.b64
xxd -p ../expected/secret-binary.bin | tr -d '\n' >../input/secret-binary.hex

# ---- objectType: key → JWK (public parts) and PKIX PUBLIC KEY PEM.
b64url() { basenc --base64url -w0 | tr -d '='; }
hex_bytes() { xxd -r -p; }
rsa_key jwk-rsa.key
n=$(openssl rsa -in jwk-rsa.key -noout -modulus | sed 's/^Modulus=//' | hex_bytes | b64url)
e=$(printf '010001' | hex_bytes | b64url)
printf '{"kid":"https://kv-demo.vault.azure.net/keys/rsa/0123456789abcdef0123456789abcdef","kty":"RSA","key_ops":["encrypt","decrypt","sign","verify","wrapKey","unwrapKey"],"n":"%s","e":"%s"}\n' \
  "$n" "$e" >../input/jwk-rsa.json
openssl pkey -in jwk-rsa.key -pubout -out ../expected/jwk-rsa.pub.pem
for curve in P-256:32 P-384:48 P-521:66; do
  crv=${curve%%:*} len=${curve##*:}
  name="jwk-ec-$(echo "$crv" | tr -d '-' | tr 'A-Z' 'a-z')"
  ec_key "$name.key" "$crv"
  openssl pkey -in "$name.key" -pubout -outform DER | tail -c $((2 * len + 1)) >"$work/point"
  x=$(tail -c +2 "$work/point" | head -c "$len" | b64url)
  y=$(tail -c "$len" "$work/point" | b64url)
  printf '{"kid":"https://kv-demo.vault.azure.net/keys/ec/0123456789abcdef0123456789abcdef","kty":"EC","key_ops":["sign","verify"],"crv":"%s","x":"%s","y":"%s"}\n' \
    "$crv" "$x" "$y" >"../input/$name.json"
  openssl pkey -in "$name.key" -pubout -out "../expected/$name.pub.pem"
done

# ---- PKCS#8 re-encoding as Go's MarshalPKCS8PrivateKey: an EC key stored
# without its public key gets it back; an RSA key is unchanged.
for c in p256 p384 p521; do
  openssl ec -in "jwk-ec-$c.key" -no_public 2>/dev/null |
    openssl pkcs8 -topk8 -nocrypt -outform DER -out "../input/pkcs8-ec-$c-nopub.der"
  openssl pkcs8 -topk8 -nocrypt -in "jwk-ec-$c.key" -outform DER -out "../expected/pkcs8-ec-$c.der"
done
openssl pkcs8 -topk8 -nocrypt -in leaf-rsa.key -outform DER -out ../input/pkcs8-rsa.der
cp ../input/pkcs8-rsa.der ../expected/pkcs8-rsa.der

rm -f ./*.csr
echo "fixtures written to $out"
