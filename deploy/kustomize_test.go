package deploy

import (
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/runtime"
)

// buildKustomization runs kustomize on dir and validates the result like a Helm render.
func buildKustomization(t *testing.T, dir string) *manifests {
	t.Helper()
	out, err := kustomizeBuild(t, dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	m, err := decode("kustomize "+dir, out)
	if err != nil {
		t.Fatalf("decode: %v\n%s", err, out)
	}
	if err := m.validate(); err != nil {
		t.Fatalf("validate:\n%v\n%s", err, out)
	}
	return m
}

// TestKustomizeBaseMatchesChart: the base is the chart at its default values. The objects are the
// same but for Helm's own labels and the namespace (the base has none), plus the base's
// kstate-config ConfigMap, and the kstate container's flags — after the kubelet's expansion of
// the ConfigMap's values — are equal.
func TestKustomizeBaseMatchesChart(t *testing.T) {
	km := buildKustomization(t, "base")
	kn := checkNode(t, km, 9000, 9001)
	hm, _ := renderChart(t, "")
	hn := nodeOf(t, hm)

	if hf, kf := normalizedFlags(hn), normalizedFlags(kn); !maps.Equal(hf, kf) {
		t.Errorf("flags differ (-helm +kustomize):\n%s", cmp.Diff(hf, kf))
	}

	var kObjs []runtime.Object
	for _, o := range km.objs {
		if _, ok := o.(*corev1.ConfigMap); !ok {
			kObjs = append(kObjs, o)
		}
	}
	if len(kObjs) != len(hm.objs) {
		t.Fatalf("objects: kustomize %v, helm %v", km.kinds(), hm.kinds())
	}
	for _, h := range hm.objs {
		key := h.GetObjectKind().GroupVersionKind().Kind + "/" + meta(h).GetName()
		i := slices.IndexFunc(kObjs, func(k runtime.Object) bool {
			return k.GetObjectKind().GroupVersionKind().Kind+"/"+meta(k).GetName() == key
		})
		if i < 0 {
			t.Errorf("%s: not in the Kustomize base (%v)", key, km.kinds())
			continue
		}
		hn, kn := normalize(h), normalize(kObjs[i])
		if !equality.Semantic.DeepEqual(hn, kn) {
			t.Errorf("%s differs (-helm +kustomize):\n%s", key, cmp.Diff(hn, kn))
		}
	}
}

// normalizedFlags returns the node's flags with a bare bool flag written as "true".
func normalizedFlags(n *kstateNode) map[string]string {
	out := map[string]string{}
	for k, v := range n.flags {
		if v == "\x00bool" {
			v = "true"
		}
		out[k] = v
	}
	return out
}

// normalize drops from a copy of o what Helm adds and the base cannot have: Helm's labels and
// the namespace; and the kstate container's arguments and environment, compared as flags.
func normalize(o runtime.Object) runtime.Object {
	o = o.DeepCopyObject()
	md := meta(o)
	md.SetNamespace("")
	ls := md.GetLabels()
	for _, l := range []string{"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/version"} {
		delete(ls, l)
	}
	md.SetLabels(ls)
	if ss, ok := o.(*appsv1.StatefulSet); ok {
		for i := range ss.Spec.Template.Spec.Containers {
			if c := &ss.Spec.Template.Spec.Containers[i]; c.Name == "kstate" {
				c.Args, c.Env = nil, nil
			}
		}
	}
	return o
}

func TestKustomizeExampleOverlay(t *testing.T) {
	m := buildKustomization(t, "overlays/example")
	n := checkNode(t, m, 9000, 9001)
	for _, o := range m.objs {
		if ns := meta(o).GetNamespace(); ns != "shop" {
			t.Errorf("%s/%s in namespace %q, want shop", o.GetObjectKind().GroupVersionKind().Kind, meta(o).GetName(), ns)
		}
	}
	if !strings.HasPrefix(n.flags["advertise"], "kstate-0.kstate-headless.shop.svc.cluster.local:") {
		t.Errorf("--advertise=%s, want the pod's name in namespace shop", n.flags["advertise"])
	}
	for flag, want := range map[string]string{
		"brokers": "my-cluster-kafka-bootstrap.kafka.svc:9093", "app": "shop", "partitions": "32",
		"example": "", "kafka-tls": "\x00bool", "kafka-sasl-mechanism": "SCRAM-SHA-512", "kafka-sasl-user": "kstate",
		"namespace": "kstate", "log-json": "true",
	} {
		if got, ok := n.flags[flag]; !ok || got != want {
			t.Errorf("--%s=%q, want %q", flag, got, want)
		}
	}
	if got := n.env["KSTATE_KAFKA_PASSWORD"]; got != "secret:kstate/password" {
		t.Errorf("KSTATE_KAFKA_PASSWORD from %q, want Secret kstate key password", got)
	}
	ss := m.statefulSets()[0]
	if got := mountedFiles(t, ss)[n.flags["kafka-ca"]]; got != "my-cluster-cluster-ca-cert/ca.crt" {
		t.Errorf("--kafka-ca=%s holds %q", n.flags["kafka-ca"], got)
	}
	if *ss.Spec.Replicas != 5 {
		t.Errorf("replicas %d, want 5", *ss.Spec.Replicas)
	}
	if got := ss.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests.Storage().String(); got != "50Gi" {
		t.Errorf("volume size %s, want 50Gi", got)
	}
	pod := ss.Spec.Template.Spec
	uf := container(t, pod.Containers, "user-function")
	if uf.Image != "ghcr.io/acme/shopping-cart:1.0.0" {
		t.Errorf("user-function image %s", uf.Image)
	}
	if c := container(t, pod.Containers, "kstate"); c.Image != "ghcr.io/kstatehq/kstate:0.1.0" {
		t.Errorf("kstate image %s", c.Image)
	}
}

// TestKustomizeEveryOverlay builds every overlay there is, so a new one is validated too.
func TestKustomizeEveryOverlay(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join(kustomizeDir, "overlays", "*", "kustomization.yaml"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no overlays: %v", err)
	}
	for _, d := range dirs {
		rel, _ := filepath.Rel(kustomizeDir, filepath.Dir(d))
		t.Run(rel, func(t *testing.T) {
			checkNode(t, buildKustomization(t, filepath.ToSlash(rel)), 9000, 9001)
		})
	}
}
