// Command node-driver-registrar registers a CSI node plugin with kubelet,
// the job of the kubernetes-csi sidecar of the same name, whose module the
// Go module proxy here does not serve (see ../../README.md).
//
// It speaks kubelet's plugin registration API (k8s.io/kubelet
// pluginregistration/v1), the real protocol: it asks the CSI driver for its
// name (Identity.GetPluginInfo on --csi-address), then serves the
// Registration service on <--plugin-registration-path>/<driver>-reg.sock.
// Kubelet's plugin watcher finds that socket, calls GetInfo (type CSIPlugin,
// the driver's name, the driver's socket as kubelet sees it:
// --kubelet-registration-path, supported CSI version 1.0.0) and then
// NotifyRegistrationStatus. A refused registration ends the process with
// status 1 so that whatever supervises it starts it again, as the upstream
// sidecar does. SIGTERM/SIGINT remove the socket and exit 0.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

type registrar struct {
	registerapi.UnimplementedRegistrationServer
	driver   string
	endpoint string
	refused  chan string
}

func (r *registrar) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	log.Printf("kubelet asked for plugin info: driver %q, endpoint %q", r.driver, r.endpoint)
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              r.driver,
		Endpoint:          r.endpoint,
		SupportedVersions: []string{"1.0.0"},
	}, nil
}

func (r *registrar) NotifyRegistrationStatus(_ context.Context, s *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if s.PluginRegistered {
		log.Printf("kubelet registered driver %q", r.driver)
	} else {
		log.Printf("kubelet refused driver %q: %s", r.driver, s.Error)
		select {
		case r.refused <- s.Error:
		default:
		}
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}

// driverName asks the CSI driver on csiAddress for its name, retrying until
// the driver answers or timeout passes (the driver may start after us).
func driverName(csiAddress string, timeout time.Duration) (string, error) {
	target := "unix://" + csiAddress
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", fmt.Errorf("--csi-address %q: %w", csiAddress, err)
	}
	defer conn.Close()
	client := csi.NewIdentityClient(conn)
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := client.GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
		cancel()
		if err == nil {
			if resp.GetName() == "" {
				return "", fmt.Errorf("the CSI driver on --csi-address %q returned an empty name from GetPluginInfo", csiAddress)
			}
			return resp.GetName(), nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("the CSI driver on --csi-address %q did not answer GetPluginInfo within --timeout %s: %w", csiAddress, timeout, err)
		}
		log.Printf("waiting for the CSI driver on %q: %v", csiAddress, err)
		time.Sleep(time.Second)
	}
}

func main() {
	csiAddress := flag.String("csi-address", "/csi/csi.sock", "the CSI driver's socket, as this process sees it")
	kubeletPath := flag.String("kubelet-registration-path", "", "the CSI driver's socket, as kubelet sees it (required)")
	regDir := flag.String("plugin-registration-path", "/registration", "kubelet's plugin registration directory, as this process sees it")
	timeout := flag.Duration("timeout", 5*time.Minute, "how long to wait for the CSI driver to answer GetPluginInfo")
	flag.Int("v", 0, "accepted for compatibility with the upstream sidecar; logging has one level")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)

	if *kubeletPath == "" {
		log.Fatal("--kubelet-registration-path is required: the CSI driver's socket path as kubelet sees it, e.g. /var/lib/kubelet/plugins/<driver>/csi.sock")
	}
	if !filepath.IsAbs(*kubeletPath) {
		log.Fatalf("--kubelet-registration-path %q must be an absolute path", *kubeletPath)
	}

	name, err := driverName(*csiAddress, *timeout)
	if err != nil {
		log.Fatal(err)
	}
	socket := filepath.Join(*regDir, name+"-reg.sock")
	if err := os.Remove(socket); err != nil && !errors.Is(err, fs.ErrNotExist) {
		log.Fatalf("removing the stale registration socket %q: %v", socket, err)
	}
	lis, err := net.Listen("unix", socket)
	if err != nil {
		log.Fatalf("--plugin-registration-path %q: listening on %q: %v", *regDir, socket, err)
	}
	r := &registrar{driver: name, endpoint: *kubeletPath, refused: make(chan string, 1)}
	srv := grpc.NewServer()
	registerapi.RegisterRegistrationServer(srv, r)
	go func() {
		if err := srv.Serve(lis); err != nil {
			log.Printf("registration server: %v", err)
		}
	}()
	log.Printf("serving registration of driver %q on %q (kubelet endpoint %q)", name, socket, *kubeletPath)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	code := 0
	select {
	case s := <-sig:
		log.Printf("%v: removing %q", s, socket)
	case <-r.refused:
		code = 1
	}
	// Let a NotifyRegistrationStatus in flight answer kubelet first.
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		srv.Stop()
	}
	_ = os.Remove(socket)
	os.Exit(code)
}
