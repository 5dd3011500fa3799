package bench

import (
	"testing"
	"time"
)

func TestParseAcquired(t *testing.T) {
	log := []byte(`2026-11-26T16:27:56.366Z [INFO]  kstate.node: partitions assigned: node=fresh partitions=[0, 1]
2026-11-26T16:27:56.382Z [INFO]  kstate.node.partition: partition acquired: node=fresh partition=0 restored_records=0 took=15ms
2026-11-26T16:27:56.389Z [INFO]  kstate.node.partition: partition acquired: node=fresh partition=1 restored_records=12345 took=1.5s
2026-11-26T16:27:57.000Z [INFO]  kstate.node.partition: partition acquired: node=fresh partition=0 restored_records=7 took=2ms
`)
	got, err := parseAcquired(log)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int32]acquisition{
		0: {partition: 0, records: 7, took: 2 * time.Millisecond}, // the latest line per partition
		1: {partition: 1, records: 12345, took: 1500 * time.Millisecond},
	}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("parseAcquired = %+v, want %+v", got, want)
	}
	if _, err := parseAcquired([]byte("partition acquired: partition=1 restored_records=3 took=soon\n")); err == nil {
		t.Fatal("a bad duration was accepted")
	}
}
