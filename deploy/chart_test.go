package deploy

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// renderChart renders the chart with the values and validates the result, failing the test on any
// problem.
func renderChart(t *testing.T, valuesYAML string) (*manifests, string) {
	t.Helper()
	manifest, notes, err := helmRender(t, valuesYAML, kubeVersion)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	m, err := decode("helm", []byte(manifest))
	if err != nil {
		t.Fatalf("decode: %v\n%s", err, manifest)
	}
	if err := m.validate(); err != nil {
		t.Fatalf("validate:\n%v", err)
	}
	if strings.TrimSpace(notes) == "" || strings.Contains(notes, "<no value>") {
		t.Errorf("NOTES.txt rendered as %q", notes)
	}
	return m, notes
}

// checkNode asserts what every kstate deployment needs, whatever the values: the node id is the
// pod name, the advertise address the pod's DNS name under the headless Service (which publishes
// not-ready pods) with the peer port, which only the headless Service exposes; readiness is gRPC health on the kstate port and liveness is not, the data dir
// is the mounted data volume, the client Service reaches the port, and every flag is one that
// `kstate serve` accepts, with a value of its type.
func checkNode(t *testing.T, m *manifests, port, peerPort int32) *kstateNode {
	t.Helper()
	n := nodeOf(t, m)
	ss := m.statefulSets()[0]
	pod := ss.Spec.Template.Spec
	c := container(t, pod.Containers, "kstate")

	known, err := serveFlags()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range flagErrors(n, known) {
		t.Error(e)
	}

	if got := n.flags["node-id"]; got != n.podName {
		t.Errorf("--node-id=%s, want the pod name %s", got, n.podName)
	}
	headless := m.service(ss.Spec.ServiceName)
	if headless == nil || !headless.Spec.PublishNotReadyAddresses {
		t.Errorf("headless Service %s missing or not publishing not-ready addresses", ss.Spec.ServiceName)
	}
	wantAdvertise := fmt.Sprintf("%s.%s.%s.svc.cluster.local:%d", n.podName, ss.Spec.ServiceName, n.namespace, peerPort)
	if got := n.flags["advertise"]; got != wantAdvertise {
		t.Errorf("--advertise=%s, want %s", got, wantAdvertise)
	}
	if got, want := n.flags["listen"], fmt.Sprintf(":%d", port); got != want {
		t.Errorf("--listen=%s, want %s", got, want)
	}
	if got, want := n.flags["peer-listen"], fmt.Sprintf(":%d", peerPort); got != want {
		t.Errorf("--peer-listen=%s, want %s", got, want)
	}
	if p := containerPort(c, "grpc"); p != port {
		t.Errorf("container port grpc = %d, want %d", p, port)
	}
	if p := containerPort(c, "peer"); p != peerPort {
		t.Errorf("container port peer = %d, want %d", p, peerPort)
	}
	if headless != nil && !slices.ContainsFunc(headless.Spec.Ports, func(p corev1.ServicePort) bool {
		return p.Port == peerPort && p.TargetPort == intstr.FromString("peer")
	}) {
		t.Errorf("headless Service ports %+v lack the peer port %d", headless.Spec.Ports, peerPort)
	}
	if rp := c.ReadinessProbe; rp == nil || rp.GRPC == nil || rp.GRPC.Port != port || (rp.GRPC.Service != nil && *rp.GRPC.Service != "") {
		t.Errorf("readiness probe %+v, want grpc on port %d, service \"\"", rp, port)
	}
	for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "startup": c.StartupProbe} {
		if p == nil || p.TCPSocket == nil || p.TCPSocket.Port != intstr.FromString("grpc") {
			t.Errorf("%s probe %+v, want a TCP connection to port grpc (the health service says NOT_SERVING while restoring)", name, p)
		}
	}

	dataDir := n.flags["data-dir"]
	var mount *corev1.VolumeMount
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].MountPath == dataDir {
			mount = &c.VolumeMounts[i]
		}
	}
	if mount == nil || mount.ReadOnly {
		t.Errorf("--data-dir=%s is not a writable volume mount: %+v", dataDir, c.VolumeMounts)
	} else if !slices.ContainsFunc(ss.Spec.VolumeClaimTemplates, func(p corev1.PersistentVolumeClaim) bool { return p.Name == mount.Name }) &&
		!slices.ContainsFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == mount.Name && v.EmptyDir != nil }) {
		t.Errorf("--data-dir volume %q is neither a volumeClaimTemplate nor an emptyDir", mount.Name)
	}

	var clients int
	for _, s := range m.services() {
		if s.Spec.ClusterIP == corev1.ClusterIPNone {
			continue
		}
		clients++
		if len(s.Spec.Ports) != 1 || s.Spec.Ports[0].TargetPort != intstr.FromString("grpc") {
			t.Errorf("client Service %s ports %+v, want one to targetPort grpc", s.Name, s.Spec.Ports)
		}
	}
	if clients != 1 {
		t.Errorf("%d client Services, want 1", clients)
	}

	// Exactly one user function: an example, an address, or USER_FUNCTION_HOST/PORT.
	sources := 0
	if n.flags["example"] != "" {
		sources++
	}
	if n.flags["user-function"] != "" {
		sources++
	}
	if n.env["USER_FUNCTION_HOST"] != "" || n.env["USER_FUNCTION_PORT"] != "" {
		sources++
	}
	if sources != 1 {
		t.Errorf("%d user-function sources (--example, --user-function, USER_FUNCTION_HOST/PORT), want 1: %s", sources, n)
	}

	if sc := pod.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.FSGroup == nil {
		t.Errorf("pod securityContext %+v, want runAsNonRoot and an fsGroup for the data volume", sc)
	}
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("kstate securityContext %+v, want a read-only root filesystem", sc)
	}
	if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
		t.Errorf("enableServiceLinks not false: a Service named user-function would set USER_FUNCTION_PORT=tcp://...")
	}
	for _, a := range c.Args {
		if strings.Contains(strings.ToLower(a), "password") {
			t.Errorf("argument %q: passwords go in KSTATE_KAFKA_PASSWORD, never on the command line", a)
		}
	}
	return n
}

func containerPort(c *corev1.Container, name string) int32 {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

func TestChartDefaults(t *testing.T) {
	m, notes := renderChart(t, "")
	want := []string{"PodDisruptionBudget/kstate", "Service/kstate", "Service/kstate-headless", "ServiceAccount/kstate", "StatefulSet/kstate"}
	if got := m.kinds(); !slices.Equal(got, want) {
		t.Errorf("objects %v, want %v", got, want)
	}
	n := checkNode(t, m, 9000, 9001)
	for flag, want := range map[string]string{
		"brokers": "my-cluster-kafka-bootstrap.kafka.svc:9092", "namespace": "kstate", "app": releaseName,
		"partitions": "16", "session-timeout": "6s", "example": "shoppingcart", "data-dir": "/var/lib/kstate",
	} {
		if got := n.flags[flag]; got != want {
			t.Errorf("--%s=%q, want %q", flag, got, want)
		}
	}
	ss := m.statefulSets()[0]
	if *ss.Spec.Replicas != 3 || ss.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("replicas %d, podManagementPolicy %s; want 3, Parallel", *ss.Spec.Replicas, ss.Spec.PodManagementPolicy)
	}
	if len(ss.Spec.VolumeClaimTemplates) != 1 || ss.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests.Storage().String() != "10Gi" {
		t.Errorf("volumeClaimTemplates %+v, want one of 10Gi", ss.Spec.VolumeClaimTemplates)
	}
	if _, ok := n.env["KSTATE_KAFKA_PASSWORD"]; ok {
		t.Error("KSTATE_KAFKA_PASSWORD set without SASL")
	}
	for _, f := range []string{"kafka-tls", "kafka-sasl-mechanism", "user-function", "admin-listen", "read-lease", "max-active-entities", "max-record-bytes"} {
		if _, ok := n.flags[f]; ok {
			t.Errorf("--%s given by default", f)
		}
	}
	pdb := ofType[*policyv1.PodDisruptionBudget](m)[0]
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 {
		t.Errorf("PodDisruptionBudget maxUnavailable %v, want 1", pdb.Spec.MaxUnavailable)
	}
	c := container(t, ss.Spec.Template.Spec.Containers, "kstate")
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v, want cpu and memory requests and a memory limit", c.Resources)
	}
	if c.Image != "ghcr.io/kstatehq/kstate:0.1.0" {
		t.Errorf("image %s, want the appVersion tag", c.Image)
	}
	if !strings.Contains(notes, "kubectl --namespace kstate port-forward service/kstate 9000:9000") {
		t.Errorf("NOTES.txt:\n%s", notes)
	}
}

func TestChartKafkaTLSAndSASL(t *testing.T) {
	m, _ := renderChart(t, `
kafka:
  brokers: [my-cluster-kafka-bootstrap.kafka.svc:9093, kafka-1.example.com:9093]
  tls:
    enabled: true
    ca: {secretName: my-cluster-cluster-ca-cert}
    clientCert: {secretName: kstate-user, certKey: user.crt, keyKey: user.key}
  sasl:
    mechanism: SCRAM-SHA-512
    username: kstate
    passwordSecret: {name: kstate-sasl, key: pass}
`)
	n := checkNode(t, m, 9000, 9001)
	for flag, want := range map[string]string{
		"brokers":              "my-cluster-kafka-bootstrap.kafka.svc:9093,kafka-1.example.com:9093",
		"kafka-tls":            "\x00bool",
		"kafka-sasl-mechanism": "SCRAM-SHA-512",
		"kafka-sasl-user":      "kstate",
	} {
		if got := n.flags[flag]; got != want {
			t.Errorf("--%s=%q, want %q", flag, got, want)
		}
	}
	if got := n.env["KSTATE_KAFKA_PASSWORD"]; got != "secret:kstate-sasl/pass" {
		t.Errorf("KSTATE_KAFKA_PASSWORD from %q, want Secret kstate-sasl key pass", got)
	}
	// Each file flag names a file the projected volume puts there, from the right Secret and key.
	ss := m.statefulSets()[0]
	files := mountedFiles(t, ss)
	for flag, want := range map[string]string{
		"kafka-ca":   "my-cluster-cluster-ca-cert/ca.crt",
		"kafka-cert": "kstate-user/user.crt",
		"kafka-key":  "kstate-user/user.key",
	} {
		path := n.flags[flag]
		if got := files[path]; got != want {
			t.Errorf("--%s=%s holds %q, want Secret/key %q (mounted: %v)", flag, path, got, want, files)
		}
	}
}

// mountedFiles maps each file the kstate container sees from a Secret, through a projected or
// secret volume, to "secret/key".
func mountedFiles(t *testing.T, ss *appsv1.StatefulSet) map[string]string {
	files := map[string]string{}
	pod := ss.Spec.Template.Spec
	for _, vm := range container(t, pod.Containers, "kstate").VolumeMounts {
		for _, v := range pod.Volumes {
			if v.Name != vm.Name {
				continue
			}
			var srcs []*corev1.SecretProjection
			if v.Projected != nil {
				for _, s := range v.Projected.Sources {
					if s.Secret != nil {
						srcs = append(srcs, s.Secret)
					}
				}
			}
			if v.Secret != nil {
				srcs = append(srcs, &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: v.Secret.SecretName}, Items: v.Secret.Items})
			}
			for _, s := range srcs {
				for _, it := range s.Items {
					files[strings.TrimSuffix(vm.MountPath, "/")+"/"+it.Path] = s.Name + "/" + it.Key
				}
			}
		}
	}
	return files
}

func TestChartSidecar(t *testing.T) {
	m, notes := renderChart(t, `
userFunction:
  sidecar:
    enabled: true
    image: {repository: ghcr.io/acme/cart, tag: "1.2.0"}
    env: [{name: CART_MODE, value: strict}]
persistence: {enabled: false}
`)
	n := checkNode(t, m, 9000, 9001)
	if _, ok := n.flags["example"]; ok {
		t.Errorf("--example given with a sidecar: %s", n)
	}
	ss := m.statefulSets()[0]
	pod := ss.Spec.Template.Spec
	if len(pod.Containers) != 2 {
		t.Fatalf("%d containers, want kstate and user-function", len(pod.Containers))
	}
	uf := container(t, pod.Containers, "user-function")
	if uf.Image != "ghcr.io/acme/cart:1.2.0" {
		t.Errorf("sidecar image %s", uf.Image)
	}
	for _, c := range pod.Containers {
		env := map[string]string{}
		for _, e := range c.Env {
			env[e.Name] = e.Value
		}
		if env["USER_FUNCTION_HOST"] != "127.0.0.1" || env["USER_FUNCTION_PORT"] != "8080" {
			t.Errorf("container %s: USER_FUNCTION_HOST/PORT = %q/%q, want 127.0.0.1/8080", c.Name, env["USER_FUNCTION_HOST"], env["USER_FUNCTION_PORT"])
		}
	}
	if len(ss.Spec.VolumeClaimTemplates) != 0 {
		t.Errorf("volumeClaimTemplates with persistence disabled")
	}
	if !strings.Contains(notes, "sidecar ghcr.io/acme/cart:1.2.0 on 127.0.0.1:8080") {
		t.Errorf("NOTES.txt does not name the sidecar:\n%s", notes)
	}
}

func TestChartServiceMonitor(t *testing.T) {
	m, _ := renderChart(t, `
metrics:
  enabled: true
  port: 9102
  serviceMonitor: {enabled: true, labels: {release: prometheus}}
`)
	n := checkNode(t, m, 9000, 9001)
	if got := n.flags["admin-listen"]; got != ":9102" {
		t.Errorf("--admin-listen=%s, want :9102", got)
	}
	sms := m.serviceMonitors()
	if len(sms) != 1 {
		t.Fatalf("%d ServiceMonitors, want 1", len(sms))
	}
	sm := sms[0]
	if sm.Labels["release"] != "prometheus" || len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "admin" || sm.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("ServiceMonitor %+v", sm)
	}
	c := container(t, m.statefulSets()[0].Spec.Template.Spec.Containers, "kstate")
	if containerPort(c, "admin") != 9102 {
		t.Errorf("no container port admin 9102: %+v", c.Ports)
	}
	// Off by default (TestChartDefaults checks the objects); metrics alone opens the port only.
	m, _ = renderChart(t, "metrics: {enabled: true}")
	if len(m.serviceMonitors()) != 0 {
		t.Error("ServiceMonitor without metrics.serviceMonitor.enabled")
	}
}

func TestChartAddressAndTuning(t *testing.T) {
	m, _ := renderChart(t, `
replicaCount: 5
port: 9443
peerPort: 7000
readLease: 1500ms
maxActiveEntities: 500
maxRecordBytes: 2000000
fullnameOverride: shop
kafka: {app: shop, namespace: acme, partitions: 48, sessionTimeout: 10s}
commitLinger: 2ms
log: {level: debug, json: false}
userFunction: {example: "", address: "cart.shop.svc:8080"}
service: {type: NodePort, port: 80, nodePort: 30900}
podDisruptionBudget: {minAvailable: "60%"}
image: {tag: v0.2.0}
`)
	n := checkNode(t, m, 9443, 7000)
	for flag, want := range map[string]string{
		"user-function": "cart.shop.svc:8080", "app": "shop", "namespace": "acme", "partitions": "48",
		"session-timeout": "10s", "commit-linger": "2ms", "log-level": "debug",
		"read-lease": "1500ms", "max-active-entities": "500", "max-record-bytes": "2000000",
	} {
		if got := n.flags[flag]; got != want {
			t.Errorf("--%s=%q, want %q", flag, got, want)
		}
	}
	if _, ok := n.flags["log-json"]; ok {
		t.Error("--log-json with log.json false")
	}
	if got := m.kinds(); !slices.Contains(got, "StatefulSet/shop") || !slices.Contains(got, "Service/shop-headless") {
		t.Errorf("objects %v, want them named shop", got)
	}
	svc := m.service("shop")
	if svc.Spec.Type != corev1.ServiceTypeNodePort || svc.Spec.Ports[0].Port != 80 || svc.Spec.Ports[0].NodePort != 30900 {
		t.Errorf("client Service %+v", svc.Spec)
	}
	pdb := ofType[*policyv1.PodDisruptionBudget](m)[0]
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.String() != "60%" || pdb.Spec.MaxUnavailable != nil {
		t.Errorf("PodDisruptionBudget %+v, want minAvailable 60%% only", pdb.Spec)
	}
}

// TestChartRejects: values that must not install. Each fails in the schema, in a template's
// fail, in Helm's kubeVersion check, or in this package's validation of the rendered objects.
func TestChartRejects(t *testing.T) {
	for _, tc := range []struct {
		name, values, want string
		kube               *struct{ major, minor int }
	}{
		{name: "unknown key", values: "replicas: 3", want: "replicas"},
		{name: "replica count type", values: "replicaCount: three", want: "replicaCount"},
		{name: "SASL mechanism", values: "kafka: {sasl: {mechanism: GSSAPI}}", want: "mechanism"},
		{name: "no brokers", values: "kafka: {brokers: []}", want: "brokers"},
		{name: "broker without port", values: "kafka: {brokers: [kafka.svc]}", want: "brokers"},
		{name: "bad duration", values: "kafka: {sessionTimeout: 6 seconds}", want: "sessionTimeout"},
		{name: "bad read lease", values: "readLease: soon", want: "readLease"},
		{name: "SASL without password", values: "kafka: {sasl: {mechanism: PLAIN, username: u}}", want: "passwordSecret.name is required"},
		{name: "SASL without user", values: "kafka: {sasl: {mechanism: PLAIN, passwordSecret: {name: s}}}", want: "username is required"},
		{name: "TLS files without TLS", values: "kafka: {tls: {ca: {secretName: ca}}}", want: "kafka.tls.enabled is false"},
		{name: "ServiceMonitor without metrics", values: "metrics: {serviceMonitor: {enabled: true}}", want: "needs metrics.enabled"},
		{name: "sidecar and address", values: "userFunction: {address: 'uf:8080', sidecar: {enabled: true, image: {repository: r}}}", want: "not both"},
		{name: "sidecar without image", values: "userFunction: {sidecar: {enabled: true}}", want: "image.repository is required"},
		{name: "no user function", values: `userFunction: {example: ""}`, want: "no user function"},
		{name: "Kubernetes too old", values: "", kube: &struct{ major, minor int }{1, 26}, want: "kubeVersion"},
		// Valid values, invalid objects: the validation below the schema must catch these.
		{name: "mount of no volume", values: "extraVolumeMounts: [{name: scratch, mountPath: /scratch}]", want: `volumeMount "scratch": no such volume`},
		{name: "misspelt field", values: "securityContext: {readOnlyRootFileSystem: true}", want: `unknown field "spec.template.spec.containers[0].securityContext.readOnlyRootFileSystem"`},
		{name: "bad quantity", values: "resources: {requests: {cpu: lots}}", want: "quantities must match"},
		{name: "request above limit", values: "resources: {requests: {memory: 2Gi}, limits: {memory: 1Gi}}", want: "above its limit"},
		{name: "env twice", values: "extraEnv: [{name: POD_NAME, value: x}]", want: `env "POD_NAME" defined twice`},
		{name: "selector label overridden", values: "podLabels: {app.kubernetes.io/instance: other}", want: "invalid propertyName 'app.kubernetes.io/instance'"},
		{name: "bad env name", values: "extraEnv: [{name: '1X', value: x}]", want: `env "1X"`},
		{name: "topology spread selecting nothing", values: "topologySpreadConstraints: [{maxSkew: 1, topologyKey: zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: nope}}}]", want: "selects no pods"},
		{name: "unknown flag", values: "extraArgs: ['--no-such-flag=1']", want: "--no-such-flag: kstate serve has no such flag"},
		{name: "flag without value", values: "extraArgs: ['--kafka-sasl-user']", want: "--kafka-sasl-user needs a value"},
		{name: "flag twice", values: "extraArgs: ['--partitions=8']", want: "--partitions given twice"},
		{name: "no disruption budget", values: "podDisruptionBudget: {maxUnavailable: null}", want: "exactly one of minAvailable and maxUnavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kv := kubeVersion
			if tc.kube != nil {
				kv = kubeVersionOf(tc.kube.major, tc.kube.minor)
			}
			err := renderErr(t, tc.values, kv)
			if err == nil {
				t.Fatalf("values %q accepted; want an error containing %q", tc.values, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("values %q: error\n%v\nwant one containing %q", tc.values, err, tc.want)
			}
		})
	}
}

// renderErr renders, decodes, validates and checks the node's flags, returning the first error.
func renderErr(t *testing.T, values string, kv chartutil.KubeVersion) error {
	manifest, _, err := helmRender(t, values, kv)
	if err != nil {
		return err
	}
	m, err := decode("helm", []byte(manifest))
	if err != nil {
		return err
	}
	if err := m.validate(); err != nil {
		return err
	}
	rec := &recorder{TB: t}
	n := nodeOf(rec, m)
	if len(rec.errs) > 0 {
		return fmt.Errorf("%s", strings.Join(rec.errs, "\n"))
	}
	known, err := serveFlags()
	if err != nil {
		t.Fatal(err)
	}
	if errs := flagErrors(n, known); len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return nil
}

// recorder collects Errorf calls instead of failing the test.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func kubeVersionOf(major, minor int) chartutil.KubeVersion {
	return chartutil.KubeVersion{Version: fmt.Sprintf("v%d.%d.0", major, minor), Major: strconv.Itoa(major), Minor: strconv.Itoa(minor)}
}

// TestValidateCatches breaks correct manifests one way at a time: each must be reported.
func TestValidateCatches(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*manifests)
		want   string
	}{
		{"headless Service renamed", func(m *manifests) { m.service("kstate-headless").Name = "peers" }, `serviceName "kstate-headless": no such Service`},
		{"headless Service with a cluster IP", func(m *manifests) { m.service("kstate-headless").Spec.ClusterIP = "" }, "is not headless"},
		{"Service selecting nothing", func(m *manifests) { m.service("kstate").Spec.Selector["app.kubernetes.io/name"] = "other" }, "selects no pods"},
		{"Service to a missing port", func(m *manifests) { m.service("kstate").Spec.Ports[0].TargetPort = intstr.FromString("http") }, `targetPort http`},
		{"probe on a missing port", func(m *manifests) {
			m.statefulSets()[0].Spec.Template.Spec.Containers[0].ReadinessProbe.GRPC.Port = 9002
		}, "grpc port 9002 is not a container port"},
		{"selector not matching the pods", func(m *manifests) {
			m.statefulSets()[0].Spec.Selector.MatchLabels["app.kubernetes.io/instance"] = "other"
		}, "does not match the pod template"},
		{"claim and volume of one name", func(m *manifests) {
			ss := m.statefulSets()[0]
			ss.Spec.Template.Spec.Volumes = append(ss.Spec.Template.Spec.Volumes, corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
		}, "also a pod volume"},
		{"missing ServiceAccount", func(m *manifests) {
			m.objs = slices.DeleteFunc(m.objs, func(o runtime.Object) bool { _, ok := o.(*corev1.ServiceAccount); return ok })
		}, `serviceAccountName "kstate": no such ServiceAccount`},
		{"bad label value", func(m *manifests) { m.service("kstate").Labels["app.kubernetes.io/version"] = "v1 beta" }, "label app.kubernetes.io/version"},
		{"ServiceMonitor on a missing port", func(m *manifests) {
			m.objs = append(m.objs, &monitoringv1.ServiceMonitor{
				TypeMeta:   metaType("monitoring.coreos.com/v1", "ServiceMonitor"),
				ObjectMeta: objectMeta("kstate", releaseNamespace),
				Spec: monitoringv1.ServiceMonitorSpec{
					Selector:  *labelSelector(map[string]string{"app.kubernetes.io/component": "headless"}),
					Endpoints: []monitoringv1.Endpoint{{Port: "admin"}},
				},
			})
		}, `endpoint port "admin" is not a port of Service kstate-headless`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			manifest, _, err := helmRender(t, "", kubeVersion)
			if err != nil {
				t.Fatal(err)
			}
			m, err := decode("helm", []byte(manifest))
			if err != nil {
				t.Fatal(err)
			}
			tc.mutate(m)
			err = m.validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("validate = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestDockerfile keeps the image and the manifests in agreement: the build runs `make build`, and
// the port, the data volume and the user are the chart's.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	m, _ := renderChart(t, "")
	n := nodeOf(t, m)
	pod := m.statefulSets()[0].Spec.Template.Spec
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^RUN .*(\\\n.*)*make build\b`),
		regexp.MustCompile(`(?m)^FROM gcr\.io/distroless/static(-debian\d+)?:nonroot$`),
		regexp.MustCompile(`(?m)^USER ` + strconv.FormatInt(*pod.SecurityContext.RunAsUser, 10) + `:` + strconv.FormatInt(*pod.SecurityContext.RunAsGroup, 10) + `$`),
		regexp.MustCompile(`(?m)^EXPOSE ` + strings.TrimPrefix(n.flags["listen"], ":") + ` ` + strings.TrimPrefix(n.flags["peer-listen"], ":") + `$`),
		regexp.MustCompile(`(?m)^VOLUME \["` + regexp.QuoteMeta(n.flags["data-dir"]) + `"\]$`),
		regexp.MustCompile(`(?m)^ENTRYPOINT \["/usr/local/bin/kstate", "serve"\]$`),
	} {
		if !want.MatchString(df) {
			t.Errorf("Dockerfile has no line matching %s", want)
		}
	}
	mk, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^build:.*\n\tCGO_ENABLED=0 \$\(GO\) build -trimpath -ldflags '\$\(LDFLAGS\)' -o bin/kstate \./cmd/kstate$`).Match(mk) {
		t.Error("make build is not the static, stamped build the Dockerfile relies on")
	}
}

func metaType(apiVersion, kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: apiVersion, Kind: kind}
}

func objectMeta(name, namespace string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: namespace}
}

func labelSelector(ls map[string]string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: ls}
}

// TestHelmLint runs `helm lint`'s rules (Chart.yaml, values, templates, deprecated APIs): every
// message fails the test, informational ones included, but the one that asks for an icon (kstate
// has none).
func TestHelmLint(t *testing.T) {
	kv := kubeVersion
	for _, values := range []string{"", "userFunction: {sidecar: {enabled: true, image: {repository: r}}}\nmetrics: {enabled: true, serviceMonitor: {enabled: true}}"} {
		vals := map[string]any{}
		if err := yaml.Unmarshal([]byte(values), &vals); err != nil {
			t.Fatal(err)
		}
		l := lint.AllWithKubeVersion(chartDir, vals, releaseNamespace, &kv)
		for _, msg := range l.Messages {
			if msg.Severity == support.InfoSev && strings.Contains(msg.Err.Error(), "icon is recommended") {
				continue
			}
			t.Errorf("helm lint: %s", msg)
		}
	}
}

// TestValuesDocumented: every value in values.yaml is in docs/deploy.md's table, as its full
// path (`kafka.tls.enabled`), under a parent (`userFunction.sidecar.image.*`, or `resources` for a
// free-form object) or as a sibling of one (`image.repository`, `.tag`), and has a
// property in values.schema.json.
func TestValuesDocumented(t *testing.T) {
	b, err := os.ReadFile(chartDir + "/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var vals map[string]any
	if err := yaml.Unmarshal(b, &vals); err != nil {
		t.Fatal(err)
	}
	docs, err := os.ReadFile("../docs/deploy.md")
	if err != nil {
		t.Fatal(err)
	}
	sb, err := os.ReadFile(chartDir + "/values.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := yaml.Unmarshal(sb, &schema); err != nil {
		t.Fatal(err)
	}
	var leaves [][]string
	var walk func(path []string, v any)
	walk = func(path []string, v any) {
		m, ok := v.(map[string]any)
		if !ok || len(m) == 0 {
			leaves = append(leaves, slices.Clone(path))
			return
		}
		for k, sub := range m {
			walk(append(path, k), sub)
		}
	}
	walk(nil, vals)
	for _, p := range leaves {
		full := strings.Join(p, ".")
		// A free-form object (resources, securityContext, ...) is documented as a whole.
		documented := false
		for i := len(p); i > 0 && !documented; i-- {
			head := strings.Join(p[:i], ".")
			documented = strings.Contains(string(docs), "`"+head+"`") || strings.Contains(string(docs), "`"+head+".*`")
			if !documented && i > 1 {
				// "`a.b.c`, `.d`": a sibling listed after the full path of the first.
				documented = regexp.MustCompile("`" + regexp.QuoteMeta(strings.Join(p[:i-1], ".")) + `\.[a-zA-Z.*]+` + "`" + `[^|]*` + "`" + `\.` + regexp.QuoteMeta(p[i-1]) + "`").Match(docs)
			}
		}
		if !documented {
			t.Errorf("value %s is not in docs/deploy.md", full)
		}
		node := schema
		for i, k := range p {
			props, _ := node["properties"].(map[string]any)
			next, ok := props[k].(map[string]any)
			if !ok {
				if node["type"] == "object" && props == nil {
					break // a free-form object in the schema
				}
				t.Errorf("value %s has no property %s in values.schema.json", full, strings.Join(p[:i+1], "."))
				break
			}
			node = next
		}
	}
}
