package catalog

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/processor/internal/proctest"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
)

// ctCatalog builds the catalog of proctest.Spec.
func ctCatalog(t testing.TB) *Catalog {
	t.Helper()
	cat, err := BuildCatalog(proctest.Spec(t))
	if err != nil {
		t.Fatalf("BuildCatalog: %v", err)
	}
	return cat
}

func ctMethod(t testing.TB, cat *Catalog, full string) *Method {
	t.Helper()
	m, ok := cat.Method(full)
	if !ok {
		t.Fatalf("method %s not in catalog", full)
	}
	return m
}

func ctKeyNames(m *Method) string {
	var names []string
	for _, f := range m.KeyFields {
		names = append(names, string(f.Name()))
	}
	return strings.Join(names, ",")
}

func TestBuildCatalogTestProtos(t *testing.T) {
	cat := ctCatalog(t)

	var names []string
	for _, s := range cat.Services() {
		names = append(names, s.Name)
	}
	if got, want := strings.Join(names, " "), strings.Join([]string{proctest.Action, proctest.ES, proctest.ESTwo, proctest.Keyless, proctest.Value}, " "); got != want {
		t.Fatalf("Services() = %s, want %s", got, want)
	}

	es, ok := cat.Service(proctest.ES)
	if !ok || es.Kind != EventSourced || es.PersistenceID != proctest.PIDES || es.Passivation != DefaultPassivation {
		t.Fatalf("EventSourcedTest = %+v", es)
	}
	if two, _ := cat.Service(proctest.ESTwo); two.Passivation != 100*time.Millisecond {
		t.Fatalf("EventSourcedTwo passivation = %v, want 100ms", two.Passivation)
	}
	if v, _ := cat.Service(proctest.Value); v.Kind != Value || v.PersistenceID != proctest.PIDValue {
		t.Fatalf("ValueTest = %+v", v)
	}
	if a, _ := cat.Service(proctest.Action); a.Kind != Action || len(a.Methods) != 4 {
		t.Fatalf("ActionTest = %+v", a)
	}
	if _, ok := cat.Service("kstate.test.v1.Nope"); ok {
		t.Fatal("unknown service found")
	}

	p := ctMethod(t, cat, "/"+proctest.ES+"/Process")
	if p.Name != "Process" || p.FullName != "/"+proctest.ES+"/Process" || p.Service != es ||
		p.Input.FullName() != proctest.Pkg+"Request" || p.Output.FullName() != proctest.Pkg+"Response" ||
		p.InputTypeURL != "type.googleapis.com/kstate.test.v1.Request" ||
		p.OutputTypeURL != "type.googleapis.com/kstate.test.v1.Response" || !p.Unary() {
		t.Fatalf("Process = %+v", p)
	}
	if got := ctKeyNames(p); got != "id" {
		t.Fatalf("Process key fields = %s, want id", got)
	}
	if m, ok := es.Method("Composite"); !ok || ctKeyNames(m) != "b,a" {
		t.Fatalf("Composite key fields = %v, want b,a (declaration order)", ctKeyNames(m))
	}
	if _, ok := cat.Method(proctest.ES + "/Process"); !ok {
		t.Fatal("Method without leading slash not found")
	}

	shapes := map[string][2]bool{"Unary": {false, false}, "StreamedIn": {true, false}, "StreamedOut": {false, true}, "Streamed": {true, true}}
	for name, want := range shapes {
		m := ctMethod(t, cat, "/"+proctest.Action+"/"+name)
		if m.ClientStreaming != want[0] || m.ServerStreaming != want[1] {
			t.Errorf("%s streaming = %v/%v, want %v", name, m.ClientStreaming, m.ServerStreaming, want)
		}
	}
	if k := ctMethod(t, cat, "/"+proctest.Keyless+"/Process"); len(k.KeyFields) != 0 {
		t.Fatalf("Keyless key fields = %s", ctKeyNames(k))
	}

	// The catalog's registries are its own, and resolve the user's types.
	if _, err := cat.Files().FindDescriptorByName(proctest.Pkg + "CompositeRequest"); err != nil {
		t.Fatal(err)
	}
	mt, err := cat.Types().FindMessageByURL("type.googleapis.com/kstate.test.v1.Request")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := mt.New().Interface().(*dynamicpb.Message); !ok {
		t.Fatalf("Types() gives %T, want dynamic messages", mt.New().Interface())
	}
	if _, err := cat.Types().FindExtensionByNumber("google.protobuf.FieldOptions", 1080); err != nil {
		t.Fatalf("entity_key extension not in Types(): %v", err)
	}
}

func TestEntityKind(t *testing.T) {
	for _, k := range []EntityKind{EventSourced, Value, CRDT, Action} {
		got, ok := ParseEntityKind(k.ProtocolService())
		if !ok || got != k {
			t.Errorf("ParseEntityKind(%s) = %v, %v", k.ProtocolService(), got, ok)
		}
		if k.Keyed() == (k == Action) {
			t.Errorf("%v.Keyed() = %v", k, k.Keyed())
		}
	}
	if _, ok := ParseEntityKind("cloudstate.function.StatelessFunction"); ok {
		t.Error("pre-0.6 stateless function accepted")
	}
	want := []string{"cloudstate.eventsourced.EventSourced", "cloudstate.valueentity.ValueEntity", "cloudstate.crdt.Crdt", "cloudstate.action.ActionProtocol"}
	if got := SupportedEntityTypes(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("SupportedEntityTypes() = %v", got)
	}
	if EntityKind(0).String() != "EntityKind(0)" || EntityKind(0).ProtocolService() != "" {
		t.Error("zero kind")
	}
}

func TestBuildCatalogCollectsAllProblems(t *testing.T) {
	spec := &cloudstatepb.EntitySpec{
		Proto: proctest.FileSet(t, testpb.File_testpb_test_proto),
		Entities: []*cloudstatepb.Entity{
			proctest.Entity("cloudstate.function.StatelessFunction", proctest.ES, "x", 0), // unsupported type
			proctest.Entity(ProtocolEventSourced, proctest.Pkg+"Missing", "x", 0),         // no such service
			proctest.Entity(ProtocolEventSourced, proctest.ESTwo, "", 0),                  // no persistence id
			proctest.Entity(ProtocolValue, proctest.Keyless, "kv", 0),                     // no key
			proctest.Entity(ProtocolValue, proctest.Action, "streams", 0),                 // streamed methods
			proctest.Entity(ProtocolCRDT, proctest.Value, "bad topic!", 0),                // bad persistence id
			proctest.Entity(ProtocolAction, proctest.Pkg+"Request", "", 0),                // not a service
			proctest.Entity(ProtocolAction, proctest.Keyless, "", -time.Second),           // negative passivation, duplicate
		},
	}
	_, err := BuildCatalog(spec)
	var serr *SpecError
	if !errors.As(err, &serr) {
		t.Fatalf("BuildCatalog = %v, want *SpecError", err)
	}
	if !errors.Is(err, ErrInvalidSpec) {
		t.Error("SpecError does not unwrap to ErrInvalidSpec")
	}
	want := []struct{ service, method, text string }{
		{proctest.ES, "", `entity_type "cloudstate.function.StatelessFunction" is not supported`},
		{proctest.Pkg + "Missing", "", "not in the spec's descriptors"},
		{proctest.ESTwo, "", "need a persistence_id"},
		{proctest.Keyless, "Process", "has no field marked [(cloudstate.entity_key) = true]"},
		{proctest.Action, "StreamedIn", "do not support streamed methods"},
		{proctest.Action, "StreamedOut", "do not support streamed methods"},
		{proctest.Action, "Streamed", "do not support streamed methods"},
		{proctest.Value, "", `persistence_id "bad topic!" cannot be part of a Kafka topic name`},
		{proctest.Pkg + "Request", "", "is not a service"},
		{proctest.Keyless, "", "passivation timeout -1000ms is negative"},
		{proctest.Keyless, "", "listed more than once"},
	}
	for _, w := range want {
		found := false
		for _, p := range serr.Problems {
			if p.Service == w.service && p.Method == w.method && strings.Contains(p.Problem, w.text) {
				found = true
			}
		}
		if !found {
			t.Errorf("no problem (%s, %s, %q) in:\n%v", w.service, w.method, w.text, err)
		}
	}
	if len(serr.Problems) != len(want) {
		t.Errorf("%d problems, want %d:\n%v", len(serr.Problems), len(want), err)
	}
	if msg := err.Error(); !strings.HasPrefix(msg, "invalid entity spec (11 problems):\n  - ") {
		t.Errorf("Error() = %q", msg)
	}
}

func TestBuildCatalogSpecLevelProblems(t *testing.T) {
	for name, tc := range map[string]struct {
		spec *cloudstatepb.EntitySpec
		want string
	}{
		"nil spec":    {nil, "the entity spec is missing"},
		"bad proto":   {&cloudstatepb.EntitySpec{Proto: []byte{0xff}}, "not a serialized google.protobuf.FileDescriptorSet"},
		"no entities": {&cloudstatepb.EntitySpec{Proto: proctest.FileSet(t, testpb.File_testpb_test_proto)}, "the spec lists no entities"},
		"empty service name": {&cloudstatepb.EntitySpec{
			Proto:    proctest.FileSet(t, testpb.File_testpb_test_proto),
			Entities: []*cloudstatepb.Entity{{EntityType: ProtocolAction}},
		}, "empty service_name"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := BuildCatalog(tc.spec)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("BuildCatalog = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestBuildCatalogCRDTDefaults(t *testing.T) {
	// A CRDT without a persistence id is named after its service; a CRDT may stream to the client.
	fdp := proctest.UserFile("crdt.proto", "crdt.v1", []proctest.Field{{Name: "key", Type: descriptorpb.FieldDescriptorProto_TYPE_STRING, Key: proctest.Key1080}})
	fdp.Service[0].Method = append(fdp.Service[0].Method, &descriptorpb.MethodDescriptorProto{
		Name: proto.String("Watch"), InputType: proto.String(".crdt.v1.Cmd"), OutputType: proto.String(".crdt.v1.Cmd"),
		ServerStreaming: proto.Bool(true),
	})
	cat, err := BuildCatalog(proctest.UserSpec(t, ProtocolCRDT, "", fdp))
	if err != nil {
		t.Fatal(err)
	}
	s, _ := cat.Service("crdt.v1.Svc")
	if s.PersistenceID != "crdt.v1.Svc" || s.Kind != CRDT {
		t.Fatalf("CRDT service = %+v", s)
	}
	if m, _ := s.Method("Watch"); !m.ServerStreaming || ctKeyNames(m) != "key" {
		t.Fatalf("Watch = %+v", m)
	}

	fdp.Service[0].Method[1].ClientStreaming = proto.Bool(true)
	if _, err := BuildCatalog(proctest.UserSpec(t, ProtocolCRDT, "", fdp)); err == nil || !strings.Contains(err.Error(), "do not support streaming in from the client") {
		t.Fatalf("client-streaming CRDT method: %v", err)
	}
}

// Hand-built user files, to test what generated test protos cannot: options as unknown fields,
// legacy keys, every scalar kind.

func TestKeyOptionsFromUnknownFields(t *testing.T) {
	fdp := proctest.UserFile("user.proto", "user.v1", []proctest.Field{
		{Name: "z", Type: descriptorpb.FieldDescriptorProto_TYPE_STRING, Key: proctest.KeyLegacy},
		{Name: "plain", Type: descriptorpb.FieldDescriptorProto_TYPE_STRING},
		{Name: "a", Type: descriptorpb.FieldDescriptorProto_TYPE_INT64, Key: proctest.Key1080},
	})
	cat, err := BuildCatalog(proctest.UserSpec(t, ProtocolEventSourced, "user", fdp))
	if err != nil {
		t.Fatal(err)
	}
	m := ctMethod(t, cat, "/user.v1.Svc/Do")
	if got := ctKeyNames(m); got != "z,a" {
		t.Fatalf("key fields = %s, want z,a", got)
	}
	msg := dynamicpb.NewMessage(m.Input)
	msg.Set(m.Input.Fields().ByName("z"), protoreflect.ValueOfString("cart"))
	msg.Set(m.Input.Fields().ByName("a"), protoreflect.ValueOfInt64(-3))
	if id := m.EntityID(msg); id != "cart--3" {
		t.Fatalf("EntityID = %q, want cart--3", id)
	}
}

func TestBuildCatalogImports(t *testing.T) {
	// The user ships its own copy of cloudstate/entity_key.proto, which clashes with kstate's linked
	// in one by name: the catalog's registry is separate, so this is fine.
	own := protodesc.ToFileDescriptorProto(cloudstatepb.File_cloudstate_entity_key_proto)
	own.Dependency = nil // and leaves out google/protobuf/descriptor.proto…
	own.Dependency = []string{"google/protobuf/descriptor.proto"}
	user := proctest.UserFile("user.proto", "user.v1", []proctest.Field{{Name: "id", Type: descriptorpb.FieldDescriptorProto_TYPE_STRING, Key: proctest.Key1080}})
	user.Dependency = append(user.Dependency, "cloudstate/entity_key.proto")
	cat, err := BuildCatalog(proctest.UserSpec(t, ProtocolValue, "user", user, own))
	if err != nil {
		t.Fatal(err)
	}
	// …and google/protobuf/empty.proto, both taken from the linked-in descriptors.
	for _, path := range []string{"google/protobuf/empty.proto", "google/protobuf/descriptor.proto", "cloudstate/entity_key.proto"} {
		if _, err := cat.Files().FindFileByPath(path); err != nil {
			t.Errorf("%s not in the catalog: %v", path, err)
		}
	}
	if m := ctMethod(t, cat, "/user.v1.Svc/Do"); m.Output.FullName() != "google.protobuf.Empty" {
		t.Fatalf("output = %s", m.Output.FullName())
	}

	// An import that is neither in the set nor linked in is a spec problem naming both files.
	user.Dependency = append(user.Dependency, "missing/dep.proto")
	_, err = BuildCatalog(proctest.UserSpec(t, ProtocolValue, "user", user, own))
	if err == nil || !strings.Contains(err.Error(), `file "user.proto" imports "missing/dep.proto", which is not in proto`) {
		t.Fatalf("missing import: %v", err)
	}

	// A file given twice with different contents is a problem; twice identical is not.
	user.Dependency = user.Dependency[:len(user.Dependency)-1]
	if _, err := BuildCatalog(proctest.UserSpec(t, ProtocolValue, "user", user, own, own)); err != nil {
		t.Fatalf("duplicate identical file: %v", err)
	}
	other := proto.Clone(own).(*descriptorpb.FileDescriptorProto)
	other.Package = proto.String("other")
	if _, err := BuildCatalog(proctest.UserSpec(t, ProtocolValue, "user", user, own, other)); err == nil || !strings.Contains(err.Error(), "appears twice") {
		t.Fatalf("conflicting duplicate file: %v", err)
	}
}

func TestKeyFieldMustBeScalar(t *testing.T) {
	fdp := proctest.UserFile("user.proto", "user.v1", []proctest.Field{
		{Name: "sub", Type: descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, TypeName: ".user.v1.Sub", Key: proctest.Key1080},
	})
	_, err := BuildCatalog(proctest.UserSpec(t, ProtocolEventSourced, "user", fdp))
	if err == nil || !strings.Contains(err.Error(), "entity key field user.v1.Cmd.sub must be a scalar") ||
		!strings.Contains(err.Error(), "has no field marked") {
		t.Fatalf("message key: %v", err)
	}
}

func TestEntityIDJavaRendering(t *testing.T) {
	type T = descriptorpb.FieldDescriptorProto_Type
	kinds := []struct {
		typ      T
		typeName string
		repeated bool
		set      func(m *dynamicpb.Message, fd protoreflect.FieldDescriptor)
		want     string
	}{
		{descriptorpb.FieldDescriptorProto_TYPE_STRING, "", false, func(m *dynamicpb.Message, fd protoreflect.FieldDescriptor) {
			m.Set(fd, protoreflect.ValueOfString("héllo wörld"))
		}, "héllo wörld"},
		{descriptorpb.FieldDescriptorProto_TYPE_INT32, "", false, func(m *dynamicpb.Message, fd protoreflect.FieldDescriptor) {
			m.Set(fd, protoreflect.ValueOfInt32(-42))
		}, "-42"},
		{descriptorpb.FieldDescriptorProto_TYPE_SINT64, "", false, func(m *dynamicpb.Message, fd protoreflect.FieldDescriptor) {
			m.Set(fd, protoreflect.ValueOfInt64(math.MinInt64))
		}, "-9223372036854775808"},
		{descriptorpb.FieldDescriptorProto_TYPE_SFIXED32, "", false, nil, "0"},
		{descriptorpb.FieldDescriptorProto_TYPE_UINT32, "", false, func(m *dynamicpb.Message, fd protoreflect.FieldDescriptor) {
			m.Set(fd, protoreflect.ValueOfUint32(math.MaxUint32))
		}, "4294967295"},
		{descriptorpb.FieldDescriptorProto_TYPE_FIXED64, "", false, func(m *dynamicpb.Message, fd protoreflect.FieldDescriptor) {
			m.Set(fd, protoreflect.ValueOfUint64(math.MaxUint64))
		}, "18446744073709551615"},
		{descriptorpb.FieldDescriptorProto_TYPE_BOOL, "", false, func(m *dynamicpb.Message, fd protoreflect.FieldDescriptor) {
			m.Set(fd, protoreflect.ValueOfBool(true))
		}, "true"},
		{descriptorpb.FieldDescriptorProto_TYPE_BOOL, "", false, nil, "false"},
		{descriptorpb.FieldDescriptorProto_TYPE_DOUBLE, "", false, func(m *dynamicpb.Message, fd protoreflect.FieldDescriptor) {
			m.Set(fd, protoreflect.ValueOfFloat64(1))
		}, "1.0"},
		{descriptorpb.FieldDescriptorProto_TYPE_DOUBLE, "", false, nil, "0.0"},
		{descriptorpb.FieldDescriptorProto_TYPE_FLOAT, "", false, func(m *dynamicpb.Message, fd protoreflect.FieldDescriptor) {
			m.Set(fd, protoreflect.ValueOfFloat32(0.1))
		}, "0.1"},
		{descriptorpb.FieldDescriptorProto_TYPE_ENUM, ".user.v1.Color", false, func(m *dynamicpb.Message, fd protoreflect.FieldDescriptor) {
			m.Set(fd, protoreflect.ValueOfEnum(1))
		}, "GREEN"},
		{descriptorpb.FieldDescriptorProto_TYPE_ENUM, ".user.v1.Color", false, nil, "RED"},
		{descriptorpb.FieldDescriptorProto_TYPE_ENUM, ".user.v1.Color", false, func(m *dynamicpb.Message, fd protoreflect.FieldDescriptor) {
			m.Set(fd, protoreflect.ValueOfEnum(7))
		}, "UNKNOWN_ENUM_VALUE_Color_7"},
		{descriptorpb.FieldDescriptorProto_TYPE_BYTES, "", false, func(m *dynamicpb.Message, fd protoreflect.FieldDescriptor) {
			m.Set(fd, protoreflect.ValueOfBytes([]byte{0, 1, 0xfe, 0xff}))
		}, "AAH+/w=="},
		{descriptorpb.FieldDescriptorProto_TYPE_STRING, "", true, func(m *dynamicpb.Message, fd protoreflect.FieldDescriptor) {
			l := m.Mutable(fd).List()
			l.Append(protoreflect.ValueOfString("a"))
			l.Append(protoreflect.ValueOfString("b"))
		}, "[a, b]"},
		{descriptorpb.FieldDescriptorProto_TYPE_INT64, "", true, nil, "[]"},
	}
	var fields []proctest.Field
	for i, k := range kinds {
		fields = append(fields, proctest.Field{Name: "f" + string(rune('a'+i)), Type: k.typ, TypeName: k.typeName, Repeated: k.repeated, Key: proctest.Key1080})
	}
	cat, err := BuildCatalog(proctest.UserSpec(t, ProtocolEventSourced, "user", proctest.UserFile("user.proto", "user.v1", fields)))
	if err != nil {
		t.Fatal(err)
	}
	m := ctMethod(t, cat, "/user.v1.Svc/Do")
	if len(m.KeyFields) != len(kinds) {
		t.Fatalf("%d key fields, want %d", len(m.KeyFields), len(kinds))
	}
	msg := dynamicpb.NewMessage(m.Input)
	var want []string
	for i, k := range kinds {
		if k.set != nil {
			k.set(msg, m.KeyFields[i])
		}
		want = append(want, k.want)
	}
	if got := m.EntityID(msg); got != strings.Join(want, "-") {
		t.Fatalf("EntityID =\n  %q\nwant\n  %q", got, strings.Join(want, "-"))
	}
	// The same through the wire.
	b, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	decoded, err := m.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.EntityID(decoded); got != strings.Join(want, "-") {
		t.Fatalf("EntityID after decode = %q", got)
	}
}

func TestJavaFloat(t *testing.T) {
	for _, tc := range []struct {
		f    float64
		bits int
		want string
	}{
		{1, 64, "1.0"},
		{-2.5, 64, "-2.5"},
		{0.001, 64, "0.001"},
		{0.0001, 64, "1.0E-4"},
		{1234567, 64, "1234567.0"},
		{1e7, 64, "1.0E7"},
		{1.5e10, 64, "1.5E10"},
		{-1.25e-7, 64, "-1.25E-7"},
		{math.MaxFloat64, 64, "1.7976931348623157E308"},
		{5e-324, 64, "4.9E-324"},
		{math.Copysign(0, -1), 64, "-0.0"},
		{math.NaN(), 64, "NaN"},
		{math.Inf(1), 64, "Infinity"},
		{math.Inf(-1), 32, "-Infinity"},
		{float64(float32(0.1)), 32, "0.1"},
		{float64(float32(3.4028235e38)), 32, "3.4028235E38"},
		{float64(float32(1e-3)), 32, "0.001"},
		{float64(float32(1.17549435e-38)), 32, "1.1754944E-38"}, // JDK ≥ 19 (shortest); older JDKs printed 1.17549435E-38
		{float64(float32(1.4e-45)), 32, "1.4E-45"},
		{0.003, 64, "0.003"},
		{100, 64, "100.0"},
		{123.456, 64, "123.456"},
		{-0.5, 64, "-0.5"},
		{9999999.5, 64, "9999999.5"},
		{1e23, 64, "1.0E23"},
		{2e-3, 32, "0.002"},
	} {
		if got := javaFloat(tc.f, tc.bits); got != tc.want {
			t.Errorf("javaFloat(%v, %d) = %q, want %q", tc.f, tc.bits, got, tc.want)
		}
	}
}

func TestEntityIDCompositeAndGenerated(t *testing.T) {
	cat := ctCatalog(t)
	m := ctMethod(t, cat, "/"+proctest.ES+"/Composite")
	req := &testpb.CompositeRequest{A: 42, B: "cart", C: true}
	// A generated message works directly…
	if id := m.EntityID(req.ProtoReflect()); id != "cart-42" {
		t.Fatalf("EntityID(generated) = %q, want cart-42", id)
	}
	// …and after the wire, as the ingress sees it.
	b, _ := proto.Marshal(req)
	id, err := m.ExtractEntityID(b)
	if err != nil || id != "cart-42" {
		t.Fatalf("ExtractEntityID = %q, %v", id, err)
	}
	// A message of another type: the key field numbers it lacks render as defaults.
	if id := m.EntityID((&emptypb.Empty{}).ProtoReflect()); id != "-0" {
		t.Fatalf("EntityID(Empty) = %q, want -0", id)
	}
	if id := m.EntityID(nil); id != "" {
		t.Fatalf("EntityID(nil) = %q", id)
	}
	// Partly empty composite keys are ids like any other.
	b, _ = proto.Marshal(&testpb.CompositeRequest{})
	if id, err := m.ExtractEntityID(b); err != nil || id != "-0" {
		t.Fatalf("ExtractEntityID(empty composite) = %q, %v", id, err)
	}
}

func TestExtractEntityIDErrors(t *testing.T) {
	cat := ctCatalog(t)
	p := ctMethod(t, cat, "/"+proctest.ES+"/Process")

	empty, _ := proto.Marshal(&testpb.Request{Payload: "x"})
	_, err := p.ExtractEntityID(empty)
	if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "entity key field(s) id of kstate.test.v1.Request are empty") {
		t.Fatalf("empty key: %v", err)
	}

	if _, err := p.ExtractEntityID(protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "a\x00b")); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "NUL") {
		t.Errorf("an id with NUL: %v", err)
	}
	for name, payload := range map[string][]byte{
		"truncated":    {0x0a, 0x05, 'a'},
		"bad wire":     {0xff, 0xff, 0xff},
		"invalid utf8": protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "\xff\xfe"),
	} {
		_, err := p.ExtractEntityID(payload)
		if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "is not a valid kstate.test.v1.Request") {
			t.Errorf("%s: %v", name, err)
		}
	}

	// An action needs no key: its id is "" even when the input has key fields.
	u := ctMethod(t, cat, "/"+proctest.Action+"/Unary")
	b, _ := proto.Marshal(&testpb.Request{Id: "ignored"})
	if id, err := u.ExtractEntityID(b); err != nil || id != "" {
		t.Fatalf("action id = %q, %v", id, err)
	}
	k := ctMethod(t, cat, "/"+proctest.Keyless+"/Process")
	if id, err := k.ExtractEntityID(nil); err != nil || id != "" {
		t.Fatalf("keyless id = %q, %v", id, err)
	}
}

func TestExtractEntityIDRejectsInvalidUTF8FromProto2(t *testing.T) {
	fdp := proctest.UserFile("user.proto", "user.v1", []proctest.Field{{Name: "id", Type: descriptorpb.FieldDescriptorProto_TYPE_STRING, Key: proctest.Key1080}})
	fdp.Syntax = proto.String("proto2") // proto2 strings are not UTF-8 checked by the decoder
	cat, err := BuildCatalog(proctest.UserSpec(t, ProtocolEventSourced, "user", fdp))
	if err != nil {
		t.Fatal(err)
	}
	m := ctMethod(t, cat, "/user.v1.Svc/Do")
	b := protowire.AppendString(protowire.AppendTag(nil, 100, protowire.BytesType), "a\xffb")
	if _, err := m.ExtractEntityID(b); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "not valid UTF-8") {
		t.Fatalf("invalid UTF-8 Key: %v", err)
	}
}

func TestDecodeDeepNesting(t *testing.T) {
	// A self-recursive message nested beyond protobuf's recursion limit is rejected, not a crash.
	fdp := &descriptorpb.FileDescriptorProto{
		Name: proto.String("deep.proto"), Package: proto.String("deep"), Syntax: proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("Node"),
			Field: []*descriptorpb.FieldDescriptorProto{
				{Name: proto.String("id"), JsonName: proto.String("id"), Number: proto.Int32(1), Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(), Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(),
					Options: func() *descriptorpb.FieldOptions {
						o := &descriptorpb.FieldOptions{}
						proto.SetExtension(o, cloudstatepb.E_EntityKey, true)
						return o
					}()},
				{Name: proto.String("child"), JsonName: proto.String("child"), Number: proto.Int32(2), Type: descriptorpb.FieldDescriptorProto_TYPE_MESSAGE.Enum(), TypeName: proto.String(".deep.Node"), Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()},
			},
		}},
		Service: []*descriptorpb.ServiceDescriptorProto{{Name: proto.String("Svc"), Method: []*descriptorpb.MethodDescriptorProto{{
			Name: proto.String("Do"), InputType: proto.String(".deep.Node"), OutputType: proto.String(".deep.Node"),
		}}}},
	}
	cat, err := BuildCatalog(proctest.UserSpec(t, ProtocolEventSourced, "deep", fdp))
	if err != nil {
		t.Fatal(err)
	}
	m := ctMethod(t, cat, "/deep.Svc/Do")
	if _, err := m.Decode(ctNested(20000)); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("deep nesting: %v", err)
	}
	if id, err := m.ExtractEntityID(ctNested(50)); err != nil || id != "x" {
		t.Fatalf("moderate nesting: %q, %v", id, err)
	}
}

// ctNested encodes a deep.Node with id "x" nested depth levels deep in field 2.
func ctNested(depth int) []byte {
	b := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "x")
	for i := 0; i < depth; i++ {
		inner := b
		b = protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), inner)
		b = append(protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "x"), b...)
	}
	return b
}

// FuzzDecodeAndExtract feeds arbitrary payloads to every method of the test catalog (T18): decoding
// and id extraction must never panic, errors must be InvalidArgument, and a payload that decodes
// must give the same id through both paths.
func FuzzDecodeAndExtract(f *testing.F) {
	cat := ctCatalog(f)
	var methods []*Method
	for _, s := range cat.Services() {
		methods = append(methods, s.Methods...)
	}
	seed := func(m proto.Message) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	for i := range methods {
		f.Add(uint8(i), []byte(nil))
		f.Add(uint8(i), seed(&testpb.Request{Id: "e1", Payload: "p"}))
		f.Add(uint8(i), seed(&testpb.CompositeRequest{A: -7, B: "k", C: true}))
		f.Add(uint8(i), seed(&testpb.Keyless{Payload: "x"}))
	}
	f.Add(uint8(0), []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f})                                                                                 // huge length prefix
	f.Add(uint8(1), []byte{0x0a, 0x02, 0xc3, 0x28})                                                                                             // invalid UTF-8
	f.Add(uint8(2), []byte{0xf8, 0xff, 0xff, 0xff, 0x0f, 0x01})                                                                                 // unknown field, max number
	f.Add(uint8(3), []byte{0x0b, 0x0b, 0x0b, 0x0c, 0x0c})                                                                                       // groups
	f.Add(uint8(4), append(protowire.AppendTag(nil, 2, protowire.BytesType), 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01)) // overlong varint
	f.Fuzz(func(t *testing.T, which uint8, payload []byte) {
		m := methods[int(which)%len(methods)]
		msg, derr := m.Decode(payload)
		id, xerr := m.ExtractEntityID(payload)
		if derr != nil {
			if !errors.Is(derr, ErrInvalidArgument) || !errors.Is(xerr, ErrInvalidArgument) {
				t.Fatalf("decode error not InvalidArgument: %v / %v", derr, xerr)
			}
			return
		}
		direct := m.EntityID(msg)
		if xerr != nil {
			if !errors.Is(xerr, ErrInvalidArgument) {
				t.Fatalf("extract error not InvalidArgument: %v", xerr)
			}
			return
		}
		if m.Service.Kind.Keyed() && id != direct {
			t.Fatalf("ExtractEntityID = %q, EntityID = %q", id, direct)
		}
	})
}
