package frontdoor

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

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

// restRoutes is the REST routing table vanguard builds from the same rules, rebuilt with the same
// matching (segments split from the decoded URL path; at each segment a literal before "*", "*"
// before "**"; a trailing ":verb"), so that the front door knows which method and which path
// variables a request matches before vanguard decodes it. Vanguard v0.4.0 applies query
// parameters after path variables and the body before them, so without a check of its own a
// query parameter would override a path-bound field (GET /carts/alice?user_id=bob would read bob's
// cart) and a body field naming it would be silently replaced.
type restRoutes struct {
	root routeNode
}

// routeNode is one node of the routing trie, keyed by the next path segment.
type routeNode struct {
	children map[string]*routeNode
	verbs    map[string]map[string]*restRoute // verb ("" for none) → HTTP method ("*" for any) → route
}

// restRoute is one binding of a google.api.http rule.
type restRoute struct {
	method  protoreflect.MethodDescriptor
	vars    []routeVar
	hasBody bool                           // the rule has a body
	body    []protoreflect.FieldDescriptor // the field the body fills; empty for "*"
}

// routeVar is one path variable: the field it binds and the path segments it captures.
type routeVar struct {
	fields     []protoreflect.FieldDescriptor
	start, end int // segments [start, end); end is -1 when the variable ends in "**"
}

// buildRESTRoutes builds the routing table of every method of the served services in files (the
// descriptors vanguard was given, default bindings included).
func buildRESTRoutes(files *protoregistry.Files, served map[protoreflect.FullName]bool) (*restRoutes, error) {
	t := &restRoutes{}
	var err error
	files.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		for i := 0; i < fd.Services().Len(); i++ {
			sd := fd.Services().Get(i)
			if !served[sd.FullName()] {
				continue
			}
			for j := 0; j < sd.Methods().Len(); j++ {
				md := sd.Methods().Get(j)
				rule, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
				if rule == nil {
					continue
				}
				for _, b := range append([]*annotations.HttpRule{rule}, rule.GetAdditionalBindings()...) {
					if err = t.add(md, b); err != nil {
						err = fmt.Errorf("method %s: %w", md.FullName(), err)
						return false
					}
				}
			}
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

// add adds one binding of md.
func (t *restRoutes) add(md protoreflect.MethodDescriptor, rule *annotations.HttpRule) error {
	var method, tmpl string
	switch p := rule.GetPattern().(type) {
	case *annotations.HttpRule_Get:
		method, tmpl = http.MethodGet, p.Get
	case *annotations.HttpRule_Put:
		method, tmpl = http.MethodPut, p.Put
	case *annotations.HttpRule_Post:
		method, tmpl = http.MethodPost, p.Post
	case *annotations.HttpRule_Delete:
		method, tmpl = http.MethodDelete, p.Delete
	case *annotations.HttpRule_Patch:
		method, tmpl = http.MethodPatch, p.Patch
	case *annotations.HttpRule_Custom:
		method, tmpl = p.Custom.GetKind(), p.Custom.GetPath()
	default:
		return fmt.Errorf("HTTP rule without a pattern")
	}
	segs, verb, vars, err := parsePathTemplate(tmpl)
	if err != nil {
		return fmt.Errorf("path template %q: %w", tmpl, err)
	}
	r := &restRoute{method: md}
	for _, v := range vars {
		fields, err := resolveFieldPath(md.Input(), v.fieldPath, false)
		if err != nil {
			return fmt.Errorf("path template %q: %w", tmpl, err)
		}
		r.vars = append(r.vars, routeVar{fields: fields, start: v.start, end: v.end})
	}
	switch body := rule.GetBody(); body {
	case "":
	case "*":
		r.hasBody = true
	default:
		r.hasBody = true
		if r.body, err = resolveFieldPath(md.Input(), body, false); err != nil {
			return fmt.Errorf("body %q: %w", body, err)
		}
	}
	n := &t.root
	for _, s := range segs {
		c := n.children[s]
		if c == nil {
			if n.children == nil {
				n.children = make(map[string]*routeNode)
			}
			c = &routeNode{}
			n.children[s] = c
		}
		n = c
	}
	if n.verbs == nil {
		n.verbs = make(map[string]map[string]*restRoute)
	}
	if n.verbs[verb] == nil {
		n.verbs[verb] = make(map[string]*restRoute)
	}
	if prev := n.verbs[verb][method]; prev != nil {
		return fmt.Errorf("%s %s is bound to %s as well", method, tmpl, prev.method.FullName())
	}
	n.verbs[verb][method] = r
	return nil
}

// match returns the route of an HTTP method and a decoded URL path, and the path's segments, or
// nil when vanguard would not route the request (no route, or a route for other methods only).
func (t *restRoutes) match(method, path string) (*restRoute, []string) {
	if path == "" || path[0] != '/' || path[len(path)-1] == ':' {
		return nil, nil
	}
	segs := strings.Split(path[1:], "/")
	var verb string
	last := segs[len(segs)-1]
	if i := strings.IndexByte(last, ':'); i >= 0 {
		segs[len(segs)-1], verb = last[:i], last[i+1:]
	}
	r, _ := t.root.find(segs, verb, method)
	if r == nil {
		return nil, nil
	}
	for _, v := range r.vars {
		if _, err := v.value(segs); err != nil {
			return nil, nil // vanguard answers 404
		}
	}
	return r, segs
}

// find descends the trie along segs. It returns the route, if any, and whether the path and verb
// matched at all (then the search stops there, as vanguard's does, and the method decides).
func (n *routeNode) find(segs []string, verb, method string) (*restRoute, bool) {
	if len(segs) == 0 {
		ms, ok := n.verbs[verb]
		if !ok {
			return nil, false
		}
		if r := ms[method]; r != nil {
			return r, true
		}
		return ms["*"], true
	}
	for _, key := range []string{segs[0], "*"} {
		if c := n.children[key]; c != nil {
			if r, ok := c.find(segs[1:], verb, method); ok {
				return r, true
			}
		}
	}
	if c := n.children["**"]; c != nil {
		return c.find(nil, verb, method)
	}
	return nil, false
}

// value returns the value the variable captures from the path's segments, decoded as vanguard
// decodes it ("%2F" kept as is in a "**" capture).
func (v routeVar) value(segs []string) (string, error) {
	var parts []string
	switch {
	case v.end >= 0:
		parts = segs[v.start:v.end]
	case v.start < len(segs):
		parts = segs[v.start:]
	}
	var b strings.Builder
	for i, p := range parts {
		s, err := unescapePathSegment(p, v.end < 0)
		if err != nil {
			return "", err
		}
		if i > 0 {
			b.WriteByte('/')
		}
		b.WriteString(s)
	}
	return b.String(), nil
}

// resolveFieldPath resolves a dotted field path against md as vanguard does: every element but the
// last a singular message field; with jsonNames (query parameters), each element is looked up by
// JSON name first, then by proto name.
func resolveFieldPath(md protoreflect.MessageDescriptor, path string, jsonNames bool) ([]protoreflect.FieldDescriptor, error) {
	if path == "" {
		return nil, errors.New("empty field path")
	}
	parts := strings.Split(path, ".")
	out := make([]protoreflect.FieldDescriptor, 0, len(parts))
	for i, p := range parts {
		if md == nil {
			return nil, fmt.Errorf("field path %q: %s is not a message", path, strings.Join(parts[:i], "."))
		}
		var f protoreflect.FieldDescriptor
		if jsonNames {
			f = md.Fields().ByJSONName(p)
		}
		if f == nil {
			f = md.Fields().ByName(protoreflect.Name(p))
		}
		if f == nil {
			return nil, fmt.Errorf("field path %q: %s has no field %s", path, md.FullName(), p)
		}
		if i < len(parts)-1 && f.Cardinality() == protoreflect.Repeated {
			return nil, fmt.Errorf("field path %q: %s is repeated", path, p)
		}
		out = append(out, f)
		md = f.Message()
	}
	return out, nil
}

// templateVar is a variable of a path template: its field path and the segments it spans.
type templateVar struct {
	fieldPath  string
	start, end int // segments [start, end); end is -1 when the variable ends in "**"
}

// parsePathTemplate parses a google.api.http path template,
//
//	Template = "/" Segments [ Verb ] ;
//	Segments = Segment { "/" Segment } ;
//	Segment  = "*" | "**" | LITERAL | Variable ;
//	Variable = "{" FieldPath [ "=" Segments ] "}" ;
//	Verb     = ":" LITERAL ;
//
// into its segments ("*", "**", or a literal in vanguard's canonical escaped form), its verb and
// its variables ({x} is {x=*}).
func parsePathTemplate(tmpl string) (segs []string, verb string, vars []templateVar, err error) {
	if !strings.HasPrefix(tmpl, "/") {
		return nil, "", nil, errors.New("does not start with /")
	}
	rest := tmpl[1:]
	doubleStar := false
	segment := func(s string) error {
		if doubleStar {
			return errors.New("** must be the last segment")
		}
		switch s {
		case "*":
		case "**":
			doubleStar = true
		default:
			lit, err := canonicalLiteral(s)
			if err != nil {
				return err
			}
			s = lit
		}
		segs = append(segs, s)
		return nil
	}
	for {
		if strings.HasPrefix(rest, "{") {
			end := strings.IndexByte(rest, '}')
			if end < 0 {
				return nil, "", nil, errors.New("unclosed {")
			}
			inner := rest[1:end]
			rest = rest[end+1:]
			v := templateVar{start: len(segs)}
			v.fieldPath, inner, _ = strings.Cut(inner, "=")
			if inner == "" {
				inner = "*"
			}
			for _, s := range strings.Split(inner, "/") {
				if err := segment(s); err != nil {
					return nil, "", nil, err
				}
			}
			v.end = len(segs)
			if doubleStar {
				v.end = -1
			}
			vars = append(vars, v)
		} else {
			i := strings.IndexAny(rest, "/:")
			if i < 0 {
				i = len(rest)
			}
			if err := segment(rest[:i]); err != nil {
				return nil, "", nil, err
			}
			rest = rest[i:]
		}
		switch {
		case rest == "":
			return segs, "", vars, nil
		case rest[0] == '/':
			rest = rest[1:]
		case rest[0] == ':':
			verb, err = canonicalLiteral(rest[1:])
			return segs, verb, vars, err
		default:
			return nil, "", nil, fmt.Errorf("unexpected %q", rest)
		}
	}
}

// canonicalLiteral returns a literal path segment in vanguard's form: percent-decoded, then every
// byte outside [-_.~0-9A-Za-z] escaped again.
func canonicalLiteral(s string) (string, error) {
	if s == "" {
		return "", errors.New("empty segment")
	}
	dec, err := unescapePathSegment(s, false)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for i := 0; i < len(dec); i++ {
		c := dec[i]
		if isUnreserved(c) {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String(), nil
}

// isUnreserved reports whether c may stand unescaped in a path segment literal.
func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~'
}

// unescapePathSegment percent-decodes one segment of an (already once decoded) URL path, as
// vanguard does for path variables: a malformed escape is an error, and with keepSlash (a "**"
// capture) "%2F" stays escaped.
func unescapePathSegment(s string, keepSlash bool) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
			return "", url.EscapeError(s[i:min(i+3, len(s))])
		}
		if keepSlash && s[i+1] == '2' && (s[i+2] == 'f' || s[i+2] == 'F') {
			b.WriteString("%2F")
		} else {
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
		}
		i += 2
	}
	return b.String(), nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}
