#!/usr/bin/env bash
# scripts/java-uf.sh — build and run examples/java-cart, a user function written on Cloudstate's
# own Java support library (io.cloudstate:cloudstate-java-support 0.5.2).
#
#   scripts/java-uf.sh build   build it if needed; print the folder of its jars (java -cp "$DIR/*")
#   scripts/java-uf.sh run     build it if needed, then run it (exec java) on $HOST:$PORT
#   scripts/java-uf.sh main    print the main class
#   scripts/java-uf.sh clean   delete the cached builds
#
# How it works: the sources (examples/java-cart/pom.xml and src/) are hashed; a build for that hash
# lives in $KSTATE_JAVA_UF_CACHE/<hash>/libs (the app jar and every runtime dependency) and is
# reused as long as it exists, with no Maven at all. Otherwise Maven builds it (`package
# dependency:copy-dependencies`, every plugin and protoc pinned in the pom), first offline (-o: a
# warm ~/.m2 needs no network), then, if that fails, online from Maven Central, bounded by
# KSTATE_JAVA_UF_FETCH_TIMEOUT (each attempt). The first online build downloads about 95 MB into
# ~/.m2 (protoc, the plugins, Akka, Scala, ...) and leaves ~45 MB of jars in the cache. Maven's
# output goes to $KSTATE_JAVA_UF_CACHE/mvn.log. Only bash, java (11+; no JDK needed) and mvn are
# needed.
#
# Environment (all optional):
#   KSTATE_JAVA_UF_CACHE          build cache (default $REPO/.cache/java-uf; gitignored)
#   KSTATE_JAVA_UF_FETCH_TIMEOUT  seconds a Maven build may take (default 600)
#   KSTATE_JAVA_UF_JAVA_OPTS      JVM flags for `run` (default "-Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
#   KSTATE_JAVA_UF_COMPILER       javac or ecj (default: javac when on PATH, else the Eclipse compiler,
#                                 fetched from Maven Central, so a JRE without a JDK is enough)
#   KSTATE_MAVEN_REPO             Maven local repository (default: Maven's own, ~/.m2/repository)
#   KSTATE_MAVEN_SETTINGS         Maven settings file (default scripts/java-uf/settings.xml: every
#                                 repository mirrored to Maven Central)
#   HOST, PORT                    where `run` listens (the support library's convention; default
#                                 127.0.0.1:8080)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
SRC="$REPO/examples/java-cart"
MAIN_CLASS="dev.kstate.examples.javacart.Main"

CACHE="${KSTATE_JAVA_UF_CACHE:-$REPO/.cache/java-uf}"
FETCH_TIMEOUT="${KSTATE_JAVA_UF_FETCH_TIMEOUT:-600}"
JAVA_OPTS="${KSTATE_JAVA_UF_JAVA_OPTS:--Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC}"
SETTINGS="${KSTATE_MAVEN_SETTINGS:-$SCRIPT_DIR/java-uf/settings.xml}"

log() { printf 'java-uf.sh: %s\n' "$*" >&2; }
die() {
	printf 'java-uf.sh: error: %s\n' "$*" >&2
	exit 1
}

need_java() {
	command -v java >/dev/null 2>&1 || die "java not found on PATH: the Java user function needs a Java 11+ runtime (e.g. apt-get install openjdk-17-jdk-headless)"
	local v major
	v="$(java -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')"
	major="${v%%.*}"
	[[ "$major" == 1 ]] && major="$(echo "$v" | cut -d. -f2)"
	if ! [[ "$major" =~ ^[0-9]+$ ]] || ((major < 11)); then
		die "java $v found on PATH, but the Java user function needs Java 11 or newer"
	fi
}

need_mvn() {
	command -v mvn >/dev/null 2>&1 || die "mvn not found on PATH: it builds examples/java-cart and fetches its dependencies from Maven Central (e.g. apt-get install maven)"
}

# compiler_profile: the pom's ecj profile (Eclipse compiler from Maven Central) when there is no
# javac (a JRE without a JDK) or KSTATE_JAVA_UF_COMPILER=ecj.
compiler_profile() {
	case "${KSTATE_JAVA_UF_COMPILER:-}" in
	ecj) echo "-Pecj" ;;
	javac) ;;
	"") command -v javac >/dev/null 2>&1 || echo "-Pecj" ;;
	*) die "KSTATE_JAVA_UF_COMPILER=$KSTATE_JAVA_UF_COMPILER: want javac or ecj" ;;
	esac
}

# source_hash: a hash of everything the build reads, so an edited source rebuilds.
source_hash() {
	(
		cd "$SRC"
		{
			echo "pom.xml"
			find src -type f | LC_ALL=C sort
		} | while read -r f; do
			printf '%s\n' "$f"
			sha256sum <"$f"
		done
		# The settings decide where dependencies come from, not what they are; not hashed.
	) | sha256sum | cut -c1-16
}

# with_lock FILE CMD...: run CMD holding an exclusive lock on FILE (when flock exists), so two
# concurrent builds (parallel test packages, a user and a test) do not run Maven twice.
with_lock() {
	local file="$1"
	shift
	mkdir -p "$(dirname "$file")"
	if command -v flock >/dev/null 2>&1; then
		(
			if ! flock -w $((2 * FETCH_TIMEOUT + 60)) 9; then
				log "could not lock $file; going on without the lock"
			fi
			"$@"
		) 9>"$file"
	else
		"$@"
	fi
}

# mvn_build OUT [-o]: build into OUT/libs; Maven's output is appended to $CACHE/mvn.log.
mvn_build() {
	local out="$1" offline="${2:-}"
	local -a args=(-B -Dstyle.color=never -s "$SETTINGS" -f "$SRC/pom.xml"
		"-Djavacart.buildDir=$out/build"
		package dependency:copy-dependencies -DincludeScope=runtime "-DoutputDirectory=$out/libs")
	[[ -n "$offline" ]] && args=(-o "${args[@]}")
	local profile
	profile="$(compiler_profile)"
	[[ -n "$profile" ]] && args=("$profile" "${args[@]}")
	[[ -n "${KSTATE_MAVEN_REPO:-}" ]] && args=("-Dmaven.repo.local=$KSTATE_MAVEN_REPO" "${args[@]}")
	{
		echo "==== $(date -u +%FT%TZ) mvn ${args[*]}"
	} >>"$CACHE/mvn.log"
	# Bounded: a hung download must not hang the caller (a test, CI). --kill-after in case Maven
	# ignores SIGTERM while it waits on a socket.
	timeout --kill-after=10 "$FETCH_TIMEOUT" mvn "${args[@]}" >>"$CACHE/mvn.log" 2>&1
}

# build_hash H: make $CACHE/H/libs, unless it is complete already.
build_hash() {
	local h="$1" dir="$CACHE/$1"
	[[ -f "$dir/.complete" ]] && return 0
	need_java
	need_mvn
	[[ -f "$SETTINGS" ]] || die "Maven settings $SETTINGS (KSTATE_MAVEN_SETTINGS) not found"
	local tmp="$dir.tmp.$$"
	rm -rf "$tmp"
	mkdir -p "$tmp"
	local start=$SECONDS
	: >"$CACHE/mvn.log"
	log "building examples/java-cart (sources $h) into $dir"
	if ! mvn_build "$tmp" -o; then
		rm -rf "$tmp"
		mkdir -p "$tmp"
		log "offline build failed (first build, or new dependencies): building online from Maven Central (first time ~95 MB, at most ${FETCH_TIMEOUT}s; log $CACHE/mvn.log)"
		local rc=0
		mvn_build "$tmp" || rc=$?
		if ((rc != 0)); then
			rm -rf "$tmp"
			if ((rc == 124 || rc == 137)); then
				die "the Maven build did not finish in ${FETCH_TIMEOUT}s (KSTATE_JAVA_UF_FETCH_TIMEOUT); is Maven Central reachable? log: $CACHE/mvn.log"
			fi
			log "Maven failed (exit $rc); from $CACHE/mvn.log:"
			# The errors of the online attempt: the lines after the log's last "====" header.
			awk '/^==== /{n=NR} {l[NR]=$0} END{for(i=n;i<=NR;i++) if (l[i] ~ /^\[ERROR\]/) print l[i]}' "$CACHE/mvn.log" |
				head -n 15 | sed 's/\x1b\[[0-9;]*m//g' >&2
			die "could not build examples/java-cart"
		fi
	fi
	[[ -f "$tmp/build/java-cart.jar" ]] || {
		rm -rf "$tmp"
		die "Maven ran, but java-cart.jar is missing (log: $CACHE/mvn.log)"
	}
	ls "$tmp"/libs/cloudstate-java-support-*.jar >/dev/null 2>&1 || {
		rm -rf "$tmp"
		die "Maven ran, but the runtime dependencies are missing (log: $CACHE/mvn.log)"
	}
	mv "$tmp/build/java-cart.jar" "$tmp/libs/"
	rm -rf "$tmp/build"
	rm -rf "$dir"
	mv "$tmp" "$dir"
	touch "$dir/.complete"
	# Older builds of other sources: no longer needed.
	local d
	for d in "$CACHE"/*/; do
		d="${d%/}"
		[[ "$d" == "$dir" || ! -f "$d/.complete" ]] && continue
		rm -rf "$d"
	done
	log "built in $((SECONDS - start)) s"
}

# libs: build if needed and print the jar folder.
libs() {
	mkdir -p "$CACHE"
	local h
	h="$(source_hash)"
	with_lock "$CACHE/.lock" build_hash "$h"
	echo "$CACHE/$h/libs"
}

usage() {
	sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
}

main() {
	[[ "$FETCH_TIMEOUT" =~ ^[0-9]+$ ]] || die "KSTATE_JAVA_UF_FETCH_TIMEOUT=$FETCH_TIMEOUT is not a number of seconds"
	local cmd="${1:-}"
	case "$cmd" in
	build) libs ;;
	run)
		local dir
		dir="$(libs)"
		need_java
		log "running $MAIN_CLASS on ${HOST:-127.0.0.1}:${PORT:-8080}"
		# shellcheck disable=SC2086 # JAVA_OPTS is a list of flags
		exec java $JAVA_OPTS -cp "$dir/*" "$MAIN_CLASS"
		;;
	main) echo "$MAIN_CLASS" ;;
	clean)
		rm -rf "$CACHE"
		log "removed $CACHE"
		;;
	-h | --help | help) usage ;;
	*)
		usage
		die "unknown command ${cmd:-(none)}: want build, run, main or clean"
		;;
	esac
}

# On one line, so that bash, which reads a script as it runs it, never reads past it (a script
# edited while it runs, e.g. by a git checkout, would otherwise run whatever lands there).
main "$@"; exit
