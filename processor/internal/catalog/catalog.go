package catalog

import (
	"encoding/base64"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
)

// Full names of the Cloudstate protocol services. They are also the values of Entity.entity_type
// in an EntitySpec and of ProxyInfo.supported_entity_types.
const (
	ProtocolEventSourced = "cloudstate.eventsourced.EventSourced"
	ProtocolValue        = "cloudstate.valueentity.ValueEntity"
	ProtocolCRDT         = "cloudstate.crdt.Crdt"
	ProtocolAction       = "cloudstate.action.ActionProtocol"
)

// TypeURLPrefix is the prefix of the type URL of every payload of the Cloudstate protocol.
const TypeURLPrefix = "type.googleapis.com/"

// DefaultPassivation is the idle timeout after which an entity is passivated when its spec entry
// sets none (Cloudstate's default).
const DefaultPassivation = 30 * time.Second

// EntityKind is the kind of an entity: event-sourced, value, CRDT or action.
type EntityKind int

// The entity kinds of Cloudstate protocol 0.2. The zero value is not a kind.
const (
	EventSourced EntityKind = iota + 1
	Value
	CRDT
	Action
)

// ParseEntityKind maps an entity_type (a protocol service full name) to its kind.
func ParseEntityKind(entityType string) (EntityKind, bool) {
	switch entityType {
	case ProtocolEventSourced:
		return EventSourced, true
	case ProtocolValue:
		return Value, true
	case ProtocolCRDT:
		return CRDT, true
	case ProtocolAction:
		return Action, true
	}
	return 0, false
}

// SupportedEntityTypes returns the four protocol service full names, for
// ProxyInfo.supported_entity_types.
func SupportedEntityTypes() []string {
	return []string{ProtocolEventSourced, ProtocolValue, ProtocolCRDT, ProtocolAction}
}

// ProtocolService returns the full name of the Cloudstate protocol service that serves entities of
// kind k, or "" for an invalid kind.
func (k EntityKind) ProtocolService() string {
	switch k {
	case EventSourced:
		return ProtocolEventSourced
	case Value:
		return ProtocolValue
	case CRDT:
		return ProtocolCRDT
	case Action:
		return ProtocolAction
	}
	return ""
}

// Keyed reports whether commands to entities of kind k need an entity key (every kind but actions).
func (k EntityKind) Keyed() bool {
	return k == EventSourced || k == Value || k == CRDT
}

// String returns a short lower-case name: "event-sourced", "value", "crdt" or "action".
func (k EntityKind) String() string {
	switch k {
	case EventSourced:
		return "event-sourced"
	case Value:
		return "value"
	case CRDT:
		return "crdt"
	case Action:
		return "action"
	}
	return "EntityKind(" + strconv.Itoa(int(k)) + ")"
}

// TypeURL returns the Cloudstate type URL of a descriptor: "type.googleapis.com/" + its full name.
func TypeURL(desc protoreflect.Descriptor) string {
	return TypeURLPrefix + string(desc.FullName())
}

// Catalog is everything the runtime knows about a user function's services, built from its
// EntitySpec: the descriptors (in a registry of their own, never the global one, because a user
// function may ship descriptors that clash with kstate's), dynamic message types for all of them,
// and one Service per entity of the spec. A Catalog is immutable and safe for concurrent use.
type Catalog struct {
	files    *protoregistry.Files
	types    *protoregistry.Types
	services map[string]*Service
	methods  map[string]*Method // by "/pkg.Service/Method"
	sorted   []*Service
}

// Service is one entity (or action) service of the spec.
type Service struct {
	// Name is the service's full name, e.g. "shop.v1.ShoppingCart".
	Name string
	// Desc is the service descriptor.
	Desc protoreflect.ServiceDescriptor
	// Kind is the entity kind serving the service.
	Kind EntityKind
	// PersistenceID names the entity's stored state (and its Kafka topics). It is set for every kind
	// but actions; for CRDTs an empty persistence_id defaults to the service's full name.
	PersistenceID string
	// Passivation is the idle timeout after which an entity is passivated (default 30s).
	Passivation time.Duration
	// Entity is the spec entry the service was built from.
	Entity *cloudstatepb.Entity
	// Methods holds the service's methods in declaration order.
	Methods []*Method

	byName map[string]*Method
}

// Method is one method of a Service, with what the runtime needs to route its commands.
type Method struct {
	// Service is the service the method belongs to.
	Service *Service
	// Name is the method's simple name, e.g. "AddItem": the Command.name of the protocol.
	Name string
	// FullName is the gRPC method path, "/pkg.Service/Method".
	FullName string
	// Desc is the method descriptor.
	Desc protoreflect.MethodDescriptor
	// Input and Output are the request and response message descriptors.
	Input, Output protoreflect.MessageDescriptor
	// InputTypeURL and OutputTypeURL are TypeURL(Input) and TypeURL(Output).
	InputTypeURL, OutputTypeURL string
	// ClientStreaming and ServerStreaming give the gRPC shape of the method.
	ClientStreaming, ServerStreaming bool
	// KeyFields are the input's fields marked (cloudstate.entity_key) = true (or the legacy
	// option 50002), in declaration order. Empty for actions without keys.
	KeyFields []protoreflect.FieldDescriptor
	// Eventing is the method's (cloudstate.eventing) option, or nil.
	Eventing *cloudstatepb.Eventing

	types *protoregistry.Types
}

// Service returns the service with the given full name.
func (c *Catalog) Service(fullName string) (*Service, bool) {
	s, ok := c.services[fullName]
	return s, ok
}

// Method returns the method with the given gRPC path, "/pkg.Service/Method". A path without the
// leading slash is accepted too.
func (c *Catalog) Method(fullMethod string) (*Method, bool) {
	if !strings.HasPrefix(fullMethod, "/") {
		fullMethod = "/" + fullMethod
	}
	m, ok := c.methods[fullMethod]
	return m, ok
}

// Services returns the services sorted by name. The slice must not be modified.
func (c *Catalog) Services() []*Service { return c.sorted }

// Files returns the catalog's own descriptor registry: every file of the spec plus any well-known
// import the spec left out.
func (c *Catalog) Files() *protoregistry.Files { return c.files }

// Types returns dynamic message, enum and extension types for every descriptor in Files, usable as
// a resolver for proto and protojson (Any fields, extensions).
func (c *Catalog) Types() *protoregistry.Types { return c.types }

// Method returns the service's method with the given simple name (a Command.name or
// Forward.command_name).
func (s *Service) Method(name string) (*Method, bool) {
	m, ok := s.byName[name]
	return m, ok
}

// Unary reports whether the method is neither client- nor server-streaming.
func (m *Method) Unary() bool { return !m.ClientStreaming && !m.ServerStreaming }

// Decode parses a request payload as the method's input type. Malformed bytes (bad wire format,
// invalid UTF-8 in a proto3 string, missing proto2 required fields, nesting deeper than protobuf's
// recursion limit) give an error wrapping ErrInvalidArgument that names the type.
func (m *Method) Decode(payload []byte) (*dynamicpb.Message, error) {
	msg := dynamicpb.NewMessage(m.Input)
	opts := proto.UnmarshalOptions{Resolver: m.types}
	if err := opts.Unmarshal(payload, msg); err != nil {
		return nil, fmt.Errorf("%w: payload is not a valid %s: %v", ErrInvalidArgument, m.Input.FullName(), err)
	}
	return msg, nil
}

// EntityID returns the entity id of a request message as Cloudstate's proxy computed it: the values
// of the key fields in declaration order, joined by "-", each rendered as Java's toString would
// render the value protobuf-java returns for the field:
//
//   - string: as is
//   - signed integers: decimal
//   - unsigned integers (uint32, uint64, fixed32, fixed64): unsigned decimal. Java would print
//     values ≥ 2^31 (2^63) as negative numbers; kstate deliberately does not.
//   - bool: "true" / "false"
//   - float, double: Java's Float/Double.toString ("1.0", "1.5E10", "NaN", "Infinity")
//   - enum: the value's name; an unknown number renders as UNKNOWN_ENUM_VALUE_<Enum>_<number>
//   - bytes: standard base64 (Java's ByteString.toString is not stable, so no compatibility is lost)
//   - repeated: "[a, b, c]" (java.util.List.toString)
//
// It returns "" when the method has no key fields. msg is normally the result of Decode; a message
// of another type with the same field numbers (such as a generated message) works too.
func (m *Method) EntityID(msg protoreflect.Message) string {
	if len(m.KeyFields) == 0 || msg == nil {
		return ""
	}
	var b strings.Builder
	foreign := msg.Descriptor() != m.Input
	for i, fd := range m.KeyFields {
		if i > 0 {
			b.WriteByte('-')
		}
		f := fd
		if foreign {
			f = msg.Descriptor().Fields().ByNumber(fd.Number())
			if f == nil || f.Kind() != fd.Kind() || f.Cardinality() != fd.Cardinality() {
				// Not the same field: render the key field's default, as for an unset field.
				appendDefault(&b, fd)
				continue
			}
		}
		appendJava(&b, f, msg.Get(f))
	}
	return b.String()
}

// ExtractEntityID decodes payload as the method's input and returns its entity id. For entity kinds
// that need a key it rejects an empty id and an id that is not valid UTF-8 (possible with proto2
// string fields), both with errors wrapping ErrInvalidArgument. Actions always get "".
func (m *Method) ExtractEntityID(payload []byte) (string, error) {
	msg, err := m.Decode(payload)
	if err != nil {
		return "", err
	}
	if !m.Service.Kind.Keyed() {
		return "", nil
	}
	id := m.EntityID(msg)
	if id == "" {
		names := make([]string, len(m.KeyFields))
		for i, f := range m.KeyFields {
			names[i] = string(f.Name())
		}
		return "", fmt.Errorf("%w: entity key field(s) %s of %s are empty", ErrInvalidArgument, strings.Join(names, ", "), m.Input.FullName())
	}
	if !utf8.ValidString(id) {
		return "", fmt.Errorf("%w: entity key of %s is not valid UTF-8", ErrInvalidArgument, m.Input.FullName())
	}
	if strings.IndexByte(id, 0) >= 0 {
		// Reserved: kstate's own records (CRDT checkpoints) use keys that begin with NUL.
		return "", fmt.Errorf("%w: entity key of %s contains a NUL character", ErrInvalidArgument, m.Input.FullName())
	}
	return id, nil
}

// appendJava renders one field value as Java's toString would (see EntityID).
func appendJava(b *strings.Builder, fd protoreflect.FieldDescriptor, v protoreflect.Value) {
	if fd.IsList() {
		l := v.List()
		b.WriteByte('[')
		for i := 0; i < l.Len(); i++ {
			if i > 0 {
				b.WriteString(", ")
			}
			appendScalar(b, fd, l.Get(i))
		}
		b.WriteByte(']')
		return
	}
	appendScalar(b, fd, v)
}

// appendDefault renders the default value of fd (an unset field).
func appendDefault(b *strings.Builder, fd protoreflect.FieldDescriptor) {
	if fd.IsList() {
		b.WriteString("[]")
		return
	}
	appendScalar(b, fd, fd.Default())
}

// appendScalar renders a singular value of a scalar field.
func appendScalar(b *strings.Builder, fd protoreflect.FieldDescriptor, v protoreflect.Value) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		b.WriteString(v.String())
	case protoreflect.BytesKind:
		b.WriteString(base64.StdEncoding.EncodeToString(v.Bytes()))
	case protoreflect.BoolKind:
		b.WriteString(strconv.FormatBool(v.Bool()))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		b.WriteString(strconv.FormatInt(v.Int(), 10))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		b.WriteString(strconv.FormatUint(v.Uint(), 10))
	case protoreflect.FloatKind:
		b.WriteString(javaFloat(v.Float(), 32))
	case protoreflect.DoubleKind:
		b.WriteString(javaFloat(v.Float(), 64))
	case protoreflect.EnumKind:
		n := v.Enum()
		if ev := fd.Enum().Values().ByNumber(n); ev != nil {
			b.WriteString(string(ev.Name()))
		} else {
			b.WriteString("UNKNOWN_ENUM_VALUE_")
			b.WriteString(string(fd.Enum().Name()))
			b.WriteByte('_')
			b.WriteString(strconv.FormatInt(int64(n), 10))
		}
	default:
		// Message and group keys are rejected by BuildCatalog; render nothing rather than panic.
	}
}

// javaFloat renders f as Java's Double.toString (bitSize 64) or Float.toString (bitSize 32) does
// since JDK 19: the shortest decimal that rounds to f, but with at least two significant digits
// (when one digit would do, the two-digit decimal closest to f's exact value), in plain notation
// with at least one fractional digit when 10^-3 ≤ |f| < 10^7, otherwise as d.dddE±n.
func javaFloat(f float64, bitSize int) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	case f == 0:
		if math.Signbit(f) {
			return "-0.0"
		}
		return "0.0"
	}
	s := strconv.FormatFloat(f, 'e', -1, bitSize) // shortest, e.g. "-1.5e+10", "5e-324"
	if mant, _, _ := strings.Cut(s, "e"); !strings.ContainsRune(mant, '.') {
		s = strconv.FormatFloat(f, 'e', 1, bitSize) // two digits, e.g. "4.9e-324", "1.0e+07"
	}
	mant, exp, _ := strings.Cut(s, "e")
	e, err := strconv.Atoi(exp)
	if err != nil { // cannot happen: FormatFloat always writes an exponent
		return s
	}
	abs := math.Abs(f)
	if abs < 1e-3 || abs >= 1e7 {
		return mant + "E" + strconv.Itoa(e)
	}
	// Plain notation: shift the decimal point of the digits by e.
	neg := strings.HasPrefix(mant, "-")
	digits := strings.Replace(strings.TrimPrefix(mant, "-"), ".", "", 1)
	var intPart, frac string
	if e >= 0 {
		for len(digits) < e+1 {
			digits += "0"
		}
		intPart, frac = digits[:e+1], digits[e+1:]
	} else {
		intPart, frac = "0", strings.Repeat("0", -e-1)+digits
	}
	frac = strings.TrimRight(frac, "0")
	if frac == "" {
		frac = "0"
	}
	out := intPart + "." + frac
	if neg {
		out = "-" + out
	}
	return out
}

// optionTypes resolves the Cloudstate option extensions when re-parsing descriptor options.
var optionTypes = func() *protoregistry.Types {
	t := new(protoregistry.Types)
	for _, xt := range []protoreflect.ExtensionType{cloudstatepb.E_EntityKey, cloudstatepb.E_LegacyEntityKey, cloudstatepb.E_Eventing} {
		if err := t.RegisterExtension(xt); err != nil {
			panic(err)
		}
	}
	return t
}()

// reparseOptions re-reads an options message of a dynamically built descriptor with a resolver that
// knows Cloudstate's extensions. Whether the extension arrived parsed (the spec was unmarshaled
// with kstate's protos linked in) or as unknown fields (it was not, or another registry was used),
// the result holds it as a typed extension. dst is a new, empty options message of the same type.
func reparseOptions(opts, dst proto.Message) (proto.Message, error) {
	if opts == nil || !opts.ProtoReflect().IsValid() {
		return dst, nil
	}
	raw, err := proto.Marshal(opts)
	if err != nil {
		return nil, err
	}
	if err := (proto.UnmarshalOptions{Resolver: optionTypes}).Unmarshal(raw, dst); err != nil {
		return nil, err
	}
	return dst, nil
}

// isKeyField reports whether fd carries (cloudstate.entity_key) or (cloudstate.legacy_entity_key).
func isKeyField(fd protoreflect.FieldDescriptor) (bool, error) {
	opts, err := reparseOptions(fd.Options(), &descriptorpb.FieldOptions{})
	if err != nil {
		return false, err
	}
	key, _ := proto.GetExtension(opts, cloudstatepb.E_EntityKey).(bool)
	legacy, _ := proto.GetExtension(opts, cloudstatepb.E_LegacyEntityKey).(bool)
	return key || legacy, nil
}

// methodEventing returns the method's (cloudstate.eventing) option, or nil.
func methodEventing(md protoreflect.MethodDescriptor) (*cloudstatepb.Eventing, error) {
	opts, err := reparseOptions(md.Options(), &descriptorpb.MethodOptions{})
	if err != nil {
		return nil, err
	}
	if !proto.HasExtension(opts, cloudstatepb.E_Eventing) {
		return nil, nil
	}
	ev, _ := proto.GetExtension(opts, cloudstatepb.E_Eventing).(*cloudstatepb.Eventing)
	return ev, nil
}

// BuildCatalog checks a user function's EntitySpec and builds its Catalog. Every problem found is
// collected into one *SpecError (which unwraps to ErrInvalidSpec), so a user sees all of them at
// once:
//
//   - spec.proto must be a FileDescriptorSet whose files (plus well-known imports, which may be left
//     out) build into valid descriptors;
//   - every entity's entity_type must be one of the four protocol services and its service must be
//     in the descriptors, at most once in the spec;
//   - event-sourced and value entities need a persistence_id; every persistence_id must be usable
//     in a Kafka topic name ([a-zA-Z0-9._-], at most 200 characters);
//   - event-sourced and value entity methods cannot stream, CRDT methods cannot stream in from the
//     client (Cloudstate's rules);
//   - every method of an event-sourced, value or CRDT entity needs at least one input field marked
//     (cloudstate.entity_key) = true; key fields must be scalars or repeated scalars;
//   - no two event-sourced, value or CRDT services share a persistence_id.
func BuildCatalog(spec *cloudstatepb.EntitySpec) (*Catalog, error) {
	serr := &SpecError{}
	if spec == nil {
		serr.add("", "", "the entity spec is missing")
		return nil, serr
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(spec.GetProto(), &set); err != nil {
		serr.add("", "", "proto is not a serialized google.protobuf.FileDescriptorSet: %v", err)
		return nil, serr
	}
	files := buildFiles(&set, serr)
	types := buildTypes(files, serr)
	if len(spec.GetEntities()) == 0 {
		serr.add("", "", "the spec lists no entities; register at least one entity or action with the support library")
	}

	c := &Catalog{
		files:    files,
		types:    types,
		services: make(map[string]*Service),
		methods:  make(map[string]*Method),
	}
	for _, ent := range spec.GetEntities() {
		if s := buildService(ent, files, types, serr); s != nil {
			if _, dup := c.services[s.Name]; dup {
				serr.add(s.Name, "", "the service is listed more than once in the spec; list each service once")
				continue
			}
			c.services[s.Name] = s
			for _, m := range s.Methods {
				c.methods[m.FullName] = m
			}
			c.sorted = append(c.sorted, s)
		}
	}
	// One journal, one writer: two entity services sharing a persistence id would both append
	// sequence 1 to the same entity's journal, which restore rejects as split brain.
	byPID := make(map[string]*Service)
	for _, s := range c.sorted {
		if !s.Kind.Keyed() || s.PersistenceID == "" {
			continue
		}
		if prev, dup := byPID[s.PersistenceID]; dup {
			serr.add(s.Name, "", "persistence_id %q is already used by %s; every entity service needs its own persistence_id (it names the service's Kafka topics)", s.PersistenceID, prev.Name)
			continue
		}
		byPID[s.PersistenceID] = s
	}
	if err := serr.errOrNil(); err != nil {
		return nil, err
	}
	sort.Slice(c.sorted, func(i, j int) bool { return c.sorted[i].Name < c.sorted[j].Name })
	return c, nil
}

// buildFiles turns a FileDescriptorSet into a registry of its own. Files are built in dependency
// order; an import missing from the set is taken from the linked-in (global) descriptors when it
// is there, which covers support libraries that leave out well-known types.
func buildFiles(set *descriptorpb.FileDescriptorSet, serr *SpecError) *protoregistry.Files {
	files := new(protoregistry.Files)
	byName := make(map[string]*descriptorpb.FileDescriptorProto, len(set.GetFile()))
	var order []string
	for _, fdp := range set.GetFile() {
		name := fdp.GetName()
		if prev, dup := byName[name]; dup {
			if !proto.Equal(prev, fdp) {
				serr.add("", "", "file %q appears twice in proto with different contents", name)
			}
			continue
		}
		byName[name] = fdp
		order = append(order, name)
	}
	state := make(map[string]int) // 0 unvisited, 1 in progress, 2 done (registered or failed)
	failed := make(map[string]bool)
	var visit func(name, importer string) bool
	visit = func(name, importer string) bool {
		switch state[name] {
		case 1:
			serr.add("", "", "file %q imports itself (an import cycle)", name)
			return false
		case 2:
			return !failed[name]
		}
		state[name] = 1
		defer func() { state[name] = 2 }()
		fdp, ok := byName[name]
		if !ok {
			if gfd, err := protoregistry.GlobalFiles.FindFileByPath(name); err == nil {
				if !registerGlobal(files, gfd) {
					failed[name] = true
					serr.add("", "", "well-known file %q conflicts with a file of the spec", name)
					return false
				}
				return true
			}
			failed[name] = true
			serr.add("", "", "file %q imports %q, which is not in proto; include every import in the FileDescriptorSet", importer, name)
			return false
		}
		okDeps := true
		for _, dep := range fdp.GetDependency() {
			if !visit(dep, name) {
				okDeps = false
			}
		}
		if !okDeps {
			failed[name] = true
			return false
		}
		fd, err := protodesc.NewFile(fdp, files)
		if err != nil {
			failed[name] = true
			serr.add("", "", "file %q is not a valid descriptor: %v", name, err)
			return false
		}
		if err := files.RegisterFile(fd); err != nil {
			failed[name] = true
			serr.add("", "", "file %q cannot be registered: %v", name, err)
			return false
		}
		return true
	}
	for _, name := range order {
		visit(name, "")
	}
	return files
}

// registerGlobal registers a linked-in file and its imports into files, skipping ones already
// there. It reports false on a conflict.
func registerGlobal(files *protoregistry.Files, fd protoreflect.FileDescriptor) bool {
	if _, err := files.FindFileByPath(fd.Path()); err == nil {
		return true
	}
	imports := fd.Imports()
	for i := 0; i < imports.Len(); i++ {
		if !registerGlobal(files, imports.Get(i).FileDescriptor) {
			return false
		}
	}
	return files.RegisterFile(fd) == nil
}

// buildTypes creates dynamic types for every message, enum and extension of files.
func buildTypes(files *protoregistry.Files, serr *SpecError) *protoregistry.Types {
	types := new(protoregistry.Types)
	var walkMessages func(msgs protoreflect.MessageDescriptors)
	walkEnums := func(enums protoreflect.EnumDescriptors) {
		for i := 0; i < enums.Len(); i++ {
			_ = types.RegisterEnum(dynamicpb.NewEnumType(enums.Get(i))) // names are unique: Files checked them
		}
	}
	walkExtensions := func(xds protoreflect.ExtensionDescriptors) {
		for i := 0; i < xds.Len(); i++ {
			xd := xds.Get(i)
			if err := types.RegisterExtension(dynamicpb.NewExtensionType(xd)); err != nil {
				serr.add("", "", "extension %s (number %d of %s) conflicts with another extension: %v",
					xd.FullName(), xd.Number(), xd.ContainingMessage().FullName(), err)
			}
		}
	}
	walkMessages = func(msgs protoreflect.MessageDescriptors) {
		for i := 0; i < msgs.Len(); i++ {
			md := msgs.Get(i)
			if !md.IsMapEntry() {
				_ = types.RegisterMessage(dynamicpb.NewMessageType(md))
			}
			walkEnums(md.Enums())
			walkExtensions(md.Extensions())
			walkMessages(md.Messages())
		}
	}
	files.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		walkEnums(fd.Enums())
		walkExtensions(fd.Extensions())
		walkMessages(fd.Messages())
		return true
	})
	return types
}

// maxPersistenceIDLen leaves room for the namespace and suffix in a Kafka topic name (≤ 249).
const maxPersistenceIDLen = 200

// validTopicPart reports whether s only holds characters Kafka allows in a topic name.
func validTopicPart(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// buildService checks one spec entry and builds its Service, recording problems in serr. It returns
// nil when the entry cannot be served at all.
func buildService(ent *cloudstatepb.Entity, files *protoregistry.Files, types *protoregistry.Types, serr *SpecError) *Service {
	name := ent.GetServiceName()
	if name == "" {
		serr.add("", "", "an entity of type %q has an empty service_name; set it to the service's full name (package.Service)", ent.GetEntityType())
		return nil
	}
	kind, ok := ParseEntityKind(ent.GetEntityType())
	if !ok {
		serr.add(name, "", "entity_type %q is not supported; want one of %s", ent.GetEntityType(), strings.Join(SupportedEntityTypes(), ", "))
	}
	d, err := files.FindDescriptorByName(protoreflect.FullName(name))
	if err != nil {
		serr.add(name, "", "the service is not in the spec's descriptors (proto); check the name includes its package and the file is in the FileDescriptorSet")
		return nil
	}
	sd, isSvc := d.(protoreflect.ServiceDescriptor)
	if !isSvc {
		serr.add(name, "", "%s is not a service", name)
		return nil
	}
	if !ok {
		return nil
	}

	s := &Service{
		Name:        name,
		Desc:        sd,
		Kind:        kind,
		Passivation: DefaultPassivation,
		Entity:      ent,
		byName:      make(map[string]*Method, sd.Methods().Len()),
	}
	switch pid := ent.GetPersistenceId(); {
	case kind == Action:
		s.PersistenceID = pid
	case pid == "" && kind == CRDT:
		s.PersistenceID = name
	case pid == "":
		serr.add(name, "", "%s entities need a persistence_id (it names their Kafka topics); set one in the entity's registration", kind)
	case len(pid) > maxPersistenceIDLen || !validTopicPart(pid):
		serr.add(name, "", "persistence_id %q cannot be part of a Kafka topic name; use at most %d characters from [a-zA-Z0-9._-]", pid, maxPersistenceIDLen)
	default:
		s.PersistenceID = pid
	}
	if t := ent.GetPassivationStrategy().GetTimeout(); t != nil {
		switch ms := t.GetTimeout(); {
		case ms < 0:
			serr.add(name, "", "passivation timeout %dms is negative; use a positive number of milliseconds, or 0 for the default", ms)
		case ms > 0:
			s.Passivation = time.Duration(ms) * time.Millisecond
		}
	}

	mds := sd.Methods()
	for i := 0; i < mds.Len(); i++ {
		md := mds.Get(i)
		m := &Method{
			Service:         s,
			Name:            string(md.Name()),
			FullName:        "/" + name + "/" + string(md.Name()),
			Desc:            md,
			Input:           md.Input(),
			Output:          md.Output(),
			InputTypeURL:    TypeURL(md.Input()),
			OutputTypeURL:   TypeURL(md.Output()),
			ClientStreaming: md.IsStreamingClient(),
			ServerStreaming: md.IsStreamingServer(),
			types:           types,
		}
		switch {
		case (kind == EventSourced || kind == Value) && (m.ClientStreaming || m.ServerStreaming):
			serr.add(name, m.Name, "%s entities do not support streamed methods; make the method unary or serve it from an action", kind)
		case kind == CRDT && m.ClientStreaming:
			serr.add(name, m.Name, "CRDT entities do not support streaming in from the client; only server streaming is allowed")
		}
		in := md.Input()
		fields := in.Fields()
		for j := 0; j < fields.Len(); j++ {
			fd := fields.Get(j)
			key, err := isKeyField(fd)
			if err != nil {
				serr.add(name, m.Name, "cannot read the options of field %s: %v", fd.FullName(), err)
				continue
			}
			if !key {
				continue
			}
			if fd.IsMap() || fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind {
				serr.add(name, m.Name, "entity key field %s must be a scalar (string, number, bool, enum or bytes), not a message or map", fd.FullName())
				continue
			}
			m.KeyFields = append(m.KeyFields, fd)
		}
		if kind.Keyed() && len(m.KeyFields) == 0 {
			serr.add(name, m.Name, "input type %s has no field marked [(cloudstate.entity_key) = true]; %s entities need one on every method's input to route commands to an entity", in.FullName(), kind)
		}
		ev, err := methodEventing(md)
		if err != nil {
			serr.add(name, m.Name, "cannot read the method's options: %v", err)
		}
		m.Eventing = ev
		s.Methods = append(s.Methods, m)
		s.byName[m.Name] = m
	}
	return s
}
