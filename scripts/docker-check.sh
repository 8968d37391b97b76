#!/usr/bin/env bash
# Builds and checks the Astra image on a machine that reaches no image registry.
#
#   scripts/docker-check.sh [--rebuild] [--compose]
#
# 1. A local base image (default astra-base:bookworm) from debootstrap + `docker import`:
#    Debian bookworm minbase with python3 (3.11) and its venv module, `python` on the PATH as
#    in python:3.11-slim, and this host's local CAs (so pip reaches PyPI the way the host's
#    pip does). Cached: skipped when the image exists, unless --rebuild.
# 2. The project's image from ./Dockerfile with --build-arg BASE=<that image> (the build uses
#    the host's network; PIP_INDEX_URL / PIP_EXTRA_INDEX_URL, when set, are passed through).
# 3. A container of it on free loopback ports with a fresh ASTRA_API_KEY; then, each step
#    printed and checked (any failure stops the script with status 1): the health check turns
#    healthy, GET :9090/health, a request without the key is refused 401, GET /orderbook on
#    SIM-SPOT-BTC-USDT has bids below asks, a paper MARKET order fills, the server runs as the
#    unprivileged user. The container and its volume are removed on exit, whatever happened.
# 4. With --compose: `docker-compose config` validates docker-compose.yml; local stand-ins
#    for the postgres and nats images are built on the same base (deploy/local/, used through
#    deploy/compose-local.yml); `up gateway` (one gateway on PostgreSQL): the checks of 3, and
#    the order's journal row and the key are in PostgreSQL; then, when the image's `astra
#    serve` has --role, `up` (sim, feed, edge1, edge2, nats, postgres): both edges healthy
#    with role edge and a book each, and once the feed is stopped both answer 503.
#
# Needs root (debootstrap), docker, debootstrap, curl and python3 on the host; --compose
# needs docker-compose (Debian's package). DEBIAN_MIRROR overrides the mirror (default: the
# one apt uses here), ASTRA_BASE_IMAGE / ASTRA_IMAGE the image names.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=${ASTRA_BASE_IMAGE:-astra-base:bookworm}
IMAGE=${ASTRA_IMAGE:-astra:check}
SUITE=bookworm
MARKET=SIM-SPOT-BTC-USDT
rebuild=0
compose=0
for arg in "$@"; do
  case $arg in
    --rebuild) rebuild=1 ;;
    --compose) compose=1 ;;
    -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "docker-check: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

started=$SECONDS
step() { printf '\n== [%4ss] %s\n' "$((SECONDS - started))" "$*"; }
ok() { printf '   ok: %s\n' "$*"; }
fail() { printf '   FAILED: %s\n' "$*" >&2; exit 1; }

container=""
rootfs=""
project=""
cleanup() {
  local status=$?
  if [ -n "$container" ]; then
    if [ "$status" -ne 0 ]; then
      echo "-- last log lines of $container:" >&2
      docker logs --tail 30 "$container" >&2 || true
    fi
    docker rm -f -v "$container" >/dev/null 2>&1 || true
    echo "   removed container $container"
  fi
  if [ -n "$project" ]; then
    if [ "$status" -ne 0 ]; then
      compose_cmd logs --tail 20 >&2 || true
    fi
    compose_cmd down -v --remove-orphans >/dev/null 2>&1 || true
    echo "   removed compose project $project"
  fi
  if [ -n "$rootfs" ]; then rm -rf "$rootfs"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The Debian mirror apt uses on this host (deb822 sources first, then sources.list).
debian_mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  local url
  url=$(grep -hsE '^URIs:.*/debian/?$' /etc/apt/sources.list.d/*.sources | head -1 \
        | awk '{print $2}') || true
  if [ -z "$url" ]; then
    url=$(grep -hsE '^deb .*/debian/? ' /etc/apt/sources.list | head -1 | awk '{print $2}') \
      || true
  fi
  echo "${url:-http://deb.debian.org/debian}"
}

build_base() {
  local mirror
  mirror=$(debian_mirror)
  [ "$(id -u)" -eq 0 ] || fail "debootstrap needs root"
  rootfs=$(mktemp -d /tmp/astra-rootfs.XXXXXX)
  echo "   debootstrap $SUITE from $mirror (minbase + python3, python3-venv, ca-certificates)"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
    || { tail -20 "$rootfs.log" >&2; rm -f "$rootfs.log"; fail "debootstrap"; }
  rm -f "$rootfs.log"
  # This host's own CAs (e.g. an egress proxy's), so pip in the build trusts what the
  # host's pip trusts (PIP_CERT below points pip at the system store, as on the host).
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
    chroot "$rootfs" update-ca-certificates >/dev/null 2>&1
  fi
  ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
         "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
  tar --numeric-owner -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["python3"]' \
    - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  rootfs=""
}

megabytes() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1 / 1e6}'; }

# A key in store/keys.py's format: a 12-character id from its alphabet, a 43-character secret.
new_key() {
  python3 -c 'import secrets
alphabet = "23456789abcdefghjkmnpqrstuvwxyz"
print("".join(secrets.choice(alphabet) for _ in range(12)) + "." + secrets.token_urlsafe(32))'
}

# $1: JSON text, $2: a Python expression over `d` that must be true; prints $3 on success.
check_json() {
  python3 - "$1" "$2" <<'EOF' || fail "$3 (answer: ${1:0:300})"
import json, sys
d = json.loads(sys.argv[1])
sys.exit(0 if eval("(" + sys.argv[2] + ")") else 1)
EOF
  ok "$3"
}

wait_healthy() {  # $1: container, $2: seconds
  local status deadline=$((SECONDS + $2))
  while :; do
    status=$(docker inspect -f '{{.State.Status}} {{.State.Health.Status}}' "$1")
    case $status in
      "running healthy") return 0 ;;
      running*) ;;
      *) fail "container $1 is $status" ;;
    esac
    [ "$SECONDS" -lt "$deadline" ] || fail "not healthy after $2 s ($status)"
    sleep 2
  done
}

# Health, a refused request, the book, a paper order; $1 API and $2 metrics host:port, $3 a
# name for the client order id, $4 the expected role.
check_api() {
  local answer code client_id
  step "GET http://$2/health"
  answer=$(curl -fsS --max-time 10 "http://$2/health")
  echo "   $answer"
  check_json "$answer" 'd["status"] == "ok" and d["venues"] == ["SIM", "SIM2", "SIM3"]
    and d["role"] == "'"$4"'"' "status ok, role $4, venues SIM, SIM2, SIM3"

  step "GET http://$1/orderbook without a key"
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://$1/orderbook?market=$MARKET")
  [ "$code" = 401 ] || fail "expected 401, got $code"
  ok "401"

  step "GET http://$1/orderbook?market=$MARKET&depth=5"
  answer=$(curl -fsS --max-time 20 -H "x-astra-api-key: Bearer $token" \
    "http://$1/orderbook?market=$MARKET&depth=5")
  echo "   ${answer:0:300}"
  # The simulator's books are thin at times: 1 to 5 levels a side, each side in order.
  check_json "$answer" 'd["market"] == "'"$MARKET"'" and 1 <= len(d["bids"]) <= 5
    and 1 <= len(d["asks"]) <= 5 and d["bids"][0]["price"] < d["asks"][0]["price"]
    and [b["price"] for b in d["bids"]] == sorted((b["price"] for b in d["bids"]), reverse=True)
    and [a["price"] for a in d["asks"]] == sorted(a["price"] for a in d["asks"])' \
    "bids descending, asks ascending, best bid below best ask"

  [ "$4" != edge ] || return 0  # the shared simulator has no paper account for the key
  step "POST http://$1/orders (paper MARKET BUY 0.001 on $MARKET)"
  client_id=docker-check-$3-$$
  answer=$(curl -sS --max-time 30 -H "x-astra-api-key: Bearer $token" \
    -H 'content-type: application/json' "http://$1/orders" \
    -d '{"market":"'"$MARKET"'","side":"BUY","type":"MARKET","quantity":0.001,"clientOrderId":"'"$client_id"'"}')
  echo "   ${answer:0:400}"
  check_json "$answer" 'd["status"] == "FILLED" and d["filledQuantity"] == 0.001
    and d["clientOrderId"] == "'"$client_id"'" and d["averagePrice"] > 0' \
    "FILLED 0.001 at $(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["averagePrice"])' "$answer")"
}

# docker build on the host's network (how this host reaches the package registries), its
# output shown only when it fails; $1 the tag, then docker build's arguments.
build_image() {
  local tag=$1 log old
  shift
  log=$(mktemp /tmp/astra-build.XXXXXX)
  old=$(image_id "$tag")
  if ! docker build --network host --build-arg "BASE=$BASE_IMAGE" -t "$tag" "$@" >"$log" 2>&1
  then
    tail -30 "$log" >&2
    rm -f "$log"
    fail "docker build -t $tag"
  fi
  rm -f "$log"
  drop_replaced "$old" "$tag"
  # The builder stages' images (labelled io.astra.stage=builder, left untagged by the
  # classic builder): removed, so repeated runs do not pile them up.
  docker image prune -f --filter label=io.astra.stage=builder >/dev/null
}

image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }

# $1 the id $2 had before a build: removed when the build replaced it (and nothing uses it).
drop_replaced() {
  if [ -n "$1" ] && [ "$1" != "$(image_id "$2")" ]; then
    docker rmi "$1" >/dev/null 2>&1 || true
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

compose_cmd() {
  docker-compose -p "$project" -f docker-compose.yml -f deploy/compose-local.yml "$@"
}

step "base image $BASE_IMAGE"
if [ "$rebuild" -eq 0 ] && docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  ok "exists ($(megabytes "$BASE_IMAGE")), kept (--rebuild to build it again)"
else
  old_base=$(image_id "$BASE_IMAGE")
  build_base
  drop_replaced "$old_base" "$BASE_IMAGE"
  ok "built ($(megabytes "$BASE_IMAGE"))"
fi

step "docker build -t $IMAGE --build-arg BASE=$BASE_IMAGE ."
build_args=()
for var in PIP_INDEX_URL PIP_EXTRA_INDEX_URL; do
  if [ -n "${!var:-}" ]; then build_args+=(--build-arg "$var=${!var}"); fi
done
build_image "$IMAGE" "${build_args[@]}" .
ok "built $IMAGE ($(megabytes "$IMAGE"))"

step "docker run -p 127.0.0.1::8080 -p 127.0.0.1::9090 --env ASTRA_API_KEY=<new key> $IMAGE"
token=$(new_key)
container=astra-check-$$
docker run -d --name "$container" -p 127.0.0.1::8080 -p 127.0.0.1::9090 \
  --env ASTRA_API_KEY="$token" "$IMAGE" >/dev/null
api=$(docker port "$container" 8080/tcp | head -1)
metrics=$(docker port "$container" 9090/tcp | head -1)
ok "container $container: API on $api, metrics on $metrics"

step "health check (HEALTHCHECK in the image)"
wait_healthy "$container" 180
ok "docker reports healthy"
check_api "$api" "$metrics" single all

step "the server's user"
uid=$(docker exec "$container" id -u)
[ "$uid" = 10001 ] || fail "runs as uid $uid"
ok "uid 10001 (astra), /data: $(docker exec "$container" stat -c '%U %a' /data)"

step "stop (SIGTERM)"
docker stop -t 20 "$container" >/dev/null
exit_code=$(docker inspect -f '{{.State.ExitCode}}' "$container")
[ "$exit_code" = 0 ] || fail "exit status $exit_code"
ok "exited 0: $(docker logs "$container" 2>&1 | tail -1)"
docker rm -f -v "$container" >/dev/null
container=""

if [ "$compose" -eq 1 ]; then
  step "docker-compose config (docker-compose.yml as a user runs it)"
  command -v docker-compose >/dev/null || fail "docker-compose is not installed"
  ASTRA_API_KEY=$token docker-compose -f docker-compose.yml config -q
  ok "valid; services: $(ASTRA_API_KEY=$token docker-compose -f docker-compose.yml config \
    --services | tr '\n' ' ')"

  step "stand-ins for the postgres and nats images (deploy/local/ on $BASE_IMAGE)"
  export ASTRA_CHECK_IMAGE=$IMAGE ASTRA_CHECK_POSTGRES_IMAGE=astra-local/postgres:15 \
    ASTRA_CHECK_NATS_IMAGE=astra-local/nats:check ASTRA_API_KEY=$token
  for what in postgres nats; do
    image_var=ASTRA_CHECK_${what^^}_IMAGE
    build_image "${!image_var}" -f "deploy/local/$what.Dockerfile" deploy/local
    ok "${!image_var} ($(megabytes "${!image_var}"))"
  done
  ASTRA_PORT=127.0.0.1:$(free_port)
  ASTRA_METRICS_PORT=127.0.0.1:$(free_port)
  ASTRA_EDGE2_PORT=127.0.0.1:$(free_port)
  ASTRA_EDGE2_METRICS_PORT=127.0.0.1:$(free_port)
  export ASTRA_PORT ASTRA_METRICS_PORT ASTRA_EDGE2_PORT ASTRA_EDGE2_METRICS_PORT
  project=astracheck$$

  step "docker-compose up -d gateway (one gateway, its state in PostgreSQL)"
  compose_cmd up -d --no-build gateway 2>&1 | sed 's/^/   /'
  wait_healthy "$(compose_cmd ps -q gateway)" 180
  ok "gateway healthy; running: $(compose_cmd ps --services --filter status=running | tr '\n' ' ')"
  check_api "$ASTRA_PORT" "$ASTRA_METRICS_PORT" compose all
  step "the order journal and the key are in PostgreSQL"
  rows=$(compose_cmd exec -T postgres psql -U astra -d astra -tA -c \
    "select (select count(*) from orders_journal where request like '%docker-check-compose-$$%'),
            (select count(*) from api_keys where key_id = '${token%%.*}')")
  [ "$rows" = "1|1" ] || fail "journal rows | key rows: $rows"
  ok "1 journal row for the order, 1 row for the key"
  compose_cmd rm -s -f gateway >/dev/null 2>&1

  if docker run --rm "$IMAGE" serve --help | grep -q -- '--role'; then
    step "docker-compose up -d (the cluster: sim, feed, edge1, edge2 on nats and postgres)"
    compose_cmd up -d --no-build 2>&1 | sed 's/^/   /'
    for service in feed edge1 edge2; do
      wait_healthy "$(compose_cmd ps -q "$service")" 180
    done
    ok "feed, edge1, edge2 healthy; running: $(compose_cmd ps --services \
      --filter status=running | tr '\n' ' ')"
    check_api "$ASTRA_PORT" "$ASTRA_METRICS_PORT" edge1 edge
    check_api "$ASTRA_EDGE2_PORT" "$ASTRA_EDGE2_METRICS_PORT" edge2 edge

    step "docker-compose stop feed: both edges must answer 503, not an old book"
    compose_cmd stop feed 2>&1 | sed 's/^/   /'
    stopped=$SECONDS
    for edge in "$ASTRA_PORT" "$ASTRA_EDGE2_PORT"; do
      while :; do
        answer=$(curl -sS --max-time 15 -w ' %{http_code}' -H "x-astra-api-key: Bearer $token" \
          "http://$edge/orderbook?market=$MARKET&depth=1")
        [ "${answer##* }" != 503 ] || break
        [ "$((SECONDS - stopped))" -lt 60 ] || fail "$edge still answers ${answer##* } 60 s on"
        sleep 0.5
      done
      ok "$edge: 503 within $((SECONDS - stopped)) s of the stop: ${answer:0:300}"
    done
  else
    step "the cluster: not run (this image's astra serve has no --role yet)"
  fi
fi

step "done in $((SECONDS - started)) s; image $IMAGE: $(megabytes "$IMAGE")"
docker image ls --format '   {{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E 'astra' || true
