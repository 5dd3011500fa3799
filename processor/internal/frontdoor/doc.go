// Package frontdoor owns what clients talk to: the dynamic gRPC ingress (Ingress, over the raw
// Codec, with its Limits and metadata mapping), the HTTP/JSON front door (REST transcoding and
// streaming through vanguard, one file per concern: http_rules, http_binding, http_media,
// http_limits, http_errors, http_stream), gRPC server reflection, the split listener that shares
// one port between gRPC and HTTP/1.1, and ToStatus, the one mapping from the runtime's errors to
// gRPC status codes.
//
// It never imports the runtime: the runtime (processor) implements Dispatcher, and the front door
// hands it every resolved call. It reads the services from a catalog.Catalog.
package frontdoor
