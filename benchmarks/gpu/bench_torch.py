# PyTorch peers at the sizes of bench_gemm_attention.cu, printed as "RESULT torch ... TFLOP/s".
import sys
import torch
import torch.nn.functional as F

def t(fn, warm=3, reps=10):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]

def result(name, flops, ms):
    print(f"RESULT {name:<36s} {flops / (ms * 1e-3) / 1e12:9.1f} TFLOP/s  ({ms:.3f} ms)", flush=True)

n = 4096
a = torch.rand(n, n, device="cuda") * 2 - 1
b = torch.rand(n, n, device="cuda") * 2 - 1
torch.backends.cuda.matmul.allow_tf32 = False
result("torch matmul fp32 4096^3", 2 * n**3, t(lambda: a @ b))
torch.backends.cuda.matmul.allow_tf32 = True
result("torch matmul tf32 4096^3", 2 * n**3, t(lambda: a @ b))
torch.backends.cuda.matmul.allow_tf32 = False
ab, bb = a.bfloat16(), b.bfloat16()
result("torch matmul bf16 4096^3", 2 * n**3, t(lambda: ab @ bb))
B, H, T, D = 4, 16, 1024, 64
q, k, v = (torch.rand(B, H, T, D, device="cuda") * 2 - 1 for _ in range(3))
fl = 4 * B * H * T * T * D
result("torch sdpa fwd fp32 B4 H16 T1024 D64", fl, t(lambda: F.scaled_dot_product_attention(q, k, v), 1, 5))
result("torch sdpa fwd causal (half the work)", fl / 2, t(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), 1, 5))
