#!/usr/bin/env bash
# End-to-end check of the container deployment: build the image from ./Dockerfile, bring up docker-compose.yml,
# serve, train, restart, and check the volume kept the trained model. Run as root (`make docker-smoke`); it takes
# several minutes, so it is not part of `make test`.
#
# What it does, in order:
#   1. tools: installs docker.io / docker-compose / debootstrap with apt-get when missing; starts dockerd when
#      `docker info` fails (with $SMOKE_DOCKERD_ARGS, default "--storage-driver vfs --iptables=false", log in
#      $SMOKE_WORKDIR/dockerd.log; it is left running afterwards).
#   2. base image: `docker pull python:3.11-slim` (short timeout). When that fails (no Docker Hub), it reuses a
#      local python:3.11-slim if there is one, else builds a stand-in from Debian bookworm packages with
#      debootstrap (Python 3.11, pip, passwd for useradd, python-is-python3 for `python`, ca-certificates plus
#      this machine's CA bundle) and imports it under that tag, labelled seq2seq.smoke.standin=true.
#      PEP 668: the stand-in's /usr/lib/python3.11/EXTERNALLY-MANAGED is removed, so `pip install` as root works
#      as in the real image (which has no such marker) without adding anything to the image's ENV; packages go
#      to /usr/local/lib/python3.11/dist-packages. SMOKE_REBUILD_BASE=1 rebuilds the stand-in.
#   3. image: `docker build` of ./Dockerfile, unchanged; the only build arguments are the optional package
#      mirrors. When pip's find-links here (PIP_FIND_LINKS or `pip config list`) is a directory holding a torch
#      wheel, it is served on loopback and passed as PIP_FIND_LINKS with TORCH_INDEX= and --network host; an
#      http(s) index-url / extra-index-url from pip's configuration is passed through the same way.
#   4. stack: `docker compose` (plugin) or `docker-compose` (v1), project name $SMOKE_PROJECT. docker-compose.yml
#      is used as it is when host port 8000 is free; otherwise a copy with only the published port changed is
#      written to $SMOKE_WORKDIR (compose appends override ports, so an override file cannot move it).
#   5. checks: /readyz, POST /predict {"start":7}, GET /topk?start=7&k=3, the image's psycopg (binary, own
#      libpq), uvloop and httptools; the API key the service generated into /data/api-key; POST /jobs without
#      it (401) and with it (202), polled until succeeded; then down (volume kept), up, and GET /models and
#      /readyz show the trained model still registered and active; finally down -v.
# Exit status 0 only if every step passed. A summary with per-phase times is printed and, with
# SMOKE_RESULTS=FILE, written as JSON.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

IMAGE="${SMOKE_IMAGE:-seq2seq-serve:latest}"
BASE="${SMOKE_BASE:-python:3.11-slim}"
PROJECT="${SMOKE_PROJECT:-seq2seq-smoke}"
WORKDIR="${SMOKE_WORKDIR:-/tmp/seq2seq-docker-smoke}"
DOCKERD_ARGS="${SMOKE_DOCKERD_ARGS:---storage-driver vfs --iptables=false}"
PULL_TIMEOUT="${SMOKE_PULL_TIMEOUT:-30}"
READY_TIMEOUT="${SMOKE_READY_TIMEOUT:-240}"
JOB_TIMEOUT="${SMOKE_JOB_TIMEOUT:-420}"
RESULTS="${SMOKE_RESULTS:-}"
mkdir -p "$WORKDIR"

T0=$(date +%s)
PHASE_NAMES=()
PHASE_SECONDS=()
NOTES=()
CURRENT="setup"
PHASE_T=$T0
STACK_UP=0
WHEEL_PID=""
COMPOSE_FILE="$ROOT/docker-compose.yml"
HOST_PORT=8000
BASE_KIND=""

log() { printf '[docker-smoke %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
note() { NOTES+=("$*"); log "$*"; }
fail() { log "FAILED in '$CURRENT': $*"; exit 1; }
phase() {  # close the running phase, open the next
  local now; now=$(date +%s)
  PHASE_NAMES+=("$CURRENT"); PHASE_SECONDS+=($((now - PHASE_T)))
  CURRENT="$1"; PHASE_T=$now
  log "== $1"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
compose() { "${COMPOSE[@]}" -p "$PROJECT" -f "$COMPOSE_FILE" --project-directory "$ROOT" "$@"; }

summary() {
  local rc=$1 now; now=$(date +%s)
  PHASE_NAMES+=("$CURRENT"); PHASE_SECONDS+=($((now - PHASE_T)))
  local total=$((now - T0)) outcome=passed
  [ "$rc" -eq 0 ] || outcome="FAILED (in '$CURRENT')"
  {
    echo "---------------------------------------------------------------"
    echo "docker-smoke: $outcome, total ${total}s (load average now $(cut -d' ' -f1-3 /proc/loadavg))"
    local i
    for i in "${!PHASE_NAMES[@]}"; do printf '  %-28s %5ss\n' "${PHASE_NAMES[$i]}" "${PHASE_SECONDS[$i]}"; done
    for i in "${NOTES[@]}"; do echo "  note: $i"; done
    echo "---------------------------------------------------------------"
  } >&2
  if [ -n "$RESULTS" ]; then
    mkdir -p "$(dirname "$RESULTS")"
    local phases="" n
    for i in "${!PHASE_NAMES[@]}"; do phases+="$(jq -cn --arg n "${PHASE_NAMES[$i]}" --argjson s "${PHASE_SECONDS[$i]}" '{phase:$n,seconds:$s}')"$'\n'; done
    n=$(printf '%s\n' "${NOTES[@]}" | jq -R . | jq -s 'map(select(length>0))')
    printf '%s' "$phases" | jq -s --arg outcome "$outcome" --argjson total "$total" --argjson notes "$n" \
      --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg host "$(uname -srm), $(nproc) cores" \
      --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" --arg docker "$(docker version --format '{{.Server.Version}}' 2>/dev/null || echo unknown)" \
      --arg compose "${COMPOSE[*]:-none}" --arg base "$BASE_KIND" --arg commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
      '{outcome:$outcome, total_seconds:$total, date:$date, commit:$commit, host:$host, load_average_at_end:$load, docker_server:$docker,
        compose:$compose, base_image:$base, phases:., notes:$notes}' > "$RESULTS"
    log "results written to $RESULTS"
  fi
}

cleanup() {
  local rc=$?
  trap - EXIT
  set +e
  if [ "$STACK_UP" = 1 ]; then
    if [ "$rc" -ne 0 ]; then
      log "container logs (last 80 lines):"
      compose logs --no-color --tail 80 >&2 2>&1
    fi
    if [ "${SMOKE_KEEP:-0}" = 1 ] && [ "$rc" -ne 0 ]; then
      log "SMOKE_KEEP=1: leaving project $PROJECT up; remove it with: ${COMPOSE[*]} -p $PROJECT -f $COMPOSE_FILE down -v"
    else
      compose down -v --remove-orphans >&2 2>&1
    fi
  fi
  [ -n "$WHEEL_PID" ] && kill "$WHEEL_PID" 2>/dev/null
  summary "$rc"
  exit "$rc"
}
trap cleanup EXIT
trap 'fail "command failed (line $LINENO): $BASH_COMMAND"' ERR

# ---------------------------------------------------------------- 1. tools
[ "$(id -u)" = 0 ] || log "warning: not root; apt-get, dockerd and debootstrap need root"
need_pkgs=()
command -v dockerd >/dev/null || need_pkgs+=(docker.io)
command -v docker >/dev/null || need_pkgs+=(docker.io)
command -v curl >/dev/null || need_pkgs+=(curl)
command -v jq >/dev/null || need_pkgs+=(jq)
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then need_pkgs+=(docker-compose); fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "apt-get install ${need_pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd $DOCKERD_ARGS (log: $WORKDIR/dockerd.log)"
  # shellcheck disable=SC2086  # the arguments are meant to split
  nohup dockerd $DOCKERD_ARGS >"$WORKDIR/dockerd.log" 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -20 "$WORKDIR/dockerd.log" >&2; fail "dockerd did not start"; }
  note "started dockerd (pid $(pgrep -n -x dockerd || echo '?'), $DOCKERD_ARGS); it is left running"
fi
# Without the buildx plugin a recent client refuses BuildKit; the classic builder handles this Dockerfile.
docker buildx version >/dev/null 2>&1 || export DOCKER_BUILDKIT=0
log "docker server $(docker version --format '{{.Server.Version}}'), compose: ${COMPOSE[*]}"

# ---------------------------------------------------------------- 2. base image
phase "base image"
debian_mirror() {  # the first bookworm mirror in this machine's apt sources (deb822 or one-line format)
  [ -n "${SMOKE_DEBIAN_MIRROR:-}" ] && { echo "$SMOKE_DEBIAN_MIRROR"; return; }
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk '/^URIs:/{u=$2} /^Suites:/ && / bookworm( |$)/{print u; exit}' "$f")
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk '$1=="deb" && $0 ~ / bookworm / {for(i=2;i<=NF;i++) if ($i ~ /^https?:/) {print $i; exit}}')
  echo "${uri:-http://deb.debian.org/debian}"
}
build_standin() {
  local dir="$WORKDIR/rootfs" mirror; mirror=$(debian_mirror)
  command -v debootstrap >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  rm -rf "$dir"
  log "debootstrap bookworm from $mirror into $dir"
  debootstrap --variant=minbase \
    --include=python3,python3-pip,python3-venv,python-is-python3,passwd,ca-certificates \
    bookworm "$dir" "$mirror" >"$WORKDIR/debootstrap.log" 2>&1 \
    || { tail -20 "$WORKDIR/debootstrap.log" >&2; fail "debootstrap failed (log: $WORKDIR/debootstrap.log)"; }
  # this machine's CA bundle (it may hold a proxy's CA); Debian's pip and Python read this path
  cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/ca-certificates.crt"
  # PEP 668: the real python:3.11-slim has no EXTERNALLY-MANAGED marker; without it Debian's pip installs as root
  rm -f "$dir"/usr/lib/python3*/EXTERNALLY-MANAGED
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/usr/share/doc/* "$dir"/usr/share/man/*
  chroot "$dir" pip --version >/dev/null && chroot "$dir" python --version >/dev/null && chroot "$dir" useradd --help >/dev/null \
    || fail "the stand-in root filesystem lacks pip, python or useradd"
  tar -C "$dir" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'LABEL seq2seq.smoke.standin=true' \
    --change 'CMD ["python3"]' - "$BASE" >/dev/null
  rm -rf "$dir"
}
if [ "${SMOKE_REBUILD_BASE:-0}" != 1 ] && timeout "$PULL_TIMEOUT" docker pull -q "$BASE" >/dev/null 2>&1; then
  BASE_KIND="real $BASE (pulled)"
elif [ "${SMOKE_REBUILD_BASE:-0}" != 1 ] && docker image inspect "$BASE" >/dev/null 2>&1; then
  if [ "$(docker image inspect -f '{{index .Config.Labels "seq2seq.smoke.standin"}}' "$BASE")" = true ]; then
    BASE_KIND="stand-in $BASE from Debian bookworm (reused from an earlier run)"
  else
    BASE_KIND="local $BASE (pull failed; the image already here was used)"
  fi
else
  [ "${SMOKE_REBUILD_BASE:-0}" = 1 ] || log "cannot pull $BASE within ${PULL_TIMEOUT}s; building a stand-in from Debian bookworm"
  build_standin
  BASE_KIND="stand-in $BASE built from Debian bookworm with debootstrap"
fi
note "base image: $BASE_KIND ($(docker run --rm "$BASE" python --version 2>&1))"

# ---------------------------------------------------------------- 3. image
phase "image build"
pip_config() {  # value of a pip option: environment first, then `pip config list`
  local key=$1 env="PIP_$(echo "$1" | tr 'a-z-' 'A-Z_')"
  if [ -n "${!env:-}" ]; then echo "${!env}"; return; fi
  { python3 -m pip config list 2>/dev/null || true; } | sed -n "s/^[a-z:]*\.${key}='\(.*\)'$/\1/p" | head -1
}
http_only() { local v out=(); for v in $1; do case "$v" in http://*|https://*) out+=("$v") ;; esac; done; echo "${out[*]:-}"; }
build_args=()
network=()
wheel_dir="${SMOKE_WHEEL_DIR:-}"
if [ -z "$wheel_dir" ]; then
  for d in $(pip_config find-links); do
    d="${d#file://}"
    if compgen -G "$d/torch-*.whl" >/dev/null; then wheel_dir="$d"; break; fi
  done
fi
if [ -n "$wheel_dir" ]; then
  # a fixed port when free: the URL is a build argument, so a new port would miss the build cache next time
  port="${SMOKE_WHEEL_PORT:-38765}"
  port_free "$port" || port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  python3 -m http.server --bind 127.0.0.1 --directory "$wheel_dir" "$port" >"$WORKDIR/wheels-http.log" 2>&1 &
  WHEEL_PID=$!
  for _ in $(seq 20); do curl -fsS "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.5; done
  build_args+=(--build-arg "PIP_FIND_LINKS=http://127.0.0.1:$port/" --build-arg "TORCH_INDEX=")
  network=(--network host)
  note "torch from this machine's wheels: $wheel_dir served on 127.0.0.1:$port (PIP_FIND_LINKS, TORCH_INDEX=)"
fi
index=$(http_only "$(pip_config index-url)")
extra=$(http_only "$(pip_config extra-index-url)")
[ -n "$index" ] && build_args+=(--build-arg "PIP_INDEX_URL=$index") && network=(--network host)
[ -n "$extra" ] && build_args+=(--build-arg "PIP_EXTRA_INDEX_URL=$extra") && network=(--network host)
log "docker build ${network[*]} ${build_args[*]} -t $IMAGE ."
docker build "${network[@]}" "${build_args[@]}" -t "$IMAGE" . >"$WORKDIR/build.log" 2>&1 \
  || { tail -40 "$WORKDIR/build.log" >&2; fail "docker build failed (log: $WORKDIR/build.log)"; }
[ -n "$WHEEL_PID" ] && { kill "$WHEEL_PID" 2>/dev/null || true; WHEEL_PID=""; }
note "image $IMAGE: $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
docker run --rm --entrypoint python "$IMAGE" -c \
  'import psycopg, uvloop, httptools, sqlalchemy, alembic, torch; print("psycopg", psycopg.__version__, psycopg.pq.__impl__, "libpq", psycopg.pq.version(), "| uvloop", uvloop.__version__, "| sqlalchemy", sqlalchemy.__version__, "| alembic", alembic.__version__, "| torch", torch.__version__)' \
  >"$WORKDIR/imports.txt" 2>"$WORKDIR/imports.err" \
  || { cat "$WORKDIR/imports.txt" "$WORKDIR/imports.err" >&2; fail "the image cannot import its dependencies"; }
note "in the image: $(cat "$WORKDIR/imports.txt")"
grep -q "psycopg .* binary" "$WORKDIR/imports.txt" || fail "psycopg is not using its binary build (libpq) in the image"

# ---------------------------------------------------------------- 4. stack
phase "compose up"
if ! port_free 8000; then
  HOST_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')
  COMPOSE_FILE="$WORKDIR/docker-compose.port-$HOST_PORT.yml"
  sed 's/"8000:8000"/"'"$HOST_PORT"':8000"/' "$ROOT/docker-compose.yml" >"$COMPOSE_FILE"
  grep -q "\"$HOST_PORT:8000\"" "$COMPOSE_FILE" || fail "could not move the published port in a copy of docker-compose.yml"
  note "port 8000 is taken here; published on $HOST_PORT with a copy of docker-compose.yml ($COMPOSE_FILE)"
fi
URL="http://127.0.0.1:$HOST_PORT"
unset SEQ2SEQ_API_KEY  # the empty default: the service generates the key into the volume
compose down -v --remove-orphans >/dev/null 2>&1 || true  # leftovers of an interrupted run
STACK_UP=1
compose up -d --no-build >&2

wait_ready() {
  local deadline=$(( $(date +%s) + READY_TIMEOUT )) body=""
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if body=$(curl -fsS --max-time 3 "$URL/readyz" 2>/dev/null); then echo "$body"; return 0; fi
    sleep 1
  done
  fail "/readyz not 200 within ${READY_TIMEOUT}s (last: $(curl -sS --max-time 3 "$URL/readyz" 2>&1 || true))"
}
ready=$(wait_ready)
log "/readyz: $ready"
[ "$(jq -r .status <<<"$ready")" = ready ] || fail "/readyz: $ready"
note "first start: ready $(( $(date +%s) - PHASE_T ))s after compose up"

phase "inference checks"
pred=$(curl -fsS --max-time 10 "$URL/predict" -H 'content-type: application/json' -d '{"start":7}')
log "/predict: $pred"
jq -e '.sequence[0] == 7 and (.sequence | length) >= 2 and .probability > 0' <<<"$pred" >/dev/null || fail "/predict: $pred"
topk=$(curl -fsS --max-time 10 "$URL/topk?start=7&k=3")
log "/topk: $topk"
jq -e '(.suggestions | length) == 3 and all(.suggestions[]; .sequence[0] == 7)' <<<"$topk" >/dev/null || fail "/topk: $topk"

phase "training job"
KEY=$(compose exec -T api cat /data/api-key | tr -d '[:space:]')
[ -n "$KEY" ] || fail "no generated key in /data/api-key"
JOB='{"dataset":{"generator":"random"},"training":{"steps":50},"activate":"always"}'
code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 "$URL/jobs" -H 'content-type: application/json' -d "$JOB")
[ "$code" = 401 ] || fail "POST /jobs without the key answered $code, not 401"
job=$(curl -fsS --max-time 10 "$URL/jobs" -H 'content-type: application/json' -H "Authorization: Bearer $KEY" -d "$JOB")
JOB_ID=$(jq -r .id <<<"$job")
log "job $JOB_ID submitted"
deadline=$(( $(date +%s) + JOB_TIMEOUT ))
while :; do
  job=$(curl -fsS --max-time 10 "$URL/jobs/$JOB_ID" -H "Authorization: Bearer $KEY")
  status=$(jq -r .status <<<"$job")
  case "$status" in
    succeeded) break ;;
    failed|cancelled) fail "job $JOB_ID $status: $(jq -c '{error, activation_reason}' <<<"$job")" ;;
  esac
  [ "$(date +%s)" -lt "$deadline" ] || fail "job $JOB_ID still $status after ${JOB_TIMEOUT}s"
  sleep 2
done
MODEL_ID=$(jq -r .model_id <<<"$job")
log "job $JOB_ID succeeded: model $MODEL_ID, activated $(jq -r .activated <<<"$job") ($(jq -r .activation_reason <<<"$job"))"
jq -e '.activated == true' <<<"$job" >/dev/null || fail "the job's model was not activated: $(jq -c . <<<"$job")"
[ "$(curl -fsS "$URL/readyz" | jq -r .model)" = "$MODEL_ID" ] || fail "/readyz does not report $MODEL_ID active"
note "training job (50 steps, activate always): $(( $(date +%s) - PHASE_T ))s from submission to a verified active model"

phase "restart (volume kept)"
compose down >&2
docker volume inspect "${PROJECT}_seq2seq-data" >/dev/null || fail "the volume ${PROJECT}_seq2seq-data did not survive down"
compose up -d --no-build >&2
ready=$(wait_ready)
log "/readyz after restart: $ready"
[ "$(jq -r .model <<<"$ready")" = "$MODEL_ID" ] || fail "after the restart /readyz reports $(jq -r .model <<<"$ready"), not $MODEL_ID"
models=$(curl -fsS "$URL/models")
jq -e --arg id "$MODEL_ID" 'any(.[]; .id == $id and .active == true)' <<<"$models" >/dev/null \
  || fail "GET /models after the restart does not list $MODEL_ID as active: $models"
[ "$(compose exec -T api cat /data/api-key | tr -d '[:space:]')" = "$KEY" ] || fail "the generated key changed across the restart"
curl -fsS "$URL/jobs/$JOB_ID" -H "Authorization: Bearer $KEY" | jq -e '.status == "succeeded"' >/dev/null \
  || fail "job $JOB_ID is not recorded as succeeded after the restart"
curl -fsS --max-time 10 "$URL/topk?start=7&k=3" | jq -e --arg id "$MODEL_ID" '.model == $id' >/dev/null \
  || fail "/topk after the restart is not served by $MODEL_ID"
note "after down/up: $MODEL_ID still registered and active, the key and the job record kept"

phase "compose down -v"
compose down -v --remove-orphans >&2
STACK_UP=0
if docker volume inspect "${PROJECT}_seq2seq-data" >/dev/null 2>&1; then fail "down -v left the volume behind"; fi
log "all checks passed"
