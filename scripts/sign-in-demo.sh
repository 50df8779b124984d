#!/usr/bin/env bash
# The whole sign-in locally: a real OpenID provider (the test fixture, npm oidc-provider) on
# 127.0.0.1:8180 and orderflow on 127.0.0.1:8080 taking its tokens, with the web UI signing in
# there (authorization code + PKCE). Ctrl-C stops both.
#
#   scripts/sign-in-demo.sh
#
# Then open http://127.0.0.1:8080 and press "Sign in": the provider's login page takes any
# login and any password. `olga` is an operator, `anna` an analyst, `sam` both, anyone else a
# customer. Data lives in ./data/sign-in-demo (delete it to start over).
set -euo pipefail
cd "$(dirname "$0")/.."

issuer=http://127.0.0.1:8180
data=${ORDERFLOW_DATA:-./data/sign-in-demo}
mkdir -p "$data"

[ -d tests/oidc/node_modules/oidc-provider ] || npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error
cargo build --release --quiet

pids=()
stop() {
  trap - INT TERM EXIT
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait
}
trap stop INT TERM EXIT

node tests/oidc/provider.mjs --port 8180 --ignore-stdin \
  --redirect-uri http://127.0.0.1:8080/ --post-logout-redirect-uri http://127.0.0.1:8080/ \
  --access-token-ttl 600 >"$data/provider.json" 2>"$data/provider.log" &
pids+=($!)
for _ in $(seq 100); do [ -s "$data/provider.json" ] && break; sleep 0.1; done
[ -s "$data/provider.json" ] || { echo "the provider did not start: see $data/provider.log" >&2; exit 1; }
echo "OpenID provider on $issuer (log: $data/provider.log)"

./target/release/orderflow serve --data "$data" \
  --oidc-issuer "$issuer" --oidc-audience api://orderflow --oidc-client-id orderflow-web \
  --oidc-role-map 'Orders.Operator=operator,Orders.Analyst=analyst' &
pids+=($!)
wait -n
