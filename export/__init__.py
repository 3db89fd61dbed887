"""attnscope's Python half: small transformers that return their attention probabilities
(models), TorchScript ONNX export with PyTorch reference outputs (onnx_export), the committed
test models (fixtures) and the benchmark model (bench_model)."""
