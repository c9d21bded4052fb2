// Package mlog is the project's stand-in for monis.app/mlog, with the part
// of its API the upstream Secrets Store CSI Driver's main package calls:
// Setup, the two formats, ValidateAndSetKlogLevelAndFormatGlobally, Error
// and Fatal. The driver keeps logging through klog; this only picks klog's
// output format (text, klog's own, or one JSON object per line).
package mlog

import (
	"context"
	"fmt"
	"os"

	"github.com/go-logr/logr/funcr"
	"k8s.io/klog/v2"
)

// LogFormat is how klog writes its lines.
type LogFormat string

const (
	// FormatText is klog's own text format.
	FormatText LogFormat = "text"
	// FormatJSON writes one JSON object per line to stderr.
	FormatJSON LogFormat = "json"
)

// Setup returns the function to run before the process exits: it flushes
// klog's buffers.
func Setup() func() {
	return klog.Flush
}

// ValidateAndSetKlogLevelAndFormatGlobally refuses a negative verbosity and
// an unknown format, and installs the JSON logger when asked for it.
func ValidateAndSetKlogLevelAndFormatGlobally(_ context.Context, level klog.Level, format LogFormat) error {
	if level < 0 {
		return fmt.Errorf("klog verbosity %d is negative", level)
	}
	switch format {
	case FormatText, "":
		return nil
	case FormatJSON:
		klog.SetLogger(funcr.NewJSON(func(obj string) {
			fmt.Fprintln(os.Stderr, obj)
		}, funcr.Options{Verbosity: int(level)}))
		return nil
	default:
		return fmt.Errorf("log format %q is neither %q nor %q", format, FormatText, FormatJSON)
	}
}

// Error logs err with a message and key/value pairs.
func Error(msg string, err error, keysAndValues ...any) {
	klog.ErrorSDepth(1, err, msg, keysAndValues...)
}

// Fatal logs err, flushes and exits with status 1.
func Fatal(err error, keysAndValues ...any) {
	klog.ErrorSDepth(1, err, "fatal error", keysAndValues...)
	klog.Flush()
	os.Exit(1)
}

