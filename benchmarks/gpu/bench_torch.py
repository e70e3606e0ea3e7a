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
# Attention as in bench_gemm_attention.cu: FLOPs forward 4 B H T^2 D, backward 2.5x, causal half.
# fp32 (the "attn" rows), then bf16 (its "attn bf16" rows: SDPA on bf16 tensors, i.e.
# FlashAttention-2 on tensor cores).
B, H, T = 4, 16, 1024
for dtype, kind in ((torch.float32, "attn"), (torch.bfloat16, "attn bf16")):
    for D in (64, 128):
        q, k, v = ((torch.rand(B, H, T, D, device="cuda") * 2 - 1).to(dtype).requires_grad_() for _ in range(3))
        up = (torch.rand(B, H, T, D, device="cuda") * 2 - 1).to(dtype)
        fwd = 4 * B * H * T * T * D
        for causal in (False, True):
            part = 0.5 if causal else 1.0
            tag = f"{' causal' if causal else ''} D{D} B4 H16 T1024"
            with torch.no_grad():
                result(f"torch {kind} fwd{tag}", part * fwd, t(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal), 1, 5))
            def step():
                q.grad = k.grad = v.grad = None
                F.scaled_dot_product_attention(q, k, v, is_causal=causal).backward(up)
            result(f"torch {kind} fwd+bwd{tag}", part * 3.5 * fwd, t(step, 1, 5))
        del q, k, v, up

# GPT training step (bench_gpt.cu): the same model in PyTorch eager, fp32 (TF32 off, as ours) and
# bf16 autocast (PyTorch's mixed precision: fp32 weights, bf16 products), 2 warm-up steps, median
# of 7, the loss read back each step. Printed as tokens/s, with the peak memory PyTorch's caching
# allocator reserved.
import math
import time


class Block(torch.nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.h = h
        self.ln1, self.ln2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.qkv, self.proj = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
        self.fc, self.out = torch.nn.Linear(d, 4 * d), torch.nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.h, d // self.h).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(a)
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(torch.nn.Module):
    def __init__(self, vocab, d, layers, heads, seq):
        super().__init__()
        self.tok, self.pos = torch.nn.Embedding(vocab, d), torch.nn.Embedding(seq, d)
        self.blocks = torch.nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln = torch.nn.LayerNorm(d)

    def forward(self, ids, targets):
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))
        for blk in self.blocks:
            x = blk(x)
        logits = self.ln(x) @ self.tok.weight.t()
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
configs = [("tiny", 8000, 256, 4, 4, 128, 16, False), ("tiny", 8000, 256, 4, 4, 128, 16, True),
           ("small", 16000, 512, 6, 8, 256, 8, False), ("small", 16000, 512, 6, 8, 256, 8, True),
           ("large", 32000, 1024, 16, 16, 1024, 8, True)]
for name, vocab, d, layers, heads, seq, batch, bf16 in configs:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    model = GPT(vocab, d, layers, heads, seq).cuda()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}], lr=3e-4)
    i = torch.arange(batch * seq, dtype=torch.int64)
    ids = ((i * 2654435761) % vocab).view(batch, seq).cuda()
    targets = ((i * 40503 + 7) % vocab).view(batch, seq).cuda()
    times = []
    # Per phase, as bench_gpt.cu: device time between events, and host time queueing the phase.
    marks = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
    device_ms, host_ms = [0.0] * 3, [0.0] * 3
    for step in range(9):
        start = time.perf_counter()
        marks[0].record()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = model(ids, targets)
        marks[1].record()
        t1 = time.perf_counter()
        loss.backward()
        marks[2].record()
        t2 = time.perf_counter()
        opt.step()
        marks[3].record()
        t3 = time.perf_counter()
        value = loss.item()
        if step >= 2:
            times.append(time.perf_counter() - start)
            for k, host in enumerate((t1 - start, t2 - t1, t3 - t2)):
                device_ms[k] += marks[k].elapsed_time(marks[k + 1])
                host_ms[k] += host * 1e3
    times.sort()
    s = times[len(times) // 2]
    label = name + (" bf16" if bf16 else "")
    mib = torch.cuda.max_memory_reserved() / 2**20
    print(f"RESULT torch gpt train {label:<26s} {batch * seq / s:10.0f} tokens/s  ({s * 1e3:.2f} ms/step, loss {value:.4f}, {mib:.0f} MiB peak reserved)", flush=True)
    n = len(times)
    print(f"PHASES torch gpt train {label:<26s} forward {device_ms[0] / n:.2f} ms (host {host_ms[0] / n:.2f}), "
          f"backward {device_ms[1] / n:.2f} ms (host {host_ms[1] / n:.2f}), optimizer {device_ms[2] / n:.2f} ms (host {host_ms[2] / n:.2f})", flush=True)
    del model, opt
