package javacart

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
)

const (
	serviceName   = "kstate.examples.javacart.JavaCart"
	persistenceID = "java-cart"
	mainClass     = "dev.kstate.examples.javacart.Main"
	// callTimeout bounds every call through kstate, including one that has to wait for the user
	// function to come back.
	callTimeout = 30 * time.Second
)

// TestJavaCartThroughKstateDev is the whole scenario; its steps share one cart state, so they are
// subtests that stop the run at the first one that fails.
func TestJavaCartThroughKstateDev(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a JVM (Cloudstate's Java support library) and kstate dev; skipped with -short")
	}
	requireTools(t)
	root := repoRoot(t)

	// The two builds are independent: run them side by side.
	var libs, bin string
	var wg sync.WaitGroup
	wg.Add(2)
	var libsErr, binErr error
	go func() { defer wg.Done(); libs, libsErr = buildUF(root) }()
	go func() { defer wg.Done(); bin, binErr = buildKstate(t, root) }()
	wg.Wait()
	if libsErr != nil {
		t.Fatal(libsErr)
	}
	if binErr != nil {
		t.Fatal(binErr)
	}

	ufAddr := freeAddr(t)
	top := t // processes and connections live until the whole test ends
	uf := startUF(t, top, libs, ufAddr)
	spec := waitUF(t, uf, 2*time.Minute)
	checkSpec(t, spec)
	svc := serviceFromSpec(t, spec)

	dataDir := t.TempDir()
	ks := &kstateDev{owner: top, bin: bin, dataDir: dataDir, kafkaAddr: freeAddr(t), listen: freeAddr(t), uf: ufAddr}
	ks.start(t)
	c := newClient(t, top, ks.listen, svc)

	model := cart{}
	ok := t.Run("commands", func(t *testing.T) {
		// alice: seven events, so the library attaches a snapshot to the fifth (snapshotEvery 5).
		c.add(t, model, "alice", "apple", "Apple", 3)
		c.add(t, model, "alice", "pear", "Pear", 2)
		c.add(t, model, "alice", "apple", "Apple", 1)
		c.add(t, model, "alice", "fig", "Fig", 6)
		c.remove(t, model, "alice", "pear")
		c.add(t, model, "alice", "kiwi", "Kiwi", 4)
		c.add(t, model, "alice", "plum", "Plum", 1)
		c.add(t, model, "bob", "milk", "Milk", 2)

		// Command failures: gRPC UNKNOWN with the library's description, and nothing emitted.
		c.wantFailure(t, "AddItem", `{"cart_id":"alice","product_id":"pear","name":"Pear","quantity":0}`,
			"cannot add 0 of pear to cart alice: quantity must be positive")
		c.wantFailure(t, "AddItem", `{"cart_id":"alice","product_id":"pear","name":"Pear","quantity":-2}`,
			"cannot add -2 of pear to cart alice: quantity must be positive")
		c.wantFailure(t, "RemoveItem", `{"cart_id":"alice","product_id":"pear"}`,
			"cannot remove pear from cart alice: it is not in the cart")
		c.wantFailure(t, "RemoveItem", `{"cart_id":"carol","product_id":"milk"}`,
			"cannot remove milk from cart carol: it is not in the cart")
		// alice's fifth event carried the library's snapshot (snapshotEvery 5) into Kafka.
		ks.checkSnapshots(t)
		// The entity's stream survives a command failure.
		c.checkCart(t, model, "alice")
		c.checkCart(t, model, "bob")
		c.checkCart(t, model, "carol") // never written: empty

		// HTTP/JSON through the google.api.http rules of javacart.proto.
		httpAdd(t, ks.listen, "bob", "eggs", "Eggs", 12)
		model.add("bob", "eggs", "Eggs", 12)
		httpWantFailure(t, ks.listen, http.MethodDelete, "/java-cart/bob/items/bread", "",
			"cannot remove bread from cart bob: it is not in the cart")
		httpCheckCart(t, ks.listen, model, "bob")
		c.checkCart(t, model, "bob")
	})
	if !ok {
		return
	}

	ok = t.Run("kstate restart keeps the state", func(t *testing.T) {
		ks.stop(t)
		ks.start(t)
		c = newClient(t, top, ks.listen, svc)
		// Replayed from Kafka into fresh entity streams: alice from her snapshot plus later events.
		c.checkCart(t, model, "alice")
		c.checkCart(t, model, "bob")
		c.add(t, model, "alice", "fig", "Fig", 1)
		c.checkCart(t, model, "alice")
	})
	if !ok {
		return
	}

	t.Run("user function restart", func(t *testing.T) {
		// Make sure alice's and bob's entities are active (kstate holds a stream to the Java
		// process for each) before the process dies.
		c.checkCart(t, model, "alice")
		c.checkCart(t, model, "bob")
		uf.kill(t)
		// A call to a new entity while the user function is down may fail or wait for it; it is
		// only reported. (A new entity, so that it cannot reopen alice's or bob's stream early.)
		downtime := make(chan error, 1)
		go func() { downtime <- c.tryAdd(cart{}, "erin", "salt", "Salt", 1) }()
		uf = startUF(t, top, libs, ufAddr) // same port: kstate's --user-function is unchanged
		waitUF(t, uf, 2*time.Minute)
		// The user function answers again. From here on no call may fail: kstate must reopen the
		// streams that died with the old process and replay the entities' state into the new one.
		var errs []string
		try := func(what string, f func() error) {
			if err := f(); err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", what, err))
			}
		}
		try("GetCart alice", func() error { return c.tryCheckCart(model, "alice") })
		try("AddItem bob", func() error { return c.tryAdd(model, "bob", "milk", "Milk", 1) })
		try("RemoveItem alice", func() error { return c.tryRemove(model, "alice", "kiwi") })
		try("GetCart bob", func() error { return c.tryCheckCart(model, "bob") })
		try("GetCart alice again", func() error { return c.tryCheckCart(model, "alice") })
		try("AddItem dave (new entity)", func() error { return c.tryAdd(model, "dave", "tea", "Tea", 2) })
		try("GetCart dave", func() error { return c.tryCheckCart(model, "dave") })
		if len(errs) > 0 {
			t.Errorf("%d of 7 calls failed after the user function was back up (want none):\n  %s",
				len(errs), strings.Join(errs, "\n  "))
		}
		ids := []string{"alice", "bob", "dave"}
		if err := <-downtime; err != nil { // bounded by callTimeout
			t.Logf("AddItem erin, called while the user function was down, failed (allowed): %v", err)
		} else {
			t.Logf("AddItem erin, called while the user function was down, waited and succeeded")
			model.add("erin", "salt", "Salt", 1)
			ids = append(ids, "erin")
		}
		// Whatever failed above, the entities must end up right (read until each read succeeds,
		// within a deadline, so a failed call above does not hide a wrong state).
		for _, id := range ids {
			c.eventuallyCheckCart(t, model, id, time.Minute)
		}
	})
}

// ---- environment ----

// requireTools skips the test when java or mvn is missing (without javac the build uses the
// Eclipse compiler), unless KSTATE_JAVA_UF_REQUIRED is 1: CI (.ci/run) sets it, so that a CI
// machine without them fails instead of skipping the test silently.
func requireTools(t *testing.T) {
	t.Helper()
	var missing []string
	for _, tool := range []string{"java", "mvn", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("%s not on PATH: this test builds examples/java-cart with Maven and runs it on Java 17 (apt-get install openjdk-17-jre-headless maven)", strings.Join(missing, ", "))
	if os.Getenv("KSTATE_JAVA_UF_REQUIRED") == "1" {
		t.Fatal(msg + "; KSTATE_JAVA_UF_REQUIRED=1 forbids skipping")
	}
	t.Skip(msg)
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's folder")
		}
		dir = parent
	}
}

// buildUF runs `scripts/java-uf.sh build` and returns the folder of the user function's jars. The
// script bounds its own online Maven build (KSTATE_JAVA_UF_FETCH_TIMEOUT, default 600 s); this
// deadline is a backstop above it.
func buildUF(root string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "java-uf.sh"), "build")
	cmd.Dir = root
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("scripts/java-uf.sh build: %v\n%s", err, stderr.String())
	}
	dir := strings.TrimSpace(stdout.String())
	if _, err := os.Stat(filepath.Join(dir, "java-cart.jar")); err != nil {
		return "", fmt.Errorf("scripts/java-uf.sh build printed %q, which has no java-cart.jar: %v\n%s", dir, err, stderr.String())
	}
	return dir, nil
}

// buildKstate builds cmd/kstate the way e2e/ does (with the race detector unless
// KSTATE_E2E_NORACE is set), or takes KSTATE_E2E_BIN.
func buildKstate(t *testing.T, root string) (string, error) {
	if bin := os.Getenv("KSTATE_E2E_BIN"); bin != "" {
		return bin, nil
	}
	bin := filepath.Join(t.TempDir(), "kstate")
	args := []string{"build", "-o", bin}
	if os.Getenv("KSTATE_E2E_NORACE") == "" {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "./cmd/kstate")...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build ./cmd/kstate: %v\n%s", err, out)
	}
	return bin, nil
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// ---- processes ----

// syncBuffer collects a process's output while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proc is one child process. Cleanup kills it if it still runs and, when the test failed, logs
// its output.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, once done is closed
}

// startProc starts argv; owner (the top-level test, so that a process outlives the subtest that
// started it) kills it at its end.
func startProc(t, owner *testing.T, name string, env []string, argv ...string) *proc {
	t.Helper()
	p := &proc{name: name, out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	owner.Cleanup(func() {
		p.kill(owner)
		if owner.Failed() {
			owner.Logf("---- output of %s (pid %d) ----\n%s", p.name, p.cmd.Process.Pid, tail(p.out.String(), 300))
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and waits for the exit.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Errorf("%s (pid %d) still running 30s after SIGKILL", p.name, p.cmd.Process.Pid)
	}
}

// terminate sends SIGTERM and waits up to within for a clean exit.
func (p *proc) terminate(t *testing.T, within time.Duration) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			t.Errorf("%s exited with %v after SIGTERM\n%s", p.name, p.err, tail(p.out.String(), 100))
		}
	case <-time.After(within):
		t.Errorf("%s still running %v after SIGTERM; killing it\n%s", p.name, within, tail(p.out.String(), 100))
		p.kill(t)
	}
}

func tail(s string, lines int) string {
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = append([]string{fmt.Sprintf("[... %d lines before]", len(parts)-lines)}, parts[len(parts)-lines:]...)
	}
	return strings.Join(parts, "\n")
}

// ---- the Java user function ----

// startUF runs the cart's JVM listening on addr (HOST and PORT: the support library's
// reference.conf reads them).
func startUF(t, owner *testing.T, libs, addr string) *proc {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return startProc(t, owner, "java-cart user function", []string{"HOST=" + host, "PORT=" + port},
		"java", "-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
		"-cp", filepath.Join(libs, "*"), mainClass)
}

// waitUF polls the user function's discovery endpoint directly until it answers, and returns its
// EntitySpec.
func waitUF(t *testing.T, uf *proc, within time.Duration) *cloudstatepb.EntitySpec {
	t.Helper()
	addr := ""
	for _, e := range uf.cmd.Env {
		if v, ok := strings.CutPrefix(e, "PORT="); ok {
			addr = net.JoinHostPort("127.0.0.1", v)
		}
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	info := &cloudstatepb.ProxyInfo{
		ProtocolMajorVersion: 0, ProtocolMinorVersion: 2,
		ProxyName: "javacart_test", ProxyVersion: "0",
		SupportedEntityTypes: []string{
			"cloudstate.action.ActionProtocol", "cloudstate.valueentity.ValueEntity",
			"cloudstate.eventsourced.EventSourced", "cloudstate.crdt.Crdt",
		},
	}
	deadline := time.Now().Add(within)
	var lastErr error
	for time.Now().Before(deadline) {
		if uf.exited() {
			t.Fatalf("the user function exited (%v) before it answered discovery:\n%s", uf.err, tail(uf.out.String(), 100))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		spec, err := cloudstatepb.NewEntityDiscoveryClient(cc).Discover(ctx, info)
		cancel()
		if err == nil {
			return spec
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond) // poll interval of a bounded wait
	}
	t.Fatalf("the user function on %s did not answer discovery within %v (last error: %v):\n%s", addr, within, lastErr, tail(uf.out.String(), 100))
	return nil
}

// checkSpec pins what cloudstate-java-support 0.5.2 reports: the facts kstate's discovery relies
// on (docs/testing.md, examples/java-cart/README.md).
func checkSpec(t *testing.T, spec *cloudstatepb.EntitySpec) {
	t.Helper()
	si := spec.GetServiceInfo()
	var files descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(spec.GetProto(), &files); err != nil {
		t.Fatalf("EntitySpec.proto is not a FileDescriptorSet: %v", err)
	}
	var names []string
	for _, f := range files.GetFile() {
		names = append(names, f.GetName())
	}
	t.Logf("discovery: %s %s, protocol %d.%d, runtime %q, service %q %q, entities %v, files %v",
		si.GetSupportLibraryName(), si.GetSupportLibraryVersion(), si.GetProtocolMajorVersion(), si.GetProtocolMinorVersion(),
		si.GetServiceRuntime(), si.GetServiceName(), si.GetServiceVersion(), spec.GetEntities(), names)
	if si.GetSupportLibraryName() != "cloudstate-java-support" || si.GetSupportLibraryVersion() != "0.5.2" {
		t.Errorf("support library %q %q, want cloudstate-java-support 0.5.2", si.GetSupportLibraryName(), si.GetSupportLibraryVersion())
	}
	// 0.5.x predates ServiceInfo's protocol version fields: kstate sees 0.0 and accepts it.
	if si.GetProtocolMajorVersion() != 0 || si.GetProtocolMinorVersion() != 0 {
		t.Errorf("protocol %d.%d reported; cloudstate-java-support 0.5.2 reports none (0.0)", si.GetProtocolMajorVersion(), si.GetProtocolMinorVersion())
	}
	if len(spec.GetEntities()) != 1 {
		t.Fatalf("entities %v, want one", spec.GetEntities())
	}
	e := spec.GetEntities()[0]
	if e.GetEntityType() != "cloudstate.eventsourced.EventSourced" || e.GetServiceName() != serviceName || e.GetPersistenceId() != persistenceID {
		t.Errorf("entity %v, want an event-sourced %s with persistence id %s", e, serviceName, persistenceID)
	}
}

// serviceFromSpec builds the JavaCart service descriptor from the spec's FileDescriptorSet. Files
// the set leaves out (well-known types) come from the Go protobuf registry.
func serviceFromSpec(t *testing.T, spec *cloudstatepb.EntitySpec) protoreflect.ServiceDescriptor {
	t.Helper()
	var fds descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(spec.GetProto(), &fds); err != nil {
		t.Fatalf("EntitySpec.proto is not a FileDescriptorSet: %v", err)
	}
	byName := map[string]*descriptorpb.FileDescriptorProto{}
	for _, f := range fds.GetFile() {
		byName[f.GetName()] = f
	}
	files := new(protoregistry.Files)
	var add func(name string) error
	add = func(name string) error {
		if _, err := files.FindFileByPath(name); err == nil {
			return nil
		}
		fdp, ok := byName[name]
		if !ok {
			// Not in the set: take the Go registry's copy (google/protobuf/*.proto).
			fd, err := protoregistry.GlobalFiles.FindFileByPath(name)
			if err != nil {
				return fmt.Errorf("%s: not in the spec and not known to Go: %w", name, err)
			}
			return files.RegisterFile(fd)
		}
		for _, dep := range fdp.GetDependency() {
			if err := add(dep); err != nil {
				return err
			}
		}
		fd, err := protodesc.NewFile(fdp, files)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return files.RegisterFile(fd)
	}
	for name := range byName {
		if err := add(name); err != nil {
			t.Fatalf("descriptors from discovery: %v", err)
		}
	}
	d, err := files.FindDescriptorByName(serviceName)
	if err != nil {
		t.Fatalf("service %s not in the spec's descriptors: %v", serviceName, err)
	}
	svc, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		t.Fatalf("%s is a %T, not a service", serviceName, d)
	}
	return svc
}

// ---- kstate dev ----

type kstateDev struct {
	bin, dataDir, kafkaAddr, listen, uf string
	owner                               *testing.T // the top-level test: kills the process at its end
	p                                   *proc
	runs                                int
}

var bannerRE = regexp.MustCompile(`(?m)^\s+gRPC \+ HTTP/JSON:\s+(\S+)`)

// start runs `kstate dev --user-function` on the data dir and waits until it serves: the banner,
// then gRPC health SERVING (every partition restored).
func (k *kstateDev) start(t *testing.T) {
	t.Helper()
	k.runs++
	k.p = startProc(t, k.owner, fmt.Sprintf("kstate dev (run %d)", k.runs), nil, k.bin, "dev",
		"--data-dir", k.dataDir,
		"--kafka-addr", k.kafkaAddr,
		"--listen", k.listen,
		"--user-function", k.uf,
		"--app", "javacart",
		"--partitions", "3",
		"--log-level", "info",
	)
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(k.p.out.String(), "kstate dev is up") {
		if k.p.exited() {
			t.Fatalf("kstate dev exited (%v) before it was up:\n%s", k.p.err, tail(k.p.out.String(), 100))
		}
		if time.Now().After(deadline) {
			t.Fatalf("kstate dev not up within 2m:\n%s", tail(k.p.out.String(), 100))
		}
		time.Sleep(20 * time.Millisecond) // poll interval of a bounded wait
	}
	if m := bannerRE.FindStringSubmatch(k.p.out.String()); m == nil || m[1] != k.listen {
		t.Fatalf("banner does not show the gRPC address %s:\n%s", k.listen, k.p.out.String())
	}
	if !strings.Contains(k.p.out.String(), serviceName+" (event-sourced, persistence id "+persistenceID+")") {
		t.Errorf("banner does not list %s as event-sourced with persistence id %s:\n%s", serviceName, persistenceID, k.p.out.String())
	}
	cc, err := grpc.NewClient(k.listen, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		r, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}
		if k.p.exited() {
			t.Fatalf("kstate dev exited (%v) before it was SERVING:\n%s", k.p.err, tail(k.p.out.String(), 100))
		}
		if time.Now().After(deadline) {
			t.Fatalf("kstate dev not SERVING within 2m (last: %v %v):\n%s", r.GetStatus(), err, tail(k.p.out.String(), 100))
		}
		time.Sleep(50 * time.Millisecond) // poll interval of a bounded wait
	}
}

// checkSnapshots runs `kstate topics` against the embedded broker and wants records in the
// entity's snapshots topic.
func (k *kstateDev) checkSnapshots(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, k.bin, "topics", "--brokers", k.kafkaAddr, "--timeout", "30s").CombinedOutput()
	if err != nil {
		t.Fatalf("kstate topics: %v\n%s", err, out)
	}
	// TOPIC  KIND  PARTITIONS  CLEANUP  RECORDS (end offsets): "kstate.java-cart.snapshots snapshots 3 compact 2 [0 2 0]"
	topic := "kstate." + persistenceID + ".snapshots"
	for _, row := range strings.Split(string(out), "\n") {
		f := strings.Fields(row)
		if len(f) >= 5 && f[0] == topic {
			if f[4] == "0" {
				t.Errorf("%s is empty: no snapshot reached Kafka\n%s", topic, out)
			}
			return
		}
	}
	t.Errorf("kstate topics does not list %s:\n%s", topic, out)
}

// stop sends SIGTERM (what Ctrl-C does) and waits for a clean exit.
func (k *kstateDev) stop(t *testing.T) {
	t.Helper()
	k.p.terminate(t, time.Minute)
}

// ---- the client ----

type client struct {
	cc  *grpc.ClientConn
	svc protoreflect.ServiceDescriptor
}

func newClient(t, owner *testing.T, addr string, svc protoreflect.ServiceDescriptor) *client {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	owner.Cleanup(func() { _ = cc.Close() })
	return &client{cc: cc, svc: svc}
}

// invoke calls method with the request given as proto JSON and returns the reply as JSON.
func (c *client) invoke(method, reqJSON string) ([]byte, error) {
	md := c.svc.Methods().ByName(protoreflect.Name(method))
	if md == nil {
		return nil, fmt.Errorf("no method %s in %s", method, c.svc.FullName())
	}
	req := dynamicpb.NewMessage(md.Input())
	if err := protojson.Unmarshal([]byte(reqJSON), req); err != nil {
		return nil, fmt.Errorf("request %s for %s: %w", reqJSON, method, err)
	}
	resp := dynamicpb.NewMessage(md.Output())
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := c.cc.Invoke(ctx, "/"+string(c.svc.FullName())+"/"+method, req, resp); err != nil {
		return nil, err
	}
	return protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(resp)
}

func (c *client) tryAdd(m cart, id, product, name string, qty int) error {
	if _, err := c.invoke("AddItem", fmt.Sprintf(`{"cart_id":%q,"product_id":%q,"name":%q,"quantity":%d}`, id, product, name, qty)); err != nil {
		return err
	}
	m.add(id, product, name, qty)
	return nil
}

func (c *client) add(t *testing.T, m cart, id, product, name string, qty int) {
	t.Helper()
	if err := c.tryAdd(m, id, product, name, qty); err != nil {
		t.Fatalf("AddItem %s %s %d: %v", id, product, qty, err)
	}
}

func (c *client) tryRemove(m cart, id, product string) error {
	if _, err := c.invoke("RemoveItem", fmt.Sprintf(`{"cart_id":%q,"product_id":%q}`, id, product)); err != nil {
		return err
	}
	m.remove(id, product)
	return nil
}

func (c *client) remove(t *testing.T, m cart, id, product string) {
	t.Helper()
	if err := c.tryRemove(m, id, product); err != nil {
		t.Fatalf("RemoveItem %s %s: %v", id, product, err)
	}
}

// wantFailure expects a command failure: gRPC UNKNOWN whose description is exactly desc.
func (c *client) wantFailure(t *testing.T, method, reqJSON, desc string) {
	t.Helper()
	_, err := c.invoke(method, reqJSON)
	st, _ := status.FromError(err)
	if err == nil || st.Code() != codes.Unknown || st.Message() != desc {
		t.Errorf("%s %s: got %v, want code Unknown with description %q", method, reqJSON, err, desc)
	}
}

func (c *client) getCart(id string) ([]line, error) {
	out, err := c.invoke("GetCart", fmt.Sprintf(`{"cart_id":%q}`, id))
	if err != nil {
		return nil, err
	}
	return decodeCart(out)
}

func (c *client) tryCheckCart(m cart, id string) error {
	got, err := c.getCart(id)
	if err != nil {
		return err
	}
	return m.check(id, got)
}

func (c *client) checkCart(t *testing.T, m cart, id string) {
	t.Helper()
	if err := c.tryCheckCart(m, id); err != nil {
		t.Fatalf("GetCart %s: %v", id, err)
	}
}

// eventuallyCheckCart reads the cart until a read succeeds, and checks that read.
func (c *client) eventuallyCheckCart(t *testing.T, m cart, id string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got, err := c.getCart(id)
		if err == nil {
			if err := m.check(id, got); err != nil {
				t.Errorf("GetCart %s: %v", id, err)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("GetCart %s still failing after %v: %v", id, within, err)
			return
		}
		time.Sleep(200 * time.Millisecond) // poll interval of a bounded wait
	}
}

// ---- HTTP/JSON ----

func httpDo(t *testing.T, addr, method, path, body string) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, path, err)
	}
	return resp.StatusCode, out
}

func httpAdd(t *testing.T, addr, id, product, name string, qty int) {
	t.Helper()
	code, out := httpDo(t, addr, http.MethodPost, "/java-cart/"+id+"/items",
		fmt.Sprintf(`{"product_id":%q,"name":%q,"quantity":%d}`, product, name, qty))
	if code != http.StatusOK {
		t.Fatalf("POST /java-cart/%s/items: HTTP %d %s", id, code, out)
	}
}

// httpWantFailure expects HTTP 500 with the failure's description in the body.
func httpWantFailure(t *testing.T, addr, method, path, body, desc string) {
	t.Helper()
	code, out := httpDo(t, addr, method, path, body)
	if code != http.StatusInternalServerError || !bytes.Contains(out, []byte(desc)) {
		t.Errorf("%s %s: HTTP %d %s; want 500 with %q", method, path, code, out, desc)
	}
}

func httpCheckCart(t *testing.T, addr string, m cart, id string) {
	t.Helper()
	code, out := httpDo(t, addr, http.MethodGet, "/java-cart/"+id, "")
	if code != http.StatusOK {
		t.Fatalf("GET /java-cart/%s: HTTP %d %s", id, code, out)
	}
	got, err := decodeCart(out)
	if err != nil {
		t.Fatalf("GET /java-cart/%s: %v", id, err)
	}
	if err := m.check(id, got); err != nil {
		t.Errorf("GET /java-cart/%s: %v", id, err)
	}
}

// ---- the model ----

type line struct {
	ProductID string `json:"product_id"`
	Name      string `json:"name"`
	Quantity  int    `json:"quantity"`
}

// decodeCart reads a CartView in JSON, with proto or JSON field names.
func decodeCart(b []byte) ([]line, error) {
	var v struct {
		Items []map[string]any `json:"items"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("cart %s: %w", b, err)
	}
	var out []line
	for _, it := range v.Items {
		l := line{}
		for k, val := range it {
			switch k {
			case "product_id", "productId":
				l.ProductID, _ = val.(string)
			case "name":
				l.Name, _ = val.(string)
			case "quantity":
				f, _ := val.(float64)
				l.Quantity = int(f)
			}
		}
		out = append(out, l)
	}
	return out, nil
}

// cart is what the carts must hold: per cart, the lines in first-added order.
type cart map[string][]line

func (m cart) add(id, product, name string, qty int) {
	for i, l := range m[id] {
		if l.ProductID == product {
			m[id][i].Quantity += qty
			return
		}
	}
	m[id] = append(m[id], line{ProductID: product, Name: name, Quantity: qty})
}

func (m cart) remove(id, product string) {
	var keep []line
	for _, l := range m[id] {
		if l.ProductID != product {
			keep = append(keep, l)
		}
	}
	m[id] = keep
}

func (m cart) check(id string, got []line) error {
	want := m[id]
	if len(got) == 0 && len(want) == 0 {
		return nil
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		return fmt.Errorf("cart %s is %v, want %v", id, got, want)
	}
	return nil
}
