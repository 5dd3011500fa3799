package frontdoor

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// RawMessage is one gRPC message frame, kept as the serialized bytes the peer sent. The ingress
// receives and sends user messages as RawMessage, so no generated code is needed for them.
type RawMessage []byte

// Codec is a gRPC codec (encoding.CodecV2) named "proto", so it interoperates with every standard
// gRPC client. RawMessage, *RawMessage, []byte and *[]byte values pass through untouched; any other
// value goes to grpc-go's own protobuf codec, so health, reflection and kstate's internal services
// can share a server that forces this codec (grpc.ForceServerCodecV2).
type Codec struct{}

var _ encoding.CodecV2 = Codec{}

// protoCodec is grpc-go's registered protobuf codec, used for proto.Message values.
var protoCodec = encoding.GetCodecV2(grpcproto.Name)

// Name returns "proto".
func (Codec) Name() string { return grpcproto.Name }

// Marshal returns the wire form of v.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case RawMessage:
		return mem.BufferSlice{mem.SliceBuffer(m)}, nil
	case *RawMessage:
		if m == nil {
			return nil, nil
		}
		return mem.BufferSlice{mem.SliceBuffer(*m)}, nil
	case []byte:
		return mem.BufferSlice{mem.SliceBuffer(m)}, nil
	case *[]byte:
		if m == nil {
			return nil, nil
		}
		return mem.BufferSlice{mem.SliceBuffer(*m)}, nil
	}
	if protoCodec == nil {
		return nil, fmt.Errorf("codec: cannot marshal %T: no protobuf codec registered", v)
	}
	return protoCodec.Marshal(v)
}

// Unmarshal fills v from data. A *RawMessage or *[]byte receives a copy of the bytes (gRPC frees
// data when Unmarshal returns).
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case *RawMessage:
		*m = data.Materialize()
		return nil
	case *[]byte:
		*m = data.Materialize()
		return nil
	}
	if protoCodec == nil {
		return fmt.Errorf("codec: cannot unmarshal into %T: no protobuf codec registered", v)
	}
	return protoCodec.Unmarshal(data, v)
}
