// Command livenessprobe serves the health of a CSI driver over HTTP, the job
// of the kubernetes-csi sidecar of the same name (whose module the Go module
// proxy here does not serve, as for node-driver-registrar): each GET of
// /healthz on --http-endpoint calls Identity.Probe on the driver's socket
// (--csi-address) within --probe-timeout and answers 200 "ok" when the
// driver says it is ready (or leaves ready unset, which CSI defines as
// ready), 500 with the reason otherwise. The secretfs chart runs it next to
// the driver with the upstream sidecar's flags.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func main() {
	csiAddress := flag.String("csi-address", "/run/csi/socket", "the CSI driver's socket")
	endpoint := flag.String("http-endpoint", "", "address of the HTTP server, e.g. 0.0.0.0:9808 (default: :--health-port)")
	port := flag.Int("health-port", 9808, "port of the HTTP server when --http-endpoint is not set")
	timeout := flag.Duration("probe-timeout", time.Second, "how long one Probe call may take")
	flag.Int("v", 0, "accepted for compatibility with the upstream sidecar; logging has one level")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	if *endpoint == "" {
		*endpoint = fmt.Sprintf(":%d", *port)
	}

	conn, err := grpc.NewClient("unix://"+*csiAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatalf("--csi-address %q: %v", *csiAddress, err)
	}
	defer conn.Close()
	identity := csi.NewIdentityClient(conn)

	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), *timeout)
		defer cancel()
		resp, err := identity.Probe(ctx, &csi.ProbeRequest{})
		switch {
		case err != nil:
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprintf(w, "probe of the CSI driver on %s failed: %v\n", *csiAddress, err)
			log.Printf("health check failed: %v", err)
		case resp.GetReady() != nil && !resp.GetReady().GetValue():
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprintf(w, "the CSI driver on %s is not ready\n", *csiAddress)
			log.Printf("health check failed: driver not ready")
		default:
			fmt.Fprintln(w, "ok")
		}
	})
	srv := &http.Server{Addr: *endpoint, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		_ = srv.Close()
	}()
	log.Printf("serving /healthz on %s for the CSI driver on %s", *endpoint, *csiAddress)
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
