// The sandbox ("pause") image's program for the test cluster
// (scripts/k8s-e2e.sh). No dependencies; built static with CGO_ENABLED=0.
module secretfs/e2e/k8s/cluster/pause

go 1.26.0
