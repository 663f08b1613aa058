"""Using a trained model: model folders, predict, evaluate, export (Hugging Face and ONNX)."""
