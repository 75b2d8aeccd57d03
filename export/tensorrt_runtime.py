"""Running a TensorRT engine (name-based I/O, ``execute_async_v3``) with PyTorch CUDA buffers."""
from __future__ import annotations

import os

import numpy as np

from fastmed.errors import FastmedError
from fastmed.export.metadata import read_sidecar
from fastmed.export.tensorrt_build import require_tensorrt


class TensorRTBackend:
    """A serialized engine plus its ``.json`` sidecar; batches must fit the engine's profile."""

    name = "tensorrt"

    def __init__(self, path: str | os.PathLike):
        import torch

        trt = require_tensorrt()
        self.meta = read_sidecar(path)
        self._torch = torch
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        with open(path, "rb") as f:
            self.engine = runtime.deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise FastmedError(f"TensorRT cannot deserialize {path} (built by another TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._dtype = {n: torch.from_numpy(np.empty(0, dtype=trt.nptype(self.engine.get_tensor_dtype(n)))).dtype
                       for n in names}
        self.stream = torch.cuda.Stream()

    def run(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        name = self.inputs[0]
        x = torch.from_numpy(np.ascontiguousarray(batch)).to("cuda", self._dtype[name])
        if not self.context.set_input_shape(name, tuple(x.shape)):
            raise FastmedError(f"batch shape {tuple(x.shape)} is outside the engine's optimization profile")
        self.context.set_tensor_address(name, x.data_ptr())
        outs = {}
        for o in self.outputs:
            outs[o] = torch.empty(tuple(self.context.get_tensor_shape(o)), dtype=self._dtype[o], device="cuda")
            self.context.set_tensor_address(o, outs[o].data_ptr())
        self.stream.wait_stream(torch.cuda.current_stream())  # x and outs were made on the current stream
        with torch.cuda.stream(self.stream):
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise FastmedError("TensorRT execution failed")
        self.stream.synchronize()
        return outs[self.outputs[0]].float().cpu().numpy()
