"""Deploy: the ONNX deploy graph (fp32, fp16, int8 Q/DQ), the Triton repository writer, the
TensorRT engine build and the TensorRT op table the graphs are checked against."""
