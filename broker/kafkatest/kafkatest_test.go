package kafkatest

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestClusterAnswers(t *testing.T) {
	addrs := Cluster(t)
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	topic := Unique(t, "kt")
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, 1, -1, nil, topic); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func TestUniqueDiffers(t *testing.T) {
	if a, b := Unique(t, "x"), Unique(t, "x"); a == b {
		t.Fatalf("Unique returned %q twice", a)
	}
}

func TestRealSkipsWithoutEnv(t *testing.T) {
	t.Setenv(EnvBrokers, "")
	ran := false
	t.Run("inner", func(t *testing.T) {
		Real(t)
		ran = true
	})
	if ran {
		t.Fatal("Real did not skip without " + EnvBrokers)
	}
}

func TestAlterTopicConfigsAndDeleteTopics(t *testing.T) {
	addrs := Cluster(t)
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topic := Unique(t, "kt-cfg")
	create := func() {
		t.Helper()
		resp, err := adm.CreateTopic(ctx, 1, -1, map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}, topic)
		if err == nil {
			err = resp.Err
		}
		if err != nil {
			t.Fatalf("create %s: %v", topic, err)
		}
	}
	create()
	AlterTopicConfigs(t, addrs, topic, map[string]string{"delete.retention.ms": "500"})
	rcs, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rcs.On(topic, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := ""
	for _, c := range rc.Configs {
		if c.Key == "delete.retention.ms" && c.Value != nil {
			got = *c.Value
		}
	}
	if got != "500" {
		t.Fatalf("delete.retention.ms = %q after AlterTopicConfigs, want 500", got)
	}
	DeleteTopics(t, addrs, topic)
	create() // DeleteTopics returned: the name is free again
	DeleteTopics(t, addrs, topic)
}
