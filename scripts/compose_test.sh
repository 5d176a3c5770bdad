#!/usr/bin/env bash
# compose_test.sh: the docker compose local cluster, tested for real.
#
# Builds the offline images (deploy/compose/offline/build.sh: static binaries
# FROM scratch, nothing pulled), brings the cluster up with 3 workers and
# then, while LeNet trains on MNIST:
#   1. docker kill the leading coordinator -> the standby leads;
#   2. docker network disconnect a worker -> it is evicted within the lease
#      TTL, the rest go on; reconnected, it rejoins or exits cleanly;
#   3. docker kill another worker     -> the run goes on;
# and checks the final test accuracy (>= RINGTRAIN_COMPOSE_MIN_ACC), exact-once
# sample accounting per epoch over every worker's sample log, clean exits of
# the surviving workers, and that `down -v` leaves no containers, networks or
# volumes behind. Exits 0 with "skipped: no docker" without a Docker engine.
#
# Environment: COMPOSE (default: `docker compose` if present, else
# docker-compose), RINGTRAIN_COMPOSE_EPOCHS (2), RINGTRAIN_COMPOSE_IMPORT_LIMIT
# (1000 samples per split into S3; 0 = all 70000), RINGTRAIN_COMPOSE_MIN_ACC
# (0.97), RINGTRAIN_COMPOSE_REJOIN_S (180: how long a reconnected worker may
# take to rejoin or exit), RINGTRAIN_COMPOSE_KEEP=1 keeps the cluster up on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
dir="$root/deploy/compose"
bin="$dir/.bin"

if ! docker info >/dev/null 2>&1; then
	echo "compose_test: skipped: no docker (docker info failed)"
	exit 0
fi
if [ -z "${COMPOSE:-}" ]; then
	if docker compose version >/dev/null 2>&1; then
		COMPOSE="docker compose"
	elif command -v docker-compose >/dev/null; then
		COMPOSE="docker-compose"
	else
		echo "compose_test: skipped: no docker compose / docker-compose"
		exit 0
	fi
fi

EPOCHS=${RINGTRAIN_COMPOSE_EPOCHS:-2}
MIN_ACC=${RINGTRAIN_COMPOSE_MIN_ACC:-0.97}
REJOIN_S=${RINGTRAIN_COMPOSE_REJOIN_S:-180}
export RINGTRAIN_COMPOSE_IMPORT_LIMIT=${RINGTRAIN_COMPOSE_IMPORT_LIMIT:-1000}
JOB=mnist
N=60000
STEPS=$((EPOCHS * N / 96)) # global batch 96 divides 60000
P="rtct$$"
t0=$(date +%s)
tmp="$(mktemp -d)"
export RINGTRAIN_COMPOSE_JOB="$tmp/job.yaml"
sed "s/^epochs: .*/epochs: $EPOCHS/" "$dir/job.yaml" >"$RINGTRAIN_COMPOSE_JOB"

log() { printf '[compose_test %s +%4ds] %s\n' "$(date -u +%H:%M:%S)" $(($(date +%s) - t0)) "$*" >&2; }
fail() {
	log "FAIL: $*"
	exit 1
}
failures=()
soft_fail() { # a failed check after which the others still run
	log "FAIL (continuing with the other checks): $*"
	failures+=("$*")
}
dc() { $COMPOSE -p "$P" -f "$dir/docker-compose.yml" -f "$dir/docker-compose.offline.yml" -f "$dir/docker-compose.test.yml" "$@"; }
cleanup() {
	local rc=$?
	if [ "$rc" -ne 0 ]; then
		log "logs of the failed run (tail):"
		dc logs --no-color --tail=30 coordinator-a coordinator-b worker import 2>&1 | tail -150 >&2 || true
		if [ "${RINGTRAIN_COMPOSE_KEEP:-0}" = 1 ]; then
			log "RINGTRAIN_COMPOSE_KEEP=1: leaving project $P up"
			exit "$rc"
		fi
	fi
	dc down -v --remove-orphans >/dev/null 2>&1 || true
	rm -rf "$tmp"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ids CONTAINER...: the containers of a service, by compose labels (the
# names differ between compose v1 and v2).
ids() { docker ps -aq --no-trunc --filter "label=com.docker.compose.project=$P" --filter "label=com.docker.compose.service=$1"; }
running() { docker ps -q --no-trunc --filter "label=com.docker.compose.project=$P" --filter "label=com.docker.compose.service=$1"; }
ip_of() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$1" | awk '{print $1}'; }

# state prints the job's JSON view (check state) or nothing if etcd does
# not answer; field FIELD prints one field of it.
state() { "$bin/check" state -etcd "$ETCD" -job "$JOB" -timeout 3s 2>/dev/null || true; }
field() { python3 -c 'import json,sys
try: v=json.load(sys.stdin)
except Exception: sys.exit(0)
x=v.get(sys.argv[1])
print(" ".join(x) if isinstance(x,list) else ("true" if x is True else "false" if x is False else x))' "$1"; }
step() { state | field step; }
# wait_for WHAT TIMEOUT CMD...: poll CMD every second.
wait_for() {
	local what=$1 timeout=$2 start
	shift 2
	start=$(date +%s)
	until "$@"; do
		if (($(date +%s) - start > timeout)); then
			fail "timed out after ${timeout}s waiting for $what"
		fi
		sleep 1
	done
}
# cw COND: wait (check wait) for a condition of the job; prints "SECONDS VIEW".
cw() { "$bin/check" wait -etcd "$ETCD" -job "$JOB" -steps "$STEPS" -timeout 600s -stall 120s "$1" || fail "waiting for $1"; }
now() { date +%s.%N; }
since() { python3 -c "import sys,time; print(round(time.time()-float(sys.argv[1]), 2))" "$1"; }
exited() { [ "$(docker inspect -f '{{.State.Running}}' "$1")" = false ]; }
ring_size_is() { [ "$(state | field ring | wc -w)" = "$1" ]; }

log "using $COMPOSE ($($COMPOSE version --short 2>/dev/null || $COMPOSE version | head -1)), project $P, $EPOCHS epoch(s) = $STEPS steps"
"$dir/offline/build.sh"
log "building images"
dc build >"$tmp/build.log" 2>&1 || { tail -30 "$tmp/build.log" >&2; fail "compose build"; }
tb=$(date +%s)
log "compose up: etcd, s3 (versitygw), nats, 2 coordinators, 3 workers, import"
dc up -d --scale worker=3 >"$tmp/up.log" 2>&1 || { tail -30 "$tmp/up.log" >&2; fail "compose up"; }
ETCD="http://$(ip_of "$(ids etcd)"):2379"
log "up and healthy in $(($(date +%s) - tb))s; etcd at $ETCD"
up_s=$(($(date +%s) - tb))

# The import service: MNIST into S3, then submit.
imp=$(ids import)
wait_for "the import service to finish" 600 exited "$imp"
code=$(docker inspect -f '{{.State.ExitCode}}' "$imp")
[ "$code" = 0 ] || fail "import service exited with $code: $(docker logs "$imp" 2>&1 | tail -5)"
docker logs "$imp" 2>&1 | grep -E "imported|submitted" | sed 's/^/    /' >&2
import_s=$(($(date +%s) - tb - up_s))
log "import + submit done in ${import_s}s"
ts=$(date +%s)

workers=($(running worker))
[ "${#workers[@]}" = 3 ] || fail "want 3 running workers, have ${#workers[@]}"
wait_for "a ring of 3 workers" 120 ring_size_is 3
log "ring of 3 formed: $(state)"

# The three faults follow each other as soon as the previous one is
# absorbed: coordinator kill, partition (eviction, rejoin), worker kill (training on an idle machine runs ~20 steps/s, on a loaded one a
# third of that); each must hit the run mid-epoch, well before its end.
mid() { (($1 < STEPS - 50)) || fail "training reached step $1 of $STEPS before $2: too fast for this schedule"; }

cw step\>=30 >/dev/null
# 1. docker kill the leading coordinator (fast, training goes on).
leader=$(state | field leader)
case "$leader" in
coordinator-a) standby=coordinator-b ;;
coordinator-b) standby=coordinator-a ;;
*) fail "status leader is '$leader'" ;;
esac
c_step=$(step)
mid "$c_step" "the coordinator kill"
t2=$(now)
docker kill "$(ids "$leader")" >/dev/null
cw "leader=$standby" >/dev/null
takeover=$(since "$t2")
log "1. killed the leading $leader at step $c_step: $standby leads after ${takeover}s"

# 2. partition a worker: disconnect it from the compose network.
part=${workers[1]}
part_id="${part:0:12}-1"
net=$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}' "$part" | awk '{print $1}')
state | field members | grep -qw -- "$part_id" || fail "member $part_id of container ${part:0:12} not registered: $(state)"
p_step=$(step)
mid "$p_step" "the partition"
ip_before=$(ip_of "$part")
t3=$(now)
docker network disconnect "$net" "$part"
cw "member-gone=$part_id" >/dev/null
evict_s=$(since "$t3")
p2=$(step)
cw "step>=$((p2 + 5 < STEPS ? p2 + 5 : STEPS))" >/dev/null
log "2. disconnected worker $part_id at step ~$p_step: evicted after ${evict_s}s (lease TTL 2s); the rest went on to step $((p2 + 5)) $(since "$t3")s after the cut"
docker network connect "$net" "$part"
r_at=$(date +%s)
log "   reconnected: address $ip_before before the cut, $(ip_of "$part") after"
rejoin=""
while [ -z "$rejoin" ]; do
	if (($(date +%s) - r_at > REJOIN_S)); then
		rejoin="neither rejoined nor exited within ${REJOIN_S}s"
		soft_fail "reconnected worker $part_id $rejoin; its last log lines:
$(docker logs "$part" 2>&1 | tail -3)"
		break
	fi
	if [ "$(docker inspect -f '{{.State.Running}}' "$part")" = false ]; then
		code=$(docker inspect -f '{{.State.ExitCode}}' "$part")
		[ "$code" = 0 ] || fail "reconnected worker exited with $code: $(docker logs "$part" 2>&1 | tail -5)"
		rejoin="exited cleanly (code 0) after $(($(date +%s) - r_at))s"
	elif state | field ring | grep -qw -- "$part_id"; then
		rejoin="rejoined the ring after $(($(date +%s) - r_at))s"
	else
		sleep 0.5
	fi
done
log "   reconnected: it $rejoin; $(state)"

# 3. docker kill a worker mid-run.
victim=${workers[2]}
k_step=$(step)
k_gen=$(state | field generation)
mid "$k_step" "the worker kill"
t1=$(now)
docker kill "$victim" >/dev/null
cw "gen>=$((k_gen + 1))" >/dev/null
g_s=$(since "$t1")
s1=$(step)
cw "step>=$((s1 + 1 < STEPS ? s1 + 1 : STEPS))" >/dev/null
kill_recovery=$(since "$t1")
log "3. killed worker ${victim:0:12} at step ~$k_step: new ring generation after ${g_s}s, next completed step after ${kill_recovery}s"

# The run finishes.
cw done >/dev/null
train_s=$(($(date +%s) - ts))
log "training finished in ${train_s}s: $(state)"
exiting=("${workers[0]}")
[[ "$rejoin" == neither* ]] || exiting+=("$part")
for w in "${exiting[@]}"; do
	wait_for "worker ${w:0:12} to exit" 120 exited "$w"
	code=$(docker inspect -f '{{.State.ExitCode}}' "$w")
	[ "$code" = 0 ] || fail "worker ${w:0:12} exited with $code: $(docker logs "$w" 2>&1 | tail -5)"
done
for w in "${workers[@]}"; do
	if docker logs "$w" 2>&1 | grep -q "replicas diverged"; then fail "worker ${w:0:12} reported diverged replicas"; fi
done

# Accuracy: the evaluation after the last epoch, from the workers' logs.
acc=$(for w in "${workers[@]}"; do docker logs "$w" 2>&1; done | grep 'msg=evaluation' | grep " epoch=$EPOCHS " |
	sed -n 's/.*accuracy=\([0-9.]*\).*/\1/p' | head -1)
[ -n "$acc" ] || fail "no evaluation after epoch $EPOCHS in the workers' logs"
python3 -c "import sys; sys.exit(0 if $acc >= $MIN_ACC else 1)" || fail "test accuracy $acc < $MIN_ACC"
log "test accuracy after $EPOCHS epoch(s): $acc (bar $MIN_ACC)"

# Exact-once accounting over every worker's sample log (the killed one's too).
samples=$(docker volume ls -q --filter "label=com.docker.compose.project=$P" | grep '_samples$')
acct=$(docker run --rm --network none -v "$samples:/samples:ro" -v "$bin/check:/check:ro" --entrypoint /check \
	ringtrain-offline/ringtrain:local accounting -dir /samples -n $N -epochs "$EPOCHS") || fail "sample accounting: $acct"
log "$acct"

# The bucket holds the imported dataset.
ls_out=$(docker run --rm --network "$net" -e RINGTRAIN_S3_ACCESS_KEY=ringtrain -e RINGTRAIN_S3_SECRET_KEY=ringtrain-secret \
	ringtrain-offline/ringtrain:local data ls --s3-endpoint http://s3:9000 s3://ringtrain/mnist 2>&1) || fail "data ls: $ls_out"
log "s3://ringtrain/mnist: $(echo "$ls_out" | tr '\n' ' ' | cut -c1-200)"

# Precise fault timings from the containers' own clocks and logs (the
# polling above adds the tools' start-up time on a loaded machine).
timing() { # timing FINISHED_AT|EPOCH CONTAINER REGEX: seconds from the event to the first log line matching REGEX
	docker logs "$2" 2>&1 | python3 -c '
import re, sys, datetime
t0 = sys.argv[1]
def ts(x):
    x = x.rstrip("Z")
    if "." in x:
        a, b = x.split("."); x = a + "." + b[:6]
    return datetime.datetime.fromisoformat(x).replace(tzinfo=datetime.timezone.utc).timestamp()
t0 = float(t0) if re.fullmatch(r"[0-9.]+", t0) else ts(t0)
for line in sys.stdin:
    m = re.match(r"time=(\S+) ", line)
    if m and re.search(sys.argv[2], line) and ts(m.group(1)) >= t0 - 0.5:
        print(round(ts(m.group(1)) - t0, 2)); break
else:
    print("?")' "$1" "$3"
}
killed_at=$(docker inspect -f '{{.State.FinishedAt}}' "$victim")
ring_after_kill=$(timing "$killed_at" "${workers[0]}" "ring formed.* gen=$((k_gen + 1)) ")
coord_killed_at=$(docker inspect -f '{{.State.FinishedAt}}' "$(ids "$leader")")
lead_after_kill=$(timing "$coord_killed_at" "$(ids "$standby")" "leading job")
evicted_after="?"
for c in $(ids coordinator-a) $(ids coordinator-b); do # whichever led at the cut published the ring
	e=$(timing "$t3" "$c" "ring generation published.*left=\\[[^]]*$part_id")
	[ "$e" = "?" ] || { evicted_after=$e; break; }
done
log "from the logs: new ring ${ring_after_kill}s after the worker was killed; $standby led ${lead_after_kill}s after $leader was killed; ring without $part_id published ${evicted_after}s after the disconnect"

# Teardown leaves nothing behind.
td=$(date +%s)
dc down -v --remove-orphans >/dev/null 2>&1
left="$(docker ps -aq --filter "label=com.docker.compose.project=$P")$(docker network ls -q --filter "label=com.docker.compose.project=$P")$(docker volume ls -q --filter "label=com.docker.compose.project=$P")"
[ -z "$left" ] || fail "left behind after down -v: $left"
log "down -v in $(($(date +%s) - td))s: no containers, networks or volumes left"
summary="up ${up_s}s, import+submit ${import_s}s, training ${train_s}s; worker kill: new ring after ${ring_after_kill}s (polled: next step ${kill_recovery}s); coordinator takeover ${lead_after_kill}s (polled ${takeover}s); partition: evicted after ${evicted_after}s (polled ${evict_s}s), reconnected worker $rejoin; accuracy $acc"
if ((${#failures[@]})); then
	log "FAIL in $(($(date +%s) - t0))s: ${#failures[@]} check(s) failed: ${failures[*]}"
	log "$summary"
	exit 1
fi
log "PASS in $(($(date +%s) - t0))s: $summary"
