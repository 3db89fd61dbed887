package onnxgraph

// Shapes gives the external tests the shape inference FindAttention uses (index.shape)
// over m's main graph.
func Shapes(m *Model) func(tensor string) ([]int64, bool) { return newIndex(m.Proto).shape }
