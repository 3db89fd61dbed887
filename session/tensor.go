package session

import (
	"encoding/binary"
	"fmt"
	"math"

	ort "github.com/yalue/onnxruntime_go"
	"google.golang.org/protobuf/proto"

	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// valueFromProto makes an onnxruntime tensor from a TensorProto holding float, float16,
// int64, int32 or bool values (raw_data or the typed fields).
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
		return newFloat16Tensor(shape, b)
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
	case pb.TensorProto_BOOL:
		vals := make([]bool, 0, n)
		if raw != nil {
			for _, b := range raw {
				vals = append(vals, b != 0)
			}
		} else {
			for _, v := range t.GetInt32Data() {
				vals = append(vals, v != 0)
			}
		}
		if len(vals) != n {
			return nil, fmt.Errorf("tensor holds %d values for shape %v", len(vals), shape)
		}
		return ort.NewTensor(shape, vals)
	}
	return nil, fmt.Errorf("tensors of type %s are not supported", typeName(t.GetDataType()))
}

// newFloat16Tensor wraps float16 bytes. onnxruntime_go refuses an empty byte slice even
// for a shape with no elements (an empty past), so those get two unused bytes.
func newFloat16Tensor(shape ort.Shape, b []byte) (ort.Value, error) {
	if len(b) == 0 {
		b = make([]byte, 2)
	}
	return ort.NewCustomDataTensor(shape, b, ort.TensorElementDataTypeFloat16)
}

// protoFromValue copies an onnxruntime tensor of float, float16, int64 or int32 values
// into a TensorProto named name (raw_data, little-endian), which valueFromProto reads back.
func protoFromValue(name string, v ort.Value) (*pb.TensorProto, error) {
	t := &pb.TensorProto{Name: &name, Dims: append([]int64(nil), v.GetShape()...)}
	var dt pb.TensorProto_DataType
	var raw []byte
	switch x := v.(type) {
	case *ort.Tensor[float32]:
		dt = pb.TensorProto_FLOAT
		for _, f := range x.GetData() {
			raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(f))
		}
	case *ort.Tensor[int64]:
		dt = pb.TensorProto_INT64
		for _, i := range x.GetData() {
			raw = binary.LittleEndian.AppendUint64(raw, uint64(i))
		}
	case *ort.Tensor[int32]:
		dt = pb.TensorProto_INT32
		for _, i := range x.GetData() {
			raw = binary.LittleEndian.AppendUint32(raw, uint32(i))
		}
	case *ort.CustomDataTensor:
		if x.DataType() != ort.TensorElementDataTypeFloat16 {
			return nil, fmt.Errorf("tensors of element type %v are not supported", x.DataType())
		}
		dt = pb.TensorProto_FLOAT16
		raw = append(raw, x.GetData()...)
	default:
		return nil, fmt.Errorf("output of unsupported type %T", v)
	}
	if raw == nil {
		raw = []byte{}
	}
	t.DataType = proto.Int32(int32(dt))
	t.RawData = raw
	return t, nil
}
