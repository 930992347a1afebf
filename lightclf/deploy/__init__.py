"""Deployment: ONNX / TorchScript / int8 export and predicting photos from a checkpoint."""
