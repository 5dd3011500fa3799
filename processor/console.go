package processor

import (
	"context"
	"embed"
	"encoding/json"
	"html/template"
	"io/fs"
	"math"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/kstatehq/kstate/processor/internal/catalog"
)

// The console is the admin listener's web page (DESIGN.md §8): the app's nodes, partition
// ownership from the owners topic, this node's restores, per-partition write rates, the services
// and their active entities, and a form that calls a method with JSON. It is server-rendered
// (html/template, embedded) and kept live by a little JavaScript that polls the JSON API:
//
//	GET  /, /console          the page
//	GET  /console/static/...  its script and style sheet
//	GET  /api/v1/status       the page's data as JSON (consoleStatus)
//	POST /api/v1/call         call a method through the node's public port (console_call.go)
//
// Everything shown comes from this node's view: its owners table, the group's members as the
// broker describes them, its own partitions' restore meters and metrics, and the end offsets of
// the app's entity topics. docs/operations.md describes the page and its security.

//go:embed console
var consoleFiles embed.FS

var consoleTmpl = template.Must(template.New("console.html").Funcs(template.FuncMap{
	"restore": fmtRestore,
	"rate":    fmtRate,
	"since":   fmtSince,
}).ParseFS(consoleFiles, "console/console.html"))

// consoleRefresh is how long the console's Kafka view (group members, end offsets) is reused:
// any number of open pages cost the broker at most one round of requests per period.
const consoleRefresh = time.Second

// console holds what the console keeps between requests: the Kafka view and the samples its
// rates are computed from. It starts no goroutine: requests refresh it, one at a time.
type console struct {
	mu         sync.Mutex
	fetched    time.Time
	groupNodes []string
	groupErr   error
	ends       map[string]map[int32]int64
	endsErr    error
	rates      rateMeter
	templates  map[string]string // request skeletons by full method name, built once
}

// consoleStatus is the JSON of GET /api/v1/status and the data the page is rendered from.
type consoleStatus struct {
	Node         consoleNode        `json:"node"`
	Time         time.Time          `json:"time"`
	Nodes        []consoleMember    `json:"nodes"`
	GroupError   string             `json:"groupError,omitempty"`
	Partitions   []consolePartition `json:"partitions"`
	OffsetsError string             `json:"offsetsError,omitempty"`
	Services     []consoleService   `json:"services"`
}

type consoleNode struct {
	ID        string `json:"id"`
	Version   string `json:"version"`
	App       string `json:"app"`
	Addr      string `json:"addr,omitempty"`      // the public port
	Advertise string `json:"advertise,omitempty"` // the peer address other nodes forward to
	AdminAddr string `json:"adminAddr"`
	// State is starting (discovering the user function, creating topics), joining (waiting for
	// the group's first assignment), restoring (some assigned partition is not serving yet) or
	// serving.
	State      string  `json:"state"`
	Partitions int32   `json:"partitions"` // the app's partition count
	Assigned   []int32 `json:"assigned"`   // this node's partitions, sorted
	Restoring  int     `json:"restoring"`  // of Assigned, not serving yet
}

// consoleMember is one node of the app: a member of its group, or the owner of a partition in
// the owners topic (a node that died stays an owner until another takes its partitions).
type consoleMember struct {
	ID         string `json:"id"`
	Address    string `json:"address,omitempty"` // peer address, from its owner records
	InGroup    bool   `json:"inGroup"`
	Partitions int    `json:"partitions"` // partitions the owners topic gives it
	Self       bool   `json:"self"`
}

type consolePartition struct {
	Partition int32 `json:"partition"`
	// Owner is the partition's latest owner record; nil when none was published or the last
	// owner released it.
	Owner *consoleOwner `json:"owner"`
	// Local is this node's acquisition of the partition, nil when it is not assigned here.
	Local *consoleLocal `json:"local,omitempty"`
	// LogEnd is the sum of the end offsets of the partition's entity topics (records plus
	// transaction markers), nil when unknown; WritesPerSec is its rate over the last refresh.
	LogEnd       *int64   `json:"logEnd,omitempty"`
	WritesPerSec *float64 `json:"writesPerSec,omitempty"`
}

type consoleOwner struct {
	Node       string    `json:"node"`
	Address    string    `json:"address"`
	ProducerID int64     `json:"producerId"`
	Epoch      int32     `json:"epoch"`
	AcquiredAt time.Time `json:"acquiredAt"`
}

// consoleLocal is a partition assigned to this node.
type consoleLocal struct {
	// Phase is acquiring (fencing, publishing ownership), restoring, serving, or waiting (between
	// two acquisitions: it is reacquired after a pause).
	Phase string `json:"phase"`
	// RecordsDone and RecordsTotal are the current or last restore's offsets read and to read.
	RecordsDone  int64   `json:"recordsDone"`
	RecordsTotal int64   `json:"recordsTotal"`
	RecordsRate  float64 `json:"recordsPerSec"`
	// ETASeconds is the restore's time left, -1 when unknown, 0 once done.
	ETASeconds     float64  `json:"etaSeconds"`
	ElapsedSeconds float64  `json:"elapsedSeconds"`
	Commits        float64  `json:"commits"` // committed transactions (kstate_partition_transactions_total)
	CommitsPerSec  *float64 `json:"commitsPerSec,omitempty"`
}

type consoleService struct {
	Name           string          `json:"name"`
	Kind           string          `json:"kind"`
	PersistenceID  string          `json:"persistenceId,omitempty"`
	ActiveEntities int64           `json:"activeEntities"`
	Methods        []consoleMethod `json:"methods"`
}

type consoleMethod struct {
	Name            string `json:"name"`
	FullName        string `json:"fullName"` // "pkg.Service/Method", what /api/v1/call takes
	Input           string `json:"input"`
	Output          string `json:"output"`
	ClientStreaming bool   `json:"clientStreaming,omitempty"`
	ServerStreaming bool   `json:"serverStreaming,omitempty"`
	Template        string `json:"template"` // a JSON request with every top-level field
}

// registerConsole adds the console's routes to the admin mux.
func (n *Node) registerConsole(mux *http.ServeMux) {
	static, _ := fs.Sub(consoleFiles, "console/static")
	page := n.consoleGuard(http.HandlerFunc(n.servePage))
	mux.Handle("GET /{$}", page)
	mux.Handle("GET /console", page)
	mux.Handle("GET /console/static/", n.consoleGuard(http.StripPrefix("/console/static/", http.FileServerFS(static))))
	mux.Handle("GET /api/v1/status", n.consoleGuard(http.HandlerFunc(n.serveStatus)))
	mux.Handle("POST /api/v1/call", n.consoleGuard(http.HandlerFunc(n.serveCall)))
}

// consoleGuard adds the console's security headers and refuses requests whose Host is not the
// listener's own kind of name: on a loopback listener only "localhost" and loopback addresses,
// so a web page whose DNS name was rebound to 127.0.0.1 cannot read the console or call through
// it (DNS rebinding).
func (n *Node) consoleGuard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		if !n.hostAllowed(r.Host) {
			http.Error(w, "console: Host "+strconv.Quote(r.Host)+" is not a loopback name; the admin listener is bound to loopback, use http://"+n.AdminAddr()+"/", http.StatusMisdirectedRequest)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// hostAllowed reports whether a request's Host header may reach the console.
func (n *Node) hostAllowed(host string) bool {
	lh, _, err := net.SplitHostPort(n.AdminAddr())
	if err != nil {
		return false
	}
	if ip := net.ParseIP(lh); ip == nil || !ip.IsLoopback() {
		return true // bound to a routable address: the operator chose who may reach it
	}
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.TrimSuffix(strings.Trim(h, "[]"), ".")
	if strings.EqualFold(h, "localhost") || strings.HasSuffix(strings.ToLower(h), ".localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func (n *Node) servePage(w http.ResponseWriter, r *http.Request) {
	st := n.consoleStatus(r.Context())
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := consoleTmpl.Execute(w, st); err != nil {
		n.log.Warn("console page", "error", err)
	}
}

func (n *Node) serveStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, n.consoleStatus(r.Context()))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// consoleStatus gathers the console's data. It never fails: what cannot be learned (the group,
// the end offsets) is reported in the answer instead.
func (n *Node) consoleStatus(ctx context.Context) consoleStatus {
	now := time.Now()
	st := consoleStatus{
		Node: consoleNode{
			ID:         n.cfg.NodeID,
			Version:    Version,
			App:        n.cfg.Broker.App,
			AdminAddr:  n.AdminAddr(),
			State:      "starting",
			Partitions: n.cfg.Broker.Partitions,
			Assigned:   []int32{},
		},
		Time:       now.UTC(),
		Nodes:      []consoleMember{},
		Partitions: []consolePartition{},
		Services:   []consoleService{},
	}
	if !n.started.Load() {
		return st // the catalog, the topics and the servers are still being set up
	}
	st.Node.Addr, st.Node.Advertise = n.Addr(), n.cfg.AdvertiseAddr

	// This node's partitions.
	type localPart struct {
		o        *owner // nil between two acquisitions
		restored bool
	}
	locals := make(map[int32]localPart)
	n.mu.Lock()
	joined, serving := n.joined, n.servingLocked()
	for p := range n.parts {
		locals[p] = localPart{o: n.local[p], restored: n.restored[p]}
	}
	n.mu.Unlock()
	switch {
	case !joined:
		st.Node.State = "joining"
	case serving:
		st.Node.State = "serving"
	default:
		st.Node.State = "restoring"
	}
	for p, lp := range locals {
		st.Node.Assigned = append(st.Node.Assigned, p)
		if !lp.restored {
			st.Node.Restoring++
		}
	}
	slices.Sort(st.Node.Assigned)

	c := n.console
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refreshKafka(ctx, n, now)

	// Partitions: the owners table, this node's meters, the end offsets.
	owned := make(map[string]int)
	addrs := make(map[string]string)
	for p := int32(0); p < n.cfg.Broker.Partitions; p++ {
		cp := consolePartition{Partition: p}
		if rec, _ := n.owners.get(p); rec != nil {
			cp.Owner = &consoleOwner{
				Node:       rec.GetNodeId(),
				Address:    rec.GetAddress(),
				ProducerID: rec.GetProducerId(),
				Epoch:      rec.GetProducerEpoch(),
				AcquiredAt: rec.GetAcquiredAt().AsTime().UTC(),
			}
			owned[rec.GetNodeId()]++
			addrs[rec.GetNodeId()] = rec.GetAddress()
		}
		if lp, ok := locals[p]; ok {
			cl := &consoleLocal{Phase: "waiting", ETASeconds: -1}
			if lp.o != nil {
				v := lp.o.meter.view(now)
				cl.Phase, cl.RecordsDone, cl.RecordsTotal, cl.RecordsRate = v.Phase, v.Done, v.Total, v.Rate
				cl.ETASeconds, cl.ElapsedSeconds = v.ETA.Seconds(), v.Elapsed.Seconds()
				if v.ETA < 0 {
					cl.ETASeconds = -1
				}
			}
			cl.Commits = n.met.Partition(p).Commits()
			if r, ok := c.rates.observe("commits/"+strconv.Itoa(int(p)), now, cl.Commits); ok {
				cl.CommitsPerSec = &r
			}
			cp.Local = cl
		}
		if c.ends != nil {
			var end int64
			for topic := range n.topics {
				end += c.ends[topic][p]
			}
			cp.LogEnd = &end
			if r, ok := c.rates.observe("end/"+strconv.Itoa(int(p)), c.fetched, float64(end)); ok {
				cp.WritesPerSec = &r
			}
		}
		st.Partitions = append(st.Partitions, cp)
	}
	if c.endsErr != nil {
		st.OffsetsError = c.endsErr.Error()
	}

	// Nodes: the group's members and every owner.
	members := make(map[string]*consoleMember)
	member := func(id string) *consoleMember {
		if m, ok := members[id]; ok {
			return m
		}
		m := &consoleMember{ID: id, Self: id == n.cfg.NodeID}
		members[id] = m
		return m
	}
	if c.groupErr != nil {
		st.GroupError = c.groupErr.Error()
	}
	for _, id := range c.groupNodes {
		member(id).InGroup = true
	}
	if joined {
		member(n.cfg.NodeID).InGroup = true // whatever the last description said
	}
	for id, k := range owned {
		m := member(id)
		m.Partitions, m.Address = k, addrs[id]
	}
	me := member(n.cfg.NodeID)
	if me.Address == "" {
		me.Address = n.cfg.AdvertiseAddr
	}
	for _, m := range members {
		st.Nodes = append(st.Nodes, *m)
	}
	sort.Slice(st.Nodes, func(i, j int) bool { return st.Nodes[i].ID < st.Nodes[j].ID })

	// Services.
	if c.templates == nil {
		c.templates = make(map[string]string)
		for _, s := range n.cat.Services() {
			for _, m := range s.Methods {
				c.templates[methodName(m)] = requestTemplate(m.Desc.Input())
			}
		}
	}
	for _, s := range n.cat.Services() {
		cs := consoleService{
			Name:           s.Name,
			Kind:           s.Kind.String(),
			PersistenceID:  s.PersistenceID,
			ActiveEntities: int64(n.met.ActiveEntities(s.Name)),
			Methods:        []consoleMethod{},
		}
		for _, m := range s.Methods {
			cs.Methods = append(cs.Methods, consoleMethod{
				Name:            m.Name,
				FullName:        methodName(m),
				Input:           string(m.Desc.Input().FullName()),
				Output:          string(m.Desc.Output().FullName()),
				ClientStreaming: m.Desc.IsStreamingClient(),
				ServerStreaming: m.Desc.IsStreamingServer(),
				Template:        c.templates[methodName(m)],
			})
		}
		st.Services = append(st.Services, cs)
	}
	return st
}

// methodName is the name /api/v1/call takes: "pkg.Service/Method".
func methodName(m *catalog.Method) string { return m.Service.Name + "/" + m.Name }

// refreshKafka asks the broker for the group's members and the entity topics' end offsets, at
// most once per consoleRefresh; c.mu is held. Each request is bounded, so a broker that does
// not answer slows the page by at most a few seconds.
func (c *console) refreshKafka(ctx context.Context, n *Node, now time.Time) {
	if !c.fetched.IsZero() && now.Sub(c.fetched) < consoleRefresh {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c.groupNodes, c.groupErr = n.adm.GroupNodes(ctx)
	topics := make([]string, 0, len(n.topics))
	for t := range n.topics {
		topics = append(topics, t)
	}
	ends, err := n.adm.EndOffsets(ctx, topics)
	if err == nil || c.ends == nil {
		c.ends = ends // on an error keep the last good answer, and say so
	}
	c.endsErr = err
	c.fetched = time.Now()
}

// rateMeter turns samples of growing counters into per-second rates, each over at least a
// second and at most maxRateGap (an older sample starts over). Its owner serializes the calls.
type rateMeter struct {
	last map[string]rateSample
}

type rateSample struct {
	at   time.Time
	v    float64
	rate float64
	ok   bool
}

const maxRateGap = time.Minute

// observe records v for key at now and returns the key's rate, ok false until two samples at
// least a second apart were seen.
func (r *rateMeter) observe(key string, now time.Time, v float64) (float64, bool) {
	if r.last == nil {
		r.last = make(map[string]rateSample)
	}
	s, seen := r.last[key]
	dt := now.Sub(s.at)
	switch {
	case !seen || dt > maxRateGap || v < s.v:
		r.last[key] = rateSample{at: now, v: v}
		return 0, false
	case dt >= time.Second:
		rate := (v - s.v) / dt.Seconds()
		r.last[key] = rateSample{at: now, v: v, rate: rate, ok: true}
		return rate, true
	}
	return s.rate, s.ok
}

// requestTemplate is a JSON request of type md with every top-level field at its zero value
// (the first member of each oneof only), as a starting point for the call form.
func requestTemplate(md protoreflect.MessageDescriptor) string {
	var b strings.Builder
	b.WriteString("{")
	first := true
	oneofs := make(map[protoreflect.FullName]bool)
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if o := fd.ContainingOneof(); o != nil && !o.IsSynthetic() {
			if oneofs[o.FullName()] {
				continue
			}
			oneofs[o.FullName()] = true
		}
		if !first {
			b.WriteString(",")
		}
		first = false
		name, _ := json.Marshal(fd.JSONName())
		b.WriteString("\n  ")
		b.Write(name)
		b.WriteString(": ")
		b.WriteString(zeroJSON(fd))
	}
	if !first {
		b.WriteString("\n")
	}
	b.WriteString("}")
	return b.String()
}

func zeroJSON(fd protoreflect.FieldDescriptor) string {
	switch {
	case fd.IsMap():
		return "{}"
	case fd.IsList():
		return "[]"
	}
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return "false"
	case protoreflect.StringKind, protoreflect.BytesKind:
		return `""`
	case protoreflect.EnumKind:
		if v := fd.Enum().Values(); v.Len() > 0 {
			s, _ := json.Marshal(string(v.Get(0).Name()))
			return string(s)
		}
		return "0"
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if strings.HasPrefix(string(fd.Message().FullName()), "google.protobuf.") {
			return "null" // well-known types have JSON forms of their own; null leaves it unset
		}
		return "{}"
	}
	return "0"
}

// Formatting for the page (the script formats the same way when it refreshes).

// fmtRestore describes a partition of this node: its phase and restore progress.
func fmtRestore(l *consoleLocal) string {
	switch l.Phase {
	case phaseRestoring:
		s := strconv.FormatInt(l.RecordsDone, 10) + " / " + strconv.FormatInt(l.RecordsTotal, 10) + " records"
		if l.RecordsTotal > 0 {
			s += " (" + strconv.Itoa(int(100*l.RecordsDone/l.RecordsTotal)) + "%)"
		}
		if l.RecordsRate > 0 {
			s += ", " + fmtRate(l.RecordsRate) + "/s"
		}
		if l.ETASeconds >= 0 {
			s += ", ETA " + fmtDuration(l.ETASeconds)
		}
		return "restoring " + s
	case phaseServing:
		return "serving (restored " + strconv.FormatInt(l.RecordsTotal, 10) + " records in " + fmtDuration(l.ElapsedSeconds) + ")"
	}
	return l.Phase
}

// fmtRate prints a rate with one decimal below 10 and none above.
func fmtRate(r float64) string {
	if r < 10 {
		return strconv.FormatFloat(r, 'f', 1, 64)
	}
	return strconv.FormatFloat(r, 'f', 0, 64)
}

// fmtSince prints how long ago t was, to the second.
func fmtSince(now, t time.Time) string {
	if t.IsZero() || t.Unix() <= 0 {
		return ""
	}
	return fmtDuration(max(0, now.Sub(t).Round(time.Second).Seconds())) + " ago"
}

// fmtDuration prints sec seconds as 850ms, 2.1s or 1m5s (console.js formats the same way).
func fmtDuration(sec float64) string {
	switch {
	case sec < 1:
		return strconv.Itoa(int(math.Round(sec*1000))) + "ms"
	case sec < 60:
		return strconv.FormatFloat(math.Round(sec*10)/10, 'f', -1, 64) + "s"
	}
	s := int(math.Round(sec))
	h, m := s/3600, s%3600/60
	out := ""
	if h > 0 {
		out = strconv.Itoa(h) + "h"
	}
	return out + strconv.Itoa(m) + "m" + strconv.Itoa(s%60) + "s"
}
