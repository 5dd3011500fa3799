package bench

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// clientConns is the number of gRPC connections a workload spreads its calls over.
const clientConns = 4

// workload is the call a mode makes: call runs one command for an entity.
type workload struct {
	call  func(ctx context.Context, entityID string) error
	close func()
}

// dialConns opens n gRPC client connections to addr.
func dialConns(addr string, n int) ([]*grpc.ClientConn, func(), error) {
	var conns []*grpc.ClientConn
	closeAll := func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}
	for range n {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		conns = append(conns, cc)
	}
	return conns, closeAll, nil
}

// newWorkload returns the workload of a mode against addr: AddItem of one item to a cart, over
// HTTP/JSON (http) or over clientConns gRPC connections (Kstate.Call).
func (h *harness) newWorkload(mode, addr string, concurrency int) (*workload, error) {
	if mode == "http" {
		return httpWorkload(addr, concurrency), nil
	}
	conns, closeAll, err := dialConns(addr, min(clientConns, concurrency))
	if err != nil {
		return nil, err
	}
	return &workload{call: h.k.Call(mode, conns), close: closeAll}, nil
}

// httpWorkload posts AddItem as JSON over HTTP/1.1 keep-alive connections, one per command in
// flight.
func httpWorkload(addr string, concurrency int) *workload {
	tr := &http.Transport{
		MaxIdleConns:        concurrency,
		MaxIdleConnsPerHost: concurrency,
		MaxConnsPerHost:     concurrency,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	client := &http.Client{Transport: tr}
	body := []byte(`{"productId":"apple","name":"Apple","quantity":1}`)
	return &workload{
		close: tr.CloseIdleConnections,
		call: func(ctx context.Context, id string) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/cart/"+id+"/items/add", bytes.NewReader(body))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
			if err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK {
				return &HTTPError{Status: resp.StatusCode, Body: string(b)}
			}
			return nil
		},
	}
}

// entityIDs returns n entity ids "<prefix><i>".
func entityIDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = prefix + strconv.Itoa(i)
	}
	return ids
}
