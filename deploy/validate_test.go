package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// scheme knows exactly the kinds the manifests may contain: an object of any other kind fails to
// decode, and so does a field these API types do not have.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme, monitoringv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

// strict decodes YAML into the typed API structs, rejecting unknown and duplicate fields.
var strict = kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme,
	kjson.SerializerOptions{Yaml: true, Strict: true})

// manifests is a rendered set of objects, decoded.
type manifests struct {
	objs []runtime.Object
}

// decode splits a multi-document YAML stream and decodes every document strictly.
func decode(source string, stream []byte) (*manifests, error) {
	m := &manifests{}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", source, i, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, gvk, err := strict.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d (%s): %w", source, i, firstLine(doc), err)
		}
		if obj.GetObjectKind().GroupVersionKind().Empty() {
			obj.GetObjectKind().SetGroupVersionKind(*gvk)
		}
		m.objs = append(m.objs, obj)
	}
	return m, nil
}

func stripComments(doc []byte) []byte {
	var out [][]byte
	for l := range bytes.SplitSeq(doc, []byte("\n")) {
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' && string(t) != "---" {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

func firstLine(doc []byte) string {
	for l := range strings.SplitSeq(string(doc), "\n") {
		if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") && t != "---" {
			return t
		}
	}
	return ""
}

func (m *manifests) statefulSets() []*appsv1.StatefulSet { return ofType[*appsv1.StatefulSet](m) }
func (m *manifests) services() []*corev1.Service         { return ofType[*corev1.Service](m) }
func (m *manifests) configMaps() []*corev1.ConfigMap     { return ofType[*corev1.ConfigMap](m) }
func (m *manifests) serviceMonitors() []*monitoringv1.ServiceMonitor {
	return ofType[*monitoringv1.ServiceMonitor](m)
}

func ofType[T runtime.Object](m *manifests) []T {
	var out []T
	for _, o := range m.objs {
		if t, ok := o.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

func (m *manifests) service(name string) *corev1.Service {
	for _, s := range m.services() {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// kinds lists "Kind/name" of every object, sorted.
func (m *manifests) kinds() []string {
	var out []string
	for _, o := range m.objs {
		out = append(out, o.GetObjectKind().GroupVersionKind().Kind+"/"+meta(o).GetName())
	}
	slices.Sort(out)
	return out
}

func meta(o runtime.Object) metav1.Object {
	mo, ok := o.(metav1.Object)
	if !ok {
		panic(fmt.Sprintf("%T has no metadata", o))
	}
	return mo
}

// validate checks what the API server and the controllers would reject or silently get wrong and
// the API types cannot express: names and labels, references between objects (Services and
// budgets that select the pods, named ports, volumes, ConfigMap keys, the ServiceAccount), probe
// ports, resource requests within limits. It returns every problem found.
func (m *manifests) validate() error {
	var errs []error
	add := func(o runtime.Object, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s/%s: %s", o.GetObjectKind().GroupVersionKind().Kind, meta(o).GetName(), fmt.Sprintf(format, args...)))
	}
	seen := map[string]bool{}
	namespaces := map[string]bool{}
	for _, o := range m.objs {
		md := meta(o)
		key := o.GetObjectKind().GroupVersionKind().Kind + "/" + md.GetName()
		if seen[key] {
			add(o, "defined twice")
		}
		seen[key] = true
		namespaces[md.GetNamespace()] = true
		nameCheck := validation.IsDNS1123Subdomain
		if _, ok := o.(*corev1.Service); ok {
			nameCheck = validation.IsDNS1035Label
		}
		for _, e := range nameCheck(md.GetName()) {
			add(o, "name %q: %s", md.GetName(), e)
		}
		for _, e := range labelErrors(md.GetLabels()) {
			add(o, "label %s", e)
		}
	}
	if len(namespaces) > 1 {
		errs = append(errs, fmt.Errorf("objects in several namespaces: %v", namespaces))
	}
	for _, ss := range m.statefulSets() {
		for _, e := range m.statefulSetErrors(ss) {
			add(ss, "%s", e)
		}
	}
	for _, s := range m.services() {
		for _, e := range m.serviceErrors(s) {
			add(s, "%s", e)
		}
	}
	for _, pdb := range ofType[*policyv1.PodDisruptionBudget](m) {
		if (pdb.Spec.MinAvailable == nil) == (pdb.Spec.MaxUnavailable == nil) {
			add(pdb, "set exactly one of minAvailable and maxUnavailable")
		}
		if len(m.selectedPods(pdb.Spec.Selector)) == 0 {
			add(pdb, "selector %v selects no pods", pdb.Spec.Selector)
		}
	}
	for _, sm := range m.serviceMonitors() {
		for _, e := range m.serviceMonitorErrors(sm) {
			add(sm, "%s", e)
		}
	}
	return errors.Join(errs...)
}

func labelErrors(ls map[string]string) []string {
	var out []string
	for k, v := range ls {
		for _, e := range validation.IsQualifiedName(k) {
			out = append(out, fmt.Sprintf("key %q: %s", k, e))
		}
		for _, e := range validation.IsValidLabelValue(v) {
			out = append(out, fmt.Sprintf("%s=%q: %s", k, v, e))
		}
	}
	return out
}

// selectedPods returns the pod templates (of StatefulSets) that a label selector matches.
func (m *manifests) selectedPods(sel *metav1.LabelSelector) []*corev1.PodTemplateSpec {
	if sel == nil {
		return nil
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil || s.Empty() {
		return nil
	}
	var out []*corev1.PodTemplateSpec
	for _, ss := range m.statefulSets() {
		if s.Matches(labels.Set(ss.Spec.Template.Labels)) {
			out = append(out, &ss.Spec.Template)
		}
	}
	return out
}

func (m *manifests) statefulSetErrors(ss *appsv1.StatefulSet) []string {
	var errs []string
	errf := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	spec := ss.Spec
	if spec.Selector == nil || len(spec.Selector.MatchLabels)+len(spec.Selector.MatchExpressions) == 0 {
		errf("spec.selector is empty")
	} else if sel, err := metav1.LabelSelectorAsSelector(spec.Selector); err != nil {
		errf("spec.selector: %v", err)
	} else if !sel.Matches(labels.Set(spec.Template.Labels)) {
		errf("spec.selector %v does not match the pod template's labels %v", spec.Selector.MatchLabels, spec.Template.Labels)
	}
	for _, e := range labelErrors(spec.Template.Labels) {
		errf("pod label %s", e)
	}
	if spec.Replicas == nil {
		errf("spec.replicas is not set")
	}
	if svc := m.service(spec.ServiceName); svc == nil {
		errf("spec.serviceName %q: no such Service", spec.ServiceName)
	} else if svc.Spec.ClusterIP != corev1.ClusterIPNone {
		errf("spec.serviceName %q is not headless (clusterIP %q)", spec.ServiceName, svc.Spec.ClusterIP)
	}
	pod := spec.Template.Spec
	if sa := pod.ServiceAccountName; sa != "" && sa != "default" && !m.has("ServiceAccount", sa) {
		errf("serviceAccountName %q: no such ServiceAccount", sa)
	}
	for _, tsc := range pod.TopologySpreadConstraints {
		if len(m.selectedPods(tsc.LabelSelector)) == 0 {
			errf("topologySpreadConstraint %s: its labelSelector selects no pods", tsc.TopologyKey)
		}
	}
	volumes := map[string]*corev1.Volume{}
	for i := range pod.Volumes {
		v := &pod.Volumes[i]
		if volumes[v.Name] != nil {
			errf("volume %q defined twice", v.Name)
		}
		volumes[v.Name] = v
		for _, e := range validation.IsDNS1123Label(v.Name) {
			errf("volume %q: %s", v.Name, e)
		}
		for _, e := range m.volumeSourceErrors(v) {
			errf("volume %q: %s", v.Name, e)
		}
	}
	claims := map[string]bool{}
	for _, pvc := range spec.VolumeClaimTemplates {
		claims[pvc.Name] = true
		if volumes[pvc.Name] != nil {
			errf("volumeClaimTemplate %q is also a pod volume", pvc.Name)
		}
		if len(pvc.Spec.AccessModes) == 0 {
			errf("volumeClaimTemplate %q: no accessModes", pvc.Name)
		}
		if q, ok := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; !ok || q.Sign() <= 0 {
			errf("volumeClaimTemplate %q: no storage request", pvc.Name)
		}
	}
	names := map[string]bool{}
	for _, c := range slices.Concat(pod.InitContainers, pod.Containers) {
		if names[c.Name] {
			errf("container %q defined twice", c.Name)
		}
		names[c.Name] = true
		for _, e := range m.containerErrors(&c, volumes, claims) {
			errf("container %q: %s", c.Name, e)
		}
	}
	if sc := pod.SecurityContext; sc != nil && sc.RunAsNonRoot != nil && *sc.RunAsNonRoot && sc.RunAsUser != nil && *sc.RunAsUser == 0 {
		errf("runAsNonRoot with runAsUser 0")
	}
	return errs
}

func (m *manifests) has(kind, name string) bool {
	return slices.Contains(m.kinds(), kind+"/"+name)
}

func (m *manifests) volumeSourceErrors(v *corev1.Volume) []string {
	var errs []string
	n := 0
	if v.EmptyDir != nil {
		n++
	}
	if v.Secret != nil {
		n++
		if v.Secret.SecretName == "" {
			errs = append(errs, "secret without a secretName")
		}
	}
	if v.ConfigMap != nil {
		n++
		errs = append(errs, m.configMapRefErrors(v.ConfigMap.Name, keysOf(v.ConfigMap.Items))...)
	}
	if v.PersistentVolumeClaim != nil {
		n++
	}
	if v.Projected != nil {
		n++
		paths := map[string]bool{}
		for _, src := range v.Projected.Sources {
			var items []corev1.KeyToPath
			switch {
			case src.Secret != nil:
				if src.Secret.Name == "" {
					errs = append(errs, "projected secret without a name")
				}
				items = src.Secret.Items
			case src.ConfigMap != nil:
				errs = append(errs, m.configMapRefErrors(src.ConfigMap.Name, keysOf(src.ConfigMap.Items))...)
				items = src.ConfigMap.Items
			}
			for _, it := range items {
				if it.Key == "" || it.Path == "" {
					errs = append(errs, fmt.Sprintf("projected item %+v needs a key and a path", it))
				}
				if paths[it.Path] {
					errs = append(errs, fmt.Sprintf("projected path %q twice", it.Path))
				}
				paths[it.Path] = true
			}
		}
	}
	if n != 1 {
		errs = append(errs, fmt.Sprintf("%d volume sources (want exactly one this test knows)", n))
	}
	return errs
}

func keysOf(items []corev1.KeyToPath) []string {
	var ks []string
	for _, it := range items {
		ks = append(ks, it.Key)
	}
	return ks
}

// configMapRefErrors checks that a referenced ConfigMap is rendered alongside and has the keys:
// kustomize's generated names (with their hash) must have been rewritten everywhere.
func (m *manifests) configMapRefErrors(name string, keys []string) []string {
	for _, cm := range m.configMaps() {
		if cm.Name == name {
			var errs []string
			for _, k := range keys {
				if _, ok := cm.Data[k]; !ok {
					errs = append(errs, fmt.Sprintf("ConfigMap %q has no key %q", name, k))
				}
			}
			return errs
		}
	}
	return []string{fmt.Sprintf("ConfigMap %q is not part of the manifests", name)}
}

func (m *manifests) containerErrors(c *corev1.Container, volumes map[string]*corev1.Volume, claims map[string]bool) []string {
	var errs []string
	errf := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	for _, e := range validation.IsDNS1123Label(c.Name) {
		errf("name: %s", e)
	}
	if c.Image == "" || strings.HasSuffix(c.Image, ":") || strings.HasPrefix(c.Image, ":") {
		errf("image %q", c.Image)
	}
	ports := map[string]int32{}
	numbers := map[int32]bool{}
	for _, p := range c.Ports {
		for _, e := range validation.IsValidPortName(p.Name) {
			errf("port name %q: %s", p.Name, e)
		}
		for _, e := range validation.IsValidPortNum(int(p.ContainerPort)) {
			errf("port %q: %s", p.Name, e)
		}
		if _, dup := ports[p.Name]; dup || numbers[p.ContainerPort] {
			errf("port %q (%d) defined twice", p.Name, p.ContainerPort)
		}
		ports[p.Name] = p.ContainerPort
		numbers[p.ContainerPort] = true
	}
	envs := map[string]bool{}
	for _, e := range c.Env {
		for _, msg := range validation.IsEnvVarName(e.Name) {
			errf("env %q: %s", e.Name, msg)
		}
		if envs[e.Name] {
			errf("env %q defined twice", e.Name)
		}
		envs[e.Name] = true
		if vf := e.ValueFrom; vf != nil {
			switch {
			case vf.ConfigMapKeyRef != nil:
				for _, msg := range m.configMapRefErrors(vf.ConfigMapKeyRef.Name, []string{vf.ConfigMapKeyRef.Key}) {
					errf("env %q: %s", e.Name, msg)
				}
			case vf.SecretKeyRef != nil:
				if vf.SecretKeyRef.Name == "" || vf.SecretKeyRef.Key == "" {
					errf("env %q: secretKeyRef needs a name and a key", e.Name)
				}
			case vf.FieldRef != nil:
				if !slices.Contains([]string{"metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName", "spec.serviceAccountName", "status.podIP", "status.hostIP"}, vf.FieldRef.FieldPath) {
					errf("env %q: fieldRef %q", e.Name, vf.FieldRef.FieldPath)
				}
			}
		}
	}
	mounts := map[string]bool{}
	for _, vm := range c.VolumeMounts {
		if volumes[vm.Name] == nil && !claims[vm.Name] {
			errf("volumeMount %q: no such volume or volumeClaimTemplate", vm.Name)
		}
		if mounts[vm.MountPath] {
			errf("mountPath %q used twice", vm.MountPath)
		}
		mounts[vm.MountPath] = true
		if !strings.HasPrefix(vm.MountPath, "/") {
			errf("mountPath %q is not absolute", vm.MountPath)
		}
	}
	for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe} {
		for _, e := range probeErrors(p, ports, numbers) {
			errf("%s probe: %s", name, e)
		}
	}
	if r := c.Resources; r.Limits != nil {
		for res, req := range r.Requests {
			if lim, ok := r.Limits[res]; ok && req.Cmp(lim) > 0 {
				errf("%s request %s above its limit %s", res, req.String(), lim.String())
			}
		}
	}
	return errs
}

func probeErrors(p *corev1.Probe, ports map[string]int32, numbers map[int32]bool) []string {
	if p == nil {
		return nil
	}
	var errs []string
	portOK := func(port intstr.IntOrString) {
		if port.Type == intstr.String {
			if _, ok := ports[port.StrVal]; !ok {
				errs = append(errs, fmt.Sprintf("port %q is not a container port", port.StrVal))
			}
		} else if !numbers[port.IntVal] {
			errs = append(errs, fmt.Sprintf("port %d is not a container port", port.IntVal))
		}
	}
	handlers := 0
	if p.GRPC != nil {
		handlers++
		if !numbers[p.GRPC.Port] {
			errs = append(errs, fmt.Sprintf("grpc port %d is not a container port", p.GRPC.Port))
		}
	}
	if p.TCPSocket != nil {
		handlers++
		portOK(p.TCPSocket.Port)
	}
	if p.HTTPGet != nil {
		handlers++
		portOK(p.HTTPGet.Port)
	}
	if p.Exec != nil {
		handlers++
	}
	if handlers != 1 {
		errs = append(errs, fmt.Sprintf("%d handlers, want 1", handlers))
	}
	if p.TimeoutSeconds > 0 && p.PeriodSeconds > 0 && p.TimeoutSeconds > p.PeriodSeconds {
		errs = append(errs, "timeoutSeconds above periodSeconds")
	}
	return errs
}

func (m *manifests) serviceErrors(s *corev1.Service) []string {
	var errs []string
	errf := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	pods := m.selectedPods(&metav1.LabelSelector{MatchLabels: s.Spec.Selector})
	if len(pods) == 0 {
		errf("selector %v selects no pods", s.Spec.Selector)
	}
	if len(s.Spec.Ports) == 0 {
		errf("no ports")
	}
	names := map[string]bool{}
	for _, p := range s.Spec.Ports {
		if len(s.Spec.Ports) > 1 || p.Name != "" {
			for _, e := range validation.IsDNS1123Label(p.Name) {
				errf("port name %q: %s", p.Name, e)
			}
		}
		if names[p.Name] {
			errf("port %q defined twice", p.Name)
		}
		names[p.Name] = true
		for _, e := range validation.IsValidPortNum(int(p.Port)) {
			errf("port %q: %s", p.Name, e)
		}
		if p.NodePort != 0 && s.Spec.Type != corev1.ServiceTypeNodePort && s.Spec.Type != corev1.ServiceTypeLoadBalancer {
			errf("port %q: nodePort on a %s Service", p.Name, s.Spec.Type)
		}
		for _, pod := range pods {
			if !podHasPort(&pod.Spec, p.TargetPort, p.Port) {
				errf("port %q: targetPort %s is not a port of the selected pods", p.Name, p.TargetPort.String())
			}
		}
	}
	if s.Spec.ClusterIP == corev1.ClusterIPNone && s.Spec.Type != "" && s.Spec.Type != corev1.ServiceTypeClusterIP {
		errf("headless Service of type %s", s.Spec.Type)
	}
	return errs
}

func podHasPort(pod *corev1.PodSpec, target intstr.IntOrString, port int32) bool {
	for _, c := range pod.Containers {
		for _, cp := range c.Ports {
			switch {
			case target.Type == intstr.String && target.StrVal == cp.Name,
				target.Type == intstr.Int && target.IntVal == cp.ContainerPort,
				target.Type == intstr.Int && target.IntVal == 0 && port == cp.ContainerPort:
				return true
			}
		}
	}
	return false
}

func (m *manifests) serviceMonitorErrors(sm *monitoringv1.ServiceMonitor) []string {
	var errs []string
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil || sel.Empty() {
		return []string{fmt.Sprintf("selector %v: %v", sm.Spec.Selector, err)}
	}
	var matched []*corev1.Service
	for _, s := range m.services() {
		if sel.Matches(labels.Set(s.Labels)) {
			matched = append(matched, s)
		}
	}
	if len(matched) != 1 {
		errs = append(errs, fmt.Sprintf("selector matches %d Services, want 1", len(matched)))
	}
	if ns := sm.Spec.NamespaceSelector; !ns.Any && len(ns.MatchNames) > 0 && !slices.Contains(ns.MatchNames, sm.Namespace) {
		errs = append(errs, fmt.Sprintf("namespaceSelector %v leaves out the monitor's namespace %q", ns.MatchNames, sm.Namespace))
	}
	for _, ep := range sm.Spec.Endpoints {
		for _, s := range matched {
			if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
				errs = append(errs, fmt.Sprintf("endpoint port %q is not a port of Service %s", ep.Port, s.Name))
			}
		}
	}
	return errs
}

func TestDecodeStrict(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"duplicate field", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {type: ClusterIP, type: NodePort}", "duplicate field"},
		{"unknown field", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {clusterIp: None}", `unknown field "spec.clusterIp"`},
		{"unknown kind", "apiVersion: batch/v1\nkind: Job\nmetadata: {name: a}", `no kind "Job" is registered`},
		{"wrong type", "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: a}\nspec: {replicas: three}", "cannot unmarshal string"},
	} {
		_, err := decode(tc.name, []byte("# a comment\n---\n"+tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: decode = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	m, err := decode("two", []byte("---\n# only a comment\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a}\n---\n"))
	if err != nil || len(m.objs) != 1 {
		t.Errorf("decode of one object among empty documents = %v, %v", m, err)
	}
}
