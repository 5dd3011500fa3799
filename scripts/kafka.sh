#!/usr/bin/env bash
# scripts/kafka.sh — a real single-node Apache Kafka 4.x (KRaft) for kstate's tests and local work.
#
#   scripts/kafka.sh start    fetch the broker jars if needed, format storage, start, wait until ready
#   scripts/kafka.sh stop     stop the broker and wipe its data
#   scripts/kafka.sh status   say whether it runs (exit 0) or not (exit 3)
#   scripts/kafka.sh path     fetch the jars if needed and print their folder (java -cp "$DIR/*" ...)
#   scripts/kafka.sh fetch    only fetch the jars
#   scripts/kafka.sh logs     print the path of the server log
#
# How it works: Maven resolves org.apache.kafka:kafka_2.13 and kafka-tools (scripts/kafka/pom.xml,
# plugin versions pinned) from Maven Central and copies the jars into
# $KSTATE_KAFKA_CACHE/<version>/libs. `start` writes server.properties from
# scripts/kafka/server.properties.template, formats the KRaft storage with kafka.tools.StorageTool,
# launches kafka.Kafka in the background with `java -cp`, and polls (with a deadline) until
# org.apache.kafka.tools.BrokerApiVersionsCommand gets an answer from the client port. Only bash,
# java (17+) and mvn are needed; no Kafka install, no Go.
#
# Environment (all optional):
#   KSTATE_KAFKA_PORT             client port on 127.0.0.1 (default 19092)
#   KSTATE_KAFKA_CONTROLLER_PORT  KRaft controller port (default: first free port above the client port)
#   KSTATE_KAFKA_VERSION          Kafka version; default: the newest of KAFKA_VERSIONS below that resolves
#   KSTATE_KAFKA_CACHE            jar cache (default $REPO/.cache/kafka; gitignored)
#   KSTATE_KAFKA_STATE            pid, log, config and data of the running broker
#                                 (default $REPO/.cache/kafka-run/<port>)
#   KSTATE_KAFKA_START_TIMEOUT    seconds to wait for the broker to answer (default 120)
#   KSTATE_KAFKA_HEAP_OPTS        JVM heap flags (default "-Xms256m -Xmx1g")
#   KSTATE_MAVEN_REPO             Maven local repository (default: Maven's own, ~/.m2/repository)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"

# Newest first. The first one Maven Central serves wins, unless KSTATE_KAFKA_VERSION is set.
KAFKA_VERSIONS=(4.4.0 4.3.1 4.2.0 4.1.1 4.0.1)

PORT="${KSTATE_KAFKA_PORT:-19092}"
CACHE="${KSTATE_KAFKA_CACHE:-$REPO/.cache/kafka}"
STATE="${KSTATE_KAFKA_STATE:-$REPO/.cache/kafka-run/$PORT}"
START_TIMEOUT="${KSTATE_KAFKA_START_TIMEOUT:-120}"
HEAP_OPTS="${KSTATE_KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"

PID_FILE="$STATE/kafka.pid"
LOG_FILE="$STATE/server.log"
CONF_FILE="$STATE/server.properties"
INFO_FILE="$STATE/kafka.info"
DATA_DIR="$STATE/data"

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() {
	printf 'kafka.sh: error: %s\n' "$*" >&2
	exit 1
}

is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }

check_port_var() { # name value
	if ! is_uint "$2" || (($2 < 1 || $2 > 65535)); then
		die "$1=$2 is not a TCP port (1-65535)"
	fi
}

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

need_java() {
	command -v java >/dev/null 2>&1 || die "java not found on PATH: Kafka 4.x needs a Java 17+ runtime (e.g. apt-get install openjdk-17-jre-headless)"
	local v
	v="$(java -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')"
	local major="${v%%.*}"
	[[ "$major" == 1 ]] && major="$(echo "$v" | cut -d. -f2)"
	if ! is_uint "$major" || ((major < 17)); then
		die "java $v found on PATH, but Kafka 4.x needs Java 17 or newer"
	fi
}

need_mvn() {
	command -v mvn >/dev/null 2>&1 || die "mvn not found on PATH: it fetches the Kafka jars from Maven Central (e.g. apt-get install maven), or pre-fill $CACHE/<version>/libs"
}

# with_lock FILE CMD...: run CMD while holding an exclusive lock on FILE (when flock exists), so two
# concurrent `start`s do not download or launch twice.
with_lock() {
	local file="$1"
	shift
	mkdir -p "$(dirname "$file")"
	if command -v flock >/dev/null 2>&1; then
		(
			if ! flock -w 300 9; then
				log "could not lock $file in 300 s (a hung kafka.sh, or a broker started by an older kafka.sh holds it); going on without the lock"
			fi
			"$@"
		) 9>"$file"
	else
		"$@"
	fi
}

# fetch_version V: copy Kafka V's jars into $CACHE/V/libs; fails when Maven cannot resolve V.
fetch_version() {
	local v="$1" dir="$CACHE/$1"
	[[ -f "$dir/.complete" ]] && return 0
	need_mvn
	local tmp="$dir.tmp.$$" mvnlog="$CACHE/mvn-$1.log"
	rm -rf "$tmp"
	mkdir -p "$tmp"
	local -a args=(-B -q -Dstyle.color=never -f "$SCRIPT_DIR/kafka/pom.xml" "-Dkafka.version=$v"
		dependency:copy-dependencies -DincludeScope=runtime "-DoutputDirectory=$tmp/libs")
	[[ -n "${KSTATE_MAVEN_REPO:-}" ]] && args=("-Dmaven.repo.local=$KSTATE_MAVEN_REPO" "${args[@]}")
	log "fetching Apache Kafka $v jars from Maven Central into $dir (first time only, ~45 MB)"
	local start=$SECONDS
	if ! mvn "${args[@]}" >"$mvnlog" 2>&1; then
		rm -rf "$tmp"
		log "Maven could not resolve Kafka $v (log: $mvnlog):"
		{ grep -m 1 -E 'Could not|Failed to' "$mvnlog" || tail -n 5 "$mvnlog"; } | sed 's/\x1b\[[0-9;]*m//g' >&2
		return 1
	fi
	[[ -f "$tmp/libs/kafka_2.13-$v.jar" ]] || {
		rm -rf "$tmp"
		log "Maven ran, but $tmp/libs/kafka_2.13-$v.jar is missing (log: $mvnlog)"
		return 1
	}
	rm -rf "$dir"
	mv "$tmp" "$dir"
	touch "$dir/.complete"
	log "fetched Kafka $v in $((SECONDS - start)) s"
}

fetch_any() {
	if [[ -n "${KSTATE_KAFKA_VERSION:-}" ]]; then
		fetch_version "$KSTATE_KAFKA_VERSION" || die "could not fetch Kafka $KSTATE_KAFKA_VERSION (KSTATE_KAFKA_VERSION)"
		echo "$KSTATE_KAFKA_VERSION"
		return
	fi
	local v
	for v in "${KAFKA_VERSIONS[@]}"; do
		if fetch_version "$v"; then
			echo "$v"
			return
		fi
	done
	die "none of Kafka ${KAFKA_VERSIONS[*]} could be fetched with Maven; check network access to Maven Central (logs in $CACHE/mvn-*.log)"
}

# resolve: print the version to use, fetching it when it is not cached yet.
resolve() {
	mkdir -p "$CACHE"
	with_lock "$CACHE/.lock" fetch_any
}

# running: true when the pid file names a live Kafka JVM.
running() {
	[[ -f "$PID_FILE" ]] || return 1
	local pid
	pid="$(cat "$PID_FILE" 2>/dev/null)"
	is_uint "$pid" || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	# Guard against a recycled pid.
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka'
}

# api_versions LIBS: one ApiVersions round trip to the client port.
api_versions() {
	timeout 30 java -Xmx128m -XX:TieredStopAtLevel=1 -cp "$1/*" \
		-Dlog4j2.configurationFile="$SCRIPT_DIR/kafka/log4j2.properties" -Dlog4j2.level=WARN \
		org.apache.kafka.tools.BrokerApiVersionsCommand --bootstrap-server "127.0.0.1:$PORT" >/dev/null 2>&1
}

pick_controller_port() {
	if [[ -n "${KSTATE_KAFKA_CONTROLLER_PORT:-}" ]]; then
		check_port_var KSTATE_KAFKA_CONTROLLER_PORT "$KSTATE_KAFKA_CONTROLLER_PORT"
		[[ "$KSTATE_KAFKA_CONTROLLER_PORT" != "$PORT" ]] || die "KSTATE_KAFKA_CONTROLLER_PORT must differ from the client port $PORT"
		port_open "$KSTATE_KAFKA_CONTROLLER_PORT" && die "controller port $KSTATE_KAFKA_CONTROLLER_PORT (KSTATE_KAFKA_CONTROLLER_PORT) is already in use"
		echo "$KSTATE_KAFKA_CONTROLLER_PORT"
		return
	fi
	local p
	for ((p = PORT + 1; p <= PORT + 100 && p <= 65535; p++)); do
		if ! port_open "$p"; then
			echo "$p"
			return
		fi
	done
	die "no free controller port in $((PORT + 1))-$((PORT + 100)); set KSTATE_KAFKA_CONTROLLER_PORT"
}

do_start() {
	if running; then
		log "already running (pid $(cat "$PID_FILE"), 127.0.0.1:$PORT); nothing to do"
		echo "127.0.0.1:$PORT"
		return 0
	fi
	if port_open "$PORT"; then
		die "port $PORT on 127.0.0.1 is in use by another process (not a broker started from $STATE); stop it or set KSTATE_KAFKA_PORT"
	fi
	need_java
	local version libs cport
	version="$(resolve)"
	libs="$CACHE/$version/libs"
	cport="$(pick_controller_port)"

	# A previous broker that died leaves data behind; start clean so tests see an empty cluster.
	rm -rf "$DATA_DIR" "$PID_FILE"
	mkdir -p "$DATA_DIR"
	sed -e "s|@PORT@|$PORT|g" -e "s|@CONTROLLER_PORT@|$cport|g" -e "s|@DATA_DIR@|$DATA_DIR|g" \
		"$SCRIPT_DIR/kafka/server.properties.template" >"$CONF_FILE"

	# A cluster id is 16 random bytes, URL-safe base64 without padding (what `kafka-storage random-uuid` prints).
	# It starts with '-' one time in 64: passed as --cluster-id=ID, never as a separate argument.
	local cluster_id
	cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
	local -a jvm_common=(-cp "$libs/*" -Djava.awt.headless=true
		"-Dlog4j2.configurationFile=$SCRIPT_DIR/kafka/log4j2.properties")
	if ! java -Xmx256m "${jvm_common[@]}" kafka.tools.StorageTool format \
		--cluster-id="$cluster_id" -c "$CONF_FILE" >"$STATE/format.log" 2>&1; then
		cat "$STATE/format.log" >&2
		die "formatting KRaft storage in $DATA_DIR failed (see above)"
	fi

	log "starting Apache Kafka $version on 127.0.0.1:$PORT (controller 127.0.0.1:$cport, data $DATA_DIR, log $LOG_FILE)"
	# The broker runs in its own session (no terminal signals) and must not inherit fd 9 (the lock
	# of with_lock), or it would hold the lock forever. The pid file is written by the process that
	# then execs java, so it names the JVM whether or not setsid had to fork.
	rm -f "$PID_FILE"
	# shellcheck disable=SC2016,SC2086 # $$ and "$@" expand in the inner shell; HEAP_OPTS is a list of flags
	setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PID_FILE" \
		java $HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
		"${jvm_common[@]}" -Dkafka.logs.dir="$STATE" \
		kafka.Kafka "$CONF_FILE" </dev/null >"$LOG_FILE" 2>&1 9>&- &
	local pid="" n=0
	while [[ -z "$pid" ]] && ((n < 100)); do
		pid="$(cat "$PID_FILE" 2>/dev/null || true)"
		[[ -n "$pid" ]] || sleep 0.05
		n=$((n + 1))
	done
	is_uint "$pid" || die "the broker process did not start (no pid in $PID_FILE); see $LOG_FILE"
	printf 'version=%s\nport=%s\ncontroller_port=%s\npid=%s\n' "$version" "$PORT" "$cport" "$pid" >"$INFO_FILE"

	local deadline=$((SECONDS + START_TIMEOUT))
	while :; do
		if ! kill -0 "$pid" 2>/dev/null; then
			log "the broker exited during startup; last lines of $LOG_FILE:"
			tail -n 40 "$LOG_FILE" >&2 || true
			rm -f "$PID_FILE"
			die "Kafka did not start"
		fi
		# Ask only once the broker says it is up (or at least listens): a JVM per poll is slow.
		if grep -q 'Kafka Server started' "$LOG_FILE" 2>/dev/null || port_open "$PORT"; then
			if api_versions "$libs"; then
				break
			fi
		fi
		if ((SECONDS >= deadline)); then
			log "no answer from 127.0.0.1:$PORT after ${START_TIMEOUT}s; last lines of $LOG_FILE:"
			tail -n 40 "$LOG_FILE" >&2 || true
			kill -KILL "$pid" 2>/dev/null || true
			rm -f "$PID_FILE"
			die "Kafka did not become ready in time (KSTATE_KAFKA_START_TIMEOUT=$START_TIMEOUT)"
		fi
		sleep 0.5
	done
	log "ready after $((SECONDS + START_TIMEOUT - deadline)) s: export KSTATE_KAFKA_BROKERS=127.0.0.1:$PORT"
	echo "127.0.0.1:$PORT"
}

do_stop() {
	if ! running; then
		rm -f "$PID_FILE"
		rm -rf "$DATA_DIR"
		log "not running (127.0.0.1:$PORT); data wiped"
		return 0
	fi
	local pid
	pid="$(cat "$PID_FILE")"
	log "stopping Kafka (pid $pid, 127.0.0.1:$PORT)"
	kill -TERM "$pid" 2>/dev/null || true
	local deadline=$((SECONDS + 30))
	while kill -0 "$pid" 2>/dev/null; do
		if ((SECONDS >= deadline)); then
			log "no clean shutdown after 30 s; killing pid $pid"
			kill -KILL "$pid" 2>/dev/null || true
			break
		fi
		sleep 0.2
	done
	# Wait for a KILLed process to be gone before deleting its files.
	local n=0
	while kill -0 "$pid" 2>/dev/null && ((n < 50)); do
		sleep 0.1
		n=$((n + 1))
	done
	rm -f "$PID_FILE"
	rm -rf "$DATA_DIR"
	log "stopped; data wiped (log kept at $LOG_FILE)"
}

do_status() {
	if running; then
		local version="?"
		[[ -f "$INFO_FILE" ]] && version="$(sed -n 's/^version=//p' "$INFO_FILE")"
		echo "running: Apache Kafka $version on 127.0.0.1:$PORT (pid $(cat "$PID_FILE"), log $LOG_FILE)"
		return 0
	fi
	echo "not running (127.0.0.1:$PORT)"
	return 3
}

usage() {
	sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
}

main() {
	check_port_var KSTATE_KAFKA_PORT "$PORT"
	is_uint "$START_TIMEOUT" || die "KSTATE_KAFKA_START_TIMEOUT=$START_TIMEOUT is not a number of seconds"
	local cmd="${1:-}"
	case "$cmd" in
	start)
		mkdir -p "$STATE"
		with_lock "$STATE/.lock" do_start
		;;
	stop)
		mkdir -p "$STATE"
		with_lock "$STATE/.lock" do_stop
		;;
	status) do_status ;;
	path)
		local v
		v="$(resolve)"
		echo "$CACHE/$v/libs"
		;;
	fetch) resolve >/dev/null ;;
	logs) echo "$LOG_FILE" ;;
	-h | --help | help)
		usage
		;;
	*)
		usage
		die "unknown command ${cmd:-(none)}: want start, stop, status, path, fetch or logs"
		;;
	esac
}

main "$@"
