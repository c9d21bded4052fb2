// A stand-in for monis.app/mlog, the upstream driver's logging set-up
// helper: the Go module proxy these machines reach does not serve the
// monis.app host. Written for this project (see ../README.md); it only
// decides how klog's lines are formatted and never changes what the driver
// does.
module monis.app/mlog

go 1.26.0

require (
	github.com/go-logr/logr v1.4.3
	k8s.io/klog/v2 v2.140.0
)
