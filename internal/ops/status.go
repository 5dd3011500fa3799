package ops

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

// Member is one member of the app's consumer group, as broker.DescribeGroup reports it.
type Member struct {
	ID, ClientID, Host string
	Partitions         []int32
}

// Topic is one of the app's entity topics with the end offset of each partition.
type Topic struct {
	Name       string
	EndOffsets []int64
}

// Restore is a partition's restore as a node's metrics report it.
type Restore struct {
	// Admin is the admin listener that reported it.
	Admin       string
	Restoring   bool
	Done, Total int64
}

// StatusInput is what `kstate status` read.
type StatusInput struct {
	Namespace, App, Group, GroupState string
	// ClientIDPrefix is the node client ids' prefix: a member's client id is the prefix, "-" and
	// its node id.
	ClientIDPrefix string
	// Partitions is the app's partition count (its commands topic's).
	Partitions int32
	Members    []Member
	// Owners is the latest owners-topic record of each partition.
	Owners map[int32]*kstatev1.OwnerRecord
	// Topics are the app's entity topics (of its claimed persistence ids), for the end offsets.
	Topics []Topic
	// Restores come from the nodes' admin listeners (--admin); nil when none was asked.
	Restores map[int32]Restore
	// Scrapes lists each admin listener asked and what went wrong ("" when it answered).
	Scrapes []Scrape
}

// Scrape is one admin listener `kstate status` read the metrics of.
type Scrape struct {
	Admin string `json:"admin"`
	Error string `json:"error,omitempty"`
}

// Status is the app as `kstate status` shows it (also its --json output).
type Status struct {
	Namespace  string      `json:"namespace"`
	App        string      `json:"app"`
	Group      string      `json:"group"`
	GroupState string      `json:"groupState"`
	Nodes      []Node      `json:"nodes"`
	Partitions []Partition `json:"partitions"`
	// Counts of partitions by state.
	States map[string]int `json:"states"`
	// Topics are the entity topics whose end offsets are summed per partition.
	Topics  []string `json:"topics"`
	Scrapes []Scrape `json:"metrics,omitempty"`
}

// Node is one member of the group: a running node.
type Node struct {
	Node     string `json:"node"`
	ClientID string `json:"clientId"`
	Host     string `json:"host"`
	MemberID string `json:"memberId"`
	// Address is the node's peer address, from the owners topic ("" before it owned anything).
	Address    string  `json:"address,omitempty"`
	Partitions []int32 `json:"partitions"`
}

// The states of a partition.
const (
	// StateServing: the node the group assigns it to has published its ownership (and, when its
	// metrics were read, is not restoring).
	StateServing = "serving"
	// StateRestoring: its node's metrics say it is being acquired (fence and restore).
	StateRestoring = "restoring"
	// StateMoving: the group assigns it to a node that has not published its ownership yet.
	StateMoving = "moving"
	// StateUnassigned: no member has it (no nodes, or a rebalance in progress).
	StateUnassigned = "unassigned"
)

// Partition is one partition of the app.
type Partition struct {
	Partition int32  `json:"partition"`
	State     string `json:"state"`
	// Assigned is the node the group assigns it to ("" when none).
	Assigned string `json:"assigned,omitempty"`
	// Owner, Address, ProducerID, Epoch and AcquiredAt are its latest owners-topic record.
	Owner      string     `json:"owner,omitempty"`
	Address    string     `json:"address,omitempty"`
	ProducerID int64      `json:"producerId,omitempty"`
	Epoch      int32      `json:"epoch,omitempty"`
	AcquiredAt *time.Time `json:"acquiredAt,omitempty"`
	Released   bool       `json:"released,omitempty"`
	// RestoreDone and RestoreTotal are the offsets its restore read and has to read (metrics).
	RestoreDone  int64 `json:"restoreDone,omitempty"`
	RestoreTotal int64 `json:"restoreTotal,omitempty"`
	// EndOffsets sums the partition's end offsets over the app's entity topics: records plus
	// transaction markers written so far.
	EndOffsets int64 `json:"endOffsets"`
}

// NodeID is the node id in a member's client id, or the client id itself when it does not start
// with prefix and "-".
func NodeID(clientID, prefix string) string {
	if rest, ok := strings.CutPrefix(clientID, prefix+"-"); ok && rest != "" {
		return rest
	}
	return clientID
}

// BuildStatus joins the group, the owners topic and the metrics into the app's status.
func BuildStatus(in StatusInput) Status {
	s := Status{Namespace: in.Namespace, App: in.App, Group: in.Group, GroupState: in.GroupState,
		Nodes: []Node{}, Partitions: []Partition{}, States: map[string]int{}, Topics: []string{}, Scrapes: in.Scrapes}
	assigned := map[int32]string{}
	for _, m := range in.Members {
		n := Node{Node: NodeID(m.ClientID, in.ClientIDPrefix), ClientID: m.ClientID, Host: m.Host, MemberID: m.ID, Partitions: slices.Clone(m.Partitions)}
		if n.Partitions == nil {
			n.Partitions = []int32{}
		}
		for _, p := range m.Partitions {
			assigned[p] = n.Node
		}
		s.Nodes = append(s.Nodes, n)
	}
	addrs := map[string]string{}
	for _, o := range in.Owners {
		if !o.GetReleased() && o.GetAddress() != "" {
			addrs[o.GetNodeId()] = o.GetAddress()
		}
	}
	for i := range s.Nodes {
		s.Nodes[i].Address = addrs[s.Nodes[i].Node]
	}
	slices.SortFunc(s.Nodes, func(a, b Node) int { return cmp.Compare(a.Node, b.Node) })
	for _, t := range in.Topics {
		s.Topics = append(s.Topics, t.Name)
	}
	n := in.Partitions
	for p := range in.Owners {
		n = max(n, p+1)
	}
	for p := int32(0); p < n; p++ {
		ps := Partition{Partition: p, Assigned: assigned[p]}
		if o := in.Owners[p]; o != nil {
			ps.Owner, ps.Address, ps.ProducerID, ps.Epoch, ps.Released = o.GetNodeId(), o.GetAddress(), o.GetProducerId(), o.GetProducerEpoch(), o.GetReleased()
			if o.GetAcquiredAt() != nil {
				at := o.GetAcquiredAt().AsTime()
				ps.AcquiredAt = &at
			}
		}
		for _, t := range in.Topics {
			if int(p) < len(t.EndOffsets) {
				ps.EndOffsets += t.EndOffsets[p]
			}
		}
		r, scraped := in.Restores[p]
		switch {
		case ps.Assigned == "":
			ps.State = StateUnassigned
		case scraped && r.Restoring:
			ps.State = StateRestoring
			ps.RestoreDone, ps.RestoreTotal = r.Done, r.Total
		case ps.Owner != ps.Assigned || ps.Released:
			ps.State = StateMoving
		default:
			ps.State = StateServing
		}
		s.States[ps.State]++
		s.Partitions = append(s.Partitions, ps)
	}
	return s
}

// WriteTable prints s for a terminal: a summary, the nodes and the partitions.
func (s Status) WriteTable(w io.Writer) error {
	var states []string
	for _, st := range []string{StateServing, StateRestoring, StateMoving, StateUnassigned} {
		if c := s.States[st]; c > 0 {
			states = append(states, fmt.Sprintf("%d %s", c, st))
		}
	}
	if len(states) == 0 {
		states = []string{"no partitions"}
	}
	fmt.Fprintf(w, "app %s (namespace %s), group %s: %s, %d nodes; partitions: %s\n",
		s.App, s.Namespace, s.Group, s.GroupState, len(s.Nodes), strings.Join(states, ", "))
	for _, sc := range s.Scrapes {
		if sc.Error != "" {
			fmt.Fprintf(w, "metrics of %s: %s\n", sc.Admin, sc.Error)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nNODE\tADDRESS\tHOST\tPARTITIONS")
	for _, n := range s.Nodes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n.Node, dash(n.Address), dash(n.Host), partList(n.Partitions))
	}
	if len(s.Nodes) == 0 {
		fmt.Fprintln(tw, "(no nodes in the group)")
	}
	fmt.Fprintln(tw, "\nPARTITION\tSTATE\tOWNER\tADDRESS\tEPOCH\tSINCE\tASSIGNED\tRESTORE\tEND OFFSETS")
	for _, p := range s.Partitions {
		since, epoch, restore := "-", "-", "-"
		if p.AcquiredAt != nil {
			since = p.AcquiredAt.UTC().Format(time.RFC3339)
		}
		if p.Owner != "" {
			epoch = fmt.Sprint(p.Epoch)
		}
		if p.State == StateRestoring {
			restore = fmt.Sprintf("%d/%d", p.RestoreDone, p.RestoreTotal)
			if p.RestoreTotal > 0 {
				restore += fmt.Sprintf(" (%d%%)", p.RestoreDone*100/p.RestoreTotal)
			}
		}
		owner := dash(p.Owner)
		if p.Released {
			owner += " (released)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", p.Partition, p.State, owner, dash(p.Address), epoch, since, dash(p.Assigned), restore, p.EndOffsets)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\nEND OFFSETS: the partition's end offsets summed over the app's entity topics (%s): records plus one transaction marker per transaction.\n", strings.Join(orNone(s.Topics), ", "))
	return err
}

func orNone(xs []string) []string {
	if len(xs) == 0 {
		return []string{"none yet"}
	}
	return xs
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// partList renders partitions compactly: "0-3 5 7-8".
func partList(ps []int32) string {
	if len(ps) == 0 {
		return "-"
	}
	ps = slices.Clone(ps)
	slices.Sort(ps)
	var out []string
	for i := 0; i < len(ps); {
		j := i
		for j+1 < len(ps) && ps[j+1] == ps[j]+1 {
			j++
		}
		if j > i {
			out = append(out, fmt.Sprintf("%d-%d", ps[i], ps[j]))
		} else {
			out = append(out, fmt.Sprint(ps[i]))
		}
		i = j + 1
	}
	return strings.Join(out, " ")
}
