#!/usr/bin/env bash
# Regenerates the committed protobuf Go code (`make generate`).
#
# The generators are pinned in their own modules so that the main go.mod never carries them:
#   tools/go.mod      protoc-gen-go (same google.golang.org/protobuf version as the runtime) and
#                     protoc-gen-go-grpc
#   tools/buf/go.mod  buf (it needs a newer google.golang.org/protobuf than the runtime pins, so it
#                     cannot share a build list with protoc-gen-go)
# They are built into bin/ (gitignored) and buf runs with bin/ first on PATH, so buf.gen.yaml's
# local plugins resolve to exactly these binaries.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

GO="${GO:-go}"
bin="$root/bin"
mkdir -p "$bin"

echo "generate: building protoc-gen-go, protoc-gen-go-grpc, buf into bin/" >&2
(cd tools && GOWORK=off "$GO" build -o "$bin/" \
	google.golang.org/protobuf/cmd/protoc-gen-go \
	google.golang.org/grpc/cmd/protoc-gen-go-grpc)
(cd tools/buf && GOWORK=off "$GO" build -o "$bin/" github.com/bufbuild/buf/cmd/buf)

export PATH="$bin:$PATH"

# Generated files in the buf.yaml modules (proto, examples, internal) are owned by buf.gen.yaml:
# remove the old ones first so a deleted or renamed .proto leaves no orphan behind.
find proto examples internal -name '*.pb.go' -type f -delete

echo "generate: buf generate" >&2
buf generate
echo "generate: done" >&2
