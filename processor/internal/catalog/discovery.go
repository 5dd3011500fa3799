package catalog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kstatehq/kstate/internal/logging"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
)

// The Cloudstate protocol version kstate speaks, and the name it reports in ProxyInfo.
const (
	ProtocolMajorVersion = 0
	ProtocolMinorVersion = 2
	DefaultProxyName     = "kstate"
)

// DiscoverOptions configures Discover.
type DiscoverOptions struct {
	// ProxyName is reported in ProxyInfo.proxy_name; empty means "kstate".
	ProxyName string
	// ProxyVersion is reported in ProxyInfo.proxy_version.
	ProxyVersion string
	// AllowVersionMismatch accepts a user function that reports a protocol version kstate does not
	// speak (major ≠ 0 or minor > 2), with a warning. It is an escape hatch for support libraries
	// that report a wrong version; the call may still fail later.
	AllowVersionMismatch bool
	// Logger receives retry and version warnings; nil discards them.
	Logger hclog.Logger
	// RetryInitial is the first wait between discover attempts while the user function is not
	// reachable yet; default 100ms. The wait doubles up to RetryMax (default 2s).
	RetryInitial time.Duration
	// RetryMax caps the wait between discover attempts.
	RetryMax time.Duration
}

// Discover runs the Cloudstate discovery handshake with the user function behind conn: it sends
// ProxyInfo (protocol 0.2, proxy name and version, the four supported entity types), checks the
// protocol version the function reports, and builds the Catalog from the returned EntitySpec.
//
// While the function is not up yet (Unavailable), the call is retried with backoff until ctx ends,
// so a proxy started before its user function waits for it. A spec that fails BuildCatalog, or an
// unsupported protocol version, is reported to the user function with reportError before the error
// is returned (a *SpecError, or an error wrapping ErrProtocolVersion).
func Discover(ctx context.Context, conn grpc.ClientConnInterface, opts DiscoverOptions) (*Catalog, *cloudstatepb.EntitySpec, error) {
	log := logging.OrDiscard(opts.Logger).Named("discovery")
	name := opts.ProxyName
	if name == "" {
		name = DefaultProxyName
	}
	wait, maxWait := opts.RetryInitial, opts.RetryMax
	if wait <= 0 {
		wait = 100 * time.Millisecond
	}
	if maxWait <= 0 {
		maxWait = 2 * time.Second
	}
	if maxWait < wait {
		maxWait = wait
	}
	info := &cloudstatepb.ProxyInfo{
		ProtocolMajorVersion: ProtocolMajorVersion,
		ProtocolMinorVersion: ProtocolMinorVersion,
		ProxyName:            name,
		ProxyVersion:         opts.ProxyVersion,
		SupportedEntityTypes: SupportedEntityTypes(),
	}
	client := cloudstatepb.NewEntityDiscoveryClient(conn)

	var spec *cloudstatepb.EntitySpec
	for attempt := 1; ; attempt++ {
		var err error
		spec, err = client.Discover(ctx, info)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("discover: user function not reachable after %d attempts: %w (last error: %v)", attempt, ctx.Err(), err)
		}
		if status.Code(err) != codes.Unavailable {
			return nil, nil, fmt.Errorf("discover: %w", err)
		}
		log.Info("user function not reachable yet, retrying", "attempt", attempt, "wait", wait, "error", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, nil, fmt.Errorf("discover: user function not reachable after %d attempts: %w (last error: %v)", attempt, ctx.Err(), err)
		case <-t.C:
		}
		wait *= 2
		if wait > maxWait {
			wait = maxWait
		}
	}

	si := spec.GetServiceInfo()
	log.Info("user function discovered",
		"service", si.GetServiceName(), "version", si.GetServiceVersion(), "runtime", si.GetServiceRuntime(),
		"library", si.GetSupportLibraryName(), "library_version", si.GetSupportLibraryVersion(),
		"protocol", fmt.Sprintf("%d.%d", si.GetProtocolMajorVersion(), si.GetProtocolMinorVersion()),
		"entities", len(spec.GetEntities()))
	if err := checkVersion(si); err != nil {
		if !opts.AllowVersionMismatch {
			_ = ReportError(ctx, conn, err.Error())
			return nil, spec, err
		}
		log.Warn("continuing despite the protocol version mismatch because AllowVersionMismatch is set", "error", err)
	}

	cat, err := BuildCatalog(spec)
	if err != nil {
		if rerr := ReportError(ctx, conn, err.Error()); rerr != nil {
			log.Warn("could not report the spec error to the user function", "error", rerr)
		}
		return nil, spec, err
	}
	return cat, spec, nil
}

// checkVersion accepts protocol 0.x with x ≤ 2. A user function that reports no version (0.0,
// older support libraries) is accepted.
func checkVersion(si *cloudstatepb.ServiceInfo) error {
	major, minor := si.GetProtocolMajorVersion(), si.GetProtocolMinorVersion()
	if major != ProtocolMajorVersion || minor > ProtocolMinorVersion {
		return fmt.Errorf("%w: the user function (%s %s) speaks Cloudstate protocol %d.%d, kstate speaks %d.%d; use a support library for protocol %d.%d or earlier",
			ErrProtocolVersion, si.GetSupportLibraryName(), si.GetSupportLibraryVersion(), major, minor,
			ProtocolMajorVersion, ProtocolMinorVersion, ProtocolMajorVersion, ProtocolMinorVersion)
	}
	return nil
}

// ReportError sends msg to the user function's EntityDiscovery.reportError, which support libraries
// log: a bad spec, or a forward or side effect to an unknown target.
func ReportError(ctx context.Context, conn grpc.ClientConnInterface, msg string) error {
	if conn == nil {
		return errors.New("report error: no connection to the user function")
	}
	_, err := cloudstatepb.NewEntityDiscoveryClient(conn).ReportError(ctx, &cloudstatepb.UserFunctionError{Message: msg})
	if err != nil {
		return fmt.Errorf("report error to user function: %w", err)
	}
	return nil
}
