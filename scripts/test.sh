#!/usr/bin/env bash
# The README's test command. On a fresh Debian machine with Go 1.26 it
# installs everything the suites need (PyTorch for golden values, the real
# datasets and photos, a real S3 server) and runs every test, slow ones too.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(python3-torch python3-torchvision python3-numpy python3-pil python3-skimage dataset-fashion-mnist darknet qemu-user)
missing=()
for p in "${pkgs[@]}"; do
	dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	echo "test.sh: installing ${missing[*]}" >&2
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

export PATH="$(go env GOPATH)/bin:$PATH"
if ! command -v versitygw >/dev/null; then
	echo "test.sh: installing versitygw (S3 server for integration tests)" >&2
	go install github.com/versity/versitygw/cmd/versitygw@v1.8.0
fi

go vet ./...
# RINGTRAIN_SLOW=1 runs the suites kept out of a plain `go test ./...`
# (PyTorch comparisons of the deep nets, multi-process cluster runs).
RINGTRAIN_SLOW=1 go test -count=1 -timeout 75m ./...

# The kernels' other paths, which this CPU would not pick by itself: AVX2 and
# portable Go forced with RINGTRAIN_KERNELS (the kernels' property tests and
# every layer's PyTorch golden values, ~1 minute each), then the portable
# path on arm64 for real, emulated by qemu-user (~6 minutes).
for path in avx2 generic; do
	if [ "$path" = avx2 ] && ! grep -qw avx2 /proc/cpuinfo; then
		continue
	fi
	echo "test.sh: nn suites with RINGTRAIN_KERNELS=$path" >&2
	RINGTRAIN_KERNELS=$path go test -count=1 ./nn/...
done
echo "test.sh: nn suites on arm64 (qemu-aarch64)" >&2
GOARCH=arm64 go vet ./...
GOARCH=arm64 go test -count=1 -timeout 30m -exec qemu-aarch64 ./nn/...

# The docker compose local cluster (deploy/compose), tested for real: offline
# images, MNIST from S3 through a coordinator kill, a network partition and a
# worker kill (~5 minutes once the offline binaries are cached in
# deploy/compose/.bin, ~4 more to build etcd, nats-server and versitygw the
# first time). Prints "skipped: no docker" and exits 0 where no Docker engine
# answers. The timeout also ends its containers (the script tears the
# cluster down on TERM). A failed run is retried once, saying so: its fault
# timings depend on the host's scheduling, and a second failure is a failure.
if ! timeout -k 60 20m ./scripts/compose_test.sh; then
	echo "test.sh: compose_test failed; retrying once" >&2
	timeout -k 60 20m ./scripts/compose_test.sh
fi
