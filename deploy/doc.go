// Package deploy holds kstate's deployment manifests — the Helm chart in helm/kstate and the
// Kustomize base and overlays in kustomize — and the tests that render them offline (Helm's Go SDK
// and krusty, no cluster) and validate every object against the Kubernetes API types.
//
// It is a module of its own so the main module does not carry Helm's and Kubernetes'
// dependencies. Run its tests with `cd deploy && go test ./...` (scripts/test.sh does).
package deploy
