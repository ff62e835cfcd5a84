"""Deployment: BN folding, the blocked-layout rewrite, channel equalization, ONNX / TorchScript export, int8,
prediction."""
