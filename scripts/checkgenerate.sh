#!/usr/bin/env bash
# Fails when the committed generated protobuf Go code is stale or the protos fail `buf lint`
# (`make checkgenerate`; part of CI).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash scripts/generate.sh

echo "checkgenerate: buf lint" >&2
if ! PATH="$root/bin:$PATH" buf lint; then
	echo "checkgenerate: buf lint failed (see above)" >&2
	exit 1
fi

# The generated files in every folder buf generates into (the buf.yaml modules). Git pathspec
# "*" also matches "/", so these cover every depth. Hand-written files are not compared: an
# uncommitted edit to one is not stale generated code.
gen_paths=('proto/*.pb.go' 'examples/*.pb.go' 'internal/*.pb.go')

stale=0
if ! git diff --exit-code --stat -- "${gen_paths[@]}"; then
	stale=1
fi
untracked="$(git ls-files --others --exclude-standard -- "${gen_paths[@]}")"
if [[ -n "$untracked" ]]; then
	echo "checkgenerate: generated files not committed:" >&2
	echo "$untracked" >&2
	stale=1
fi
if [[ "$stale" -ne 0 ]]; then
	echo "generated code is stale: run make generate" >&2
	exit 1
fi
echo "checkgenerate: generated code is up to date" >&2
