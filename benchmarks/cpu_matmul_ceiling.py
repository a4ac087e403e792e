"""This CPU's matrix-product ceilings: a 4096x4096 product through PyTorch (fp32, bf16), NumPy and ONNX Runtime.

    python benchmarks/cpu_matmul_ceiling.py --threads 2

The yardstick for the achieved TFLOP/s of RESULTS.md: what each library's best kernel does on these cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def best_seconds(fn, repeats: int = 5) -> float:
    fn()  # warm-up: packing buffers, thread pools
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n", type=int, default=4096)
    args = p.parse_args(argv)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))  # before NumPy loads its BLAS
    import torch

    torch.set_num_threads(args.threads)
    n = args.n
    flop = 2 * n**3
    a, b = torch.randn(n, n), torch.randn(n, n)
    print(f"torch fp32 (MKL):      {flop / best_seconds(lambda: a @ b) / 1e9:6.0f} GFLOP/s")
    a16, b16 = a.bfloat16(), b.bfloat16()
    print(f"torch bf16 (oneDNN):   {flop / best_seconds(lambda: a16 @ b16) / 1e9:6.0f} GFLOP/s")
    an, bn = a.numpy(), b.numpy()
    print(f"numpy fp32:            {flop / best_seconds(lambda: an @ bn) / 1e9:6.0f} GFLOP/s")
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        print("onnxruntime fp32:      not installed")
        return 0
    spec = [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in ("A", "B", "C")]
    graph = helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["C"])], "matmul", spec[:2], spec[2:])
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(), options
    )
    feed = {"A": an, "B": bn}
    print(f"onnxruntime fp32 (MLAS): {flop / best_seconds(lambda: session.run(None, feed)) / 1e9:4.0f} GFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
