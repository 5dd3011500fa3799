#!/usr/bin/env bash
# scripts/test.sh — kstate's whole test suite, as CI runs it (`make test`, .ci/run).
#
#   1. checks the Go toolchain;
#   2. starts a real single-node Apache Kafka with scripts/kafka.sh (fetched from Maven Central on
#      the first run) and exports KSTATE_KAFKA_BROKERS, so broker/kafkatest.Cluster tests run
#      against it; a broker this script started is stopped again on exit, whatever happens;
#   3. go vet ./...;
#   4. scripts/checkgenerate.sh (buf lint, generated code up to date), when present;
#   5. the deploy module (deploy/go.mod: Helm chart, Kustomize, manifest tests; no broker, no
#      cluster): go vet and go test, without -race (Kubernetes' packages are slow to build);
#   6. with KSTATE_CONSOLE_REQUIRED=1 (CI), makes sure a Chromium exists for the console's
#      browser test (processor/console_browser_test.go), installing Debian's chromium package
#      with apt-get when it is missing, and exports KSTATE_CHROMIUM and KSTATE_CONSOLE_OUT;
#   7. go test -race -shuffle=on -count=1 -timeout 30m ./...
#
# The exit code is the first failing step's. go test's own summary lines are the last output.
#
# Environment:
#   KSTATE_KAFKA_BROKERS  already set: test against that cluster; scripts/kafka.sh is not used
#   KSTATE_KAFKA_PORT     port for scripts/kafka.sh (default 19092); see scripts/kafka.sh for more
#   KSTATE_TEST_FLAGS     extra go test flags, e.g. "-run TestFoo -v" (word-split)
#   KSTATE_TEST_PKGS      packages to test (default ./...); when set, the deploy module is skipped
#   KSTATE_CONSOLE_REQUIRED  1: the console's browser test must run (install chromium if missing)
#   KSTATE_CHROMIUM       the browser for that test (default: chromium etc. on PATH)
#   KSTATE_CONSOLE_OUT    where that test saves its screenshots (default .cache/console)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$(pwd)"

t0=$SECONDS
section() {
	printf '\n==== %s (at %ds) ====\n' "$*" "$((SECONDS - t0))"
}
fail() {
	printf 'test.sh: %s\n' "$*" >&2
	exit 1
}

section "Go toolchain"
command -v go >/dev/null 2>&1 || fail "go not found on PATH: kstate needs Go 1.26 or newer"
go version
gov="$(go env GOVERSION)"
gov="${gov#go}"
major="${gov%%.*}"
minor="$(echo "$gov" | cut -d. -f2)"
minor="${minor%%[!0-9]*}"
if ! [[ "$major" =~ ^[0-9]+$ && "$minor" =~ ^[0-9]+$ ]] || ((major < 1 || (major == 1 && minor < 26))); then
	fail "Go $gov found, kstate needs Go 1.26 or newer"
fi

section "Kafka"
kafka_started=0
stop_kafka() {
	local rc=$?
	if ((kafka_started)); then
		# Quietly: go test's summary must stay the last lines. The output goes to a file.
		if ! bash scripts/kafka.sh stop >"$REPO/.cache/kafka-stop.log" 2>&1; then
			echo "test.sh: stopping Kafka failed; see .cache/kafka-stop.log" >&2
			((rc == 0)) && rc=1
		fi
	fi
	exit "$rc"
}
trap stop_kafka EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -n "${KSTATE_KAFKA_BROKERS:-}" ]]; then
	echo "using the Kafka cluster in KSTATE_KAFKA_BROKERS=$KSTATE_KAFKA_BROKERS (scripts/kafka.sh not used)"
elif bash scripts/kafka.sh status; then
	# Someone (make kafka-start) runs it already: use it, and leave it running afterwards.
	# Tests name their topics with kafkatest.Unique, so earlier runs' topics do not collide.
	export KSTATE_KAFKA_BROKERS="127.0.0.1:${KSTATE_KAFKA_PORT:-19092}"
else
	mkdir -p "$REPO/.cache"
	kafka_started=1
	addr="$(bash scripts/kafka.sh start)" || fail "could not start Kafka (see the messages above)"
	export KSTATE_KAFKA_BROKERS="$addr"
fi
echo "KSTATE_KAFKA_BROKERS=$KSTATE_KAFKA_BROKERS"

section "gofmt"
unformatted="$(gofmt -l $(git ls-files '*.go'))"
if [[ -n "$unformatted" ]]; then
	fail "gofmt needed on: $unformatted (run: gofmt -w <files>)"
fi
echo "gofmt: ok"

section "go vet ./..."
go vet ./...
echo "go vet: ok"

if [[ -f scripts/checkgenerate.sh ]]; then
	section "checkgenerate (buf lint, generated code up to date)"
	bash scripts/checkgenerate.sh
fi

# A nested module: the root's ./... (vet, test) does not descend into deploy/.
if [[ -z "${KSTATE_TEST_PKGS:-}" ]]; then
	section "deploy module: go vet, go test -count=1 ./... (Helm chart, Kustomize, Dockerfile)"
	(cd deploy && go vet ./... && go test -count=1 -timeout 15m ./...)
fi

section "Chromium (the console's browser test)"
find_chromium() {
	if [[ -n "${KSTATE_CHROMIUM:-}" ]]; then
		command -v "$KSTATE_CHROMIUM"
		return
	fi
	local b
	for b in chromium chromium-browser google-chrome headless-shell; do
		command -v "$b" && return 0
	done
	return 1
}
# install_chromium: Debian's chromium package, as root or with password-less sudo. The first
# attempt uses the package lists as they are; a failure refreshes them and tries again.
install_chromium() {
	local -a sudo=()
	if ((EUID != 0)); then
		sudo -n true 2>/dev/null || return 1
		sudo=(sudo -n)
	fi
	command -v apt-get >/dev/null 2>&1 || return 1
	mkdir -p "$REPO/.cache"
	local logf="$REPO/.cache/chromium-install.log"
	echo "installing Debian's chromium with apt-get (log: .cache/chromium-install.log)"
	export DEBIAN_FRONTEND=noninteractive
	timeout 900 "${sudo[@]}" apt-get install -y chromium >"$logf" 2>&1 && return 0
	timeout 300 "${sudo[@]}" apt-get update >>"$logf" 2>&1 || true
	timeout 900 "${sudo[@]}" apt-get install -y chromium >>"$logf" 2>&1
}
if chromium_bin="$(find_chromium)"; then
	:
elif [[ "${KSTATE_CONSOLE_REQUIRED:-}" == 1 ]]; then
	install_chromium || fail "KSTATE_CONSOLE_REQUIRED=1, no Chromium found, and apt-get install chromium failed or is not possible here (needs root or password-less sudo, and apt-get; see .cache/chromium-install.log). Install Chromium, or set KSTATE_CHROMIUM to a browser binary."
	chromium_bin="$(find_chromium)" || fail "apt-get installed chromium, but no chromium binary is on PATH"
fi
if [[ -n "${chromium_bin:-}" ]]; then
	export KSTATE_CHROMIUM="$chromium_bin"
	export KSTATE_CONSOLE_OUT="${KSTATE_CONSOLE_OUT:-$REPO/.cache/console}"
	echo "KSTATE_CHROMIUM=$KSTATE_CHROMIUM ($("$chromium_bin" --version 2>/dev/null || echo "version unknown"))"
	echo "KSTATE_CONSOLE_OUT=$KSTATE_CONSOLE_OUT (screenshots of the console's browser test)"
else
	echo "no Chromium: the console's browser test will be skipped (KSTATE_CONSOLE_REQUIRED=1 installs it)"
fi

pkgs="${KSTATE_TEST_PKGS:-./...}"
section "go test -race -shuffle=on -count=1 -timeout 30m $pkgs"
# shellcheck disable=SC2086 # flags and package patterns are word-split on purpose
go test -race -shuffle=on -count=1 -timeout 30m ${KSTATE_TEST_FLAGS:-} $pkgs
