package testpb_test

import (
	"testing"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
)

// keyFields lists a message's entity_key fields in declaration order.
func keyFields(m proto.Message) []string {
	var keys []string
	fields := m.ProtoReflect().Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if proto.GetExtension(fd.Options(), cloudstatepb.E_EntityKey).(bool) {
			keys = append(keys, string(fd.Name()))
		}
	}
	return keys
}

func TestEntityKeys(t *testing.T) {
	for _, c := range []struct {
		msg  proto.Message
		want []string
	}{
		{&testpb.Request{}, []string{"id"}},
		// Declaration order (b, a) differs from field-number order (a=1, b=2).
		{&testpb.CompositeRequest{}, []string{"b", "a"}},
		{&testpb.Keyless{}, nil},
	} {
		got := keyFields(c.msg)
		if len(got) != len(c.want) {
			t.Errorf("%T: keys %v, want %v", c.msg, got, c.want)
			continue
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("%T: keys %v, want %v", c.msg, got, c.want)
			}
		}
	}
	fields := (&testpb.CompositeRequest{}).ProtoReflect().Descriptor().Fields()
	if fields.Get(0).Number() != 2 || fields.Get(1).Number() != 1 {
		t.Errorf("CompositeRequest declares fields %d, %d; want 2 (b), 1 (a)", fields.Get(0).Number(), fields.Get(1).Number())
	}
}

func TestHTTPRules(t *testing.T) {
	for _, c := range []struct {
		service, post string
	}{
		{"EventSourcedTest", "/test/{id}"},
		{"ValueTest", "/test-value/{id}"},
		{"KeylessTest", "/test-keyless"},
	} {
		sd := testpb.File_testpb_test_proto.Services().ByName(protoreflect.Name(c.service))
		md := sd.Methods().ByName("Process")
		rule, ok := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
		if !ok || rule.GetPost() != c.post || rule.GetBody() != "*" {
			t.Errorf("%s.Process: rule %v, want post %q body \"*\"", c.service, rule, c.post)
		}
	}
}
