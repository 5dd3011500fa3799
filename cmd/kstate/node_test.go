package main

import (
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestNodeConfigUserFunctionFromEnv(t *testing.T) {
	t.Setenv("USER_FUNCTION_HOST", "")
	t.Setenv("USER_FUNCTION_PORT", "")
	o := &nodeOpts{listen: ":9000", namespace: "kstate", app: "a", partitions: 4}
	if _, _, err := o.config([]string{"b:9092"}, t.TempDir(), hclog.NewNullLogger()); err == nil || !strings.Contains(err.Error(), "USER_FUNCTION_HOST") {
		t.Fatalf("want an error naming the ways to give a user function, got %v", err)
	}
	t.Setenv("USER_FUNCTION_PORT", "8090")
	cfg, _, err := o.config([]string{"b:9092"}, t.TempDir(), hclog.NewNullLogger())
	if err != nil || cfg.UserFunction != "127.0.0.1:8090" {
		t.Fatalf("user function %q (%v), want 127.0.0.1:8090 (the TCK's interceptor port)", cfg.UserFunction, err)
	}
}

func TestNodeConfigKafkaSecurity(t *testing.T) {
	t.Setenv("KSTATE_KAFKA_PASSWORD", "s3cret")
	o := &nodeOpts{listen: ":9000", namespace: "kstate", app: "a", partitions: 4, example: "shoppingcart",
		kafka: kafkaOpts{caFile: "/ca.pem", saslMechanism: "scram-sha-512", saslUser: "kstate"}}
	cfg, _, err := o.config([]string{"b:9093"}, t.TempDir(), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Broker.TLS.CAFile != "/ca.pem" || cfg.Broker.SASL.Mechanism != "SCRAM-SHA-512" || cfg.Broker.SASL.Username != "kstate" || cfg.Broker.SASL.Password != "s3cret" {
		t.Fatalf("TLS %+v SASL %+v", cfg.Broker.TLS, cfg.Broker.SASL)
	}
}

func TestNodeConfigUnknownExample(t *testing.T) {
	o := &nodeOpts{listen: ":9000", namespace: "kstate", app: "a", partitions: 4, example: "nope"}
	if _, _, err := o.config([]string{"b:9092"}, t.TempDir(), hclog.NewNullLogger()); err == nil || !strings.Contains(err.Error(), "shoppingcart") {
		t.Fatalf("want an error listing the examples, got %v", err)
	}
}
