package session

import (
	"encoding/binary"
	"fmt"
	"math"

	ort "github.com/yalue/onnxruntime_go"

	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// valueFromProto makes an onnxruntime tensor from a TensorProto holding float, float16,
// int64 or int32 values (raw_data or the typed fields).
func valueFromProto(t *pb.TensorProto) (ort.Value, error) {
	shape := ort.Shape(append([]int64(nil), t.GetDims()...))
	if len(shape) == 0 {
		shape = ort.NewShape(1)
	}
	n := int(shape.FlattenedSize())
	raw := t.GetRawData()
	switch pb.TensorProto_DataType(t.GetDataType()) {
	case pb.TensorProto_FLOAT:
		vals := t.GetFloatData()
		if raw != nil {
			vals = make([]float32, len(raw)/4)
			for i := range vals {
				vals[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
			}
		}
		if len(vals) != n {
			return nil, fmt.Errorf("tensor holds %d values for shape %v", len(vals), shape)
		}
		return ort.NewTensor(shape, vals)
	case pb.TensorProto_FLOAT16:
		b := raw
		if b == nil {
			// float16 values are stored in int32_data, one per element.
			b = make([]byte, 2*len(t.GetInt32Data()))
			for i, v := range t.GetInt32Data() {
				binary.LittleEndian.PutUint16(b[2*i:], uint16(v))
			}
		}
		if len(b) != 2*n {
			return nil, fmt.Errorf("tensor holds %d bytes for shape %v", len(b), shape)
		}
		return ort.NewCustomDataTensor(shape, b, ort.TensorElementDataTypeFloat16)
	case pb.TensorProto_INT64:
		vals := t.GetInt64Data()
		if raw != nil {
			vals = make([]int64, len(raw)/8)
			for i := range vals {
				vals[i] = int64(binary.LittleEndian.Uint64(raw[8*i:]))
			}
		}
		if len(vals) != n {
			return nil, fmt.Errorf("tensor holds %d values for shape %v", len(vals), shape)
		}
		return ort.NewTensor(shape, vals)
	case pb.TensorProto_INT32:
		vals := t.GetInt32Data()
		if raw != nil {
			vals = make([]int32, len(raw)/4)
			for i := range vals {
				vals[i] = int32(binary.LittleEndian.Uint32(raw[4*i:]))
			}
		}
		if len(vals) != n {
			return nil, fmt.Errorf("tensor holds %d values for shape %v", len(vals), shape)
		}
		return ort.NewTensor(shape, vals)
	}
	return nil, fmt.Errorf("tensors of type %s are not supported", typeName(t.GetDataType()))
}
