# kstate — developer entry points. `make test` is the README's test command and what CI runs.
SHELL := /bin/bash
GO ?= go

.PHONY: build test test-unit test-deploy generate checkgenerate lint bench kafka-start kafka-stop clean

# Release metadata stamped into the binary; the Dockerfile passes both (its build context has no .git).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS := -s -w -X github.com/kstatehq/kstate/processor.Version=$(VERSION) -X main.commit=$(COMMIT)

build: ## build a static kstate binary into bin/ (version and commit stamped; also what the Dockerfile runs)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/kstate ./cmd/kstate

test: ## the whole suite: real Kafka broker, race detector, generated-code and graph checks
	bash scripts/test.sh

test-unit: ## fast tests only (kfake, no real broker)
	$(GO) test -short -count=1 ./...

test-deploy: ## render and validate the Helm chart and Kustomize manifests offline (the deploy module)
	cd deploy && $(GO) vet ./... && $(GO) test -count=1 ./...

generate: ## regenerate protobuf Go code with buf and local plugins
	bash scripts/generate.sh

checkgenerate: ## fail when committed generated code is stale
	bash scripts/checkgenerate.sh

lint: ## go vet plus the package-graph test
	$(GO) vet ./...
	$(GO) test -count=1 ./internal/lint/

bench: ## benchmarks (see docs/benchmarks.md)
	$(GO) test -run '^$$' -bench . -benchmem ./...

kafka-start: ## start a single-node Apache Kafka (KRaft) on 127.0.0.1:19092
	bash scripts/kafka.sh start

kafka-stop:
	bash scripts/kafka.sh stop

clean:
	rm -rf bin
