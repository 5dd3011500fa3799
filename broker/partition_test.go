package broker

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kgo"
)

// javaVectors were computed with the Apache Kafka Java client itself (kafka-clients 4.4.0:
// org.apache.kafka.common.utils.Utils.murmur2 and BuiltInPartitioner.partitionForKey, the
// default partitioner's keyed path) for partition counts 1, 3, 16 and 100. The murmur2 values of
// "21", "foobar", "a-little-bit-long-string", "a-little-bit-longer-string", "lkjh…" and "abc" are
// also the published vectors of Kafka's UtilsTest.testMurmur2.
var javaVectors = []struct {
	key    string
	murmur int32
	parts  [4]int32 // for n = 1, 3, 16, 100
}{
	{"", 275646681, [4]int32{0, 0, 9, 81}},
	{"a", -1563381124, [4]int32{0, 1, 12, 24}},
	{"ab", 316155434, [4]int32{0, 2, 10, 34}},
	{"abc", 479470107, [4]int32{0, 0, 11, 7}},
	{"kafka", -798503068, [4]int32{0, 1, 4, 80}},
	{"21", -973932308, [4]int32{0, 0, 12, 40}},
	{"foobar", -790332482, [4]int32{0, 0, 14, 66}},
	{"a-little-bit-long-string", -985981536, [4]int32{0, 2, 0, 12}},
	{"a-little-bit-longer-string", -1486304829, [4]int32{0, 2, 3, 19}},
	{"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971, [4]int32{0, 2, 13, 77}},
	{"cart-1", -249670265, [4]int32{0, 0, 7, 83}},
	{"cart-2", -779290384, [4]int32{0, 1, 0, 64}},
	{"user:42", -1493546323, [4]int32{0, 1, 13, 25}},
	{"entity-0001", -287155685, [4]int32{0, 0, 11, 63}},
	{"été", -2101193575, [4]int32{0, 1, 9, 73}},
	{"0123456789abcdef", 1438427052, [4]int32{0, 0, 12, 52}},
}

func TestPartitionJavaVectors(t *testing.T) {
	ns := [4]int32{1, 3, 16, 100}
	for _, v := range javaVectors {
		if got := int32(Murmur2([]byte(v.key))); got != v.murmur {
			t.Errorf("Murmur2(%q) = %d, Java says %d", v.key, got, v.murmur)
		}
		for i, n := range ns {
			if got := Partition([]byte(v.key), n); got != v.parts[i] {
				t.Errorf("Partition(%q, %d) = %d, Java says %d", v.key, n, got, v.parts[i])
			}
		}
	}
}

// TestPartitionMatchesClients checks Partition against two independent implementations of
// Kafka's keyed partitioning on random keys: franz-go's default partitioner and Sarama's
// NewMurmur2Partitioner.
func TestPartitionMatchesClients(t *testing.T) {
	seed := int64(20261126)
	rng := rand.New(rand.NewSource(seed))
	kp := kgo.StickyKeyPartitioner(nil).ForTopic("t")
	sp := sarama.NewMurmur2Partitioner("t")
	for i := 0; i < 5000; i++ {
		key := make([]byte, rng.Intn(40))
		rng.Read(key)
		n := int32(1 + rng.Intn(200))
		want := Partition(key, n)
		if got := int32(kp.Partition(&kgo.Record{Key: key}, int(n))); got != want {
			t.Fatalf("seed %d: key %x n %d: franz-go %d, Partition %d", seed, key, n, got, want)
		}
		got, err := sp.Partition(&sarama.ProducerMessage{Key: sarama.ByteEncoder(key)}, n)
		if err != nil || got != want {
			t.Fatalf("seed %d: key %x n %d: sarama murmur2 %d (%v), Partition %d", seed, key, n, got, err, want)
		}
	}
}

// TestSaramaDefaultPartitionerDiffers records why the interop tests configure Sarama with
// NewMurmur2Partitioner: Sarama's default (NewHashPartitioner) hashes keys with FNV-1a, so it
// places entity ids on other partitions than Kafka's Java client, franz-go and kstate.
func TestSaramaDefaultPartitionerDiffers(t *testing.T) {
	def := sarama.NewConfig().Producer.Partitioner("t")
	differ := 0
	for i := 0; i < 100; i++ {
		key := []byte(fmt.Sprintf("entity-%d", i))
		got, err := def.Partition(&sarama.ProducerMessage{Key: sarama.ByteEncoder(key)}, 16)
		if err != nil {
			t.Fatal(err)
		}
		if got != Partition(key, 16) {
			differ++
		}
	}
	if differ < 50 {
		t.Fatalf("Sarama's default partitioner agreed with murmur2 on %d of 100 keys; expected mostly different (FNV-1a)", 100-differ)
	}
}

func BenchmarkPartition(b *testing.B) {
	key := []byte("shopping-cart-0123456789")
	for i := 0; i < b.N; i++ {
		Partition(key, 16)
	}
}
