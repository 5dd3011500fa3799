package processor

import (
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// httpOptionTypes resolves google.api.http when re-parsing method options.
var httpOptionTypes = func() *protoregistry.Types {
	t := new(protoregistry.Types)
	if err := t.RegisterExtension(annotations.E_Http); err != nil {
		panic(err)
	}
	return t
}()

// transcodingFiles rebuilds every file of src into a new registry for vanguard. Each file is
// re-parsed with a resolver that knows google.api.http, so the option becomes a typed
// *annotations.HttpRule whether it arrived typed, dynamic or as unknown fields (vanguard only reads
// it when it is there as that extension). Methods of the served services also get the default
// binding POST /<package.Service>/<Method> with body "*" (see withDefaultBinding).
func transcodingFiles(src *protoregistry.Files, served map[protoreflect.FullName]bool) (*protoregistry.Files, error) {
	set := &descriptorpb.FileDescriptorSet{}
	var err error
	src.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		var raw []byte
		raw, err = proto.Marshal(protodesc.ToFileDescriptorProto(fd))
		if err != nil {
			err = fmt.Errorf("file %s: %w", fd.Path(), err)
			return false
		}
		fdp := &descriptorpb.FileDescriptorProto{}
		if err = (proto.UnmarshalOptions{Resolver: httpOptionTypes}).Unmarshal(raw, fdp); err != nil {
			err = fmt.Errorf("file %s: %w", fd.Path(), err)
			return false
		}
		for _, sp := range fdp.GetService() {
			full := sp.GetName()
			if pkg := fdp.GetPackage(); pkg != "" {
				full = pkg + "." + full
			}
			if !served[protoreflect.FullName(full)] {
				continue
			}
			for _, mp := range sp.GetMethod() {
				if err = withDefaultBinding(mp, "/"+full+"/"+mp.GetName()); err != nil {
					err = fmt.Errorf("method %s.%s: %w", full, mp.GetName(), err)
					return false
				}
			}
		}
		set.File = append(set.File, fdp)
		return true
	})
	if err != nil {
		return nil, err
	}
	files, err := protodesc.NewFiles(set)
	if err != nil {
		return nil, fmt.Errorf("rebuilding descriptors: %w", err)
	}
	return files, nil
}

// withDefaultBinding adds POST path with body "*" to the method's google.api.http rule: as the rule
// itself when the method has none, otherwise as one more additional binding, unless a binding
// already posts to path.
func withDefaultBinding(mp *descriptorpb.MethodDescriptorProto, path string) error {
	def := &annotations.HttpRule{Pattern: &annotations.HttpRule_Post{Post: path}, Body: "*"}
	if mp.Options == nil {
		mp.Options = &descriptorpb.MethodOptions{}
	}
	if !proto.HasExtension(mp.Options, annotations.E_Http) {
		proto.SetExtension(mp.Options, annotations.E_Http, def)
		return nil
	}
	rule, ok := proto.GetExtension(mp.Options, annotations.E_Http).(*annotations.HttpRule)
	if !ok || rule == nil {
		return errors.New("google.api.http option is not a google.api.HttpRule")
	}
	if rule.GetPost() == path {
		return nil
	}
	for _, b := range rule.GetAdditionalBindings() {
		if b.GetPost() == path {
			return nil
		}
	}
	rule = proto.CloneOf(rule)
	rule.AdditionalBindings = append(rule.AdditionalBindings, def)
	proto.SetExtension(mp.Options, annotations.E_Http, rule)
	return nil
}

// serviceIn finds a service descriptor by name in files.
func serviceIn(files *protoregistry.Files, name protoreflect.FullName) (protoreflect.ServiceDescriptor, error) {
	d, err := files.FindDescriptorByName(name)
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", name, err)
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil, fmt.Errorf("%s is not a service", name)
	}
	return sd, nil
}
