// pause: the first process of every pod sandbox of the test cluster. It
// holds the pod's namespaces, so it only has to live: it sleeps until
// SIGTERM or SIGINT, and as PID 1 of the pod it reaps children that get
// re-parented to it (shareProcessNamespace), as the upstream pause image
// does. Written for this project's tests because no image can be pulled.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
