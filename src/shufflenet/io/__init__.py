"""Files: atomic writes, tensor files from anywhere, our weight files, training state, ONNX files, result
records."""
