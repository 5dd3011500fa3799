package proctest

import (
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
)

// Service names of the test protos.
const (
	Pkg      = "kstate.test.v1."
	ES       = Pkg + "EventSourcedTest"
	ESTwo    = Pkg + "EventSourcedTwo"
	Value    = Pkg + "ValueTest"
	Action   = Pkg + "ActionTest"
	Keyless  = Pkg + "KeylessTest"
	PIDES    = "es-test"
	PIDESTwo = "es-two"
	PIDValue = "value-test"
	PIDNone  = ""
)

// FileSet serializes files and all their transitive imports as a FileDescriptorSet, imports
// first, each file once.
func FileSet(t testing.TB, files ...protoreflect.FileDescriptor) []byte {
	t.Helper()
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imps := fd.Imports()
		for i := 0; i < imps.Len(); i++ {
			add(imps.Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	for _, fd := range files {
		add(fd)
	}
	b, err := proto.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Entity returns a spec entry.
func Entity(entityType, service, pid string, passivation time.Duration) *cloudstatepb.Entity {
	e := &cloudstatepb.Entity{EntityType: entityType, ServiceName: service, PersistenceId: pid}
	if passivation != 0 {
		e.PassivationStrategy = &cloudstatepb.EntityPassivationStrategy{Strategy: &cloudstatepb.EntityPassivationStrategy_Timeout{
			Timeout: &cloudstatepb.TimeoutPassivationStrategy{Timeout: passivation.Milliseconds()},
		}}
	}
	return e
}

// Spec is a valid spec over the test protos, one entity per kind.
func Spec(t testing.TB) *cloudstatepb.EntitySpec {
	return &cloudstatepb.EntitySpec{
		Proto: FileSet(t, testpb.File_testpb_test_proto),
		Entities: []*cloudstatepb.Entity{
			Entity("cloudstate.eventsourced.EventSourced", ES, PIDES, 0),
			Entity("cloudstate.eventsourced.EventSourced", ESTwo, PIDESTwo, 100*time.Millisecond),
			Entity("cloudstate.valueentity.ValueEntity", Value, PIDValue, 0),
			Entity("cloudstate.action.ActionProtocol", Action, PIDNone, 0),
			Entity("cloudstate.action.ActionProtocol", Keyless, PIDNone, 0),
		},
		ServiceInfo: &cloudstatepb.ServiceInfo{ProtocolMajorVersion: 0, ProtocolMinorVersion: 2},
	}
}

type KeyOpt int

const (
	NoKey KeyOpt = iota
	Key1080
	KeyLegacy
)

type Field struct {
	Name     string
	Type     descriptorpb.FieldDescriptorProto_Type
	TypeName string
	Repeated bool
	Key      KeyOpt
}

// UserFile builds a proto3 file in package pkg with a message Cmd of the given fields, an enum
// Color {RED=0; GREEN=1}, a message Sub, and a service Svc{Do(Cmd) returns (google.protobuf.Empty)}.
// Key options are written as unknown fields of FieldOptions, as a support library's serialized
// descriptors arrive when the proxy does not know the extension.
func UserFile(path, pkg string, fields []Field) *descriptorpb.FileDescriptorProto {
	msg := &descriptorpb.DescriptorProto{Name: proto.String("Cmd")}
	for i, f := range fields {
		fd := &descriptorpb.FieldDescriptorProto{
			Name:     proto.String(f.Name),
			JsonName: proto.String(f.Name),
			Number:   proto.Int32(int32(100 - i)), // numbers descend, so number order ≠ declaration order
			Type:     f.Type.Enum(),
			Label:    descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(),
		}
		if f.TypeName != "" {
			fd.TypeName = proto.String(f.TypeName)
		}
		if f.Repeated {
			fd.Label = descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()
		}
		if f.Key != NoKey {
			num := protowire.Number(1080)
			if f.Key == KeyLegacy {
				num = 50002
			}
			opts := &descriptorpb.FieldOptions{}
			raw := protowire.AppendTag(nil, num, protowire.VarintType)
			raw = protowire.AppendVarint(raw, 1)
			opts.ProtoReflect().SetUnknown(raw)
			fd.Options = opts
		}
		msg.Field = append(msg.Field, fd)
	}
	return &descriptorpb.FileDescriptorProto{
		Name:       proto.String(path),
		Package:    proto.String(pkg),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"google/protobuf/empty.proto"},
		MessageType: []*descriptorpb.DescriptorProto{msg, {
			Name:  proto.String("Sub"),
			Field: []*descriptorpb.FieldDescriptorProto{{Name: proto.String("x"), JsonName: proto.String("x"), Number: proto.Int32(1), Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(), Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()}},
		}},
		EnumType: []*descriptorpb.EnumDescriptorProto{{
			Name: proto.String("Color"),
			Value: []*descriptorpb.EnumValueDescriptorProto{
				{Name: proto.String("RED"), Number: proto.Int32(0)},
				{Name: proto.String("GREEN"), Number: proto.Int32(1)},
			},
		}},
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name: proto.String("Svc"),
			Method: []*descriptorpb.MethodDescriptorProto{{
				Name: proto.String("Do"), InputType: proto.String("." + pkg + ".Cmd"), OutputType: proto.String(".google.protobuf.Empty"),
			}},
		}},
	}
}

// UserSpec wraps user files (without their well-known imports: the catalog must find those
// itself) into a spec with one entity serving pkg.Svc of the first file.
func UserSpec(t testing.TB, entityType, pid string, files ...*descriptorpb.FileDescriptorProto) *cloudstatepb.EntitySpec {
	t.Helper()
	b, err := proto.Marshal(&descriptorpb.FileDescriptorSet{File: files})
	if err != nil {
		t.Fatal(err)
	}
	return &cloudstatepb.EntitySpec{
		Proto:    b,
		Entities: []*cloudstatepb.Entity{{EntityType: entityType, ServiceName: files[0].GetPackage() + ".Svc", PersistenceId: pid}},
	}
}

// DescriptorSet returns roots and their transitive imports, dependencies first, followed by
// the extra hand-built files, as a serialized FileDescriptorSet (Cloudstate's EntitySpec.proto).
func DescriptorSet(roots []protoreflect.FileDescriptor, extra ...*descriptorpb.FileDescriptorProto) []byte {
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var walk func(protoreflect.FileDescriptor)
	walk = func(f protoreflect.FileDescriptor) {
		if seen[f.Path()] {
			return
		}
		seen[f.Path()] = true
		imps := f.Imports()
		for i := 0; i < imps.Len(); i++ {
			walk(imps.Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(f))
	}
	for _, f := range roots {
		walk(f)
	}
	set.File = append(set.File, extra...)
	b, err := proto.Marshal(set)
	if err != nil {
		panic(err)
	}
	return b
}
