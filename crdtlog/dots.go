package crdtlog

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"
)

// elementID is the identity of a set element or map key: the protobuf encoding of the Any with
// only type_url (field 1) and value (field 2), empty fields omitted, unknown fields dropped. Two
// Anys are the same element exactly when their type URLs and value bytes are equal.
func elementID(a *anypb.Any) string {
	var b []byte
	if u := a.GetTypeUrl(); u != "" {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, u)
	}
	if v := a.GetValue(); len(v) > 0 {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, v)
	}
	return string(b)
}

// cloneAny copies an Any without its unknown fields (identity is type_url + value).
func cloneAny(a *anypb.Any) *anypb.Any {
	if a == nil {
		return nil
	}
	return &anypb.Any{TypeUrl: a.GetTypeUrl(), Value: slices.Clone(a.GetValue())}
}

// ElementID returns the identity bytes of a set element or map key (see the package doc), for
// callers that key their own maps the same way.
func ElementID(a *anypb.Any) []byte { return []byte(elementID(a)) }

// AnyEqual reports whether two Anys are the same element.
func AnyEqual(a, b *anypb.Any) bool { return elementID(a) == elementID(b) }

// dot is a unique event: the Counter-th dot issued by Node (counters start at 1).
type dot struct {
	Node    string
	Counter uint64
}

func (d dot) compare(o dot) int {
	if c := cmp.Compare(d.Node, o.Node); c != 0 {
		return c
	}
	return cmp.Compare(d.Counter, o.Counter)
}

// causalContext is the set of dots a replica has seen: compact (every dot (n, 1..vv[n])) plus
// a cloud of dots past the first gap. Kept compacted: no cloud dot is ≤ vv of its node or
// equal to vv+1.
type causalContext struct {
	vv    map[string]uint64
	cloud map[dot]struct{}
}

func newContext() causalContext {
	return causalContext{vv: map[string]uint64{}, cloud: map[dot]struct{}{}}
}

func (c *causalContext) contains(d dot) bool {
	if d.Counter <= c.vv[d.Node] {
		return true
	}
	_, ok := c.cloud[d]
	return ok
}

// max returns the highest counter of node seen.
func (c *causalContext) max(node string) uint64 {
	m := c.vv[node]
	for d := range c.cloud {
		if d.Node == node && d.Counter > m {
			m = d.Counter
		}
	}
	return m
}

func (c *causalContext) add(d dot) {
	if c.contains(d) {
		return
	}
	if d.Counter == c.vv[d.Node]+1 {
		c.vv[d.Node] = d.Counter
		c.compactNode(d.Node)
		return
	}
	c.cloud[d] = struct{}{}
}

// compactNode moves cloud dots of node that extend vv into vv.
func (c *causalContext) compactNode(node string) {
	for {
		next := dot{node, c.vv[node] + 1}
		if _, ok := c.cloud[next]; !ok {
			return
		}
		delete(c.cloud, next)
		c.vv[node] = next.Counter
	}
}

func (c *causalContext) join(o *causalContext) {
	for n, v := range o.vv {
		if v > c.vv[n] {
			c.vv[n] = v
		}
	}
	for d := range c.cloud {
		if d.Counter <= c.vv[d.Node] {
			delete(c.cloud, d)
		}
	}
	for d := range o.cloud {
		if !c.contains(d) {
			c.cloud[d] = struct{}{}
		}
	}
	for n := range c.vv {
		c.compactNode(n)
	}
}

func (c *causalContext) clone() causalContext {
	return causalContext{vv: maps.Clone(c.vv), cloud: maps.Clone(c.cloud)}
}

// smallContext is the size up to which a join looks up the other side's context dot by dot
// instead of scanning the receiver's live dots (a variable for tests of both paths).
var smallContext = func(live int) int { return live/4 + 16 }

// dotsIfSmall returns every dot of c if there are at most limit of them.
func (c *causalContext) dotsIfSmall(limit int) ([]dot, bool) {
	if limit < 0 {
		return nil, false
	}
	n := uint64(len(c.cloud))
	for _, v := range c.vv {
		n += v
		if n > uint64(limit) {
			return nil, false
		}
	}
	if n > uint64(limit) {
		return nil, false
	}
	ds := make([]dot, 0, n)
	for node, v := range c.vv {
		for i := uint64(1); i <= v; i++ {
			ds = append(ds, dot{node, i})
		}
	}
	for d := range c.cloud {
		ds = append(ds, d)
	}
	return ds, true
}

// sortedCloud returns the cloud in (node, counter) order.
func (c *causalContext) sortedCloud() []dot {
	ds := slices.Collect(maps.Keys(c.cloud))
	slices.SortFunc(ds, dot.compare)
	return ds
}

// dotGen issues a node's next counters of one outermost CRDT and remembers them.
type dotGen struct {
	node   string
	last   uint64
	issued []uint64
}

// maxOpDots bounds the dots one operation may issue (every element or entry of an operation
// takes at most a few, and a decoded operation is bounded by the record size).
const maxOpDots = 1 << 32

// check fails when the node's counters are nearly exhausted (only a hostile state gets there).
func (g *dotGen) check() error {
	if g.last > math.MaxUint64-maxOpDots {
		return fmt.Errorf("%w: node %q's dot counter %d is exhausted", ErrIllegalChange, g.node, g.last)
	}
	return nil
}

func (g *dotGen) next() uint64 {
	g.last++
	g.issued = append(g.issued, g.last)
	return g.last
}

// record adds every issued dot to c.
func (g *dotGen) record(c *causalContext) {
	for _, n := range g.issued {
		c.add(dot{g.node, n})
	}
}

// dotSet is a set of dots.
type dotSet map[dot]struct{}

func sortedDots(s dotSet) []dot {
	ds := slices.Collect(maps.Keys(s))
	slices.SortFunc(ds, dot.compare)
	return ds
}

// sortedKeys returns a map's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	ks := slices.Collect(maps.Keys(m))
	slices.Sort(ks)
	return ks
}
